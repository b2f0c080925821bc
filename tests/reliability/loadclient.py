"""Many raw WebSocket clients in one asyncio process, for the reliability tests.

Run as a script by the tests (``python loadclient.py MODE --port P ...``), so
that the clients use the machine's other core and the server process's
memory and file descriptors are its own. It reports on stdout, one line at a
time: ``ready`` once every opening handshake is done (modes that hold
connections), then one JSON object, the summary, as its last line.

Modes:

``echo``
    Every connection sends its messages (random sizes, text or binary, each
    split into 1..4 fragments at random byte offsets, so UTF-8 characters get
    split too) while reading the echoes, and checks every echo arrives in
    order and unchanged (length and BLAKE2 digest: the payloads themselves
    are not kept). A fraction of the connections drop abruptly at a random
    point instead: ``SO_LINGER (1, 0)`` then close, so the server gets an RST,
    sometimes in the middle of a frame.
``burst``
    Once every connection is open (``ready``), every one of them (path
    ``/burst/INDEX``) reads numbered text messages
    ``"N:..."`` until the server's close frame, checks the numbers have no
    gap, answers the close, and reports the last number and the close code.
``idle``
    Hold the connections, answering pings and the server's close, until a
    line arrives on stdin (or stdin closes).
``slow``
    Hold the connections with a small receive buffer and never read; on a
    line on stdin (or EOF), drop them all with an RST.

Only the standard library and :func:`wsserver.sansio.frames.serialize_frame`
(for masking) are used; the server's frames are parsed here.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import itertools
import json
import os
import random
import resource
import socket
import struct
import sys
from collections.abc import Awaitable, Callable
from typing import Any, cast

from wsserver.sansio.frames import Frame, Opcode, serialize_frame

_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Opening handshakes in flight at once; more only fills the listen backlog.
CONNECT_CONCURRENCY = 256
#: The largest message the echo mode sends.
MAX_MESSAGE_BYTES = 65536
#: Receive buffer of the ``slow`` mode's sockets, set before connecting so
#: that the kernel does not grow it: the server's writes block sooner.
SLOW_RCVBUF_BYTES = 65536
#: Bound on a whole run (``--timeout`` changes it), so a stuck server fails
#: the test rather than hanging it; individual reads have no timeout of their
#: own (a timer per read costs more than the rest of the read).
RUN_TIMEOUT_SECONDS = 120.0

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def text_corpus(seed: int) -> str:
    """A long string mixing 1-, 2-, 3- and 4-byte UTF-8 characters (about 1.75 bytes each)."""
    rng = random.Random(seed)
    pools = ["abcdefghij KLMNOPQRST 0123456789", "éüßñøπλжд", "€中文日本語✓", "😀🎉𝄞🚀"]
    weights = [50, 30, 15, 5]
    alphabet = [char for pool in pools for char in pool]
    char_weights = [
        weight / len(pool) for pool, weight in zip(pools, weights, strict=True) for _ in pool
    ]
    return "".join(rng.choices(alphabet, char_weights, k=200_000))


class ProtocolFailure(Exception):
    """The server sent something a correct server never sends."""


class Client:
    """One raw WebSocket client connection over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.mask_rng = random.Random()

    @classmethod
    async def connect(cls, port: int, path: str, *, rcvbuf: int | None = None) -> Client:
        """Connect to 127.0.0.1:``port`` and run the opening handshake for ``path``."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        # A small limit: the transport stops reading past twice this much
        # unread, so thousands of clients that do not read yet stay small.
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**16)
        key = base64.b64encode(os.urandom(16))
        writer.write(
            b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = await reader.readuntil(b"\r\n\r\n")
        expected = base64.b64encode(hashlib.sha1(key + _ACCEPT_GUID).digest())
        if not head.startswith(b"HTTP/1.1 101 ") or expected not in head:
            writer.close()
            raise ProtocolFailure(f"handshake refused: {head[:200]!r}")
        return cls(reader, writer)

    def send_frame(self, opcode: int, data: bytes, fin: bool = True) -> None:
        """Queue one masked frame."""
        frame = Frame(Opcode(opcode), data, fin)
        self.writer.write(serialize_frame(frame, mask=self.mask_rng.randbytes(4)))

    async def read_frame(self) -> tuple[int, bool, bytes]:
        """Read one server frame: ``(opcode, fin, payload)``.

        :raises asyncio.IncompleteReadError: if the server closed TCP first.
        :raises ProtocolFailure: if the frame is masked or uses reserved bits.
        """
        reader = self.reader
        first, second = await reader.readexactly(2)
        if second & 0x80 or first & 0x70:
            raise ProtocolFailure(f"bad frame head {first:#x} {second:#x}")
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await reader.readexactly(8))
        payload = await reader.readexactly(length)
        return first & 0x0F, bool(first & 0x80), payload

    async def read_message(self) -> tuple[int, bytes]:
        """Read the next data message or close frame, answering pings on the way.

        :returns: ``(opcode, payload)``; for a close frame the opcode is ``CLOSE``.
        """
        parts: list[bytes] = []
        message_opcode = 0
        while True:
            opcode, fin, payload = await self.read_frame()
            if opcode == PING:
                self.send_frame(PONG, payload)
                continue
            if opcode == PONG:
                continue
            if opcode == CLOSE:
                return CLOSE, payload
            if opcode != CONT:
                message_opcode = opcode
            parts.append(payload)
            if fin:
                return message_opcode, b"".join(parts)

    async def answer_close(self, payload: bytes) -> None:
        """Echo the server's close code, then wait for the server to close TCP."""
        self.send_frame(CLOSE, payload[:2])
        await self.writer.drain()
        await self.reader.read()
        self.writer.close()

    async def close_normally(self) -> int | None:
        """Run the closing handshake from our side; return the server's close code."""
        self.send_frame(CLOSE, struct.pack("!H", 1000))
        await self.writer.drain()
        while True:
            opcode, payload = await self.read_message()
            if opcode == CLOSE:
                break
        rest = await self.reader.read()
        if rest:
            raise ProtocolFailure(f"data after the close frame: {rest[:40]!r}")
        self.writer.close()
        return close_code(payload)

    def reset(self) -> None:
        """Drop the connection abruptly: the kernel sends an RST, not a FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


def close_code(payload: bytes) -> int | None:
    """The code of a close frame's payload; ``None`` if empty."""
    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None


