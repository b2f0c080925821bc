"""The receiving side of a connection: one task reads the stream for the connection's life.

:meth:`Inbox.pump` is the only reader once the handshake is over. It feeds the
sans-I/O core, lets the core's answers (pongs, the close echo) leave at once
through the :class:`~wsserver._sending.Outbox`, and puts assembled messages in
a queue bounded by ``max_queue``, from which :meth:`Inbox.get` serves
``recv()``. When the queue is full it stops reading (back-pressure) until the
handler catches up, but never once a close frame was sent or received: the
closing handshake must not wait for the handler.

The close timeout is the deadline of the cancel scope the pump reads under,
set by whoever starts the closing handshake (:meth:`Inbox.start_closing`).

On asyncio's lean stream (push mode) the stream hands received bytes to the
inbox from asyncio's ``data_received`` callback, so a connection needs no
receiving task at all (:meth:`Inbox.receive_pushed`): the callbacks feed the
core and write its answers, the close timeout is a loop timer, and the stream
is closed, synchronously, where the core finds the connection closed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc

from ._sending import Outbox
from ._timers import Keepalive
from ._transport import (
    CheckpointWithoutWaiting,
    PushReceiver,
    TimerHandle,
    direct_reader,
    new_parker,
    push_receiver,
)
from .options import LoggerLike
from .sansio import ConnectionClosed, Frame, Opcode, ServerConnection, State

__all__ = ["Data", "Inbox"]

Data = str | bytes
"""A WebSocket message: text as :class:`str`, binary as :class:`bytes`."""

INFLATE_SLICE_BYTES = 1024
"""Compressed bytes fed to the core at a time, between checks of ``max_queue``.

