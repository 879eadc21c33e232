"""Secrets at rest: MultiFernet under `MAILRELAY_SECRET_KEYS`, each value bound to its place.

Fernet has no associated data, so a ciphertext copied into another row would decrypt there. Every
plaintext therefore starts with a context string (for example `mailbox:<id>:smtp_password`) that
`decrypt` checks, which turns such a swap into an error instead of a leak.
"""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from app.settings import Settings

log = logging.getLogger(__name__)

_SEPARATOR = "\x00"


class SecretDecryptError(Exception):
    """A stored secret could not be decrypted with any configured key, or belongs elsewhere."""


class SecretBox:
    """Encrypts with the first key, decrypts with any; binds each value to a context string."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("at least one Fernet key is required")
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def encrypt(self, plaintext: str, *, context: str) -> bytes:
        if _SEPARATOR in context:
            raise ValueError("context may not contain NUL")
        return self._fernet.encrypt(f"{context}{_SEPARATOR}{plaintext}".encode())

    def decrypt(self, token: bytes, *, context: str) -> str:
        try:
            stored_context, _, plaintext = (
                self._fernet.decrypt(token).decode().partition(_SEPARATOR)
            )
        except InvalidToken as exc:
            raise SecretDecryptError("no configured key decrypts this secret") from exc
        if not hmac.compare_digest(stored_context, context):
            raise SecretDecryptError("secret belongs to another record")
        return plaintext

    def rotate(self, token: bytes) -> bytes:
        """The same secret re-encrypted under the first (newest) key."""
        try:
            return self._fernet.rotate(token)
        except InvalidToken as exc:
            raise SecretDecryptError("no configured key decrypts this secret") from exc

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The configured keys or, outside production, a key file made once under `var_dir`."""
        if settings.secret_keys:
            return cls([key.get_secret_value().encode() for key in settings.secret_keys])
        return cls([_dev_key(settings.var_dir / "secret.key")])


def _dev_key(path: Path) -> bytes:
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as handle:
        handle.write(key + b"\n")
    log.warning("MAILRELAY_SECRET_KEYS is unset: made a development key in %s", path)
    return key
