"""Keepalive: a ping every ``ping_interval``, a pong expected within ``ping_timeout``.

:class:`Keepalive` needs no task of its own: on asyncio's lean stream its
deadlines are loop timers (the stream's ``call_later``), on Trio's plain
sockets the deadline of a cancel scope the receiving task reads under
(:meth:`wsserver._receiving.Inbox.time_keepalive`). Elsewhere (TLS)
:meth:`Keepalive.run` waits for them in a task, since cancelling a TLS read
midway is not safe.

The other timers of a connection are deadlines of cancel scopes where the
waiting happens: ``open_timeout`` around the opening handshake
(:mod:`wsserver._opening`), ``close_timeout`` on the scope the receiving task
reads under (:meth:`wsserver._receiving.Inbox.start_closing`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from ._transport import TimerHandle
from .sansio import ConnectionClosed, State
from .sansio.frames import CloseCode

if TYPE_CHECKING:
    from .connection import WebSocketServerProtocol

__all__ = ["Keepalive", "PongWaiter", "unused_ping_payload"]


CallLater = Callable[[float, Callable[[], None]], TimerHandle]
"""Runs a callback after a delay in seconds, as ``loop.call_later`` does."""


class Keepalive:
    """The keepalive of one connection, without a task: whoever owns a timer calls :meth:`fire`.

    :meth:`fire` is due at :attr:`deadline` (on the anyio clock), or is run
    by the ``call_later`` given to :meth:`start`. It sends a ping when one is
    due, and drops the connection with 1011 when a ping went unanswered for
    ``timeout`` seconds; :meth:`answered` (after every pong) schedules the
    next ping ``interval`` seconds later. Every method is synchronous, safe
    to call from asyncio's callbacks.

    Args:
        ws: the connection.
        interval: seconds between a pong and the next ping.
        timeout: seconds a ping may wait for its pong; ``None``: no limit.
    """

    __slots__ = (
        "_call_later", "_handle", "_interval", "_timeout", "_waiter", "_ws", "deadline", "scope",
    )

    def __init__(
        self, ws: WebSocketServerProtocol, interval: float, timeout: float | None
    ) -> None:
        self._ws = ws
        self._interval = interval
        self._timeout = timeout
        self._waiter: PongWaiter | None = None
        self._call_later: CallLater | None = None
        self._handle: TimerHandle | None = None
        self.deadline = float("inf")
        """When :meth:`fire` is due, if no ``call_later`` runs it."""
        self.scope: anyio.CancelScope | None = None
        """The cancel scope whose deadline follows :attr:`deadline`, if any."""

    def start(self, call_later: CallLater | None = None) -> None:
        """Schedule the first ping; call from a task, once the connection is open.

        Args:
            call_later: a loop timer that will run :meth:`fire`; without one,
                the caller runs it at :attr:`deadline`.
        """
        self._call_later = call_later
        self._schedule(self._interval)

    def stop(self) -> None:
        """Cancel the pending timer: the connection is closed."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
        self.deadline = float("inf")

    def fire(self) -> None:
        """Ping if a ping is due; drop the connection if the last one went unanswered."""
        self._handle = None
        ws = self._ws
        if ws.protocol.state is not State.OPEN:
            self.deadline = float("inf")
            return
        if self._waiter is not None:
            ws.logger.info("no pong within %ss: closing with 1011", self._timeout)
            ws._drop(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
            self.deadline = float("inf")
            return
        payload = unused_ping_payload(ws._pings)
        try:
            ws._queue(ws.protocol.send_ping, payload)
        except ConnectionClosed:
            self.deadline = float("inf")
            return
        self._waiter = ws._pings[payload] = PongWaiter(ws)
        ws._outbox.push()
        self._schedule(self._timeout)

    def answered(self) -> None:
        """Note a pong: once the keepalive's ping is answered, the next is due in ``interval``."""
        waiter = self._waiter
        if waiter is None or not waiter.done():
            return
        self._waiter = None
        if waiter._latency is not None:
            self._ws.latency = waiter._latency
        self._schedule(self._interval)

    async def run(self) -> None:
        """Where no read may be cut short (TLS): wait for each deadline in a task of its own.

        Run in the connection's task group; returns once the connection is no
        longer open.
        """
        self.start()
        core = self._ws.protocol
        while core.state is State.OPEN:
            # answered() moves this scope's deadline to the next ping.
            with anyio.CancelScope(deadline=self.deadline) as self.scope:
                await anyio.sleep_forever()
            self.scope = None
            self.fire()

    def _schedule(self, delay: float | None) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
        if delay is None:
            self.deadline = float("inf")
        elif self._call_later is not None:
            self._handle = self._call_later(delay, self.fire)
        else:
            self.deadline = anyio.current_time() + delay
        if self.scope is not None:
            self.scope.deadline = self.deadline


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

