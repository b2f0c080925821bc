"""The asyncio front door: ``async with serve(...) as server`` and ``server = await serve(...)``.

The server itself is the shared anyio layer (:mod:`wsserver.server`); on
asyncio it runs over the lean byte stream of :mod:`wsserver.asyncio_io._stream`.
This module only adapts the structured ``serve`` to asyncio's conventions: the
server runs in a background task that the returned
:class:`~wsserver.server.WebSocketServer` owns, and that ends when the server
is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from .. import server as shared
from ..connection import Handler, WebSocketServerProtocol
from ..server import WebSocketServer

__all__ = ["WebSocketServer", "WebSocketServerProtocol", "serve", "unix_serve"]


class _FutureStatus:
    """The ``task_status`` given to ``serve``: resolves a future once the server listens."""

    def __init__(self, future: asyncio.Future[WebSocketServer]) -> None:
        self._future = future

    def started(self, value: WebSocketServer) -> None:
        self._future.set_result(value)


class _Serve:
    """Awaitable and async context manager that starts a server in the background."""

    def __init__(
        self, start: Callable[..., Coroutine[Any, Any, None]], *args: Any, **kwargs: Any
    ) -> None:
        self._start = start
        self._args = args
        self._kwargs = kwargs
        self._server: WebSocketServer | None = None

    async def _launch(self) -> WebSocketServer:
        loop = asyncio.get_running_loop()
        started: asyncio.Future[WebSocketServer] = loop.create_future()

        # serve() runs as the task itself, not under a task group of ours:
        # a failure to start then reaches the caller as itself (an OSError),
        # not wrapped in an exception group.
        task = loop.create_task(
            self._start(*self._args, task_status=_FutureStatus(started), **self._kwargs)
        )
        # The task ends with the server; keep it referenced and report a
        # failure to start (for example an address in use) to the caller.
        try:
            server = await _first(started, task)
        except BaseException:
            task.cancel()
            raise
        server._owner_task = task  # type: ignore[attr-defined]
        self._server = server
        return server

    def __await__(self) -> Generator[Any, None, WebSocketServer]:
        return self._launch().__await__()

    async def __aenter__(self) -> WebSocketServer:
        return await self._launch()

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


async def _first(
    started: asyncio.Future[WebSocketServer], task: asyncio.Task[None]
) -> WebSocketServer:
    pending: set[asyncio.Future[Any]] = {started, task}
    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    if started.done():
        return started.result()
    task.result()  # raises what made the server fail to start
    raise RuntimeError("the server stopped before it started")


def serve(ws_handler: Handler, host: Any = None, port: int | None = None, **kwargs: Any) -> _Serve:
    """Start a WebSocket server on TCP, asyncio style.

    ``server = await serve(handler, host, port)`` returns a running
    :class:`~wsserver.server.WebSocketServer`; ``async with serve(...) as
    server:`` also closes it on exit. Every option of :func:`wsserver.serve`
    applies, with the same defaults.

    :raises OSError: when awaited, if the address cannot be bound.
    """
    return _Serve(shared.serve, ws_handler, host, port, **kwargs)


def unix_serve(ws_handler: Handler, path: str | None = None, **kwargs: Any) -> _Serve:
    """Start a WebSocket server on a Unix socket, asyncio style.

    Like :func:`serve`, with a socket ``path``.

    :raises OSError: when awaited, if the path cannot be bound.
    """
    return _Serve(shared.unix_serve, ws_handler, path, **kwargs)
