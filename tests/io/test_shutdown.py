"""Graceful shutdown and cancellation, on both backends."""

from __future__ import annotations

import functools
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from websockets.exceptions import ConnectionClosed as ClientConnectionClosed
from websockets.exceptions import ConnectionClosedOK as ClientConnectionClosedOK

import wsserver

from ..serving import running_server
from .clients import RawClient, in_thread, open_client, port_of, recv

pytestmark = pytest.mark.anyio

TIMEOUT = 10


async def wait_for_close(ws: wsserver.WebSocketServerProtocol) -> None:
    await ws.wait_closed()


async def test_server_close_sends_1001_to_every_client_and_waits_for_handlers() -> None:
    connected: list[wsserver.WebSocketServerProtocol] = []
    all_connected = anyio.Event()
    ended: list[Any] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        connected.append(ws)
        if len(connected) == 3:
            all_connected.set()
        try:
            async for _ in ws:
                pass
        finally:
            ended.append(ws.close_code)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (server, uri):
            clients = [await open_client(uri) for _ in range(3)]
            await all_connected.wait()
            server.close()
            await server.wait_closed()
            assert ended == [1001, 1001, 1001]
            assert server.websockets == set()
            assert not server.is_serving()
            for client in clients:
                with pytest.raises(ClientConnectionClosedOK) as caught:
                    await recv(client)
                assert caught.value.rcvd is not None and caught.value.rcvd.code == 1001


async def test_messages_sent_before_close_are_delivered_before_1001() -> None:
    chunk = b"z" * 65536
    sent_all = anyio.Event()

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        for _ in range(20):
            await ws.send(chunk)
        await ws.send("last")
        sent_all.set()
        await ws.wait_closed()

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (server, uri):
            client = await open_client(uri)
            await sent_all.wait()
            server.close()
            for _ in range(20):
                assert await recv(client) == chunk
            assert await recv(client) == "last"
            with pytest.raises(ClientConnectionClosedOK) as caught:
                await recv(client)
            await server.wait_closed()
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1001


async def test_wait_closed_waits_for_handlers_to_finish_their_cleanup() -> None:
    events: list[str] = []
    connected = anyio.Event()

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        connected.set()
        await ws.wait_closed()
        events.append("connection closed")
        await anyio.sleep(0.1)  # cleanup that takes a while
        events.append("handler ended")

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (server, uri):
            await open_client(uri)
            await connected.wait()
            server.close()
            await server.wait_closed()
            events.append("server closed")
    assert events == ["connection closed", "handler ended", "server closed"]


async def test_closed_server_refuses_new_connections() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running_server(wait_for_close) as (server, uri):
            await server.aclose()
            with pytest.raises(OSError):
                await anyio.connect_tcp("127.0.0.1", port_of(uri))


async def test_server_is_an_async_context_manager_closing_on_exit() -> None:
    connected = anyio.Event()

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        connected.set()
        await ws.wait_closed()

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (server, uri):
            async with server:
                client = await open_client(uri)
                await connected.wait()
            assert not server.is_serving()
            with pytest.raises(ClientConnectionClosedOK):
                await recv(client)


async def test_close_without_closing_connections_lets_them_finish() -> None:
    connected = anyio.Event()

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        connected.set()
        async for message in ws:
            await ws.send(message)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (server, uri):
            client = await open_client(uri)
            await connected.wait()
            server.close(close_connections=False)
            while server.is_serving():  # close() returns at once; listening stops soon after
                await anyio.lowlevel.checkpoint()
            with pytest.raises(OSError):  # no longer listening...
                await anyio.connect_tcp("127.0.0.1", port_of(uri))
            await in_thread(client.send, "still served")  # ...but still serving this one
            assert await recv(client) == "still served"
            await in_thread(client.close)
            await server.wait_closed()


async def test_shutdown_drops_a_client_that_ignores_the_close_after_close_timeout() -> None:
    connected = anyio.Event()

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        connected.set()
        await ws.wait_closed()

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, close_timeout=0.3, ping_interval=None) as (server, uri):
            client = await RawClient.open(port_of(uri))
            await connected.wait()
            server.close()
            assert await client.recv_close() == (1001, "")
            await server.wait_closed()  # without any answer from the client
            await client.wait_for_eof()


async def test_cancelling_the_task_group_drops_every_connection() -> None:
    connected = anyio.Event()
    handler_exits: list[str] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        connected.set()
        try:
            await ws.recv()
        finally:
            handler_exits.append("exited")

    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as task_group:
            server = await task_group.start(
                functools.partial(wsserver.serve, handler, "127.0.0.1", 0)
            )
            port = server.sockets[0].getsockname()[1]
            client = await open_client(f"ws://127.0.0.1:{port}")
            await connected.wait()
            task_group.cancel_scope.cancel()

        with pytest.raises(ClientConnectionClosed):
            await recv(client)
        with pytest.raises(OSError):
            await anyio.connect_tcp("127.0.0.1", port)
        await server.wait_closed()
    assert handler_exits == ["exited"]
    assert not server.is_serving()


async def test_sockets_is_empty_once_the_server_is_closed() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running_server(wait_for_close) as (server, uri):
            assert [s.getsockname()[1] for s in server.sockets] == [port_of(uri)]
            await server.aclose()
            assert server.sockets == []
