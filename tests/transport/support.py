"""What the transport tests share: running a listener, echoing, reading exact amounts."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import ByteStream, SocketAttribute

from wsserver._transport import Listener, open_listeners

HOST = "127.0.0.1"
TIMEOUT_SECONDS = 10
BACKLOG = 128
MEBIBYTE = 2**20


async def echo(stream: ByteStream) -> None:
    """Send back every byte received, until the peer half-closes."""
    async with stream:
        try:
            while True:
                await stream.send(await stream.receive())
        except anyio.EndOfStream:
            pass


def port_of(listener: Listener) -> int:
    port: int = listener.extra(SocketAttribute.local_port)
    return port


@asynccontextmanager
async def serving(
    handler: Callable[[ByteStream], Any], listener: Listener | None = None
) -> AsyncIterator[Listener]:
    """Run ``listener.serve(handler)`` (a TCP listener on 127.0.0.1 by default)."""
    if listener is None:
        [listener] = await open_listeners(host=HOST, port=0, backlog=BACKLOG)
    async with listener, anyio.create_task_group() as task_group:
        task_group.start_soon(listener.serve, handler)
        yield listener
        task_group.cancel_scope.cancel()


@asynccontextmanager
async def accepted_pair(
    listener: Listener | None = None,
    connect: Callable[[], Any] | None = None,
) -> AsyncIterator[tuple[ByteStream, ByteStream]]:
    """Yield (the accepted stream under test, the client's anyio stream)."""
    send, receive = anyio.create_memory_object_stream[ByteStream](1)

    async def hand_over(stream: ByteStream) -> None:
        await send.send(stream)
        await anyio.sleep_forever()  # the test owns the stream until it ends

    async with serving(hand_over, listener) as running:
        if connect is None:
            client = await anyio.connect_tcp(HOST, port_of(running))
        else:
            client = await connect()
        async with client:
            yield await receive.receive(), client


async def receive_exactly(stream: ByteStream, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunks += await stream.receive()
    return bytes(chunks)


async def receive_until_eof(stream: ByteStream) -> bytes:
    chunks = bytearray()
    try:
        while True:
            chunks += await stream.receive()
    except anyio.EndOfStream:
        return bytes(chunks)


def reset_on_close(stream: ByteStream) -> None:
    """Make closing ``stream`` send a TCP RST instead of a FIN (SO_LINGER of 0)."""
    raw_socket = stream.extra(SocketAttribute.raw_socket)
    raw_socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _tcp_info(sock: Any) -> bytes:
    info: bytes = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return info


def listen_queue_length(sock: Any) -> int:
    """Count the connections waiting in a listening TCP socket's accept queue (Linux).

    For a listening socket the kernel reports its accept queue in the
    ``tcpi_unacked`` field of ``struct tcp_info`` (offset 24).
    """
    (length,) = struct.unpack_from("I", _tcp_info(sock), 24)
    return int(length)


def retransmissions(sock: Any) -> int:
    """Count the segments a connected TCP socket had to send again (Linux).

    ``tcpi_total_retrans`` (offset 100): on loopback nothing is lost, so a
    retransmission means the peer's kernel dropped a segment, as it drops
    SYNs and handshake ACKs when the listen queue is full.
    """
    (count,) = struct.unpack_from("I", _tcp_info(sock), 100)
    return int(count)


def listen_overflows() -> int | None:
    """Read the kernel's TcpExt ListenOverflows counter, or None where there is none."""
    try:
        with open("/proc/net/netstat") as netstat:
            lines = netstat.read().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            counters = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            if "ListenOverflows" in counters:
                return int(counters["ListenOverflows"])
    return None
