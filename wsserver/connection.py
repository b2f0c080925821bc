"""The connection object a handler receives: one anyio I/O layer for Trio and asyncio.

It drives a :class:`wsserver.sansio.ServerConnection` over an
:class:`anyio.abc.ByteStream`, in rooms of one responsibility each:
:mod:`~wsserver._opening` (TLS and the opening handshake),
:mod:`~wsserver._receiving` (the one task that reads),
:mod:`~wsserver._sending` (the one owner of outgoing bytes) and
:mod:`~wsserver._timers` (keepalive). This module is the public API over them.
Every timeout is a cancel scope; every task lives in the connection's own task group.
"""

from __future__ import annotations

import inspect
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.abc import SocketAttribute
from anyio.streams.tls import TLSAttribute

from . import _opening, _proxy
from ._opening import takes_path
from ._receiving import Data, Inbox
from ._sending import Outbox, send_fragments
from ._timers import Keepalive, PongWaiter, unused_ping_payload
from ._transport import aborter
from .options import (
    DEFAULT_SERVER_HEADER,
    ConnectionOptions,
    Handler,
    HeadersLikeOrCallable,
    HTTPResponse,
    LoggerLike,
    ProcessRequest,
    SelectSubprotocol,
)
from .routing import Router
from .sansio import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    Headers,
    InvalidState,
    ServerConnection,
    State,
    Subprotocol,
)
from .sansio.frames import CloseCode
from .sansio.handshake import select_subprotocol as default_select_subprotocol

if TYPE_CHECKING:
    from .server import WebSocketServer

__all__ = [
    "DEFAULT_SERVER_HEADER",
    "Data",
    "HTTPResponse",
    "Handler",
    "HeadersLikeOrCallable",
    "LoggerLike",
    "PongWaiter",
    "ProcessRequest",
    "SelectSubprotocol",
    "WebSocketServerProtocol",
]


class _ConnectionAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every log line with the connection's short id."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        websocket: Any = (self.extra or {}).get("websocket")
        return f"[{str(websocket.id)[:8]}] {msg}", kwargs


