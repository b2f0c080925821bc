"""Frame and close payload encoding (RFC 6455, sections 5.2 and 7.4)."""

from __future__ import annotations

import struct

import pytest

from wsserver.sansio import (
    Close,
    CloseCode,
    Frame,
    InvalidUTF8,
    Opcode,
    PayloadTooBig,
    ProtocolError,
)
from wsserver.sansio.frames import (
    is_valid_close_code,
    parse_close,
    parse_frame,
    serialize_close,
    serialize_frame,
)
from wsserver.sansio.streams import StreamReader

from .helpers import MASK, client_frame, close_payload, open_connection, sent_frames


def parse(data: bytes, **kwargs: object) -> Frame:
    """Parse one frame from ``data``, which must hold exactly that frame."""
    reader = StreamReader()
    reader.feed_data(data)
    parser = parse_frame(reader, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(StopIteration) as stop:
        next(parser)
    assert len(reader) == 0
    frame = stop.value.value
    assert isinstance(frame, Frame)
    return frame


def parse_error(data: bytes, **kwargs: object) -> ProtocolError:
    reader = StreamReader()
    reader.feed_data(data)
    parser = parse_frame(reader, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError) as info:
        next(parser)
    return info.value


# Length encodings ---------------------------------------------------------------

LENGTHS = [
    # (payload length, header length without mask, second byte's length field)
    (0, 2, 0),
    (1, 2, 1),
    (125, 2, 125),
    (126, 4, 126),
    (127, 4, 126),
    (65535, 4, 126),
    (65536, 10, 127),
    (2**20 + 3, 10, 127),
]


@pytest.mark.parametrize(("length", "head_length", "length_field"), LENGTHS)
def test_every_length_encoding_round_trips_masked(
    length: int, head_length: int, length_field: int
) -> None:
    frame = Frame(Opcode.BINARY, bytes(range(256)) * (length // 256) + b"x" * (length % 256))

    data = serialize_frame(frame, mask=MASK)

    assert len(data) == head_length + 4 + length
    assert data[1] == 0x80 | length_field
    assert data[head_length : head_length + 4] == MASK
    assert parse(data) == frame


@pytest.mark.parametrize(("length", "head_length", "length_field"), LENGTHS)
def test_every_length_encoding_round_trips_unmasked(
    length: int, head_length: int, length_field: int
) -> None:
    frame = Frame(Opcode.TEXT, b"a" * length)

    data = serialize_frame(frame)

    assert len(data) == head_length + length
    assert data[1] == length_field
    assert data[head_length:] == frame.data
    assert parse(data, mask_required=False) == frame


@pytest.mark.parametrize(("length", "head_length", "length_field"), LENGTHS)
def test_every_length_encoding_is_received_by_a_connection(
    length: int, head_length: int, length_field: int
) -> None:
    connection = open_connection(max_size=None)

    connection.receive_data(client_frame(Opcode.BINARY, b"z" * length))

    assert connection.events_received() == [Frame(Opcode.BINARY, b"z" * length)]
    assert connection.data_to_send() == []


def test_serialized_frame_sets_fin_rsv_and_opcode_bits() -> None:
    frame = Frame(Opcode.PONG, b"", fin=True, rsv1=True, rsv2=False, rsv3=True)

    assert serialize_frame(frame) == bytes([0x80 | 0x40 | 0x10 | 0x0A, 0])


def test_parsed_frame_reads_fin_and_rsv_bits() -> None:
    frame = parse(client_frame(Opcode.CONT, b"x", fin=False, rsv=0b011))

    assert frame == Frame(Opcode.CONT, b"x", fin=False, rsv1=False, rsv2=True, rsv3=True)


def test_server_frames_are_not_masked() -> None:
    assert serialize_frame(Frame(Opcode.TEXT, b"Hello")) == b"\x81\x05Hello"


def test_rfc_6455_masked_example_is_parsed() -> None:
    # RFC 6455, section 5.7: a single-frame masked text message "Hello".
    data = bytes.fromhex("818537fa213d7f9f4d5158")

    assert parse(data) == Frame(Opcode.TEXT, b"Hello")


def test_frame_is_parsed_one_byte_at_a_time() -> None:
    data = client_frame(Opcode.BINARY, b"q" * 300)
    reader = StreamReader()
    parser = parse_frame(reader)
    next(parser)

    for byte in data[:-1]:
        reader.feed_data(bytes([byte]))
        next(parser)  # still needs more bytes
    reader.feed_data(data[-1:])

    with pytest.raises(StopIteration) as stop:
        next(parser)
    assert stop.value.value == Frame(Opcode.BINARY, b"q" * 300)


def test_frame_cut_short_by_eof_raises_eof_error() -> None:
    reader = StreamReader()
    reader.feed_data(client_frame(Opcode.TEXT, b"hello")[:-1])
    reader.feed_eof()

    with pytest.raises(EOFError):
        next(parse_frame(reader))


# Header rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "length_bytes"),
    [(0, 2), (125, 2), (0, 8), (126, 8), (65535, 8)],
)
def test_non_minimal_length_encoding_is_a_protocol_error(length: int, length_bytes: int) -> None:
    data = client_frame(Opcode.BINARY, b"a" * length, length_bytes=length_bytes)

    assert parse_error(data).code == 1002


def test_64_bit_length_with_most_significant_bit_set_is_a_protocol_error() -> None:
    data = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 2**63 + 65536) + MASK

    assert parse_error(data, max_size=None).code == 1002


def test_unmasked_frame_is_a_protocol_error_when_masking_is_required() -> None:
    assert parse_error(client_frame(Opcode.TEXT, b"hi", mask=None)).code == 1002


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_unknown_opcode_is_a_protocol_error(opcode: int) -> None:
    assert parse_error(client_frame(opcode, b"")).code == 1002


@pytest.mark.parametrize("opcode", [Opcode.CLOSE, Opcode.PING, Opcode.PONG])
def test_fragmented_control_frame_is_a_protocol_error(opcode: Opcode) -> None:
    assert parse_error(client_frame(opcode, b"", fin=False)).code == 1002


@pytest.mark.parametrize("opcode", [Opcode.CLOSE, Opcode.PING, Opcode.PONG])
def test_control_frame_over_125_bytes_is_a_protocol_error(opcode: Opcode) -> None:
    assert parse_error(client_frame(opcode, b"\x03\xe8" + b"a" * 124)).code == 1002


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG])
def test_control_frame_of_125_bytes_is_accepted(opcode: Opcode) -> None:
    assert parse(client_frame(opcode, b"a" * 125)) == Frame(opcode, b"a" * 125)


