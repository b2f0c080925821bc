"""A deliberately small WebSocket client for conformance tests.

It speaks just enough RFC 6455 to drive the server with hand-built frames:
the opening handshake (with an optional ``Sec-WebSocket-Extensions`` offer),
masked frames built with :func:`wsserver.sansio.frames.serialize_frame` or
raw bytes for malformed ones, and a frame parser of its own for what the
server sends back. It never validates what it sends: that is the point.
Every read is bounded by a timeout.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import anyio.abc

from wsserver.sansio.frames import Frame, Opcode, serialize_frame

__all__ = [
    "BINARY",
    "CLOSE",
    "CONT",
    "PING",
    "PONG",
    "TEXT",
    "RawClient",
    "ServerFrame",
    "close_payload",
    "frame_bytes",
]

# Opcodes as plain integers: tests also send opcodes that Opcode cannot name.
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# RFC 6455, section 1.3: the GUID appended to the key before hashing.
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_KNOWN_OPCODES = frozenset(int(opcode) for opcode in Opcode)

DEFAULT_TIMEOUT_SECONDS = 5.0
_READ_CHUNK_BYTES = 2**18
_MAX_RESPONSE_HEAD_BYTES = 16384


@dataclass(frozen=True)
class ServerFrame:
    """One frame as the server sent it (servers never mask)."""

    opcode: int
    payload: bytes
    fin: bool = True
    rsv1: bool = False
    rsv2: bool = False
    rsv3: bool = False

    @property
    def close_code(self) -> int | None:
        """The code of a close frame; ``None`` for an empty close payload."""
        assert self.opcode == CLOSE, f"not a close frame: {self}"
        if not self.payload:
            return None
        return int(struct.unpack("!H", self.payload[:2])[0])

    @property
    def close_reason(self) -> bytes:
        """The raw reason of a close frame."""
        assert self.opcode == CLOSE, f"not a close frame: {self}"
        return self.payload[2:]

    def __repr__(self) -> str:
        shown = self.payload[:40]
        more = "..." if len(self.payload) > 40 else ""
        flags = "".join(
            name for name, on in (("F", self.fin), ("1", self.rsv1), ("2", self.rsv2),
                                  ("3", self.rsv3)) if on
        )
        return f"<frame op={self.opcode:#x} [{flags}] {len(self.payload)}B {shown!r}{more}>"


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    """A close frame's payload: the code as two bytes, then the raw reason."""
    if code is None:
        return reason
    return struct.pack("!H", code) + reason


def frame_bytes(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv1: bool = False,
    rsv2: bool = False,
    rsv3: bool = False,
    mask: bytes | None = None,
    masked: bool = True,
) -> bytes:
    """Encode one client frame, masked with ``mask`` (random if not given).

    Known opcodes go through the library's serializer; unknown opcodes, and
    unmasked frames, are built by hand from RFC 6455, section 5.2.
    """
    if masked and mask is None:
        mask = os.urandom(4)
    if opcode in _KNOWN_OPCODES and masked:
        frame = Frame(Opcode(opcode), payload, fin, rsv1, rsv2, rsv3)
        return serialize_frame(frame, mask=mask)
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | (0x20 if rsv2 else 0)
    first |= (0x10 if rsv3 else 0) | opcode
    head = bytes([first]) + _length_bytes(len(payload), masked=masked)
    if not masked:
        return head + payload
    assert mask is not None
    return head + mask + apply_client_mask(payload, mask)


def _length_bytes(length: int, *, masked: bool) -> bytes:
    mask_bit = 0x80 if masked else 0
    if length < 126:
        return bytes([mask_bit | length])
    if length < 65536:
        return bytes([mask_bit | 126]) + struct.pack("!H", length)
    return bytes([mask_bit | 127]) + struct.pack("!Q", length)


