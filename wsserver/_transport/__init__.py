"""The transport floor: listening sockets and byte streams, the only code that knows the loop.

The shared layer above reaches the network through three functions:
:func:`open_listeners` opens the listening sockets, :func:`direct_writer`
offers a synchronous writer where the stream has one, and
:func:`running_loop` tells which loop runs (for ``get_loop()``). Accepted
connections are :class:`~wsserver._transport._asyncio_stream.AsyncioByteStream`
on asyncio (anyio's stock asyncio stream halves echo throughput) and anyio's
own socket streams on Trio (which cost nothing measurable there). TLS is not
done here: the shared layer wraps either stream in
:class:`anyio.streams.tls.TLSStream`.

Nothing here imports the layers above, nor asks sniffio which loop runs.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn, Protocol

import anyio
import anyio.abc
import anyio.lowlevel
import trio

from ._asyncio_stream import MAX_CALLS_WITHOUT_YIELD, AsyncioByteStream, wrap_accepted_socket
from ._asyncio_stream import checkpoint_if_cancelled as _asyncio_checkpoint_if_cancelled
from ._listeners import SocketListener, StreamFactory, adopt_socket, bind_tcp, bind_unix
from ._parking import Parker, new_parker
from ._soon import trio_call_soon

MAX_READS_WITHOUT_YIELD = 32
"""Reads that found bytes at once, in a row, before a direct reader yields to the loop."""

__all__ = [
    "CheckpointWithoutWaiting", "Listener", "Parker", "PushReceiver", "TimerHandle",
    "aborter", "checkpoint_if_cancelled", "direct_half_closer", "direct_reader", "direct_writer",
    "new_parker", "open_listeners", "push_receiver", "running_loop", "soon_caller",
]

Listener = anyio.abc.Listener[anyio.abc.ByteStream]


def running_loop() -> asyncio.AbstractEventLoop | None:
    """Return the running asyncio loop, or ``None`` on Trio.

    Returns:
        The loop asyncio code runs on; ``None`` inside a Trio run, including
        Trio in guest mode on top of an asyncio loop.

    Raises:
        RuntimeError: if neither loop runs in this thread.
    """
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    # Trio in guest mode runs its tasks from the host loop's callbacks, outside
    # any asyncio task: there Trio runs, as anyio sees it too.
    if loop is not None and asyncio.current_task(loop) is not None:
        return loop
    trio.lowlevel.current_trio_token()  # raises RuntimeError outside Trio as well
    return None


async def open_listeners(
    *,
    host: str | Sequence[str] | None = None,
    port: int | None = None,
    path: str | None = None,
    sock: socket.socket | None = None,
    unix: bool = False,
    backlog: int,
    reuse_port: bool = False,
    mode: int | None = None,
) -> list[Listener]:
    """Open the listening sockets on the running loop (Trio or asyncio).

    Each listener owns one socket and accepts every pending connection per
    wake-up. TCP listeners for ``host=None`` cover every interface with one
    socket per address family (IPv4 and IPv6); a free port picked for
    ``port=0`` is the same on every socket. A Unix listener bound from
    ``path`` removes its socket file when closed, if the file is still the
    one it bound; never for an abstract name or a ``sock`` passed in.

    Args:
        host: TCP: the interface(s) to listen on; ``None`` or ``""``: all.
        port: TCP: the port; 0 or ``None`` picks a free one.
        path: Unix: the socket path; a leading NUL makes an abstract name.
        sock: an already bound (and usually listening) socket, TCP or Unix,
            instead of an address; the listener owns it and closes it.
        unix: true for a Unix socket (``path`` or ``sock``).
        backlog: the kernel's queue of connections not yet accepted.
        reuse_port: TCP: set ``SO_REUSEPORT`` to share the port between processes.
        mode: Unix: permission bits of the socket file created at ``path``.

    Returns:
        The listeners, one per socket, in binding order.

    Raises:
        OSError: if a host does not resolve or an address cannot be bound.
        TypeError: if ``unix`` is true and neither ``path`` nor ``sock`` is given.
        ValueError: if the arguments contradict each other (``sock`` with an
            address, ``path`` without ``unix``...), or ``sock`` is not a
            stream socket.
        RuntimeError: if no event loop runs.
    """
    if unix:
        if host is not None or port is not None:
            raise ValueError("a Unix socket has a path, not a host and port")
        if reuse_port:
            raise ValueError("reuse_port applies to TCP sockets only")
        if path is not None and sock is not None:
            raise ValueError("give either path or sock, not both")
        if sock is not None:
            return [_listener(adopt_socket(sock, backlog=backlog))]
        if path is None:
            raise TypeError("a Unix listener needs a path or a sock")
        unix_sock, socket_file = bind_unix(path, backlog=backlog, mode=mode)
        wrap = _stream_factory(unix_sock.family)
        return [SocketListener(unix_sock, wrap, socket_file=socket_file)]
    if path is not None:
        raise ValueError("path is for Unix sockets (unix=True)")
    if sock is not None:
        if host is not None or port:
            raise ValueError("give either host and port, or sock")
        if reuse_port:
            raise ValueError("reuse_port must be set before binding: set it on sock yourself")
        return [_listener(adopt_socket(sock, backlog=backlog))]
    sockets = await bind_tcp(host, port or 0, backlog=backlog, reuse_port=reuse_port)
    return [_listener(tcp_sock) for tcp_sock in sockets]


def direct_writer(stream: anyio.abc.ByteStream) -> Callable[[memoryview], int] | None:
    """A synchronous, non-blocking writer for ``stream``, or None if it offers none.

    The returned function hands the transport what it accepts *now*, without
    blocking and without a checkpoint, and returns how many bytes it took (0
    when the transport is full, or the view is empty); it raises
    anyio.BrokenResourceError when the peer is gone and
    anyio.ClosedResourceError after aclose(). Only plain sockets offer one:
    TLS streams (anyio TLSStream) and unknown streams return None. The
    caller guarantees no stream.send() runs at the same time.

    On asyncio the writer takes a whole view unless the transport already
    holds ``write_high_water_bytes`` (64 KiB) or more; on Trio it is one
    ``send()`` on the non-blocking socket, which may take part of the view.

    Args:
        stream: a stream accepted by a listener of :func:`open_listeners`, or
            any wrapper around one.

    Returns:
        The writer, or ``None``.
    """
    if isinstance(stream, AsyncioByteStream):
        return stream.write_nowait
    # On Trio anyio's socket stream keeps no bytes of its own: its raw socket
    # is the stdlib socket under the Trio socket, so writing to it directly
    # while no send() runs keeps the byte order. anyio's asyncio stream has a
    # transport buffer in between, which must not be bypassed.
    raw_socket = _plain_trio_socket(stream)
    return None if raw_socket is None else _socket_writer(raw_socket)


def direct_half_closer(stream: anyio.abc.ByteStream) -> Callable[[], None] | None:
    """A synchronous ``send_eof()`` for ``stream``, or None if it offers none.

    Where :func:`direct_writer` offers a writer, the half-close is synchronous
    too (asyncio's ``write_eof()``, Trio's ``shutdown(SHUT_WR)``): a writer
    that finds the end of its buffer then needs no task to await it. It
    raises what ``send_eof()`` would (anyio.BrokenResourceError,
    anyio.ClosedResourceError); the caller guarantees no ``send()`` runs
    at the same time.

    Args:
        stream: a stream accepted by a listener of :func:`open_listeners`.

    Returns:
        The function, or ``None`` (TLS, any other stream).
    """
    if isinstance(stream, AsyncioByteStream):
        return stream.send_eof_nowait
    raw_socket = _plain_trio_socket(stream)
    return None if raw_socket is None else _socket_half_closer(raw_socket)


def checkpoint_if_cancelled() -> Callable[[], Awaitable[None]]:
    """The running loop's own ``checkpoint_if_cancelled``, to call many times.

    :func:`anyio.lowlevel.checkpoint_if_cancelled` looks the backend up on
    every call (through sniffio), which cost more than the check itself in
    profiles of small messages; the function returned here is the backend's,
    found once, with the same meaning: raise the cancellation if the caller's
    scope is cancelled, else return without yielding to the loop.

    Returns:
        An async function taking no arguments.

    Raises:
        RuntimeError: if no loop runs in this thread.
    """
    if running_loop() is None:
        return trio.lowlevel.checkpoint_if_cancelled
    return _asyncio_checkpoint_if_cancelled


class CheckpointWithoutWaiting:
    """The checkpoint of a call that did not have to wait (a message or room was there).

    Each call checks for cancellation without yielding to the loop, and every
    :data:`MAX_CALLS_WITHOUT_YIELD`-th call yields for real: the common case
    costs no task switch, yet a task that never waits cannot starve the
    others. One per caller that keeps its own count (a connection's reading
    and sending sides each have one).
    """

    __slots__ = ("_calls", "_if_cancelled")

    def __init__(self) -> None:
        self._calls = 0
        self._if_cancelled = checkpoint_if_cancelled()

    def __call__(self) -> Awaitable[None]:
        """Raise the caller's cancellation, if any; yield now and then. Await what it returns.

        A plain function handing back the loop's own awaitable, rather than a
        coroutine awaiting it: one coroutine less to make and run per message.
        """
        self._calls += 1
        if self._calls < MAX_CALLS_WITHOUT_YIELD:
            return self._if_cancelled()
        self._calls = 0
        return anyio.lowlevel.checkpoint()


def direct_reader(stream: anyio.abc.ByteStream) -> Callable[[int], Awaitable[bytes]] | None:
    """A leaner ``receive(max_bytes)`` for ``stream``, or None if it offers none.

    Only Trio's plain sockets offer one: it reads the non-blocking socket
    itself and waits with :func:`trio.lowlevel.wait_readable` only when the
    kernel has nothing, instead of going through anyio's and Trio's socket
    wrappers, which yield to the scheduler after every successful read (one
    more pass of the run loop per message). It is still a cancellation
    point on every call, and yields to the loop at least every
    :data:`MAX_READS_WITHOUT_YIELD` reads, so that a peer that never stops
    sending cannot starve other tasks. It raises what the stream's
    ``receive()`` would: anyio.EndOfStream, anyio.BrokenResourceError,
    anyio.ClosedResourceError. The caller guarantees it is the only reader.

    Args:
        stream: a stream accepted by a listener of :func:`open_listeners`.

    Returns:
        The reader, or ``None`` (asyncio, TLS, any other stream).
    """
    raw_socket = _plain_trio_socket(stream)
    return None if raw_socket is None else _SocketReader(raw_socket).receive


def _plain_trio_socket(stream: anyio.abc.ByteStream) -> socket.socket | None:
    """The stdlib socket under ``stream`` if it is anyio's plain socket stream on Trio."""
    if isinstance(stream, anyio.abc.SocketStream) and running_loop() is None:
        # What stream.extra(SocketAttribute.raw_socket) returns, read from the
        # abstract property every anyio socket stream implements: extra()
        # first builds all the socket's attributes, with a getpeername()
        # system call, once per connection and caller.
        raw_socket = stream._raw_socket
        if isinstance(raw_socket, socket.socket):
            return raw_socket
    return None


