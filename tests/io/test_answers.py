"""The core's answers leave while the handler waits in recv(): pongs and the close echo.

On asyncio the lean stream feeds the core from its transport's callback; what
the core answers must still reach the client, with the server closing TCP first
after the closing handshake, and nothing failing in the loop's callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from wsserver.asyncio_io import serve
from wsserver.sansio.frames import Frame, Opcode, serialize_frame

from ..serving import running_server
from .clients import RawClient, handshake_request, port_of
from .gates import FullTransport


async def receive_forever(websocket: object) -> None:
    async for _ in websocket:  # type: ignore[attr-defined]
        pass


@pytest.mark.anyio
async def test_client_close_is_echoed_then_server_closes_tcp(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    with anyio.fail_after(5):
        async with running_server(receive_forever, ping_interval=None) as (_, uri):
            for _ in range(3):  # more than one: the first may differ from the next
                client = await RawClient.open(port_of(uri))
                await client.send_close(1000, "bye")
                assert await client.recv_close() == (1000, "bye")
                # The server closes TCP first (RFC 6455 7.1.1): EOF, not a timeout.
                assert await client.read_until_eof() == b""
                await client.aclose()
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == []


@pytest.mark.anyio
async def test_ping_is_answered_while_the_handler_waits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)
    with anyio.fail_after(5):
        async with running_server(receive_forever, ping_interval=None) as (_, uri):
            client = await RawClient.open(port_of(uri))
            for payload in (b"one", b"two"):
                await client.send_frame(Opcode.PING, payload)
                frame = await client.recv_frame()
                assert (frame.opcode, frame.data) == (Opcode.PONG, payload)
            await client.send_close()
            assert await client.recv_close() == (1000, "")
            await client.wait_for_eof()
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == []


def test_answers_leave_under_plain_asyncio_run() -> None:
    """Under asyncio.run() alone (no anyio runner), as in production.

    There asyncio's protocol callbacks run outside any task, where anyio
    finds no loop unless the stream marks their context as asyncio's: the
    close echo and the half-close after it (which starts a task from the
    callback) must still leave, and nothing fail in a callback.
    """
    async def main() -> None:
        async with serve(receive_forever, "127.0.0.1", 0, ping_interval=None) as server:
            port = server.sockets[0].getsockname()[1]
            for _ in range(3):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(handshake_request())
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 101 ")
                writer.write(client_frame(Opcode.PING, b"hi"))
                writer.write(client_frame(Opcode.CLOSE, (1000).to_bytes(2, "big")))
                # A pong, the close echo, then EOF: the server closes TCP first.
                rest = await reader.read()
                assert rest == b"\x8a\x02hi" + b"\x88\x02\x03\xe8"
                writer.close()
                await writer.wait_closed()

    assert run_under_plain_asyncio(main) == []


def test_keepalive_pings_and_drops_under_plain_asyncio_run() -> None:
    """The keepalive runs on loop timers there: its ping leaves, and a client
    that never answers is dropped with 1011, with nothing failing in a callback."""
    async def main() -> None:
        async with serve(
            receive_forever, "127.0.0.1", 0, ping_interval=0.05, ping_timeout=0.05
        ) as server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(handshake_request())
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101 ")
            # A ping with 4 bytes of payload, then the close frame with 1011.
            rest = await reader.read()
            assert rest[:2] == b"\x89\x04"
            assert rest[6:10] == b"\x88\x18\x03\xf3"  # 1011, "keepalive ping timeout"
            writer.close()
            await writer.wait_closed()

    assert run_under_plain_asyncio(main) == []


def client_frame(opcode: Opcode, data: bytes) -> bytes:
    return serialize_frame(Frame(opcode, data), mask=os.urandom(4))


def test_kept_back_frames_that_find_the_transport_full_leave_under_plain_asyncio_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Coalescing's callback (loop.call_soon) must be able to start the writer
    task there too, when the frames it flushes find the transport full."""
    transport = FullTransport(monkeypatch)

    async def main() -> None:
        released = asyncio.Event()
        handler = transport.answer_while_full_then_wait(released)
        async with serve(handler, "127.0.0.1", 0, ping_interval=None) as server:
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(handshake_request())
            await reader.readuntil(b"\r\n\r\n")
            writer.write(client_frame(Opcode.BINARY, b"one") + client_frame(Opcode.BINARY, b"two"))
            assert await reader.readexactly(5) == b"\x82\x03one"
            released.set()
            assert await reader.readexactly(5) == b"\x82\x03two"
            writer.close()
            await writer.wait_closed()

    assert run_under_plain_asyncio(main) == []


def run_under_plain_asyncio(main: Callable[[], Awaitable[None]]) -> list[dict[str, Any]]:
    """Run ``main()`` with asyncio.run() alone, within 5 s; return what failed in callbacks.

    In a thread of its own, so that a server that cannot even close (the
    failure some of these tests look for) fails the test instead of hanging
    the suite: the thread is then left behind, a daemon.
    """
    failures: list[dict[str, Any]] = []
    raised: list[BaseException] = []

    async def bounded() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: failures.append(context))
        async with asyncio.timeout(5):
            await main()

    def run() -> None:
        try:
            asyncio.run(bounded())
        except BaseException as exc:  # handed to the test's thread below
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=15)
    if thread.is_alive():
        pytest.fail("asyncio.run() did not return within 15 s")
    if raised:
        raise raised[0]
    return failures
