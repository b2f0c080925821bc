"""The sending side of a connection: the one owner of every outgoing byte.

Frames leave the sans-I/O core whole (:meth:`ServerConnection.data_to_send`)
and go into :class:`Outbox`, in order. The outbox hands the transport what it
takes at once, synchronously, when the stream offers a non-blocking writer
(plain TCP and Unix sockets on both loops); whatever is left stays at the head
of the buffer and a writer task of the connection's task group writes it with
``stream.send``. Nothing else writes to the stream, so a frame is never written
inside an unfinished one, and a caller cancelled while it waits for room leaves
its frame queued whole: it is still sent, in order.

``write_limit`` bounds the buffer: :meth:`Outbox.wait_for_room` waits while
more than that many bytes are left unwritten. The writer task is only started
when the transport is full (or for TLS, which has no non-blocking writer), and
ends once the buffer is empty, so an idle connection keeps no task here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream

from ._transport import CheckpointWithoutWaiting, direct_half_closer, direct_writer, soon_caller
from .sansio import ServerConnection, State
from .sansio.frames import CloseCode

if TYPE_CHECKING:
    from .connection import WebSocketServerProtocol

__all__ = ["Outbox", "send_fragments"]

_EOF = b""
"""The core's marker for "half-close the write side once the bytes before it are written"."""

COALESCE_BELOW_BYTES = 16_384
"""Chunks shorter than this are joined before a write: one system call for many small frames.

Longer ones (the core queues a large payload apart from its header) are written
as they are, since joining them would copy them.
"""

