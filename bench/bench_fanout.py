"""Fan-out over worker processes and Redis, against single-process broadcast; echo with workers.

Run with::

    .venv/bin/python bench/bench_fanout.py [--subscribers 10000] [--messages 100]
        [--backend trio] [--only fanout|echo] [--quick]

**Fan-out.** ``--subscribers`` WebSocket connections subscribe to one channel;
one more connection publishes ``--messages`` small text messages, one after
the other (the server acknowledges each once it has queued it locally and,
with Redis, published it). Each message carries the time it was sent
(``time.monotonic()``, one clock for every process of the machine); every
subscriber notes when it arrives. Reported: deliveries per second (all
deliveries over the time from the first publication to the last arrival),
p50 and p99 of the delivery latency, and how many of the expected deliveries
arrived. Three servers:

- ``broadcast``: one process, :func:`wsserver.broadcast` over a set of connections;
- ``channels``: one process, :class:`wsserver.pubsub.MemoryChannels`;
- ``redis-2w``: two worker processes (``serve_workers``) on one shared socket,
  linked by Redis channels (a redis-server of the benchmark's own).

The subscribers are Node's ``ws`` (from ``bench/client/``) in one process,
the publisher a raw socket in this one. The client shares the machine's two
cores with the server: on this 2-core machine two workers, Redis and the
client compete, so the figure says what a client-loaded box delivers, not
what two idle cores could.

**Echo.** Node's ``ws`` client (``bench/client/``, as in ``bench_echo.py``):
64 connections with 16 messages of 32 bytes in flight each, against the echo
path of one worker, two workers on one shared socket, and two workers with
``SO_REUSEPORT`` each. Nothing is pinned: with two workers, client and
servers share both cores.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CLIENT = BENCH / "client"
CHANNEL = "bench"


# The server ------------------------------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    """Run one benchmark server (``--serve KIND``); return its exit status."""
    import logging

    import wsserver
    from wsserver.options import TCPServeOptions
    from wsserver.pubsub import current_channels
    from wsserver.workers import serve_workers

    logging.basicConfig(level=logging.INFO, format="%(process)d %(levelname)s %(message)s")
    # Not a line per connection: the supervisor's lines say when workers serve.
    quiet = logging.getLogger("bench.connections")
    quiet.setLevel(logging.WARNING)
    room: set[wsserver.WebSocketServerProtocol] = set()
    use_broadcast = args.serve == "broadcast"

    async def handler(websocket: wsserver.WebSocketServerProtocol) -> None:
        if websocket.path == "/sub":
            if use_broadcast:
                room.add(websocket)
                try:
                    await websocket.send(f"pid {os.getpid()}")
                    await websocket.wait_closed()
                finally:
                    room.discard(websocket)
            else:
                async with current_channels().subscribe(websocket, CHANNEL):
                    await websocket.send(f"pid {os.getpid()}")
                    await websocket.wait_closed()
        elif websocket.path == "/pub":
            async for message in websocket:
                if use_broadcast:
                    wsserver.broadcast(room, message)
                else:
                    await current_channels().publish(CHANNEL, message)
                await websocket.send("ok")
        else:  # what the Node echo client connects to
            async for message in websocket:
                await websocket.send(message)

    options = TCPServeOptions(
        "127.0.0.1", args.port, compression=None, ping_interval=None,
        reuse_port=args.reuse_port, close_timeout=2, max_queue=None, logger=quiet,
    )  # fmt: skip
    return serve_workers(
        handler, options, workers=args.workers, backend=args.backend, redis_url=args.redis
    )


# Starting things ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A child process whose output is kept in a file, stopped with SIGTERM."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.log = log
        self._file = log.open("wb")
        self.popen = subprocess.Popen(command, stdout=self._file, stderr=subprocess.STDOUT,
                                      cwd=ROOT)  # fmt: skip

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(re.findall(pattern, self.log.read_text(errors="replace"))) < count:
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{pattern!r} not seen:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._file.close()


def start_server(kind: str, workers: int, logs: Path, backend: str, *, redis: str | None = None,
                 reuse_port: bool = False) -> tuple[Process, int]:  # fmt: skip
    port = free_port()
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", kind, "--port", str(port),
               "--workers", str(workers), "--backend", backend]  # fmt: skip
    if redis:
        command += ["--redis", redis]
    if reuse_port:
        command.append("--reuse-port")
    name = f"{kind}-{workers}{'-reuseport' if reuse_port else ''}"
    server = Process(command, logs / f"server-{name}.log")
    if workers > 1:
        server.wait_for(r"worker \d+ serving", workers)
    else:
        wait_listening(server, port)
    return server, port


def wait_listening(server: Process, port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return
        except OSError as exc:
            if server.popen.poll() is not None or time.monotonic() > deadline:
                log = server.log.read_text()[-2000:]
                raise RuntimeError(f"server did not listen:\n{log}") from exc
            time.sleep(0.05)


def start_redis(logs: Path) -> tuple[Process, str]:
    executable = shutil.which("redis-server")
    if executable is None:
        sys.exit("bench_fanout.py needs redis-server (python3 dev.py test installs it)")
    port = free_port()
    redis = Process([executable, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                     "--appendonly", "no", "--dir", str(logs)], logs / "redis.log")  # fmt: skip
    redis.wait_for("Ready to accept connections")
    return redis, f"redis://127.0.0.1:{port}"


# The lean client ------------------------------------------------------------------------

KEY = base64.b64encode(b"0123456789abcdef").decode()


def handshake(path: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()  # fmt: skip


def client_text_frame(text: str) -> bytes:
    """A masked text frame with a zero mask: the payload goes out as it is."""
    payload = text.encode()
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\x00\x00\x00\x00" + payload


async def publisher(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(handshake("/pub"))
    await reader.readuntil(b"\r\n\r\n")
    return reader, writer


async def publish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Publish the time now, and wait until the server says it is queued."""
    writer.write(client_text_frame(f"{time.monotonic():.6f}"))
    header = await reader.readexactly(2)
    await reader.readexactly(header[1] & 0x7F)  # "ok"


