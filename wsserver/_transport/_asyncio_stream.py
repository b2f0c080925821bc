"""The lean byte stream over an asyncio transport, for connections accepted on asyncio.

anyio's stock asyncio socket stream pauses and resumes its transport around
every read and yields to the event loop on every call; with many small
messages that costs about half the throughput of a plain asyncio ``Protocol``.
:class:`AsyncioByteStream` keeps anyio's stream interface and cancellation
semantics but moves bytes the way a ``Protocol`` does: ``data_received``
appends to a buffer, and :meth:`AsyncioByteStream.receive` hands buffered
bytes over without a loop turn.

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

TLS is not done here: the shared layer wraps this stream in
:class:`anyio.streams.tls.TLSStream`, the same way on both loops.
"""

from __future__ import annotations

import asyncio
import os
import socket
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Final, cast

import anyio
from anyio.abc import ByteStream, SocketAttribute
from anyio.lowlevel import checkpoint

from ._attributes import IP_FAMILIES, constant, short_address

try:
    # This module only ever runs on asyncio, so the backend is known: calling
    # its method directly skips the backend lookup (sniffio) that the public
    # anyio.lowlevel.checkpoint_if_cancelled() makes on every call, which was
    # a tenth of the server's CPU time in a 32-byte echo profile.
    from anyio._backends._asyncio import AsyncIOBackend

    checkpoint_if_cancelled = AsyncIOBackend.checkpoint_if_cancelled
except (ImportError, AttributeError):  # a future anyio moved it: the public way
    from anyio.lowlevel import checkpoint_if_cancelled

# sniffio is how anyio tells which loop runs. In a loop callback, outside any
# task, it finds none under a plain asyncio.run(); the stream marks the
# context its callbacks run in as asyncio's, through the context variable
# sniffio provides for event loops to set. The floor never reads it.
from sniffio import current_async_library_cvar

__all__ = [
    "DEFAULT_READ_HIGH_WATER_BYTES",
    "DEFAULT_RECEIVE_MAX_BYTES",
    "DEFAULT_WRITE_HIGH_WATER_BYTES",
    "MAX_CALLS_WITHOUT_YIELD",
    "AsyncioByteStream",
    "wrap_accepted_socket",
]


class _MarkedAsAsyncio:
    """Within it, what is scheduled on the loop runs in a context marked as asyncio's.

    asyncio copies the current context into each callback it schedules; with
    sniffio's variable set there, anyio finds its loop in the callback (a
    task group can start a task, the clock can be read).
    """

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = current_async_library_cvar.set("asyncio")

    def __exit__(self, *exc_info: object) -> None:
        current_async_library_cvar.reset(self._token)


DEFAULT_RECEIVE_MAX_BYTES: Final = 2**16
"""Default ``max_bytes`` of :meth:`AsyncioByteStream.receive`."""
DEFAULT_READ_HIGH_WATER_BYTES: Final = 4 * DEFAULT_RECEIVE_MAX_BYTES
"""Received bytes buffered before the stream stops reading from the socket."""
DEFAULT_WRITE_HIGH_WATER_BYTES: Final = 0
"""Bytes queued in the transport from which :meth:`AsyncioByteStream.send` waits.

Zero: ``send()`` returns once the kernel took every byte, as Trio's does, so
that the bytes a writer counts as unsent (the connection's ``write_limit``)
are all the bytes user space holds; the transport never keeps a copy behind.
"""
MAX_CALLS_WITHOUT_YIELD: Final = 32
"""Calls served without waiting that may run in a row before one yields to the loop.

A real checkpoint now and then keeps a busy stream from starving the loop.
"""


def _unshared(data: bytes | bytearray | memoryview) -> bytes | memoryview:
    """Return ``data``, copied only if the caller could still change it.

    From Python 3.12 on, asyncio's transport keeps what it could not send at
    once by reference, not as a copy: bytes the caller may still modify (a
    ``bytearray`` or a view of one) must be copied before they are handed over.
    """
    if type(data) is bytes:
        return data
    view = memoryview(data)
    return view if view.readonly else bytes(view)


