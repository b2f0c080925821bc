"""Clients that are not ours, for the I/O tests.

* :func:`connect` / :func:`in_thread`: the ``websockets`` library's sync
  client, run in a worker thread so that it works on either backend.
* :class:`RawClient`: a socket speaking hand-built frames, for checks at the
  protocol level (frames seen on the wire, peers that misbehave).
"""

from __future__ import annotations

import base64
import functools
import os
import socket
from collections.abc import Callable, Generator, Iterable
from typing import Any, TypeVar

import anyio
import anyio.abc
import anyio.to_thread
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as _ws_connect

from wsserver.sansio.frames import Frame, Opcode, parse_close, parse_frame, serialize_frame
from wsserver.sansio.streams import StreamReader

T = TypeVar("T")

#: Bound on anything a client waits for in a thread, so a broken server fails
#: a test instead of hanging it.
CLIENT_TIMEOUT_SECONDS = 10


async def in_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking client call in a worker thread.

    The thread is abandoned if the caller is cancelled (by a test's
    ``fail_after``), so a stuck client cannot hang the suite.
    """
    return await anyio.to_thread.run_sync(
        functools.partial(function, *args, **kwargs), abandon_on_cancel=True
    )


def connect(uri: str, **options: Any) -> ClientConnection:
    """Open a ``websockets`` sync client connection; blocking, run it with :func:`in_thread`."""
    options.setdefault("open_timeout", CLIENT_TIMEOUT_SECONDS)
    options.setdefault("close_timeout", CLIENT_TIMEOUT_SECONDS)
    options.setdefault("legacy", True)  # return the connection itself
    if "sock" not in options:
        options.setdefault("proxy", None)
    return _ws_connect(uri, **options)


async def open_client(uri: str, **options: Any) -> ClientConnection:
    """Connect a ``websockets`` sync client from async code."""
    return await in_thread(connect, uri, **options)


async def recv(client: ClientConnection) -> str | bytes:
    """Receive one message with the ``websockets`` client, from async code."""
    return await in_thread(client.recv, CLIENT_TIMEOUT_SECONDS)


def port_of(uri: str) -> int:
    """The port of a ``ws://host:port`` URI."""
    return int(uri.rsplit(":", 1)[1].split("/", 1)[0])


def handshake_request(path: str = "/", headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """A valid opening handshake request, without extensions."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawClient:
    """A TCP client that writes masked frames built by hand and parses what comes back.

    :param stream: the connected byte stream.
    """

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.reader = StreamReader()
        self.status: int | None = None
        self.headers: dict[str, str] = {}

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        """Connect to 127.0.0.1:``port`` without doing the handshake."""
        return cls(await anyio.connect_tcp("127.0.0.1", port))

    @classmethod
    async def open(cls, port: int, path: str = "/") -> RawClient:
        """Connect and complete the opening handshake.

        :raises AssertionError: if the server does not answer 101.
        """
        client = await cls.connect(port)
        await client.stream.send(handshake_request(path))
        await client.read_response_head()
        assert client.status == 101, client.status
        return client

    async def read_response_head(self) -> None:
        """Read the HTTP response's status line and headers."""
        lines = await self._run(_read_head(self.reader))
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    async def read_until_eof(self) -> bytes:
        """Read everything until the server closes the connection."""
        chunks = [await self._run(self.reader.read_exact(len(self.reader)))]
        while True:
            try:
                chunks.append(await self.stream.receive())
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return b"".join(chunks)

    async def send_frame(self, opcode: Opcode, data: bytes = b"", fin: bool = True) -> None:
        """Send one masked frame."""
        await self.stream.send(serialize_frame(Frame(opcode, data, fin), mask=os.urandom(4)))

    async def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame."""
        await self.send_frame(Opcode.CLOSE, code.to_bytes(2, "big") + reason.encode())

    async def recv_frame(self) -> Frame:
        """Receive one frame from the server.

        :raises EOFError: if the server closed the connection first.
        """
        return await self._run(parse_frame(self.reader, mask_required=False))

    async def recv_close(self) -> tuple[int, str]:
        """Receive frames until a close frame; return its code and reason."""
        while True:
            frame = await self.recv_frame()
            if frame.opcode is Opcode.CLOSE:
                return parse_close(frame.data)

    async def wait_for_eof(self) -> None:
        """Discard incoming bytes until the server closes its side, then close ours."""
        await self.read_until_eof()
        await self.stream.aclose()

    async def aclose(self) -> None:
        """Close the TCP connection."""
        await self.stream.aclose()

    async def _run(self, parser: Any) -> Any:
        """Drive a generator parser over the stream until it returns."""
        try:
            while True:
                try:
                    next(parser)
                except StopIteration as done:
                    return done.value
                try:
                    data = await self.stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    self.reader.feed_eof()
                else:
                    self.reader.feed_data(data)
        finally:
            parser.close()


def _read_head(reader: StreamReader) -> Generator[None, None, list[str]]:
    """Parse an HTTP head into its lines, without the blank line that ends it."""
    lines = []
    while True:
        line = (yield from reader.read_line(8192)).decode().rstrip("\r\n")
        if not line:
            return lines
        lines.append(line)


def nonblocking_socket(port: int, *, receive_buffer: int | None = None,
                       send_buffer: int | None = None) -> socket.socket:
    """A connected, non-blocking TCP socket with optionally small kernel buffers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    if send_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock
