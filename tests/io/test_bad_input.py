"""Bad input and limits (SPEC section 6), end to end over real sockets, on both backends.

Every test checks four things a user can observe: the precise answer (HTTP
status or close code), exactly one log line about the problem at the right
level, that the server still serves a well-behaved client afterwards, and
that closing the server finishes promptly (no task left behind).
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import struct
import time
import zlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import pytest
from websockets.sync.client import connect

import wsserver

pytestmark = pytest.mark.anyio

#: Bound on a whole test; each one takes well under a second when all is well.
TEST_TIMEOUT_SECONDS = 10
#: The close_timeout of :func:`serving`, unless a test sets its own.
CLOSE_TIMEOUT_SECONDS = 1
#: Bound on ``server.close(); await server.wait_closed()``: a client that does
#: not answer holds the shutdown for close_timeout, and no longer.
SHUTDOWN_TIMEOUT_SECONDS = 5 * CLOSE_TIMEOUT_SECONDS
#: Timing checks in pass/fail tests bound what a timeout makes happen by
#: multiples of that timeout: never before ``TOO_SOON`` times it (timers do not
#: fire early; the slack covers the test measuring from a point a little off
#: the server's own start), and before ``TOO_LATE`` times it (``TOO_LATE``
#: leaves room for a loaded machine, while still telling a timeout from another
#: that would have fired instead, such as close_timeout after open_timeout).
TOO_SOON = 0.8
TOO_LATE = 10

#: Log lines every connection produces whatever happens; not about bad input.
LIFECYCLE_PREFIXES = (
    "server listening",
    "server closing",
    "server closed",
    "connection open",
    "connection closed:",
)


# Serving and checking ---------------------------------------------------------------


async def echo(websocket: Any) -> None:
    """Handler: echo every message."""
    async for message in websocket:
        await websocket.send(message)


def routed(misbehaving: Any) -> Any:
    """Handler: ``misbehaving`` for the path ``/bad``, :func:`echo` for any other."""

    async def handler(websocket: Any) -> None:
        if websocket.path == "/bad":
            await misbehaving(websocket)
        else:
            await echo(websocket)

    return handler


@asynccontextmanager
async def serving(bad_handler: Any = None, **options: Any) -> AsyncIterator[tuple[Any, int]]:
    """Serve on 127.0.0.1; yield ``(server, port)``.

    ``bad_handler`` serves the path ``/bad``; every other path echoes. On exit,
    unless the test closed the server itself, a normal client must still get
    an echo; then the server must close within :data:`SHUTDOWN_TIMEOUT_SECONDS`.
    """
    options.setdefault("close_timeout", CLOSE_TIMEOUT_SECONDS)
    handler = echo if bad_handler is None else routed(bad_handler)
    async with anyio.create_task_group() as task_group:
        server = await task_group.start(
            functools.partial(wsserver.serve, handler, "127.0.0.1", 0, **options)
        )
        port = server.sockets[0].getsockname()[1]
        try:
            yield server, port
            if not server.is_closing():
                assert await normal_client_echo(port) == "still serving"
        finally:
            server.close()
            with anyio.fail_after(SHUTDOWN_TIMEOUT_SECONDS):
                await server.wait_closed()


def _echo_once(port: int) -> str:
    with connect(f"ws://127.0.0.1:{port}/", open_timeout=5, close_timeout=2, proxy=None) as ws:
        ws.send("still serving")
        return str(ws.recv(timeout=5))


async def normal_client_echo(port: int) -> str:
    """Run a ``websockets`` client exchange; return what came back."""
    return await anyio.to_thread.run_sync(
        functools.partial(_echo_once, port), abandon_on_cancel=True
    )


def problem_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Log records of INFO and above about something other than the normal lifecycle."""
    return [
        record
        for record in caplog.records
        if record.name == "wsserver.server"
        and record.levelno >= logging.INFO
        and not _without_id(record.getMessage()).startswith(LIFECYCLE_PREFIXES)
    ]