_WRITE_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class Outbox:
    """The bytes a connection has yet to write, and the only code that writes them.

    Args:
        core: the sans-I/O connection whose output this writes.
        stream: the byte stream to write to.
        write_limit: bytes left unwritten above which :meth:`wait_for_room` waits.
        task_group: where the writer task runs when the transport is full.
        on_broken: called once if a write fails (the peer is gone); the
            connection then stops reading and closes.
    """

    __slots__ = (
        "_broken",
        "_buffered",
        "_checkpoint_without_waiting",
        "_chunks",
        "_coalesce_below",
        "_core",
        "_deferred",
        "_drained",
        "_half_close",
        "_more_coming",
        "_on_broken",
        "_room",
        "_soon",
        "_stream",
        "_task_group",
        "_unstarted_writer",
        "_write_limit",
        "_write_now",
        "_writer_running",
    )

    def __init__(
        self,
        core: ServerConnection,
        stream: anyio.abc.ByteStream,
        write_limit: int,
        task_group: anyio.abc.TaskGroup,
        on_broken: Callable[[], None],
    ) -> None:
        self._core = core
        self._stream = stream
        self._write_limit = write_limit
        self._task_group = task_group
        self._on_broken = on_broken
        self._write_now = direct_writer(stream)
        self._half_close = direct_half_closer(stream) if self._write_now is not None else None
        # A list, not a deque: empty on an idle connection (56 bytes, where an
        # empty deque is 624), and while the transport is full it holds what
        # fits under write_limit, few enough that taking from the head is cheap.
        self._chunks: list[bytes | memoryview] = []
        self._buffered = 0
        self._writer_running = False
        self._broken = False
        self._room: anyio.Event | None = None
        self._drained: anyio.Event | None = None
        self._checkpoint_without_waiting = CheckpointWithoutWaiting()
        self._unstarted_writer: Coroutine[Any, Any, None] | None = None
        # Coalescing: while the handler works through queued messages, small
        # frames wait to leave in one write; see push().
        self._soon = soon_caller(stream) if self._write_now is not None else None
        self._more_coming: Callable[[], bool] | None = None
        self._coalesce_below = min(COALESCE_BELOW_BYTES, write_limit)
        self._deferred = False

    def buffered(self) -> int:
        """Count the bytes queued but not yet handed to the transport."""
        return self._buffered + self._core.bytes_to_send()

    def push(self) -> None:
        """Take what the core queued and write what the transport accepts now.

        Never blocks: the rest is left to the writer task. Call it after every
        core call that may queue bytes.
        """
        writes = self._core.data_to_send()
        if not writes or self._broken:
            return  # nothing new, or the peer is gone: nothing will be written again
        chunks = self._chunks
        if len(writes) == 1:
            chunk = writes[0]
            chunks.append(chunk)
            self._buffered += len(chunk)
        else:
            for piece in _coalesce(writes):
                chunks.append(piece)
                self._buffered += len(piece)
        if self._writer_running:
            return  # it writes what was just queued too
        more_coming = self._more_coming
        # Below write_limit too: send() never waits for kept-back bytes.
        if more_coming is not None and self._buffered < self._coalesce_below and more_coming():
            # The handler has more messages queued and will be back in recv()
            # at once: its answers leave together, in one write, when it takes
            # the last one (flush_deferred), or at the latest once its task
            # yields to the loop.
            if not self._deferred:
                self._deferred = True
                assert self._soon is not None
                self._soon(self._flush_soon)
            return
        self._deferred = False
        self._write_what_fits()
        if chunks:
            self._start_writer()

    def coalesce_while(self, more_coming: Callable[[], bool]) -> None:
        """Let small frames wait while ``more_coming()`` is true; only where it saves writes.

        Where the transport floor offers a way to run a callback soon
        (:func:`~wsserver._transport.soon_caller`: plain sockets on both
        loops), frames queued while ``more_coming()`` (the handler has
        messages waiting in the inbox) are kept, up to
        ``COALESCE_BELOW_BYTES``, and written together by
        :meth:`flush_deferred` or, at the latest, once the task yields to the
        loop. Over TLS every push writes at once.

        Args:
            more_coming: tells whether the handler will push again soon.
        """
        if self._soon is not None:
            self._more_coming = more_coming

    def flush_deferred(self) -> None:
        """Write the frames kept back by coalescing now; the rest goes to the writer task.

        Call it from a task or from the transport floor's callback (see
        :meth:`coalesce_while`); it does nothing when nothing was kept back.
        """
        self._deferred = False
        if self._chunks and not self._writer_running and not self._broken:
            self._write_what_fits()
            if self._chunks:
                self._start_writer()

    def _flush_soon(self) -> None:
        # Run by the transport floor's callback once the handler's task has
        # yielded; anyio works there, so the writer task can start from it.
        if self._deferred:
            self.flush_deferred()

    def wait_after_push(self) -> Awaitable[None]:
        """Await what this returns after :meth:`push`: room below ``write_limit``, or a checkpoint.

        When there is room already, this is a
        :class:`~wsserver._transport.CheckpointWithoutWaiting`: a sender that
        never has to wait costs no task switch per message yet cannot starve
        the other tasks. A plain function returning the awaitable: no
        coroutine of its own per message.
        """
        if self._buffered > self._write_limit and not self._broken:
            return self.wait_for_room()
        return self._checkpoint_without_waiting()

    async def wait_for_room(self) -> None:
        """Wait while more than ``write_limit`` bytes are left unwritten.

        Cancelling it leaves every queued frame in place: they are written
        anyway, in order.
        """
        while self._buffered > self._write_limit and not self._broken:
            room = self._room
            if room is None:
                room = self._room = anyio.Event()
            await room.wait()

    async def drain(self) -> None:
        """Wait until every queued byte is written (or writing failed)."""
        self.flush_deferred()
        while self._writer_running:
            drained = self._drained
            if drained is None:
                drained = self._drained = anyio.Event()
            await drained.wait()

    def _write_what_fits(self) -> None:
        """Hand the transport what it takes without blocking; keep the rest at the head."""
        write = self._write_now
        if write is None:
            return
        chunks = self._chunks
        if len(chunks) > 1:
            # Frames queued by several pushes (coalescing kept them back, or
            # the transport was full): small neighbours go out in one write.
            chunks[:] = _coalesce(chunks)
        try:
            while chunks:
                chunk = chunks[0]
                if not chunk:  # EOF: everything before it is written
                    if self._half_close is None:
                        return  # half-closing awaits: the writer task does it
                    self._half_close()
                    del chunks[0]
                    continue
                written = write(chunk if isinstance(chunk, memoryview) else memoryview(chunk))
                self._buffered -= written
                if written < len(chunk):
                    # The transport is full: the tail waits, first in line.
                    chunks[0] = memoryview(chunk)[written:]
                    return
                del chunks[0]
        except _WRITE_ERRORS:
            self._fail()

    def _start_writer(self) -> None:
        # Marked running once started: should the task group be gone (start_soon
        # raises), nothing would claim that a writer runs.
        self._task_group.start_soon(self._new_writer)
        self._writer_running = True

    def _new_writer(self) -> Coroutine[Any, Any, None]:
        # Kept until it starts: a writer whose task is cancelled before its first
        # step (the connection is being torn down) is closed by close(), rather
        # than left for Python to report as never awaited.
        self._unstarted_writer = writer = self._write_rest()
        return writer

    async def _write_rest(self) -> None:
        """Write the buffer's head until the buffer is empty; the only task that awaits writes."""
        self._unstarted_writer = None
        chunks = self._chunks
        stream = self._stream
        try:
            while chunks:
                chunk = chunks[0]
                if chunk:
                    # Every stream here takes any bytes-like object, as its transport does.
                    await stream.send(chunk)  # type: ignore[arg-type]
                    self._buffered -= len(chunk)
                else:
                    await _half_close(stream)
                del chunks[0]
                # Frames queued meanwhile go out in this same loop: after a
                # wait, the transport may take them at once.
                self._write_what_fits()
                if self._room is not None and self._buffered <= self._write_limit:
                    self._room.set()
                    self._room = None
        except _WRITE_ERRORS:
            self._fail()
        finally:
            self._writer_running = False
            self._wake_all()

    def close(self) -> None:
        """Write nothing more: the connection is being torn down (its task group ended)."""
        writer, self._unstarted_writer = self._unstarted_writer, None
        if writer is not None:
            writer.close()
        self._broken = True
        self._chunks.clear()
        self._buffered = 0
        self._wake_all()

    def _fail(self) -> None:
        if self._broken:
            return
        self._broken = True
        self._chunks.clear()
        self._buffered = 0
        self._wake_all()
        self._on_broken()

    def _wake_all(self) -> None:
        for event in (self._room, self._drained):
            if event is not None:
                event.set()
        self._room = self._drained = None


