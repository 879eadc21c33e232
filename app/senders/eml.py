"""The development default sender: every mail becomes an `.eml` file under `./var/mail`."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from pathlib import Path

from app.senders.base import SendResult
from app.senders.message import OutgoingMessage

log = logging.getLogger(__name__)


class EmlFileSender:
    """Writes each message, Bcc included, with its envelope in `X-Mailrelay-Envelope-*`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    async def send(
        self, message: OutgoingMessage, *, envelope_from: str | None = None
    ) -> SendResult:
        envelope = (
            f"X-Mailrelay-Envelope-From: {envelope_from or message.sender.email}\r\n"
            f"X-Mailrelay-Envelope-To: {', '.join(message.recipients)}\r\n"
        ).encode()
        data = envelope + message.as_bytes()
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = self.directory / f"{stamp}-{uuid.uuid4().hex[:12]}.eml"
        await asyncio.to_thread(self._write, path, data)
        log.info("wrote %s", path, extra={"message_id": message.message_id})
        return SendResult(accepted=tuple(message.recipients))

    def _write(self, path: Path, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(data)
        temporary.rename(path)  # readers never see half a file

    async def aclose(self) -> None:
        return None
