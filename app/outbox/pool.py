"""Open senders per route, reused across messages, at most `size` at once, closed when idle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from app.senders.base import Sender

log = logging.getLogger(__name__)


@dataclass
class _Route:
    version: int
    size: int
    slots: asyncio.Semaphore
    idle: list[Sender] = field(default_factory=list)
    leased: int = 0
    last_used: float = field(default_factory=time.monotonic)

    async def close_idle(self) -> None:
        senders, self.idle = self.idle, []
        for sender in senders:
            with contextlib.suppress(Exception):
                await sender.aclose()


class SenderPool:
    """`async with pool.lease(key, version, factory, size) as sender:` — one connection each.

    A new `version` (the mailbox's settings changed) retires the route's old senders.
    """

    def __init__(self) -> None:
        self._routes: dict[str, _Route] = {}

    @contextlib.asynccontextmanager
    async def lease(
        self, key: str, *, version: int, factory: Callable[[], Sender], size: int
    ) -> AsyncIterator[Sender]:
        route = self._routes.get(key)
        if route is None or route.version != version:
            if route is not None:
                await route.close_idle()
            route = _Route(version=version, size=size, slots=asyncio.Semaphore(size))
            self._routes[key] = route
        async with route.slots:
            sender = route.idle.pop() if route.idle else factory()
            route.leased += 1
            try:
                yield sender
            finally:
                route.leased -= 1
                route.last_used = time.monotonic()
                if self._routes.get(key) is route:
                    route.idle.append(sender)
                else:  # retired while in use
                    await sender.aclose()

    async def close_idle(self, older_than: float) -> None:
        """Close the connections of routes unused for `older_than` seconds."""
        now = time.monotonic()
        for key, route in list(self._routes.items()):
            if route.leased == 0 and now - route.last_used >= older_than:
                del self._routes[key]
                await route.close_idle()

    async def aclose(self) -> None:
        routes, self._routes = self._routes, {}
        for route in routes.values():
            await route.close_idle()
