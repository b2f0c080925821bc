"""Publish/subscribe: named channels of connections, in one process or across many.

A handler subscribes its connection to channels for as long as it serves it::

    from wsserver import pubsub

    async def chat(websocket):
        channels = pubsub.current_channels()
        async with channels.subscribe(websocket, "room"):
            async for message in websocket:
                await channels.publish("room", message)

:class:`Channels` is the one small interface; two backends implement it.
:class:`MemoryChannels` (the default) reaches the subscribers of this process
only and needs nothing. :class:`~wsserver.pubsub.redis.RedisChannels` (the
``wsserver[redis]`` extra) also relays every message through Redis pub/sub
to every other process subscribed to the channel, on this machine or
another. :func:`open_channels` picks one from a URL and makes it the
process's :func:`current_channels`; ``python -m wsserver --redis URL`` and
:func:`wsserver.run` do that in every worker.

Delivery follows the rule of :func:`wsserver.broadcast`: a message is encoded
once per process and queued on each subscriber's sending side without
waiting; a connection that is not open, or already has more than its
``write_limit`` of bytes waiting, is skipped (a slow subscriber loses
messages rather than delaying the others).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Final

import anyio

from ..broadcast import deliver, encode
from ..connection import Data, WebSocketServerProtocol

if TYPE_CHECKING:
    from .redis import RedisChannels

__all__ = [
    "Channels",
    "MemoryChannels",
    "PublishError",
    "current_channels",
    "open_channels",
]

logger: Final = logging.getLogger("wsserver.pubsub")


class PublishError(ConnectionError):
    """A message reached this process's subscribers but could not be relayed further.

    Raised by :meth:`Channels.publish` when the backend that links the
    processes (Redis) is unreachable or did not answer in time. The local
    subscribers have the message already; the other processes will not get it.

    Attributes:
        delivered: how many local subscribers the message was queued for.
    """

    def __init__(self, message: str, delivered: int) -> None:
        super().__init__(message)
        self.delivered = delivered


class Channels:
    """Named channels of connections: the interface both backends share.

    This base class keeps the subscriptions of this process and delivers to
    them; a backend adds what links processes by overriding the three hooks
    :meth:`_joined`, :meth:`_left` and :meth:`_relay`.
    """

    def __init__(self) -> None:
        self._subscribers: dict[str, set[WebSocketServerProtocol]] = {}

    @contextlib.asynccontextmanager
    async def subscribe(
        self, websocket: WebSocketServerProtocol, *channels: str
    ) -> AsyncIterator[None]:
        """Subscribe ``websocket`` to ``channels`` until the ``async with`` block ends.

        Use it around the part of the handler that serves the connection:
        the subscriptions end when the block does, however it ends (the
        handler returned, raised, or was cancelled), and a handler's end is
        the connection's end, so nothing outlives the connection. Entering
        returns once the channels are live: with Redis, once Redis confirmed
        the subscription (or at once while Redis is unreachable: the process
        subscribes when it reconnects).

        Args:
            websocket: the connection to deliver to.
            channels: the channel names.

        Raises:
            TypeError: if a channel name is not a string.
        """
        for channel in channels:
            if not isinstance(channel, str):
                raise TypeError(f"a channel name must be a string, got {channel!r}")
        new = []
        for channel in channels:
            subscribers = self._subscribers.setdefault(channel, set())
            if not subscribers:
                new.append(channel)
            subscribers.add(websocket)
        try:
            await self._joined(new, channels)
            yield
        finally:
            emptied = []
            for channel in channels:
                subscribers = self._subscribers.get(channel, set())
                subscribers.discard(websocket)
                if not subscribers:
                    self._subscribers.pop(channel, None)
                    emptied.append(channel)
            if emptied:
                self._left(emptied)

    async def publish(self, channel: str, message: Data | bytearray | memoryview) -> int:
        """Send ``message`` to every subscriber of ``channel``, wherever it is.

        This process's subscribers get it at once, before anything else is
        awaited; then the backend relays it to the other processes.
        Delivery is at most once: a subscriber that is slow, closing, or in
        a process cut off from Redis misses the message, which is never
        replayed.

        Args:
            channel: the channel's name.
            message: text, or bytes-like for a binary message.

        Returns:
            How many of this process's subscribers the message was queued for.

        Raises:
            TypeError: if ``message`` is neither text nor bytes-like, or
                ``channel`` is not a string.
            PublishError: if the message could not be relayed to the other
                processes (the local subscribers have it).
        """
        if not isinstance(channel, str):
            raise TypeError(f"a channel name must be a string, got {channel!r}")
        data, text = encode(message, "publish")
        delivered = self._deliver(channel, data, text)
        await self._relay(channel, data, text, delivered)
        return delivered

    def subscribers(self, channel: str) -> int:
        """Return how many of this process's connections subscribe to ``channel``."""
        return len(self._subscribers.get(channel, ()))

    def channels(self) -> list[str]:
        """Return the channels that have a subscriber in this process."""
        return list(self._subscribers)

    def _deliver(self, channel: str, data: bytes, text: bool) -> int:
        subscribers = self._subscribers.get(channel)
        return deliver(subscribers, data, text, "publish") if subscribers else 0

    # Backend hooks ----------------------------------------------------------------

    async def _joined(self, new: list[str], channels: tuple[str, ...]) -> None:
        """A connection subscribed to ``channels``; ``new`` had no subscriber before."""
        await anyio.lowlevel.checkpoint()

    def _left(self, emptied: list[str]) -> None:
        """The last subscriber of each of ``emptied`` in this process left."""

    async def _relay(self, channel: str, data: bytes, text: bool, delivered: int) -> None:
        """Pass a message published here on to the other processes."""
        await anyio.lowlevel.checkpoint()


