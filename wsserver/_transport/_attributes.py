"""Typed-attribute helpers shared by the streams and listeners of this floor."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, Final

__all__ = ["IP_FAMILIES", "constant", "short_address"]

IP_FAMILIES: Final = (socket.AF_INET, socket.AF_INET6)
"""The address families of TCP sockets, which have ports and take TCP options."""


def constant(value: object) -> Callable[[], Any]:
    """Return a getter of ``value``, the form anyio's ``extra_attributes`` wants."""
    return lambda: value


def short_address(address: Any) -> Any:
    """Shorten an IPv6 ``(host, port, flowinfo, scope_id)`` to ``(host, port)``, as anyio does."""
    if isinstance(address, tuple) and len(address) == 4:
        return address[:2]
    return address
