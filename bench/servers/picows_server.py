"""WebSocket echo: picows, a WebSocket library written in Cython, driven by callbacks."""

from __future__ import annotations

import asyncio

from _common import HOST, MAX_MESSAGE_BYTES, announce_ready, parse_port
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server


class Echo(WSListener):  # type: ignore[misc]  # a Cython class without stubs
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif frame.msg_type in (WSMsgType.BINARY, WSMsgType.TEXT, WSMsgType.CONTINUATION):
            # The client sends unfragmented messages: one frame is one message.
            transport.send(frame.msg_type, frame.get_payload_as_memoryview(), frame.fin)


def listener(request: WSUpgradeRequest) -> Echo:
    return Echo()


async def main(port: int) -> None:
    server = await ws_create_server(listener, HOST, port, max_frame_size=MAX_MESSAGE_BYTES)
    announce_ready()
    await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(parse_port()))
