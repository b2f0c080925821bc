"""Serving: listeners in a task group, one task per connection, graceful shutdown.

This is the shared, loop-independent layer. :func:`serve` and
:func:`unix_serve` follow Trio's ``nursery.start`` convention and also work in
an anyio task group on asyncio; :mod:`wsserver.asyncio_io` adds the
awaitable / context-manager conventions of asyncio on top.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.abc
import sniffio
from anyio.streams.tls import TLSStream

from .connection import (
    DEFAULT_SERVER_HEADER,
    Handler,
    HeadersLikeOrCallable,
    LoggerLike,
    ProcessRequest,
    SelectSubprotocol,
    WebSocketServerProtocol,
)
from .sansio import Origin, Subprotocol
from .sansio.extensions import ServerExtensionFactory
from .sansio.extensions.permessage_deflate import enable_server_permessage_deflate

__all__ = ["WebSocketServer", "serve", "unix_serve"]

Listener = anyio.abc.Listener[anyio.abc.ByteStream]

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
        self._backend = sniffio.current_async_library()
        self._loop: Any = None
        if self._backend == "asyncio":
            import asyncio

            self._loop = asyncio.get_running_loop()

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
        """Wait until the server stopped listening and every connection ended."""
        await self._closed.wait()

    async def aclose(self) -> None:
        """Close the server and wait until it is closed."""
        self.close()
        await self.wait_closed()

    def get_loop(self) -> Any:
        """Return the asyncio event loop the server runs on.

        :raises RuntimeError: on Trio, which has no loop object.
        """
        if self._loop is None:
            raise RuntimeError(f"get_loop() is only available on asyncio, not {self._backend}")
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


def _make_handle(
    server: WebSocketServer,
    handler: Handler,
    ssl_context: ssl_module.SSLContext | None,
    create_protocol: Callable[..., WebSocketServerProtocol],
    protocol_kwargs: dict[str, Any],
) -> Callable[[anyio.abc.ByteStream], Awaitable[None]]:
    open_timeout = protocol_kwargs["open_timeout"]

    async def handle(stream: anyio.abc.ByteStream) -> None:
        websocket = create_protocol(handler, server, **protocol_kwargs)
        server.register(websocket)
        try:
            if ssl_context is not None:
                tls_stream = await _wrap_tls(stream, ssl_context, open_timeout, websocket)
                if tls_stream is None:
                    return
                stream = tls_stream
            await websocket.run(stream)
        finally:
            server.unregister(websocket)

    return handle


async def _wrap_tls(
    stream: anyio.abc.ByteStream,
    ssl_context: ssl_module.SSLContext,
    open_timeout: float | None,
    websocket: WebSocketServerProtocol,
) -> anyio.abc.ByteStream | None:
    """Run the TLS handshake within ``open_timeout``; ``None`` if it failed."""
    with anyio.move_on_after(float("inf") if open_timeout is None else open_timeout):
        try:
            return await TLSStream.wrap(
                stream, server_side=True, ssl_context=ssl_context, standard_compatible=False
            )
        except (ssl_module.SSLError, OSError, anyio.BrokenResourceError,
                anyio.EndOfStream) as exc:
            websocket.logger.info("TLS handshake failed: %s", exc)
    with anyio.CancelScope(shield=True):
        await stream.aclose()
    return None


def _protocol_options(
    *,
    logger: LoggerLike | None,
    compression: str | None,
    origins: Sequence[Origin] | None,
    extensions: Sequence[ServerExtensionFactory] | None,
    subprotocols: Sequence[Subprotocol] | None,
    extra_headers: HeadersLikeOrCallable | None,
    server_header: str | None,
    process_request: ProcessRequest | None,
    select_subprotocol: SelectSubprotocol | None,
    open_timeout: float | None,
    ping_interval: float | None,
    ping_timeout: float | None,
    close_timeout: float | None,
    max_size: int | None,
    max_queue: int | None,
    read_limit: int,
    write_limit: int,
) -> dict[str, Any]:
    if compression == "deflate":
        extensions = enable_server_permessage_deflate(extensions)
    elif compression is not None:
        raise ValueError(f"unsupported compression: {compression}")
    if origins is not None and not isinstance(origins, (list, tuple, set, frozenset)):
        raise TypeError("origins must be a sequence of allowed origins")
    return dict(
        logger=logger,
        origins=origins,
        extensions=extensions,
        subprotocols=subprotocols,
        extra_headers=extra_headers,
        server_header=server_header,
        process_request=process_request,
        select_subprotocol=select_subprotocol,
        open_timeout=open_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
        close_timeout=close_timeout,
        max_size=max_size,
        max_queue=max_queue,
        read_limit=read_limit,
        write_limit=write_limit,
    )


async def _run_server(
    ws_handler: Handler,
    listeners: Sequence[Listener],
    ssl_context: ssl_module.SSLContext | None,
    create_protocol: Callable[..., WebSocketServerProtocol] | None,
    logger: LoggerLike | None,
    options: dict[str, Any],
    task_status: anyio.abc.TaskStatus[WebSocketServer],
) -> None:
    """Serve ``listeners`` until closed or cancelled; TLS here if ``ssl_context``."""
    server = WebSocketServer(logger)
    handle = _make_handle(
        server, ws_handler, ssl_context, create_protocol or WebSocketServerProtocol, options
    )
    await server.run(listeners, handle, task_status=task_status)


async def _open_tcp_listeners(
    host: str | Sequence[str] | None,
    port: int | None,
    *,
    sock: socket.socket | None,
    ssl: ssl_module.SSLContext | None,
    backlog: int,
    reuse_port: bool,
    write_limit: int,
    open_timeout: float | None,
) -> tuple[list[Listener], bool]:
    """Open the listeners; tell whether they already speak TLS themselves."""
    if sniffio.current_async_library() == "asyncio":
        from .asyncio_io._stream import AsyncioListener

        listener = await AsyncioListener.create_tcp(
            host, port or 0, ssl=ssl, backlog=backlog, reuse_port=reuse_port, sock=sock,
            write_high_water_bytes=write_limit, ssl_handshake_timeout=open_timeout,
        )
        return [listener], True
    if sock is not None:
        sock.setblocking(False)
        return [await anyio.abc.SocketListener.from_socket(sock)], False
    hosts: list[str | None] = [host] if host is None or isinstance(host, str) else list(host)
    listeners: list[Listener] = []
    for one_host in hosts:
        listeners.append(
            await anyio.create_tcp_listener(
                local_host=one_host, local_port=port or 0, backlog=backlog,
                reuse_port=reuse_port,
            )
        )
    return listeners, False


async def _open_unix_listener(
    path: str | None,
    *,
    sock: socket.socket | None,
    ssl: ssl_module.SSLContext | None,
    backlog: int,
    write_limit: int,
    open_timeout: float | None,
) -> tuple[Listener, bool]:
    if path is None and sock is None:
        raise TypeError("unix_serve needs a path or a sock")
    if sniffio.current_async_library() == "asyncio":
        from .asyncio_io._stream import AsyncioListener

        listener = await AsyncioListener.create_unix(
            path, ssl=ssl, backlog=backlog, sock=sock, write_high_water_bytes=write_limit,
            ssl_handshake_timeout=open_timeout,
        )
        return listener, True
    if sock is not None:
        sock.setblocking(False)
        return await anyio.abc.SocketListener.from_socket(sock), False
    assert path is not None
    return await anyio.create_unix_listener(path, backlog=backlog), False


async def serve(
    ws_handler: Handler,
    host: str | Sequence[str] | None = None,
    port: int | None = None,
    *,
    create_protocol: Callable[..., WebSocketServerProtocol] | None = None,
    logger: LoggerLike | None = None,
    compression: str | None = "deflate",
    origins: Sequence[Origin] | None = None,
    extensions: Sequence[ServerExtensionFactory] | None = None,
    subprotocols: Sequence[Subprotocol] | None = None,
    extra_headers: HeadersLikeOrCallable | None = None,
    server_header: str | None = DEFAULT_SERVER_HEADER,
    process_request: ProcessRequest | None = None,
    select_subprotocol: SelectSubprotocol | None = None,
    open_timeout: float | None = 10,
    ping_interval: float | None = 20,
    ping_timeout: float | None = 20,
    close_timeout: float | None = 10,
    max_size: int | None = 2**20,
    max_queue: int | None = 2**5,
    read_limit: int = 2**16,
    write_limit: int = 2**16,
    ssl: ssl_module.SSLContext | None = None,
    sock: socket.socket | None = None,
    backlog: int = 100,
    reuse_port: bool = False,
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

    :param host: the interface(s) to listen on; all interfaces when ``None``.
    :param port: the TCP port; 0 or ``None`` picks a free one.
    :param create_protocol: factory for the connection object, usually a
        :class:`~wsserver.connection.WebSocketServerProtocol` subclass.
    :param compression: ``"deflate"`` enables permessage-deflate; ``None`` disables it.
    :param origins: allowed ``Origin`` values (strings, patterns, ``None``).
    :param extensions: extension factories, in order of preference.
    :param subprotocols: supported subprotocols, in order of preference.
    :param extra_headers: headers added to the 101 response: a mapping,
        pairs, or ``callable(path, request_headers)`` returning one.
    :param server_header: the ``Server`` header; ``None`` omits it.
    :param process_request: ``callable(path, request_headers)``, sync or
        async, that may return ``(status, headers, body)`` to answer with.
    :param select_subprotocol: ``callable(client, server)`` picking a subprotocol.
    :param open_timeout: seconds allowed for the opening handshake (TLS included).
    :param ping_interval: seconds between keepalive pings; ``None`` disables them.
    :param ping_timeout: seconds to wait for a pong before closing with 1011.
    :param close_timeout: seconds to wait for the closing handshake.
    :param max_size: the largest incoming message, in bytes; ``None``: no limit.
    :param max_queue: messages kept unread before reading pauses; ``None``: no limit.
    :param read_limit: bytes read from the socket at a time.
    :param write_limit: buffered bytes above which :meth:`send` waits.
    :param ssl: a server-side :class:`ssl.SSLContext` to serve TLS (wss://).
    :param sock: an already bound and listening socket to serve on.
    :param backlog: the listen backlog.
    :param reuse_port: set ``SO_REUSEPORT`` to share the port between processes.
    :raises OSError: if the address cannot be bound.
    :raises ValueError: if ``compression`` is not ``"deflate"`` or ``None``.
    :raises TypeError: if ``origins`` is not a list, tuple or set.
    """
    options = _protocol_options(
        logger=logger, compression=compression, origins=origins, extensions=extensions,
        subprotocols=subprotocols, extra_headers=extra_headers, server_header=server_header,
        process_request=process_request, select_subprotocol=select_subprotocol,
        open_timeout=open_timeout, ping_interval=ping_interval, ping_timeout=ping_timeout,
        close_timeout=close_timeout, max_size=max_size, max_queue=max_queue,
        read_limit=read_limit, write_limit=write_limit,
    )
    listeners, tls_done = await _open_tcp_listeners(
        host, port, sock=sock, ssl=ssl, backlog=backlog, reuse_port=reuse_port,
        write_limit=write_limit, open_timeout=open_timeout,
    )
    await _run_server(
        ws_handler, listeners, None if tls_done else ssl, create_protocol, logger, options,
        task_status,
    )


