"""Unix sockets in Linux's abstract namespace (names that start with a NUL byte)."""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

import anyio
import pytest

import wsserver

from .clients import connect, in_thread, recv

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux feature"),
]


async def echo(websocket: Any) -> None:
    async for message in websocket:
        await websocket.send(message)


async def test_abstract_unix_socket_serves_and_stops_cleanly() -> None:
    name = f"\0wsserver-test-{os.getpid()}-{id(object())}"
    with anyio.fail_after(10):
        async with anyio.create_task_group() as task_group:
            server = await task_group.start(
                lambda task_status: wsserver.unix_serve(echo, name, task_status=task_status)
            )

            def talk() -> Any:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(name)
                return connect("ws://localhost/", sock=sock)

            client = await in_thread(talk)
            try:
                await in_thread(client.send, "abstract")
                assert await recv(client) == "abstract"
            finally:
                await in_thread(client.close)
            server.close()
            await server.wait_closed()  # stopping must not trip over the name
