"""Scale: hold 10,000 idle WebSocket connections on one wsserver process, per backend.

    .venv/bin/python bench/bench_scale.py [--connections 10000] [--backends trio,asyncio]

For each backend it starts a fresh server process (default options, idle
handlers waiting in ``recv()``) and a fresh client process (asyncio raw
sockets: the opening handshake, then pongs for the server's keepalive pings
and an answer to its close), each raising its own open-file limit. It reports:

* the time for the clients to open every connection (TCP connect, accept,
  opening handshake), and the rate;
* the server's RSS before and after (``/proc/self/status`` VmRSS, after
  ``gc.collect()`` and ``malloc_trim(0)``) and the growth per connection;
* the time for ``server.close()`` + ``wait_closed()`` to close them all with 1001.

and prints a markdown table. The same script is the server (``serve``) and
the clients (``clients``) when it runs itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ctypes
import ctypes.util
import gc
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing

#: Opening handshakes in flight at once (the server's listen backlog is 4096).
CONNECT_CONCURRENCY = 512
BACKLOG = 4096
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def raise_open_file_limit(needed: int) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        sys.exit(f"needs {needed} open files; the hard limit is {hard}")


def rss_bytes() -> int:
    gc.collect()
    ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def reply(value: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


# The server process ---------------------------------------------------------------


def serve(backend: str, connections: int) -> None:
    import anyio
    import anyio.to_thread

    import wsserver

    raise_open_file_limit(connections + 100)

    async def main() -> None:
        started = 0
        first_at = last_at = 0.0

        async def idle(websocket: wsserver.WebSocketServerProtocol) -> None:
            nonlocal started, first_at, last_at
            started += 1
            last_at = time.perf_counter()
            if started == 1:
                first_at = last_at
            try:
                async for _ in websocket:
                    pass
            except wsserver.ConnectionClosed:
                pass

        async with anyio.create_task_group() as task_group:
            server = await task_group.start(
                lambda task_status: wsserver.serve(
                    idle, "127.0.0.1", 0, backlog=BACKLOG, task_status=task_status
                )
            )
            reply({"port": server.sockets[0].getsockname()[1], "rss": rss_bytes()})
            while True:
                command = (await anyio.to_thread.run_sync(sys.stdin.readline)).split()
                if not command or command[0] == "close":
                    begin = time.perf_counter()
                    server.close()
                    await server.wait_closed()
                    reply({"close_seconds": time.perf_counter() - begin})
                    return
                if command[0] == "wait":
                    while started < int(command[1]):
                        await anyio.sleep(0.05)
                    await anyio.sleep(1.0)  # let every handler settle in recv()
                    reply({
                        "open": len(server.websockets), "rss": rss_bytes(),
                        "accept_window_seconds": last_at - first_at,
                    })

    anyio.run(main, backend=backend)


# The client process ---------------------------------------------------------------


class IdleClient(asyncio.Protocol):
    """One idle client: handshake, then pongs and the closing handshake only."""

    def __init__(self, opened: asyncio.Future[None], closed: asyncio.Future[None]) -> None:
        self.opened = opened
        self.closed = closed
        self.buffer = b""
        self.key = base64.b64encode(os.urandom(16))
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + self.key
            + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.opened.done():
            head, found, rest = self.buffer.partition(b"\r\n\r\n")
            if not found:
                return
            accept = base64.b64encode(hashlib.sha1(self.key + _ACCEPT_GUID).digest())
            if not head.startswith(b"HTTP/1.1 101 ") or accept not in head:
                self.opened.set_exception(RuntimeError(f"refused: {head[:100]!r}"))
                return
            self.opened.set_result(None)
            self.buffer = rest
        while len(self.buffer) >= 2 and len(self.buffer) >= 2 + (self.buffer[1] & 0x7F):
            # Only control frames (at most 125 bytes) come to an idle client.
            opcode, length = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
            payload, self.buffer = self.buffer[2 : 2 + length], self.buffer[2 + length :]
            if opcode == 0x9:
                self.send(0xA, payload)
            elif opcode == 0x8:
                self.send(0x8, payload[:2])

    def send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        assert self.transport is not None
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)


def clients(port: int, connections: int) -> None:
    raise_open_file_limit(connections + 100)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
        closed: list[asyncio.Future[None]] = []

        async def open_one() -> None:
            async with limit:
                opened: asyncio.Future[None] = loop.create_future()
                done: asyncio.Future[None] = loop.create_future()
                closed.append(done)
                await loop.create_connection(
                    lambda: IdleClient(opened, done), "127.0.0.1", port
                )
                await opened

        begin = time.perf_counter()
        await asyncio.gather(*(open_one() for _ in range(connections)))
        reply({"open_seconds": time.perf_counter() - begin})
        await asyncio.wait_for(asyncio.gather(*closed), 600)
        reply({"closed": len(closed)})

    asyncio.run(main())


# The orchestrator -----------------------------------------------------------------


class Child:
    def __init__(self, *arguments: str) -> None:
        self.role = " ".join(arguments[:2])
        self.process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), *arguments],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

    def read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.role} exited early")
        result: dict[str, Any] = json.loads(line)
        return result

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.read()

    def wait(self) -> None:
        if self.process.wait(timeout=600) != 0:
            raise RuntimeError(f"{self.role} failed")


def measure(backend: str, connections: int) -> dict[str, Any]:
    server = Child("serve", backend, str(connections))
    try:
        started = server.read()
        client = Child("clients", str(started["port"]), str(connections))
        try:
            opened = client.read()
            held = server.ask(f"wait {connections}")
            assert held["open"] == connections, held
            closing = server.ask("close")
            assert client.read() == {"closed": connections}
            client.wait()
        finally:
            client.process.kill()
        server.wait()
    finally:
        server.process.kill()
    growth = held["rss"] - started["rss"]
    return {
        "backend": backend,
        "connections": connections,
        "open_seconds": opened["open_seconds"],
        "rss_before": started["rss"],
        "rss_after": held["rss"],
        "per_connection": growth / connections,
        "close_seconds": closing["close_seconds"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| backend | connections held | open all (s) | connections/s | server RSS before"
        " → after (MiB) | RSS per connection (KiB) | close all with 1001 (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['backend']} | {row['connections']:,} | {row['open_seconds']:.1f}"
            f" | {row['connections'] / row['open_seconds']:,.0f}"
            f" | {row['rss_before'] / 2**20:.0f} → {row['rss_after'] / 2**20:.0f}"
            f" | {row['per_connection'] / 1024:.1f} | {row['close_seconds']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "clients":
        clients(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--backends", default="trio,asyncio")
    args = parser.parse_args()
    rows = [measure(backend, args.connections) for backend in args.backends.split(",")]
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs,"
        f" load average {os.getloadavg()[0]:.1f} at the end"
    )
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
