"""The connection object a handler receives: one anyio I/O layer for Trio and asyncio.

It drives a :class:`wsserver.sansio.ServerConnection` over an
:class:`anyio.abc.ByteStream`. Every timeout is a cancel scope; every task it
starts lives in the connection's own task group.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import platform
import time
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio
import anyio.abc
from anyio.abc import SocketAttribute

from . import __version__
from .sansio import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    Frame,
    Headers,
    InvalidState,
    Opcode,
    Origin,
    Request,
    Response,
    ServerConnection,
    State,
    Subprotocol,
)
from .sansio.connection import LARGE_PAYLOAD_BYTES
from .sansio.extensions import ServerExtensionFactory
from .sansio.frames import CloseCode, parse_close
from .sansio.handshake import select_subprotocol as default_select_subprotocol

if TYPE_CHECKING:
    from .server import WebSocketServer

__all__ = [
    "Data",
    "HTTPResponse",
    "LoggerLike",
    "WebSocketServerProtocol",
]

Data: TypeAlias = "str | bytes"
"""A WebSocket message: text as :class:`str`, binary as :class:`bytes`."""

LoggerLike: TypeAlias = "logging.Logger | logging.LoggerAdapter[logging.Logger]"

HeadersLikeOrCallable: TypeAlias = (
    "Headers | Mapping[str, str] | Iterable[tuple[str, str]]"
    " | Callable[[str, Headers], Headers | Mapping[str, str] | Iterable[tuple[str, str]]]"
)

HTTPResponse: TypeAlias = (
    "tuple[HTTPStatus | int, Headers | Mapping[str, str] | Iterable[tuple[str, str]], bytes]"
)
"""What ``process_request`` returns to answer a request itself: status, headers, body."""

ProcessRequest: TypeAlias = Callable[
    [str, Headers], "HTTPResponse | Awaitable[HTTPResponse | None] | None"
]
SelectSubprotocol: TypeAlias = Callable[
    [Sequence[Subprotocol], Sequence[Subprotocol]], "Subprotocol | None"
]
Handler: TypeAlias = Callable[..., Awaitable[Any]]

DEFAULT_SERVER_HEADER: str = f"Python/{platform.python_version()} wsserver/{__version__}"
_OK_CODES = {CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY}

INFLATE_SLICE_BYTES = 1024
"""Compressed bytes fed to the protocol at a time, between checks of ``max_queue``."""

HANDLER_READ_GRACE = 0.1
"""Seconds the background reader leaves the socket to a handler that calls recv().

