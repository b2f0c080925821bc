"""The I/O faults of issue #8, each written as behaviour a user relies on, on both backends.

1. A message that arrives in two pieces, or right behind a ping, after the handler
   spent time away from ``recv()``, reaches ``recv()`` without waiting for any
   timer of the server (the clock is stopped while it travels).
2. ``close()`` with more than ``max_queue`` messages unread completes with 1000.
3. A cancelled ``send()`` never leaves bytes of another frame inside its frame,
   and a ``send()`` that returned is never lost on a connection that closes cleanly.
4. ``write_limit`` bounds what ``send()`` buffers, on Trio as on asyncio.
5. A frame written in the same segment as the handshake request is answered.
6. A burst of 500 connections is all served.
8. An invalid option is refused with :exc:`ValueError` before anything listens.

Fault 7 (memory under a client that never reads) is measured in a fresh process
by ``tests/reliability/test_memory.py``; faults 9 and 10 belong to the
sans-I/O core and are tested in ``tests/sansio``.

The tests run on clocks that they can stop: Trio's :class:`~trio.testing.MockClock`
(at real speed until a test stops it) and, on asyncio, an event loop whose
``time()`` the test controls. Only the tests of fault 1 stop them.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
import socket
import struct
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import sniffio
import trio
import trio.testing

import wsserver
import wsserver.asyncio_io
import wsserver.trio_io
from wsserver.sansio.frames import Frame, Opcode, serialize_frame

from ..reliability.harness import raise_open_file_limit, unavailable
from ..serving import running_server
from .clients import RawClient, SocketClientStream, handshake_request, port_of

pytestmark = pytest.mark.anyio

#: Bound on each test; each takes well under a second when all is well.
TIMEOUT = 10


# A clock the test can stop ----------------------------------------------------------


class StoppableClockLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop whose clock the test can stop and move, like Trio's MockClock.

    asyncio schedules every timer, and anyio every deadline, against
    :meth:`time`: while it stands still, no timer fires.
    """

    def __init__(self) -> None:
        super().__init__()
        self._offset = 0.0
        self._stopped_at: float | None = None

    def time(self) -> float:
        """Return the loop's clock: real time, unless the test stopped it."""
        if self._stopped_at is not None:
            return self._stopped_at
        return super().time() + self._offset

    def stop_clock(self) -> None:
        """Stop the clock where it stands."""
        self._stopped_at = self.time()

    def jump(self, seconds: float) -> None:
        """Move the stopped clock forward."""
        assert self._stopped_at is not None, "the clock runs"
        self._stopped_at += seconds

    def restart_clock(self) -> None:
        """Let the clock run on, in real time, from where it stands."""
        if self._stopped_at is not None:
            self._offset = self._stopped_at - super().time()
            self._stopped_at = None


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Both backends, each with a clock that runs in real time until a test stops it."""
    if request.param == "trio":
        return "trio", {"clock": trio.testing.MockClock(rate=1.0)}
    return "asyncio", {"loop_factory": StoppableClockLoop}


class StoppableClock:
    """The running loop's clock, as the test stops, moves and restarts it."""

    def __init__(self) -> None:
        self._trio_clock: trio.testing.MockClock | None = None
        self._loop: StoppableClockLoop | None = None
        if sniffio.current_async_library() == "trio":
            clock = trio.lowlevel.current_clock()
            assert isinstance(clock, trio.testing.MockClock)
            self._trio_clock = clock
            self._trio_token = trio.lowlevel.current_trio_token()
        else:
            loop = asyncio.get_running_loop()
            assert isinstance(loop, StoppableClockLoop)
            self._loop = loop

    def stop(self) -> None:
        if self._trio_clock is not None:
            self._trio_clock.rate = 0.0
        else:
            assert self._loop is not None
            self._loop.stop_clock()

    def jump(self, seconds: float) -> None:
        if self._trio_clock is not None:
            self._trio_clock.jump(seconds)
        else:
            assert self._loop is not None
            self._loop.jump(seconds)

    def restart(self) -> None:
        if self._trio_clock is not None:
            self._trio_clock.rate = 1.0
        else:
            assert self._loop is not None
            self._loop.restart_clock()

    def restart_from_thread(self) -> None:
        """Restart the clock from another thread; nothing if the loop has ended."""
        with suppress(RuntimeError):  # trio.RunFinishedError, or a closed asyncio loop
            if self._trio_clock is not None:
                self._trio_token.run_sync_soon(self.restart)
            else:
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self.restart)


