"""Sans-I/O WebSocket server protocol: bytes in, events and bytes out.

Nothing in this package performs I/O or imports an event loop: a test, or any
I/O framework, can drive :class:`ServerConnection` with bytes alone.

The hot path (:mod:`~wsserver.sansio.streams`, :mod:`~wsserver.sansio.frames`,
:mod:`~wsserver.sansio.http11`, :mod:`~wsserver.sansio.handshake`,
:mod:`~wsserver.sansio.connection`) is compiled with mypyc at install time
when a C compiler is available, and unmasking comes from a small C extension;
the same sources run as pure Python otherwise, or when the environment
variable ``WSSERVER_NO_SPEEDUPS`` is set (to anything but ``0``) at import.
:data:`HAS_SPEEDUPS` tells which build runs.
"""

from __future__ import annotations

from pathlib import Path as _Path

from . import _compiled

# Before any compiled module can be imported: honour WSSERVER_NO_SPEEDUPS and
# ignore a build older than its sources.
_compiled.choose_build(_Path(__file__).parent)

from . import connection as _connection  # noqa: E402
from . import frames as _frames  # noqa: E402
from . import handshake as _handshake  # noqa: E402
from . import http11 as _http11  # noqa: E402
from . import masking as _masking  # noqa: E402
from . import streams as _streams  # noqa: E402
from .connection import Event, ServerConnection, State  # noqa: E402
from .exceptions import (  # noqa: E402
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
from .frames import Close, CloseCode, Frame, Opcode, TextFrame  # noqa: E402
from .handshake import Origin, Subprotocol  # noqa: E402
from .http11 import Headers, MultipleValuesError, Request, Response  # noqa: E402

HAS_SPEEDUPS: bool = _masking.HAS_SPEEDUPS and all(
    _compiled.is_compiled(module)
    for module in (_streams, _frames, _http11, _handshake, _connection)
)
"""True when the compiled hot path runs: the mypyc-compiled modules and the C unmasking.

False when wsserver was installed without a C compiler (or with
``WSSERVER_NO_SPEEDUPS`` set), when ``WSSERVER_NO_SPEEDUPS`` is set at
import, or when the sources were edited after the last build: the same
sources then run as pure Python, correct but slower.
"""

__all__ = [
    "HAS_SPEEDUPS",
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
