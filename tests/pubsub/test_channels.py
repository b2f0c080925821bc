"""Channels in one process: who receives, slow subscribers, and the end of subscriptions.

In-process servers on the test's backend, real clients, and for the Redis
backend a real redis-server of the test's own: two sets of Redis channels
in one process stand for two processes (each has its own id and link).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import anyio
import coredis
import pytest
from anyio.streams.text import TextReceiveStream
from websockets.sync.client import ClientConnection

from tests.io.clients import RawClient, SocketClientStream, in_thread, open_client, port_of, recv
from tests.pubsub.support import RedisServer
from tests.serving import running_server
from wsserver import WebSocketServerProtocol
from wsserver.pubsub import Channels, MemoryChannels, PublishError, open_channels

pytestmark = pytest.mark.anyio


def subscribing_handler(
    channels: Channels, ended: Callable[[], None] = lambda: None
) -> Callable[[WebSocketServerProtocol], object]:
    """A handler subscribing to the channel named by the path, until the client leaves."""

    async def handler(websocket: WebSocketServerProtocol) -> None:
        try:
            async with channels.subscribe(websocket, websocket.path.strip("/")):
                await websocket.send("subscribed")
                async for message in websocket:
                    if message == "raise":
                        raise RuntimeError("the handler failed")
        finally:
            ended()

    return handler


async def subscribe(uri: str) -> ClientConnection:
    client = await open_client(uri)
    assert await recv(client) == "subscribed"
    return client


async def test_publish_reaches_the_subscribers_of_its_channel_only(anyio_backend: str) -> None:
    channels = MemoryChannels()
    with anyio.fail_after(10):
        async with running_server(subscribing_handler(channels)) as (_, uri):
            on_a = [await subscribe(f"{uri}/a") for _ in range(3)]
            on_b = await subscribe(f"{uri}/b")
            assert await channels.publish("a", "text for a") == 3
            assert await channels.publish("a", b"\x00bytes for a") == 3
            assert await channels.publish("b", "for b") == 1
            assert await channels.publish("nobody", "lost") == 0
            for client in on_a:
                assert await recv(client) == "text for a"
                assert await recv(client) == b"\x00bytes for a"
            assert await recv(on_b) == "for b"  # not a's messages before it
            for client in [*on_a, on_b]:
                await in_thread(client.close)


async def test_publish_refuses_what_is_not_a_message() -> None:
    channels = MemoryChannels()
    with pytest.raises(TypeError, match="str or bytes-like"):
        await channels.publish("a", 42)  # type: ignore[arg-type]


async def test_subscriptions_end_with_the_connection(anyio_backend: str) -> None:
    channels = MemoryChannels()
    ended = 0
    all_ended = anyio.Event()

    def one_ended() -> None:
        nonlocal ended
        ended += 1
        if ended == 4:
            all_ended.set()

    with anyio.fail_after(10):
        async with running_server(subscribing_handler(channels, one_ended)) as (_, uri):
            clients = [await subscribe(f"{uri}/room") for _ in range(3)]
            failing = await subscribe(f"{uri}/room")
            assert channels.subscribers("room") == 4
            for client in clients:
                await in_thread(client.close)
            await in_thread(failing.send, "raise")  # the handler leaves by an exception
            await all_ended.wait()
            assert channels.subscribers("room") == 0
            assert channels.channels() == []
            assert await channels.publish("room", "anyone?") == 0


async def test_slow_subscriber_does_not_delay_the_others(anyio_backend: str) -> None:
    channels = MemoryChannels()
    message = b"x" * 32768
    with anyio.fail_after(30):
        async with running_server(subscribing_handler(channels), write_limit=65536) as (_, uri):
            # A subscriber that never reads, with a small receive buffer.
            slow = RawClient(SocketClientStream(port_of(uri), receive_buffer=4096))
            await slow.handshake("/room")
            assert (await slow.recv_frame()).data == b"subscribed"  # and nothing more, ever
            fast = [await subscribe(f"{uri}/room") for _ in range(3)]
            counts: list[int] = []

            def read_all(client: ClientConnection) -> None:
                count = 0
                while client.recv(10) != "done":
                    count += 1
                counts.append(count)

            published = 0
            skipped_slow = False
            async with anyio.create_task_group() as task_group:
                for client in fast:
                    task_group.start_soon(in_thread, read_all, client)
                # Publish until the slow subscriber is being skipped, and well after.
                for _ in range(2000):
                    delivered = await channels.publish("room", message)
                    published += 1
                    assert delivered >= 3
                    if delivered == 3:
                        skipped_slow = True
                    if skipped_slow and published >= 300:
                        break
                    # Let the fast readers' threads run, as a real publisher would.
                    await anyio.sleep(0)
                await channels.publish("room", "done")
            await slow.aclose()
            assert skipped_slow
            assert counts == [published] * 3, "every fast subscriber got every message"
            for client in fast:
                await in_thread(client.close)


class LogWaiter(logging.Handler):
    """Wake a test when the wsserver.pubsub logger writes a line containing some text."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []
        self._changed = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_for(self, text: str, count: int = 1) -> None:
        while sum(text in message for message in self.messages) < count:
            await self._changed.wait()


