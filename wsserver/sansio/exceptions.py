"""The one exception tree of wsserver.

Every error the library raises derives from :class:`WebSocketError`.
Handshake errors carry the HTTP status they map to; protocol errors carry the
close code they map to.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .frames import Close

__all__ = [
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "InvalidHandshake",
    "InvalidHeader",
    "InvalidHeaderFormat",
    "InvalidHeaderValue",
    "InvalidMessage",
    "InvalidOrigin",
    "InvalidState",
    "InvalidUTF8",
    "InvalidUpgrade",
    "InvalidVersion",
    "NegotiationError",
    "PayloadTooBig",
    "ProtocolError",
    "RequestTooLarge",
    "WebSocketError",
]


class WebSocketError(Exception):
    """Root of every exception raised by wsserver."""


# Opening handshake -------------------------------------------------------------


class InvalidHandshake(WebSocketError):
    """The opening handshake failed.

    :attr:`status` is the HTTP status the server answers with.
    """

    status: HTTPStatus = HTTPStatus.BAD_REQUEST


class InvalidMessage(InvalidHandshake):
    """The bytes received are not a well-formed HTTP/1.1 request."""


class RequestTooLarge(InvalidMessage):
    """A request line, a header line or the header count passed its limit."""

    status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


class InvalidHeader(InvalidHandshake):
    """A required header is missing, repeated or has an invalid value."""

    def __init__(self, name: str, value: str | None = None) -> None:
        self.name = name
        self.value = value
        if value is None:
            message = f"missing {name} header"
        elif value == "":
            message = f"empty {name} header"
        else:
            message = f"invalid {name} header: {value}"
        super().__init__(message)


class InvalidHeaderFormat(InvalidHeader):
    """A header value could not be parsed."""

    def __init__(self, name: str, error: str, header: str, pos: int) -> None:
        super().__init__(name, f"{error} at {pos} in {header}")


class InvalidHeaderValue(InvalidHeader):
    """A header value is well-formed but not acceptable."""


class InvalidUpgrade(InvalidHeader):
    """The request is HTTP but does not ask for a WebSocket upgrade."""

    status = HTTPStatus.UPGRADE_REQUIRED


class InvalidVersion(InvalidHeader):
    """The client speaks a WebSocket version other than 13."""

    status = HTTPStatus.UPGRADE_REQUIRED


class InvalidOrigin(InvalidHeader):
    """The ``Origin`` header is missing or not in the allowed origins."""

    status = HTTPStatus.FORBIDDEN

    def __init__(self, origin: str | None) -> None:
        super().__init__("Origin", origin)


class NegotiationError(InvalidHandshake):
    """Extension or subprotocol negotiation failed."""


# After the handshake -----------------------------------------------------------


class ProtocolError(WebSocketError):
    """The peer broke RFC 6455; :attr:`code` is the close code to fail with."""

    code: int = 1002


class InvalidUTF8(ProtocolError):
    """A text message or a close reason is not valid UTF-8."""

    code = 1007


class PayloadTooBig(ProtocolError):
    """A message is larger than ``max_size`` (after decompression)."""

    code = 1009


class InvalidState(WebSocketError, AssertionError):
    """An operation is not allowed in the connection's current state.

    This is a bug in the calling code, hence also an :class:`AssertionError`.
    """


class ConnectionClosed(WebSocketError):
    """The WebSocket connection is closed.

    :attr:`rcvd` and :attr:`sent` are the close frames received and sent, or
    :obj:`None` when there was none; :attr:`code` and :attr:`reason` come from
    the one received (1006 and ``""`` when none was).
    """

    def __init__(self, rcvd: Close | None, sent: Close | None) -> None:
        self.rcvd = rcvd
        self.sent = sent
        super().__init__(self._describe())

    @property
    def code(self) -> int:
        """The close code received, or 1006 when no close frame arrived."""
        return 1006 if self.rcvd is None else self.rcvd.code

    @property
    def reason(self) -> str:
        """The close reason received, or ``""``."""
        return "" if self.rcvd is None else self.rcvd.reason

    def _describe(self) -> str:
        if self.rcvd is None and self.sent is None:
            return "no close frame received or sent"
        if self.rcvd is None:
            return f"sent {self.sent}; no close frame received"
        if self.sent is None:
            return f"received {self.rcvd}; no close frame sent"
        return f"received {self.rcvd}; then sent {self.sent}"


class ConnectionClosedOK(ConnectionClosed):
    """The connection closed normally: both close frames had 1000, 1001 or no code."""


class ConnectionClosedError(ConnectionClosed):
    """The connection closed with an error code, or without a closing handshake."""
