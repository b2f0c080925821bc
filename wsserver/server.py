"""Serving: listeners in a task group, one task per connection, graceful shutdown.

This is the shared, loop-independent layer. :func:`serve` and
:func:`unix_serve` follow Trio's ``nursery.start`` convention and also work in
an anyio task group on asyncio; :mod:`wsserver.asyncio_io` adds the
awaitable / context-manager conventions of asyncio on top. The listening
sockets come from the transport floor (:func:`wsserver._transport.open_listeners`),
the only code that knows which loop runs.
"""

from __future__ import annotations

import errno
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.abc

from ._transport import Listener, open_listeners, running_loop
from .connection import Handler, LoggerLike, WebSocketServerProtocol
from .options import DEFAULT_SERVER_HEADER as DEFAULT_SERVER_HEADER  # for help() and docs
from .options import ServeOptions, TCPServeOptions, UnixServeOptions, entry_point

if sys.version_info < (3, 11):  # pragma: no cover - a dependency of anyio there
    from exceptiongroup import BaseExceptionGroup

__all__ = ["WebSocketServer", "serve", "unix_serve"]

ACCEPT_RETRY_DELAY = 0.1
"""Seconds to wait before accepting again after running out of descriptors."""
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class WebSocketServer:
    """A running WebSocket server: its listeners and its open connections.

    :func:`serve` returns it once listening. Stop it with :meth:`close` (or by
    cancelling the scope it runs in) and wait with :meth:`wait_closed`.

    :param logger: where to log; defaults to the ``wsserver.server`` logger.
    """

    def __init__(self, logger: LoggerLike | None = None) -> None:
        self.logger: LoggerLike = logger or logging.getLogger("wsserver.server")
        self.websockets: set[WebSocketServerProtocol] = set()
        """Every connection of this server, in the handshake or open."""
        self._listeners: list[Listener] = []
        self._close_requested = anyio.Event()
        self._close_connections = True
        self._closed = anyio.Event()
        self._serving = False
        self._loop = running_loop()
        self._failure: BaseException | None = None

    # Public API -------------------------------------------------------------------

    def close(self, close_connections: bool = True) -> None:
        """Stop listening and close every connection with 1001 (going away).

        Returns at once; :meth:`wait_closed` waits for the end. Idempotent.

        :param close_connections: false to let open connections finish on
            their own; the server then closes when the last one ends.
        """
        self._close_connections = close_connections
        self._close_requested.set()

    async def wait_closed(self) -> None:
        """Wait until the server stopped listening and every connection ended.

        Raises:
            Exception: what made the server stop, if it failed after it started
                (the task running it ended with that error).
        """
        await self._closed.wait()
        if self._failure is not None:
            raise self._failure

    async def aclose(self) -> None:
        """Close the server and wait until it is closed."""
        self.close()
        await self.wait_closed()

    def get_loop(self) -> Any:
        """Return the asyncio event loop the server runs on.

        :raises RuntimeError: on Trio, which has no loop object.
        """
        if self._loop is None:
            raise RuntimeError("get_loop() is only available on asyncio, not trio")
        return self._loop

    def is_serving(self) -> bool:
        """Tell whether the server accepts new connections."""
        return self._serving

    def is_closing(self) -> bool:
        """Tell whether :meth:`close` was called."""
        return self._close_requested.is_set()

    async def start_serving(self) -> None:
        """Start accepting connections; the server already does once started.

        Kept for compatibility with :class:`asyncio.Server`.
        """

    async def serve_forever(self) -> None:
        """Run until the server is closed; close it if this call is cancelled."""
        try:
            await self.wait_closed()
        finally:
            if not self._closed.is_set():
                self.close()

    @property
    def sockets(self) -> list[socket.socket]:
        """The listening sockets; empty once the server stopped listening."""
        found = []
        for listener in self._listeners:
            for sub in getattr(listener, "listeners", [listener]):
                sock = sub.extra(anyio.abc.SocketAttribute.raw_socket, None)
                if sock is not None:
                    found.append(sock)
        return found

    async def __aenter__(self) -> WebSocketServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # Running ----------------------------------------------------------------------

    async def run(
        self,
        listeners: Sequence[Listener],
        handle: Callable[[anyio.abc.ByteStream], Awaitable[None]],
        *,
        task_status: anyio.abc.TaskStatus[WebSocketServer] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept connections on ``listeners`` until closed or cancelled.

        Each connection runs ``handle(stream)`` in a task of the server's task
        group. Reports the server through ``task_status`` once listening.
        """
        self._listeners = list(listeners)
        try:
            async with anyio.create_task_group() as connections:
                async with anyio.create_task_group() as accepting:
                    for listener in self._listeners:
                        # One accept loop per socket, so that each recovers alone.
                        for sub in getattr(listener, "listeners", [listener]):
                            accepting.start_soon(self._accept, sub, handle, connections)
                    self._serving = True
                    self._log_listening()
                    task_status.started(self)
                    await self._close_requested.wait()
                    accepting.cancel_scope.cancel()
                self._serving = False
                await self._close_listeners()
                self.logger.info("server closing")
                if self._close_connections:
                    for websocket in list(self.websockets):
                        connections.start_soon(websocket.close, 1001, "")
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException as exc:
            # Reported to whoever waits for the server, not only to the task
            # running it; as itself, not wrapped by the task groups above.
            failure = _unwrap(exc)
            self._failure = failure
            self.logger.error("server failed: %s", failure)
            if failure is exc:
                raise
            raise failure from None
        finally:
            self._serving = False
            with anyio.CancelScope(shield=True):
                await self._close_listeners()
            self._closed.set()
            self.logger.info("server closed")

    async def _accept(
        self,
        listener: Listener,
        handle: Callable[[anyio.abc.ByteStream], Awaitable[None]],
        connections: anyio.abc.TaskGroup,
    ) -> None:
        """Run ``listener`` until cancelled, riding out a shortage of resources.

        Out of file descriptors (or buffers), accept() fails; the server then
        waits a little and accepts again instead of stopping, as the kernel
        keeps pending connections in the backlog meanwhile.
        """
        short = False
        while True:
            try:
                await listener.serve(handle, connections)
                return
            except (OSError, anyio.BrokenResourceError) as exc:
                cause = exc if isinstance(exc, OSError) else exc.__cause__
                if not isinstance(cause, OSError) or cause.errno not in _RESOURCE_ERRNOS:
                    raise
                if not short:
                    self.logger.error("cannot accept connections: %s; retrying", cause)
                short = True
                await anyio.sleep(ACCEPT_RETRY_DELAY)

    async def _close_listeners(self) -> None:
        # Forget them: a closed listener has no sockets to report (asyncio's
        # Server.sockets is empty once closed, too).
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            try:
                await listener.aclose()
            except Exception:  # closing is best effort; log and carry on
                self.logger.warning("error closing a listener", exc_info=True)

    def _log_listening(self) -> None:
        for listener in self._listeners:
            for sub in getattr(listener, "listeners", [listener]):
                address = sub.extra(anyio.abc.SocketAttribute.local_address, None)
                if isinstance(address, tuple):
                    host, port = address[:2]
                    host = f"[{host}]" if ":" in str(host) else host
                    self.logger.info("server listening on %s:%s", host, port)
                elif address is not None:
                    self.logger.info("server listening on %s", address)

    def register(self, websocket: WebSocketServerProtocol) -> None:
        """Track a connection so that :meth:`close` reaches it."""
        self.websockets.add(websocket)

    def unregister(self, websocket: WebSocketServerProtocol) -> None:
        """Forget a connection that ended."""
        self.websockets.discard(websocket)


def _unwrap(exc: BaseException) -> BaseException:
    """The one exception inside nested single-exception groups, or ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _connection_handler(
    server: WebSocketServer, ws_handler: Handler, options: ServeOptions
) -> Callable[[anyio.abc.ByteStream], Awaitable[None]]:
    create_protocol = options.create_protocol or WebSocketServerProtocol
    ssl_context = options.ssl

    async def handle(stream: anyio.abc.ByteStream) -> None:
        websocket = create_protocol(ws_handler, server, options)
        server.register(websocket)
        try:
            await websocket.run(stream, ssl_context=ssl_context)
        finally:
            server.unregister(websocket)

    return handle


async def run_server(
    ws_handler: Handler,
    options: TCPServeOptions | UnixServeOptions,
    *,
    task_status: anyio.abc.TaskStatus[WebSocketServer] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Open the listeners ``options`` describe and serve until closed or cancelled.

    What :func:`serve` and :func:`unix_serve` run once their options are
    validated; the asyncio front door runs it in a task of its own.
    """
    if isinstance(options, UnixServeOptions):
        listeners = await open_listeners(
            path=options.path, sock=options.sock, unix=True, backlog=options.backlog,
            mode=options.mode,
        )
    else:
        listeners = await open_listeners(
            host=options.host, port=options.port, sock=options.sock,
            backlog=options.backlog, reuse_port=options.reuse_port,
        )
    server = WebSocketServer(options.logger)
    handle = _connection_handler(server, ws_handler, options)
    await server.run(listeners, handle, task_status=task_status)


@entry_point(TCPServeOptions, passthrough=("task_status",))
async def serve(
    ws_handler: Handler,
    options: TCPServeOptions,
    *,
    task_status: anyio.abc.TaskStatus[WebSocketServer] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve WebSocket connections on TCP until closed or cancelled.

    Start it with ``server = await nursery.start(serve, handler, host, port)``
    on Trio, or ``await task_group.start(serve, ...)`` with anyio on either
    loop. The server and every connection live in the caller's scope:
    cancelling it closes them all.

    ``ws_handler(websocket)`` serves each connection; the legacy
    ``ws_handler(websocket, path)`` form works too. When it returns, the
    connection closes with 1000; when it raises, with 1011.

    Every option is described in :class:`~wsserver.options.TCPServeOptions`
    and validated before anything listens.

    Raises:
        OSError: if the address cannot be bound.
        ValueError: if an option's value is out of range (``max_queue=0``...).
        TypeError: if an option has the wrong type or name.
    """
    await run_server(ws_handler, options, task_status=task_status)


@entry_point(UnixServeOptions, passthrough=("task_status",))
async def unix_serve(
    ws_handler: Handler,
    options: UnixServeOptions,
    *,
    task_status: anyio.abc.TaskStatus[WebSocketServer] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve WebSocket connections on a Unix socket until closed or cancelled.

    Like :func:`serve`, with ``path`` (or ``sock``) instead of host and port.
    The socket file is removed when the server stops.

    Raises:
        OSError: if the path cannot be bound.
        ValueError: if an option's value is out of range.
        TypeError: if an option has the wrong type or name, or neither
            ``path`` nor ``sock`` is given.
    """
    await run_server(ws_handler, options, task_status=task_status)