async def unix_serve(
    ws_handler: Handler,
    path: str | None = None,
    *,
    create_protocol: Callable[..., WebSocketServerProtocol] | None = None,
    logger: LoggerLike | None = None,
    compression: str | None = "deflate",
    origins: Sequence[Origin] | None = None,
    extensions: Sequence[ServerExtensionFactory] | None = None,
    subprotocols: Sequence[Subprotocol] | None = None,
    extra_headers: HeadersLikeOrCallable | None = None,
    server_header: str | None = DEFAULT_SERVER_HEADER,
    process_request: ProcessRequest | None = None,
    select_subprotocol: SelectSubprotocol | None = None,
    open_timeout: float | None = 10,
    ping_interval: float | None = 20,
    ping_timeout: float | None = 20,
    close_timeout: float | None = 10,
    max_size: int | None = 2**20,
    max_queue: int | None = 2**5,
    read_limit: int = 2**16,
    write_limit: int = 2**16,
    ssl: ssl_module.SSLContext | None = None,
    sock: socket.socket | None = None,
    backlog: int = 100,
    task_status: anyio.abc.TaskStatus[WebSocketServer] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve WebSocket connections on a Unix socket until closed or cancelled.

    Like :func:`serve`, with ``path`` (or ``sock``) instead of host and port.

    :param path: the filesystem path of the socket.
    :raises OSError: if the path cannot be bound.
    :raises TypeError: on Trio, if neither ``path`` nor ``sock`` is given
        (:exc:`ValueError` on asyncio).
    """
    options = _protocol_options(
        logger=logger, compression=compression, origins=origins, extensions=extensions,
        subprotocols=subprotocols, extra_headers=extra_headers, server_header=server_header,
        process_request=process_request, select_subprotocol=select_subprotocol,
        open_timeout=open_timeout, ping_interval=ping_interval, ping_timeout=ping_timeout,
        close_timeout=close_timeout, max_size=max_size, max_queue=max_queue,
        read_limit=read_limit, write_limit=write_limit,
    )
    listener, tls_done = await _open_unix_listener(
        path, sock=sock, ssl=ssl, backlog=backlog, write_limit=write_limit,
        open_timeout=open_timeout,
    )
    try:
        await _run_server(
            ws_handler, [listener], None if tls_done else ssl, create_protocol, logger,
            options, task_status,
        )
    finally:
        # The socket file is ours once bound: remove it, as asyncio does
        # (an abstract socket, named from a NUL byte, has no file).
        if path is not None and not tls_done and not path.startswith("\0"):
            with contextlib.suppress(OSError):
                os.unlink(path)
