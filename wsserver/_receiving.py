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
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from ._sending import Outbox
from ._transport import PushReceiver, push_receiver
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

MAX_CALLS_WITHOUT_YIELD = 32
"""Calls that found their message (or room) at once, in a row, before one yields to the loop."""

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
        "_calls_without_yield",
        "_close_timeout",
        "_closed_exception",
        "_core",
        "_deadline",
        "_dropping",
        "_ended",
        "_feeding",
        "_finished",
        "_getting",
        "_logger",
        "_low_water",
        "_max_queue",
        "_message_waiter",
        "_messages",
        "_new_event",
        "_on_pong",
        "_outbox",
        "_parts",
        "_pusher",
        "_read_limit",
        "_room",
        "_scope",
        "_stopped",
        "_stream",
        "_text",
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
        self._messages: deque[Data] = deque()
        self._parts: list[Any] = []  # the fragments' text (str) or payloads (bytes)
        self._text = False
        self._getting = False
        self._message_waiter: anyio.Event | None = None
        self._room: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        self._deadline = float("inf")
        self._stopped = False
        self._finished = False
        self._dropping = False
        self._calls_without_yield = 0
        self._pusher: PushReceiver | None = None
        self._ended: anyio.Event | None = None
        self._unfed = b""
        self._feeding = False
        # The loop's own Event class, called directly: anyio.Event() looks the
        # backend up on every call, and get() makes one per wait.
        self._new_event: Callable[[], anyio.Event] = type(anyio.Event())

    # The handler's side -----------------------------------------------------------

    async def get(self) -> Data:
        """Return the next message, waiting for it if need be.

        Raises:
            ConnectionClosed: once the connection is closed and every message was read.
            RuntimeError: if another task is already waiting in :meth:`get`.
        """
        if self._getting:
            raise RuntimeError("recv() is already waiting for the next message in another task")
        messages = self._messages
        if messages:
            message = messages.popleft()
            self._after_get()
            await self._checkpoint_without_waiting()
            return message
        self._getting = True
        try:
            while not messages:
                if self._finished:
                    raise self._closed_exception()
                waiter = self._message_waiter = self._new_event()
                await waiter.wait()
        finally:
            self._getting = False
            self._message_waiter = None
        message = messages.popleft()
        self._after_get()
        return message

    async def _checkpoint_without_waiting(self) -> None:
        """Checkpoint a get() that found its message: cheaply, yielding now and then.

        Cancellation is seen at once; a real turn of the loop comes every
        :data:`MAX_CALLS_WITHOUT_YIELD` calls, so a handler that keeps finding
        messages queued cannot starve the other tasks, and the common case
        costs no task switch.
        """
        self._calls_without_yield += 1
        if self._calls_without_yield < MAX_CALLS_WITHOUT_YIELD:
            await anyio.lowlevel.checkpoint_if_cancelled()
        else:
            self._calls_without_yield = 0
            await anyio.lowlevel.checkpoint()

    def _after_get(self) -> None:
        if len(self._messages) < self._low_water:
            room = self._room
            if room is not None:
                self._room = None
                room.set()
            if self._pusher is not None:
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
        if self._close_timeout is not None:
            deadline = anyio.current_time() + self._close_timeout
            if deadline < self._deadline:
                self._deadline = deadline
                if self._scope is not None:
                    self._scope.deadline = deadline
        self._wake_reader()

    def stop(self) -> None:
        """Stop reading now: the connection is being dropped."""
        self._stopped = True
        self._pusher = None
        if self._scope is not None:
            self._scope.cancel()
        self._wake_reader()

    def _wake_reader(self) -> None:
        room = self._room
        if room is not None:
            self._room = None
            room.set()
        if self._pusher is not None:
            self._resume_pushed()

    def _resume_pushed(self) -> None:
        if self._feeding:
            return  # called back from the feeding below: it carries on by itself
        if self._unfed:
            self._feed_unfed()
        self._after_push()

    # The receiving task -----------------------------------------------------------

    async def pump(self) -> None:
        """Feed the core until the connection is closed; the only reader of the stream.

        Returns once the core is closed (the peer closed TCP), the close
        timeout expired, or :meth:`stop` was called; the core is closed then.
        """
        core = self._core
        stream = self._stream
        read_limit = self._read_limit
        compressed = bool(core.extensions)
        try:
            with anyio.CancelScope(deadline=self._deadline) as scope:
                self._scope = scope
                if self._stopped:
                    scope.cancel()
                # Frames that arrived with the handshake request are parsed already.
                self._take_events()
                pusher = push_receiver(stream)
                if pusher is not None:
                    await self._receive_pushed(pusher)
                while core.state is not State.CLOSED:
                    if self._full() and core.state is State.OPEN:
                        await self._wait_for_room()
                        continue
                    try:
                        data = await stream.receive(read_limit)
                    except _READ_ERRORS:
                        core.receive_eof()
                        self._take_events()
                        break
                    if compressed:
                        await self._feed_in_slices(data)
                    else:
                        core.receive_data(data)
                        self._take_events()
            if scope.cancelled_caught and not self._stopped:
                self._logger.info(
                    "closing handshake timed out after %ss", self._close_timeout
                )
        finally:
            self._scope = None
            self._finished = True
            if core.state is not State.CLOSED:
                core.receive_eof()  # dropped without a closing handshake: 1006
            waiter = self._message_waiter
            if waiter is not None:
                waiter.set()

    # Push mode (asyncio's lean stream) -------------------------------------------

    async def _receive_pushed(self, pusher: PushReceiver) -> None:
        """Let the stream feed the core from asyncio's callback; wait for the end.

        The same receiving side as the loop in :meth:`pump`, driven by the
        transport instead of a read: each chunk is fed to the core where it
        arrives, so a message reaches a waiting ``recv()`` in one turn of the
        loop. Back-pressure pauses the transport's reading.
        """
        ended = self._ended = self._new_event()
        self._pusher = pusher
        pusher.push_to(self._on_pushed_data, self._on_pushed_end)
        if self._core.state is not State.CLOSED:
            await ended.wait()

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
            self._pusher = None
            if self._ended is not None:
                self._ended.set()
        elif self._unfed or (self._full() and core.state is State.OPEN):
            pusher.pause_pushing()
        else:
            pusher.resume_pushing()

    def _take_events(self) -> None:
        """Act on what the core received: queue messages, answer, note pongs and closes."""
        core = self._core
        for frame in core.events_received():
            self._take_frame(frame)  # type: ignore[arg-type]  # after the handshake: frames only
        self._outbox.push()  # pongs and the close echo leave first
        if core.close_expected():
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
        waiter = self._message_waiter
        if waiter is not None:
            self._message_waiter = None
            waiter.set()

    def _full(self) -> bool:
        return self._max_queue is not None and len(self._messages) >= self._max_queue

    async def _wait_for_room(self) -> None:
        """Back-pressure: stop reading until the handler has read the queue down."""
        while self._full() and self._core.state is State.OPEN and not self._stopped:
            room = self._room = self._new_event()
            await room.wait()

    async def _feed_in_slices(self, data: bytes) -> None:
        """Feed compressed bytes a slice at a time, waiting for room between slices."""
        core = self._core
        for start in range(0, len(data), INFLATE_SLICE_BYTES):
            if self._full() and core.state is State.OPEN:
                await self._wait_for_room()
            core.receive_data(data[start:start + INFLATE_SLICE_BYTES])
            self._take_events()
