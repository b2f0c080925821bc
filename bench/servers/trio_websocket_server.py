"""WebSocket echo: trio-websocket's ``serve_websocket``."""

from __future__ import annotations

import functools

import trio
from _common import HOST, MAX_MESSAGE_BYTES, announce_ready, parse_port
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket


async def echo(request: WebSocketRequest) -> None:
    websocket = await request.accept()
    try:
        while True:
            await websocket.send_message(await websocket.get_message())
    except ConnectionClosed:
        pass


async def main(port: int) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(
                serve_websocket, echo, HOST, port, None, max_message_size=MAX_MESSAGE_BYTES
            )
        )
        announce_ready()


if __name__ == "__main__":
    trio.run(main, parse_port())