class WebSocketServerProtocol:
    """One WebSocket connection on the server side: the object a handler receives.

    Users rarely build one: :func:`wsserver.serve` does, with the options it
    was given. Subclass it and pass ``create_protocol=`` to customise
    :meth:`process_request` or :meth:`select_subprotocol`.

    Unlike the seed's class, which takes each option as a keyword argument,
    it takes them all as one validated :class:`~wsserver.options.ConnectionOptions`.

    Args:
        ws_handler: the coroutine function serving the connection.
        ws_server: the :class:`~wsserver.server.WebSocketServer` it belongs to.
        options: the connection's options; the defaults when ``None``.
    """

    is_client = False

    def __init__(
        self,
        ws_handler: Handler,
        ws_server: WebSocketServer,
        options: ConnectionOptions | None = None,
    ) -> None:
        options = ConnectionOptions() if options is None else options
        self.ws_handler = ws_handler
        self.ws_server = ws_server
        self.options = options
        """The :class:`~wsserver.options.ConnectionOptions` this connection runs with."""
        base_logger = options.logger or logging.getLogger("wsserver.server")
        self.protocol = ServerConnection(
            origins=options.origins,
            extensions=options.server_extensions,
            subprotocols=options.subprotocols,
            max_size=options.max_size,
            logger=base_logger,
            select_subprotocol=self.select_subprotocol,
        )
        self.logger: LoggerLike = _ConnectionAdapter(base_logger, {"websocket": self})
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
        self._aborted = False
        # Set by the opening handshake, before anything can send.
        self._outbox: Outbox = None  # type: ignore[assignment]
        self._inbox: Inbox | None = None
        self._sending_fragments: anyio.Event | None = None
        self._pings: dict[bytes, PongWaiter] = {}
        self._keepalive: Keepalive | None = None
        self._is_closed = False
        # Made when someone waits: an idle connection keeps no event for it.
        self._closed_event: anyio.Event | None = None

    # Properties -------------------------------------------------------------------

    @property
    def id(self) -> uuid.UUID:
        """Unique identifier of the connection, useful in logs; made when first read."""
        return self.protocol.id

    @property
    def local_address(self) -> Any:
        """The local socket address (host, port) or Unix path; ``None`` before the stream."""
        if self._stream is None:
            return None
        return self._stream.extra(SocketAttribute.local_address, None)

    @property
    def remote_address(self) -> Any:
        """The client's address: (host, port) for TCP, usually ``""`` for Unix sockets.

        With the ``proxy_headers`` option, when the TCP peer is one of
        ``forwarded_allow_ips``, the client's address as the proxies report it
        in ``Forwarded`` or ``X-Forwarded-For`` (port 0 when they give none);
        never from the headers of a peer that is not trusted.
        ``None`` before the connection has a stream.
        """
        if self._stream is None:
            return None
        peer = self._stream.extra(SocketAttribute.remote_address, None)
        if not self.options.proxy_headers:
            return peer
        return self._forwarded(peer)[0]

    @property
    def scheme(self) -> str:
        """``"wss"`` over TLS, else ``"ws"``; with ``proxy_headers``, as a trusted proxy reports it.

        A proxy's ``https`` or ``wss`` (``Forwarded: proto=``, ``X-Forwarded-Proto``)
        gives ``"wss"``, its ``http`` or ``ws`` gives ``"ws"``.
        """
        stream = self._stream
        tls = stream is not None and stream.extra(TLSAttribute.ssl_object, None) is not None
        scheme = "wss" if tls else "ws"
        if stream is None or not self.options.proxy_headers:
            return scheme
        return self._forwarded(stream.extra(SocketAttribute.remote_address, None), scheme)[1]

    def _forwarded(self, peer: Any, scheme: str = "ws") -> tuple[Any, str]:
        # Parsed on each access: rare (the open log line, the handler) and a
        # few microseconds, so not worth a cache on every connection.
        trusted = _proxy.trusted_proxies(self.options.forwarded_allow_ips)
        return _proxy.client_from_headers(peer, self.request_headers, trusted, scheme)

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
        ``process_request`` option, if any, which may be sync or async; then,
        when the handler is a :class:`~wsserver.routing.Router`, the router's
        (404 for a path it does not serve).

        Args:
            path: the request path and query string.
            request_headers: the request's headers.
        """
        hook = self.options.process_request
        if hook is not None:
            result = hook(path, request_headers)
            if inspect.isawaitable(result):
                result = await result
            if result is not None:
                return result
        if isinstance(self.ws_handler, Router):
            return await self.ws_handler.process_request(path, request_headers)
        return None

    def select_subprotocol(
        self,
        client_subprotocols: Sequence[Subprotocol],
        server_subprotocols: Sequence[Subprotocol],
    ) -> Subprotocol | None:
        """Pick the subprotocol for this connection.

        The default calls the ``select_subprotocol`` option if given, else
        picks the server's most preferred subprotocol that the client offers.

        Returns:
            The subprotocol, or ``None`` to proceed without one.
        """
        hook = self.options.select_subprotocol
        if hook is not None:
            return hook(client_subprotocols, server_subprotocols)
        return default_select_subprotocol(client_subprotocols, server_subprotocols)

    # Receiving --------------------------------------------------------------------

    async def recv(self) -> Data:
        """Receive the next message: :class:`str` for text, :class:`bytes` for binary.

        Waits until a message arrives. Fragmented messages are reassembled.
        Messages received before the connection closed are returned first.

        Raises:
            ConnectionClosedOK: once the connection closed normally.
            ConnectionClosedError: once it closed with an error.
            RuntimeError: if another task is already waiting in recv().
        """
        inbox = self._inbox
        if inbox is None:
            raise self._closed_exception()
        return await inbox.get()

    def __aiter__(self) -> AsyncIterator[Data]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Data]:
        """Yield messages until the connection closes; quietly on 1000/1001."""
        try:
            # recv() without a call per message: the inbox never changes once made.
            inbox = self._inbox
            if inbox is None:
                raise self._closed_exception()
            get = inbox.get
            while True:
                yield await get()
        except ConnectionClosedOK:
            return

    # Sending ----------------------------------------------------------------------

    async def send(
        self,
        message: Data | bytearray | memoryview | Iterable[Data] | AsyncIterable[Data],
    ) -> None:
        """Send a message.

        A :class:`str` goes as a text frame; a bytes-like object as a binary
        frame; an iterable or async iterable of them as one fragmented message,
        one frame per item (all items of the same kind).

        Waits while more than ``write_limit`` bytes are buffered. If the wait
        is cancelled, the message is still sent, whole and in order.

        Raises:
            ConnectionClosed: if the connection is closed.
            TypeError: for any other type, or fragments of mixed kinds.
        """
        # A whole message is queued and pushed here, without a call per layer:
        # this is every message's path.
        if isinstance(message, bytes):
            send, data = self.protocol.send_binary, message
        elif isinstance(message, str):
            send, data = self.protocol.send_text, message.encode()
        elif isinstance(message, (bytearray, memoryview)):
            # A copy: the caller may reuse a mutable buffer once send() returns.
            send, data = self.protocol.send_binary, bytes(message)
        elif isinstance(message, Mapping):
            raise TypeError("data is a dict-like object")
        elif isinstance(message, AsyncIterable):
            await send_fragments(self, message.__aiter__())
            return
        elif isinstance(message, Iterable):
            await send_fragments(self, _as_async(iter(message)))
            return
        else:
            raise TypeError(f"data must be str, bytes-like or iterable, not {type(message)}")
        while self._sending_fragments is not None:
            await self._sending_fragments.wait()
        try:
            send(data)
        except InvalidState:
            raise self._closed_exception() from None
        outbox = self._outbox
        outbox.push()
        await outbox.wait_after_push()

    def try_send(self, data: bytes | bytearray | memoryview, *, text: bool = False) -> bool:
        """Queue one whole, already encoded message without waiting.

        What :func:`~wsserver.broadcast` uses: the message is written as soon
        as the transport takes it, in order with every other frame.

        Args:
            data: the payload; for text, the UTF-8 encoded text.
            text: true to send a text frame, false for a binary one.

        Returns:
            Whether the message was queued: false if the connection is not
            open or is in the middle of sending a fragmented message.
        """
        if self.protocol.state is not State.OPEN or self._sending_fragments is not None:
            return False
        if text:
            self.protocol.send_text(data)
        else:
            self.protocol.send_binary(data)
        self._outbox.push()
        return True

    def _queue(self, send: Callable[..., None], *args: Any) -> None:
        try:
            send(*args)
        except InvalidState:
            raise self._closed_exception() from None

    def buffered_amount(self) -> int:
        """Bytes queued but not yet handed to the transport."""
        if self._stream is None:
            return self.protocol.bytes_to_send()
        return self._outbox.buffered()

    async def ping(self, data: str | bytes | None = None) -> PongWaiter:
        """Send a ping; return a :class:`PongWaiter` to await the matching pong.

        Args:
            data: the payload (at most 125 bytes); random when ``None``.

        Raises:
            ConnectionClosed: if the connection is closed.
            ValueError: if a ping with the same payload is already waiting,
                or if the payload is longer than 125 bytes.
        """
        if data is None:
            payload = unused_ping_payload(self._pings)
        else:
            payload = data.encode() if isinstance(data, str) else bytes(data)
        if payload in self._pings:
            raise ValueError("already waiting for a pong with the same data")
        waiter = PongWaiter(self)
        self._queue(self.protocol.send_ping, payload)
        self._pings[payload] = waiter
        self._outbox.push()
        await anyio.lowlevel.checkpoint()
        return waiter

    async def pong(self, data: str | bytes = b"") -> None:
        """Send an unsolicited pong.

        Raises:
            ConnectionClosed: if the connection is closed.
            ValueError: if ``data`` is longer than 125 bytes.
        """
        payload = data.encode() if isinstance(data, str) else bytes(data)
        self._queue(self.protocol.send_pong, payload)
        self._outbox.push()
        await anyio.lowlevel.checkpoint()

    def _receive_pong(self, payload: bytes) -> None:
        waiter = self._pings.pop(payload, None)
        if waiter is None:
            return
        now = time.monotonic()
        # A pong answers its ping and every ping sent before it (RFC 6455 5.5.3).
        for key, earlier in list(self._pings.items()):
            if earlier.sent_at <= waiter.sent_at:
                del self._pings[key]
                earlier._resolve(now - earlier.sent_at)
        waiter._resolve(now - waiter.sent_at)
        if self._keepalive is not None:
            self._keepalive.answered()

    # Closing ----------------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Perform the closing handshake and wait for the connection to close.

        If the client does not complete the handshake within ``close_timeout``
        seconds, the TCP connection is dropped. Neither unread messages nor a
        client that does not read hold it up longer. Idempotent.

        Args:
            code: the close code.
            reason: the close reason.

        Raises:
            ValueError: if ``code`` may not be sent in a close frame, or
                ``reason`` is longer than 123 bytes once encoded.
        """
        if self.protocol.state is State.OPEN:
            try:
                self.protocol.send_close(code, reason)
            except InvalidState:
                pass
            else:
                self._outbox.push()
        if self._inbox is not None:
            self._inbox.start_closing(drop_excess=True)
        await self.wait_closed()

    async def wait_closed(self) -> None:
        """Wait until the connection is closed, TCP included."""
        if self._is_closed:
            await anyio.lowlevel.checkpoint()
            return
        if self._closed_event is None:
            self._closed_event = anyio.Event()
        await self._closed_event.wait()

    def _start_closing(self) -> None:
        if self._inbox is not None:
            self._inbox.start_closing()

    def _closed_exception(self) -> ConnectionClosed:
        if self.protocol.state is State.CLOSED:
            return self.protocol.close_exc
        # Not closed yet, but no longer usable: report what we know so far.
        return ConnectionClosedError(self.protocol.close_rcvd, self.protocol.close_sent)

    def _drop(self, code: int, reason: str) -> None:
        """Fail the connection with ``code`` and stop reading: the TCP connection goes now."""
        if self.protocol.state is State.OPEN:
            self.protocol.fail(code, reason)
            self._outbox.push()
        self._connection_broken()

    def _connection_broken(self) -> None:
        """Stop reading: writing failed, or the connection is being dropped."""
        if self._inbox is not None:
            self._inbox.stop()

    # Running the connection -------------------------------------------------------

    async def run(
        self, stream: anyio.abc.ByteStream, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        """Serve one connection on ``stream``: handshake, handler, closing handshake.

        Returns once the TCP connection is closed. Never raises, except to
        propagate cancellation.

        Args:
            stream: the accepted connection.
            ssl_context: serve TLS over it, within ``open_timeout`` with the handshake.
        """
        self._stream = stream
        try:
            async with anyio.create_task_group() as task_group:
                try:
                    opened = await _opening.open_handshake(self, stream, ssl_context, task_group)
                except anyio.get_cancelled_exc_class():
                    raise
                except Exception:
                    self.logger.error("opening handshake failed", exc_info=True)
                    opened = False
                if opened:
                    options = self.options
                    assert self._stream is not None
                    self._inbox = Inbox(
                        self.protocol, self._stream, self._outbox,
                        max_queue=options.max_queue, read_limit=options.read_limit,
                        close_timeout=options.close_timeout, logger=self.logger,
                        on_pong=self._receive_pong, closed_exception=self._closed_exception,
                    )
                    if not self._inbox.receive_pushed(self._end_pushed):
                        task_group.start_soon(self._receive)
                    if options.ping_interval is not None:
                        keepalive = Keepalive(self, options.ping_interval, options.ping_timeout)
                        self._keepalive = keepalive
                        if not self._inbox.time_keepalive(keepalive):
                            task_group.start_soon(keepalive.run)
                    await self._run_handler()
                    await self.close()
                task_group.cancel_scope.cancel()
        finally:
            if self._inbox is not None:
                self._inbox.close()  # and its task with the task group: start no other
            if self._outbox is not None:
                self._outbox.close()  # its writer task is gone with the task group
            await self._abort()
            self._connection_closed()

    async def _receive(self) -> None:
        assert self._inbox is not None
        try:
            await self._inbox.pump()
        finally:
            # The TCP connection goes with the reader: closed, timed out or dropped.
            await self._abort()
            self._connection_closed()

    def _end_pushed(self) -> None:
        # Push mode: the inbox found the connection closed, in a callback or a task.
        self._abort_at_once()
        self._connection_closed()

    async def _run_handler(self) -> None:
        try:
            if takes_path(self.ws_handler):
                await self.ws_handler(self, self.path)
            else:
                await self.ws_handler(self)
        except ConnectionClosed:
            pass  # the peer went away while the handler was talking to it
        except Exception:
            self.logger.error("connection handler failed", exc_info=True)
            if self.protocol.state is State.OPEN:
                self._queue(self.protocol.send_close, CloseCode.INTERNAL_ERROR, "")
                self._outbox.push()

    async def _abort(self) -> None:
        """Close the stream now; bounded, since closing may wait for a buffer to drain.

        Once: the reader and the connection task both call it on their way out.
        """
        stream = self._stream
        if stream is not None and not self._aborted and not self._abort_at_once():
            self._aborted = True
            with anyio.CancelScope(shield=True) as scope:
                # Cancelled from the start (cheaper than a deadline of now): a
                # close that would wait for the peer is cut short at once.
                scope.cancel()
                await stream.aclose()

    def _abort_at_once(self) -> bool:
        """Close the asyncio lean stream at once, with no scope to cancel; tell whether it was."""
        abort = None if self._stream is None else aborter(self._stream)
        if abort is None:
            return False
        if not self._aborted:
            self._aborted = True
            abort()
        return True

    def _connection_closed(self) -> None:
        if self._is_closed:
            return
        core = self.protocol
        if core.state is not State.CLOSED:
            core.receive_eof()
        self._is_closed = True
        if self._keepalive is not None:
            self._keepalive.stop()
        if self._closed_event is not None:
            self._closed_event.set()
        for waiter in self._pings.values():
            waiter._resolve(None)
        self._pings.clear()
        if self._inbox is not None:
            self._inbox.close()
        # Checked first: the arguments cost more than the call when INFO is off.
        if core.handshake_exc is None and self.logger.isEnabledFor(logging.INFO):
            self.logger.info("connection closed: %s", _who_closed(core))


async def _as_async(iterator: Iterable[Any]) -> AsyncIterator[Any]:
    for item in iterator:
        yield item


def _who_closed(core: ServerConnection) -> str:
    """Say who started the closing handshake, with the code and reason; or that there was none."""
    sent, received = core.close_sent, core.close_rcvd
    if core.close_rcvd_then_sent:
        return f"closed by the client: {received}"
    if sent is not None:
        unanswered = "" if received is not None else "; the client did not answer"
        return f"closed by the server: {sent}{unanswered}"
    if received is not None:
        return f"closed by the client: {received}"
    return "TCP closed without a closing handshake (1006)"