#: Real seconds after which a test stuck on a stopped clock gets it running again.
STUCK_SECONDS = 5


@asynccontextmanager
async def stopped_clock() -> AsyncIterator[StoppableClock]:
    """Stop the clock for the body of the ``with``; restart it on the way out.

    While it stands still no timer fires: not the server's, not the test's own
    ``fail_after``. So that a server waiting for a timer fails the test rather
    than hanging it, a watchdog thread restarts the clock if the body is still
    running after :data:`STUCK_SECONDS` of real time: the timers then fire, and
    the test sees that the clock moved.
    """
    clock = StoppableClock()
    clock.stop()
    done = threading.Event()

    def watchdog() -> None:
        if not done.wait(STUCK_SECONDS):
            clock.restart_from_thread()

    threading.Thread(target=watchdog, daemon=True).start()
    try:
        yield clock
    finally:
        done.set()
        clock.restart()


async def settle() -> None:
    """Let every task run until it waits for something (I/O, an event or the clock)."""
    if sniffio.current_async_library() == "trio":
        await trio.testing.wait_all_tasks_blocked()
    else:
        # asyncio has no such wait that works on a stopped clock (anyio's polls
        # with sleep(0.1)); a timer that came due, then the task it wakes, and
        # the tasks that one wakes, each take a turn of the loop.
        for _ in range(20):
            await anyio.lowlevel.checkpoint()


# Fault 1: late delivery -------------------------------------------------------------

#: How long the handler is busy away from recv(): longer than any back-off a
#: reader could nap through (0.1 s doubling to 1 s, in 0.1.0).
BUSY_SECONDS = 1.5
#: The stopped clock is moved through BUSY_SECONDS in steps this small, every
#: task running in between, as it would if real time passed.
CLOCK_STEP_SECONDS = 0.01
LATE_MESSAGE = "é, then the rest " * 600  # 11 KiB of UTF-8, to send in two pieces


def masked(opcode: Opcode, data: bytes) -> bytes:
    """One masked frame, as a client sends it."""
    return serialize_frame(Frame(opcode, data), mask=os.urandom(4))


async def assert_delivered_without_a_timer(first_write: bytes, second_write: bytes) -> None:
    """After a busy spell of the handler, check that ``LATE_MESSAGE`` reaches recv() at once.

    ``first_write`` starts with a ping: its pong shows that the server read it.
    ``second_write`` then completes ``LATE_MESSAGE``, and the message must reach
    the handler's recv() while the clock stands still.
    """
    came_back = anyio.Event()
    delivered = anyio.Event()
    received: list[str | bytes] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        await ws.recv()
        await anyio.sleep(BUSY_SECONDS)  # busy elsewhere, away from recv()
        came_back.set()
        received.append(await ws.recv())
        delivered.set()
        await ws.wait_closed()

    with anyio.fail_after(TIMEOUT):
        async with running_server(
            handler, ping_interval=None, compression=None, close_timeout=1
        ) as (_, uri):
            client = await RawClient.open(port_of(uri))
            async with stopped_clock() as clock:
                await client.send_frame(Opcode.TEXT, b"first")
                while not came_back.is_set():
                    clock.jump(CLOCK_STEP_SECONDS)
                    await settle()
                await settle()  # the handler waits in recv() now
                stopped_at = anyio.current_time()
                await client.stream.send(first_write)
                assert (await client.recv_frame()).opcode is Opcode.PONG
                await client.stream.send(second_write)
                await delivered.wait()
                waited = anyio.current_time() - stopped_at
            assert waited == 0, f"recv() got the message once the clock had moved {waited:.3f} s"
            assert received == [LATE_MESSAGE]
            await client.send_close(1000)
            assert await client.recv_close() == (1000, "")
            await client.wait_for_eof()