A few bytes of DEFLATE can inflate to a thousand times as many: fed whole, one
read could queue far more than ``max_queue`` messages.
"""

_READ_ERRORS = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class Inbox:
    """Messages received and not yet read, and the task that receives them.

    Args:
        core: the sans-I/O connection to feed.
        stream: the byte stream to read, already past the opening handshake.
        outbox: where the core's answers are written.
        max_queue: messages kept unread before reading pauses; ``None``: no limit.
        read_limit: bytes read from the stream at a time.
        close_timeout: seconds the closing handshake may take; ``None``: no limit.
        logger: the connection's logger.
        on_pong: called with the payload of every pong received.
        closed_exception: builds the exception :meth:`get` raises once closed.
    """

    __slots__ = (
        "_checkpoint_without_waiting",
        "_close_timeout",
        "_closed_exception",
        "_core",
        "_deadline",
        "_dropping",
        "_feeding",
        "_finished",
        "_getting",
        "_head",
        "_keepalive",
        "_logger",
        "_low_water",
        "_max_queue",
        "_message_parker",
        "_messages",
        "_on_end",
        "_on_pong",
        "_outbox",
        "_parts",
        "_pump_parker",
        "_push_source",
        "_pushed",
        "_pusher",
        "_read_limit",
        "_receive",
        "_scope",
        "_stopped",
        "_stream",
        "_text",
        "_timer",
        "_unfed",
    )

    def __init__(
        self,
        core: ServerConnection,
        stream: anyio.abc.ByteStream,
        outbox: Outbox,
        *,
        max_queue: int | None,
        read_limit: int,
        close_timeout: float | None,
        logger: LoggerLike,
        on_pong: Callable[[bytes], None],
        closed_exception: Callable[[], ConnectionClosed],
    ) -> None:
        self._core = core
        self._stream = stream
        self._outbox = outbox
        self._max_queue = max_queue
        self._low_water = max(1, (max_queue or 1) // 4)
        self._read_limit = read_limit
        self._close_timeout = close_timeout
        self._logger = logger
        self._on_pong = on_pong
        self._closed_exception = closed_exception
        # The queue: a list read from _head on, cleared whenever it empties.
        # Lighter than a deque (56 bytes empty against 624): most connections
        # hold zero or one message at a time.
        self._messages: list[Data | None] = []
        self._head = 0
        self._parts: list[Any] = []  # the fragments' text (str) or payloads (bytes)
        self._text = False
        self._getting = False
        # recv() parks for a message; the receiving task for room in the queue,
        # or, in push mode, for the end of the connection.
        self._message_parker = new_parker()
        self._pump_parker = new_parker()
        self._scope: anyio.CancelScope | None = None
        self._deadline = float("inf")
        self._stopped = False
        self._finished = False
        self._dropping = False
        self._checkpoint_without_waiting = CheckpointWithoutWaiting()
        self._pusher: PushReceiver | None = None
        self._pushed = False
        self._push_source: PushReceiver | None = None  # the stream, in push mode
        self._keepalive: Keepalive | None = None
        self._receive: Callable[[int], Awaitable[bytes]] | None = None
        self._unfed = b""
        self._feeding = False
        # Push mode (see receive_pushed): called once at the end; the close timer.
        self._on_end: Callable[[], None] | None = None
        self._timer: TimerHandle | None = None
        outbox.coalesce_while(self._has_queued)

    # The handler's side -----------------------------------------------------------

    async def get(self) -> Data:
        """Return the next message, waiting for it if need be.

        Raises:
            ConnectionClosed: once the connection is closed and every message was read.
            RuntimeError: if another task is already waiting in :meth:`get`.
        """
        if self._getting:
            raise RuntimeError("recv() is already waiting for the next message in another task")
        if self._head < len(self._messages):
            message = self._pop()
            await self._checkpoint_without_waiting()
            return message
        self._getting = True
        try:
            while self._head >= len(self._messages):
                if self._finished:
                    raise self._closed_exception()
                await self._message_parker.park()
        finally:
            self._getting = False
        return self._pop()

    def _pop(self) -> Data:
        messages = self._messages
        head = self._head
        message = messages[head]
        head += 1
        if head == len(messages):
            messages.clear()
            head = 0
            # The handler took the last queued message: what it sent while
            # working through them leaves now, in one write.
            self._outbox.flush_deferred()
        else:
            messages[head - 1] = None  # hold no reference to what the handler took
        self._head = head
        self._after_get()
        return message  # type: ignore[return-value]  # a slot before _head is never None

    def _after_get(self) -> None:
        if len(self._messages) - self._head < self._low_water:
            if self._pusher is None:
                self._pump_parker.unpark()
            else:
                self._resume_pushed()

    def start_closing(self, *, drop_excess: bool = False) -> None:
        """Bound what is left of the closing handshake by ``close_timeout``; stop back-pressure.

        Whoever starts the closing handshake calls it (``close()``, the end of
        the handler, the peer's close frame); the earliest deadline wins.

        Args:
            drop_excess: the handler closed: drop messages that arrive from now
                on while ``max_queue`` messages wait unread.
        """
        if drop_excess:
            self._dropping = True
        if self._close_timeout is not None and self._deadline == float("inf"):
            # The first call sets the deadline: the timeout is the same for
            # every caller, so the earliest deadline is the first one.
            self._deadline = anyio.current_time() + self._close_timeout
            if self._scope is not None:
                self._scope.deadline = self._deadline
        if (
            self._pushed and self._timer is None and not self._finished
            and self._close_timeout is not None
        ):
            assert self._push_source is not None
            self._timer = self._push_source.call_later(self._close_timeout, self._close_timed_out)
        self._wake_reader()

    def stop(self) -> None:
        """Stop reading now: the connection is being dropped."""
        self._stopped = True
        self._pusher = None
        if self._scope is not None:
            self._scope.cancel()
        if self._pushed:
            self._end_pushed()
        else:
            self._pump_parker.unpark()

    def close(self) -> None:
        """Stop reading for good: the connection is closed, or its task group gone."""
        self._on_end = None
        self.stop()
        self._finished = True
        self._message_parker.unpark()

    def _wake_reader(self) -> None:
        if self._pusher is None:
            self._pump_parker.unpark()
        else:
            self._resume_pushed()

    def _resume_pushed(self) -> None:
        if self._feeding:
            return  # called back from the feeding below: it carries on by itself
        if self._unfed:
            self._feed_unfed()
        self._after_push()

    # The receiving task -----------------------------------------------------------

    def receive_pushed(self, on_end: Callable[[], None]) -> bool:
        """Receive from asyncio's callbacks, without a task, if the stream can push.

        Frames that arrived with the handshake request are taken first. The
        stream's callbacks then do what :meth:`pump` does; the close timeout
        runs on the stream's loop timer (``call_later``). Call from a task, once.

        Args:
            on_end: called once the connection is closed (by the peer, the
                close timeout or :meth:`stop`), the core closed then: it
                must close the stream, at once.

        Returns:
            Whether the stream pushes; if not, run :meth:`pump` in a task.
        """
        pusher = push_receiver(self._stream)
        if pusher is None:
            return False
        self._on_end = on_end
        self._pushed = True
        self._push_source = pusher
        self._pusher = pusher
        self._take_events()
        pusher.push_to(self._on_pushed_data, self._on_pushed_end)
        self._after_push()
        return True

    async def pump(self) -> None:
        """Feed the core until the connection is closed; the only reader of the stream.

        Returns once the core is closed (the peer closed TCP), the close
        timeout expired, or :meth:`stop` was called; the core is closed then.
        Not for push mode (:meth:`receive_pushed`).
        """
        core = self._core
        keepalive = self._keepalive
        try:
            with anyio.CancelScope(deadline=self._deadline) as scope:
                self._scope = scope
                if self._stopped:
                    scope.cancel()
                # Frames that arrived with the handshake request are parsed already.
                self._take_events()
                if keepalive is None:
                    await self._pull()
                while keepalive is not None and core.state is not State.CLOSED:
                    # The keepalive's deadline: a cancelled read loses no
                    # bytes (time_keepalive only lets direct readers here).
                    with anyio.CancelScope(deadline=keepalive.deadline) as tick:
                        keepalive.scope = tick
                        await self._pull()
                    keepalive.scope = None
                    if not tick.cancelled_caught:
                        break
                    keepalive.fire()
            if scope.cancelled_caught and not self._stopped:
                self._logger.info(
                    "closing handshake timed out after %ss", self._close_timeout
                )
        finally:
            self._scope = None
            self._finished = True
            if core.state is not State.CLOSED:
                core.receive_eof()  # dropped without a closing handshake: 1006
            self._message_parker.unpark()

    async def _pull(self) -> None:
        """Read and feed the core until it is closed or the stream ends."""
        core = self._core
        read_limit = self._read_limit
        compressed = bool(core.extensions)
        receive = self._receive
        if receive is None:
            receive = self._receive = direct_reader(self._stream) or self._stream.receive
        while core.state is not State.CLOSED:
            if self._unfed:
                # Cut short by the keepalive's deadline while waiting for room.
                await self._feed_in_slices(b"")
                continue
            if self._full() and core.state is State.OPEN:
                await self._wait_for_room()
                continue
            try:
                data = await receive(read_limit)
            except _READ_ERRORS:
                core.receive_eof()
                self._take_events()
                return
            if compressed:
                await self._feed_in_slices(data)
            else:
                core.receive_data(data)
                self._take_events()

    def time_keepalive(self, keepalive: Keepalive) -> bool:
        """Run ``keepalive`` without a task of its own, if this stream allows; start it then.

        In push mode on a loop timer of the stream; on a stream read
        directly (Trio's plain sockets) as the deadline of a cancel scope
        :meth:`pump` reads under, which a cancelled read survives. Call from
        a task, after :meth:`receive_pushed`.

        Returns:
            Whether it runs so; if not, the caller runs the keepalive task.
        """
        if self._pushed:
            assert self._push_source is not None
            keepalive.start(self._push_source.call_later)
            return True
        self._receive = direct_reader(self._stream)
        if self._receive is None:
            return False
        self._keepalive = keepalive
        keepalive.start()
        return True

    # Push mode (asyncio's lean stream) -------------------------------------------

    # The same receiving side as the loop in pump(), driven by the transport
    # instead of a read: each chunk is fed to the core where it arrives, so a
    # message reaches a waiting recv() in one turn of the loop, and the core's
    # answers (pongs, the close echo) leave from the same callback.
    # Back-pressure pauses the transport's reading.

    def _end_pushed(self) -> None:
        """The pushed connection is over: close the core, wake recv(), close the stream."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._pusher = None
        if self._finished:
            return
        self._finished = True
        if self._core.state is not State.CLOSED:
            self._core.receive_eof()  # dropped without a closing handshake: 1006
        self._message_parker.unpark()
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end()

    def _close_timed_out(self) -> None:
        self._timer = None
        if self._finished:
            return
        self._logger.info("closing handshake timed out after %ss", self._close_timeout)
        self._stopped = True
        self._end_pushed()

    def _on_pushed_data(self, data: bytes) -> None:
        if self._stopped:
            return
        if self._core.extensions:
            self._unfed += data
            self._feed_unfed()
        else:
            self._core.receive_data(data)
            self._take_events()
        self._after_push()

    def _on_pushed_end(self) -> None:
        if self._stopped:
            return
        self._core.receive_eof()
        self._take_events()
        self._after_push()

    def _feed_unfed(self) -> None:
        """Feed compressed bytes a slice at a time while there is room (or while closing)."""
        core = self._core
        unfed = self._unfed
        start = 0
        self._feeding = True
        try:
            while start < len(unfed) and not (self._full() and core.state is State.OPEN):
                core.receive_data(unfed[start:start + INFLATE_SLICE_BYTES])
                start += INFLATE_SLICE_BYTES
                self._take_events()
        finally:
            self._unfed = unfed[start:]
            self._feeding = False

    def _after_push(self) -> None:
        """Pause reading while the queue is full; resume once there is room; end once closed."""
        pusher = self._pusher
        if pusher is None:
            return
        core = self._core
        if core.state is State.CLOSED:
            self._end_pushed()
        elif self._unfed or (self._full() and core.state is State.OPEN):
            pusher.pause_pushing()
        else:
            pusher.resume_pushing()

    def _take_events(self) -> None:
        """Act on what the core received: queue messages, answer, note pongs and closes."""
        core = self._core
        for frame in core.events_received():
            self._take_frame(frame)  # type: ignore[arg-type]  # after the handshake: frames only
        if self._pusher is None:
            self._answer()
        elif core.has_data_to_send() or core.close_expected():
            self._answer()  # from the callback, which may start the writer task

    def _has_queued(self) -> bool:
        return self._head < len(self._messages)

    def _answer(self) -> None:
        outbox = self._outbox
        outbox.push()  # pongs and the close echo leave first
        outbox.flush_deferred()  # and what coalescing kept back, if the transport was full
        if self._core.close_expected():
            self.start_closing()

    def _take_frame(self, frame: Frame) -> None:
        match frame.opcode:
            case Opcode.TEXT:
                if frame.fin:
                    self._deliver(frame.text)  # type: ignore[attr-defined]  # a TextFrame
                else:
                    self._text = True
                    self._parts = [frame.text]  # type: ignore[attr-defined]
            case Opcode.BINARY:
                if frame.fin:
                    self._deliver(frame.data)
                else:
                    self._text = False
                    self._parts = [frame.data]
            case Opcode.CONT:
                parts = self._parts
                if self._text:
                    parts.append(frame.text)  # type: ignore[attr-defined]
                else:
                    parts.append(frame.data)
                if frame.fin:
                    self._parts = []
                    if self._text:
                        self._deliver("".join(parts))
                    else:
                        self._deliver(b"".join(parts))
            case Opcode.PONG:
                self._on_pong(frame.data)

    def _deliver(self, message: Data) -> None:
        if self._dropping and self._full():
            # The handler closed without reading what it had; the client's
            # messages sent before it saw our close frame are not read either,
            # and past max_queue they would only hold memory.
            self._logger.debug("dropped a message received while closing with a full queue")
            return
        self._messages.append(message)
        self._message_parker.unpark()

    def _full(self) -> bool:
        max_queue = self._max_queue
        return max_queue is not None and len(self._messages) - self._head >= max_queue

    async def _wait_for_room(self) -> None:
        """Back-pressure: stop reading until the handler has read the queue down."""
        while self._full() and self._core.state is State.OPEN and not self._stopped:
            await self._pump_parker.park()

    async def _feed_in_slices(self, data: bytes) -> None:
        """Feed compressed bytes a slice at a time, waiting for room between slices.

        What is not fed yet waits in ``_unfed``: a wait cut short by
        cancellation loses none of it.
        """
        self._unfed += data
        while self._unfed:
            if self._full() and self._core.state is State.OPEN:
                await self._wait_for_room()
                if self._stopped:
                    return  # _wait_for_room() returns at once from now on
            self._feed_unfed()
