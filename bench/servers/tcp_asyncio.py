"""Raw TCP echo on asyncio: a plain ``Protocol``, the ceiling for the asyncio servers."""

from __future__ import annotations

import asyncio

from _common import HOST, announce_ready, parse_port


class Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


async def main(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Echo, HOST, port, backlog=100)
    async with server:
        announce_ready()
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(parse_port()))