# The subscribers: Node's ws, which reads a small message in a few microseconds where a
# Python client would spend tens (the client shares the server's two cores). Node's
# process.hrtime() and Python's time.monotonic() read the same clock (CLOCK_MONOTONIC).
SUBSCRIBERS_JS = r"""
const WebSocket = require('ws');
const [port, count, warmup, expected] = process.argv.slice(1).map(Number);
const latencies = new Float64Array(expected);
const pids = {};
let subscribed = 0, seen = 0, measured = 0, last = 0, opening = 0, started = 0;
const sockets = [];
function report() {
  const sorted = latencies.slice(0, measured).sort();
  const at = (q) => measured ? sorted[Math.min(measured - 1, Math.floor(measured * q))] : NaN;
  const result = {delivered: measured, last, p50: at(0.5), p99: at(0.99)};
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(0);
}
process.on('SIGTERM', report);
function open() {
  while (opening < 500 && started < count) {
    opening++; started++;
    const ws = new WebSocket(`ws://127.0.0.1:${port}/sub`, {perMessageDeflate: false});
    sockets.push(ws);
    ws.on('error', (error) => { console.error(String(error)); process.exit(1); });
    ws.on('message', (data) => {
      const text = data.toString();
      if (text.startsWith('pid ')) {
        opening--; open();
        pids[text.slice(4)] = (pids[text.slice(4)] || 0) + 1;
        if (++subscribed === count) process.stdout.write(JSON.stringify({pids}) + '\n');
        return;
      }
      const now = Number(process.hrtime.bigint()) / 1e9;
      if (++seen <= warmup) {
        if (seen === warmup) process.stdout.write('{"warm": true}\n');
        return;
      }
      latencies[measured++] = now - parseFloat(text);
      last = now;
      if (measured === expected) report();
    });
  }
}
open();
"""


