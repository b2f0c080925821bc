"""The asyncio front door: ``await serve(...)`` and ``async with serve(...)``.

asyncio-only by nature: each test runs its own loop with :func:`asyncio.run`
and talks to the server with the ``websockets`` asyncio client.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import tempfile
from collections.abc import Coroutine
from typing import Any

import pytest
from websockets.asyncio.client import connect, unix_connect
from websockets.exceptions import ConnectionClosedOK

import wsserver
from wsserver.asyncio_io import WebSocketServer, serve, unix_serve

TIMEOUT = 10


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a test's body on a fresh asyncio loop, bounded in time."""

    async def bounded() -> None:
        async with asyncio.timeout(TIMEOUT):
            await coroutine

    asyncio.run(bounded())


async def echo(ws: wsserver.WebSocketServerProtocol) -> None:
    async for message in ws:
        await ws.send(message)


def port_of(server: WebSocketServer) -> int:
    return int(server.sockets[0].getsockname()[1])


async def tasks_left() -> set[asyncio.Task[Any]]:
    """Tasks besides the caller that do not end on their own within a second."""
    others = asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]
    if others:
        await asyncio.wait(others, timeout=1)
    return {task for task in others if not task.done()}


def test_await_serve_returns_a_running_server() -> None:
    async def main() -> None:
        server = await serve(echo, "127.0.0.1", 0)
        assert isinstance(server, WebSocketServer)
        assert server.is_serving()
        assert server.get_loop() is asyncio.get_running_loop()
        async with connect(f"ws://127.0.0.1:{port_of(server)}") as client:
            await client.send("hello asyncio")
            assert await client.recv() == "hello asyncio"
        server.close()
        await server.wait_closed()
        assert not server.is_serving()
        assert await tasks_left() == set()

    run(main())


def test_async_with_serve_closes_connections_with_1001_on_exit() -> None:
    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server:
            assert server.is_serving()
            client = await connect(f"ws://127.0.0.1:{port_of(server)}")
            await client.send("inside")
            assert await client.recv() == "inside"
        assert not server.is_serving()
        with pytest.raises(ConnectionClosedOK) as caught:
            await client.recv()
        assert caught.value.rcvd is not None and caught.value.rcvd.code == 1001
        await client.wait_closed()
        assert await tasks_left() == set()

    run(main())


def test_serve_forever_returns_once_the_server_is_closed() -> None:
    async def main() -> None:
        server = await serve(echo, "127.0.0.1", 0)
        forever = asyncio.create_task(server.serve_forever())
        async with connect(f"ws://127.0.0.1:{port_of(server)}") as client:
            await client.send("while serving forever")
            assert await client.recv() == "while serving forever"
        assert not forever.done()
        server.close()
        await forever
        assert not server.is_serving()
        await server.wait_closed()

    run(main())


def test_cancelling_serve_forever_closes_the_server() -> None:
    async def main() -> None:
        server = await serve(echo, "127.0.0.1", 0)
        forever = asyncio.create_task(server.serve_forever())
        await asyncio.sleep(0)  # let it start waiting
        forever.cancel()
        with pytest.raises(asyncio.CancelledError):
            await forever
        await server.wait_closed()
        assert not server.is_serving()

    run(main())


def test_start_serving_keeps_a_started_server_serving() -> None:
    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0) as server:
            await server.start_serving()
            assert server.is_serving()
            async with connect(f"ws://127.0.0.1:{port_of(server)}") as client:
                await client.send("still serving")
                assert await client.recv() == "still serving"

    run(main())


def test_serve_options_apply_through_the_front_door() -> None:
    async def main() -> None:
        async with serve(
            echo, "127.0.0.1", 0, subprotocols=["chat"], server_header="Front/1",
            compression=None,
        ) as server, connect(
            f"ws://127.0.0.1:{port_of(server)}", subprotocols=["chat"]
        ) as client:
            assert client.subprotocol == "chat"
            assert client.response.headers["Server"] == "Front/1"
            assert "Sec-WebSocket-Extensions" not in client.response.headers

    run(main())


@pytest.mark.parametrize("style", ["await", "async with"])
def test_address_in_use_raises_oserror(style: str) -> None:
    async def main() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(OSError) as caught:
                if style == "await":
                    await serve(echo, "127.0.0.1", port)
                else:
                    async with serve(echo, "127.0.0.1", port):
                        pass
            assert caught.value.errno == errno.EADDRINUSE
        assert await tasks_left() == set()

    run(main())


def test_unix_serve_front_door() -> None:
    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="wsserver-") as directory:
            path = os.path.join(directory, "ws.sock")
            async with unix_serve(echo, path) as server:
                assert server.is_serving()
                async with unix_connect(path, "ws://localhost/") as client:
                    await client.send("over a unix socket")
                    assert await client.recv() == "over a unix socket"
            assert not server.is_serving()

    run(main())
