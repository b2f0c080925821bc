"""The core's answers leave while the handler waits in recv(): pongs and the close echo.

On asyncio the lean stream feeds the core from its transport's callback; what
the core answers must still reach the client, with the server closing TCP first
after the closing handshake, and nothing failing in the loop's callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import anyio
import pytest

import wsserver._sending
from wsserver.asyncio_io import serve
from wsserver.sansio.frames import Frame, Opcode, serialize_frame

from ..serving import running_server
from .clients import RawClient, handshake_request, port_of


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
    failures: list[dict[str, Any]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: failures.append(context))
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

    async def bounded() -> None:
        async with asyncio.timeout(5):
            await main()

    asyncio.run(bounded())
    assert failures == []


def test_keepalive_pings_and_drops_under_plain_asyncio_run() -> None:
    """The keepalive runs on loop timers there: its ping leaves, and a client
    that never answers is dropped with 1011, with nothing failing in a callback."""
    failures: list[dict[str, Any]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: failures.append(context))
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

    async def bounded() -> None:
        async with asyncio.timeout(5):
            await main()

    asyncio.run(bounded())
    assert failures == []


def client_frame(opcode: Opcode, data: bytes) -> bytes:
    return serialize_frame(Frame(opcode, data), mask=os.urandom(4))


def test_kept_back_frames_that_find_the_transport_full_leave_under_plain_asyncio_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Coalescing's callback (loop.call_soon) must be able to start the writer
    task there too, when the frames it flushes find the transport full."""
    failures: list[dict[str, Any]] = []
    full = False
    real_direct_writer = wsserver._sending.direct_writer

    def gated_direct_writer(stream: Any) -> Any:
        write = real_direct_writer(stream)
        return None if write is None else (lambda view: 0 if full else write(view))

    monkeypatch.setattr(wsserver._sending, "direct_writer", gated_direct_writer)

    async def main() -> None:
        nonlocal full
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: failures.append(context))
        released = asyncio.Event()

        async def answer_while_full_then_wait(websocket: Any) -> None:
            nonlocal full
            first = await websocket.recv()
            full = True
            await websocket.send(first)  # kept back: a second message is queued
            await released.wait()
            full = False
            await websocket.send(await websocket.recv())

        async with serve(answer_while_full_then_wait, "127.0.0.1", 0, ping_interval=None) as server:
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

    async def bounded() -> None:
        async with asyncio.timeout(5):
            await main()

    asyncio.run(bounded())
    assert failures == []