class AsyncioByteStream(ByteStream):
    """A byte stream over an asyncio transport, with anyio's stream semantics.

    Streams come from :func:`wrap_accepted_socket`; the initializer is called
    from the protocol's ``connection_made``, not by users.

    Flow control in both directions: reading from the socket pauses while more
    than ``read_high_water_bytes`` received bytes wait unread and resumes once
    a quarter of that is left; :meth:`send` waits while the transport holds
    more than ``write_high_water_bytes`` unsent bytes.

    Extra attributes: every :class:`anyio.abc.SocketAttribute` that applies to
    the socket (``raw_socket`` is the socket object asyncio exposes, a
    ``TransportSocket``).

    Args:
        transport: the connected transport.
        read_high_water_bytes: received bytes kept before reading pauses.
        write_high_water_bytes: unsent bytes from which writers wait.
    """

    def __init__(
        self,
        transport: asyncio.Transport,
        *,
        read_high_water_bytes: int = DEFAULT_READ_HIGH_WATER_BYTES,
        write_high_water_bytes: int = DEFAULT_WRITE_HIGH_WATER_BYTES,
    ) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        # Received chunks, kept as asyncio handed them over: a receive() that
        # takes one whole chunk returns it without copying.
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._read_high_water_bytes = read_high_water_bytes
        self._read_low_water_bytes = read_high_water_bytes // 4
        self._write_high_water_bytes = write_high_water_bytes
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
        self._on_data: Callable[[bytes], None] | None = None
        self._on_end: Callable[[], None] | None = None
        transport.set_write_buffer_limits(high=write_high_water_bytes)
        self._sock = transport.get_extra_info("socket")
        self._fileno = -1 if self._sock is None else self._sock.fileno()

    # -- anyio.abc.ByteStream ---------------------------------------------

    async def receive(self, max_bytes: int = DEFAULT_RECEIVE_MAX_BYTES) -> bytes:
        """Return up to ``max_bytes`` received bytes, waiting if none are buffered.

        Buffered bytes are returned without a loop turn; the call is still a
        cancellation point, and a cancelled wait loses no data.

        Args:
            max_bytes: the most bytes to return; must be positive.

        Returns:
            Between 1 and ``max_bytes`` bytes.

        Raises:
            ValueError: if ``max_bytes`` is not positive.
            anyio.BusyResourceError: if another task is already receiving.
            anyio.EndOfStream: if the peer closed its side and every byte it
                sent has been returned.
            anyio.ClosedResourceError: if this stream was closed.
            anyio.BrokenResourceError: if the connection failed (e.g. it was
                reset by the peer) and no buffered bytes are left.
        """
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive integer, got {max_bytes}")
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

        Returns once the kernel took every byte (the transport buffers what
        it could not take at once, and this waits until it is handed over). A
        send cancelled while it waits has written either nothing (it waited
        before writing) or everything (it waited for the transport to hand
        the rest over): never part of ``item``.

        Args:
            item: the bytes (or any bytes-like object) to send.

        Raises:
            anyio.BusyResourceError: if another task is already sending.
            anyio.ClosedResourceError: if this stream was closed, or
                :meth:`send_eof` was called.
            anyio.BrokenResourceError: if the connection was lost.
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
            self._transport.write(_unshared(item))
            if self._is_writing_paused:
                # The kernel did not take it all: wait until the transport
                # handed the rest over (or the stream closed).
                await self._wait_for_drain()
        finally:
            self._is_sending = False

    def write_nowait(self, view: memoryview) -> int:
        """Write what the kernel takes of ``view`` now, if nothing waits in the transport.

        Neither waits nor checkpoints: this is the synchronous writer that
        :func:`wsserver._transport.direct_writer` returns. The caller makes sure
        no :meth:`send` runs at the same time. Bytes the kernel does not take
        stay the caller's: nothing is copied into the transport.

        Args:
            view: the bytes to write.

        Returns:
            How many bytes the kernel took: 0 when its buffer is full, or when
            the transport still holds bytes of an earlier :meth:`send`.

        Raises:
            anyio.ClosedResourceError: if this stream was closed, or
                :meth:`send_eof` was called.
            anyio.BrokenResourceError: if the connection is closing or was lost.
        """
        self._raise_if_unwritable()
        if not view or self._is_writing_paused or self._transport.get_write_buffer_size():
            return 0
        # Straight to the socket, as transport.write() itself would with an
        # empty buffer; but what the kernel does not take stays the caller's,
        # so no copy of it lands in the transport.
        try:
            return os.write(self._fileno, view)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            raise anyio.BrokenResourceError from exc

    def call_soon(self, callback: Callable[[], None]) -> None:
        """Run ``callback()`` from the loop once the running task yields (``loop.call_soon``).

        Like the stream's own callbacks, it runs in a context marked as
        asyncio's, where anyio works (a task group can start a task) even
        under a plain ``asyncio.run()``.
        """
        with _MarkedAsAsyncio():
            self._loop.call_soon(callback)

    def call_later(self, delay: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        """Run ``callback()`` from the loop in ``delay`` seconds (``loop.call_later``).

        What a keepalive without a task of its own times its pings with; the
        callback runs, like the stream's own, where anyio finds the loop.

        Returns:
            The timer; ``cancel()`` it to call nothing.
        """
        with _MarkedAsAsyncio():
            return self._loop.call_later(delay, callback)

    def send_eof_nowait(self) -> None:
        """Half-close the connection now, as :meth:`send_eof` does, without a checkpoint.

        The synchronous half-close :func:`wsserver._transport.direct_half_closer`
        returns. The caller makes sure no :meth:`send` runs at the same time;
        bytes still in the transport are flushed first, as with :meth:`send_eof`.

        Raises:
            anyio.ClosedResourceError: if this stream was closed.
            anyio.BrokenResourceError: if the connection was lost.
        """
        if self._is_eof_sent and not self._is_closed:
            return
        self._raise_if_unwritable()
        self._is_eof_sent = True
        self._transport.write_eof()

    async def send_eof(self) -> None:
        """Half-close the connection: flush queued bytes, then send a TCP FIN.

        Calling it again does nothing.

        Raises:
            anyio.BusyResourceError: if another task is sending.
            anyio.ClosedResourceError: if this stream was closed.
            anyio.BrokenResourceError: if the connection was lost.
        """
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
        if self._mark_closed() and not self._transport.is_closing():
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

    def abort(self) -> None:
        """Close the connection now, neither flushing nor waiting, as a cancelled :meth:`aclose`.

        Synchronous, so that dropping a connection costs no cancel scope (in
        anyio, cancelling one formats the running task's repr, a tenth of a
        connection's start-up and teardown in a handshake profile).
        """
        self._mark_closed()
        self._transport.abort()

    def _mark_closed(self) -> bool:
        """Drop what is queued and wake the waiting tasks, once; tell whether it was now."""
        if self._is_closed:
            return False
        self._is_closed = True
        self._chunks.clear()
        self._buffered = 0
        _wake(self._read_waiter)
        _wake(self._drain_waiter)
        return True

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """The socket attributes described in the class documentation.

        Built on each access rather than kept: they are rarely asked for, and
        a dozen closures per idle connection add up to kilobytes.
        """
        attributes: dict[Any, Callable[[], Any]] = {}
        transport = self._transport
        sock = self._sock
        if sock is not None:
            attributes[SocketAttribute.raw_socket] = constant(sock)
            attributes[SocketAttribute.family] = constant(sock.family)
        local_address = short_address(transport.get_extra_info("sockname"))
        remote_address = short_address(transport.get_extra_info("peername"))
        if local_address is not None:
            attributes[SocketAttribute.local_address] = constant(local_address)
        if remote_address is not None:
            attributes[SocketAttribute.remote_address] = constant(remote_address)
        if sock is not None and sock.family in IP_FAMILIES:
            if local_address is not None:
                attributes[SocketAttribute.local_port] = constant(local_address[1])
            if remote_address is not None:
                attributes[SocketAttribute.remote_port] = constant(remote_address[1])
        return attributes

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

    # Push mode: received bytes handed over from asyncio's callback.

    def push_to(self, on_data: Callable[[bytes], None], on_end: Callable[[], None]) -> None:
        """Hand every received chunk to ``on_data`` as it arrives; then ``on_end()`` once.

        ``on_data`` runs in asyncio's ``data_received`` callback, so a reader
        that acts on bytes synchronously costs no turn of the loop per chunk.
        Bytes already buffered are handed over at once. ``on_end`` is called
        once the peer closed its side or the connection was lost (at once if
        that already happened). :meth:`receive` may not be called afterwards.

        Args:
            on_data: takes each chunk; it must not raise.
            on_end: called once, after the last chunk.
        """
        self._on_data = on_data
        self._on_end = on_end
        # From now on nothing is buffered here: a deque that keeps nothing
        # (shared, never holding a byte) instead of 624 bytes per connection.
        chunks, self._chunks = self._chunks, _NO_CHUNKS
        self._buffered = 0
        for chunk in chunks:
            on_data(chunk)
        if self._is_eof_received or self._is_connection_lost:
            self._end_pushing()

    def pause_pushing(self) -> None:
        """Stop reading from the socket until :meth:`resume_pushing` (back-pressure)."""
        if not self._is_reading_paused and not self._transport.is_closing():
            self._is_reading_paused = True
            self._transport.pause_reading()

    def resume_pushing(self) -> None:
        """Read from the socket again after :meth:`pause_pushing`."""
        if self._is_reading_paused and not self._transport.is_closing():
            self._is_reading_paused = False
            self._transport.resume_reading()

    def _end_pushing(self) -> None:
        on_end, self._on_end = self._on_end, None
        self._on_data = None
        if on_end is not None:
            on_end()

    # Called by _StreamProtocol, from asyncio's callbacks.

    def _feed_data(self, data: bytes) -> None:
        if self._is_closed:
            return
        on_data = self._on_data
        if on_data is not None:
            on_data(data)
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
        self._end_pushing()
        # True keeps the transport open: we may still send after the peer's FIN.
        return True

    def _feed_connection_lost(self, exc: BaseException | None) -> None:
        self._is_connection_lost = True
        self._connection_error = exc
        self._is_writing_paused = False
        _wake(self._read_waiter)
        _wake(self._drain_waiter)
        for waiter in self._close_waiters:
            _wake(waiter)
        self._end_pushing()

    def _pause_writing(self) -> None:
        self._is_writing_paused = True

    def _resume_writing(self) -> None:
        self._is_writing_paused = False
        _wake(self._drain_waiter)


_NO_CHUNKS: deque[bytes] = deque(maxlen=0)
"""The receive buffer of a stream in push mode: appending to it keeps nothing."""


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


READ_BUFFER_BYTES: Final = 2**18
"""Size of the buffer the kernel copies received bytes into: asyncio's own read size."""

_read_buffers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, memoryview] = (
    weakref.WeakKeyDictionary()
)


