"""TCP echo throughput: wsserver's asyncio byte stream against its peers.

One command runs every server in the same session::

    .venv/bin/python bench/bench_tcp_echo.py [--seconds 2] [--rounds 3] [--connections 1 64]

Servers (each in its own process, pinned to CPU 0 with ``taskset``):

a. ``asyncio-protocol``: a plain asyncio ``Protocol`` echo, the asyncio ceiling;
b. ``anyio-asyncio``: ``anyio.create_tcp_listener`` on asyncio (anyio's stock stream);
c. ``wsserver-asyncio``: the same anyio handler over ``wsserver._transport.open_listeners``;
d. ``anyio-trio``: ``anyio.create_tcp_listener`` on Trio;
e. ``trio``: ``trio.serve_tcp`` with a Trio handler, the Trio ceiling.

The client (pinned to CPU 1) is a bare ``epoll`` loop, leaner than any of the
servers, that keeps N connections ping-ponging fixed-size messages: each
connection sends one message, waits for the whole echo, and sends the next. A
message counts once its echo is back. Each round runs every server once, in a
fresh random order; the table shows medians over ``--rounds``.

Besides msg/s the table shows the server's CPU use over the measured window
and its CPU time per message. When neither process is near 100% CPU, the
figures measure wake-up latency (on virtual machines, waking an idle vCPU can
cost more than echoing a message) more than the servers; ``--client-cpu 0``
runs the client on the server's CPU, which makes the run CPU-bound and is a
useful cross-check there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import select
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVERS = {
    "asyncio-protocol": "a",
    "anyio-asyncio": "b",
    "wsserver-asyncio": "c",
    "anyio-trio": "d",
    "trio": "e",
}
BASELINES = {
    "asyncio-protocol": "asyncio-protocol",
    "anyio-asyncio": "asyncio-protocol",
    "wsserver-asyncio": "asyncio-protocol",
    "anyio-trio": "trio",
    "trio": "trio",
}
HOST = "127.0.0.1"
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


# -- servers ---------------------------------------------------------------


def announce(port: int) -> None:
    print(f"PORT {port}", flush=True)


def serve_asyncio_protocol() -> None:
    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: Any = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Echo, HOST, 0)
        announce(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


async def anyio_echo(stream: Any) -> None:
    import anyio

    async with stream:
        try:
            while True:
                await stream.send(await stream.receive())
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass


def serve_anyio(backend: str) -> None:
    import anyio
    from anyio.abc import SocketAttribute

    async def main() -> None:
        listener = await anyio.create_tcp_listener(local_host=HOST, local_port=0)
        announce(listener.extra(SocketAttribute.local_port))
        await listener.serve(anyio_echo)

    anyio.run(main, backend=backend)


def serve_wsserver_asyncio() -> None:
    import anyio
    from anyio.abc import SocketAttribute

    from wsserver._transport import open_listeners

    async def main() -> None:
        [listener] = await open_listeners(host=HOST, port=0, backlog=128)
        announce(listener.extra(SocketAttribute.local_port))
        await listener.serve(anyio_echo)

    anyio.run(main, backend="asyncio")


def serve_trio() -> None:
    import trio

    async def echo(stream: trio.SocketStream) -> None:
        try:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
        except trio.BrokenResourceError:
            pass

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(trio.serve_tcp, echo, 0, host=HOST))
            announce(listeners[0].socket.getsockname()[1])

    trio.run(main)


SERVE: dict[str, Callable[[], None]] = {
    "asyncio-protocol": serve_asyncio_protocol,
    "anyio-asyncio": lambda: serve_anyio("asyncio"),
    "wsserver-asyncio": serve_wsserver_asyncio,
    "anyio-trio": lambda: serve_anyio("trio"),
    "trio": serve_trio,
}


# -- client ----------------------------------------------------------------


def process_cpu_seconds(pid: int) -> tuple[float, float]:
    """Return the (user, system) CPU seconds used so far by process ``pid``."""
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc(5), utime and stime, counted after the ")".
    return int(fields[11]) / CLOCK_TICKS_PER_SECOND, int(fields[12]) / CLOCK_TICKS_PER_SECOND


def run_client(args: argparse.Namespace) -> None:
    """Ping-pong on every connection from one ``epoll`` loop; print JSON results.

    A bare ``epoll`` loop costs the client about half of what an asyncio
    ``Protocol`` does per message, so the server, not the client, sets the pace.
    """
    (connection_count,) = args.connections
    message = b"x" * args.message_bytes
    poller = select.epoll()
    sockets: dict[int, socket.socket] = {}
    awaiting_bytes: dict[int, int] = {}
    for _ in range(connection_count):
        sock = socket.create_connection((HOST, args.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        sockets[sock.fileno()] = sock
        poller.register(sock.fileno(), select.EPOLLIN)
    for fd, sock in sockets.items():
        awaiting_bytes[fd] = len(message)
        sock.send(message)

    messages = 0
    warmup_ends = time.perf_counter() + args.warmup
    now = time.perf_counter()
    while now < warmup_ends:
        messages += ping_pong(poller, sockets, awaiting_bytes, message)
        now = time.perf_counter()
    messages = 0
    server_cpu_before = process_cpu_seconds(args.server_pid)
    client_cpu_before = time.process_time()
    started = now
    measure_ends = started + args.seconds
    while now < measure_ends:
        messages += ping_pong(poller, sockets, awaiting_bytes, message)
        now = time.perf_counter()
    elapsed = now - started
    server_user_after, server_system_after = process_cpu_seconds(args.server_pid)
    server_user = server_user_after - server_cpu_before[0]
    server_cpu = server_user + server_system_after - server_cpu_before[1]
    client_cpu = time.process_time() - client_cpu_before
    for sock in sockets.values():
        sock.close()
    result = {
        "messages_per_second": messages / elapsed,
        "server_cpu_fraction": server_cpu / elapsed,
        "client_cpu_fraction": client_cpu / elapsed,
        "server_cpu_us_per_message": server_cpu / max(messages, 1) * 1e6,
        "server_user_cpu_us_per_message": server_user / max(messages, 1) * 1e6,
    }
    print(json.dumps(result), flush=True)


def ping_pong(
    poller: select.epoll,
    sockets: dict[int, socket.socket],
    awaiting_bytes: dict[int, int],
    message: bytes,
) -> int:
    """Serve one batch of readable connections; return the echoes completed."""
    completed = 0
    for fd, _ in poller.poll(0.1):
        sock = sockets[fd]
        received = len(sock.recv(65536))
        if not received:
            raise RuntimeError("the server closed a connection")
        awaiting_bytes[fd] -= received
        if awaiting_bytes[fd] <= 0:
            completed += 1
            awaiting_bytes[fd] += len(message)
            sock.send(message)
    return completed


# -- orchestration -----------------------------------------------------------


def pinned(cpu: int, command: list[str], pin: bool) -> list[str]:
    return ["taskset", "-c", str(cpu), *command] if pin else command


def measure(server: str, connections: int, args: argparse.Namespace, pin: bool) -> dict[str, float]:
    script = str(Path(__file__).resolve())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        pinned(0, [sys.executable, script, "--serve", server], pin),
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"server {server} did not start: {line!r}")
        port = int(line.split()[1])
        client = subprocess.run(
            pinned(
                args.client_cpu,
                [
                    sys.executable,
                    script,
                    "--client",
                    f"--port={port}",
                    f"--server-pid={process.pid}",
                    f"--connections={connections}",
                    f"--seconds={args.seconds}",
                    f"--warmup={args.warmup}",
                    f"--message-bytes={args.message_bytes}",
                ],
                pin,
            ),
            capture_output=True,
            text=True,
            env=env,
        )
        if client.returncode:
            raise RuntimeError(f"client failed against {server}:\n{client.stderr}")
        result: dict[str, float] = json.loads(client.stdout)
        return result
    finally:
        process.terminate()
        process.wait(timeout=10)


def run_all(args: argparse.Namespace) -> None:
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    print(
        f"# TCP echo, {args.message_bytes}-byte messages, {args.seconds:g} s per run"
        f" after {args.warmup:g} s warm-up, median of {args.rounds} round(s);"
        f" Python {sys.version.split()[0]};"
        + (f" server on CPU 0, client on CPU {args.client_cpu}" if pin else " NOT pinned")
    )
    rows = []
    for connections in args.connections:
        results: dict[str, list[dict[str, float]]] = {name: [] for name in args.servers}
        for _ in range(args.rounds):
            # A fresh random order each round, so that a noisy neighbour does
            # not always hit the same server.
            for name in random.sample(args.servers, len(args.servers)):
                results[name].append(measure(name, connections, args, pin))
                print(
                    f"  {name:17} {connections:3} conns: "
                    f"{results[name][-1]['messages_per_second']:9.0f} msg/s",
                    file=sys.stderr,
                    flush=True,
                )
        medians = {
            name: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            for name, runs in results.items()
        }
        for name, median in medians.items():
            baseline = medians.get(BASELINES[name])
            ratio = (
                f"{median['messages_per_second'] / baseline['messages_per_second']:.2f}x"
                f" vs ({SERVERS[BASELINES[name]]})"
                if baseline
                else "-"
            )
            rows.append(
                f"| ({SERVERS[name]}) {name} | {connections} "
                f"| {median['messages_per_second']:,.0f} | {ratio} "
                f"| {median['server_cpu_fraction'] * 100:.0f}% "
                f"| {median['server_cpu_us_per_message']:.1f} "
                f"| {median['server_user_cpu_us_per_message']:.1f} "
                f"| {median['client_cpu_fraction'] * 100:.0f}% |"
            )
    print()
    print(
        "| server | conns | msg/s | ratio | server CPU | server CPU us/msg"
        " | of which user | client CPU |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    print("\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--message-bytes", type=int, default=32)
    parser.add_argument(
        "--client-cpu",
        type=int,
        default=1,
        help="CPU for the client; 0 shares the server's CPU, a CPU-bound cross-check",
    )
    parser.add_argument("--servers", nargs="+", choices=list(SERVERS), default=list(SERVERS))
    parser.add_argument("--serve", choices=list(SERVERS), help=argparse.SUPPRESS)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            SERVE[args.serve]()
    elif args.client:
        run_client(args)
    else:
        run_all(args)


if __name__ == "__main__":
    main()
