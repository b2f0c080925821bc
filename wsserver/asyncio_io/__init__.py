"""The asyncio front door: ``async with serve(...) as server`` and ``server = await serve(...)``.

The server itself is the shared anyio layer (:mod:`wsserver.server`). This
module only adapts it to asyncio's conventions: the server runs in a task that
this module keeps until it ends; :meth:`~wsserver.server.WebSocketServer.wait_closed`,
``serve_forever()`` and ``__aexit__`` report its failure, if it fails after
starting. ``serve`` and ``unix_serve`` take exactly the options of the shared
ones, with the same names, types and defaults (checked by mypy).
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from typing import Any

import anyio.abc

from .. import server as shared
from ..connection import Handler, WebSocketServerProtocol
from ..options import DEFAULT_SERVER_HEADER as DEFAULT_SERVER_HEADER  # for help() and docs
from ..options import TCPServeOptions, UnixServeOptions, entry_point
from ..server import WebSocketServer

__all__ = ["WebSocketServer", "WebSocketServerProtocol", "serve", "unix_serve"]

_running: set[asyncio.Task[None]] = set()
"""The tasks running servers: asyncio keeps only weak references to tasks."""


class _FutureStatus(anyio.abc.TaskStatus[WebSocketServer]):
    """The ``task_status`` given to the shared ``serve``: resolves a future once it listens."""

    def __init__(self, future: asyncio.Future[WebSocketServer]) -> None:
        self._future = future

    def started(self, value: WebSocketServer | None = None) -> None:
        assert value is not None, "the shared serve() reports its server"
        self._future.set_result(value)


class Serve:
    """What :func:`serve` returns: await it, or use it as an async context manager.

    ``server = await serve(...)`` starts the server and returns it once it
    listens; ``async with serve(...) as server:`` also closes it on exit and
    waits until every connection ended.
    """

    def __init__(
        self, ws_handler: Handler, options: TCPServeOptions | UnixServeOptions
    ) -> None:
        self._ws_handler = ws_handler
        self._options = options
        self._server: WebSocketServer | None = None

    async def _start(self) -> WebSocketServer:
        loop = asyncio.get_running_loop()
        started: asyncio.Future[WebSocketServer] = loop.create_future()
        # The shared serve() runs as the task itself, not under a task group of
        # ours: a failure to start reaches the caller as itself (an OSError),
        # not wrapped in an exception group.
        task = loop.create_task(
            shared.run_server(self._ws_handler, self._options, task_status=_FutureStatus(started))
        )
        _running.add(task)
        task.add_done_callback(_finished)
        try:
            server = await _first(started, task)
        except BaseException:
            task.cancel()
            raise
        self._server = server
        return server

    def __await__(self) -> Generator[Any, None, WebSocketServer]:
        return self._start().__await__()

    async def __aenter__(self) -> WebSocketServer:
        return await self._start()

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        await self._server.aclose()


def _finished(task: asyncio.Task[None]) -> None:
    """Forget a server's task once it ended; its failure is the server's to report."""
    _running.discard(task)
    if not task.cancelled():
        # Retrieved here so that asyncio does not log it as never retrieved:
        # wait_closed(), serve_forever() and __aexit__ raise it to the user.
        task.exception()


async def _first(
    started: asyncio.Future[WebSocketServer], task: asyncio.Task[None]
) -> WebSocketServer:
    waiting: list[asyncio.Future[Any]] = [started, task]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    if started.done():
        return started.result()
    task.result()  # raises what made the server fail to start
    raise RuntimeError("the server stopped before it started")


@entry_point(TCPServeOptions)
def serve(ws_handler: Handler, options: TCPServeOptions) -> Serve:
    """Start a WebSocket server on TCP, asyncio style.

    ``server = await serve(handler, host, port)`` returns a running
    :class:`~wsserver.server.WebSocketServer`; ``async with serve(...) as
    server:`` also closes it on exit. Every option of :func:`wsserver.serve`
    applies, with the same defaults, and is validated at this call.

    Raises:
        OSError: when awaited, if the address cannot be bound.
        ValueError: if an option's value is out of range.
        TypeError: if an option has the wrong type.
    """
    return Serve(ws_handler, options)


@entry_point(UnixServeOptions)
def unix_serve(ws_handler: Handler, options: UnixServeOptions) -> Serve:
    """Start a WebSocket server on a Unix socket, asyncio style.

    Like :func:`serve`, with a socket ``path`` (or ``sock``).

    Raises:
        OSError: when awaited, if the path cannot be bound.
        ValueError: if an option's value is out of range.
        TypeError: if an option has the wrong type, or neither path nor sock is given.
    """
    return Serve(ws_handler, options)
