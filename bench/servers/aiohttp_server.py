"""WebSocket echo: aiohttp's server (``web.WebSocketResponse``), access log off."""

from __future__ import annotations

import asyncio

import _common
from _common import HOST, MAX_MESSAGE_BYTES, announce_ready, parse_port
from aiohttp import WSMsgType, web


async def echo(request: web.Request) -> web.WebSocketResponse:
    websocket = web.WebSocketResponse(
        compress=_common.DEFLATE, heartbeat=None, max_msg_size=MAX_MESSAGE_BYTES
    )
    await websocket.prepare(request)
    async for message in websocket:
        if message.type is WSMsgType.BINARY:
            await websocket.send_bytes(message.data)
        elif message.type is WSMsgType.TEXT:
            await websocket.send_str(message.data)
    return websocket


async def main(port: int) -> None:
    app = web.Application()
    app.router.add_get("/", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, HOST, port).start()
    announce_ready()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(parse_port()))