class MemoryChannels(Channels):
    """Channels within one process: no dependency, nothing to run.

    With several workers, each worker's channels reach only the connections
    that worker serves; use Redis to link them.
    """


_current: Channels | None = None


def current_channels() -> Channels:
    """Return the channels of this process.

    Returns:
        The channels :func:`open_channels` opened (in every worker of
        ``python -m wsserver --redis URL``, the Redis ones); otherwise one
        :class:`MemoryChannels` for the whole process, made on first use.
    """
    global _current
    if _current is None:
        _current = MemoryChannels()
    return _current


@contextlib.asynccontextmanager
async def open_channels(redis_url: str | None = None) -> AsyncIterator[Channels]:
    """Open the process's channels and make them :func:`current_channels` meanwhile.

    With a Redis URL, the Redis link runs in a task of this block until it
    ends: enter it around :func:`wsserver.serve`. Entering waits for the
    first connection attempt; if Redis is unreachable then, the block is
    entered all the same (local delivery works) and the link keeps retrying.

    Args:
        redis_url: ``redis://host:port/db`` (or ``rediss://``, ``unix://``)
            to link the processes through Redis; None for channels in memory.

    Yields:
        The channels.

    Raises:
        ImportError: with a URL, if the ``redis`` extra (coredis) is not installed.
        ValueError: if ``redis_url`` is not a Redis URL.
    """
    global _current
    previous = _current
    if redis_url is None:
        channels: Channels = MemoryChannels()
        _current = channels
        try:
            yield channels
        finally:
            _current = previous
        return
    redis_channels = _redis_channels(redis_url)
    async with anyio.create_task_group() as task_group:
        await task_group.start(redis_channels.run)
        _current = redis_channels
        try:
            yield redis_channels
        finally:
            _current = previous
            task_group.cancel_scope.cancel()


def _redis_channels(url: str) -> RedisChannels:
    try:
        from .redis import RedisChannels
    except ModuleNotFoundError as exc:
        if exc.name != "coredis":
            raise
        raise ImportError(
            "Redis channels need coredis: pip install 'wsserver[redis]'", name="coredis"
        ) from exc
    return RedisChannels(url)
