"""A counting SMTP sink in its own process: `python -m bench.sink [--port P]`.

It accepts every message, keeps nothing but a count per envelope sender, prints `port <P>` once it
listens and, on SIGTERM or SIGINT, prints the counts as one JSON line and exits. It runs in its own
process so that it does not compete for the GIL with the client being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections import Counter
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session


class CountingHandler:
    """aiosmtpd handler: count, answer 250, forget the content."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.recipients = 0
        self.bytes = 0

    async def handle_DATA(  # noqa: N802 (aiosmtpd hook name)
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        self.counts[envelope.mail_from or ""] += 1
        self.recipients += len(envelope.rcpt_tos)
        self.bytes += len(envelope.original_content or b"")
        return "250 OK"


async def serve(host: str, port: int) -> dict[str, Any]:
    handler = CountingHandler()
    loop = asyncio.get_running_loop()
    # A fixed hostname: aiosmtpd would otherwise call socket.getfqdn() for every connection.
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.bench", ident="bench sink"), host, port
    )
    bound = server.sockets[0].getsockname()[1]
    print(f"port {bound}", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()
    return {
        "messages": dict(handler.counts),
        "recipients": handler.recipients,
        "bytes": handler.bytes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="uvloop keeps the sink from being the limit of the bare client",
    )
    args = parser.parse_args(argv)
    run: Any = asyncio.run
    if args.loop == "uvloop":
        with contextlib.suppress(ImportError):
            import uvloop

            run = uvloop.run
    result = run(serve(args.host, args.port))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
