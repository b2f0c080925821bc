"""Back-pressure in both directions: memory stays bounded whatever the peer does.

The kernel's buffers are part of what a peer can fill, so these tests pin
them: the server listens on a socket with small ``SO_RCVBUF`` / ``SO_SNDBUF``
(accepted sockets inherit them) and the client sets its own before
connecting. What is left to bound is the server's own buffering.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

import wsserver
from wsserver.sansio.frames import Frame, Opcode, serialize_frame

from .clients import RawClient, SocketClientStream

pytestmark = pytest.mark.anyio

TIMEOUT = 20
KERNEL_BUFFER_BYTES = 64 * 1024
MESSAGE_BYTES = 16 * 1024
#: How long a write may make no progress before we call it blocked.
STALL_SECONDS = 0.5
#: More than any bounded server buffers; an unbounded server takes it all.
ATTEMPTED_BYTES = 16 * 2**20
#: What the server, its kernel buffers and ours may hold when flow control works:
#: max_queue messages, a read_limit chunk, the asyncio stream's read buffer,
#: write_limit, and four small kernel buffers add up to well under this.
BOUND_BYTES = 2 * 2**20


@asynccontextmanager
async def serving_with_small_buffers(
    handler: Any, **options: Any
) -> AsyncIterator[tuple[wsserver.WebSocketServer, int]]:
    """Serve on 127.0.0.1 from a listening socket with small kernel buffers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, KERNEL_BUFFER_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_BUFFER_BYTES)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    options.setdefault("ping_interval", None)
    options.setdefault("compression", None)
    async with anyio.create_task_group() as task_group:
        server = await task_group.start(
            functools.partial(wsserver.serve, handler, sock=sock, **options)
        )
        try:
            yield server, port
        finally:
            server.close()
            await server.wait_closed()


async def test_handler_that_does_not_read_stops_the_server_reading() -> None:
    start_reading = anyio.Event()
    received: list[int] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        await start_reading.wait()
        async for message in ws:
            received.append(len(message))

    frame = serialize_frame(Frame(Opcode.BINARY, b"x" * MESSAGE_BYTES), mask=os.urandom(4))
    with anyio.fail_after(TIMEOUT):
        async with serving_with_small_buffers(handler, max_queue=4) as (_, port):
            stream = SocketClientStream(port, send_buffer=KERNEL_BUFFER_BYTES)
            client = RawClient(stream)
            await client.handshake()

            # Push messages until the socket takes nothing for STALL_SECONDS.
            written = 0
            pending = memoryview(b"")
            while written < ATTEMPTED_BYTES:
                if not pending:
                    pending = memoryview(frame)
                sent = stream.try_send(pending)
                written += sent
                pending = pending[sent:]
                if not sent and not await stream.wait_writable(STALL_SECONDS):
                    break

            # Once the handler reads, every message gets through, in full.
            start_reading.set()
            await stream.send(bytes(pending))
            await client.send_close(1000)
            assert await client.recv_close() == (1000, "")
            await client.wait_for_eof()

    assert written < BOUND_BYTES
    assert received == [MESSAGE_BYTES] * (-(-written // len(frame)))


async def test_client_that_does_not_read_makes_send_wait() -> None:
    count = 1024
    payload = b"y" * MESSAGE_BYTES
    progress: dict[str, Any] = {"sent": 0, "event": anyio.Event()}

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        for _ in range(count):
            await ws.send(payload)
            progress["sent"] += 1
            event, progress["event"] = progress["event"], anyio.Event()
            event.set()

    with anyio.fail_after(TIMEOUT):
        async with serving_with_small_buffers(handler, write_limit=MESSAGE_BYTES) as (_, port):
            stream = SocketClientStream(port, receive_buffer=KERNEL_BUFFER_BYTES)
            client = RawClient(stream)
            await client.handshake()

            # Read nothing until the handler's sends make no progress.
            while progress["sent"] < count:
                with anyio.move_on_after(STALL_SECONDS) as stall:
                    await progress["event"].wait()
                if stall.cancelled_caught:
                    break
            sent_while_stalled = progress["sent"]

            # Then read: the sends resume and every message arrives.
            sizes = []
            while (frame := await client.recv_frame()).opcode is Opcode.BINARY:
                sizes.append(len(frame.data))
            assert frame.opcode is Opcode.CLOSE
            await client.send_close(1000)
            await client.wait_for_eof()

    assert sent_while_stalled * MESSAGE_BYTES < BOUND_BYTES
    assert sizes == [MESSAGE_BYTES] * count
