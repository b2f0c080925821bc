"""Fuzz: random and mutated byte streams after a valid handshake, against a live server.

One server runs for the whole hypothesis run, in a blocking portal on the
backend under test; each example connects with a plain blocking socket, does
a valid opening handshake (offering permessage-deflate in some examples),
sends either random bytes or valid frames with bit flips, truncations and
inserted bytes, then a valid close frame, and half-closes. Whatever it sent:

* the server answers with well-formed frames, ending with a close frame whose
  code is 1000, 1002, 1007 or 1009 (or the echo of a close code the example
  itself sent), or closes TCP without one;
* nothing escapes the server's tasks: no ERROR log line, and the handler
  never sees an exception other than ``ConnectionClosed``;
* the server keeps serving: a normal client gets its echo at the end, and the
  server then closes promptly with every handler ended.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import zlib
from typing import Any

import anyio.from_thread
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

from wsserver.sansio.frames import Frame, Opcode, serialize_frame

from .harness import HandlerTally, echo, error_lines, serving

EXAMPLES = 200
SOCKET_TIMEOUT_SECONDS = 10.0
#: Close codes the server may send of its own accord after bad input.
SERVER_CLOSE_CODES = frozenset({1000, 1002, 1007, 1009})
MAX_SIZE_BYTES = 4096
_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_KNOWN_OPCODES = frozenset({0x0, 0x1, 0x2, 0x8, 0x9, 0xA})


# What an example sends -----------------------------------------------------------------

text_payloads = st.text(max_size=200).map(str.encode)
fragment_counts = st.integers(1, 3)
data_messages = st.one_of(
    st.tuples(st.just(Opcode.TEXT), text_payloads, fragment_counts),
    st.tuples(st.just(Opcode.BINARY), st.binary(max_size=600), fragment_counts),
)
#: Over max_size: the server must close with 1009.
too_big_messages = st.tuples(
    st.just(Opcode.BINARY), st.binary(min_size=MAX_SIZE_BYTES + 1, max_size=MAX_SIZE_BYTES + 99),
    fragment_counts,
)
control_frames = st.tuples(
    st.sampled_from([Opcode.PING, Opcode.PONG]), st.binary(max_size=125), st.just(1)
)
mutations = st.lists(
    st.one_of(
        st.tuples(st.just("flip"), st.integers(0, 2**20), st.integers(0, 7)),
        st.tuples(st.just("truncate"), st.integers(0, 2**20), st.just(0)),
        st.tuples(st.just("insert"), st.integers(0, 2**20), st.binary(min_size=1, max_size=8)),
    ),
    max_size=3,  # none at all now and then: the valid stream must get its echoes and a 1000
)


def deflate(data: bytes) -> bytes:
    """Compress one message as permessage-deflate does (RFC 7692, section 7.2.1)."""
    compressor = zlib.compressobj(wbits=-15)
    compressed = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return compressed[:-4] if compressed.endswith(b"\x00\x00\xff\xff") else compressed


def valid_frames(messages: list[tuple[Opcode, bytes, int]], compress: bool) -> bytes:
    """Serialize messages (fragmented as asked) and control frames, masked."""
    out = []
    for opcode, payload, fragments in messages:
        if opcode in (Opcode.PING, Opcode.PONG):
            out.append(serialize_frame(Frame(opcode, payload), mask=os.urandom(4)))
            continue
        data = deflate(payload) if compress else payload
        step = max(1, -(-len(data) // fragments))
        pieces = [data[start : start + step] for start in range(0, len(data), step)] or [b""]
        for index, piece in enumerate(pieces):
            frame = Frame(
                opcode if index == 0 else Opcode.CONT,
                piece,
                fin=index == len(pieces) - 1,
                rsv1=compress and index == 0,
            )
            out.append(serialize_frame(frame, mask=os.urandom(4)))
    return b"".join(out)


def mutate(data: bytes, changes: list[tuple[str, int, Any]]) -> bytes:
    """Apply bit flips, truncations and insertions at positions taken modulo the length."""
    buffer = bytearray(data)
    for kind, position, value in changes:
        if not buffer:
            break
        index = position % len(buffer)
        if kind == "flip":
            buffer[index] ^= 1 << value
        elif kind == "truncate":
            del buffer[index:]
        else:
            buffer[index:index] = value
    return bytes(buffer)


def close_codes_in(data: bytes) -> set[int]:
    """Codes of the close frames a lenient parse of our own (masked) stream finds."""
    codes: set[int] = set()
    offset = 0
    while offset + 2 <= len(data):
        first, second = data[offset], data[offset + 1]
        length, offset = second & 0x7F, offset + 2
        if length == 126:
            if offset + 2 > len(data):
                break
            (length,) = struct.unpack_from("!H", data, offset)
            offset += 2
        elif length == 127:
            if offset + 8 > len(data):
                break
            (length,) = struct.unpack_from("!Q", data, offset)
            offset += 8
        mask = b"\0\0\0\0"
        if second & 0x80:
            mask, offset = data[offset : offset + 4], offset + 4
        payload = data[offset : offset + length]
        offset += length
        if first & 0x0F == 0x8 and len(payload) >= 2 and len(mask) == 4:
            code = struct.unpack("!H", bytes(b ^ mask[i % 4] for i, b in enumerate(payload[:2])))
            codes.add(code[0])
    return codes


# Talking to the server -------------------------------------------------------------------


def open_connection(port: int, offer_deflate: bool) -> socket.socket:
    """Connect and run a valid opening handshake; return the socket."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT_SECONDS)
    key = base64.b64encode(os.urandom(16))
    request = (
        b"GET /fuzz HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
    )
    if offer_deflate:
        request += b"Sec-WebSocket-Extensions: permessage-deflate\r\n"
    sock.sendall(request + b"\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: nothing after the head may be consumed
        assert chunk, "the server closed during the handshake"
        head += chunk
    accept = base64.b64encode(hashlib.sha1(key + _ACCEPT_GUID).digest())
    assert head.startswith(b"HTTP/1.1 101 ") and accept in head, head
    assert (b"permessage-deflate" in head) == offer_deflate, head
    return sock


def read_until_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes TCP (an RST ends it too)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Parse the server's frames strictly: ``(opcode, payload)`` each.

    :raises AssertionError: on anything a correct server never sends.
    """
    frames = []
    offset = 0
    while offset < len(data):
        assert offset + 2 <= len(data), f"a partial frame head at the end: {data[offset:]!r}"
        first, second = data[offset], data[offset + 1]
        opcode = first & 0x0F
        assert opcode in _KNOWN_OPCODES and not first & 0x30, f"bad frame head {first:#x}"
        assert not second & 0x80, "the server masked a frame"
        length, offset = second & 0x7F, offset + 2
        if length == 126:
            (length,) = struct.unpack_from("!H", data, offset)
            offset += 2
        elif length == 127:
            (length,) = struct.unpack_from("!Q", data, offset)
            offset += 8
        assert offset + length <= len(data), "a partial frame at the end"
        if opcode >= 0x8:
            assert first & 0x80 and length <= 125, "a fragmented or long control frame"
        frames.append((opcode, data[offset : offset + length]))
        offset += length
    return frames


def exchange(port: int, offer_deflate: bool, stream: bytes) -> list[tuple[int, bytes]]:
    """Send ``stream`` and a valid close after the handshake; return the server's frames."""
    with open_connection(port, offer_deflate) as sock:
        close = serialize_frame(Frame(Opcode.CLOSE, struct.pack("!H", 1000)), mask=os.urandom(4))
        try:
            sock.sendall(stream + close)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server already failed the connection and closed: read what it sent
        return server_frames(read_until_eof(sock))


def check_answer(frames: list[tuple[int, bytes]], sent: bytes) -> None:
    """The server's answer ends with an acceptable close frame, or has none at all."""
    closes = [index for index, (opcode, _) in enumerate(frames) if opcode == 0x8]
    if not closes:
        event("dropped without a close frame")
        return  # our stream ended mid-frame
    assert closes == [len(frames) - 1], f"frames after the close: {frames[closes[0]:]}"
    payload = frames[-1][1]
    assert len(payload) != 1, "a one-byte close payload"
    if not payload:
        event("close without a code")
        return  # the echo of a close frame without a code
    (code,) = struct.unpack("!H", payload[:2])
    payload[2:].decode()  # the reason must be valid UTF-8
    allowed = SERVER_CLOSE_CODES | close_codes_in(sent)
    assert code in allowed, f"close code {code}, expected one of {sorted(allowed)}"
    event(f"close {code}" if code in SERVER_CLOSE_CODES else "close echoed")


def normal_client_echo(port: int) -> str:
    with connect(f"ws://127.0.0.1:{port}/", open_timeout=10, close_timeout=5, proxy=None) as ws:
        ws.send("still serving")
        return str(ws.recv(timeout=10))


# The test --------------------------------------------------------------------------------


def test_fuzzed_streams_get_a_valid_close_or_a_drop_and_the_server_keeps_serving(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    with anyio.from_thread.start_blocking_portal(anyio_backend) as portal:
        tally = portal.call(HandlerTally)
        options = {"max_size": MAX_SIZE_BYTES, "close_timeout": 2, "ping_interval": None}
        serving_cm = serving(tally.counted(echo), **options)
        with portal.wrap_async_context_manager(serving_cm) as (_server, port):

            @settings(
                max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow],
            )
            @given(
                offer_deflate=st.booleans(),
                random_stream=st.one_of(st.none(), st.binary(min_size=1, max_size=2048)),
                messages=st.lists(
                    st.one_of(data_messages, control_frames, too_big_messages), max_size=8
                ),
                changes=mutations,
            )
            def fuzz(
                offer_deflate: bool,
                random_stream: bytes | None,
                messages: list[tuple[Opcode, bytes, int]],
                changes: list[tuple[str, int, Any]],
            ) -> None:
                if random_stream is not None:
                    stream = random_stream
                else:
                    stream = mutate(valid_frames(messages, offer_deflate), changes)
                check_answer(exchange(port, offer_deflate, stream), stream)

            fuzz()
            assert normal_client_echo(port) == "still serving"
    assert tally.unexpected == []
    assert tally.finished == tally.started > EXAMPLES
    assert error_lines(caplog) == []