async def open_all(
    count: int, port: int, path_of: Callable[[int], str], *, rcvbuf: int | None = None
) -> list[Client]:
    """Open ``count`` connections, :data:`CONNECT_CONCURRENCY` handshakes at a time."""
    limit = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(index: int) -> Client:
        async with limit:
            return await Client.connect(port, path_of(index), rcvbuf=rcvbuf)

    return list(await asyncio.gather(*(one(index) for index in range(count))))


# Echo -----------------------------------------------------------------------------


class EchoPlan:
    """What one echo connection sends, drawn from a seeded RNG."""

    def __init__(self, args: argparse.Namespace, index: int, corpus: str) -> None:
        self.rng = random.Random(f"{args.seed}:{index}")
        self.corpus = corpus
        full = index < args.full_connections
        self.count = args.messages if full else args.few_messages
        # The drop decision has its own RNG so that the messages do not depend on it.
        drop_rng = random.Random(f"{args.seed}:drop:{index}")
        self.drop_after: int | None = None
        self.drop_mid_frame = False
        if drop_rng.random() < args.drop_fraction:
            self.drop_after = drop_rng.randint(0, self.count)
            self.drop_mid_frame = drop_rng.random() < 0.5

    def message(self) -> tuple[int, bytes]:
        """The next message: ``(TEXT or BINARY, payload)``."""
        rng = self.rng
        # Log-uniform over 0..64 KiB (mean about 6 KiB), so that every length
        # encoding (7-, 16- and 64-bit) shows up often without spending the
        # test's time on memcpy; exactly 64 KiB now and then.
        size = MAX_MESSAGE_BYTES if rng.random() < 0.02 else int(2 ** rng.uniform(0, 16)) - 1
        if rng.random() < 0.5:
            return BINARY, rng.randbytes(size)
        # About 1.75 bytes per character; cut back to the size limit on a character boundary.
        chars = size * 4 // 7
        start = rng.randint(0, len(self.corpus) - chars)
        data = self.corpus[start : start + chars].encode()
        if len(data) > MAX_MESSAGE_BYTES:
            data = data[:MAX_MESSAGE_BYTES].decode("utf-8", "ignore").encode()
        return TEXT, data

    def cuts(self, length: int) -> list[int]:
        """Fragment boundaries: 1..4 fragments at random offsets (empty ones allowed)."""
        fragments = self.rng.randint(1, 4)
        return sorted(self.rng.randint(0, length) for _ in range(fragments - 1))


