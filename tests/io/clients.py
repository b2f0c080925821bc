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
import anyio.lowlevel
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

    def __init__(self, stream: anyio.abc.ByteStream | SocketClientStream) -> None:
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
        await client.handshake(path)
        return client

    async def handshake(self, path: str = "/") -> None:
        """Do the opening handshake on an already connected stream.

        :raises AssertionError: if the server does not answer 101.
        """
        await self.stream.send(handshake_request(path))
        await self.read_response_head()
        assert self.status == 101, self.status

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


class SocketClientStream:
    """A byte stream over a plain non-blocking socket, for tests that need its buffers.

    Unlike anyio's streams it can write part of a buffer and say how much
    went out (:meth:`try_send`), which is what measuring back-pressure takes.
    It has the ``send`` / ``receive`` / ``aclose`` methods :class:`RawClient` uses.

    :param port: the TCP port on 127.0.0.1 to connect to.
    :param receive_buffer: ``SO_RCVBUF`` to set before connecting, if any.
    :param send_buffer: ``SO_SNDBUF`` to set before connecting, if any.
    """

    def __init__(
        self, port: int, *, receive_buffer: int | None = None, send_buffer: int | None = None
    ) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        if send_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        # The kernel completes a loopback connection without the server's
        # accept(), so this blocking connect does not hold the event loop up.
        sock.settimeout(CLIENT_TIMEOUT_SECONDS)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        self.sock = sock

    def try_send(self, data: bytes | memoryview) -> int:
        """Write what the kernel takes now, without waiting; return how many bytes."""
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0

    async def wait_writable(self, timeout: float) -> bool:
        """Wait until the socket takes more bytes; false if it did not within ``timeout``."""
        with anyio.move_on_after(timeout):
            await anyio.wait_writable(self.sock)
            return True
        return False

    async def send(self, data: bytes) -> None:
        """Write all of ``data``."""
        view = memoryview(data)
        while view:
            sent = self.try_send(view)
            view = view[sent:]
            if view:
                await anyio.wait_writable(self.sock)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Read up to ``max_bytes``.

        :raises anyio.EndOfStream: once the server closed its side.
        :raises anyio.BrokenResourceError: if the connection was reset.
        """
        while True:
            try:
                data = self.sock.recv(max_bytes)
            except BlockingIOError:
                await anyio.wait_readable(self.sock)
                continue
            except ConnectionError as exc:
                raise anyio.BrokenResourceError from exc
            if not data:
                raise anyio.EndOfStream
            return data

    async def aclose(self) -> None:
        """Close the socket."""
        self.sock.close()
        await anyio.lowlevel.checkpoint()
