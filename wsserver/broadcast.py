"""Sending one message to many connections."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from .connection import Data, WebSocketServerProtocol
from .sansio import State

__all__ = ["broadcast"]

logger = logging.getLogger("wsserver.server")


def broadcast(
    websockets: Iterable[WebSocketServerProtocol],
    message: Data | bytearray | memoryview,
) -> int:
    """Send ``message`` to every open connection in ``websockets``, without waiting.

    Text is encoded once for all connections. Connections that are not open,
    are in the middle of sending a fragmented message, or already have more
    than their ``write_limit`` of bytes waiting (slow readers) are skipped,
    with a warning for the slow ones. Writing happens in each connection's own
    task group, so this never blocks the caller.

    :returns: the number of connections the message was queued for.
    :raises TypeError: if ``message`` is neither text nor bytes-like.
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
        if websocket.protocol.state is not State.OPEN or websocket._sending_fragments:
            continue
        if websocket.buffered_amount() > websocket.write_limit:
            websocket.logger.warning("skipped broadcast: connection is too slow")
            continue
        if text:
            websocket.protocol.send_text(data)
        else:
            websocket.protocol.send_binary(data)
        websocket._schedule_flush()
        sent += 1
    return sent
