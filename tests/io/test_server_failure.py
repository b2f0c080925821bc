"""A server that fails after it started reports the failure to whoever waits for it."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import anyio
import pytest

import wsserver
import wsserver.asyncio_io

pytestmark = pytest.mark.anyio


async def echo(websocket: Any) -> None:
    async for message in websocket:
        await websocket.send(message)


def break_listener(server: wsserver.WebSocketServer) -> None:
    """Make accept() fail with an error that is not a shortage of descriptors.

    On Linux, shutting a listening socket down wakes its accept loop, and
    ``accept()`` then fails with EINVAL: a broken listener, which the server
    must not ride out.
    """
    server.sockets[0].shutdown(socket.SHUT_RDWR)


async def test_shared_serve_fails_in_its_task_group_and_in_wait_closed() -> None:
    seen: list[BaseException] = []

    async def waiter(server: wsserver.WebSocketServer) -> None:
        try:
            await server.wait_closed()
        except OSError as exc:
            seen.append(exc)

    with anyio.fail_after(5), pytest.RaisesGroup(OSError):
        async with anyio.create_task_group() as task_group:
            server = await task_group.start(
                lambda task_status: wsserver.serve(
                    echo, "127.0.0.1", 0, task_status=task_status
                )
            )
            task_group.start_soon(waiter, server)
            await anyio.wait_all_tasks_blocked()
            break_listener(server)
    # The task group cancelled the waiter, or it saw the error first: never a clean return.
    assert all(isinstance(exc, OSError) for exc in seen)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("wait", ["wait_closed", "serve_forever"])
async def test_asyncio_door_reports_a_failure_after_start(wait: str) -> None:
    server = await wsserver.asyncio_io.serve(echo, "127.0.0.1", 0)
    break_listener(server)
    with pytest.raises(OSError):
        await asyncio.wait_for(getattr(server, wait)(), 5)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_door_context_manager_exit_reports_a_failure_after_start() -> None:
    with pytest.raises(OSError):
        async with wsserver.asyncio_io.serve(echo, "127.0.0.1", 0) as server:
            break_listener(server)
            await asyncio.wait_for(server.wait_closed(), 5)
