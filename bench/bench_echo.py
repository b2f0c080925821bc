"""End-to-end WebSocket echo: wsserver on Trio and asyncio against its peers, in one run.

Run with::

    .venv/bin/python bench/bench_echo.py [--seconds 3] [--repeat 1] [--quick]
        [--only SCENARIO ...] [--contenders NAME ...] [--idle-connections 5000]

Each server (``bench/servers/*.py``) runs in its own process pinned to CPU 0
(``taskset -c 0``), with compression and keepalive pings disabled and the same
2 MiB message limit. The load client is Node's ``ws`` with ``bufferutil``
(``bench/client/``, installed with ``npm ci`` on first use), pinned to CPU 1.
Raw TCP echo servers on each loop give the ceiling; the client talks plain
TCP to them, sending the same payload without WebSocket framing.

Scenarios (the rate is counted after a warm-up):

- 32-byte binary messages per second: 1 connection ping-pong (send, wait for
  the echo, repeat), 64 connections ping-pong, 64 connections with 16
  messages in flight each;
- 1 MiB binary messages, 1 connection ping-pong, in MB/s (10**6 bytes);
- handshakes per second: connect, open, close; one at a time and 8 in parallel;
- memory per idle connection: server RSS before and after opening 5,000
  connections, on a freshly started server, divided by 5,000.

All servers stay up together so that each scenario measures every contender
within a few seconds of the others; with ``--repeat N`` each scenario runs N
interleaved rounds and the best round counts. Besides the results table the
script prints the client's and the server's CPU use in each measurement: a
client well below 100% is not the bottleneck.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
SERVERS = BENCH / "servers"
CLIENT = BENCH / "client"
SERVER_CPU = "0"
CLIENT_CPU = "1"
CLIENT_OPEN_FILES = 20_000
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
LOG_DIR = Path("/tmp/wsserver-bench-echo")


@dataclass(frozen=True)
class Contender:
    name: str
    script: str
    mode: str  # "ws" or "tcp": what the client speaks
    deflate: bool = False  # the server can negotiate permessage-deflate (--deflate)


CONTENDERS = [
    Contender("wsserver-trio", "wsserver_trio.py", "ws", deflate=True),
    Contender("wsserver-asyncio", "wsserver_asyncio.py", "ws", deflate=True),
    Contender("websockets-trio", "websockets_trio.py", "ws", deflate=True),
    Contender("websockets-asyncio", "websockets_asyncio.py", "ws", deflate=True),
    Contender("trio-websocket", "trio_websocket_server.py", "ws"),
    Contender("aiohttp", "aiohttp_server.py", "ws", deflate=True),
    Contender("picows", "picows_server.py", "ws"),
    Contender("tcp-trio", "tcp_trio.py", "tcp"),
    Contender("tcp-asyncio", "tcp_asyncio.py", "tcp"),
]

# (label, numerator, denominator): the ratio columns of the table.
RATIOS = [
    ("wsserver-asyncio / websockets-asyncio", "wsserver-asyncio", "websockets-asyncio"),
    ("wsserver-asyncio / aiohttp", "wsserver-asyncio", "aiohttp"),
    ("wsserver-trio / websockets-asyncio", "wsserver-trio", "websockets-asyncio"),
    ("wsserver-trio / websockets-trio", "wsserver-trio", "websockets-trio"),
    ("wsserver-trio / trio-websocket", "wsserver-trio", "trio-websocket"),
    ("wsserver-asyncio / tcp-asyncio", "wsserver-asyncio", "tcp-asyncio"),
    ("wsserver-trio / tcp-trio", "wsserver-trio", "tcp-trio"),
]


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    unit: str
    client_args: dict[str, Any]
    result_field: str = "rate"
    scale: float = 1.0
    deflate: bool = False  # the client offers permessage-deflate; only servers that can run it


SCENARIOS = [
    Scenario(
        "small-1", "32 B, 1 conn, ping-pong", "msg/s",
        {"scenario": "echo", "connections": 1, "inflight": 1, "size": 32},
    ),
    Scenario(
        "small-64", "32 B, 64 conns, ping-pong", "msg/s",
        {"scenario": "echo", "connections": 64, "inflight": 1, "size": 32},
    ),
    Scenario(
        "pipelined", "32 B, 64 conns x 16 in flight", "msg/s",
        {"scenario": "echo", "connections": 64, "inflight": 16, "size": 32},
    ),
    Scenario(
        "large", "1 MiB, 1 conn, ping-pong", "MB/s",
        {"scenario": "echo", "connections": 1, "inflight": 1, "size": 2**20},
        result_field="bytes_per_second", scale=1e6,
    ),
    Scenario(
        "deflate-64", "32 B, 64 conns, permessage-deflate", "msg/s",
        {"scenario": "echo", "connections": 64, "inflight": 1, "size": 32, "deflate": 1},
        deflate=True,
    ),
    Scenario(
        "handshake-1", "handshakes, sequential", "conn/s",
        {"scenario": "handshake", "parallel": 1},
    ),
    Scenario(
        "handshake-8", "handshakes, 8 in parallel", "conn/s",
        {"scenario": "handshake", "parallel": 8},
    ),
]  # fmt: skip
MEMORY_KEY = "memory"
MEMORY_LABEL = "memory per idle connection"
MEMORY_DEFLATE_KEY = "memory-deflate"
MEMORY_DEFLATE_LABEL = "memory per idle conn., deflate, 1 msg"


@dataclass
class Measurement:
    value: float
    client_cpu: float | None = None
    server_cpu: float | None = None


@dataclass
class Results:
    # results[scenario key][contender name] = best measurement
    best: dict[str, dict[str, Measurement]] = field(default_factory=dict)

    def record(self, key: str, name: str, measurement: Measurement, higher_is_better: bool) -> None:
        row = self.best.setdefault(key, {})
        previous = row.get(name)
        if previous is None or higher_is_better == (measurement.value > previous.value):
            row[name] = measurement


# -- processes ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    contender: Contender
    port: int
    process: subprocess.Popen[str]
    deflate: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS line")

    def open_files(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


def start_server(contender: Contender, deflate: bool = False) -> Server:
    port = free_port()
    LOG_DIR.mkdir(exist_ok=True)
    log = (LOG_DIR / f"{contender.name}.log").open("a")
    process = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, sys.executable, str(SERVERS / contender.script),
         "--port", str(port), *(["--deflate"] if deflate else [])],
        stdout=subprocess.PIPE, stderr=log, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "READY":
        process.kill()
        raise RuntimeError(f"{contender.name} did not start; see {LOG_DIR}/{contender.name}.log")
    return Server(contender, port, process, deflate)


def stop_server(server: Server) -> None:
    # SIGTERM, not SIGINT: a shell running this script in the background makes
    # its children ignore SIGINT. Nothing in a benchmark server needs cleaning up.
    server.process.terminate()
    try:
        server.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@contextmanager
def running(contenders: list[Contender], deflate: bool = False) -> Iterator[list[Server]]:
    servers: list[Server] = []
    try:
        for contender in contenders:
            servers.append(start_server(contender, deflate))
        yield servers
    finally:
        for server in servers:
            stop_server(server)


def client_command(server: Server, **options: Any) -> list[str]:
    arguments = ["node", str(CLIENT / "client.js"), "--mode", server.contender.mode,
                 "--port", str(server.port), "--server-pid", str(server.pid),
                 "--clk-tck", str(CLOCK_TICKS_PER_SECOND)]  # fmt: skip
    for name, value in options.items():
        arguments += [f"--{name.replace('_', '-')}", str(value)]
    # The idle scenario holds thousands of sockets: raise node's file limit.
    shell = f"ulimit -n {CLIENT_OPEN_FILES}; exec {shlex.join(arguments)}"
    return ["taskset", "-c", CLIENT_CPU, "sh", "-c", shell]


def run_client(server: Server, timeout: float, **options: Any) -> dict[str, Any]:
    completed = subprocess.run(
        client_command(server, **options),
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if completed.returncode != 0 or not completed.stdout.strip():
        raise RuntimeError(f"client failed: {completed.stderr.strip()[-500:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def ensure_client_installed() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        sys.exit("bench_echo.py needs node and npm on PATH")
    if not (CLIENT / "node_modules" / "ws").is_dir():
        print("installing the Node client (npm ci) ...", flush=True)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=CLIENT, check=True)


# -- scenarios ---------------------------------------------------------------------


def measure_memory(
    contender: Contender, connections: int, settle: float, deflate: bool = False
) -> Measurement:
    """RSS growth per idle connection, on a freshly started server."""
    # With compression, each connection first exchanges one message, so that
    # both zlib contexts exist, as on any connection that was ever used.
    extra = {"deflate": 1, "echo_first": 1} if deflate else {}
    with running([contender], deflate) as (server,):
        # Warm up the server (imports, first-handshake caches) before the baseline.
        run_client(
            server, timeout=30, scenario="handshake", parallel=4, seconds=0.3, warmup=0, **extra
        )  # fmt: skip
        time.sleep(settle)
        before = server.rss_bytes()
        files_before = server.open_files()
        client = subprocess.Popen(
            client_command(
                server, scenario="idle", connections=connections, parallel=50, **extra
            ),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert client.stdout is not None
            line = client.stdout.readline()
            if not line:
                raise RuntimeError(f"idle client failed: {client.communicate()[1][-500:]}")
            opened = json.loads(line)["opened"]
            # Let the server finish starting every handler before reading RSS.
            time.sleep(settle)
            after = server.rss_bytes()
            held = server.open_files() - files_before
        finally:
            client.send_signal(signal.SIGTERM)
            client.wait(timeout=30)
    if opened != connections or held < connections:
        raise RuntimeError(f"{contender.name}: {opened} opened, server holds {held} sockets")
    return Measurement((after - before) / connections / 1024)


def measure(server: Server, scenario: Scenario, seconds: float, warmup: float) -> Measurement:
    try:
        result = run_client(
            server, timeout=seconds + warmup + 60, seconds=seconds, warmup=warmup,
            **scenario.client_args,
        )  # fmt: skip
    finally:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"server exited with {server.process.returncode}; "
                f"see {LOG_DIR}/{server.contender.name}.log"
            )
    if result["errors"]:
        print(f"  ({server.contender.name}: {result['errors']} client errors)", file=sys.stderr)
    return Measurement(
        result[scenario.result_field] / scenario.scale, result["client_cpu"], result["server_cpu"]
    )


# -- output ------------------------------------------------------------------------


def format_value(value: float | None) -> str:
    if value is None:
        return "failed"
    if value >= 100_000:
        return f"{value / 1000:,.0f}k"
    if value >= 10_000:
        return f"{value / 1000:,.1f}k"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def value_of(results: Results, key: str, name: str) -> float | None:
    measurement = results.best.get(key, {}).get(name)
    return None if measurement is None else measurement.value


def print_tables(
    results: Results, contenders: list[Contender], rows: list[tuple[str, str, str]]
) -> None:
    names = [contender.name for contender in contenders]
    ratios = [ratio for ratio in RATIOS if ratio[1] in names and ratio[2] in names]
    header = ["scenario", "unit", *names, *(label for label, _, _ in ratios)]
    deflate_keys = {s.key for s in SCENARIOS if s.deflate} | {MEMORY_DEFLATE_KEY}
    print("| " + " | ".join(header) + " |")
    print("|---|---|" + "--:|" * (len(names) + len(ratios)))
    for key, label, unit in rows:
        cells = [label, unit]
        cells += [
            "-" if key in deflate_keys and not contender.deflate
            else format_value(value_of(results, key, contender.name))
            for contender in contenders
        ]  # fmt: skip
        for _, numerator, denominator in ratios:
            top = value_of(results, key, numerator)
            bottom = value_of(results, key, denominator)
            cells.append(f"{top / bottom:.2f}x" if top and bottom else "-")
        print("| " + " | ".join(cells) + " |")

    print(
        "\nServer CPU time per unit of work, from the same runs (lower is better; it"
        " does not depend on\nwhether the client kept the server busy, and little on"
        " other load on the machine):\n"
    )
    header = ["scenario", "unit", *names, *(label for label, _, _ in ratios)]
    print("| " + " | ".join(header) + " |")
    print("|---|---|" + "--:|" * (len(names) + len(ratios)))
    for key, label, unit in rows:
        if key in (MEMORY_KEY, MEMORY_DEFLATE_KEY):
            continue
        per_unit = unit.split("/")[0].replace("MB", "ms/MB").replace("msg", "µs/msg")
        per_unit = per_unit.replace("conn", "µs/conn")
        scale = 1e3 if "ms/" in per_unit else 1e6
        costs = {}
        for name in names:
            measurement = results.best.get(key, {}).get(name)
            if measurement is not None and measurement.server_cpu and measurement.value:
                costs[name] = measurement.server_cpu / measurement.value * scale
        cells = [label, per_unit]
        cells += [f"{costs[name]:.1f}" if name in costs else "-" for name in names]
        for _, numerator, denominator in ratios:
            if numerator in costs and denominator in costs:
                cells.append(f"{costs[numerator] / costs[denominator]:.2f}x")
            else:
                cells.append("-")
        print("| " + " | ".join(cells) + " |")

    print("\nCPU use during each measurement, client / server (1.00 = one core busy):\n")
    print("| scenario | " + " | ".join(names) + " |")
    print("|---|" + "--:|" * len(names))
    for key, label, _ in rows:
        if key in (MEMORY_KEY, MEMORY_DEFLATE_KEY):
            continue
        cells = [label]
        for name in names:
            measurement = results.best.get(key, {}).get(name)
            if measurement is None or measurement.client_cpu is None:
                cells.append("-")
            else:
                cells.append(f"{measurement.client_cpu:.2f} / {measurement.server_cpu:.2f}")
        print("| " + " | ".join(cells) + " |")


def machine_summary() -> str:
    model = "unknown CPU"
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    info = json.loads(
        subprocess.run(
            ["node", str(CLIENT / "client.js"), "--scenario", "info"],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    import aiohttp
    import picows
    import trio
    import trio_websocket
    import websockets

    import wsserver

    return (
        f"wsserver {wsserver.__version__} from {Path(wsserver.__file__).parent.parent}\n"
        f"{os.cpu_count()} CPUs ({model}), Python {sys.version.split()[0]}, "
        f"trio {trio.__version__}, "
        f"websockets {websockets.__version__}, trio-websocket {trio_websocket.__version__}, "
        f"aiohttp {aiohttp.__version__}, picows {picows.__version__}; "
        f"client: node {info['node']}, ws {info['ws']}, bufferutil {info['bufferutil']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before counting")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds; best counts")
    parser.add_argument("--idle-connections", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="a ~30 s smoke run")
    parser.add_argument(
        "--only", nargs="+",
        choices=[s.key for s in SCENARIOS] + [MEMORY_KEY, MEMORY_DEFLATE_KEY],
        help="run these scenarios only",
    )  # fmt: skip
    parser.add_argument(
        "--contenders", nargs="+", choices=[c.name for c in CONTENDERS],
        help="run these servers only",
    )  # fmt: skip
    args = parser.parse_args()
    settle = 1.0  # seconds the server rests before each RSS reading
    if args.quick:
        args.seconds, args.warmup, args.repeat = 0.3, 0.1, 1
        args.idle_connections = min(args.idle_connections, 200)
        settle = 0.2

    ensure_client_installed()
    contenders = [c for c in CONTENDERS if not args.contenders or c.name in args.contenders]
    scenarios = [s for s in SCENARIOS if not args.only or s.key in args.only]
    memory_rows = [
        (key, label, deflate)
        for key, label, deflate in [
            (MEMORY_KEY, MEMORY_LABEL, False), (MEMORY_DEFLATE_KEY, MEMORY_DEFLATE_LABEL, True)
        ]
        if not args.only or key in args.only
    ]  # fmt: skip
    print(machine_summary())
    print(
        f"{args.seconds:g} s per run after {args.warmup:g} s warm-up, best of {args.repeat}; "
        f"server on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU}; logs in {LOG_DIR}\n",
        flush=True,
    )

    results = Results()
    started = time.monotonic()
    # The compression scenarios run on a second set of servers, started with
    # --deflate, of the contenders that support permessage-deflate.
    any_deflate = any(scenario.deflate for scenario in scenarios)
    deflating = [c for c in contenders if c.deflate] if any_deflate else []
    with running(contenders) as plain_servers, running(deflating, True) as deflate_servers:
        for round_number in range(args.repeat):
            for scenario in scenarios:
                servers = deflate_servers if scenario.deflate else plain_servers
                for index, server in enumerate(servers):
                    try:
                        measurement = measure(server, scenario, args.seconds, args.warmup)
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:
                        print(f"  {scenario.key} / {server.contender.name}: {exc}", file=sys.stderr)
                        if server.process.poll() is not None:
                            # A crash counts against this scenario only: restart.
                            servers[index] = start_server(server.contender, server.deflate)
                        continue
                    results.record(scenario.key, server.contender.name, measurement, True)
                    print(
                        f"  round {round_number + 1} {scenario.label:32} {server.contender.name:20}"
                        f" {format_value(measurement.value):>8} {scenario.unit}"
                        f"  (client {measurement.client_cpu:.2f},"
                        f" server {measurement.server_cpu:.2f} CPU)",
                        flush=True,
                    )
    for key, memory_label, deflate in memory_rows:
        for round_number in range(args.repeat):
            for contender in contenders:
                if deflate and not contender.deflate:
                    continue
                try:
                    measurement = measure_memory(
                        contender, args.idle_connections, settle, deflate
                    )  # fmt: skip
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    print(f"  {key} / {contender.name}: {exc}", file=sys.stderr)
                    continue
                results.record(key, contender.name, measurement, False)
                print(
                    f"  round {round_number + 1} {memory_label:32} {contender.name:20}"
                    f" {measurement.value:8.1f} KiB",
                    flush=True,
                )
    print(f"\n{time.monotonic() - started:.0f} s\n")

    rows = [(s.key, s.label, s.unit) for s in scenarios]
    for key, memory_label, _ in memory_rows:
        label = f"{memory_label} ({args.idle_connections:,} open)"
        rows.append((key, label, "KiB (lower is better)"))
    print_tables(results, contenders, rows)


if __name__ == "__main__":
    main()