@pytest.fixture
def pubsub_log() -> AsyncIterator[LogWaiter]:
    waiter = LogWaiter()
    logger = logging.getLogger("wsserver.pubsub")
    logger.addHandler(waiter)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield waiter  # type: ignore[misc]
    finally:
        logger.removeHandler(waiter)
        logger.setLevel(previous)


async def test_redis_links_two_sets_of_channels(
    anyio_backend: str, redis_server: RedisServer
) -> None:
    with anyio.fail_after(20):
        async with (
            open_channels(redis_server.url) as one,
            open_channels(redis_server.url) as two,
            running_server(subscribing_handler(one)) as (_, uri_one),
            running_server(subscribing_handler(two)) as (_, uri_two),
        ):
            here = await subscribe(f"{uri_one}/room")
            there = await subscribe(f"{uri_two}/room")
            assert await one.publish("room", "text") == 1
            assert await two.publish("room", b"\xffbinary") == 1
            # Each process delivers its own publications first: no order
            # holds between messages from different processes.
            for client in (here, there):
                assert {await recv(client), await recv(client)} == {"text", b"\xffbinary"}
            # Anyone may publish through Redis, not only wsserver.
            async with coredis.Redis.from_url(redis_server.url) as client:
                assert await client.publish("room", "from redis-cli") == 2
            for client in (here, there):
                assert await recv(client) == "from redis-cli"
                await in_thread(client.close)


async def test_publish_while_redis_is_down_delivers_locally_then_raises(
    anyio_backend: str, redis_server: RedisServer, pubsub_log: LogWaiter
) -> None:
    with anyio.fail_after(30):
        async with (
            open_channels(redis_server.url) as one,
            open_channels(redis_server.url) as two,
            running_server(subscribing_handler(one)) as (_, uri_one),
            running_server(subscribing_handler(two)) as (_, uri_two),
        ):
            here = await subscribe(f"{uri_one}/room")
            there = await subscribe(f"{uri_two}/room")
            await in_thread(redis_server.stop)
            await pubsub_log.wait_for("is unreachable", 2)
            with pytest.raises(PublishError, match="delivered to 1 local subscribers") as info:
                await one.publish("room", "only here")
            assert info.value.delivered == 1
            assert await recv(here) == "only here"
            await in_thread(redis_server.start)
            await pubsub_log.wait_for("is back", 2)
            assert await one.publish("room", "everywhere") == 1
            assert await recv(here) == "everywhere"
            assert await recv(there) == "everywhere"  # "only here" never reached it
            assert len([m for m in pubsub_log.messages if "is unreachable" in m]) == 2
            for client in (here, there):
                await in_thread(client.close)


async def test_last_subscriber_leaving_unsubscribes_the_process_from_redis(
    anyio_backend: str, redis_server: RedisServer
) -> None:
    ended = anyio.Event()
    with anyio.fail_after(20):
        # redis-cli MONITOR prints every command Redis runs: the test waits for
        # the UNSUBSCRIBE itself instead of guessing when it is sent.
        async with await anyio.open_process(
            ["redis-cli", "-p", str(redis_server.port), "monitor"]
        ) as monitor:
            try:
                assert monitor.stdout is not None
                lines = TextReceiveStream(monitor.stdout)
                assert "OK" in await lines.receive()
                async with (
                    open_channels(redis_server.url) as channels,
                    running_server(subscribing_handler(channels, ended.set)) as (_, uri),
                ):
                    client = await subscribe(f"{uri}/room")
                    async with coredis.Redis.from_url(redis_server.url) as redis:
                        assert (await redis.pubsub_numsub("room"))[b"room"] == 1
                        await in_thread(client.close)
                        await ended.wait()
                        assert channels.subscribers("room") == 0
                        seen = ""
                        while '"UNSUBSCRIBE" "room"' not in seen:
                            seen += await lines.receive()
                        assert (await redis.pubsub_numsub("room"))[b"room"] == 0
            finally:
                monitor.terminate()