def _without_id(message: str) -> str:
    """Drop the ``[connection id]`` prefix of a connection's log line."""
    if message.startswith("["):
        return message.partition("] ")[2]
    return message


def assert_logged_once(
    caplog: pytest.LogCaptureFixture, fragment: str, level: int = logging.INFO
) -> None:
    lines = problem_lines(caplog)
    summary = [(logging.getLevelName(r.levelno), r.getMessage()) for r in lines]
    assert len(lines) == 1, summary
    assert lines[0].levelno == level, summary
    assert fragment in lines[0].getMessage(), summary


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="wsserver.server")
    return caplog


# A raw client -----------------------------------------------------------------------


def handshake_request(
    extra: Iterable[tuple[str, str]] = (), *, omit: Iterable[str] = (), path: str = "/"
) -> bytes:
    """A valid opening handshake, with headers added or left out."""
    headers = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    for name in omit:
        del headers[name]
    lines = [f"GET {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    lines += [f"{k}: {v}" for k, v in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True
) -> bytes:
    """Encode a frame as a client would (masked unless told otherwise)."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    length = len(payload)
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 2**16:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    body = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return head + mask + body


class RawClient:
    """A TCP client that speaks hand-built HTTP and frames."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    @classmethod
    @asynccontextmanager
    async def connect(cls, port: int) -> AsyncIterator[RawClient]:
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            yield cls(stream)

    async def send(self, data: bytes) -> None:
        await self.stream.send(data)

    async def _fill(self) -> None:
        self.buffer += await self.stream.receive()

    async def read_exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self._fill()
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def read_response(self) -> tuple[int, dict[str, str], bytes]:
        """Read an HTTP response: status, headers (lower-case names), body."""
        while b"\r\n\r\n" not in self.buffer:
            await self._fill()
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        self.buffer = bytearray(rest)
        status_line, *header_lines = head.decode("iso-8859-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self.read_exact(int(headers.get("content-length", "0")))
        return int(status_line.split(" ")[1]), headers, body

    async def handshake(
        self, extra: Iterable[tuple[str, str]] = (), path: str = "/"
    ) -> dict[str, str]:
        await self.send(handshake_request(extra, path=path))
        status, headers, _ = await self.read_response()
        assert status == 101
        return headers

    async def read_frame(self) -> tuple[int, bytes]:
        """Read one server frame (never masked); return ``(opcode, payload)``."""
        first, second = await self.read_exact(2)
        assert second & 0x80 == 0, "server frames are not masked"
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.read_exact(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.read_exact(8))
        return first & 0x0F, await self.read_exact(length)

    async def expect_close(self) -> int:
        """Read frames up to a close frame; check that TCP closes after it; return the code."""
        while True:
            opcode, payload = await self.read_frame()
            if opcode == 0x8:
                break
        await self.expect_eof()
        return int(struct.unpack("!H", payload[:2])[0])

    async def expect_eof(self) -> bytes:
        """Wait until the server closes (at least its side of) the connection.

        :returns: the bytes received and not read before the end.
        """
        try:
            while True:
                await self._fill()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
        rest, self.buffer = bytes(self.buffer), bytearray()
        return rest


async def http_answer(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw request bytes; return the response; check the server then closes."""
    async with RawClient.connect(port) as client:
        await client.send(request)
        response = await client.read_response()
        await client.expect_eof()
    return response


# Opening handshake ------------------------------------------------------------------


async def test_request_line_over_8_kib_gets_400(logs: pytest.LogCaptureFixture) -> None:
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with serving() as (_, port):
            request = handshake_request(path="/" + "a" * 8200)
            status, _, _ = await http_answer(port, request)
    assert status == 400
    assert_logged_once(logs, "request line too long")


async def test_header_line_over_8_kib_gets_431(logs: pytest.LogCaptureFixture) -> None:
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with serving() as (_, port):
            request = handshake_request([("X-Big", "b" * 8200)])
            status, _, _ = await http_answer(port, request)
    assert status == 431
    assert_logged_once(logs, "header line too long")


async def test_over_128_headers_gets_431(logs: pytest.LogCaptureFixture) -> None:
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with serving() as (_, port):
            request = handshake_request([(f"X-H{i}", "v") for i in range(130)])
            status, _, _ = await http_answer(port, request)
    assert status == 431
    assert_logged_once(logs, "more than 128 headers")


async def test_non_http_bytes_get_400(logs: pytest.LogCaptureFixture) -> None:
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with serving() as (_, port):
            status, _, _ = await http_answer(port, b"\x16\x03\x01\x02\x00\x01\x00\r\n\r\n")
    assert status == 400
    assert_logged_once(logs, "invalid request line")


async def test_http_without_upgrade_gets_426(logs: pytest.LogCaptureFixture) -> None:
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with serving() as (_, port):
            request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            status, headers, _ = await http_answer(port, request)
    assert status == 426
    assert headers["upgrade"] == "websocket"
    assert_logged_once(logs, "invalid handshake")


async def test_wrong_version_gets_426_naming_version_13(logs: pytest.LogCaptureFixture) -> None:
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with serving() as (_, port):
            request = handshake_request(
                [("Sec-WebSocket-Version", "8")], omit=["Sec-WebSocket-Version"]
            )
            status, headers, _ = await http_answer(port, request)
    assert status == 426
    assert headers["sec-websocket-version"] == "13"
    assert_logged_once(logs, "Sec-WebSocket-Version")


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(None, id="missing"),
        pytest.param("not base64!", id="not-base64"),
        pytest.param(base64.b64encode(b"too short").decode(), id="wrong-length"),
    ],
)
async def test_bad_key_gets_400(key: str | None, logs: pytest.LogCaptureFixture) -> None:
    extra = [] if key is None else [("Sec-WebSocket-Key", key)]
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with serving() as (_, port):
            request = handshake_request(extra, omit=["Sec-WebSocket-Key"])
            status, _, _ = await http_answer(port, request)
    assert status == 400
    assert_logged_once(logs, "Sec-WebSocket-Key")


async def test_origin_not_allowed_gets_403(logs: pytest.LogCaptureFixture) -> None:
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with serving(origins=["http://good.example", None]) as (_, port):
            request = handshake_request([("Origin", "http://evil.example")])
            status, _, _ = await http_answer(port, request)
    assert status == 403
    assert_logged_once(logs, "Origin")


async def test_trickled_handshake_is_dropped_after_open_timeout(
    logs: pytest.LogCaptureFixture,
) -> None:
    request = handshake_request()
    open_timeout = 0.5
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with (
            # A close_timeout the test would not outlive: lingering for it fails.
            serving(open_timeout=open_timeout, close_timeout=60) as (_, port),
            RawClient.connect(port) as client,
        ):
            started = time.monotonic()

            async def trickle() -> None:
                for byte in request:
                    await client.send(bytes([byte]))
                    await anyio.sleep(0.1)

            async with anyio.create_task_group() as task_group:
                task_group.start_soon(trickle)
                unanswered = await client.expect_eof()
                task_group.cancel_scope.cancel()
            elapsed = time.monotonic() - started
    # Dropped at open_timeout (the trickle alone would take 20 s), without
    # lingering for close_timeout on top.
    assert TOO_SOON * open_timeout <= elapsed < TOO_LATE * open_timeout, elapsed
    assert unanswered == b""  # no HTTP response: there was no request to answer
    assert_logged_once(logs, "opening handshake timed out after 0.5s")


# After the handshake ----------------------------------------------------------------


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return client_frame(0x8, struct.pack("!H", code) + reason)


@pytest.mark.parametrize(
    ("frames", "code", "fragment"),
    [
        pytest.param([client_frame(0x1, b"hi", masked=False)], 1002, "mask", id="unmasked"),
        pytest.param([client_frame(0x1, b"hi", rsv=0b010)], 1002, "reserved bits", id="rsv2"),
        pytest.param([client_frame(0x1, b"hi", rsv=0b100)], 1002, "reserved bits", id="rsv1"),
        pytest.param([client_frame(0x3, b"hi")], 1002, "opcode", id="bad-opcode"),
        pytest.param([client_frame(0x9, b"hi", fin=False)], 1002, "fragmented", id="frag-ping"),
        pytest.param([client_frame(0x9, b"p" * 126)], 1002, "125", id="ping-over-125"),
        pytest.param([client_frame(0x0, b"hi")], 1002, "continuation", id="stray-cont"),
        pytest.param(
            [client_frame(0x1, b"a", fin=False), client_frame(0x1, b"b")],
            1002,
            "continuation",
            id="text-inside-text",
        ),
        pytest.param([close_frame(999)], 1002, "close code", id="close-999"),
        pytest.param([close_frame(1005)], 1002, "close code", id="close-1005"),
        pytest.param([client_frame(0x8, b"\x03")], 1002, "close", id="close-one-byte"),
        pytest.param([client_frame(0x1, b"caf\xc3")], 1007, "UTF-8", id="bad-utf8-text"),
        pytest.param(
            [client_frame(0x1, b"ok \xf0\x9f", fin=False), client_frame(0x0, b"!!")],
            1007,
            "UTF-8",
            id="bad-utf8-across-fragments",
        ),
        pytest.param([close_frame(1000, b"\xff\xfe")], 1007, "UTF-8", id="bad-utf8-reason"),
        pytest.param([client_frame(0x2, b"x" * 1025)], 1009, "exceeds limit", id="over-max-size"),
        pytest.param(
            [client_frame(0x2, b"x" * 600, fin=False), client_frame(0x0, b"x" * 600)],
            1009,
            "exceeds limit",
            id="fragments-over-max-size",
        ),
    ],
)
async def test_protocol_violation_closes_with_the_rfc_code(
    frames: list[bytes], code: int, fragment: str, logs: pytest.LogCaptureFixture
) -> None:
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with (
            serving(max_size=1024, compression=None) as (_, port),
            RawClient.connect(port) as client,
        ):
            await client.handshake()
            for frame in frames:
                await client.send(frame)
            assert await client.expect_close() == code
    assert_logged_once(logs, fragment)


async def test_violator_that_keeps_tcp_open_is_dropped_after_close_timeout(
    logs: pytest.LogCaptureFixture,
) -> None:
    close_timeout = 0.5
    ended = anyio.Event()
    ended_at: list[float] = []

    async def receive(websocket: Any) -> None:
        with pytest.raises(wsserver.ConnectionClosedError):
            await websocket.recv()
        ended_at.append(time.monotonic())
        ended.set()

    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with (
            serving(receive, close_timeout=close_timeout) as (_, port),
            RawClient.connect(port) as client,
        ):
            await client.handshake(path="/bad")
            await client.send(client_frame(0x1, b"hi", masked=False))
            started = time.monotonic()
            opcode, payload = await client.read_frame()
            assert (opcode, payload[:2]) == (0x8, struct.pack("!H", 1002))
            # Read the server's FIN, but keep our side open and say nothing.
            await client.expect_eof()
            await ended.wait()
    elapsed = ended_at[0] - started
    assert TOO_SOON * close_timeout <= elapsed < TOO_LATE * close_timeout, elapsed
    summary = [r.getMessage() for r in problem_lines(logs)]
    assert len(summary) == 2, summary
    assert "protocol error" in summary[0]
    assert "closing handshake timed out after 0.5s" in summary[1]


def deflate_bomb(size: int) -> bytes:
    """A permessage-deflate payload that inflates to ``size`` zero bytes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = compressor.compress(b"\x00" * size) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


async def test_decompression_bomb_closes_with_1009(logs: pytest.LogCaptureFixture) -> None:
    bomb = deflate_bomb(64 * 2**20)
    assert len(bomb) < 100_000  # small on the wire, 64 MiB once inflated
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with (
            serving(max_size=2**20) as (_, port),
            RawClient.connect(port) as client,
        ):
            headers = await client.handshake(
                [("Sec-WebSocket-Extensions", "permessage-deflate")]
            )
            assert headers["sec-websocket-extensions"].startswith("permessage-deflate")
            await client.send(client_frame(0x2, bomb, rsv=0b100))
            assert await client.expect_close() == 1009
    assert_logged_once(logs, "exceeds limit")


# Peers that misbehave in time -------------------------------------------------------


async def test_client_that_never_reads_makes_send_wait(logs: pytest.LogCaptureFixture) -> None:
    sent: list[int] = []
    buffered: list[int] = []
    chunk = b"x" * 2**16

    async def flood(websocket: Any) -> None:
        while True:
            await websocket.send(chunk)
            sent.append(len(chunk))
            buffered.append(websocket.buffered_amount())

    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with serving(flood, compression=None, ping_interval=None) as (server, port):
            async with RawClient.connect(port) as client:
                await client.handshake(path="/bad")
                # Let the handler fill every buffer between it and the client.
                previous = -1
                while previous != len(sent):
                    previous = len(sent)
                    await anyio.sleep(0.3)
                # Sending is blocked: memory stays bounded by the socket buffers.
                assert sum(sent) < 64 * 2**20
                assert max(buffered) <= len(chunk) + 16
                # The server still shuts down, in close_timeout, while the
                # client still refuses to read.
                server.close()
                with anyio.fail_after(SHUTDOWN_TIMEOUT_SECONDS):
                    await server.wait_closed()
            assert await refuses_connections(port)
    assert_logged_once(logs, "closing handshake timed out")


async def refuses_connections(port: int) -> bool:
    """Tell whether nothing listens on ``port`` any more."""
    try:
        stream = await anyio.connect_tcp("127.0.0.1", port)
    except OSError:
        return True
    await stream.aclose()
    return False


async def test_client_that_never_reads_does_not_stop_others(
    logs: pytest.LogCaptureFixture,
) -> None:
    async def flood(websocket: Any) -> None:
        while True:
            await websocket.send(b"x" * 2**16)

    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with (
            serving(flood, compression=None, ping_interval=None) as (_, port),
            RawClient.connect(port) as client,
        ):
            await client.handshake(path="/bad")
            await anyio.sleep(0.3)
            assert await normal_client_echo(port) == "still serving"
    # Then the client vanished with unread data: the handler's send failed and
    # the connection ended, which is no problem worth a line.
    assert problem_lines(logs) == []


async def test_peer_that_stops_answering_pings_is_closed_1011(
    logs: pytest.LogCaptureFixture,
) -> None:
    closed: list[int] = []

    async def wait(websocket: Any) -> None:
        await websocket.wait_closed()
        closed.append(websocket.close_code)

    ping_interval, ping_timeout = 0.2, 0.3
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with (
            serving(wait, ping_interval=ping_interval, ping_timeout=ping_timeout) as (_, port),
            RawClient.connect(port) as client,
        ):
            await client.handshake(path="/bad")
            started = time.monotonic()
            # Silent peer: read (to see what the server does) but never answer.
            assert await client.expect_close() == 1011
            elapsed = time.monotonic() - started
    waits = ping_interval + ping_timeout
    assert TOO_SOON * waits <= elapsed < TOO_LATE * waits, elapsed
    assert closed == [1006]
    assert_logged_once(logs, "no pong within 0.3s")


async def test_peer_that_never_answers_our_close_is_dropped_after_close_timeout(
    logs: pytest.LogCaptureFixture,
) -> None:
    async def say_bye(websocket: Any) -> None:
        await websocket.send("bye")

    close_timeout = 0.5
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with (
            serving(say_bye, close_timeout=close_timeout) as (_, port),
            RawClient.connect(port) as client,
        ):
            await client.handshake(path="/bad")
            assert await client.read_frame() == (0x1, b"bye")
            opcode, payload = await client.read_frame()
            assert (opcode, payload[:2]) == (0x8, struct.pack("!H", 1000))
            started = time.monotonic()
            # Never send our close frame, never close TCP: wait for the server.
            await client.expect_eof()
            elapsed = time.monotonic() - started
    assert TOO_SOON * close_timeout <= elapsed < TOO_LATE * close_timeout, elapsed
    assert_logged_once(logs, "closing handshake timed out after 0.5s")