async def send_fragments(ws: WebSocketServerProtocol, fragments: AsyncIterator[Any]) -> None:
    """Send the items of ``fragments`` as one fragmented message, one frame each.

    Other messages wait until this one is complete. If the iterator fails or
    the caller is cancelled half-way, the message cannot be completed: the
    connection is failed with 1011.

    Raises:
        ConnectionClosed: if the connection is closed.
        TypeError: if the items are not all str or all bytes-like.
    """
    while ws._sending_fragments is not None:
        await ws._sending_fragments.wait()
    try:
        first = await fragments.__anext__()
    except StopAsyncIteration:
        return
    done = ws._sending_fragments = anyio.Event()
    core = ws.protocol
    try:
        if isinstance(first, str):
            kind: type = str
            ws._queue(core.send_text, first.encode(), False)
        elif isinstance(first, (bytes, bytearray, memoryview)):
            kind = bytes
            ws._queue(core.send_binary, bytes(first), False)
        else:
            raise TypeError("message fragments must be str or bytes-like")
        await _write_and_wait(ws)
        async for fragment in fragments:
            if kind is str and isinstance(fragment, str):
                data = fragment.encode()
            elif kind is bytes and isinstance(fragment, (bytes, bytearray, memoryview)):
                data = bytes(fragment)
            else:
                raise TypeError("message fragments must all be str or all bytes-like")
            ws._queue(core.send_continuation, data, False)
            await _write_and_wait(ws)
        ws._queue(core.send_continuation, b"", True)
        await _write_and_wait(ws)
    except BaseException:
        # A half-sent message cannot be completed: fail the connection.
        if core.state is State.OPEN:
            core.fail(CloseCode.INTERNAL_ERROR, "error in fragmented message")
            ws._outbox.push()
            ws._start_closing()
        raise
    finally:
        ws._sending_fragments = None
        done.set()


async def _write_and_wait(ws: WebSocketServerProtocol) -> None:
    ws._outbox.push()
    await ws._outbox.wait_after_push()


async def _half_close(stream: anyio.abc.ByteStream) -> None:
    """Send EOF after the closing handshake; over TLS, close outright.

    TLS cannot half-close: anyio's ``TLSStream.send_eof()`` always raises,
    NotImplementedError while the session is up and TypeError once its SSL
    object has shut down (the client went away meanwhile), which no caller
    expects. Closing is what the peer waits for anyway: the server closes
    TCP first.
    """
    if isinstance(stream, TLSStream):
        await stream.aclose()
        return
    try:
        await stream.send_eof()
    except NotImplementedError:  # any other stream that cannot half-close
        await stream.aclose()


def _coalesce(writes: Sequence[bytes | memoryview]) -> list[bytes | memoryview]:
    """Join consecutive small chunks so that one write carries them; keep EOF markers apart."""
    out: list[bytes | memoryview] = []
    pending: list[bytes | memoryview] = []
    for chunk in writes:
        if chunk and len(chunk) < COALESCE_BELOW_BYTES:
            pending.append(chunk)
            continue
        if pending:
            out.append(pending[0] if len(pending) == 1 else b"".join(pending))
            pending = []
        out.append(chunk)
    if pending:
        out.append(pending[0] if len(pending) == 1 else b"".join(pending))
    return out