class _SocketReader:
    __slots__ = ("_drained", "_reads", "_sock")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._reads = 0
        self._drained = False

    async def receive(self, max_bytes: int) -> bytes:
        # The checkpoint comes before the read: cancelled, it loses no bytes.
        if self._drained:
            # The last read took all the kernel had, so the peer has probably
            # sent nothing since: it is waiting for an answer. Let the handler
            # the last read woke send it first, and only then try again (a
            # read now would fail, and cost a registration with epoll, before
            # the answer left). Trio runs each batch of ready tasks in either
            # order, so only a second yield puts this read behind the handler.
            self._reads = 0
            await trio.lowlevel.checkpoint()
            await trio.lowlevel.checkpoint()
        elif self._reads < MAX_READS_WITHOUT_YIELD:
            self._reads += 1
            await trio.lowlevel.checkpoint_if_cancelled()
        else:
            self._reads = 0
            await trio.lowlevel.checkpoint()
        sock = self._sock
        while True:
            try:
                data = sock.recv(max_bytes)
            except (BlockingIOError, InterruptedError):
                try:
                    await trio.lowlevel.wait_readable(sock)
                except trio.ClosedResourceError:  # the stream closed it (aclose)
                    raise anyio.ClosedResourceError from None
                self._reads = 0
                continue
            except OSError as exc:
                _raise_stream_error(sock, exc)
            break
        if not data:
            raise anyio.EndOfStream
        self._drained = len(data) < max_bytes
        return data


