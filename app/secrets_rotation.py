"""`mailrelay secrets rotate`: re-encrypt every stored secret under the newest key.

Safe while the service runs: each row is rewritten in its own short transaction, and every
process decrypts with any key of the ring, so old and new ciphertexts coexist until it ends.
"""

from __future__ import annotations

from sqlalchemy import select

from app.mailboxes.models import Mailbox
from app.runtime import Runtime

ENCRYPTED_COLUMNS = (
    Mailbox.smtp_password_enc,
    Mailbox.oauth_access_token_enc,
    Mailbox.oauth_refresh_token_enc,
)


async def rotate_secrets(runtime: Runtime) -> int:
    rotated = 0
    async with runtime.sessionmaker() as session:
        ids = list(await session.scalars(select(Mailbox.id)))
    for mailbox_id in ids:
        async with runtime.sessionmaker.begin() as session:
            mailbox = await session.get(Mailbox, mailbox_id, with_for_update=True)
            if mailbox is None:
                continue
            for column in ENCRYPTED_COLUMNS:
                token = getattr(mailbox, column.key)
                if token is not None:
                    setattr(mailbox, column.key, runtime.secrets.rotate(token))
                    rotated += 1
    return rotated
