"""A lean anyio byte stream and listener over asyncio transports.

anyio's stock asyncio socket stream pauses and resumes its transport around
every read and yields to the event loop on every call; with many small
messages that costs about half the throughput of a plain asyncio ``Protocol``.
The classes here keep anyio's stream interfaces and cancellation semantics but
move bytes the way a ``Protocol`` does: ``data_received`` appends to a buffer,
and :meth:`AsyncioByteStream.receive` hands buffered bytes over without a loop
turn.

Cancellation contract (anyio's, as far as a caller can observe):

* every :meth:`~AsyncioByteStream.receive`, :meth:`~AsyncioByteStream.send`
  and :meth:`~AsyncioByteStream.send_eof` call is a cancellation point: inside
  an already cancelled scope it raises the cancellation exception and consumes
  no data;
* a call that has to wait (no buffered data, or a paused writer) waits on a
  future, so a cancel scope interrupts it; a cancelled ``receive`` loses no
  data and a cancelled ``send`` has written nothing;
* calls that find their work already done do not yield to the event loop, but
  at most :data:`MAX_CALLS_WITHOUT_YIELD` of them run in a row before one does,
  so deadlines still fire and other tasks still run.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from ssl import SSLContext, SSLObject
from typing import Any, cast

import anyio
from anyio.abc import ByteStream, Listener, SocketAttribute, TaskGroup
from anyio.lowlevel import checkpoint

try:
    # This module only ever runs on asyncio, so the backend is known: calling
    # its method directly skips the backend lookup (sniffio) that the public
    # anyio.lowlevel.checkpoint_if_cancelled() makes on every call, which was
    # a tenth of the server's CPU time in a 32-byte echo profile.
    from anyio._backends._asyncio import AsyncIOBackend

    checkpoint_if_cancelled = AsyncIOBackend.checkpoint_if_cancelled
except (ImportError, AttributeError):  # a future anyio moved it: the public way
    from anyio.lowlevel import checkpoint_if_cancelled
from anyio.streams.tls import TLSAttribute

__all__ = [
    "DEFAULT_READ_HIGH_WATER_BYTES",
    "DEFAULT_RECEIVE_MAX_BYTES",
    "DEFAULT_WRITE_HIGH_WATER_BYTES",
    "HANDLER_CLOSE_TIMEOUT_SECONDS",
    "MAX_CALLS_WITHOUT_YIELD",
    "AsyncioByteStream",
    "AsyncioListener",
]

#: Default ``max_bytes`` of :meth:`AsyncioByteStream.receive`.
DEFAULT_RECEIVE_MAX_BYTES = 2**16
#: Received bytes buffered before the stream stops reading from the socket.
DEFAULT_READ_HIGH_WATER_BYTES = 4 * DEFAULT_RECEIVE_MAX_BYTES
#: Bytes queued in the transport before :meth:`AsyncioByteStream.send` waits.
DEFAULT_WRITE_HIGH_WATER_BYTES = 2**16
#: Calls served without waiting that may run in a row before one yields to the
#: event loop (a real checkpoint), so a busy stream cannot starve the loop.
MAX_CALLS_WITHOUT_YIELD = 32
#: How long :meth:`AsyncioListener.serve` lets a stream flush after its handler
#: returned without closing it, before aborting the connection.
HANDLER_CLOSE_TIMEOUT_SECONDS = 10.0

_IP_FAMILIES = (socket.AF_INET, socket.AF_INET6)


def _constant(value: object) -> Callable[[], Any]:
    return lambda: value


def _socket_address(address: Any) -> Any:
    """Shorten an IPv6 ``(host, port, flowinfo, scope_id)`` to ``(host, port)``."""
    if isinstance(address, tuple) and len(address) == 4:
        return address[:2]
    return address


class AsyncioByteStream(ByteStream):
    """A byte stream over an asyncio transport, with anyio's stream semantics.

    Streams come from :class:`AsyncioListener` (accepted connections) or from
    :meth:`connect_tcp` / :meth:`connect_unix`; the initializer is not public.

    Flow control in both directions: reading from the socket pauses while more
    than ``read_high_water_bytes`` received bytes wait unread and resumes once
    a quarter of that is left; :meth:`send` waits while the transport holds
    more than ``write_high_water_bytes`` unsent bytes.

    Extra attributes: every :class:`anyio.abc.SocketAttribute` that applies to
    the socket (``raw_socket`` is the socket object asyncio exposes, a
    ``TransportSocket``), and for TLS connections the
    :class:`anyio.streams.tls.TLSAttribute` values, with
    ``standard_compatible`` false: asyncio sends a ``close_notify`` on close
    but does not require one from the peer.
    """

    def __init__(
        self,
        transport: asyncio.Transport,
        *,
        read_high_water_bytes: int = DEFAULT_READ_HIGH_WATER_BYTES,
        write_high_water_bytes: int = DEFAULT_WRITE_HIGH_WATER_BYTES,
    ) -> None:
        """Wrap a connected transport; called from ``connection_made``, not by users.

        :raises ValueError: if a high-water mark is out of range.
        """
        if read_high_water_bytes < 1:
            raise ValueError("read_high_water_bytes must be a positive integer")
        if write_high_water_bytes < 0:
            raise ValueError("write_high_water_bytes must not be negative")
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        # Received chunks, kept as asyncio handed them over: a receive() that
        # takes one whole chunk returns it without copying.
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._read_high_water_bytes = read_high_water_bytes
        self._read_low_water_bytes = read_high_water_bytes // 4
        self._read_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._close_waiters: list[asyncio.Future[None]] = []
        self._is_receiving = False
        self._is_sending = False
        self._is_reading_paused = False
        self._is_writing_paused = False
        self._is_eof_received = False
        self._is_eof_sent = False
        self._is_closed = False
        self._is_connection_lost = False
        self._connection_error: BaseException | None = None
        self._calls_without_yield = 0
        self._ssl_object: SSLObject | None = transport.get_extra_info("ssl_object")
        transport.set_write_buffer_limits(high=write_high_water_bytes)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in _IP_FAMILIES:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock

    @classmethod
    async def connect_tcp(
        cls,
        host: str,
        port: int,
        *,
        ssl: SSLContext | None = None,
        server_hostname: str | None = None,
        read_high_water_bytes: int = DEFAULT_READ_HIGH_WATER_BYTES,
        write_high_water_bytes: int = DEFAULT_WRITE_HIGH_WATER_BYTES,
    ) -> AsyncioByteStream:
        """Open a TCP connection, with TLS if ``ssl`` is given.

        :param host: the host name or address to connect to.
        :param port: the TCP port to connect to.
        :param ssl: a client TLS context, or ``None`` for plain TCP.
        :param server_hostname: the name to check the server certificate
            against; defaults to ``host`` when ``ssl`` is given.
        :param read_high_water_bytes: see the class documentation.
        :param write_high_water_bytes: see the class documentation.
        :return: the connected stream.
        :raises OSError: if the connection cannot be opened.
        :raises ssl.SSLError: if the TLS handshake fails.
        """
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(
            lambda: _StreamProtocol(read_high_water_bytes, write_high_water_bytes),
            host,
            port,
            ssl=ssl,
            server_hostname=server_hostname if ssl is not None else None,
        )
        return protocol.stream

    @classmethod
    async def connect_unix(
        cls,
        path: str | os.PathLike[str],
        *,
        ssl: SSLContext | None = None,
        server_hostname: str | None = None,
        read_high_water_bytes: int = DEFAULT_READ_HIGH_WATER_BYTES,
        write_high_water_bytes: int = DEFAULT_WRITE_HIGH_WATER_BYTES,
    ) -> AsyncioByteStream:
        """Open a Unix domain socket connection, with TLS if ``ssl`` is given.

        :param path: the filesystem path of the socket.
        :param ssl: a client TLS context, or ``None``.
        :param server_hostname: the name to check the server certificate
            against; required by asyncio when ``ssl`` is given.
        :param read_high_water_bytes: see the class documentation.
        :param write_high_water_bytes: see the class documentation.
        :return: the connected stream.
        :raises OSError: if the connection cannot be opened.
        :raises ssl.SSLError: if the TLS handshake fails.
        """
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_unix_connection(
            lambda: _StreamProtocol(read_high_water_bytes, write_high_water_bytes),
            os.fspath(path),
            ssl=ssl,
            server_hostname=server_hostname if ssl is not None else None,
        )
        return protocol.stream

    # -- anyio.abc.ByteStream ---------------------------------------------

    async def receive(self, max_bytes: int = DEFAULT_RECEIVE_MAX_BYTES) -> bytes:
        """Return up to ``max_bytes`` received bytes, waiting if none are buffered.

        Buffered bytes are returned without a loop turn; the call is still a
        cancellation point, and a cancelled wait loses no data.

        :param max_bytes: the most bytes to return; must be positive.
        :return: between 1 and ``max_bytes`` bytes.
        :raises ValueError: if ``max_bytes`` is not positive.
        :raises anyio.BusyResourceError: if another task is already receiving.
        :raises anyio.EndOfStream: if the peer closed its side and every byte
            it sent has been returned.
        :raises anyio.ClosedResourceError: if this stream was closed.
        :raises anyio.BrokenResourceError: if the connection failed (e.g. it
            was reset by the peer) and no buffered bytes are left.
        """
        if max_bytes < 1:
            raise ValueError("max_bytes must be a positive integer")
        if self._is_receiving:
            raise anyio.BusyResourceError("reading from")
        self._is_receiving = True
        try:
            if self._buffered and not self._is_closed:
                await self._checkpoint_without_waiting()
            while not self._buffered or self._is_closed:
                self._raise_if_unreadable()
                await self._wait_for_data()
            return self._take_buffered(max_bytes)
        finally:
            self._is_receiving = False

    async def send(self, item: bytes) -> None:
        """Queue ``item`` for sending, waiting first while the writer is paused.

        Returns as soon as the bytes are handed to the transport. A send
        cancelled while it waits has written nothing.

        :param item: the bytes (or any bytes-like object) to send.
        :raises anyio.BusyResourceError: if another task is already sending.
        :raises anyio.ClosedResourceError: if this stream was closed, or
            :meth:`send_eof` was called.
        :raises anyio.BrokenResourceError: if the connection was lost.
        """
        if self._is_sending:
            raise anyio.BusyResourceError("writing to")
        self._is_sending = True
        try:
            if self._is_writing_paused:
                await self._wait_for_drain()
            else:
                await self._checkpoint_without_waiting()
            self._raise_if_unwritable()
            self._transport.write(item)
        finally:
            self._is_sending = False

    async def send_eof(self) -> None:
        """Half-close the connection: flush queued bytes, then send a TCP FIN.

        Calling it again does nothing.

        :raises NotImplementedError: on a TLS connection (asyncio cannot
            half-close TLS).
        :raises anyio.BusyResourceError: if another task is sending.
        :raises anyio.ClosedResourceError: if this stream was closed.
        :raises anyio.BrokenResourceError: if the connection was lost.
        """
        if self._ssl_object is not None:
            raise NotImplementedError("asyncio cannot half-close a TLS connection")
        if self._is_sending:
            raise anyio.BusyResourceError("writing to")
        await checkpoint_if_cancelled()
        if self._is_eof_sent and not self._is_closed:
            return
        self._raise_if_unwritable()
        self._is_eof_sent = True
        self._transport.write_eof()

    async def aclose(self) -> None:
        """Close the connection and wait until asyncio has released it.

        Queued bytes are flushed first. If the caller is cancelled while the
        flush waits (e.g. the peer stopped reading), the connection is aborted
        and the cancellation propagates; either way the stream ends up closed.
        Tasks blocked in :meth:`receive` or :meth:`send` get
        :class:`anyio.ClosedResourceError`. Closing again is harmless.
        """
        if not self._is_closed:
            self._is_closed = True
            self._chunks.clear()
            self._buffered = 0
            _wake(self._read_waiter)
            _wake(self._drain_waiter)
            if not self._transport.is_closing():
                self._transport.close()
        if self._is_connection_lost:
            await checkpoint()
            return
        waiter = self._loop.create_future()
        self._close_waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            self._transport.abort()
            raise
        finally:
            if waiter in self._close_waiters:
                self._close_waiters.remove(waiter)

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """The socket and TLS attributes described in the class documentation.

        Built on each access rather than kept: they are rarely asked for, and
        a dozen closures per idle connection add up to kilobytes.
        """
        return self._describe_transport(self._sock)

    @property
    def buffered_bytes(self) -> int:
        """How many received bytes wait to be returned by :meth:`receive`."""
        return self._buffered

    # -- internals ---------------------------------------------------------

    async def _checkpoint_without_waiting(self) -> None:
        if self._calls_without_yield < MAX_CALLS_WITHOUT_YIELD:
            self._calls_without_yield += 1
            await checkpoint_if_cancelled()
        else:
            self._calls_without_yield = 0
            await checkpoint()

    async def _wait_for_data(self) -> None:
        waiter = self._loop.create_future()
        self._read_waiter = waiter
        try:
            await waiter
        finally:
            self._read_waiter = None
        self._calls_without_yield = 0

    async def _wait_for_drain(self) -> None:
        while self._is_writing_paused and not (self._is_closed or self._is_connection_lost):
            waiter = self._loop.create_future()
            self._drain_waiter = waiter
            try:
                await waiter
            finally:
                self._drain_waiter = None
        self._calls_without_yield = 0

    def _take_buffered(self, max_bytes: int) -> bytes:
        chunks = self._chunks
        first = chunks.popleft()
        if len(first) >= max_bytes:
            if len(first) > max_bytes:
                chunks.appendleft(first[max_bytes:])
                first = first[:max_bytes]
            data = first
        else:
            parts = [first]
            size = len(first)
            while chunks and size < max_bytes:
                chunk = chunks.popleft()
                room = max_bytes - size
                if len(chunk) > room:
                    chunks.appendleft(chunk[room:])
                    chunk = chunk[:room]
                parts.append(chunk)
                size += len(chunk)
            data = first if len(parts) == 1 else b"".join(parts)
        self._buffered -= len(data)
        if self._is_reading_paused and self._buffered <= self._read_low_water_bytes:
            self._is_reading_paused = False
            self._transport.resume_reading()
        return data

    def _raise_if_unreadable(self) -> None:
        """Raise the exception a receive on an empty buffer gets, if any."""
        if self._is_closed:
            raise anyio.ClosedResourceError
        if self._connection_error is not None:
            raise anyio.BrokenResourceError from self._connection_error
        if self._is_eof_received or self._is_connection_lost:
            raise anyio.EndOfStream

    def _raise_if_unwritable(self) -> None:
        if self._is_closed or self._is_eof_sent:
            raise anyio.ClosedResourceError
        if self._is_connection_lost or self._transport.is_closing():
            raise anyio.BrokenResourceError from self._connection_error

    def _close_now(self) -> None:
        """Close a stream nobody uses, without waiting for asyncio."""
        self._is_closed = True
        if not self._transport.is_closing():
            self._transport.close()

    def _describe_transport(self, sock: Any) -> dict[Any, Callable[[], Any]]:
        attributes: dict[Any, Callable[[], Any]] = {}
        transport = self._transport
        if sock is not None:
            attributes[SocketAttribute.raw_socket] = _constant(sock)
            attributes[SocketAttribute.family] = _constant(sock.family)
        local_address = _socket_address(transport.get_extra_info("sockname"))
        remote_address = _socket_address(transport.get_extra_info("peername"))
        if local_address is not None:
            attributes[SocketAttribute.local_address] = _constant(local_address)
        if remote_address is not None:
            attributes[SocketAttribute.remote_address] = _constant(remote_address)
        if sock is not None and sock.family in _IP_FAMILIES:
            if local_address is not None:
                attributes[SocketAttribute.local_port] = _constant(local_address[1])
            if remote_address is not None:
                attributes[SocketAttribute.remote_port] = _constant(remote_address[1])
        ssl_object = self._ssl_object
        if ssl_object is not None:
            attributes.update(
                {
                    TLSAttribute.ssl_object: _constant(ssl_object),
                    TLSAttribute.standard_compatible: _constant(False),
                    TLSAttribute.server_side: _constant(ssl_object.server_side),
                    TLSAttribute.alpn_protocol: ssl_object.selected_alpn_protocol,
                    TLSAttribute.cipher: ssl_object.cipher,
                    TLSAttribute.tls_version: ssl_object.version,
                    TLSAttribute.peer_certificate: lambda: ssl_object.getpeercert(),
                    TLSAttribute.peer_certificate_binary: lambda: ssl_object.getpeercert(
                        binary_form=True
                    ),
                    TLSAttribute.shared_ciphers: lambda: (
                        ssl_object.shared_ciphers() if ssl_object.server_side else None
                    ),
                    TLSAttribute.channel_binding_tls_unique: lambda: ssl_object.get_channel_binding(
                        "tls-unique"
                    ),
                }
            )
        return attributes

    # Called by _StreamProtocol, from asyncio's callbacks.

    def _feed_data(self, data: bytes) -> None:
        if self._is_closed:
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > self._read_high_water_bytes and not self._is_reading_paused:
            self._is_reading_paused = True
            self._transport.pause_reading()
        waiter = self._read_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _feed_eof(self) -> bool:
        self._is_eof_received = True
        _wake(self._read_waiter)
        # Keeping a plain TCP transport open allows sending after the peer's
        # FIN; asyncio's TLS transport warns if asked to, and closes anyway.
        return self._ssl_object is None

    def _feed_connection_lost(self, exc: BaseException | None) -> None:
        self._is_connection_lost = True
        self._connection_error = exc
        self._is_writing_paused = False
        _wake(self._read_waiter)
        _wake(self._drain_waiter)
        for waiter in self._close_waiters:
            _wake(waiter)

    def _pause_writing(self) -> None:
        self._is_writing_paused = True

    def _resume_writing(self) -> None:
        self._is_writing_paused = False
        _wake(self._drain_waiter)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


class _StreamProtocol(asyncio.Protocol):
    """The asyncio side of an :class:`AsyncioByteStream`: forwards callbacks."""

    stream: AsyncioByteStream

    def __init__(
        self,
        read_high_water_bytes: int,
        write_high_water_bytes: int,
        on_connection: Callable[[AsyncioByteStream], None] | None = None,
    ) -> None:
        self._read_high_water_bytes = read_high_water_bytes
        self._write_high_water_bytes = write_high_water_bytes
        self._on_connection = on_connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.stream = AsyncioByteStream(
            cast(asyncio.Transport, transport),
            read_high_water_bytes=self._read_high_water_bytes,
            write_high_water_bytes=self._write_high_water_bytes,
        )
        if self._on_connection is not None:
            self._on_connection(self.stream)

    def data_received(self, data: bytes) -> None:
        self.stream._feed_data(data)

    def eof_received(self) -> bool:
        return self.stream._feed_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stream._feed_connection_lost(exc)

    def pause_writing(self) -> None:
        self.stream._pause_writing()

    def resume_writing(self) -> None:
        self.stream._resume_writing()


class AsyncioListener(Listener[AsyncioByteStream]):
    """An anyio listener over an asyncio server, yielding :class:`AsyncioByteStream`.

    Create one with :meth:`create_tcp` or :meth:`create_unix`. It listens
    and accepts from creation on, as asyncio servers do; connections accepted
    while no :meth:`serve` runs wait for the next one, and are closed by
    :meth:`aclose` if none comes.

    Extra attributes: :attr:`~anyio.abc.SocketAttribute.family`,
    ``local_address``, ``local_port`` (IP sockets) and ``raw_socket``, all of
    the first listening socket.
    """

    _server: asyncio.Server
    _sockets: tuple[socket.socket, ...]

    def __init__(
        self,
        *,
        read_high_water_bytes: int = DEFAULT_READ_HIGH_WATER_BYTES,
        write_high_water_bytes: int = DEFAULT_WRITE_HIGH_WATER_BYTES,
    ) -> None:
        """Not public: use :meth:`create_tcp` or :meth:`create_unix`."""
        self._read_high_water_bytes = read_high_water_bytes
        self._write_high_water_bytes = write_high_water_bytes
        self._loop = asyncio.get_running_loop()
        self._accepted: deque[AsyncioByteStream] = deque()
        self._accept_waiter: asyncio.Future[None] | None = None
        self._is_serving = False
        self._is_closed = False
        self._unix_socket_identity: tuple[str, int, int] | None = None

    @classmethod
    async def create_tcp(
        cls,
        host: str | Sequence[str] | None = None,
        port: int = 0,
        *,
        ssl: SSLContext | None = None,
        backlog: int = 100,
        reuse_port: bool = False,
        sock: socket.socket | None = None,
        ssl_handshake_timeout: float | None = None,
        read_high_water_bytes: int = DEFAULT_READ_HIGH_WATER_BYTES,
        write_high_water_bytes: int = DEFAULT_WRITE_HIGH_WATER_BYTES,
    ) -> AsyncioListener:
        """Bind a TCP listener, serving TLS if ``ssl`` is given.

        :param host: the interface(s) to bind; ``None`` means all of them.
        :param port: the TCP port; 0 picks a free one (see ``local_port``).
        :param ssl: a server TLS context; the handshake completes before a
            connection reaches the handler.
        :param backlog: the kernel's queue of not yet accepted connections.
        :param reuse_port: set ``SO_REUSEPORT`` to share the port.
        :param sock: an already bound socket to listen on, instead of ``host``
            and ``port``.
        :param ssl_handshake_timeout: seconds allowed for a TLS handshake
            (asyncio's default when ``None``).
        :param read_high_water_bytes: passed to each accepted stream.
        :param write_high_water_bytes: passed to each accepted stream.
        :return: the listener.
        :raises OSError: if the address cannot be bound.
        :raises ValueError: if ``sock`` is combined with ``host`` or ``port``.
        """
        if sock is not None and (host is not None or port):
            raise ValueError("give either host and port, or sock")
        listener = cls(
            read_high_water_bytes=read_high_water_bytes,
            write_high_water_bytes=write_high_water_bytes,
        )
        options: dict[str, Any] = {
            "ssl": ssl,
            "backlog": backlog,
            "ssl_handshake_timeout": ssl_handshake_timeout if ssl is not None else None,
        }
        if sock is None:
            listener._server = await listener._loop.create_server(
                listener._create_protocol,
                host,
                port,
                reuse_port=reuse_port,
                **options,
            )
        else:
            listener._server = await listener._loop.create_server(
                listener._create_protocol, sock=sock, reuse_port=reuse_port, **options
            )
        listener._sockets = tuple(listener._server.sockets)
        return listener

    @classmethod
    async def create_unix(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        ssl: SSLContext | None = None,
        backlog: int = 100,
        sock: socket.socket | None = None,
        ssl_handshake_timeout: float | None = None,
        read_high_water_bytes: int = DEFAULT_READ_HIGH_WATER_BYTES,
        write_high_water_bytes: int = DEFAULT_WRITE_HIGH_WATER_BYTES,
    ) -> AsyncioListener:
        """Bind a Unix domain socket listener, serving TLS if ``ssl`` is given.

        A stale socket file at ``path`` is replaced; the file this listener
        created is removed when it closes.

        :param path: the filesystem path to bind.
        :param ssl: a server TLS context.
        :param backlog: the kernel's queue of not yet accepted connections.
        :param sock: an already bound Unix socket, instead of ``path``.
        :param ssl_handshake_timeout: seconds allowed for a TLS handshake.
        :param read_high_water_bytes: passed to each accepted stream.
        :param write_high_water_bytes: passed to each accepted stream.
        :return: the listener.
        :raises OSError: if the path cannot be bound.
        :raises ValueError: if both or neither of ``path`` and ``sock`` are given.
        """
        if (path is None) == (sock is None):
            raise ValueError("give exactly one of path and sock")
        listener = cls(
            read_high_water_bytes=read_high_water_bytes,
            write_high_water_bytes=write_high_water_bytes,
        )
        fs_path = None if path is None else os.fspath(path)
        listener._server = await listener._loop.create_unix_server(
            listener._create_protocol,
            fs_path,
            ssl=ssl,
            backlog=backlog,
            sock=sock,
            ssl_handshake_timeout=ssl_handshake_timeout if ssl is not None else None,
        )
        listener._sockets = tuple(listener._server.sockets)
        if fs_path is not None and not fs_path.startswith("\0"):
            status = os.stat(fs_path)
            listener._unix_socket_identity = (fs_path, status.st_dev, status.st_ino)
        return listener

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        """The listening sockets (asyncio's ``TransportSocket`` wrappers)."""
        return self._sockets

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """The socket attributes described in the class documentation."""
        sock = self._sockets[0]
        local_address = _socket_address(sock.getsockname())
        attributes: dict[Any, Callable[[], Any]] = {
            SocketAttribute.raw_socket: _constant(sock),
            SocketAttribute.family: _constant(sock.family),
            SocketAttribute.local_address: _constant(local_address),
        }
        if sock.family in _IP_FAMILIES:
            attributes[SocketAttribute.local_port] = _constant(local_address[1])
        return attributes

    async def serve(
        self,
        handler: Callable[[AsyncioByteStream], Any],
        task_group: TaskGroup | None = None,
    ) -> None:
        """Accept connections and run ``handler(stream)`` for each in a task.

        Every handler runs as a task of ``task_group`` (or of a task group
        owned by this call, which then also waits for the handlers). A stream
        still open when its handler returns is closed, aborted if it cannot
        flush within :data:`HANDLER_CLOSE_TIMEOUT_SECONDS`. An exception from
        a handler propagates through the task group, as with anyio's own
        listeners.

        Runs until cancelled, or returns once the listener is closed.

        :param handler: an async callable taking the accepted stream.
        :param task_group: the task group that owns the handler tasks.
        :raises anyio.ClosedResourceError: if the listener is already closed.
        :raises anyio.BusyResourceError: if another task is serving it.
        """
        if self._is_closed:
            raise anyio.ClosedResourceError
        if self._is_serving:
            raise anyio.BusyResourceError("accepting connections from")
        self._is_serving = True
        try:
            if task_group is None:
                async with anyio.create_task_group() as own_task_group:
                    await self._dispatch_connections(handler, own_task_group)
            else:
                await self._dispatch_connections(handler, task_group)
        finally:
            self._is_serving = False

    async def aclose(self) -> None:
        """Stop listening and close the connections no handler has received yet.

        Connections already handed to handlers belong to them and stay open.
        Closing again is harmless.
        """
        if not self._is_closed:
            self._is_closed = True
            # close() shuts the listening sockets at once. Server.wait_closed()
            # is not awaited: from Python 3.12 it also waits for every accepted
            # connection, which handlers may still own.
            self._server.close()
            _wake(self._accept_waiter)
            while self._accepted:
                self._accepted.popleft()._close_now()
            self._remove_unix_socket_file()
        await checkpoint()

    async def _dispatch_connections(
        self, handler: Callable[[AsyncioByteStream], Any], task_group: TaskGroup
    ) -> None:
        accepted = self._accepted
        while not self._is_closed:
            while accepted:
                stream = accepted.popleft()
                try:
                    task_group.start_soon(self._run_handler, handler, stream)
                except BaseException:
                    stream._close_now()
                    raise
            waiter = self._loop.create_future()
            self._accept_waiter = waiter
            try:
                await waiter
            finally:
                self._accept_waiter = None

    @staticmethod
    async def _run_handler(
        handler: Callable[[AsyncioByteStream], Any], stream: AsyncioByteStream
    ) -> None:
        try:
            await handler(stream)
        finally:
            with anyio.move_on_after(HANDLER_CLOSE_TIMEOUT_SECONDS):
                await stream.aclose()

    def _create_protocol(self) -> _StreamProtocol:
        return _StreamProtocol(
            self._read_high_water_bytes,
            self._write_high_water_bytes,
            self._on_connection,
        )

    def _on_connection(self, stream: AsyncioByteStream) -> None:
        if self._is_closed:
            stream._close_now()
            return
        self._accepted.append(stream)
        _wake(self._accept_waiter)

    def _remove_unix_socket_file(self) -> None:
        if self._unix_socket_identity is None:
            return
        path, device, inode = self._unix_socket_identity
        try:
            status = os.stat(path)
            # Only our own socket: another server may have bound the path since.
            if (status.st_dev, status.st_ino) == (device, inode) and stat.S_ISSOCK(status.st_mode):
                os.unlink(path)
        except FileNotFoundError:
            pass
