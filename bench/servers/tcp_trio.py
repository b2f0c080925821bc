"""Raw TCP echo on Trio: ``trio.serve_tcp``, the ceiling for the Trio servers."""

from __future__ import annotations

import functools

import trio
from _common import HOST, announce_ready, parse_port


async def echo(stream: trio.SocketStream) -> None:
    try:
        async for data in stream:
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass


async def main(port: int) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(trio.serve_tcp, echo, port, host=HOST))
        announce_ready()


if __name__ == "__main__":
    trio.run(main, parse_port())
