"""Helpers to run a wsserver server inside a test, on whichever backend runs the test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

import wsserver


@asynccontextmanager
async def running_server(
    handler: Any, **options: Any
) -> AsyncIterator[tuple[wsserver.WebSocketServer, str]]:
    """Serve ``handler`` on 127.0.0.1 (a free port); yield ``(server, "ws://127.0.0.1:PORT")``.

    The server is closed, and waited for, on exit.
    """
    options.setdefault("host", "127.0.0.1")
    host = options.pop("host")
    async with anyio.create_task_group() as task_group:
        server = await task_group.start(
            lambda task_status: wsserver.serve(handler, host, 0, task_status=task_status, **options)
        )
        port = server.sockets[0].getsockname()[1]
        try:
            yield server, f"ws://127.0.0.1:{port}"
        finally:
            server.close()
            with anyio.fail_after(30):
                await server.wait_closed()