async def run_echo(args: argparse.Namespace) -> dict[str, Any]:
    corpus = text_corpus(args.seed)
    plans = [EchoPlan(args, index, corpus) for index in range(args.connections)]
    clients = await open_all(args.connections, args.port, lambda index: f"/echo/{index}")
    stats: collections.Counter[str] = collections.Counter()
    errors: list[str] = []

    async def converse(index: int, client: Client, plan: EchoPlan) -> None:
        expected: collections.deque[tuple[int, int, bytes]] = collections.deque()
        arrived = asyncio.Event()

        async def write() -> None:
            for number in range(plan.count):
                opcode, data = plan.message()
                if number == plan.drop_after:
                    if plan.drop_mid_frame and data:
                        frame = serialize_frame(Frame(Opcode(opcode), data), mask=b"abcd")
                        client.writer.write(frame[: plan.rng.randint(1, len(frame) - 1)])
                        await client.writer.drain()
                    return
                expected.append((opcode, len(data), hashlib.blake2b(data).digest()))
                arrived.set()
                bounds = [0, *plan.cuts(len(data)), len(data)]
                last = len(bounds) - 2
                for part, (start, end) in enumerate(itertools.pairwise(bounds)):
                    fin = part == last
                    client.send_frame(CONT if part else opcode, data[start:end], fin)
                await client.writer.drain()

        async def read() -> None:
            for number in range(plan.count):
                if number == plan.drop_after:
                    return
                while not expected:
                    arrived.clear()
                    await arrived.wait()
                want_opcode, want_length, want_digest = expected.popleft()
                opcode, data = await client.read_message()
                if opcode == CLOSE:
                    raise ProtocolFailure(f"closed {close_code(data)} at message {number}")
                if (opcode, len(data)) != (want_opcode, want_length):
                    raise ProtocolFailure(
                        f"message {number}: got opcode {opcode} {len(data)}B,"
                        f" sent {want_opcode} {want_length}B"
                    )
                if hashlib.blake2b(data).digest() != want_digest:
                    raise ProtocolFailure(f"message {number}: payload differs")
                stats["messages_checked"] += 1
                stats["bytes_checked"] += len(data)

        try:
            if plan.drop_after is not None:
                # Drop as soon as the writer gets there, echoes still in flight.
                reader = asyncio.ensure_future(read())
                await write()
                client.reset()
                reader.cancel()
                (outcome,) = await asyncio.gather(reader, return_exceptions=True)
                if isinstance(outcome, ProtocolFailure):
                    raise outcome
                stats["dropped"] += 1
                return
            await asyncio.gather(write(), read())
            code = await client.close_normally()
            stats[f"close_{code}"] += 1
            stats["completed"] += 1
        except Exception as exc:
            errors.append(f"connection {index}: {type(exc).__name__}: {exc}")
            client.writer.transport.abort()

    conversations = (converse(index, clients[index], plan) for index, plan in enumerate(plans))
    await asyncio.gather(*conversations)
    return {"connections": len(clients), **stats, "errors": errors[:20]}


# Burst ----------------------------------------------------------------------------


