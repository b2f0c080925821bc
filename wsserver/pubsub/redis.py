"""Channels linked through Redis pub/sub: every process, on every machine, one set of channels.

Each process keeps one Redis subscription connection, subscribed to the
channels that have a subscriber in that process, and publishes through a
client of its own. It runs on :mod:`coredis`, whose I/O is written on anyio,
so the same code serves Trio and asyncio.

A message travels as ``b"wss1"``, the publishing process's 8-byte id, ``t``
or ``b`` (text or binary), then the payload. A process delivers its own
messages locally before publishing and skips them when Redis echoes them
back; a message without that prefix (``redis-cli PUBLISH room hi``) is
delivered as text when it is valid UTF-8, as binary otherwise.

Guarantee: at most once. Redis pub/sub keeps nothing: a message published
while a process is disconnected never reaches that process's subscribers.
"""

from __future__ import annotations

import math
import os
import sys
import urllib.parse
from typing import Any, Final

import anyio
import anyio.abc
import anyio.lowlevel
import coredis
import coredis.exceptions
import coredis.retry

from . import Channels, PublishError, logger

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = ["RedisChannels"]

MAGIC: Final = b"wss1"
FIRST_RETRY_DELAY: Final[float] = 0.1
"""Seconds before the first reconnection attempt; the delay doubles after each failure."""
MAX_RETRY_DELAY: Final[float] = 5.0
"""The longest wait between two reconnection attempts, in seconds."""
PUBLISH_TIMEOUT: Final[float] = 2.0
"""Seconds a PUBLISH may take before :exc:`PublishError`."""


def _connection_failure(exc: BaseException) -> bool:
    """Tell whether ``exc`` (or every exception in a group) means Redis went away."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_connection_failure(inner) for inner in exc.exceptions)
    return isinstance(exc, (coredis.exceptions.ConnectionError, OSError, TimeoutError, EOFError))


class RedisChannels(Channels):
    """Channels shared by every process connected to one Redis server.

    Open it with :func:`wsserver.pubsub.open_channels` (or run :meth:`run` in
    a task group yourself). While Redis is unreachable, this process's
    subscribers keep receiving what is published in this process,
    :meth:`~wsserver.pubsub.Channels.publish` raises
    :exc:`~wsserver.pubsub.PublishError` at once (after the local
    delivery), and the link reconnects with back-off (0.1 s doubling to 5 s),
    then subscribes again to every channel that has a local subscriber.

    Args:
        url: where Redis is: ``redis://host:port/db``, ``rediss://`` for
            TLS, ``unix:///path/to/redis.sock``.

    Raises:
        ValueError: if ``url`` is not a Redis URL.
    """

    def __init__(self, url: str) -> None:
        super().__init__()
        # coredis accepts any string here and fails only when connecting: a
        # typo would then look like Redis being down, forever.
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"a Redis URL starts with redis://, rediss:// or unix://, not {url!r}")
        try:
            parts.port  # noqa: B018  # parsed on access
        except ValueError:
            raise ValueError(f"the port of a Redis URL is a number, not in {url!r}") from None
        self.url = url
        """The Redis URL."""
        self._origin = os.urandom(8)
        self._client: coredis.Redis[bytes] | None = None
        self._pubsub: Any = None
        # On Redis: channels subscribed, or being subscribed (set once acknowledged).
        self._on_redis: dict[str, anyio.Event] = {}
        self._changed = anyio.Event()

    @property
    def connected(self) -> bool:
        """Whether the link to Redis is up."""
        return self._pubsub is not None

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep the link to Redis up until cancelled.

        Reports started once the first attempt to connect succeeded or
        failed; afterwards it reconnects for as long as it runs.
        """
        delay = FIRST_RETRY_DELAY
        down_since: float | None = None
        started = False
        while True:
            try:
                async with (
                    coredis.Redis.from_url(
                        self.url, retry_policy=coredis.retry.NoRetryPolicy()
                    ) as client,
                    client.pubsub(retry_policy=None, ignore_subscribe_messages=True) as pubsub,
                ):
                    self._client, self._pubsub = client, pubsub
                    # Connections that subscribe from now on wait for these.
                    await self._subscribe(pubsub, list(self._subscribers))
                    if down_since is not None:
                        logger.info(
                            "redis at %s is back after %.1f s; subscribed again to %d channels",
                            self.url,
                            anyio.current_time() - down_since,
                            len(self._on_redis),
                        )
                    down_since, delay = None, FIRST_RETRY_DELAY
                    if not started:
                        started = True
                        task_status.started()
                    async with anyio.create_task_group() as task_group:
                        task_group.start_soon(self._unsubscribe_emptied, pubsub)
                        while True:
                            message = await pubsub.get_message()
                            if message is not None and message["type"] == "message":
                                data = message["data"]
                                if isinstance(data, (bytes, str)):
                                    self._receive(message["channel"], data)
            except BaseException as exc:
                if anyio.current_effective_deadline() == -math.inf and not isinstance(
                    exc, anyio.get_cancelled_exc_class()
                ):
                    # Cancelled (the channels are closing): coredis's cleanup
                    # may fail on the streams the cancellation closed, and its
                    # error (or a group of it and the cancellation) would hide
                    # the cancellation: let the cancellation through alone.
                    await anyio.lowlevel.checkpoint()
                if not isinstance(exc, Exception) or not _connection_failure(exc):
                    raise
                if down_since is None:
                    down_since = anyio.current_time()
                    logger.warning(
                        "redis at %s is unreachable (%s); local delivery continues, reconnecting",
                        self.url,
                        _describe(exc),
                    )
                else:
                    logger.debug("redis at %s still unreachable (%s)", self.url, _describe(exc))
            finally:
                self._client = self._pubsub = None
                # Release whoever waits for an acknowledgement that cannot come.
                for joined in self._on_redis.values():
                    joined.set()
                self._on_redis = {}
            if not started:
                started = True
                task_status.started()
            await anyio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)

    def _receive(self, channel: bytes | str, data: bytes | str) -> None:
        name = channel.decode(errors="replace") if isinstance(channel, bytes) else channel
        payload = data.encode() if isinstance(data, str) else data
        if payload[:4] == MAGIC and len(payload) >= 13:
            if payload[4:12] == self._origin:
                return  # published here, and delivered here already
            text = payload[12:13] == b"t"
            self._deliver(name, payload[13:], text)
            return
        try:
            payload.decode()
        except UnicodeDecodeError:
            self._deliver(name, payload, False)
        else:
            self._deliver(name, payload, True)

    async def _joined(self, new: list[str], channels: tuple[str, ...]) -> None:
        pubsub = self._pubsub
        if pubsub is None:
            # Down: the link subscribes to every local channel when it is back.
            await anyio.lowlevel.checkpoint()
            return
        await self._subscribe(pubsub, new)
        # Another connection may be subscribing this process to the channel
        # right now: live means Redis acknowledged it.
        for channel in channels:
            joined = self._on_redis.get(channel)
            if joined is not None:
                await joined.wait()
        await anyio.lowlevel.checkpoint()

    async def _subscribe(self, pubsub: Any, channels: list[str]) -> None:
        """Subscribe the link to ``channels``; whoever waits for them is released after."""
        if not channels:
            return
        events = [self._on_redis.setdefault(channel, anyio.Event()) for channel in channels]
        try:
            await pubsub.subscribe(*channels)
        except Exception as exc:
            # Redis went away meanwhile: the link subscribes again when it is back.
            if not _connection_failure(exc):
                raise
            logger.debug("subscribing to %s failed: %s", channels, _describe(exc))
        finally:
            for joined in events:
                joined.set()

    def _left(self, emptied: list[str]) -> None:
        # Unsubscribing waits for Redis, which a finally block of a cancelled
        # handler cannot do: the link's own task does it.
        self._changed.set()

    async def _unsubscribe_emptied(self, pubsub: Any) -> None:
        while True:
            await self._changed.wait()
            self._changed = anyio.Event()
            stale = [channel for channel in self._on_redis if channel not in self._subscribers]
            if stale:
                for channel in stale:
                    del self._on_redis[channel]
                await pubsub.unsubscribe(*stale)

    async def _relay(self, channel: str, data: bytes, text: bool, delivered: int) -> None:
        client = self._client
        if client is None:
            await anyio.lowlevel.checkpoint()
            raise PublishError(
                f"redis at {self.url} is unreachable: delivered to {delivered}"
                " local subscribers only",
                delivered,
            )
        envelope = b"".join((MAGIC, self._origin, b"t" if text else b"b", data))
        try:
            with anyio.fail_after(PUBLISH_TIMEOUT):
                await client.publish(channel, envelope)
        except Exception as exc:
            if not _connection_failure(exc):
                raise
            raise PublishError(
                f"publishing to redis at {self.url} failed ({_describe(exc)}): delivered"
                f" to {delivered} local subscribers only",
                delivered,
            ) from exc


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
