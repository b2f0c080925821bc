"""Sending one message to many connections."""

from __future__ import annotations

from collections.abc import Iterable

from .connection import Data, WebSocketServerProtocol

__all__ = ["broadcast"]


def broadcast(
    websockets: Iterable[WebSocketServerProtocol],
    message: Data | bytearray | memoryview,
) -> int:
    """Send ``message`` to every open connection in ``websockets``, without waiting.

    Text is encoded once for all connections. Connections that are not open,
    are in the middle of sending a fragmented message, or already have more
    than their ``write_limit`` of bytes waiting (slow readers) are skipped,
    with a warning for the slow ones. Each connection writes what its
    transport takes at once and leaves the rest to its own writer task, so
    this never blocks the caller.

    Returns:
        The number of connections the message was queued for.

    Raises:
        TypeError: if ``message`` is neither text nor bytes-like.
    """
    data, text = encode(message, "broadcast")
    return deliver(websockets, data, text, "broadcast")


def encode(message: Data | bytearray | memoryview, what: str) -> tuple[bytes, bool]:
    """Return ``message`` as a payload, encoded once for every connection, and whether it is text.

    Args:
        message: text, or a bytes-like object for a binary message.
        what: the caller's name, for the error message (``broadcast``, ``publish``).

    Raises:
        TypeError: if ``message`` is neither text nor bytes-like.
    """
    if isinstance(message, str):
        return message.encode(), True
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message), False
    raise TypeError(f"{what} needs str or bytes-like data, not {type(message)}")


def deliver(
    websockets: Iterable[WebSocketServerProtocol], data: bytes, text: bool, what: str
) -> int:
    """Queue one encoded message on every connection that can take it now.

    Skips connections that are not open, and slow ones (more than
    ``write_limit`` bytes waiting) with a warning naming ``what`` skipped them.

    Returns:
        How many connections the message was queued for.
    """
    sent = 0
    for websocket in websockets:
        if not websocket.open:
            continue
        if websocket.buffered_amount() > websocket.options.write_limit:
            websocket.logger.warning("skipped %s: connection is too slow", what)
            continue
        if websocket.try_send(data, text=text):
            sent += 1
    return sent