The wait doubles, up to :data:`HANDLER_READ_GRACE_MAX`, while the handler keeps
receiving, and starts again from here once it stops.
"""

HANDLER_READ_GRACE_MAX = 1.0


class _ConnectionAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every log line with the connection's short id."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        websocket: Any = (self.extra or {}).get("websocket")
        return f"[{str(websocket.id)[:8]}] {msg}", kwargs


class PongWaiter:
    """Awaitable returned by :meth:`WebSocketServerProtocol.ping`.

    Awaiting it returns the round-trip time in seconds once the matching pong
    arrives, or raises :class:`~wsserver.sansio.ConnectionClosed` if the
    connection closes first.
    """

    __slots__ = ("_event", "_latency", "_owner", "sent_at")

    def __init__(self, owner: WebSocketServerProtocol) -> None:
        self._owner = owner
        self._event = anyio.Event()
        self._latency: float | None = None
        self.sent_at = time.monotonic()

    def _resolve(self, latency: float | None) -> None:
        self._latency = latency
        self._event.set()

    def done(self) -> bool:
        """Tell whether the pong arrived or the connection closed."""
        return self._event.is_set()

    async def wait(self) -> float:
        """Wait for the pong; return the latency in seconds.

        :raises ConnectionClosed: if the connection closed before the pong.
        """
        await self._event.wait()
        if self._latency is None:
            raise self._owner._closed_exception()
        return self._latency

    def __await__(self) -> Any:
        return self.wait().__await__()


class WebSocketServerProtocol:
    """One WebSocket connection on the server side: the object a handler receives.

    Users rarely build one: :func:`wsserver.serve` does, with the options it
    was given. Subclass it and pass ``create_protocol=`` to customise
    :meth:`process_request` or :meth:`select_subprotocol`.

    :param ws_handler: the coroutine function serving the connection.
    :param ws_server: the :class:`~wsserver.server.WebSocketServer` it belongs to.
    """

    is_client = False

    def __init__(
        self,
        ws_handler: Handler,
        ws_server: WebSocketServer,
        *,
        logger: LoggerLike | None = None,
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
    ) -> None:
        self.ws_handler = ws_handler
        self.ws_server = ws_server
        self.origins = origins
        self.available_extensions = extensions
        self.available_subprotocols = subprotocols
        self.extra_headers = extra_headers
        self.server_header = server_header
        self._process_request = process_request
        self._select_subprotocol = select_subprotocol
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.close_timeout = close_timeout
        self.max_size = max_size
        self.max_queue = max_queue
        self.read_limit = read_limit
        self.write_limit = write_limit

        self.protocol = ServerConnection(
            origins=origins,
            extensions=extensions,
            subprotocols=subprotocols,
            max_size=max_size,
            logger=logging.getLogger("wsserver.server") if logger is None else logger,
            select_subprotocol=self.select_subprotocol,
        )
        self.id = self.protocol.id
        """Unique identifier of the connection, useful in logs."""
        base_logger = logger if logger is not None else logging.getLogger("wsserver.server")
        self.logger: LoggerLike = _ConnectionAdapter(
            base_logger,
            {"websocket": self},
        )
        """Logger for this connection; lines carry the connection id."""
        self.protocol.logger = self.logger

        self.path: str = ""
        """The request path (and query string), once the request arrived."""
        self.request_headers: Headers = Headers()
        """The handshake request's headers."""
        self.response_headers: Headers = Headers()
        """The handshake response's headers."""
        self.latency: float = 0.0
        """Round-trip time of the latest keepalive ping, in seconds."""

        self._stream: anyio.abc.ByteStream | None = None
        self._messages: deque[Data] = deque()
        self._fragments: list[bytes] = []
        self._message_waiter: anyio.Event | None = None
        self._reading_paused: anyio.Event | None = None
        self._writing = False
        self._write_done: anyio.Event | None = None
        self._sending_fragments: anyio.Event | None = None
        self._pings: dict[bytes, PongWaiter] = {}
        self._closed_event = anyio.Event()
        self._close_timer_started = False
        # The loop's own Event class, called directly: anyio.Event() looks the
        # backend up on every call, and recv() makes one per wait.
        self._new_event: Callable[[], anyio.Event] = type(self._closed_event)
        self._task_group: anyio.abc.TaskGroup | None = None
        self._flush_scheduled = False
        self._in_recv = False
        self._reader_running = False
        self._unfed = b""
        self._recv_called = False
        self._reading = False
        self._reader_idle: anyio.Event | None = None
        self._reader_kick: anyio.Event | None = None

    # Properties -------------------------------------------------------------------

    @property
    def local_address(self) -> Any:
        """The local socket address (host, port) or Unix path; ``None`` before the stream."""
        if self._stream is None:
            return None
        return self._stream.extra(SocketAttribute.local_address, None)

    @property
    def remote_address(self) -> Any:
        """The peer's socket address: (host, port) for TCP, usually ``""`` for Unix sockets.

        ``None`` before the connection has a stream.
        """
        if self._stream is None:
            return None
        return self._stream.extra(SocketAttribute.remote_address, None)

    @property
    def state(self) -> State:
        """The connection's :class:`~wsserver.sansio.State`."""
        return self.protocol.state

    @property
    def open(self) -> bool:
        """True while messages can be exchanged."""
        return self.protocol.state is State.OPEN

    @property
    def closed(self) -> bool:
        """True once the connection is closed (whether the close was clean or not)."""
        return self.protocol.state is State.CLOSED

    @property
    def subprotocol(self) -> Subprotocol | None:
        """The negotiated subprotocol, or ``None``."""
        return self.protocol.subprotocol

    @property
    def close_code(self) -> int | None:
        """The close code received (1006 if none); ``None`` until closed."""
        return self.protocol.close_code

    @property
    def close_reason(self) -> str | None:
        """The close reason received; ``None`` until closed."""
        return self.protocol.close_reason

    # Hooks ------------------------------------------------------------------------

    async def process_request(
        self, path: str, request_headers: Headers
    ) -> HTTPResponse | None:
        """Intercept the handshake request before it is validated.

        Return ``None`` to carry on with the WebSocket handshake, or a
        ``(status, headers, body)`` tuple to answer with that HTTP response
        instead (a health check, a page, a 401...). The default calls the
        ``process_request`` option, if any, which may be sync or async.

        :param path: the request path and query string.
        :param request_headers: the request's headers.
        """
        if self._process_request is None:
            return None
        result = self._process_request(path, request_headers)
        if inspect.isawaitable(result):
            result = await result
        return result

    def select_subprotocol(
        self,
        client_subprotocols: Sequence[Subprotocol],
        server_subprotocols: Sequence[Subprotocol],
    ) -> Subprotocol | None:
        """Pick the subprotocol for this connection.

        The default calls the ``select_subprotocol`` option if given, else
        picks the server's most preferred subprotocol that the client offers.

        :returns: the subprotocol, or ``None`` to proceed without one.
        """
        if self._select_subprotocol is not None:
            return self._select_subprotocol(client_subprotocols, server_subprotocols)
        return default_select_subprotocol(client_subprotocols, server_subprotocols)

    # Receiving --------------------------------------------------------------------

    async def recv(self) -> Data:
        """Receive the next message: :class:`str` for text, :class:`bytes` for binary.

        Waits until a message arrives. Fragmented messages are reassembled.

        :raises ConnectionClosedOK: once the connection closed normally.
        :raises ConnectionClosedError: once it closed with an error.
        :raises RuntimeError: if another task is already waiting in recv().
        """
        if self._in_recv:
            raise RuntimeError("recv() is already waiting for the next message in another task")
        self._in_recv = True
        self._recv_called = True
        try:
            messages = self._messages
            while not messages:
                if self._closed_event.is_set():
                    raise self._closed_exception()
                if self._reading or self.protocol.state is State.CLOSED:
                    # The background reader has the socket: wait for what it delivers.
                    waiter = self._message_waiter = self._new_event()
                    await waiter.wait()
                else:
                    # Read in this task: no hand-over between tasks per message.
                    await self._read_chunk()
            message = messages.popleft()
        finally:
            self._in_recv = False
            # Also on the way out: the background reader, woken by the chunk
            # just read, must not mistake a receiving handler for an absent one.
            self._recv_called = True
            if not self._reader_running:
                self._start_reader()
            self._message_waiter = None
        if self._reading_paused is not None and len(messages) < self._queue_low_water():
            self._reading_paused.set()
            self._reading_paused = None
        return message

    def __aiter__(self) -> AsyncIterator[Data]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Data]:
        """Yield messages until the connection closes; quietly on 1000/1001."""
        try:
            while True:
                yield await self.recv()
        except ConnectionClosedOK:
            return

    def _queue_low_water(self) -> int:
        return max(1, (self.max_queue or 1) // 4)

    # Sending ----------------------------------------------------------------------

    async def send(
        self,
        message: Data | bytearray | memoryview | Iterable[Data] | AsyncIterable[Data],
    ) -> None:
        """Send a message.

        A :class:`str` goes as a text frame; a bytes-like object as a binary
        frame; an iterable or async iterable of them as one fragmented message,
        one frame per item (all items of the same kind).

        Waits while more than ``write_limit`` bytes are buffered.

        :raises ConnectionClosed: if the connection is closed.
        :raises TypeError: for any other type, or fragments of mixed kinds.
        """
        if isinstance(message, str):
            await self._send_one(self.protocol.send_text, message.encode())
        elif isinstance(message, (bytes, bytearray, memoryview)):
            await self._send_one(self.protocol.send_binary, bytes(message))
        elif isinstance(message, Mapping):
            raise TypeError("data is a dict-like object")
        elif isinstance(message, AsyncIterable):
            await self._send_fragments(message.__aiter__())
        elif isinstance(message, Iterable):
            await self._send_fragments(_as_async(iter(message)))
        else:
            raise TypeError(f"data must be str, bytes-like or iterable, not {type(message)}")

    async def _send_one(self, send: Callable[[bytes], None], data: bytes) -> None:
        while self._sending_fragments is not None:
            await self._sending_fragments.wait()
        self._queue_frame(send, data)
        await self._flush()

    def _queue_frame(self, send: Callable[..., None], *args: Any) -> None:
        try:
            send(*args)
        except InvalidState:
            raise self._closed_exception() from None

    async def _send_fragments(self, fragments: AsyncIterator[Any]) -> None:
        while self._sending_fragments is not None:
            await self._sending_fragments.wait()
        try:
            first = await fragments.__anext__()
        except StopAsyncIteration:
            return
        done = self._sending_fragments = anyio.Event()
        try:
            if isinstance(first, str):
                kind: type = str
                self._queue_frame(self.protocol.send_text, first.encode(), False)
            elif isinstance(first, (bytes, bytearray, memoryview)):
                kind = bytes
                self._queue_frame(self.protocol.send_binary, bytes(first), False)
            else:
                raise TypeError("message fragments must be str or bytes-like")
            await self._flush()
            async for fragment in fragments:
                if kind is str and isinstance(fragment, str):
                    data = fragment.encode()
                elif kind is bytes and isinstance(fragment, (bytes, bytearray, memoryview)):
                    data = bytes(fragment)
                else:
                    raise TypeError("message fragments must all be str or all bytes-like")
                self._queue_frame(self.protocol.send_continuation, data, False)
                await self._flush()
            self._queue_frame(self.protocol.send_continuation, b"", True)
            await self._flush()
        except BaseException:
            # A half-sent message cannot be completed: fail the connection.
            if self.protocol.state is State.OPEN:
                self.protocol.fail(CloseCode.INTERNAL_ERROR, "error in fragmented message")
                await self._flush_quietly()
            raise
        finally:
            self._sending_fragments = None
            done.set()

    async def _flush(self) -> None:
        """Write everything the protocol queued, in order, one writer at a time."""
        while self._writing:
            # Another task is writing; if it does not take our bytes too, we
            # write them once it is done.
            if self._write_done is None:
                self._write_done = self._new_event()
            await self._write_done.wait()
        chunks = self.protocol.data_to_send()
        if not chunks:
            return
        stream = self._stream
        assert stream is not None
        self._writing = True
        try:
            if len(chunks) == 1 and chunks[0]:  # the common case: one frame
                await stream.send(chunks[0])
                return
            for chunk in _coalesce(chunks):
                if chunk:
                    await stream.send(chunk)
                else:
                    try:
                        await stream.send_eof()
                    except NotImplementedError:
                        # TLS cannot half-close. Closing outright is what the
                        # peer waits for: the server closes TCP first.
                        await stream.aclose()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            # The peer is gone; the reader will notice and close.
            self.protocol.receive_eof()
            raise self._closed_exception() from None
        finally:
            self._writing = False
            done, self._write_done = self._write_done, None
            if done is not None:
                done.set()

    async def _flush_quietly(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._flush()

    def _schedule_flush(self) -> None:
        """Write queued bytes from a task of the connection's own task group."""
        if self._flush_scheduled or self._task_group is None:
            return
        self._flush_scheduled = True

        async def flush_later() -> None:
            self._flush_scheduled = False
            await self._flush_quietly()

        self._task_group.start_soon(flush_later)

    def buffered_amount(self) -> int:
        """Bytes queued by the protocol but not yet handed to the socket."""
        return self.protocol.bytes_to_send()

    async def ping(self, data: str | bytes | None = None) -> PongWaiter:
        """Send a ping; return a :class:`PongWaiter` to await the matching pong.

        :param data: the payload (at most 125 bytes); random when ``None``.
        :raises ConnectionClosed: if the connection is closed.
        :raises ValueError: if a ping with the same payload is already waiting,
            or if the payload is longer than 125 bytes.
        """
        if data is None:
            payload = _unused_ping_payload(self._pings)
        else:
            payload = data.encode() if isinstance(data, str) else bytes(data)
        if payload in self._pings:
            raise ValueError("already waiting for a pong with the same data")
        waiter = PongWaiter(self)
        self._queue_frame(self.protocol.send_ping, payload)
        self._pings[payload] = waiter
        await self._flush()
        return waiter

    async def pong(self, data: str | bytes = b"") -> None:
        """Send an unsolicited pong.

        :raises ConnectionClosed: if the connection is closed.
        :raises ValueError: if ``data`` is longer than 125 bytes.
        """
        payload = data.encode() if isinstance(data, str) else bytes(data)
        self._queue_frame(self.protocol.send_pong, payload)
        await self._flush()

    # Closing ----------------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Perform the closing handshake and wait for the connection to close.

        If the client does not complete the handshake within ``close_timeout``
        seconds, the TCP connection is dropped. Idempotent.

        :param code: the close code.
        :param reason: the close reason.
        :raises ValueError: if ``code`` may not be sent in a close frame, or
            ``reason`` is longer than 123 bytes once encoded.
        """
        if self.protocol.state is State.OPEN:
            with contextlib.suppress(InvalidState):
                self.protocol.send_close(code, reason)
            # Started before writing: a peer that does not read could block the write.
            self._start_close_timer()
            self._kick_reader()
            await self._flush_quietly()
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed, TCP included."""
        await self._closed_event.wait()

    def _closed_exception(self) -> ConnectionClosed:
        if self.protocol.state is State.CLOSED:
            return self.protocol.close_exc
        # Not closed yet, but no longer usable: report what we know so far.
        return ConnectionClosedError(self.protocol.close_rcvd, self.protocol.close_sent)

    async def _abort(self, *, flush_timeout: float = 0.0) -> None:
        """Drop the TCP connection, letting queued bytes flush for ``flush_timeout`` seconds.

        Bounded because closing a stream may wait for its buffer to drain
        (asyncio does), which never happens when the peer stopped reading.
        """
        if self._stream is not None:
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = anyio.current_time() + flush_timeout
                await self._stream.aclose()
        self.protocol.receive_eof()

    # Running the connection -------------------------------------------------------

    async def run(self, stream: anyio.abc.ByteStream) -> None:
        """Serve one connection on ``stream``: handshake, handler, closing handshake.

        Returns once the TCP connection is closed. Never raises, except to
        propagate cancellation.
        """
        self._stream = stream
        try:
            async with anyio.create_task_group() as task_group:
                self._task_group = task_group
                try:
                    opened = await self._open()
                except anyio.get_cancelled_exc_class():
                    raise
                except Exception:
                    self.logger.error("opening handshake failed", exc_info=True)
                    opened = False
                if not opened:
                    # Linger only if a rejection is on its way to the client;
                    # after a timeout or an EOF there is nothing left to read.
                    if self.protocol.state is State.CLOSING:
                        await self._close_stream_after_handshake()
                    task_group.cancel_scope.cancel()
                    return
                self._start_reader()
                if self.ping_interval is not None:
                    task_group.start_soon(self._keepalive)
                await self._run_handler()
                await self._close_with_timeout()
                task_group.cancel_scope.cancel()
        finally:
            self._task_group = None
            await self._abort(flush_timeout=_forever(self.close_timeout))
            self._connection_closed()

    async def _open(self) -> bool:
        """Run the opening handshake within ``open_timeout``; tell whether it succeeded."""
        with anyio.move_on_after(_forever(self.open_timeout)) as scope:
            request = await self._read_request()
            if request is None:
                return False
            response = await self._build_response(request)
            # Whoever recorded why the handshake failed (the protocol's checks,
            # an auth hook) logged it already: one line per refusal.
            explained = self.protocol.handshake_exc is not None
            self.response_headers = response.headers
            self.protocol.send_response(response)
            await self._flush()
            if self.protocol.state is State.OPEN:
                self.logger.info(
                    "connection open: %s from %s", self.path, _address(self.remote_address)
                )
                return True
            if not explained:
                # A 2xx/3xx from process_request is an answer (a page, a health
                # check), not a refusal: say which.
                what = "rejected" if response.status_code >= 400 else "answered over HTTP"
                self.logger.info(
                    "%s %s (%d %s)", self.path, what, response.status_code,
                    response.reason_phrase,
                )
            return False
        if scope.cancelled_caught:
            self.logger.info("opening handshake timed out after %ss", self.open_timeout)
        return False

    async def _read_request(self) -> Request | None:
        stream = self._stream
        assert stream is not None
        protocol = self.protocol
        while True:
            for event in protocol.events_received():
                if isinstance(event, Request):
                    return event
            if protocol.handshake_exc is not None:
                await self._flush_quietly()
                return None
            try:
                data = await stream.receive(self.read_limit)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                protocol.receive_eof()
                self.logger.debug("connection closed during the opening handshake")
                return None
            protocol.receive_data(data)

    async def _build_response(self, request: Request) -> Response:
        self.path = request.path
        self.request_headers = request.headers
        server = self.ws_server
        if server.is_closing():
            response = self.protocol.reject(
                HTTPStatus.SERVICE_UNAVAILABLE, "Server is shutting down.\n"
            )
        else:
            try:
                response = await self._accept_or_answer(request)
            except Exception as exc:
                # A user's hook failed: answer 500, keep serving everyone else.
                self.logger.error("handshake hook failed", exc_info=True)
                self.protocol.handshake_exc = exc
                response = self.protocol.reject(
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    "Failed to open a WebSocket connection.\n"
                    "See server log for more information.\n",
                )
        if self.server_header is not None and "Server" not in response.headers:
            response.headers["Server"] = self.server_header
        return response

    async def _accept_or_answer(self, request: Request) -> Response:
        """Let process_request answer the request, else run the handshake checks."""
        answer = await self.process_request(request.path, request.headers)
        if answer is not None:
            status, headers, body = answer
            status = HTTPStatus(status)
            return Response(status.value, status.phrase, Headers(headers), body)
        response = self.protocol.accept(request)
        if self.protocol.handshake_exc is None and response.status_code == 101:
            self._add_extra_headers(response.headers)
        return response

    def _add_extra_headers(self, headers: Headers) -> None:
        extra = self.extra_headers
        if extra is None:
            return
        if callable(extra):
            extra = extra(self.path, self.request_headers)
        headers.update(extra)

    async def _close_stream_after_handshake(self) -> None:
        """After a rejection: half-close, give the client a moment to read, close."""
        await self._flush_quietly()
        stream = self._stream
        assert stream is not None
        with anyio.move_on_after(_forever(self.close_timeout)):
            try:
                while await stream.receive(self.read_limit):
                    pass
            except (anyio.EndOfStream, anyio.BrokenResourceError,
                    anyio.ClosedResourceError, OSError):
                pass

    async def _run_handler(self) -> None:
        try:
            if _takes_path(self.ws_handler):
                await self.ws_handler(self, self.path)
            else:
                await self.ws_handler(self)
        except ConnectionClosed:
            pass  # the peer went away while the handler was talking to it
        except Exception:
            self.logger.error("connection handler failed", exc_info=True)
            if self.protocol.state is State.OPEN:
                self._queue_frame(self.protocol.send_close, CloseCode.INTERNAL_ERROR, "")
        finally:
            if self.protocol.state is State.OPEN:
                with anyio.CancelScope(shield=True):
                    with contextlib.suppress(InvalidState):
                        self.protocol.send_close(CloseCode.NORMAL_CLOSURE, "")

    async def _close_with_timeout(self) -> None:
        self._start_close_timer()
        self._kick_reader()
        await self._flush_quietly()
        await self._closed_event.wait()

    def _start_close_timer(self) -> None:
        """Drop TCP unless the connection closes within ``close_timeout``; once per connection.

        Whoever starts the closing handshake (:meth:`close`, the end of the
        handler, a protocol error, the peer's close frame) starts the timer.
        """
        if self._close_timer_started or self._task_group is None:
            return
        self._close_timer_started = True
        self._task_group.start_soon(self._close_timer)

    async def _close_timer(self) -> None:
        with anyio.move_on_after(_forever(self.close_timeout)):
            await self._closed_event.wait()
            return
        self.logger.info("closing handshake timed out after %ss", self.close_timeout)
        await self._abort()
        self._connection_closed()

    async def _read_chunk(self) -> None:
        """Read once from the socket and act on it; the caller must hold no read."""
        stream = self._stream
        assert stream is not None
        protocol = self.protocol
        self._reading = True
        try:
            data, self._unfed = self._unfed, b""
            if not data:
                try:
                    data = await stream.receive(self.read_limit)
                except (anyio.EndOfStream, anyio.BrokenResourceError,
                        anyio.ClosedResourceError, OSError):
                    protocol.receive_eof()
            if not protocol.extensions:
                if data:
                    protocol.receive_data(data)
                self._handle_events(protocol.events_received())
            else:
                self._feed_inflating(data)
            if protocol.close_expected():
                self._start_close_timer()
            if protocol.has_data_to_send():
                await self._flush_quietly()
        finally:
            self._reading = False
            idle, self._reader_idle = self._reader_idle, None
            if idle is not None:
                idle.set()
        if protocol.state is State.CLOSED:
            self._connection_closed()

    def _feed_inflating(self, data: bytes) -> None:
        """Feed compressed bytes a slice at a time, stopping once the queue is full.

        A few bytes of DEFLATE can inflate to a thousand times as many: fed
        whole, one read could queue far more than ``max_queue`` messages. Bytes
        left over wait in ``_unfed`` until the handler catches up.
        """
        protocol = self.protocol
        max_queue = self.max_queue
        for start in range(0, len(data), INFLATE_SLICE_BYTES):
            if max_queue is not None and len(self._messages) >= max_queue:
                self._unfed = data[start:]
                return
            protocol.receive_data(data[start:start + INFLATE_SLICE_BYTES])
            self._handle_events(protocol.events_received())
        self._handle_events(protocol.events_received())  # after an EOF, or no data

    def _kick_reader(self) -> None:
        """Make the background reader read now rather than leave the socket to recv()."""
        self._recv_called = False
        self._start_reader()
        kick, self._reader_kick = self._reader_kick, None
        if kick is not None:
            kick.set()

    async def _read_loop(self) -> None:
        """Read whenever the handler does not: pongs, pings and closes must not wait.

        While the handler keeps calling :meth:`recv`, recv() reads the socket
        itself and this task only looks in every :data:`HANDLER_READ_GRACE`
        seconds; when the handler is busy elsewhere, this task reads and
        queues messages, up to ``max_queue`` of them.
        """
        protocol = self.protocol
        max_queue = self.max_queue
        messages = self._messages
        grace = HANDLER_READ_GRACE
        try:
            while protocol.state is not State.CLOSED:
                if self._recv_called:
                    # The handler reads by itself. Look again later, and later
                    # still each time it keeps doing so: a busy connection then
                    # costs this task about one wake-up a second.
                    self._recv_called = False
                    kick = self._reader_kick = self._new_event()
                    with anyio.move_on_after(grace):
                        await kick.wait()
                    self._reader_kick = None  # do not keep it for an idle connection
                    grace = min(grace * 2, HANDLER_READ_GRACE_MAX)
                    continue
                grace = HANDLER_READ_GRACE
                if self._reading:
                    # The handler waits in recv() and reads for itself: this
                    # task is not needed until recv() returns, which starts it
                    # again. Ending it frees its memory on idle connections.
                    return
                elif max_queue is not None and len(messages) >= max_queue:
                    # Back-pressure: the handler is behind; stop reading the socket.
                    paused = self._reading_paused = self._new_event()
                    await paused.wait()
                else:
                    await self._read_chunk()
        finally:
            self._reader_running = False
            if protocol.state is State.CLOSED:
                self._connection_closed()

    def _start_reader(self) -> None:
        """Start the background reader unless it runs already or nothing is left to read."""
        if (
            self._reader_running
            or self._task_group is None
            or self.protocol.state is State.CLOSED
        ):
            return
        self._reader_running = True
        self._task_group.start_soon(self._read_loop)

    def _handle_events(self, events: list[Any]) -> None:
        for frame in events:
            opcode = frame.opcode
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY or opcode is Opcode.CONT:
                if not frame.fin:
                    self._fragments.append(frame.data)
                    if opcode is not Opcode.CONT:
                        self._fragment_opcode = opcode
                    continue
                if opcode is Opcode.CONT:
                    self._fragments.append(frame.data)
                    data = b"".join(self._fragments)
                    self._fragments.clear()
                    opcode = self._fragment_opcode
                else:
                    data = frame.data
                message: Data = data.decode() if opcode is Opcode.TEXT else data
                self._messages.append(message)
                waiter = self._message_waiter
                if waiter is not None:
                    self._message_waiter = None
                    waiter.set()
            elif opcode is Opcode.PONG:
                self._receive_pong(frame)
            elif opcode is Opcode.CLOSE:
                self._log_close(frame)

    def _receive_pong(self, frame: Frame) -> None:
        waiter = self._pings.pop(frame.data, None)
        if waiter is None:
            return
        now = time.monotonic()
        # A pong answers its ping and every ping sent before it (RFC 6455 5.5.3).
        for key, earlier in list(self._pings.items()):
            if earlier.sent_at <= waiter.sent_at:
                del self._pings[key]
                earlier._resolve(now - earlier.sent_at)
        waiter._resolve(now - waiter.sent_at)

    def _log_close(self, frame: Frame) -> None:
        try:
            code, reason = parse_close(frame.data)
        except Exception:  # the protocol already failed the connection for it
            return
        level = logging.DEBUG if code in _OK_CODES or code == 1005 else logging.INFO
        self.logger.log(level, "client closed the connection: %d %s", code, reason)

    async def _keepalive(self) -> None:
        assert self.ping_interval is not None
        while True:
            await anyio.sleep(self.ping_interval)
            if self.protocol.state is not State.OPEN:
                return
            # The timeout covers sending the ping too: a client that stopped
            # reading blocks our writes, and must not escape the keepalive.
            with anyio.move_on_after(_forever(self.ping_timeout)):
                try:
                    waiter = await self.ping()
                    self.latency = await waiter
                except ConnectionClosed:
                    return
                continue
            self.logger.info("no pong within %ss: closing with 1011", self.ping_timeout)
            if self.protocol.state is State.OPEN:
                self.protocol.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                if not self._writing:  # else the socket is stuck: do not wait on it
                    await self._flush_quietly()
            await self._abort()
            self._connection_closed()
            return

    def _connection_closed(self) -> None:
        if self._closed_event.is_set():
            return
        if self.protocol.state is not State.CLOSED:
            self.protocol.receive_eof()
        self._closed_event.set()
        for waiter in self._pings.values():
            waiter._resolve(None)
        self._pings.clear()
        for event in (
            self._message_waiter, self._reading_paused, self._reader_idle, self._reader_kick
        ):
            if event is not None:
                event.set()
        if self.protocol.handshake_exc is None and self.protocol.state is State.CLOSED:
            self.logger.info("connection closed: %s", self.protocol.close_exc)


async def _as_async(iterator: Iterable[Any]) -> AsyncIterator[Any]:
    for item in iterator:
        yield item


def _coalesce(chunks: list[bytes]) -> list[bytes]:
    """Join consecutive small chunks so that one write carries them; keep EOF markers.

    Large chunks (payloads queued apart from their header) are written as they
    are: joining them would copy them.
    """
    if len(chunks) == 1:
        return chunks
    out: list[bytes] = []
    pending: list[bytes] = []
    for chunk in chunks:
        if len(chunk) >= LARGE_PAYLOAD_BYTES:
            if pending:
                out.append(b"".join(pending))
                pending = []
            out.append(chunk)
        elif chunk:
            pending.append(chunk)
        else:
            if pending:
                out.append(b"".join(pending))
                pending = []
            out.append(b"")
    if pending:
        out.append(b"".join(pending))
    return out


def _forever(timeout: float | None) -> float:
    return float("inf") if timeout is None else timeout


def _address(address: Any) -> str:
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return str(address or "unix socket")


def _takes_path(handler: Callable[..., Any]) -> bool:
    """Tell whether a handler has the legacy ``handler(websocket, path)`` signature.

    Cached per handler: inspecting a signature for every connection showed in
    handshake profiles.
    """
    try:
        return _takes_path_cached(handler)
    except TypeError:  # an unhashable callable
        return _inspect_takes_path(handler)


def _inspect_takes_path(handler: Callable[..., Any]) -> bool:
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return False
    positional = [
        p for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in positional if p.default is p.empty]
    return len(required) >= 2


def _unused_ping_payload(taken: Mapping[bytes, Any]) -> bytes:
    """Four random bytes not already used as a pending ping's payload."""
    while True:
        payload = os.urandom(4)
        if payload not in taken:
            return payload


_takes_path_cached = functools.lru_cache(maxsize=256)(_inspect_takes_path)
