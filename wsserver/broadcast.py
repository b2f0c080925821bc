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
    if isinstance(message, str):
        data = message.encode()
        text = True
    elif isinstance(message, (bytes, bytearray, memoryview)):
        data = bytes(message)
        text = False
    else:
        raise TypeError(f"broadcast needs str or bytes-like data, not {type(message)}")
    sent = 0
    for websocket in websockets:
        if not websocket.open:
            continue
        if websocket.buffered_amount() > websocket.options.write_limit:
            websocket.logger.warning("skipped broadcast: connection is too slow")
            continue
        if websocket.try_send(data, text=text):
            sent += 1
    return sent
