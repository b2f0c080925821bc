"""wsserver: a Trio-first, structured-concurrency WebSocket server for Trio and asyncio.

``server = await nursery.start(wsserver.serve, handler, host, port)`` on Trio
(or with an anyio task group on either loop); :mod:`wsserver.asyncio_io` for
asyncio's ``async with serve(...)`` conventions; :mod:`wsserver.sansio` for the
protocol alone.

``wsserver.HAS_SPEEDUPS`` is true when the compiled hot path is in use: the
sans-I/O core compiled with mypyc and the C unmasking, both built at install
time when a C compiler is available. When it is false (no compiler, or
``WSSERVER_NO_SPEEDUPS`` set at install time or at import) the same code runs
as pure Python: correct, about half as fast in the core.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .broadcast import broadcast
from .connection import Data, PongWaiter, WebSocketServerProtocol
from .routing import Router
from .sansio import (
    HAS_SPEEDUPS,
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    Headers,
    InvalidHandshake,
    ProtocolError,
    WebSocketError,
)
from .server import WebSocketServer, serve, unix_serve
from .workers import run

__all__ = [
    "HAS_SPEEDUPS",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "Data",
    "Headers",
    "InvalidHandshake",
    "PongWaiter",
    "ProtocolError",
    "Router",
    "WebSocketError",
    "WebSocketServer",
    "WebSocketServerProtocol",
    "__version__",
    "broadcast",
    "run",
    "serve",
    "unix_serve",
]