def soon_caller(stream: anyio.abc.ByteStream) -> Callable[[Callable[[], None]], object] | None:
    """A way to run a callback once the running task yields, for ``stream``; or None.

    A writer can then keep small frames back while its task is busy and write
    them together from the callback: one system call for many frames. The
    asyncio lean stream offers its loop's ``call_soon``; Trio's plain sockets
    the run's callback task (:func:`~wsserver._transport._soon.trio_call_soon`:
    a reschedule, no system call). On both, anyio works in the callback (a
    task group can start a task). TLS streams, which have no synchronous
    writer, return ``None``: write at once.

    Args:
        stream: a stream accepted by a listener of :func:`open_listeners`.

    Returns:
        A function taking a callback without arguments, or ``None``.
    """
    if isinstance(stream, AsyncioByteStream):
        return stream.call_soon
    if _plain_trio_socket(stream) is not None:
        return trio_call_soon()
    return None


class PushReceiver(Protocol):
    """A stream that can hand received bytes over as they arrive (asyncio's lean stream)."""

    def push_to(self, on_data: Callable[[bytes], None], on_end: Callable[[], None]) -> None:
        """Hand each received chunk to ``on_data``, then call ``on_end()`` once at the end."""

    def pause_pushing(self) -> None:
        """Stop reading from the socket (back-pressure)."""

    def resume_pushing(self) -> None:
        """Read from the socket again."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback()`` from the loop in ``delay`` seconds, where the pushes run."""


