"""Mail address rules: real addresses only, but reserved test domains outside production."""

from __future__ import annotations

from typing import Annotated

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator

# RFC 2606 / 6761 names that tests and the dev playground use; refused in production.
RESERVED_TEST_DOMAINS = frozenset({"test", "example", "invalid", "localhost"})


class AddressPolicy:
    """Whether reserved test domains are accepted; set once from settings by `create_app`."""

    allow_reserved: bool = False


address_policy = AddressPolicy()


def normalize_address(value: str, *, allow_reserved: bool | None = None) -> str:
    """The address in normal form, or ValueError saying why it is not a mail address."""
    if allow_reserved is None:
        allow_reserved = address_policy.allow_reserved
    local, at, domain = value.rpartition("@")
    reserved = bool(at) and domain.lower().rsplit(".", 1)[-1] in RESERVED_TEST_DOMAINS
    try:
        if reserved and allow_reserved:
            # Check the local part by itself; the domain is one of the reserved names.
            checked = validate_email(f"{local}@example.com", check_deliverability=False)
            return f"{checked.local_part}@{domain.lower()}"
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None


def reject_control_characters(value: str) -> str:
    """Header-bound text may not contain CR, LF or NUL (header injection)."""
    if any(char in value for char in "\r\n\x00"):
        raise ValueError("must not contain CR, LF or NUL characters")
    return value


def _address(value: str) -> str:
    return normalize_address(reject_control_characters(value))


EmailAddress = Annotated[str, AfterValidator(_address)]
HeaderText = Annotated[str, AfterValidator(reject_control_characters)]
