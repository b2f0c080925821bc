"""RFC 6455 frames: opcodes, close codes, parsing and serialization."""

from __future__ import annotations

import enum
import struct
from collections.abc import Generator, Iterable
from typing import NamedTuple, TypeAlias

import attrs

from ._mypyc import mypyc_attr
from .exceptions import InvalidUTF8, PayloadTooBig, ProtocolError
from .masking import apply_mask
from .streams import StreamReader

__all__ = [
    "CONTROL_OPCODES",
    "DATA_OPCODES",
    "Close",
    "CloseCode",
    "Frame",
    "FrameHead",
    "Opcode",
    "TextFrame",
    "is_valid_close_code",
    "new_frame",
    "parse_close",
    "parse_frame",
    "parse_frame_head",
    "serialize_close",
    "serialize_frame",
    "serialize_frame_head",
    "wait_for_frame_head",
    "with_text",
]

MAX_CONTROL_PAYLOAD_BYTES = 125


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455, section 5.2)."""

    CONT = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


DATA_OPCODES = frozenset({Opcode.CONT, Opcode.TEXT, Opcode.BINARY})
CONTROL_OPCODES = frozenset({Opcode.CLOSE, Opcode.PING, Opcode.PONG})
_OPCODES_BY_VALUE = {int(op): op for op in Opcode}


class CloseCode(enum.IntEnum):
    """Close codes (RFC 6455, section 7.4.1, and the IANA registry)."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    # 1004 is reserved.
    NO_STATUS_RCVD = 1005
    ABNORMAL_CLOSURE = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012
    TRY_AGAIN_LATER = 1013
    BAD_GATEWAY = 1014
    TLS_HANDSHAKE = 1015


# Codes a peer may put in a close frame; 1005, 1006 and 1015 are reserved for
# reporting and must never appear on the wire.
_WIRE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})


def is_valid_close_code(code: int) -> bool:
    """Tell whether ``code`` may appear in a close frame on the wire."""
    return code in _WIRE_CLOSE_CODES or 3000 <= code < 5000


class Frame(NamedTuple):
    """One WebSocket frame, immutable.

    ``data`` is the unmasked payload. ``rsv1`` to ``rsv3`` are the reserved
    bits, which only a negotiated extension may set. A named tuple rather than
    an attrs class: a frame is built for every message received and sent, and
    a tuple is built several times faster.
    """

    opcode: Opcode
    data: bytes
    fin: bool = True
    rsv1: bool = False
    rsv2: bool = False
    rsv3: bool = False

    def __str__(self) -> str:
        name = self.opcode.name
        shown = self.data[:60]
        more = "..." if len(self.data) > 60 else ""
        return f"{name} {shown!r}{more} [{len(self.data)} bytes{'' if self.fin else ', continued'}]"


# mypyc cannot compile a subclass of a named tuple into a native class; the
# pure-Python build ignores the decorator.
@mypyc_attr(native_class=False)
class TextFrame(Frame):
    """A frame of a text message, with the text the connection decoded from it.

    :meth:`ServerConnection.events_received
    <wsserver.sansio.ServerConnection.events_received>` returns one for every
    TEXT frame and for every continuation frame of a text message; binary and
    control frames stay plain :class:`Frame` objects. It is still a
    :class:`Frame`: it compares and hashes equal to the :class:`Frame` with the
    same six fields, so code that compares frames as tuples is unaffected.

    Attributes:
        text: The characters decoded from this frame's payload (after
            decompression, if an extension compressed it), decoded once, by
            the connection, while it checked the UTF-8. A character whose
            bytes are split across frames belongs to the frame that ends it,
            so ``"".join(frame.text for frame in fragments)`` is the whole
            message; for an unfragmented message ``text`` is the message.
    """

    # No __slots__: a tuple subclass cannot add slots, so ``text`` lives in
    # the instance's __dict__, which also keeps the tuple's six fields intact.
    text: str

    @classmethod
    def _make(cls, iterable: Iterable[object]) -> Frame:  # type: ignore[override]
        # _replace() rebuilds through _make(): a changed frame no longer holds
        # the text that was decoded, so it comes back as a plain Frame rather
        # than a TextFrame without ``text``. (mypy expects _make to return cls.)
        return Frame._make(iterable)


_new_tuple = tuple.__new__

# (fin, rsv1, rsv2, rsv3) for each value of a frame's first byte shifted right by
# four: a lookup instead of four bool() calls for every frame received.
_FLAGS: tuple[tuple[bool, bool, bool, bool], ...] = tuple(
    (bool(bits & 8), bool(bits & 4), bool(bits & 2), bool(bits & 1)) for bits in range(16)
)


