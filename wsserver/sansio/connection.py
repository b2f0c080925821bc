"""The sans-I/O server connection: every protocol rule, no I/O."""

from __future__ import annotations

import codecs
import enum
import logging
import uuid
from collections.abc import Callable, Generator, Sequence
from http import HTTPStatus
from typing import TypeAlias

from ._mypyc import mypyc_attr
from .exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidMessage,
    InvalidState,
    InvalidUTF8,
    InvalidVersion,
    PayloadTooBig,
    ProtocolError,
)
from .extensions.base import Extension, ServerExtensionFactory
from .frames import (
    Close,
    CloseCode,
    Frame,
    Opcode,
    TextFrame,
    new_frame,
    parse_close,
    parse_frame_head,
    serialize_close,
    serialize_frame,
    serialize_frame_head,
    wait_for_frame_head,
    with_text,
)
from .handshake import (
    Origin,
    Subprotocol,
    accept_key,
    check_origin,
    check_request,
    negotiate_extensions,
    parse_token_list,
)
from .handshake import select_subprotocol as default_select_subprotocol
from .http11 import (
    MAX_HEADERS,
    MAX_LINE_BYTES,
    Headers,
    Request,
    Response,
    http_date,
    parse_request,
    serialize_response,
)
from .streams import StreamReader

__all__ = ["Event", "ServerConnection", "State"]

LoggerLike: TypeAlias = "logging.Logger | logging.LoggerAdapter[logging.Logger]"
Event: TypeAlias = Request | Frame
"""What :meth:`ServerConnection.events_received` returns: the request, then frames."""

SelectSubprotocol = Callable[[Sequence[Subprotocol], Sequence[Subprotocol]], "Subprotocol | None"]

_OK_CLOSE_CODES = frozenset(
    {CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY, CloseCode.NO_STATUS_RCVD}
)


_new_tuple = tuple.__new__

LARGE_PAYLOAD_BYTES = 65536
"""From this payload size on, a frame's header and payload are queued apart."""

_utf8_decode = codecs.utf_8_decode

_PIECE_LENGTH = 4096
"""The pieces of a frame arriving in parts are gathered up to this length."""

def _gather(pieces: list[bytes], piece: bytes) -> None:
    """Append ``piece`` to ``pieces``, joined to the last one while that one is short.

    Every piece but the last holds at least :data:`_PIECE_LENGTH` bytes: a peer
    trickling bytes one by one costs no object per byte, each call copies at
    most that many bytes more than it brings, and a long piece is not copied
    until the final join.
    """
    if pieces and len(pieces[-1]) < _PIECE_LENGTH:
        pieces[-1] += piece
    elif piece:
        pieces.append(piece)


def _gather_text(pieces: list[str], piece: str) -> None:
    """Do what :func:`_gather` does, for decoded text.

    A twin rather than one function over a type variable: mypyc, which
    compiles this module, does not type-check a constrained type variable.
    """
    if pieces and len(pieces[-1]) < _PIECE_LENGTH:
        pieces[-1] += piece
    elif piece:
        pieces.append(piece)


BytesLike: TypeAlias = "bytes | bytearray | memoryview"
"""What the methods that take payloads accept."""


def _as_bytes(data: BytesLike) -> bytes:
    """Return ``data`` as ``bytes``, copying only what is not ``bytes`` already.

    A frame holds ``bytes``: a queued payload must not change if the caller
    reuses a ``bytearray``, and the compiled build checks the type.
    """
    return data if type(data) is bytes else bytes(data)


def _truncate_reason(reason: str) -> str:
    """Shorten ``reason`` so that a close frame can carry it (123 bytes of UTF-8)."""
    encoded = reason.encode()
    if len(encoded) <= 123:
        return reason
    return encoded[:120].decode(errors="ignore") + "..."


class State(enum.IntEnum):
    """Where a WebSocket connection stands."""

    CONNECTING = 0
    OPEN = 1
    CLOSING = 2
    CLOSED = 3


