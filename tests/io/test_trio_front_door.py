"""The Trio front door: ``server = await nursery.start(wsserver.trio_io.serve, ...)``.

Trio-only by nature: the tests run under pytest-trio.
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from typing import Any

import pytest
import trio
import trio.testing
from websockets.exceptions import ConnectionClosed as ClientConnectionClosed
from websockets.exceptions import ConnectionClosedOK as ClientConnectionClosedOK
from websockets.sync.client import unix_connect

import wsserver
from wsserver import trio_io

from .clients import CLIENT_TIMEOUT_SECONDS, connect

TIMEOUT = 10


async def echo(ws: wsserver.WebSocketServerProtocol) -> None:
    async for message in ws:
        await ws.send(message)


def port_of(server: trio_io.WebSocketServer) -> int:
    return int(server.sockets[0].getsockname()[1])


def exchange(uri: str, message: str) -> Any:
    with connect(uri) as client:
        client.send(message)
        return client.recv(CLIENT_TIMEOUT_SECONDS)


@pytest.mark.trio
async def test_nursery_start_returns_a_listening_server() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(trio_io.serve, echo, "127.0.0.1", 0)
            assert isinstance(server, trio_io.WebSocketServer)
            assert server.is_serving()
            uri = f"ws://127.0.0.1:{port_of(server)}"
            answer = await trio.to_thread.run_sync(exchange, uri, "hello trio")
            nursery.cancel_scope.cancel()
    assert answer == "hello trio"
    assert not server.is_serving()


@pytest.mark.trio
async def test_server_close_ends_the_serve_task_with_1001_to_clients() -> None:
    connected = trio.Event()

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        connected.set()
        await ws.wait_closed()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(trio_io.serve, handler, "127.0.0.1", 0)
            client = await trio.to_thread.run_sync(connect, f"ws://127.0.0.1:{port_of(server)}")
            await connected.wait()
            server.close()
        # The nursery exited on its own: the serve task returned.
        with pytest.raises(ClientConnectionClosedOK) as caught:
            await trio.to_thread.run_sync(client.recv, CLIENT_TIMEOUT_SECONDS)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1001


@pytest.mark.trio
async def test_cancelling_the_nursery_drops_connections() -> None:
    connected = trio.Event()

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        connected.set()
        await ws.wait_closed()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(trio_io.serve, handler, "127.0.0.1", 0)
            port = port_of(server)
            client = await trio.to_thread.run_sync(connect, f"ws://127.0.0.1:{port}")
            await connected.wait()
            nursery.cancel_scope.cancel()
        with pytest.raises(ClientConnectionClosed):
            await trio.to_thread.run_sync(client.recv, CLIENT_TIMEOUT_SECONDS)
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)


@pytest.mark.trio
async def test_serve_forever_returns_once_closed() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(trio_io.serve, echo, "127.0.0.1", 0)
            await server.start_serving()  # accepted for compatibility; already serving
            assert server.is_serving()

            async def close_once_serving_forever() -> None:
                await trio.testing.wait_all_tasks_blocked()
                server.close()

            nursery.start_soon(close_once_serving_forever)
            await server.serve_forever()
            await server.wait_closed()
    assert not server.is_serving()


@pytest.mark.trio
async def test_get_loop_is_not_available_on_trio() -> None:
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(trio_io.serve, echo, "127.0.0.1", 0)
            with pytest.raises(RuntimeError, match="asyncio"):
                server.get_loop()
            await server.aclose()


@pytest.mark.trio
async def test_address_in_use_raises_oserror_from_nursery_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                with pytest.raises(OSError) as caught:
                    await nursery.start(trio_io.serve, echo, "127.0.0.1", port)
    assert caught.value.errno == errno.EADDRINUSE


@pytest.mark.trio
async def test_unix_serve_with_nursery_start() -> None:
    def unix_exchange(path: str) -> Any:
        with unix_connect(path, "ws://localhost/", proxy=None) as client:
            client.send("trio over unix")
            return client.recv(CLIENT_TIMEOUT_SECONDS)

    with tempfile.TemporaryDirectory(prefix="wsserver-") as directory:
        path = os.path.join(directory, "ws.sock")
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                server = await nursery.start(trio_io.unix_serve, echo, path)
                answer = await trio.to_thread.run_sync(unix_exchange, path)
                await server.aclose()
    assert answer == "trio over unix"
