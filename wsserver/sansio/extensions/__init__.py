"""WebSocket extensions: the interface and permessage-deflate (RFC 7692)."""

from __future__ import annotations

from .base import Extension, ExtensionParameter, ServerExtensionFactory
from .permessage_deflate import (
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
    enable_server_permessage_deflate,
)

__all__ = [
    "Extension",
    "ExtensionParameter",
    "PerMessageDeflate",
    "ServerExtensionFactory",
    "ServerPerMessageDeflateFactory",
    "enable_server_permessage_deflate",
]
