"""WebSocket extensions: the interface and permessage-deflate (RFC 7692)."""

from __future__ import annotations

from .base import Extension, ExtensionParameter, ServerExtensionFactory

__all__ = ["Extension", "ExtensionParameter", "ServerExtensionFactory"]