def apply_client_mask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the repeated 4-byte ``mask`` (RFC 6455, section 5.3)."""
    if not payload:
        return b""
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )


def _parse_server_frame(buffer: bytearray) -> tuple[ServerFrame, int] | None:
    """Parse one server frame from the front of ``buffer``; ``None`` if incomplete.

    :returns: the frame and how many bytes it took.
    """
    if len(buffer) < 2:
        return None
    first, second = buffer[0], buffer[1]
    assert not second & 0x80, "the server masked a frame (RFC 6455, section 5.1)"
    length = second & 0x7F
    offset = 2
    if length == 126:
        if len(buffer) < 4:
            return None
        (length,) = struct.unpack_from("!H", buffer, 2)
        assert length >= 126, "the server sent a non-minimal 16-bit length"
        offset = 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        (length,) = struct.unpack_from("!Q", buffer, 2)
        assert 65536 <= length < 2**63, "the server sent a bad 64-bit length"
        offset = 10
    end = offset + length
    if len(buffer) < end:
        return None
    frame = ServerFrame(
        opcode=first & 0x0F,
        payload=bytes(buffer[offset:end]),
        fin=bool(first & 0x80),
        rsv1=bool(first & 0x40),
        rsv2=bool(first & 0x20),
        rsv3=bool(first & 0x10),
    )
    return frame, end


def parse_extensions(value: str) -> list[tuple[str, dict[str, str | None]]]:
    """Split a ``Sec-WebSocket-Extensions`` value into (name, parameters) pairs."""
    result: list[tuple[str, dict[str, str | None]]] = []
    for item in value.split(","):
        parts = [part.strip() for part in item.split(";")]
        if not parts[0]:
            continue
        params: dict[str, str | None] = {}
        for part in parts[1:]:
            name, sep, raw = part.partition("=")
            params[name.strip()] = raw.strip().strip('"') if sep else None
        result.append((parts[0], params))
    return result


class RawClient:
    """A client connection after a successful opening handshake."""

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        headers: dict[str, str],
        leftover: bytes,
    ) -> None:
        self.stream = stream
        self.response_headers = headers
        """The 101 response's headers, names in lower case."""
        self._buffer = bytearray(leftover)
        self._at_eof = False

    @property
    def extensions(self) -> list[tuple[str, dict[str, str | None]]]:
        """The extensions the server accepted, with their parameters."""
        return parse_extensions(self.response_headers.get("sec-websocket-extensions", ""))

    # Connecting --------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        port: int,
        *,
        extensions: str | None = None,
        path: str = "/",
        host: str = "127.0.0.1",
    ) -> AsyncIterator[RawClient]:
        """Open a TCP connection, run the opening handshake, yield the client.

        :param extensions: a ``Sec-WebSocket-Extensions`` offer to send.
        """
        stream = await anyio.connect_tcp(host, port)
        async with stream:
            key = base64.b64encode(os.urandom(16))
            lines = [
                f"GET {path} HTTP/1.1",
                f"Host: {host}:{port}",
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {key.decode()}",
                "Sec-WebSocket-Version: 13",
            ]
            if extensions is not None:
                lines.append(f"Sec-WebSocket-Extensions: {extensions}")
            await stream.send(("\r\n".join(lines) + "\r\n\r\n").encode())
            headers, leftover = await _read_response_head(stream)
            expected = base64.b64encode(hashlib.sha1(key + _ACCEPT_GUID).digest()).decode()
            assert headers.get("sec-websocket-accept") == expected, headers
            yield cls(stream, headers, leftover)

    # Sending -----------------------------------------------------------------------

    async def send_raw(self, data: bytes, *, chunk_size: int | None = None) -> None:
        """Write ``data``, in writes of ``chunk_size`` bytes if given."""
        if chunk_size is None:
            await self.stream.send(data)
            return
        for start in range(0, len(data), chunk_size):
            await self.stream.send(data[start : start + chunk_size])

    async def send_frame(
        self,
        opcode: int,
        payload: bytes = b"",
        *,
        fin: bool = True,
        rsv1: bool = False,
        rsv2: bool = False,
        rsv3: bool = False,
        mask: bytes | None = None,
        chunk_size: int | None = None,
    ) -> None:
        """Send one masked frame."""
        data = frame_bytes(opcode, payload, fin=fin, rsv1=rsv1, rsv2=rsv2, rsv3=rsv3, mask=mask)
        await self.send_raw(data, chunk_size=chunk_size)

    async def send_text(self, payload: str | bytes, *, fin: bool = True) -> None:
        """Send a text frame; ``bytes`` go as they are, valid UTF-8 or not."""
        data = payload.encode() if isinstance(payload, str) else payload
        await self.send_frame(TEXT, data, fin=fin)

    async def send_binary(self, payload: bytes, *, fin: bool = True) -> None:
        """Send a binary frame."""
        await self.send_frame(BINARY, payload, fin=fin)

    async def send_close(self, code: int | None = 1000, reason: bytes = b"") -> None:
        """Send a close frame with a raw reason."""
        await self.send_frame(CLOSE, close_payload(code, reason))

    # Receiving ---------------------------------------------------------------------

    async def recv_frame(self, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> ServerFrame | None:
        """Return the next frame from the server, or ``None`` if TCP closed first.

        :raises TimeoutError: if nothing complete arrives within ``timeout``.
        """
        with anyio.fail_after(timeout):
            while True:
                parsed = _parse_server_frame(self._buffer)
                if parsed is not None:
                    frame, used = parsed
                    del self._buffer[:used]
                    return frame
                if self._at_eof:
                    assert not self._buffer, f"TCP closed inside a frame: {bytes(self._buffer)!r}"
                    return None
                await self._fill()

    async def _fill(self) -> None:
        try:
            data = await self.stream.receive(_READ_CHUNK_BYTES)
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionError):
            self._at_eof = True
        else:
            self._buffer += data

    async def expect_frame(
        self, opcode: int, payload: bytes | None = None, *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> ServerFrame:
        """Receive the next frame and check its opcode (and payload, if given)."""
        frame = await self.recv_frame(timeout)
        assert frame is not None, f"TCP closed while waiting for opcode {opcode:#x}"
        assert frame.opcode == opcode, f"expected opcode {opcode:#x}, got {frame}"
        assert frame.fin, f"the server fragmented its frame: {frame}"
        assert not (frame.rsv1 or frame.rsv2 or frame.rsv3), f"reserved bits set: {frame}"
        if payload is not None:
            assert frame.payload == payload, f"payload differs: {frame} != {payload[:40]!r}"
        return frame

    async def expect_eof(self, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        """Check that the server closes TCP without sending anything more."""
        frame = await self.recv_frame(timeout)
        assert frame is None, f"expected the TCP connection to close, got {frame}"

    async def expect_close(
        self,
        code: int | None,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        then_eof: bool = True,
    ) -> ServerFrame:
        """Check that the next frame is a close with ``code`` and, by default,
        that the server then closes TCP (nothing else may arrive in between).

        ``code=None`` expects an empty close payload.
        """
        frame = await self.recv_frame(timeout)
        assert frame is not None, f"TCP closed without a close frame (expected {code})"
        assert frame.opcode == CLOSE, f"expected a close frame with {code}, got {frame}"
        assert frame.fin and not (frame.rsv1 or frame.rsv2 or frame.rsv3), frame
        assert frame.close_code == code, f"expected close code {code}, got {frame.close_code}"
        assert len(frame.payload) <= 125
        frame.close_reason.decode()  # the server's reason must be valid UTF-8
        if then_eof:
            await self.expect_eof(timeout)
        return frame

    async def finish(self) -> None:
        """Run a normal closing handshake: the server must still be in step."""
        await self.send_close(1000)
        await self.expect_close(1000)

    async def expect_silence(self, seconds: float) -> None:
        """Check that the server sends nothing, and keeps TCP open, for ``seconds``."""
        with anyio.move_on_after(seconds):
            frame = await self.recv_frame(timeout=seconds + 1)
            raise AssertionError(f"expected silence, got {frame}")


async def _read_response_head(stream: anyio.abc.ByteStream) -> tuple[dict[str, str], bytes]:
    """Read the handshake response; check it is a 101; return headers and extra bytes."""
    data = b""
    with anyio.fail_after(DEFAULT_TIMEOUT_SECONDS):
        while b"\r\n\r\n" not in data:
            assert len(data) < _MAX_RESPONSE_HEAD_BYTES, "handshake response too long"
            data += await stream.receive()
    head, _, leftover = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/1.1 101 "), status_line
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert headers.get("upgrade", "").lower() == "websocket", headers
    assert "upgrade" in headers.get("connection", "").lower(), headers
    return headers, leftover