async def fanout(port: int, subscribers: int, messages: int) -> dict[str, Any]:
    warmup = 3
    client = await asyncio.create_subprocess_exec(
        "node", "-e", SUBSCRIBERS_JS, str(port), str(subscribers), str(warmup * subscribers),
        str(messages * subscribers), stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "NODE_PATH": str(CLIENT / "node_modules")},
    )  # fmt: skip
    assert client.stdout is not None
    try:
        pids = json.loads(await asyncio.wait_for(client.stdout.readline(), 120))["pids"]
        reader, writer = await publisher(port)
        for _ in range(warmup):  # not counted: every subscriber gets these first
            await publish(reader, writer)
        await asyncio.wait_for(client.stdout.readline(), 60)
        started = time.monotonic()
        for _ in range(messages):
            await publish(reader, writer)
        try:
            line = await asyncio.wait_for(client.stdout.readline(), 60)
        except asyncio.TimeoutError:  # report the shortfall
            client.send_signal(signal.SIGTERM)
            line = await client.stdout.readline()
        writer.close()
        result = json.loads(line)
    finally:
        if client.returncode is None:
            client.kill()
        await client.wait()
    delivered = result["delivered"]
    return {
        "delivered": delivered,
        "expected": messages * subscribers,
        "per_second": delivered / max(result["last"] - started, 1e-9),
        "p50_ms": 1000 * (result["p50"] or float("nan")),
        "p99_ms": 1000 * (result["p99"] or float("nan")),
        "per_worker": sorted(pids.values()),
    }


def echo(port: int, seconds: float) -> dict[str, Any]:
    arguments = ["node", str(CLIENT / "client.js"), "--mode", "ws", "--port", str(port),
                 "--scenario", "echo", "--connections", "64", "--inflight", "16", "--size",
                 "32", "--seconds", str(seconds)]  # fmt: skip
    completed = subprocess.run(arguments, capture_output=True, text=True, timeout=120)
    if completed.returncode or not completed.stdout.strip():
        raise RuntimeError(f"echo client failed: {completed.stderr[-500:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


# The run ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="trio", choices=["trio", "asyncio"])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3, help="echo: seconds counted")
    parser.add_argument("--only", choices=["fanout", "echo"])
    parser.add_argument("--quick", action="store_true", help="1,000 subscribers, 20 messages")
    args = parser.parse_args()
    if args.serve:
        return serve(args)
    if args.quick:
        args.subscribers, args.messages, args.seconds = 1000, 20, 1
    logs = Path(tempfile.mkdtemp(prefix="wsserver-bench-fanout-"))
    print(f"# bench_fanout: backend {args.backend}, {os.cpu_count()} CPUs; logs in {logs}")
    import wsserver

    print(f"# wsserver from {Path(wsserver.__file__).parent}")
    rows: list[str] = []
    if args.only in (None, "fanout"):
        redis, url = start_redis(logs)
        try:
            for kind, workers in (("broadcast", 1), ("channels", 1), ("redis", 2)):
                server, port = start_server(kind, workers, logs, args.backend,
                                            redis=url if kind == "redis" else None)  # fmt: skip
                try:
                    result = asyncio.run(fanout(port, args.subscribers, args.messages))
                finally:
                    server.stop()
                name = f"{kind}-{workers}w"
                row = (f"| fan-out {name} | {args.subscribers:,} | {args.messages} | "
                       f"{result['per_second']:,.0f} | {result['p50_ms']:.1f} | "
                       f"{result['p99_ms']:.1f} | {result['delivered']:,} / "
                       f"{result['expected']:,} | {result['per_worker']} |")  # fmt: skip
                print(row, flush=True)
                rows.append(row)
        finally:
            redis.stop()
    if args.only in (None, "echo"):
        for workers, reuse_port in ((1, False), (2, False), (2, True)):
            server, port = start_server("echo", workers, logs, args.backend,
                                        reuse_port=reuse_port)  # fmt: skip
            try:
                result = echo(port, args.seconds)
            finally:
                server.stop()
            how = "SO_REUSEPORT" if reuse_port else "shared socket"
            row = f"| echo {workers}w ({how}) | {result['rate']:,.0f} msg/s |"
            print(row, flush=True)
            rows.append(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
