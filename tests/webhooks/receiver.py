"""A real webhook receiver: a Starlette app under uvicorn in a thread, recording what arrives."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.webhooks.delivery import verify_signature
from tests.fixtures.smtpd import HOST, free_port


@dataclass(frozen=True)
class Delivery:
    """One request as the receiver saw it, and the status it answered."""

    event_id: str | None
    event_type: str | None
    content_type: str | None
    body: bytes
    signature_valid: bool
    status: int


@dataclass
class Receiver:
    """POST /hook checks `Mailrelay-Signature`; `status`, `retry_after`, `delay` steer replies.

    A 3xx answer redirects to /hook itself, so a client that follows it is seen to.

    `stop()` closes the listening socket (clients get connection refused); `start()` again
    listens on the same port.
    """

    secret: bytes
    port: int = field(default_factory=free_port)
    status: int = 200
    retry_after: str | None = None
    delay: float = 0.0
    received: list[Delivery] = field(default_factory=list)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hook"

    def delivered(self, event_id: object) -> list[Delivery]:
        """The 2xx-answered requests for `event_id`."""
        return [d for d in self.received if d.event_id == str(event_id) and 200 <= d.status < 300]

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        if self.delay:
            await asyncio.sleep(self.delay)
        status, retry_after = self.status, self.retry_after
        self.received.append(
            Delivery(
                event_id=request.headers.get("mailrelay-event-id"),
                event_type=request.headers.get("mailrelay-event-type"),
                content_type=request.headers.get("content-type"),
                body=body,
                signature_valid=verify_signature(
                    self.secret, body, request.headers.get("mailrelay-signature", "")
                ),
                status=status,
            )
        )
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        if 300 <= status < 400:
            headers["Location"] = self.url
        return Response(status_code=status, headers=headers)

    def start(self) -> None:
        app = Starlette(routes=[Route("/hook", self._hook, methods=["POST"])])
        config = uvicorn.Config(
            app,
            host=HOST,
            port=self.port,
            loop="asyncio",
            http="h11",
            ws="none",
            lifespan="off",
            log_level="warning",
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 5
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"webhook receiver did not start on port {self.port}")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._server = self._thread = None
