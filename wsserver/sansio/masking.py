"""Unmasking of client frames (RFC 6455, section 5.3).

:func:`apply_mask` comes from the optional C extension ``_speedups`` when it
was built at install time, and from :func:`apply_mask_python` otherwise.
"""

from __future__ import annotations

__all__ = ["HAS_SPEEDUPS", "apply_mask", "apply_mask_python"]


def apply_mask_python(data: bytes | bytearray | memoryview, mask: bytes) -> bytes:
    """XOR ``data`` with the 4-byte ``mask`` repeated; masking and unmasking alike.

    One big-integer XOR instead of a per-byte loop: it runs in C inside
    CPython's ``int`` implementation.

    :raises ValueError: if ``mask`` is not 4 bytes long.
    """
    if len(mask) != 4:
        raise ValueError("mask must contain 4 bytes")
    length = len(data)
    if length == 0:
        return b""
    repeated = mask * (length // 4 + 1)
    value = int.from_bytes(data, "little") ^ int.from_bytes(repeated[:length], "little")
    return value.to_bytes(length, "little")


try:
    from ._speedups import apply_mask
except ImportError:  # no compiler at install time: the pure-Python path
    apply_mask = apply_mask_python
    HAS_SPEEDUPS = False
else:
    HAS_SPEEDUPS = True
