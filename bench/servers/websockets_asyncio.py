"""WebSocket echo: the websockets library's asyncio server."""

from __future__ import annotations

import asyncio

import _common
from _common import HOST, MAX_MESSAGE_BYTES, announce_ready, parse_port
from websockets.asyncio.server import ServerConnection, serve


async def echo(websocket: ServerConnection) -> None:
    async for message in websocket:
        await websocket.send(message)


async def main(port: int) -> None:
    async with serve(
        echo,
        HOST,
        port,
        compression=_common.compression(),
        ping_interval=None,
        max_size=MAX_MESSAGE_BYTES,
    ) as server:
        announce_ready()
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(parse_port()))