class TimerHandle(Protocol):
    """A pending loop timer (:class:`asyncio.TimerHandle`)."""

    def cancel(self) -> None:
        """Call nothing after all."""


def aborter(stream: anyio.abc.ByteStream) -> Callable[[], None] | None:
    """A synchronous close of ``stream`` that neither flushes nor waits; or None.

    asyncio's lean stream offers one (``AsyncioByteStream.abort``): dropping a
    connection then costs no cancel scope. Elsewhere, close with a cancelled
    ``aclose()``.
    """
    if isinstance(stream, AsyncioByteStream):
        return stream.abort
    return None


def push_receiver(stream: anyio.abc.ByteStream) -> PushReceiver | None:
    """The push interface of ``stream``, or None if it has none (Trio, TLS).

    On asyncio the lean stream can hand received bytes to a callback from
    asyncio's own ``data_received``: a reader that acts on them synchronously
    then saves a turn of the loop per message.
    """
    if isinstance(stream, AsyncioByteStream):
        return stream
    return None


def _socket_writer(sock: socket.socket) -> Callable[[memoryview], int]:
    send = sock.send

    def write(view: memoryview) -> int:
        try:
            return send(view)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            _raise_stream_error(sock, exc)

    return write


def _raise_stream_error(sock: socket.socket, exc: OSError) -> NoReturn:
    """Raise what a stream raises for ``exc`` on its socket: closed (by the stream), or broken."""
    if sock.fileno() < 0:  # the stream closed it (aclose)
        raise anyio.ClosedResourceError from None
    raise anyio.BrokenResourceError from exc


def _listener(sock: socket.socket) -> SocketListener:
    """A listener for ``sock`` whose accepted sockets become streams of the running loop."""
    return SocketListener(sock, _stream_factory(sock.family))


def _socket_half_closer(sock: socket.socket) -> Callable[[], None]:
    def half_close() -> None:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            _raise_stream_error(sock, exc)

    return half_close


def _stream_factory(family: int) -> StreamFactory:
    """Choose how accepted sockets (all of ``family``, the listener's) become streams."""
    if running_loop() is not None:
        return wrap_accepted_socket
    if family == socket.AF_UNIX:
        return _wrap_unix_for_trio
    return _wrap_for_trio


async def _wrap_for_trio(sock: socket.socket) -> anyio.abc.SocketStream:
    return await anyio.abc.SocketStream.from_socket(sock)


async def _wrap_unix_for_trio(sock: socket.socket) -> anyio.abc.SocketStream:
    return await anyio.abc.UNIXSocketStream.from_socket(sock)