class _Transition(enum.Enum):
    ACCEPT = "accept"
    REJECT = "reject"
    SEND_CLOSE = "send close"
    RECEIVE_EOF = "receive eof"


# Every legal state change, in one place. A pair that is missing is a bug in
# the caller, reported as InvalidState.
_TRANSITIONS: dict[tuple[State, _Transition], State] = {
    (State.CONNECTING, _Transition.ACCEPT): State.OPEN,
    (State.CONNECTING, _Transition.REJECT): State.CLOSING,
    (State.CONNECTING, _Transition.RECEIVE_EOF): State.CLOSED,
    (State.OPEN, _Transition.SEND_CLOSE): State.CLOSING,
    (State.OPEN, _Transition.RECEIVE_EOF): State.CLOSED,
    (State.CLOSING, _Transition.RECEIVE_EOF): State.CLOSED,
    (State.CLOSED, _Transition.RECEIVE_EOF): State.CLOSED,
}


# Compiled, it stays open to subclasses written in Python, as in the pure build.
@mypyc_attr(allow_interpreted_subclasses=True)
class ServerConnection:
    """The server side of one WebSocket connection, as a state machine.

    Feed it the bytes read from the network with :meth:`receive_data` and
    :meth:`receive_eof`; collect what happened with :meth:`events_received`
    and what to write with :meth:`data_to_send`.

    :param origins: allowed values of the ``Origin`` header (strings or
        compiled patterns; ``None`` in the list allows requests without
        ``Origin``); ``None`` allows everything.
    :param extensions: extension factories, in order of preference.
    :param subprotocols: supported subprotocols, in order of preference.
    :param state: the initial state; ``OPEN`` skips the opening handshake.
    :param max_size: the largest message accepted, in bytes, after
        decompression; ``None`` removes the limit.
    :param logger: where to log; defaults to the ``wsserver.server`` logger.
    :param select_subprotocol: picks a subprotocol from the client's offers
        and ``subprotocols``; defaults to the server's preference order.
    :param max_line_bytes: the longest request or header line accepted.
    :param max_headers: the most request headers accepted.
    """

    def __init__(
        self,
        origins: Sequence[Origin] | None = None,
        extensions: Sequence[ServerExtensionFactory] | None = None,
        subprotocols: Sequence[Subprotocol] | None = None,
        state: State = State.CONNECTING,
        max_size: int | None = 2**20,
        logger: LoggerLike | None = None,
        *,
        select_subprotocol: SelectSubprotocol | None = None,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_headers: int = MAX_HEADERS,
    ) -> None:
        # Made when first read: most connections never log a line that needs it.
        self._id: uuid.UUID | None = None
        self.logger: LoggerLike = logger or logging.getLogger("wsserver.server")
        """Logger for this connection."""
        self.origins = origins
        self.available_extensions = extensions
        self.available_subprotocols = subprotocols
        self.max_size = max_size
        self._select_subprotocol = select_subprotocol or default_select_subprotocol
        self._max_line_bytes = max_line_bytes
        self._max_headers = max_headers
        self._debug = self.logger.isEnabledFor(logging.DEBUG)

        self._state = state
        self.handshake_exc: Exception | None = None
        """Why the opening handshake failed, or ``None``."""
        self.extensions: list[Extension] = []
        self.subprotocol: Subprotocol | None = None
        # What accept() negotiated, until the 101 is sent; then None.
        self._pending: tuple[list[Extension], Subprotocol | None] | None = None

        self.close_rcvd: Close | None = None
        self.close_sent: Close | None = None
        self.close_rcvd_then_sent: bool | None = None
        self._eof_sent = False

        # Message being received: its size so far and, for text, the bytes
        # of a character cut at the end of the last piece decoded (b"" when
        # none; None for a binary message or none at all).
        self._receiving: Opcode | None = None
        self._received_bytes = 0
        self._utf8: bytes | None = None
        # Message being sent, for fragmentation order checks.
        self._sending: Opcode | None = None

        self._reader = StreamReader()
        self._events: list[Event] = []
        self._writes: list[bytes] = []
        self._parser = self._parse()
        next(self._parser)

    # Properties ------------------------------------------------------------------

    @property
    def id(self) -> uuid.UUID:
        """Unique identifier of the connection, useful in logs."""
        if self._id is None:
            self._id = uuid.uuid4()
        return self._id

    @id.setter
    def id(self, value: uuid.UUID) -> None:
        self._id = value

    @property
    def state(self) -> State:
        """The connection's :class:`State`."""
        return self._state

    @property
    def close_code(self) -> int | None:
        """The close code received; 1006 if none; ``None`` until the connection is closed."""
        if self._state is not State.CLOSED:
            return None
        return CloseCode.ABNORMAL_CLOSURE if self.close_rcvd is None else self.close_rcvd.code

    @property
    def close_reason(self) -> str | None:
        """The close reason received; ``""`` if none; ``None`` until the connection is closed."""
        if self._state is not State.CLOSED:
            return None
        return "" if self.close_rcvd is None else self.close_rcvd.reason

    @property
    def close_exc(self) -> ConnectionClosed:
        """The exception that says how the connection closed.

        :class:`ConnectionClosedOK` when both sides exchanged 1000, 1001 or an
        empty close frame; :class:`ConnectionClosedError` otherwise.

        :raises InvalidState: before the connection is closed.
        """
        if self._state is not State.CLOSED:
            raise InvalidState("the connection is not closed yet")
        rcvd, sent = self.close_rcvd, self.close_sent
        ok = (
            rcvd is not None
            and sent is not None
            and rcvd.code in _OK_CLOSE_CODES
            and sent.code in _OK_CLOSE_CODES
        )
        exc_type = ConnectionClosedOK if ok else ConnectionClosedError
        exc = exc_type(rcvd, sent)
        exc.__cause__ = self.handshake_exc if rcvd is None else None
        return exc

    def _transition(self, transition: _Transition) -> None:
        try:
            new_state = _TRANSITIONS[self._state, transition]
        except KeyError:
            raise InvalidState(
                f"cannot {transition.value} in state {self._state.name}"
            ) from None
        if self._debug and new_state is not self._state:
            self.logger.debug("= connection is %s", new_state.name)
        self._state = new_state

    # Receiving -------------------------------------------------------------------

    def receive_data(self, data: BytesLike) -> None:
        """Feed bytes received from the network.

        Afterwards, call :meth:`events_received` and :meth:`data_to_send`.

        :raises EOFError: after :meth:`receive_eof`.
        """
        self._reader.feed_data(data)
        next(self._parser)

    def receive_eof(self) -> None:
        """Record that the peer closed its write side (or the whole connection).

        Afterwards, call :meth:`events_received` and :meth:`data_to_send`.
        Calling it again does nothing.
        """
        if self._reader.at_eof:
            return
        self._reader.feed_eof()
        next(self._parser)

    def events_received(self) -> list[Event]:
        """Return the events received since the last call: a :class:`Request`, then frames.

        The frames of text messages are :class:`TextFrame` objects, which carry
        the text decoded from them; other frames are plain :class:`Frame` objects.
        """
        events, self._events = self._events, []
        return events

    def data_to_send(self) -> list[bytes]:
        """Return the bytes to write since the last call.

        An empty ``b""`` item means: close the write side once the bytes
        before it are written.
        """
        writes, self._writes = self._writes, []
        return writes

    def has_data_to_send(self) -> bool:
        """Tell whether :meth:`data_to_send` has anything, an EOF marker included."""
        return bool(self._writes)

    def bytes_to_send(self) -> int:
        """Count the bytes waiting in :meth:`data_to_send`."""
        return sum(map(len, self._writes))

    def close_expected(self) -> bool:
        """Tell whether the TCP connection should close soon.

        True once the server sent a close frame or rejected the handshake: the
        I/O layer then starts its close timeout.
        """
        return self._state is State.CLOSING or self.handshake_exc is not None

    # Opening handshake -----------------------------------------------------------

    def accept(self, request: Request) -> Response:
        """Validate the handshake request and build the response.

        On success the response is a 101 and the negotiated extensions and
        subprotocol take effect when it is sent. On failure :attr:`handshake_exc`
        is set and the response is the matching HTTP error: 400, 403, or 426
        (with ``Sec-WebSocket-Version: 13`` for a wrong version).

        This never raises; send the response with :meth:`send_response`.
        """
        try:
            key = check_request(request.headers)
            check_origin(request.headers, self.origins)
            extensions_header, extensions = negotiate_extensions(
                request.headers, self.available_extensions
            )
            subprotocol = self._negotiate_subprotocol(request.headers)
        except InvalidHandshake as exc:
            return self._reject_handshake(exc)
        except Exception as exc:  # a user's select_subprotocol or extension failed
            self.logger.error("opening handshake failed", exc_info=True)
            self.handshake_exc = exc
            return self.reject(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                "Failed to open a WebSocket connection.\n"
                "See server log for more information.\n",
            )
        headers = Headers()
        headers["Date"] = http_date()
        headers["Upgrade"] = "websocket"
        headers["Connection"] = "Upgrade"
        headers["Sec-WebSocket-Accept"] = accept_key(key)
        if extensions_header is not None:
            headers["Sec-WebSocket-Extensions"] = extensions_header
        if subprotocol is not None:
            headers["Sec-WebSocket-Protocol"] = subprotocol
        self._pending = (extensions, subprotocol)
        return Response(101, "Switching Protocols", headers)

    def _negotiate_subprotocol(self, headers: Headers) -> Subprotocol | None:
        offered = parse_token_list(headers, "Sec-WebSocket-Protocol")
        if not offered or not self.available_subprotocols:
            return None
        return self._select_subprotocol(offered, self.available_subprotocols)

    def _reject_handshake(self, exc: InvalidHandshake) -> Response:
        self.handshake_exc = exc
        self.logger.info("invalid handshake: %s", exc)
        response = self.reject(
            exc.status,
            f"Failed to open a WebSocket connection: {exc}.\n",
        )
        if isinstance(exc, InvalidVersion):
            response.headers["Sec-WebSocket-Version"] = "13"
        return response

    def reject(self, status: int, text: str) -> Response:
        """Build an HTTP error response with a plain-text body.

        Every response closes the connection (``Connection: close``). A 426
        also names the protocol to upgrade to: ``Upgrade: websocket``, with
        ``Connection: Upgrade, close``.

        Args:
            status: the HTTP status code.
            text: the body, sent as UTF-8.

        Returns:
            The response, to send with :meth:`send_response`.

        Raises:
            ValueError: if ``status`` is not an HTTP status code.
        """
        http_status = HTTPStatus(status)
        body = text.encode()
        if http_status is HTTPStatus.UPGRADE_REQUIRED:
            # RFC 9110 section 15.5.22: "The server MUST send an Upgrade header
            # field in a 426 response", and section 7.8: "A sender of Upgrade
            # MUST also send an "Upgrade" connection option in the Connection
            # header field". Whatever made the request fail.
            headers = Headers()
            headers["Date"] = http_date()
            headers["Connection"] = "Upgrade, close"
            headers["Upgrade"] = "websocket"
        else:
            headers = Headers()
            headers["Date"] = http_date()
            headers["Connection"] = "close"
        headers["Content-Length"] = str(len(body))
        headers["Content-Type"] = "text/plain; charset=utf-8"
        return Response(http_status.value, http_status.phrase, headers, body)

    def send_response(self, response: Response) -> None:
        """Queue the handshake response.

        A 101 opens the connection; any other status closes it once sent.

        :raises InvalidState: if the handshake is already over.
        """
        if self._state is not State.CONNECTING:
            raise InvalidState(f"cannot send a response in state {self._state.name}")
        if self._debug:
            self.logger.debug("> HTTP/1.1 %d %s", response.status_code, response.reason_phrase)
        self._send_response(response)
        if self.state is State.OPEN:  # the property: mypy narrowed _state above
            # Bytes that arrived before the response may be waiting for the parser.
            next(self._parser)
        else:
            self._stop_parsing()

    def _send_response(self, response: Response) -> None:
        self._writes.append(serialize_response(response))
        if response.status_code == HTTPStatus.SWITCHING_PROTOCOLS:
            if self._pending is not None:
                self.extensions, self.subprotocol = self._pending
                self._pending = None
            self._transition(_Transition.ACCEPT)
        else:
            if self.handshake_exc is None:
                self.handshake_exc = InvalidHandshake(
                    f"rejected with HTTP {response.status_code}"
                )
            self._transition(_Transition.REJECT)
            self._send_eof()

    # Sending ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state is not State.OPEN:
            raise InvalidState(f"connection is {self._state.name}")

    def send_text(self, data: BytesLike, fin: bool = True) -> None:
        """Queue a text frame; ``data`` is UTF-8 already.

        :param fin: false to start a fragmented message, to be continued with
            :meth:`send_continuation`.
        :raises InvalidState: if the connection is not open or a fragmented
            message is in progress.
        """
        self._start_message(Opcode.TEXT, data, fin)

    def send_binary(self, data: BytesLike, fin: bool = True) -> None:
        """Queue a binary frame.

        :param fin: false to start a fragmented message.
        :raises InvalidState: if the connection is not open or a fragmented
            message is in progress.
        """
        self._start_message(Opcode.BINARY, data, fin)

    def _start_message(self, opcode: Opcode, data: BytesLike, fin: bool) -> None:
        self._check_open()
        if self._sending is not None:
            raise InvalidState("a fragmented message is being sent")
        if not fin:
            self._sending = opcode
        self._send_frame(Frame(opcode, _as_bytes(data), fin))

    def send_continuation(self, data: BytesLike, fin: bool) -> None:
        """Queue the next fragment of a message.

        :param fin: true for the last fragment.
        :raises InvalidState: if the connection is not open or no fragmented
            message is in progress.
        """
        self._check_open()
        if self._sending is None:
            raise InvalidState("no fragmented message is being sent")
        if fin:
            self._sending = None
        self._send_frame(Frame(Opcode.CONT, _as_bytes(data), fin))

    def send_close(self, code: int | None = None, reason: str = "") -> None:
        """Queue a close frame and start the closing handshake.

        :param code: the close code; ``None`` sends an empty close frame.
        :param reason: the close reason; requires a code.
        :raises InvalidState: if the connection is not open.
        :raises ValueError: if the code may not be sent or the reason is too long.
        """
        self._check_open()
        payload = serialize_close(code, reason)
        self._send_frame(Frame(Opcode.CLOSE, payload))
        self.close_sent = Close(CloseCode.NO_STATUS_RCVD if code is None else code, reason)
        if self.close_rcvd is not None:
            self.close_rcvd_then_sent = True
        self._transition(_Transition.SEND_CLOSE)

    def send_ping(self, data: BytesLike) -> None:
        """Queue a ping frame.

        :raises InvalidState: if the connection is not open.
        :raises ValueError: if ``data`` is longer than 125 bytes.
        """
        self._send_control(Opcode.PING, data)

    def send_pong(self, data: BytesLike) -> None:
        """Queue a pong frame (received pings are answered automatically).

        :raises InvalidState: if the connection is not open.
        :raises ValueError: if ``data`` is longer than 125 bytes.
        """
        self._send_control(Opcode.PONG, data)

    def _send_control(self, opcode: Opcode, data: BytesLike) -> None:
        self._check_open()
        if len(data) > 125:
            raise ValueError("control frame payload longer than 125 bytes")
        self._send_frame(Frame(opcode, _as_bytes(data)))

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the connection: send a close frame if still possible, then stop.

        Nothing more is parsed and the write side closes after the close frame.

        :param code: the close code.
        :param reason: the close reason.
        """
        self._fail(code, reason)
        self._stop_parsing()

    def _fail(self, code: int, reason: str) -> None:
        if self._state is State.OPEN:
            self.send_close(code, _truncate_reason(reason))
        if self._state is not State.CLOSED:
            self._send_eof()

    def _stop_parsing(self) -> None:
        self._reader.discard()
        self._parser = self._discard()
        next(self._parser)

    def _send_frame(self, frame: Frame) -> None:
        for extension in self.extensions:
            frame = extension.encode(frame)
        if self._debug:
            self.logger.debug("> %s", frame)
        if len(frame.data) < LARGE_PAYLOAD_BYTES:
            self._writes.append(serialize_frame(frame))
        else:
            # Header and payload as two writes: no copy of a large payload.
            self._writes.append(serialize_frame_head(frame))
            self._writes.append(frame.data)

    def _send_eof(self) -> None:
        if not self._eof_sent:
            self._eof_sent = True
            self._writes.append(b"")

    # Parsing -----------------------------------------------------------------------

    def _parse(self) -> Generator[None, None, None]:
        """Parse the request, wait for the response, then parse frames until a close."""
        try:
            if self._state is State.CONNECTING:
                yield from self._parse_request()
            if self._state is State.OPEN:
                yield from self._parse_frames()
        except EOFError:
            self._receive_abrupt_eof()
        except ProtocolError as exc:
            self.logger.info("protocol error: %s", exc)
            self._fail(exc.code, str(exc))
        except Exception:
            # An extension failed in an unexpected way; never let it escape.
            self.logger.error("unexpected error while parsing", exc_info=True)
            self._fail(CloseCode.INTERNAL_ERROR, "internal error")
        # After a close frame, an error or a rejection, nothing more is parsed.
        yield from self._discard()

    def _parse_request(self) -> Generator[None, None, None]:
        """Parse the request, then wait for the response to it.

        A generator of its own, so that the request is not kept for the
        connection's life by the frame of :meth:`_parse`.
        """
        try:
            request = yield from parse_request(
                self._reader,
                max_line_bytes=self._max_line_bytes,
                max_headers=self._max_headers,
            )
        except InvalidHandshake as exc:
            self._send_response(self._reject_handshake(exc))
            return
        if self._debug:
            self.logger.debug("< GET %s HTTP/1.1", request.path)
        self._events.append(request)
        while self._state is State.CONNECTING and not self._reader.at_eof:
            yield

    def _discard(self) -> Generator[None, None, None]:
        """Drop incoming bytes until the peer closes, then mark the connection closed."""
        while not self._reader.at_eof:
            self._reader.discard()
            yield
        self._reader.discard()
        self._send_eof()
        self._transition(_Transition.RECEIVE_EOF)
        while True:
            yield

    def _receive_abrupt_eof(self) -> None:
        # The stream ended where more bytes were needed: mid-frame, mid-request,
        # or simply between frames without a closing handshake.
        if self._state is State.CONNECTING and self.handshake_exc is None:
            self.handshake_exc = InvalidMessage(
                "connection closed during the opening handshake"
            )

    def _frame_budget(self) -> int | None:
        if self.max_size is None:
            return None
        return self.max_size - self._received_bytes

    def _wire_budget(self) -> int | None:
        # A message of max_size bytes may arrive deflated into a slightly longer
        # payload (stored blocks cost 5 bytes each, down to 128-byte blocks):
        # allow for that on the wire; the extension then bounds what it inflates.
        budget = self._frame_budget()
        if budget is None or not self.extensions:
            return budget
        return budget + budget // 16 + 64

    def _parse_frames(self) -> Generator[None, None, None]:
        """Parse frames until a close frame; the hot path, inlined where it counts."""
        reader = self._reader
        while self.close_rcvd is None:
            if self.max_size is None or self.extensions:
                budget = self._wire_budget()
            else:  # the common case, inlined: this runs for every frame
                budget = self.max_size - self._received_bytes
            head = parse_frame_head(reader, max_size=budget)
            if head is None:
                head = yield from wait_for_frame_head(reader, max_size=budget)
            opcode, first, length, start, mask = head

            # The rules that depend on the connection are checked on the
            # header, so that a frame breaking them fails before its payload
            # has arrived.
            if first & 0x30 or (first & 0x40 and not self.extensions):
                raise ProtocolError("reserved bits must be 0")
            if opcode >= Opcode.CLOSE:
                if first & 0x40:
                    raise ProtocolError("reserved bits must be 0 on control frames")
            elif opcode is Opcode.CONT:
                if self._receiving is None:
                    raise ProtocolError("unexpected continuation frame")
            elif self._receiving is not None:
                raise ProtocolError("expected a continuation frame")

            if len(reader) < start + length:
                if (
                    opcode is Opcode.TEXT or (opcode is Opcode.CONT and self._utf8 is not None)
                ) and not self.extensions:
                    yield from self._receive_text_in_pieces(opcode, first, length, start, mask)
                    continue
                # Other payloads need no look before they are complete. Nor
                # can a payload an extension transforms: permessage-deflate
                # inflates a frame only once it is whole, so the UTF-8 of a
                # compressed text frame is checked then.
                yield from reader.wait_for(start + length)
            data = reader.read_unmasked(length, mask, start)
            if self.extensions or (first != 0x81 and first != 0x82):
                self._receive_frame(new_frame(opcode, data, first))
                # This generator waits for the next frame with its locals
                # alive: drop the payload once it is handed on.
                del data
                continue
            # FIN, no reserved bit, TEXT or BINARY: an unfragmented message, the
            # common case, handled here. No message is in progress (the header
            # checks saw to it) and the header checked max_size, so there is
            # no state to update.
            if first == 0x81:
                text_frame = _new_tuple(TextFrame, (Opcode.TEXT, data, True, False, False, False))
                try:
                    text_frame.text = data.decode()  # the only decoding of this text
                except UnicodeDecodeError as exc:
                    raise InvalidUTF8(f"invalid UTF-8 in text message: {exc.reason}") from None
                frame: Frame = text_frame
                del text_frame
            else:
                frame = _new_tuple(Frame, (Opcode.BINARY, data, True, False, False, False))
            if self._debug:
                self.logger.debug("< %s", frame)
            self._events.append(frame)
            del data, frame  # as above: not kept while waiting

    def _receive_text_in_pieces(
        self, opcode: Opcode, first: int, length: int, start: int, mask: bytes
    ) -> Generator[None, None, None]:
        """Receive a text payload that has not all arrived, checking UTF-8 as it comes.

        A peer that sends invalid UTF-8 is failed at the piece that holds the
        first bad byte, not when (or if) the frame ends: each call to
        :meth:`receive_data` unmasks and checks the bytes it brought, and
        work stays proportional to them. Each byte is decoded once.

        Args:
            opcode: TEXT, or CONT in a text message.
            first: the frame's first header byte.
            length: the payload length.
            start: where the payload starts in the frame.
            mask: the frame's mask.
        """
        reader = self._reader
        if opcode is Opcode.TEXT:
            self._utf8 = b""
        final = bool(first & 0x80)
        # Payload and text gather in pieces; see _gather() and _gather_text().
        payload: list[bytes] = []
        texts: list[str] = []
        # While every piece is ASCII (valid UTF-8 as it stands), and no
        # character is pending from the previous fragment, pieces are only
        # checked, and the whole payload is decoded once at the end: decoding
        # ASCII piece by piece costs more than the check. JSON arrives so.
        only_ascii = not self._utf8
        received = 0
        skip = start  # the header is dropped with the first piece
        while True:
            size = min(len(reader) - skip, length - received)
            if size > 0:
                shift = received & 3  # where the mask stands at this offset
                piece = reader.read_unmasked(size, mask[shift:] + mask[:shift], skip)
                skip = 0
                _gather(payload, piece)
                if not (only_ascii and piece.isascii()):
                    if only_ascii:  # the first byte beyond ASCII: decode what came before
                        only_ascii = False
                        texts.append(b"".join(payload)[:received].decode("ascii"))
                    last = final and received + size == length
                    _gather_text(texts, self._decode_utf8(piece, final=last))
                received += size
                if received == length:
                    break
            if reader.at_eof:
                raise EOFError(f"stream ended after {received} of {length} payload bytes")
            yield
        data = b"".join(payload)
        text = data.decode("ascii") if only_ascii else "".join(texts)
        frame = with_text(new_frame(opcode, data, first), text)
        if self._debug:
            self.logger.debug("< %s", frame)
        # parse_frame_head checked that length fits in what max_size leaves.
        self._received_bytes += length
        self._end_data_frame(frame)

    def _receive_frame(self, frame: Frame) -> None:
        """Handle a whole frame whose header passed the connection's checks."""
        if self._debug:
            self.logger.debug("< %s", frame)
        opcode = frame.opcode
        if opcode >= Opcode.CLOSE:
            self._receive_control(frame)
            return

        if self.extensions:
            for extension in reversed(self.extensions):
                frame = extension.decode(frame, max_size=self._frame_budget())
        self._received_bytes += len(frame.data)
        if self.max_size is not None and self._received_bytes > self.max_size:
            raise PayloadTooBig(f"message larger than {self.max_size} bytes")

        if opcode is Opcode.TEXT:
            if frame.fin:
                # One-frame text message (inflated, or with reserved bits an
                # extension allowed), decoded in one call.
                try:
                    text = frame.data.decode()
                except UnicodeDecodeError as exc:
                    raise InvalidUTF8(f"invalid UTF-8 in text message: {exc.reason}") from None
            else:
                self._utf8 = b""
                text = self._decode_utf8(frame.data, final=False)
            frame = with_text(frame, text)
        elif self._utf8 is not None:
            frame = with_text(frame, self._decode_utf8(frame.data, final=frame.fin))
        self._end_data_frame(frame)

    def _end_data_frame(self, frame: Frame) -> None:
        """Record a data frame received and checked: message state, then the event."""
        if frame.fin:
            self._receiving = None
            self._received_bytes = 0
            self._utf8 = None
        elif frame.opcode is not Opcode.CONT:
            self._receiving = frame.opcode
        self._events.append(frame)

    def _decode_utf8(self, data: bytes, *, final: bool) -> str:
        """Decode the next bytes of the text message being received.

        Args:
            data: the next bytes of the message's payload.
            final: true when they end the message.

        Returns:
            The characters they complete; a character cut at the end of
            ``data`` waits in :attr:`_utf8` for the bytes that end it.

        Raises:
            InvalidUTF8: at the first byte that no valid text can hold.
        """
        pending = self._utf8
        assert pending is not None  # a text message is being received
        if pending:
            data = pending + data
        try:
            # What an incremental decoder does, without its Python layer: this
            # runs for every piece of a text frame that arrives in parts.
            text, consumed = _utf8_decode(data, "strict", final)
        except UnicodeDecodeError as exc:
            raise InvalidUTF8(f"invalid UTF-8 in text message: {exc.reason}") from None
        if consumed == len(data):
            self._utf8 = b""
            return text
        pending = self._utf8 = data[consumed:]
        # CPython's decoder rejects every impossible prefix at once except a
        # surrogate's (ED A0..BF), which it holds back until the third byte;
        # fail fast on it too rather than wait for the next piece.
        if len(pending) >= 2 and pending[0] == 0xED and pending[1] >= 0xA0:
            raise InvalidUTF8("invalid UTF-8 in text message: surrogate")
        return text

    def _receive_control(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.PING:
            if self._state is State.OPEN:
                self.send_pong(frame.data)
        elif opcode is Opcode.CLOSE:
            close = Close(*parse_close(frame.data))
            if self.close_rcvd is not None:
                return  # a second close frame is ignored
            self.close_rcvd = close
            if self._state is State.OPEN:
                # Echo the code, as RFC 6455 section 5.5.1 suggests.
                code = None if close.code == CloseCode.NO_STATUS_RCVD else close.code
                self.send_close(code, close.reason if code is not None else "")
                self.close_rcvd_then_sent = True
            else:
                self.close_rcvd_then_sent = False
            # The closing handshake is complete; the server closes TCP first
            # (RFC 6455 section 7.1.1).
            self._send_eof()
        self._events.append(frame)
