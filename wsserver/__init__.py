"""wsserver: a Trio-first, structured-concurrency WebSocket server for Trio and asyncio.

``server = await nursery.start(wsserver.serve, handler, host, port)`` on Trio
(or with an anyio task group on either loop); :mod:`wsserver.asyncio_io` for
asyncio's ``async with serve(...)`` conventions; :mod:`wsserver.sansio` for the
protocol alone.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .broadcast import broadcast
from .connection import Data, PongWaiter, WebSocketServerProtocol
from .routing import Router
from .sansio import (
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