def _read_buffer(loop: asyncio.AbstractEventLoop) -> memoryview:
    """The loop's one read buffer, shared by its connections (made on first use)."""
    buffer = _read_buffers.get(loop)
    if buffer is None:
        buffer = _read_buffers[loop] = memoryview(bytearray(READ_BUFFER_BYTES))
    return buffer


class _StreamProtocol(asyncio.BufferedProtocol):
    """The asyncio side of an :class:`AsyncioByteStream`: forwards callbacks.

    A buffered protocol reading into one buffer per loop, then handing on a
    copy of what arrived: with a plain ``Protocol`` asyncio makes a 256 KiB
    bytes object for every read and shrinks it to what arrived, which glibc
    serves with ``mmap``, ``mremap`` and ``munmap`` (three system calls and a
    page fault per small message, seen with strace). The buffer can be shared
    because asyncio calls ``get_buffer()``, reads, and calls
    ``buffer_updated()`` in one go, with nothing in between.
    """

    stream: AsyncioByteStream

    def __init__(self, read_high_water_bytes: int, write_high_water_bytes: int) -> None:
        self._read_high_water_bytes = read_high_water_bytes
        self._write_high_water_bytes = write_high_water_bytes

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.stream = AsyncioByteStream(
            # A socket connection always gets a full (read and write) transport.
            cast(asyncio.Transport, transport),
            read_high_water_bytes=self._read_high_water_bytes,
            write_high_water_bytes=self._write_high_water_bytes,
        )
        self._buffer = _read_buffer(self.stream._loop)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.stream._feed_data(self._buffer[:nbytes].tobytes())

    def eof_received(self) -> bool:
        return self.stream._feed_eof()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stream._feed_connection_lost(exc)

    def pause_writing(self) -> None:
        self.stream._pause_writing()

    def resume_writing(self) -> None:
        self.stream._resume_writing()


