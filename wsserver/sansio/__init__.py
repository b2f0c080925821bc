"""Sans-I/O WebSocket server protocol: bytes in, events and bytes out.

Nothing in this package performs I/O or imports an event loop: a test, or any
I/O framework, can drive :class:`ServerConnection` with bytes alone.
"""

from __future__ import annotations

from .connection import Event, ServerConnection, State
from .exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidHeader,
    InvalidHeaderFormat,
    InvalidHeaderValue,
    InvalidMessage,
    InvalidOrigin,
    InvalidState,
    InvalidUpgrade,
    InvalidUTF8,
    InvalidVersion,
    NegotiationError,
    PayloadTooBig,
    ProtocolError,
    RequestTooLarge,
    WebSocketError,
)
from .frames import Close, CloseCode, Frame, Opcode, TextFrame
from .handshake import Origin, Subprotocol
from .http11 import Headers, MultipleValuesError, Request, Response

__all__ = [
    "Close",
    "CloseCode",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "Event",
    "Frame",
    "Headers",
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
    "MultipleValuesError",
    "NegotiationError",
    "Opcode",
    "Origin",
    "PayloadTooBig",
    "ProtocolError",
    "Request",
    "RequestTooLarge",
    "Response",
    "ServerConnection",
    "State",
    "Subprotocol",
    "TextFrame",
    "WebSocketError",
]