def test_payload_over_max_size_raises_payload_too_big_before_reading_it() -> None:
    reader = StreamReader()
    reader.feed_data(client_frame(Opcode.BINARY, b"a" * 101)[:8])

    with pytest.raises(PayloadTooBig) as info:
        next(parse_frame(reader, max_size=100))

    assert info.value.code == 1009


def test_payload_of_exactly_max_size_is_accepted() -> None:
    assert parse(client_frame(Opcode.BINARY, b"a" * 100), max_size=100).data == b"a" * 100


def test_frame_str_names_the_opcode_and_size() -> None:
    assert str(Frame(Opcode.TEXT, b"hi", fin=False)) == "TEXT b'hi' [2 bytes, continued]"
    assert str(Frame(Opcode.BINARY, b"a" * 100)).endswith("'... [100 bytes]")


# Close payloads ----------------------------------------------------------------------

VALID_CODES = [1000, 1001, 1002, 1003, *range(1007, 1015), 3000, 3999, 4000, 4999]
INVALID_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize("code", VALID_CODES)
def test_valid_close_code_round_trips(code: int) -> None:
    payload = serialize_close(code, "bye")

    assert payload == struct.pack("!H", code) + b"bye"
    assert parse_close(payload) == (code, "bye")
    assert is_valid_close_code(code)


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_close_code_is_a_protocol_error_when_parsed(code: int) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_close(close_payload(code))

    assert info.value.code == 1002
    assert not is_valid_close_code(code)


@pytest.mark.parametrize("code", INVALID_CODES)
def test_invalid_close_code_cannot_be_serialized(code: int) -> None:
    with pytest.raises(ValueError):
        serialize_close(code)


def test_empty_close_payload_means_1005() -> None:
    assert parse_close(b"") == (CloseCode.NO_STATUS_RCVD, "")
    assert serialize_close(None) == b""


def test_reason_without_code_cannot_be_serialized() -> None:
    with pytest.raises(ValueError):
        serialize_close(None, "why")


def test_one_byte_close_payload_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError) as info:
        parse_close(b"\x03")

    assert info.value.code == 1002


@pytest.mark.parametrize(
    "reason",
    [b"\xff", b"\xc3", b"caf\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"],
)
def test_close_reason_with_invalid_utf8_is_an_invalid_data_error(reason: bytes) -> None:
    with pytest.raises(InvalidUTF8) as info:
        parse_close(close_payload(1000, reason))

    assert info.value.code == 1007


def test_close_reason_is_decoded_as_utf8() -> None:
    assert parse_close(close_payload(1001, "caf\xe9 \u2603".encode())) == (1001, "caf\xe9 \u2603")


def test_close_reason_of_123_bytes_fits_and_124_does_not() -> None:
    assert len(serialize_close(1000, "a" * 123)) == 125

    with pytest.raises(ValueError):
        serialize_close(1000, "a" * 124)
    with pytest.raises(ValueError):
        serialize_close(1000, "\xe9" * 62)


def test_close_str_names_the_code() -> None:
    assert str(Close(1000, "bye")) == "1000 (normal closure) bye"
    assert str(Close(4000)) == "4000 (application)"


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 1016, 2999, 5000])
def test_connection_fails_1002_on_a_close_frame_with_invalid_code(code: int) -> None:
    connection = open_connection()

    connection.receive_data(client_frame(Opcode.CLOSE, close_payload(code)))

    frames, eof = sent_frames(connection)
    assert frames == [Frame(Opcode.CLOSE, serialize_close(1002, f"invalid close code: {code}"))]
    assert eof


def test_connection_fails_1002_on_a_one_byte_close_payload() -> None:
    connection = open_connection()

    connection.receive_data(client_frame(Opcode.CLOSE, b"\x03"))

    frames, eof = sent_frames(connection)
    assert [parse_close(frame.data)[0] for frame in frames] == [1002]
    assert eof


def test_connection_fails_1007_on_a_close_reason_with_invalid_utf8() -> None:
    connection = open_connection()

    connection.receive_data(client_frame(Opcode.CLOSE, close_payload(1000, b"\xff")))

    frames, eof = sent_frames(connection)
    assert [parse_close(frame.data)[0] for frame in frames] == [1007]
    assert eof