async def wrap_accepted_socket(
    sock: socket.socket,
    *,
    read_high_water_bytes: int = DEFAULT_READ_HIGH_WATER_BYTES,
    write_high_water_bytes: int = DEFAULT_WRITE_HIGH_WATER_BYTES,
) -> AsyncioByteStream:
    """Give an accepted socket to the running asyncio loop, as a stream.

    Args:
        sock: a connected stream socket; the stream owns it from now on.
        read_high_water_bytes: see :class:`AsyncioByteStream`.
        write_high_water_bytes: see :class:`AsyncioByteStream`.

    Returns:
        The stream, reading from the socket already.

    Raises:
        ValueError: if a high-water mark is out of range.
        OSError: if asyncio cannot take the socket (the peer may be gone).
    """
    # Checked here: raised in connection_made, asyncio would only log it.
    if read_high_water_bytes < 1:
        raise ValueError(
            f"read_high_water_bytes must be a positive integer, got {read_high_water_bytes}"
        )
    if write_high_water_bytes < 0:
        raise ValueError(
            f"write_high_water_bytes must not be negative, got {write_high_water_bytes}"
        )
    # The transport's callbacks run in the context they were scheduled from,
    # copied here: marked as asyncio's, anyio works in them (a task group can
    # start a task, the clock can be read) even under a plain asyncio.run(),
    # where anyio would find no task to tell the loop by.
    with _MarkedAsAsyncio():
        _, protocol = await asyncio.get_running_loop().connect_accepted_socket(
            lambda: _StreamProtocol(read_high_water_bytes, write_high_water_bytes), sock
        )
    return protocol.stream