def new_frame(opcode: Opcode, data: bytes, first: int) -> Frame:
    """Build the :class:`Frame` whose header starts with the byte ``first``.

    Args:
        opcode: the frame's opcode (the low four bits of ``first``, checked).
        data: the unmasked payload.
        first: the first header byte: FIN, RSV1 to RSV3 and the opcode.

    Returns:
        The frame, built without the named tuple's keyword handling: this
        runs for every frame received.
    """
    return _new_tuple(Frame, (opcode, data, *_FLAGS[first >> 4]))


def with_text(frame: Frame, text: str) -> TextFrame:
    """Turn ``frame`` into the :class:`TextFrame` that carries ``text``.

    Args:
        frame: a TEXT frame or a continuation frame of a text message.
        text: the characters decoded from its payload.

    Returns:
        A :class:`TextFrame` with the same six fields.
    """
    # Built from a plain tuple: tuple.__new__ iterates over a tuple subclass.
    opcode, data, fin, rsv1, rsv2, rsv3 = frame
    text_frame = _new_tuple(TextFrame, (opcode, data, fin, rsv1, rsv2, rsv3))
    text_frame.text = text
    return text_frame


@attrs.frozen(slots=True)
class Close:
    """The content of a close frame: a close code and a reason."""

    code: int
    reason: str = ""

    def __str__(self) -> str:
        try:
            name = CloseCode(self.code).name.lower().replace("_", " ")
        except ValueError:
            name = "application" if self.code >= 3000 else "unknown"
        text = f"{self.code} ({name})"
        return f"{text} {self.reason}" if self.reason else text


_unpack_16 = struct.Struct("!H").unpack
_unpack_64 = struct.Struct("!Q").unpack
_pack_head = struct.Struct("!BB").pack
_pack_head_16 = struct.Struct("!BBH").pack
_pack_head_64 = struct.Struct("!BBQ").pack


FrameHead: TypeAlias = "tuple[Opcode, int, int, int, bytes]"
"""What :func:`parse_frame_head` returns.

``(opcode, first, length, start, mask)``: the opcode; the first header byte
(FIN, RSV1 to RSV3 and the opcode bits); the payload length; where the payload
starts, counted from the frame's first byte (after the header and the mask);
the 4-byte mask, or ``b""`` for an unmasked frame.
"""


def parse_frame_head(
    reader: StreamReader,
    *,
    mask_required: bool = True,
    max_size: int | None = None,
) -> FrameHead | None:
    """Check the header of the next frame in ``reader`` without consuming anything.

    Checks the rules every frame must satisfy on its own: a known opcode,
    masking, control frames unfragmented and at most 125 bytes, lengths
    minimally encoded. Rules that depend on the connection (reserved bits,
    continuation order) are the connection's. A plain function rather than a
    generator, so that a header already buffered costs no generator: call it
    again once more bytes arrived when it returns ``None``.

    Args:
        reader: the buffer the frame is read from.
        mask_required: reject unmasked frames (a client's frames come masked).
        max_size: reject a data frame's payload longer than this many bytes.

    Returns:
        The header as a :data:`FrameHead`, or ``None`` while part of it (the
        mask included) has not arrived.

    Raises:
        ProtocolError: on any violation of :rfc:`6455#section-5.2`, as soon as
            the bytes that show it have arrived.
        PayloadTooBig: if a data frame's payload is longer than ``max_size``.
    """
    buffered = len(reader)
    if buffered < 2:
        return None
    first, second = reader.peek_head()
    try:
        opcode = _OPCODES_BY_VALUE[first & 0x0F]
    except KeyError:
        raise ProtocolError(f"invalid opcode: {first & 0x0F:#x}") from None
    masked = second & 0x80
    if mask_required and not masked:
        raise ProtocolError("unmasked frame from the client")
    length = second & 0x7F
    if opcode >= 0x8:
        if not first & 0x80:
            raise ProtocolError("fragmented control frame")
        if length > MAX_CONTROL_PAYLOAD_BYTES:
            raise ProtocolError("control frame longer than 125 bytes")

    if length < 126:
        start = 2
    elif length == 126:
        if buffered < 4:
            return None
        (length,) = _unpack_16(reader.peek(4)[2:])
        if length < 126:
            raise ProtocolError("payload length not minimally encoded")
        start = 4
    else:
        if buffered < 10:
            return None
        (length,) = _unpack_64(reader.peek(10)[2:])
        if length >> 63:
            raise ProtocolError("payload length has its most significant bit set")
        if length < 65536:
            raise ProtocolError("payload length not minimally encoded")
        start = 10
    # Control frames are not part of a message: they are capped at 125 bytes
    # above and must not eat into the budget of a message they interrupt.
    if max_size is not None and length > max_size and opcode < Opcode.CLOSE:
        raise PayloadTooBig(f"frame of {length} bytes exceeds limit of {max_size} bytes")
    if not masked:
        return opcode, first, length, start, b""
    if buffered < start + 4:
        return None
    return opcode, first, length, start + 4, reader.peek(4, start)