async def test_message_in_two_pieces_after_a_busy_handler_reaches_recv_at_once() -> None:
    frame = masked(Opcode.TEXT, LATE_MESSAGE.encode())
    half = len(frame) // 2
    await assert_delivered_without_a_timer(
        masked(Opcode.PING, b"read?") + frame[:half], frame[half:]
    )


async def test_message_right_behind_a_ping_after_a_busy_handler_reaches_recv_at_once() -> None:
    await assert_delivered_without_a_timer(
        masked(Opcode.PING, b"read?"), masked(Opcode.TEXT, LATE_MESSAGE.encode())
    )


# Fault 2: closing with a full queue -------------------------------------------------


async def test_close_with_more_than_max_queue_messages_unread_completes_with_1000() -> None:
    max_queue = 4
    close_timeout = 60  # the test's TIMEOUT is far below: waiting for it fails the test
    flooded = anyio.Event()
    closed = anyio.Event()
    codes: list[int | None] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        # A feed: it never reads what the client sends.
        await flooded.wait()
        await ws.close()
        codes.append(ws.close_code)
        closed.set()

    with anyio.fail_after(TIMEOUT):
        async with running_server(
            handler, max_queue=max_queue, close_timeout=close_timeout, ping_interval=None
        ) as (_, uri):
            client = await RawClient.open(port_of(uri))
            await client.stream.send(
                b"".join(masked(Opcode.TEXT, b"unread %d" % i) for i in range(4 * max_queue))
            )
            flooded.set()
            assert await client.recv_close() == (1000, "")
            await client.send_close(1000)
            await client.wait_for_eof()
            await closed.wait()
    assert codes == [1000]


# What a client receives, frame by frame ---------------------------------------------


class Attempt:
    """A message a handler set out to send, and whether its ``send()`` returned.

    :param name: how failures name it.
    :param message: what is passed to ``send()``; payloads are distinct, so a
        frame on the wire tells which attempt it belongs to.
    """

    def __init__(self, name: str, message: str | bytes) -> None:
        self.name = name
        self.message = message
        self.opcode = Opcode.TEXT if isinstance(message, str) else Opcode.BINARY
        self.payload = message.encode() if isinstance(message, str) else message
        self.returned = False

    async def send(self, ws: wsserver.WebSocketServerProtocol) -> None:
        """Send the message; record whether ``send()`` returned (not if the connection closed)."""
        with suppress(wsserver.ConnectionClosed):
            await ws.send(self.message)
            self.returned = True

    def __repr__(self) -> str:
        return self.name


