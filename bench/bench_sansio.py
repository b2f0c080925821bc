"""Sans-I/O protocol speed: wsserver against websockets and wsproto, in one run.

Run with::

    .venv/bin/python bench/bench_sansio.py [--rounds 9] [--quick] [--profile]
    .venv/bin/py-spy record -r 1000 -f raw -o profile.txt -- \
        .venv/bin/python bench/bench_sansio.py --spin small-buffer --seconds 10

Every contender does the same work an I/O layer would ask of it:

- **handshake**: create a server connection, feed the HTTP request, take the
  request event, accept it, queue the 101 response and collect the bytes;
- **small frames**: feed 10,000 masked client frames of 32 bytes, either as
  one buffer or in 4 KiB chunks (collecting events and bytes to send after
  each chunk), and collect one event per frame;
- **1 MiB unmasking**: feed one masked binary frame of 1 MiB and collect it.

A second table gives the bytes each contender's connection keeps once the
handshake is over, with what an I/O layer keeps beside it (wsserver: the core
and the request's and response's headers; websockets: the protocol, request
and response; wsproto: the connection and the request event), measured with
``tracemalloc`` over 1,000 handshakes of distinct keys.

``wsserver`` is :class:`wsserver.sansio.ServerConnection` as installed (the
mypyc-compiled core and C unmasking when ``wsserver.HAS_SPEEDUPS``);
``wsserver-py`` is the same package's sources run as pure Python, loaded a
second time under another name in the same process (what an install without
a compiler runs), so that the two builds are timed interleaved; ``websockets`` is
``websockets.server.ServerProtocol`` (``events_received()`` and
``data_to_send()`` called like ours); ``wsproto`` is
``wsproto.WSConnection(ConnectionType.SERVER)`` (``events()`` drained into a
list). Each figure is the best of several timed rounds (``timeit``), measured
in CPU time of the process and interleaved across contenders, so that the
noise of a busy machine mostly shows as a slower round that is thrown away.

``--profile`` runs wsserver's share of each scenario under ``cProfile`` and
prints where the time goes; ``--spin KEY`` repeats one contender's share of
one scenario, for a sampling profiler that reports lines (py-spy).
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import gc
import importlib.util
import os
import pstats
import struct
import sys
import time
import timeit
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

SMALL_PAYLOAD_BYTES = 32
SMALL_FRAME_COUNT = 10_000
CHUNK_BYTES = 4096
LARGE_PAYLOAD_BYTES = 1024 * 1024
MIN_ROUND_SECONDS = 0.1

OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2

KEY = base64.b64encode(os.urandom(16))
HANDSHAKE_REQUEST = (
    b"GET /chat HTTP/1.1\r\n"
    b"Host: 127.0.0.1:8765\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + KEY + b"\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Origin: http://127.0.0.1:8765\r\n"
    b"User-Agent: bench_sansio\r\n"
    b"\r\n"
)


# -- client frames --------------------------------------------------------------


def masked_client_frame(opcode: int, payload: bytes) -> bytes:
    """Encode one final, masked client frame (built here, independent of every contender)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    repeated = (mask * (length // 4 + 1))[:length]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        length, "big"
    )
    return head + mask + masked


def small_frames(opcode: int) -> bytes:
    payload = b"x" * SMALL_PAYLOAD_BYTES
    return b"".join(masked_client_frame(opcode, payload) for _ in range(SMALL_FRAME_COUNT))


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# -- contenders -------------------------------------------------------------------
#
# Each contender offers two things:
#   handshake(request) -> bytes           the whole server side of one handshake
#   open_connection() -> feed(chunks)     a connection past the handshake; feed()
#                                         receives each chunk, collects events
#                                         and bytes after each, returns the
#                                         number of data frames seen


@dataclass
class Contender:
    name: str
    handshake: Callable[[bytes], bytes]
    open_connection: Callable[[], Callable[[list[bytes]], int]]
    # The handshake again, returning what an I/O layer keeps for the
    # connection's life afterwards (for the memory table).
    keep: Callable[[bytes], object]


def load_pure_sansio() -> ModuleType:
    """Import ``wsserver/sansio`` a second time, as ``_wsserver_sansio_py``, from its sources.

    The package's own switch (``WSSERVER_NO_SPEEDUPS``) acts on the whole
    process; here the compiled package stays loaded as ``wsserver.sansio``
    while a finder that knows only source loaders serves its directory for
    the copy, and the usual finder is put back afterwards.
    """
    import wsserver.sansio
    from wsserver.sansio import _compiled

    directory = Path(wsserver.sansio.__file__).parent
    saved = sys.path_importer_cache.get(str(directory))
    _compiled.use_sources(directory)
    try:
        spec = importlib.util.spec_from_file_location(
            "_wsserver_sansio_py",
            directory / "__init__.py",
            submodule_search_locations=[str(directory)],
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    finally:
        if saved is None:
            sys.path_importer_cache.pop(str(directory), None)
        else:
            sys.path_importer_cache[str(directory)] = saved
    assert not module.HAS_SPEEDUPS
    return module


def wsserver_contender(sansio: ModuleType | None = None, name: str = "wsserver") -> Contender:
    import wsserver.sansio

    module = wsserver.sansio if sansio is None else sansio
    Frame, ServerConnection, State = module.Frame, module.ServerConnection, module.State

    def handshake(request: bytes) -> bytes:
        connection = ServerConnection()
        connection.receive_data(request)
        (event,) = connection.events_received()
        connection.send_response(connection.accept(event))
        return b"".join(connection.data_to_send())

    def open_connection() -> Callable[[list[bytes]], int]:
        connection = ServerConnection(state=State.OPEN, max_size=2**21)

        def feed(chunks: list[bytes]) -> int:
            frames = 0
            for chunk in chunks:
                connection.receive_data(chunk)
                for event in connection.events_received():
                    if isinstance(event, Frame):
                        frames += 1
                connection.data_to_send()
            return frames

        return feed

    def keep(request: bytes) -> object:
        # wsserver's connection keeps its core, request_headers and response_headers.
        connection = ServerConnection()
        connection.receive_data(request)
        (event,) = connection.events_received()
        response = connection.accept(event)
        connection.send_response(response)
        connection.data_to_send()
        return connection, event.headers, response.headers

    return Contender(name, handshake, open_connection, keep)


def websockets_contender() -> Contender:
    from websockets.frames import Frame
    from websockets.protocol import State
    from websockets.server import ServerProtocol

    def handshake(request: bytes) -> bytes:
        protocol = ServerProtocol()
        protocol.receive_data(request)
        (event,) = protocol.events_received()
        protocol.send_response(protocol.accept(event))  # type: ignore[arg-type]
        return b"".join(protocol.data_to_send())

    def open_connection() -> Callable[[list[bytes]], int]:
        protocol = ServerProtocol(state=State.OPEN, max_size=2**21)

        def feed(chunks: list[bytes]) -> int:
            frames = 0
            for chunk in chunks:
                protocol.receive_data(chunk)
                for event in protocol.events_received():
                    if isinstance(event, Frame):
                        frames += 1
                protocol.data_to_send()
            return frames

        return feed

    def keep(request: bytes) -> object:
        # websockets' asyncio connection keeps its protocol, request and response.
        protocol = ServerProtocol()
        protocol.receive_data(request)
        (event,) = protocol.events_received()
        response = protocol.accept(event)  # type: ignore[arg-type]
        protocol.send_response(response)
        protocol.data_to_send()
        return protocol, event, response

    return Contender("websockets", handshake, open_connection, keep)


def wsproto_contender() -> Contender:
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, Message, Request

    def handshake(request: bytes) -> bytes:
        connection = WSConnection(ConnectionType.SERVER)
        connection.receive_data(request)
        (event,) = list(connection.events())
        assert isinstance(event, Request)
        return connection.send(AcceptConnection())

    def open_connection() -> Callable[[list[bytes]], int]:
        connection = WSConnection(ConnectionType.SERVER)
        connection.receive_data(HANDSHAKE_REQUEST)
        list(connection.events())
        connection.send(AcceptConnection())

        def feed(chunks: list[bytes]) -> int:
            frames = 0
            for chunk in chunks:
                connection.receive_data(chunk)
                for event in connection.events():
                    # A frame split across chunks arrives as several partial
                    # Message events; count it once, when it is complete.
                    if isinstance(event, Message) and event.message_finished:
                        frames += 1
            return frames

        return feed

    def keep(request: bytes) -> object:
        connection = WSConnection(ConnectionType.SERVER)
        connection.receive_data(request)
        (event,) = list(connection.events())
        connection.send(AcceptConnection())
        return connection, event

    return Contender("wsproto", handshake, open_connection, keep)


# -- scenarios ------------------------------------------------------------------


@dataclass
class Scenario:
    key: str
    label: str
    unit: str
    # Builds a zero-argument callable doing one round's work, and the number
    # of units (handshakes, frames, bytes) that one call processes.
    prepare: Callable[[Contender], tuple[Callable[[], object], int]]
    scale: float = 1.0  # units per figure: 1e6 turns bytes/s into MB/s
    target: str = ""


def handshake_scenario(contender: Contender) -> tuple[Callable[[], object], int]:
    response = contender.handshake(HANDSHAKE_REQUEST)
    assert response.startswith(b"HTTP/1.1 101"), (contender.name, response[:40])
    return (lambda: contender.handshake(HANDSHAKE_REQUEST)), 1


def frames_scenario(
    opcode: int, chunk_bytes: int | None
) -> Callable[[Contender], tuple[Callable[[], object], int]]:
    data = small_frames(opcode)
    chunks = [data] if chunk_bytes is None else split(data, chunk_bytes)

    def prepare(contender: Contender) -> tuple[Callable[[], object], int]:
        feed = contender.open_connection()
        seen = feed(chunks)
        assert seen == SMALL_FRAME_COUNT, (contender.name, seen)
        return (lambda: feed(chunks)), SMALL_FRAME_COUNT

    return prepare


def large_frame_scenario(contender: Contender) -> tuple[Callable[[], object], int]:
    chunks = [masked_client_frame(OPCODE_BINARY, os.urandom(LARGE_PAYLOAD_BYTES))]
    feed = contender.open_connection()
    assert feed(chunks) == 1, contender.name
    return (lambda: feed(chunks)), LARGE_PAYLOAD_BYTES


SCENARIOS = [
    Scenario("handshake", "handshakes", "handshakes/s", handshake_scenario),
    Scenario(
        "small-buffer",
        "32 B binary frames, one buffer",
        "frames/s",
        frames_scenario(OPCODE_BINARY, None),
        target="≥1.0x websockets, ≥1.5x wsproto",
    ),
    Scenario(
        "small-chunks",
        "32 B binary frames, 4 KiB chunks",
        "frames/s",
        frames_scenario(OPCODE_BINARY, CHUNK_BYTES),
        target="≥1.0x websockets, ≥1.5x wsproto",
    ),
    Scenario(
        "small-text",
        "32 B text frames, one buffer",
        "frames/s",
        frames_scenario(OPCODE_TEXT, None),
    ),
    Scenario(
        "large",
        "1 MiB binary frame (unmasking)",
        "MB/s",
        large_frame_scenario,
        scale=1e6,
        target="≥0.5x websockets",
    ),
]


def best_rates(works: dict[str, tuple[Callable[[], object], int]], rounds: int) -> dict[str, float]:
    """Units per second of each contender in its fastest of ``rounds`` timed rounds.

    Rounds are interleaved (one round of each contender in turn) and timed in
    CPU time of this process, so that a busy machine slows every contender
    alike and time spent descheduled is not counted.
    """
    timers = {}
    for name, (work, _) in works.items():
        timer = timeit.Timer(work, timer=time.process_time)
        calls = 1
        while timer.timeit(calls) < MIN_ROUND_SECONDS:
            calls *= 2
        timers[name] = (timer, calls)
    best = dict.fromkeys(works, float("inf"))
    for _ in range(rounds):
        for name, (timer, calls) in timers.items():
            best[name] = min(best[name], timer.timeit(calls) / calls)
    return {name: works[name][1] / seconds for name, seconds in best.items()}


KEPT_CONNECTIONS = 1000


def bytes_kept(contender: Contender) -> float:
    """Bytes held per connection by what ``contender.keep`` returns, after a handshake each.

    Every connection gets its own key, as on a real server; the requests
    are built before tracing starts.
    """
    requests = [
        HANDSHAKE_REQUEST.replace(KEY, base64.b64encode(os.urandom(16)))
        for _ in range(KEPT_CONNECTIONS)
    ]
    contender.keep(requests[0])  # first-use caches are not per connection
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [contender.keep(request) for request in requests]
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del kept
    return (after - before) / KEPT_CONNECTIONS


def format_rate(value: float) -> str:
    if value >= 100_000:
        return f"{value / 1000:,.0f}k"
    if value >= 10_000:
        return f"{value / 1000:,.1f}k"
    return f"{value:,.0f}"


def spin(work: Callable[[], object], seconds: float) -> int:
    """Repeat ``work`` for about ``seconds``; return the number of calls."""
    calls = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        work()
        calls += 1
    return calls


def profile_wsserver(contender: Contender) -> None:
    for scenario in SCENARIOS:
        work, _ = scenario.prepare(contender)
        profiler = cProfile.Profile()
        profiler.enable()
        calls = spin(work, 1.0)
        profiler.disable()
        print(f"\n### cProfile: {contender.name}, {scenario.label} ({calls} calls)\n")
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds per figure")
    parser.add_argument("--quick", action="store_true", help="3 rounds: a smoke run")
    parser.add_argument("--profile", action="store_true", help="cProfile wsserver afterwards")
    parser.add_argument(
        "--spin",
        choices=[scenario.key for scenario in SCENARIOS],
        help="only repeat one scenario for --seconds, to run under an outside profiler "
        "(py-spy record -- python bench/bench_sansio.py --spin small-buffer)",
    )
    parser.add_argument(
        "--contender", choices=["wsserver", "wsserver-py", "websockets", "wsproto"],
        default="wsserver",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="how long --spin runs")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds

    import wsserver.sansio

    contenders = [wsserver_contender(), websockets_contender(), wsproto_contender()]
    if wsserver.sansio.HAS_SPEEDUPS:
        contenders.insert(1, wsserver_contender(load_pure_sansio(), "wsserver-py"))
    if args.spin:
        (contender,) = [c for c in contenders if c.name == args.contender]
        (scenario,) = [s for s in SCENARIOS if s.key == args.spin]
        work, _ = scenario.prepare(contender)
        calls = spin(work, args.seconds)
        print(f"{contender.name}, {scenario.label}: {calls} calls in {args.seconds:g} s")
        return
    import websockets
    import wsproto

    import wsserver

    print(f"wsserver {wsserver.__version__} from {Path(wsserver.__file__).parent.parent}")
    print(
        f"Python {sys.version.split()[0]}, websockets {websockets.__version__}, "
        f"wsproto {wsproto.__version__}, wsserver compiled hot path "
        f"{'in use' if wsserver.HAS_SPEEDUPS else 'NOT in use'}; best of {rounds} rounds\n"
    )
    # With the compiled build, the pure-Python one (wsserver-py) gets its columns too.
    ours = [c.name for c in contenders if c.name.startswith("wsserver")]
    print(
        "| scenario | unit | "
        + " | ".join(c.name for c in contenders)
        + " | "
        + " | ".join(f"{name}/websockets | {name}/wsproto" for name in ours)
        + " | target |"
    )
    print("|---|---|" + "--:|" * (len(contenders) + 2 * len(ours)) + "---|")
    for scenario in SCENARIOS:
        works = {contender.name: scenario.prepare(contender) for contender in contenders}
        rates = {name: rate / scenario.scale for name, rate in best_rates(works, rounds).items()}
        figures = [format_rate(rates[c.name]) for c in contenders]
        for name in ours:
            figures.append(f"{rates[name] / rates['websockets']:.2f}x")
            figures.append(f"{rates[name] / rates['wsproto']:.2f}x")
        print(
            f"| {scenario.label} | {scenario.unit} | {' | '.join(figures)} | {scenario.target} |",
            flush=True,
        )

    print(
        f"\nKept per connection after the handshake, in bytes (tracemalloc, "
        f"{KEPT_CONNECTIONS:,} connections; lower is better):\n"
    )
    print("| " + " | ".join(c.name for c in contenders) + " | "
          + " | ".join(f"{name}/websockets" for name in ours) + " |")  # fmt: skip
    print("|" + "--:|" * (len(contenders) + len(ours)))
    kept = {contender.name: bytes_kept(contender) for contender in contenders}
    figures = [f"{kept[c.name]:,.0f}" for c in contenders]
    figures += [f"{kept[name] / kept['websockets']:.2f}x" for name in ours]
    print("| " + " | ".join(figures) + " |", flush=True)

    if args.profile:
        profile_wsserver(contenders[0])


if __name__ == "__main__":
    main()
