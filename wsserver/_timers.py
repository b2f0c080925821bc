"""Keepalive: a ping every ``ping_interval``, a pong expected within ``ping_timeout``.

The other timers of a connection are deadlines of cancel scopes where the
waiting happens: ``open_timeout`` around the opening handshake
(:mod:`wsserver._opening`), ``close_timeout`` on the scope the receiving task
reads under (:meth:`wsserver._receiving.Inbox.start_closing`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio

from .sansio import ConnectionClosed, State
from .sansio.frames import CloseCode

if TYPE_CHECKING:
    from .connection import WebSocketServerProtocol

__all__ = ["PongWaiter", "keepalive", "unused_ping_payload"]


async def keepalive(ws: WebSocketServerProtocol, interval: float, timeout: float | None) -> None:
    """Ping every ``interval`` seconds; drop the connection if a pong takes over ``timeout``.

    Ends when the connection is no longer open. Runs in the connection's task group.
    """
    core = ws.protocol
    while True:
        await anyio.sleep(interval)
        if core.state is not State.OPEN:
            return
        with anyio.move_on_after(float("inf") if timeout is None else timeout):
            try:
                waiter = await ws.ping()
                ws.latency = await waiter
            except ConnectionClosed:
                return
            continue
        ws.logger.info("no pong within %ss: closing with 1011", timeout)
        ws._drop(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        return


class PongWaiter:
    """Awaitable returned by :meth:`WebSocketServerProtocol.ping`.

    Awaiting it returns the round-trip time in seconds once the matching pong
    arrives, or raises :class:`~wsserver.sansio.ConnectionClosed` if the
    connection closes first.
    """

    __slots__ = ("_event", "_latency", "_owner", "sent_at")

    def __init__(self, owner: WebSocketServerProtocol) -> None:
        self._owner = owner
        self._event = anyio.Event()
        self._latency: float | None = None
        self.sent_at = time.monotonic()

    def _resolve(self, latency: float | None) -> None:
        self._latency = latency
        self._event.set()

    def done(self) -> bool:
        """Tell whether the pong arrived or the connection closed."""
        return self._event.is_set()

    async def wait(self) -> float:
        """Wait for the pong; return the latency in seconds.

        Raises:
            ConnectionClosed: if the connection closed before the pong.
        """
        await self._event.wait()
        if self._latency is None:
            raise self._owner._closed_exception()
        return self._latency

    def __await__(self) -> Any:
        return self.wait().__await__()


def unused_ping_payload(taken: Mapping[bytes, Any]) -> bytes:
    """Four random bytes not already used as a pending ping's payload."""
    while True:
        payload = os.urandom(4)
        if payload not in taken:
            return payload

