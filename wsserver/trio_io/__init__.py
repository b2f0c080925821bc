"""The Trio front door: ``server = await nursery.start(serve, handler, host, port)``.

The shared layer already follows Trio's conventions (``task_status``, cancel
scopes), so this module only names them where Trio users look for them.
"""

from __future__ import annotations

from ..connection import WebSocketServerProtocol
from ..server import WebSocketServer, serve, unix_serve

__all__ = ["WebSocketServer", "WebSocketServerProtocol", "serve", "unix_serve"]
