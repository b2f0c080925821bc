"""What one idle connection holds, by tracemalloc: the server in this process, clients in another.

Run with::

    .venv/bin/python bench/trace_idle.py [--backend asyncio|trio] [--connections 500]
        [--pings] [--deflate] [--top 25]

The server (``wsserver.serve`` under anyio, the echo handler of
``bench/servers/``) runs here with tracemalloc on; a child process opens the
connections with raw sockets (handshake, and with ``--deflate`` one compressed
message and its echo, so that both zlib contexts exist) and holds them. The
difference between a snapshot before and one after, divided by the number of
connections, is printed grouped by the line that allocated, largest first.
``--pings`` keeps the default keepalive (``ping_interval=20``); without it
pings are off, as in ``bench_echo.py``.
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import textwrap
import tracemalloc

import anyio

import wsserver

CLIENT = textwrap.dedent(
    """
    import asyncio, base64, os, sys, zlib

    async def one(port, deflate):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        offer = "Sec-WebSocket-Extensions: permessage-deflate\\r\\n" if deflate else ""
        writer.write((
            "GET / HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
            f"Sec-WebSocket-Key: {key}\\r\\nSec-WebSocket-Version: 13\\r\\n{offer}\\r\\n"
        ).encode())
        await reader.readuntil(b"\\r\\n\\r\\n")
        if deflate:
            body = zlib.compressobj(wbits=-15)
            payload = body.compress(b"x" * 32) + body.flush(zlib.Z_SYNC_FLUSH)
            payload = payload[:-4]
            writer.write(bytes([0xC2, 0x80 | len(payload)]) + bytes(4) + payload)
            await reader.read(2)
        return reader, writer

    async def main(port, count, deflate):
        held = []
        for start in range(0, count, 50):
            held += await asyncio.gather(
                *(one(port, deflate) for _ in range(min(50, count - start)))
            )
        print("HELD", flush=True)
        sys.stdin.readline()

    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"))
    """
)


async def echo(websocket: wsserver.WebSocketServerProtocol) -> None:
    async for message in websocket:
        await websocket.send(message)


async def measure(arguments: argparse.Namespace) -> None:
    async with anyio.create_task_group() as task_group:
        server = await task_group.start(
            lambda task_status: wsserver.serve(
                echo, "127.0.0.1", 0,
                compression="deflate" if arguments.deflate else None,
                ping_interval=20 if arguments.pings else None,
                task_status=task_status,
            )
        )
        port = server.sockets[0].getsockname()[1]
        # One connection first, so that what every server allocates once is in "before".
        warm = await _clients(port, 1, arguments.deflate)
        await _release(warm)
        gc.collect()
        before = tracemalloc.take_snapshot()
        client = await _clients(port, arguments.connections, arguments.deflate)
        while len(server.websockets) < arguments.connections:
            await anyio.sleep(0.05)
        await anyio.sleep(0.5)
        gc.collect()
        after = tracemalloc.take_snapshot()
        await _release(client)
        server.close()
    report(before, after, arguments.connections, arguments.top)


async def _clients(port: int, count: int, deflate: bool) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", CLIENT, str(port), str(count), "1" if deflate else "0"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    line = await anyio.to_thread.run_sync(process.stdout.readline)
    if line.strip() != "HELD":
        raise RuntimeError("the client failed")
    return process


async def _release(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.write("\n")
    process.stdin.flush()
    await anyio.to_thread.run_sync(process.wait)
    await anyio.sleep(0.5)


def report(
    before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, count: int, top: int
) -> None:
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    stats = after.filter_traces(filters).compare_to(before.filter_traces(filters), "traceback")
    total = sum(stat.size_diff for stat in stats)
    print(f"{total / count / 1024:.2f} KiB per connection ({count} connections)")
    # Grouped by the allocating line and the innermost line of wsserver that led to it.
    groups: dict[tuple[str, str], list[int]] = {}
    for stat in stats:
        frames = list(reversed(stat.traceback))  # innermost first
        here = _where(frames[0])
        ours = next((_where(f) for f in frames if "/wsserver/" in f.filename), "-")
        group = groups.setdefault((here, ours if ours != here else ""), [0, 0])
        group[0] += stat.size_diff
        group[1] += stat.count_diff
    ranked = sorted(groups.items(), key=lambda item: -item[1][0])
    for (here, ours), (size, blocks) in ranked[:top]:
        via = f"  <- {ours}" if ours else ""
        print(f"{size / count:8.0f} B {blocks / count:6.1f} blocks  {here}{via}")
    print("by the innermost line of wsserver:")
    owners: dict[str, int] = {}
    for (here, ours), (size, _) in groups.items():
        owner = ours or here
        owners[owner] = owners.get(owner, 0) + size
    for owner, size in sorted(owners.items(), key=lambda item: -item[1])[:top]:
        print(f"{size / count:8.0f} B  {owner}")


def _where(frame: tracemalloc.Frame) -> str:
    name = frame.filename.split("site-packages/")[-1].split("/work/main/")[-1]
    return f"{name.split('lib/python3.11/')[-1]}:{frame.lineno}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--pings", action="store_true", help="keepalive on (ping_interval=20)")
    parser.add_argument("--deflate", action="store_true", help="negotiate permessage-deflate")
    parser.add_argument("--top", type=int, default=25)
    arguments = parser.parse_args()
    tracemalloc.start(16)
    anyio.run(measure, arguments, backend=arguments.backend)


if __name__ == "__main__":
    main()