def pattern(tag: str, size: int) -> bytes:
    """``size`` bytes repeating ``tag``: a payload that a foreign frame header would break."""
    unit = tag.encode()
    return (unit * (size // len(unit) + 1))[:size]


def describe(payload: bytes) -> str:
    return f"{len(payload)} bytes starting {payload[:24]!r}"


def departure(expected: bytes, received: bytes) -> int:
    """The index of the first byte of ``received`` that differs from ``expected``."""
    step = 4096
    start = 0
    while received[start:start + step] == expected[start:start + step]:
        start += step
    return next(
        index
        for index in range(start, start + step)
        if received[index:index + 1] != expected[index:index + 1]
    )


class FrameCollector:
    """Reads what the server sends and splits it into frames, by hand.

    The parser is the test's own, so that a frame written inside another one
    shows as a payload that no ``send()`` produced, or as bytes that are no
    frame at all.

    :param stream: the client's socket stream.
    """

    def __init__(self, stream: SocketClientStream) -> None:
        self.stream = stream
        self.received = 0
        self.frames: list[tuple[int, bytes]] = []  # (first byte: FIN, RSV, opcode; payload)
        self.eof = False
        #: Bytes that cannot start a server frame (the mask bit is set), if any.
        self.out_of_frame: bytes | None = None
        self._buffer = bytearray()

    async def handshake(self) -> None:
        """Do the opening handshake; frames that came with the 101 response are kept."""
        await self.stream.send(handshake_request())
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += await self.stream.receive()
        head, _, rest = bytes(self._buffer).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        self._buffer = bytearray()
        self._take(rest)

    async def receive_some(self) -> None:
        """Read once; split off every frame now complete."""
        try:
            data = await self.stream.receive(2**16)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            self.eof = True
            return
        self._take(data)

    async def receive_until(self, count: int) -> None:
        """Read until ``count`` bytes arrived in all, or the server closed."""
        while self.received < count and not self.eof:
            await self.receive_some()

    async def receive_to_end(self) -> None:
        """Read until the server closes TCP, answering its close frame as a client must; close."""
        answered = False
        while not self.eof:
            if not answered and (payload := self.close_payload()) is not None:
                answered = True
                with suppress(OSError, anyio.BrokenResourceError):
                    await self.stream.send(masked(Opcode.CLOSE, payload))
            await self.receive_some()
        await self.stream.aclose()

    def close_payload(self) -> bytes | None:
        """The payload of the close frame received, if any."""
        for first, payload in self.frames:
            if first & 0x0F == Opcode.CLOSE:
                return payload
        return None

    def cut(self) -> tuple[int, int, bytes] | None:
        """The frame the end of the stream cut short: ``(first byte, length, payload so far)``."""
        if self.out_of_frame is not None or not self._buffer:
            return None
        head = self._head()
        if head is None:  # not even a whole frame head
            return self._buffer[0], -1, b""
        first, head_length, length = head
        return first, length, bytes(self._buffer[head_length:])

    def _take(self, data: bytes) -> None:
        self.received += len(data)
        if self.out_of_frame is not None:
            return
        self._buffer += data
        while (head := self._head()) is not None and len(self._buffer) >= sum(head[1:]):
            first, head_length, length = head
            end = head_length + length
            self.frames.append((first, bytes(self._buffer[head_length:end])))
            del self._buffer[:end]

    def _head(self) -> tuple[int, int, int] | None:
        """Parse the head of the next frame: ``(first byte, head length, payload length)``."""
        buffer = self._buffer
        if len(buffer) < 2:
            return None
        first, second = buffer[0], buffer[1]
        if second & 0x80:
            # A server never masks: the stream lost its framing.
            self.out_of_frame = bytes(buffer[:24])
            return None
        length = second & 0x7F
        if length == 126:
            if len(buffer) < 4:
                return None
            return first, 4, struct.unpack_from("!H", buffer, 2)[0]
        if length == 127:
            if len(buffer) < 10:
                return None
            return first, 10, struct.unpack_from("!Q", buffer, 2)[0]
        return first, 2, length


def assert_intact(collector: FrameCollector, attempts: list[Attempt], *, ordered: bool) -> bool:
    """Check that every frame received is one the handler sent, whole; tell if it closed cleanly.

    Allowed: a send cancelled before its frame left (the frame is absent), or
    an aborted connection (the stream ends, perhaps inside a frame whose bytes
    so far are its own). Never allowed: a frame no ``send()`` produced, or
    bytes that are no frame (what bytes of a frame written inside another
    one's payload look like), and, once the closing handshake completed, a
    ``send()`` that returned but whose frame never came.

    :param ordered: the attempts were made one after the other, so their
        frames must come in the same order.
    :returns: whether the connection ended with a closing handshake.
    """
    by_payload = {attempt.payload: attempt for attempt in attempts}
    assert len(by_payload) == len(attempts), "payloads must be distinct"
    seen: list[Attempt] = []
    close: bytes | None = None
    for first, payload in collector.frames:
        assert close is None, f"a frame after the close frame: {describe(payload)}"
        assert first & 0xF0 == 0x80, f"FIN or RSV bits unexpected: {first:#04x}"
        if first & 0x0F == Opcode.CLOSE:
            close = payload
            continue
        attempt = by_payload.get(payload)
        assert attempt is not None, (
            f"after {seen[-3:]}, a frame that no send() produced: "
            f"{describe(payload)}{unlike(payload, len(payload), attempts, seen)}"
        )
        assert first & 0x0F == attempt.opcode, attempt
        assert attempt not in seen, f"{attempt} arrived twice"
        seen.append(attempt)
    assert collector.out_of_frame is None, (
        f"after {seen[-3:]}, bytes that cannot start a server frame: {collector.out_of_frame!r}"
    )
    if ordered:
        assert seen == [attempt for attempt in attempts if attempt in seen], seen
    cut = collector.cut()
    if cut is not None:
        assert close is None, "bytes after the close frame"
        first, length, partial = cut
        assert any(
            len(attempt.payload) == length and attempt.payload.startswith(partial)
            for attempt in attempts
            if first == 0x80 | attempt.opcode and attempt not in seen
        ), (
            f"after {seen[-3:]}, the frame that the end of the stream cut short is no "
            f"send()'s: {describe(partial)} of {length}{unlike(partial, length, attempts, seen)}"
        )
        return False
    if close is None:
        return False
    missing = [attempt for attempt in attempts if attempt.returned and attempt not in seen]
    assert not missing, f"send() returned, then its frame was lost: {missing}"
    return True


def unlike(payload: bytes, length: int, attempts: list[Attempt], seen: list[Attempt]) -> str:
    """Say where ``payload`` departs from the message it resembles most, for a failure message."""
    candidates = [a for a in attempts if len(a.payload) == length and a not in seen]
    if not candidates:
        return ""
    attempt = max(candidates, key=lambda a: departure(a.payload, payload))
    index = departure(attempt.payload, payload)
    return f"; it is {attempt} up to byte {index}, then {payload[index:index + 24]!r}"


#: Kernel buffers pinned small on both ends, so that the server's writes block soon.
KERNEL_BUFFER_BYTES = 64 * 1024


@asynccontextmanager
async def serving_with_small_buffers(
    handler: Any, **options: Any
) -> AsyncIterator[tuple[int, int]]:
    """Serve on 127.0.0.1 from a socket with small kernel buffers (accepted sockets inherit them).

    Yields ``(port, kernel bytes)``: what the server's send buffer and a client's
    receive buffer of :data:`KERNEL_BUFFER_BYTES` may hold together, as the
    kernel sized them (it doubles the values set, for its bookkeeping).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, KERNEL_BUFFER_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_BUFFER_BYTES)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    kernel_bytes = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) + 2 * KERNEL_BUFFER_BYTES
    options.setdefault("ping_interval", None)
    options.setdefault("compression", None)
    options.setdefault("close_timeout", 1)  # after a failure, a client that reads nothing
    async with anyio.create_task_group() as task_group:
        server = await task_group.start(
            functools.partial(wsserver.serve, handler, sock=sock, **options)
        )
        try:
            yield port, kernel_bytes
        finally:
            server.close()
            await server.wait_closed()


async def open_collector(port: int, receive_buffer: int | None = None) -> FrameCollector:
    """Connect a client that parses frames by hand, and do the opening handshake."""
    collector = FrameCollector(SocketClientStream(port, receive_buffer=receive_buffer))
    await collector.handshake()
    return collector


# Fault 3: cancelled sends -----------------------------------------------------------

#: A server that wrote its close frame inside an unfinished one waits this long
#: for an answer that cannot come, then drops TCP: the test then sees why.
CLOSE_TIMEOUT = 2


async def test_send_cancelled_against_a_slow_reader_leaves_no_frame_inside_it() -> None:
    big = Attempt("8 MiB", pattern("big!", 8 * 2**20))
    after = Attempt("after", "after")
    sending = anyio.Event()
    done = anyio.Event()
    scopes: list[anyio.CancelScope] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            sending.set()
            await big.send(ws)
        await after.send(ws)
        with suppress(wsserver.ConnectionClosed):
            await ws.close()
        done.set()

    with anyio.fail_after(TIMEOUT):
        async with serving_with_small_buffers(handler, close_timeout=CLOSE_TIMEOUT) as (port, _):
            collector = await open_collector(port, KERNEL_BUFFER_BYTES)
            await sending.wait()
            # Read 1 MiB of the 8, then cancel the send, which waits for the
            # slow reader to make room.
            await collector.receive_until(2**20)
            scopes[0].cancel()
            await collector.receive_to_end()
            await done.wait()
    assert collector.frames or collector.cut(), "the 8 MiB send wrote nothing"
    if assert_intact(collector, [big, after], ordered=True):
        assert [payload for _, payload in collector.frames[:2]] == [big.payload, b"after"]


async def test_sends_of_large_frames_cancelled_at_any_point_leave_no_frame_unfinished() -> None:
    rounds = 120
    attempts: list[Attempt] = []
    done = anyio.Event()

    async def cancel_after_turns(scope: anyio.CancelScope, turns: int) -> None:
        for _ in range(turns):
            await anyio.lowlevel.checkpoint()
        scope.cancel()

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        # Frames over 64 KiB, each send cancelled after 0, 1 or 2 turns of the
        # loop, with 0 to 2 small messages between them, so that the cancel
        # lands at every point where a send can give way.
        for index in range(rounds):
            for small in range(index % 3):
                attempts.append(attempt := Attempt(f"small {index}.{small}", f"{index}.{small}"))
                await attempt.send(ws)
            attempts.append(attempt := Attempt(f"large {index}", pattern(f"<{index}>", 2**16 + 7)))
            async with anyio.create_task_group() as task_group:
                with anyio.CancelScope() as scope:
                    task_group.start_soon(cancel_after_turns, scope, index // 3 % 3)
                    await attempt.send(ws)
            if ws.close_code is not None:
                break
        attempts.append(attempt := Attempt("after", "after"))
        await attempt.send(ws)
        with suppress(wsserver.ConnectionClosed):
            await ws.close()
        done.set()

    with anyio.fail_after(TIMEOUT):
        async with running_server(
            handler, ping_interval=None, compression=None, close_timeout=CLOSE_TIMEOUT
        ) as (_, uri):
            collector = await open_collector(port_of(uri))
            await collector.receive_to_end()
            await done.wait()
    assert_intact(collector, attempts, ordered=True)


async def test_cancelled_send_does_not_lose_frames_other_tasks_queued_behind_it() -> None:
    # Tasks started in this order queue their frames in this order on asyncio:
    # two large ones fill the buffers, the third is cancelled while it waits
    # to write, and two small ones wait behind it.
    first = Attempt("first", pattern("first", 2**20))
    second = Attempt("second", pattern("second", 2**20))
    cancelled = Attempt("cancelled", pattern("cancelled", 2**20))
    queued = [Attempt(f"queued {index}", f"queued {index}") for index in range(2)]
    after = Attempt("after", "after")
    scopes: list[anyio.CancelScope] = []
    done = anyio.Event()

    async def send_cancellable(ws: wsserver.WebSocketServerProtocol) -> None:
        with anyio.CancelScope() as scope:
            scopes.append(scope)
            await cancelled.send(ws)

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(first.send, ws)
            task_group.start_soon(second.send, ws)
            task_group.start_soon(send_cancellable, ws)
            for attempt in queued:
                task_group.start_soon(attempt.send, ws)
        await after.send(ws)
        with suppress(wsserver.ConnectionClosed):
            await ws.close()
        done.set()

    with anyio.fail_after(TIMEOUT):
        async with serving_with_small_buffers(handler, close_timeout=CLOSE_TIMEOUT) as (port, _):
            collector = await open_collector(port, KERNEL_BUFFER_BYTES)
            # The first frame and a quarter of the next: by then every task
            # has queued its frame and waits for the slow reader.
            await collector.receive_until(2**20 + 2**18)
            assert scopes, "the third send has not started"
            scopes[0].cancel()
            await collector.receive_to_end()
            await done.wait()
    clean = assert_intact(collector, [first, second, cancelled, *queued, after], ordered=False)
    assert not clean or collector.frames[-2][1] == b"after"


# Fault 4: write_limit ---------------------------------------------------------------


async def test_write_limit_bounds_what_send_buffers_for_a_client_that_does_not_read() -> None:
    write_limit = 2**20
    message = b"w" * 2**14
    count = 4 * write_limit // len(message)
    sent = 0
    progress = anyio.Event()

    connections: list[wsserver.WebSocketServerProtocol] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        nonlocal sent, progress
        connections.append(ws)
        for _ in range(count):
            await ws.send(message)
            sent += len(message)
            progress.set()
            progress = anyio.Event()

    with anyio.fail_after(TIMEOUT):
        async with serving_with_small_buffers(handler, write_limit=write_limit) as (
            port, kernel_bytes,
        ):
            collector = await open_collector(port, KERNEL_BUFFER_BYTES)
            # The client reads nothing: send() returns while what waits is
            # under write_limit, the kernel's buffers on top...
            with anyio.move_on_after(TIMEOUT / 2):
                while sent < write_limit:
                    await progress.wait()
            assert sent >= write_limit, (
                f"send() stopped returning after {sent} bytes, write_limit={write_limit}"
            )
            # ...and no more than that: the handler's next send() waits.
            await anyio.wait_all_tasks_blocked()
            frame_bytes = len(message) + 4
            # What the server holds in user space: at most write_limit, plus
            # the frame of the send() now waiting.
            (ws,) = connections
            assert ws.buffered_amount() <= write_limit + frame_bytes, ws.buffered_amount()
            # And what send() let through is that plus what the kernel holds:
            # the buffer sizes set, plus one 64 KiB loopback segment in flight.
            most = write_limit + kernel_bytes + 2**16 + 2 * frame_bytes
            assert sent <= most, (
                f"send() returned for {sent} bytes unread, more than write_limit={write_limit}"
                f" + {kernel_bytes} in kernel buffers + a segment + 2 frames = {most}"
            )
            assert sent < count * len(message)
            # Once the client reads, every send() completes and every message arrives.
            await collector.receive_to_end()
    assert [payload for _, payload in collector.frames[:-1]] == [message] * count
    assert collector.close_payload() == struct.pack("!H", 1000)
    assert sent == count * len(message)


# Fault 5: a frame in the handshake's segment ----------------------------------------


async def test_frame_sent_in_the_same_write_as_the_handshake_is_echoed() -> None:
    async def echo(ws: wsserver.WebSocketServerProtocol) -> None:
        async for message in ws:
            await ws.send(message)

    with anyio.fail_after(TIMEOUT):
        async with running_server(echo, ping_interval=None) as (_, uri):
            client = await RawClient.connect(port_of(uri))
            await client.stream.send(handshake_request() + masked(Opcode.TEXT, b"at once"))
            await client.read_response_head()
            assert client.status == 101
            frame = await client.recv_frame()
            assert (frame.opcode, frame.data) == (Opcode.TEXT, b"at once")
            await client.send_close(1000)
            assert await client.recv_close() == (1000, "")
            await client.wait_for_eof()


# Fault 6: a burst of connections ----------------------------------------------------

BURST = 500


class ConnectingStream(SocketClientStream):
    """A :class:`SocketClientStream` over a socket whose non-blocking connect has begun."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock


def listen_queue_limit() -> int:
    """The kernel's cap on any listen backlog (``net.core.somaxconn``)."""
    return int(Path("/proc/sys/net/core/somaxconn").read_text())


async def test_burst_of_500_connections_is_all_served() -> None:
    raise_open_file_limit(2 * BURST + 200)
    if listen_queue_limit() < BURST:
        unavailable(f"net.core.somaxconn is {listen_queue_limit()}, below {BURST}")
    failures: Counter[str] = Counter()
    echoed = 0

    async def echo(ws: wsserver.WebSocketServerProtocol) -> None:
        async for message in ws:
            await ws.send(message)

    async def converse(index: int, sock: socket.socket) -> None:
        nonlocal echoed
        client = RawClient(ConnectingStream(sock))
        try:
            await anyio.wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                raise OSError(error, os.strerror(error))
            await client.handshake(f"/burst/{index}")
            await client.send_frame(Opcode.TEXT, b"burst %d" % index)
            frame = await client.recv_frame()
            assert frame.data == b"burst %d" % index, frame
            echoed += 1
            await client.send_close(1000)
            await client.recv_close()
        except Exception as exc:  # a client's failure is what the test counts
            failures[type(exc).__name__] += 1
        finally:
            await client.aclose()

    with anyio.fail_after(4 * TIMEOUT):
        async with running_server(echo, ping_interval=None, compression=None) as (_, uri):
            address = ("127.0.0.1", port_of(uri))
            sockets = []
            try:
                # All at once, without letting the server run: the listen
                # queue alone must hold the burst.
                for _ in range(BURST):
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    sockets.append(sock)
                    sock.setblocking(False)
                    sock.connect_ex(address)
                # Over loopback the kernel completes a connection within
                # connect() when the listen queue has room; a SYN it dropped
                # waits a second or more to be sent again.
                established = sum(
                    sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 1
                    for sock in sockets
                )
                async with anyio.create_task_group() as task_group:
                    for index, sock in enumerate(sockets):
                        task_group.start_soon(converse, index, sock)
            finally:
                for sock in sockets:
                    sock.close()
    assert established == BURST, f"the listen queue held {established} of {BURST} connections"
    assert (echoed, dict(failures)) == (BURST, {})


# Fault 8: invalid options -----------------------------------------------------------

INVALID_OPTIONS = [
    pytest.param("max_queue", 0, id="max_queue=0"),
    pytest.param("ping_interval", -5, id="ping_interval=-5"),
    pytest.param("ping_interval", 0, id="ping_interval=0"),
]


async def never_called(ws: wsserver.WebSocketServerProtocol) -> None:
    raise AssertionError("no connection was expected")


@contextmanager
def occupied_port() -> Iterator[int]:
    """A port that another socket listens on.

    A server that opened its listener before checking its options fails there
    with :exc:`OSError` (address in use), not :exc:`ValueError`.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def refusal(start: Callable[..., Coroutine[Any, Any, None]]) -> BaseException | None:
    """Start a server in a task group; return the exception it failed to start with.

    Returns ``None`` (having closed the server again) if it started.
    """
    async with anyio.create_task_group() as task_group:
        try:
            server = await task_group.start(start)
        except Exception as exc:
            return exc
        server.close()
    return None


def assert_refused(exc: BaseException | None, name: str, value: float) -> None:
    """Check for the ValueError that names the option and the value it refused."""
    assert isinstance(exc, ValueError), f"{name}={value} not refused up front: {exc!r}"
    assert re.search(rf"{name}\b.*(?<![\d.-]){re.escape(str(value))}\b", str(exc)), exc


@pytest.mark.parametrize(("name", "value"), INVALID_OPTIONS)
async def test_serve_refuses_an_invalid_option_before_listening(name: str, value: float) -> None:
    option: dict[str, Any] = {name: value}
    with anyio.fail_after(TIMEOUT), occupied_port() as port:
        exc = await refusal(
            functools.partial(wsserver.serve, never_called, "127.0.0.1", port, **option)
        )
    assert_refused(exc, name, value)


@pytest.mark.parametrize(("name", "value"), INVALID_OPTIONS)
async def test_unix_serve_refuses_an_invalid_option_before_binding(
    name: str, value: float, tmp_path: Path
) -> None:
    option: dict[str, Any] = {name: value}
    path = tmp_path / "ws.sock"
    with anyio.fail_after(TIMEOUT):
        exc = await refusal(
            functools.partial(wsserver.unix_serve, never_called, str(path), **option)
        )
    assert_refused(exc, name, value)
    assert not path.exists()


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.parametrize(("name", "value"), INVALID_OPTIONS)
async def test_trio_door_refuses_an_invalid_option_before_listening(
    name: str, value: float
) -> None:
    option: dict[str, Any] = {name: value}
    exc: BaseException | None = None
    with trio.fail_after(TIMEOUT), occupied_port() as port:
        async with trio.open_nursery() as nursery:
            try:
                server = await nursery.start(
                    functools.partial(
                        wsserver.trio_io.serve, never_called, "127.0.0.1", port, **option
                    )
                )
            except Exception as caught:
                exc = caught
            else:
                server.close()
    assert_refused(exc, name, value)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(("name", "value"), INVALID_OPTIONS)
async def test_asyncio_door_refuses_an_invalid_option_before_listening(
    name: str, value: float, tmp_path: Path
) -> None:
    option: dict[str, Any] = {name: value}
    path = tmp_path / "ws.sock"
    with anyio.fail_after(TIMEOUT), occupied_port() as port:
        for start in (
            functools.partial(wsserver.asyncio_io.serve, never_called, "127.0.0.1", port),
            functools.partial(wsserver.asyncio_io.unix_serve, never_called, str(path)),
        ):
            exc: BaseException | None = None
            try:
                server = await start(**option)
            except Exception as caught:
                exc = caught
            else:
                server.close()
                await server.wait_closed()
            assert_refused(exc, name, value)
    assert not path.exists()