async def run_burst(args: argparse.Namespace) -> dict[str, Any]:
    # Read nothing until every connection is open: the server's sends block on
    # full buffers meanwhile, and the handshakes do not compete with the reads.
    clients = await open_all(args.connections, args.port, lambda index: f"/burst/{index}")
    report("ready")
    last: dict[int, int] = {}
    codes: collections.Counter[str] = collections.Counter()
    errors: list[str] = []

    async def listen(index: int, client: Client) -> None:
        next_number = 0
        try:
            while True:
                opcode, data = await client.read_message()
                if opcode == CLOSE:
                    codes[str(close_code(data))] += 1
                    await client.answer_close(data)
                    return
                number = int(data.split(b":", 1)[0])
                if opcode != TEXT or number != next_number:
                    raise ProtocolFailure(f"expected message {next_number}, got {data[:20]!r}")
                last[index] = number
                next_number += 1
        except Exception as exc:
            errors.append(f"connection {index}: {type(exc).__name__}: {exc}")
            client.writer.transport.abort()

    await asyncio.gather(*(listen(index, client) for index, client in enumerate(clients)))
    return {
        "connections": len(clients),
        "close_codes": dict(codes),
        "last": {str(index): number for index, number in last.items()},
        "messages_checked": sum(number + 1 for number in last.values()),
        "errors": errors[:20],
    }


# Idle and slow --------------------------------------------------------------------


async def wait_for_stdin_line() -> None:
    """Return once a line arrives on stdin, or stdin closes."""
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)


async def run_idle(args: argparse.Namespace) -> dict[str, Any]:
    clients = await open_all(args.connections, args.port, lambda index: f"/idle/{index}")
    report("ready")
    codes: collections.Counter[str] = collections.Counter()

    async def listen(client: Client) -> None:
        try:
            while True:
                opcode, data = await client.read_message()
                if opcode == CLOSE:
                    codes[str(close_code(data))] += 1
                    await client.answer_close(data)
                    return
        except asyncio.CancelledError:
            raise
        except Exception:
            codes["error"] += 1

    listeners = [asyncio.ensure_future(listen(client)) for client in clients]
    await wait_for_stdin_line()
    pending = [task for task in listeners if not task.done()]
    for task in pending:
        task.cancel()
    await asyncio.gather(*listeners, return_exceptions=True)
    for client in clients:
        client.writer.transport.abort()
    return {"connections": len(clients), "close_codes": dict(codes), "held": len(pending)}


async def run_slow(args: argparse.Namespace) -> dict[str, Any]:
    clients = await open_all(
        args.connections, args.port, lambda index: f"/slow/{index}", rcvbuf=SLOW_RCVBUF_BYTES
    )
    for client in clients:
        # Never read: the server's writes must hit the kernel buffers and stop there.
        cast(asyncio.ReadTransport, client.writer.transport).pause_reading()
    report("ready")
    await wait_for_stdin_line()
    for client in clients:
        client.reset()
    await asyncio.sleep(0.1)  # let the loop run the aborts (the sockets close there)
    return {"connections": len(clients)}


# Entry point ----------------------------------------------------------------------


def report(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


MODES: dict[str, Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]] = {
    "echo": run_echo,
    "burst": run_burst,
    "idle": run_idle,
    "slow": run_slow,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--messages", type=int, default=50, help="per full connection")
    parser.add_argument("--full-connections", type=int, default=2000)
    parser.add_argument("--few-messages", type=int, default=50, help="per other connection")
    parser.add_argument("--drop-fraction", type=float, default=0.0)
    parser.add_argument("--timeout", type=float, default=RUN_TIMEOUT_SECONDS)
    args = parser.parse_args()
    raise_open_file_limit()
    summary = asyncio.run(run_with_timeout(MODES[args.mode](args), args.timeout))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    summary["client_cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 2)
    report(json.dumps(summary))


async def run_with_timeout(
    run: Awaitable[dict[str, Any]], seconds: float
) -> dict[str, Any]:
    return await asyncio.wait_for(run, seconds)


if __name__ == "__main__":
    main()