def wait_for_frame_head(
    reader: StreamReader,
    *,
    mask_required: bool = True,
    max_size: int | None = None,
) -> Generator[None, None, FrameHead]:
    """Wait until the next frame's header has arrived, then check it.

    The generator twin of :func:`parse_frame_head`, for when it returned
    ``None``; it takes the same arguments and raises the same errors.

    Raises:
        EOFError: if the stream ends inside the header.
    """
    while True:
        head = parse_frame_head(reader, mask_required=mask_required, max_size=max_size)
        if head is not None:
            return head
        if reader.at_eof:
            raise EOFError(f"stream ended after {len(reader)} bytes of a frame header")
        yield


def parse_frame(
    reader: StreamReader,
    *,
    mask_required: bool = True,
    max_size: int | None = None,
) -> Generator[None, None, Frame]:
    """Parse one frame from ``reader``; a generator that yields while bytes are missing.

    Checks what :func:`parse_frame_head` checks, then reads the payload.

    Args:
        reader: the buffer the frame is read from.
        mask_required: reject unmasked frames (a client's frames come masked).
        max_size: reject a data frame's payload longer than this many bytes.

    Returns:
        The frame, its payload unmasked.

    Raises:
        ProtocolError: on any violation of :rfc:`6455#section-5`.
        PayloadTooBig: if a data frame's payload is longer than ``max_size``.
        EOFError: if the stream ends inside the frame.
    """
    head = parse_frame_head(reader, mask_required=mask_required, max_size=max_size)
    if head is None:
        head = yield from wait_for_frame_head(
            reader, mask_required=mask_required, max_size=max_size
        )
    opcode, first, length, start, mask = head
    # The payload is taken in one copy once the whole frame has arrived.
    if len(reader) < start + length:
        yield from reader.wait_for(start + length)
    if mask:
        return new_frame(opcode, reader.read_unmasked(length, mask, start), first)
    reader.read_now(start)
    data = reader.read_now(length)
    assert data is not None  # wait_for() saw the whole frame buffered
    return new_frame(opcode, data, first)


def serialize_frame(frame: Frame, *, mask: bytes | None = None) -> bytes:
    """Encode ``frame`` for the wire; the server sends unmasked frames.

    :param mask: a 4-byte mask, for a client or a test acting as one.
    """
    head = serialize_frame_head(frame, masked=mask is not None)
    if mask is None:
        return head + frame.data
    return head + mask + apply_mask(frame.data, mask)


def serialize_frame_head(frame: Frame, *, masked: bool = False) -> bytes:
    """Encode the header of ``frame``: everything before the mask and the payload.

    Writing the header and a large payload separately saves copying the payload.
    """
    first = (
        (0x80 if frame.fin else 0)
        | (0x40 if frame.rsv1 else 0)
        | (0x20 if frame.rsv2 else 0)
        | (0x10 if frame.rsv3 else 0)
        | frame.opcode
    )
    mask_bit = 0x80 if masked else 0
    length = len(frame.data)
    if length < 126:
        return _pack_head(first, mask_bit | length)
    if length < 65536:
        return _pack_head_16(first, mask_bit | 126, length)
    return _pack_head_64(first, mask_bit | 127, length)


def parse_close(data: bytes) -> tuple[int, str]:
    """Decode a close frame's payload into ``(code, reason)``.

    An empty payload means code 1005 (no status received).

    :raises ProtocolError: if the payload is one byte long or the code is invalid.
    :raises InvalidUTF8: if the reason is not valid UTF-8.
    """
    length = len(data)
    if length == 0:
        return CloseCode.NO_STATUS_RCVD, ""
    if length == 1:
        raise ProtocolError("close frame with a one-byte payload")
    (code,) = _unpack_16(data[:2])
    if not is_valid_close_code(code):
        raise ProtocolError(f"invalid close code: {code}")
    try:
        reason = data[2:].decode()
    except UnicodeDecodeError as exc:
        raise InvalidUTF8("close reason is not valid UTF-8") from exc
    return code, reason


def serialize_close(code: int | None, reason: str = "") -> bytes:
    """Encode a close frame's payload; ``None`` gives an empty payload.

    :raises ValueError: if the code may not be sent, if a reason is given
        without a code, or if the payload would exceed 125 bytes.
    """
    if code is None:
        if reason:
            raise ValueError("a close reason needs a close code")
        return b""
    if not is_valid_close_code(code):
        raise ValueError(f"close code {code} may not be sent")
    payload = struct.pack("!H", code) + reason.encode()
    if len(payload) > MAX_CONTROL_PAYLOAD_BYTES:
        raise ValueError("close reason longer than 123 bytes once encoded")
    return payload
