"""Byte builders that play the client's part in sans-I/O tests."""

from __future__ import annotations

import struct
from collections.abc import Iterable

from wsserver.sansio import Frame, Request, ServerConnection, State
from wsserver.sansio.frames import parse_frame
from wsserver.sansio.streams import StreamReader

# The example key of RFC 6455, section 1.3, and the accept value it gives.
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

MASK = b"\x37\xfa\x21\x3d"

DEFAULT_HEADERS: tuple[tuple[str, str], ...] = (
    ("Host", "example.com"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", RFC_KEY),
    ("Sec-WebSocket-Version", "13"),
)


def handshake_request(
    path: str = "/chat",
    *,
    drop: Iterable[str] = (),
    replace: dict[str, str] | None = None,
    extra: Iterable[tuple[str, str]] = (),
    request_line: str | None = None,
) -> bytes:
    """Build a client handshake request.

    :param drop: names of default headers to leave out.
    :param replace: new values for default headers.
    :param extra: headers appended after the defaults, repeats allowed.
    :param request_line: replaces ``GET {path} HTTP/1.1``.
    """
    dropped = {name.lower() for name in drop}
    replace = {name.lower(): value for name, value in (replace or {}).items()}
    lines = [request_line if request_line is not None else f"GET {path} HTTP/1.1"]
    for name, value in DEFAULT_HEADERS:
        if name.lower() in dropped:
            continue
        lines.append(f"{name}: {replace.get(name.lower(), value)}")
    lines.extend(f"{name}: {value}" for name, value in extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("iso-8859-1")


def client_frame(
    opcode: int,
    data: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = MASK,
    length_bytes: int | None = None,
) -> bytes:
    """Build one frame as a client sends it: masked unless ``mask`` is ``None``.

    Unlike :func:`wsserver.sansio.frames.serialize_frame` it accepts any
    opcode and any reserved bits (``rsv`` is the 3-bit value of RSV1-RSV3), and
    ``length_bytes`` (0, 2 or 8) forces a length encoding, minimal or not.
    """
    first = (0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0x0F)
    mask_bit = 0x80 if mask is not None else 0
    length = len(data)
    if length_bytes is None:
        length_bytes = 0 if length < 126 else 2 if length < 65536 else 8
    if length_bytes == 0:
        head = bytes([first, mask_bit | length])
    elif length_bytes == 2:
        head = bytes([first, mask_bit | 126]) + struct.pack("!H", length)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack("!Q", length)
    if mask is None:
        return head + data
    masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(data))
    return head + mask + masked


def close_payload(code: int, reason: bytes = b"") -> bytes:
    """A close frame's payload, with no check of the code or the reason."""
    return struct.pack("!H", code) + reason


def open_connection(**kwargs: object) -> ServerConnection:
    """A connection that completed the opening handshake, with its output drained."""
    connection = ServerConnection(**kwargs)  # type: ignore[arg-type]
    connection.receive_data(handshake_request())
    (request,) = connection.events_received()
    assert isinstance(request, Request)
    connection.send_response(connection.accept(request))
    assert connection.state is State.OPEN
    connection.data_to_send()
    return connection


def parse_server_frames(data: bytes) -> list[Frame]:
    """Decode the unmasked frames a server wrote; the bytes must hold whole frames."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    while len(reader):
        parser = parse_frame(reader, mask_required=False)
        try:
            next(parser)
        except StopIteration as stop:
            frames.append(stop.value)
        else:
            raise AssertionError("incomplete frame in the server's output")
    return frames


def sent_frames(connection: ServerConnection) -> tuple[list[Frame], bool]:
    """Drain the connection's output: the frames it wrote, and whether it then sent EOF."""
    writes = connection.data_to_send()
    eof = bool(writes) and writes[-1] == b""
    assert b"" not in writes[:-1], "bytes queued after the end of the stream"
    return parse_server_frames(b"".join(writes)), eof
