"""WebSocket echo: wsserver on Trio (``wsserver.serve`` in a nursery)."""

from __future__ import annotations

import functools

import _common
import trio
from _common import HOST, MAX_MESSAGE_BYTES, announce_ready, parse_port

import wsserver


async def echo(websocket: wsserver.WebSocketServerProtocol) -> None:
    async for message in websocket:
        await websocket.send(message)


async def main(port: int) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(
                wsserver.serve,
                echo,
                HOST,
                port,
                compression=_common.compression(),
                ping_interval=None,
                max_size=MAX_MESSAGE_BYTES,
            )
        )
        announce_ready()


if __name__ == "__main__":
    trio.run(main, parse_port())
