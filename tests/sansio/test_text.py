"""Text messages: UTF-8 checked as the bytes arrive, the text decoded once (TextFrame)."""

from __future__ import annotations

import codecs
import copy
import itertools
import pickle
import zlib
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsserver.sansio import Frame, Opcode, ServerConnection, State, TextFrame
from wsserver.sansio.extensions import ServerPerMessageDeflateFactory
from wsserver.sansio.frames import parse_close

from .helpers import client_frame, handshake_request, open_connection, sent_frames

BOUNDED = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def assert_failed_with(connection: ServerConnection, code: int) -> None:
    """The server sent one close frame with ``code``, then half-closed."""
    frames, eof = sent_frames(connection)
    assert [frame.opcode for frame in frames] == [Opcode.CLOSE]
    assert parse_close(frames[0].data)[0] == code
    assert eof
    assert connection.state is State.CLOSING


def texts(events: Sequence[object]) -> list[str]:
    return [event.text for event in events if isinstance(event, TextFrame)]


def deflate_connection() -> ServerConnection:
    """A connection that negotiated permessage-deflate, with its output drained."""
    connection = ServerConnection(extensions=[ServerPerMessageDeflateFactory()])
    connection.receive_data(
        handshake_request(extra=[("Sec-WebSocket-Extensions", "permessage-deflate")])
    )
    (request,) = connection.events_received()
    connection.send_response(connection.accept(request))  # type: ignore[arg-type]
    assert connection.state is State.OPEN
    assert connection.extensions
    connection.data_to_send()
    return connection


def deflate(data: bytes) -> bytes:
    """Compress one message's payload as a permessage-deflate client does."""
    compressor = zlib.compressobj(wbits=-15)
    deflated = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return deflated[:-4]  # RFC 7692 section 7.2.1: the sender drops 00 00 ff ff


# TextFrame ------------------------------------------------------------------------------


def test_unfragmented_text_message_carries_its_text() -> None:
    connection = open_connection()

    connection.receive_data(client_frame(Opcode.TEXT, "caf\u00e9 \U0001f600".encode()))

    (frame,) = connection.events_received()
    assert isinstance(frame, TextFrame)
    assert frame.text == "caf\u00e9 \U0001f600"
    assert frame == Frame(Opcode.TEXT, "caf\u00e9 \U0001f600".encode())


def test_empty_text_message_carries_empty_text() -> None:
    connection = open_connection()

    connection.receive_data(client_frame(Opcode.TEXT, b""))

    (frame,) = connection.events_received()
    assert isinstance(frame, TextFrame)
    assert frame.text == ""


def test_every_fragment_of_a_text_message_carries_text_that_joins_into_the_message() -> None:
    encoded = "\u20ac1 \U0001f600".encode()  # split inside both multi-byte characters
    connection = open_connection()

    connection.receive_data(
        client_frame(Opcode.TEXT, encoded[:2], fin=False)
        + client_frame(Opcode.PING, b"between")
        + client_frame(Opcode.CONT, encoded[2:7], fin=False)
        + client_frame(Opcode.CONT, b"", fin=False)
        + client_frame(Opcode.CONT, encoded[7:])
    )

    events = connection.events_received()
    assert [type(event) for event in events] == [TextFrame, Frame, TextFrame, TextFrame, TextFrame]
    # A character belongs to the fragment that ends it.
    assert texts(events) == ["", "\u20ac1 ", "", "\U0001f600"]
    assert "".join(texts(events)) == encoded.decode()


@pytest.mark.parametrize("opcode", [Opcode.BINARY, Opcode.PING, Opcode.PONG])
def test_binary_and_control_frames_stay_plain_frames(opcode: Opcode) -> None:
    connection = open_connection()

    connection.receive_data(client_frame(opcode, b"abc"))

    (frame,) = connection.events_received()
    assert type(frame) is Frame


def test_fragments_of_a_binary_message_stay_plain_frames() -> None:
    connection = open_connection()

    connection.receive_data(
        client_frame(Opcode.BINARY, b"\xe2", fin=False) + client_frame(Opcode.CONT, b"\x82\xac")
    )

    assert [type(frame) for frame in connection.events_received()] == [Frame, Frame]


def test_text_frame_equals_and_hashes_as_the_plain_frame() -> None:
    connection = open_connection()
    connection.receive_data(client_frame(Opcode.TEXT, b"hi", fin=False))
    (frame,) = connection.events_received()
    plain = Frame(Opcode.TEXT, b"hi", fin=False)

    assert isinstance(frame, TextFrame)
    assert frame == plain and plain == frame
    assert hash(frame) == hash(plain)
    assert tuple(frame) == (Opcode.TEXT, b"hi", False, False, False, False)
    opcode, data, fin, *_ = frame
    assert (opcode, data, fin) == (Opcode.TEXT, b"hi", False)


def test_text_frame_survives_copy_and_pickle_with_its_text() -> None:
    connection = open_connection()
    connection.receive_data(client_frame(Opcode.TEXT, b"hi"))
    (frame,) = connection.events_received()

    for clone in (copy.copy(frame), copy.deepcopy(frame), pickle.loads(pickle.dumps(frame))):
        assert isinstance(clone, TextFrame)
        assert clone == frame
        assert clone.text == "hi"


def test_replacing_a_field_of_a_text_frame_gives_a_plain_frame() -> None:
    connection = open_connection()
    connection.receive_data(client_frame(Opcode.TEXT, b"hi"))
    (frame,) = connection.events_received()
    assert isinstance(frame, TextFrame)

    changed = frame._replace(data=b"other")

    # The decoded text would no longer match the payload.
    assert type(changed) is Frame
    assert changed == Frame(Opcode.TEXT, b"other")


def test_compressed_text_message_carries_the_inflated_text() -> None:
    connection = deflate_connection()
    deflated = deflate("h\u00e9llo \u00e9".encode())
    split = len(deflated) // 2

    connection.receive_data(
        client_frame(Opcode.TEXT, deflated[:split], fin=False, rsv=0b100)
        + client_frame(Opcode.CONT, deflated[split:])
    )

    events = connection.events_received()
    assert len(events) == 2
    assert all(isinstance(event, TextFrame) for event in events)
    assert "".join(texts(events)) == "h\u00e9llo \u00e9"
    assert b"".join(e.data for e in events if isinstance(e, Frame)) == "h\u00e9llo \u00e9".encode()


# Failing fast on a frame still arriving ---------------------------------------------------


def cut(frame: bytes, payload_bytes: int, payload_length: int) -> bytes:
    """The first bytes of ``frame``: its header and mask, then ``payload_bytes`` of payload."""
    return frame[: len(frame) - payload_length + payload_bytes]


def test_invalid_utf8_in_a_text_frame_still_arriving_closes_with_1007_at_once() -> None:
    payload = b"valid start, then \xff" + b"x" * 10_000
    frame = client_frame(Opcode.TEXT, payload)
    connection = open_connection()

    # The client sends the bad byte and stalls: the rest never comes.
    connection.receive_data(cut(frame, 20, len(payload)))

    assert connection.events_received() == []
    assert_failed_with(connection, 1007)


def test_invalid_utf8_in_a_continuation_frame_still_arriving_closes_with_1007_at_once() -> None:
    payload = b"more text \xc3( and more" + b"x" * 1000
    connection = open_connection()
    connection.receive_data(client_frame(Opcode.TEXT, b"first part ", fin=False))
    assert texts(connection.events_received()) == ["first part "]

    connection.receive_data(cut(client_frame(Opcode.CONT, payload), 13, len(payload)))

    assert connection.events_received() == []
    assert_failed_with(connection, 1007)


def test_invalid_utf8_in_a_later_piece_of_a_frame_closes_with_1007_with_that_piece() -> None:
    payload = b"a" * 100 + b"\xed\xa0\x80" + b"b" * 100  # a surrogate
    frame = client_frame(Opcode.TEXT, payload)
    connection = open_connection()

    connection.receive_data(cut(frame, 50, len(payload)))
    assert connection.data_to_send() == []
    connection.receive_data(frame[len(frame) - len(payload) + 50 : len(frame) - len(payload) + 102])

    # The first two bytes of the surrogate are enough to tell.
    assert connection.events_received() == []
    assert_failed_with(connection, 1007)


def test_code_point_cut_between_pieces_of_a_frame_waits_for_its_last_byte() -> None:
    payload = "\U0001f600 ok".encode()
    frame = client_frame(Opcode.TEXT, payload)
    connection = open_connection()

    connection.receive_data(cut(frame, 3, len(payload)))

    assert connection.events_received() == []
    assert connection.data_to_send() == []
    connection.receive_data(frame[len(frame) - len(payload) + 3 :])
    (received,) = connection.events_received()
    assert isinstance(received, TextFrame)
    assert received.text == "\U0001f600 ok"
    assert received == Frame(Opcode.TEXT, payload)


def test_code_point_truncated_at_the_end_of_a_frame_in_pieces_closes_with_1007() -> None:
    payload = b"ok\xe2\x82"
    frame = client_frame(Opcode.TEXT, payload)
    connection = open_connection()

    connection.receive_data(cut(frame, 3, len(payload)))
    assert connection.data_to_send() == []
    connection.receive_data(frame[-1:])

    assert connection.events_received() == []
    assert_failed_with(connection, 1007)


def test_invalid_utf8_in_a_binary_frame_still_arriving_is_not_checked() -> None:
    payload = b"\xff" * 100
    frame = client_frame(Opcode.BINARY, payload)
    connection = open_connection()

    connection.receive_data(cut(frame, 50, len(payload)))
    assert connection.data_to_send() == []
    connection.receive_data(frame[len(frame) - 50 :])

    assert connection.events_received() == [Frame(Opcode.BINARY, payload)]
    assert connection.data_to_send() == []


def test_eof_inside_a_text_frame_arriving_in_pieces_closes_without_close_frame() -> None:
    payload = b"x" * 100
    connection = open_connection()
    connection.receive_data(cut(client_frame(Opcode.TEXT, payload), 40, len(payload)))

    connection.receive_eof()

    assert connection.events_received() == []
    assert connection.state is State.CLOSED
    assert connection.close_code == 1006
    assert connection.data_to_send() == [b""]


def test_text_frame_arriving_byte_by_byte_gives_the_same_frame() -> None:
    text = "\u00e9t\u00e9 \u20ac \U0001f600 " * 20
    frame = client_frame(Opcode.TEXT, text.encode())
    connection = open_connection()

    for index in range(len(frame)):
        connection.receive_data(frame[index : index + 1])

    (received,) = connection.events_received()
    assert isinstance(received, TextFrame)
    assert received.text == text
    assert received == Frame(Opcode.TEXT, text.encode())
    assert connection.data_to_send() == []


LARGE_TEXTS = [
    pytest.param('{"key": "value", "n": 12345}, ' * 1000, id="ascii"),
    pytest.param(
        '{"key": "value"}, ' * 500 + "\u00e9t\u00e9 \u20ac \U0001f600 " * 500, id="ascii-then-not"
    ),
    pytest.param("\u00e9t\u00e9 \u20ac \U0001f600 " * 1000, id="not-ascii"),
]


@pytest.mark.parametrize("text", LARGE_TEXTS)
@pytest.mark.parametrize("piece_bytes", [1000, 4096, 5001, 65536])
def test_large_text_frame_in_pieces_gives_the_same_frame_and_text(
    text: str, piece_bytes: int
) -> None:
    payload = text.encode()
    wire = client_frame(Opcode.TEXT, payload[:7], fin=False) + client_frame(
        Opcode.CONT, payload[7:]
    )
    connection = open_connection()

    events = []
    for start in range(0, len(wire), piece_bytes):
        connection.receive_data(wire[start : start + piece_bytes])
        events += connection.events_received()

    assert events == [Frame(Opcode.TEXT, payload[:7], fin=False), Frame(Opcode.CONT, payload[7:])]
    assert "".join(texts(events)) == text
    assert connection.data_to_send() == []


@pytest.mark.parametrize("character", ["\u00e9", "\u20ac", "\U0001f600"])
def test_multibyte_character_split_at_every_offset_of_a_frame_gives_the_same_events(
    character: str,
) -> None:
    message = f"<{character}{character}>"
    wire = client_frame(Opcode.TEXT, message.encode(), fin=False) + client_frame(
        Opcode.CONT, message.encode()
    )

    for offset in range(1, len(wire)):
        connection = open_connection()
        connection.receive_data(wire[:offset])
        events = connection.events_received()
        connection.receive_data(wire[offset:])
        events += connection.events_received()

        assert events == [
            Frame(Opcode.TEXT, message.encode(), fin=False),
            Frame(Opcode.CONT, message.encode()),
        ]
        assert texts(events) == [message, message]
        assert connection.data_to_send() == []


def test_frame_breaking_a_connection_rule_fails_before_its_payload_arrives() -> None:
    payload = b"x" * 1000
    connection = open_connection()

    # A continuation frame with no message to continue: 1002 on its header.
    connection.receive_data(cut(client_frame(Opcode.CONT, payload), 0, len(payload)))

    assert_failed_with(connection, 1002)


def test_frame_with_a_reserved_bit_fails_before_its_payload_arrives() -> None:
    payload = b"\xff" * 1000
    connection = open_connection()

    connection.receive_data(cut(client_frame(Opcode.TEXT, payload, rsv=0b010), 10, len(payload)))

    # The protocol error, found on the header, wins over the bad UTF-8.
    assert_failed_with(connection, 1002)


def test_text_frame_over_max_size_fails_with_1009_on_its_header() -> None:
    connection = open_connection(max_size=100)

    connection.receive_data(client_frame(Opcode.TEXT, b"x" * 101)[:8])

    assert_failed_with(connection, 1009)


def test_compressed_text_frame_in_pieces_is_checked_once_inflated() -> None:
    # permessage-deflate inflates a frame once it is whole: invalid UTF-8 in a
    # compressed frame still arriving cannot be seen, and is failed at its end.
    connection = deflate_connection()
    deflated = deflate(b"\xff" + bytes(range(256)) * 4)
    frame = client_frame(Opcode.TEXT, deflated, rsv=0b100)

    connection.receive_data(frame[:-1])
    assert connection.data_to_send() == []
    connection.receive_data(frame[-1:])

    assert connection.events_received() == []
    assert_failed_with(connection, 1007)


# Properties: any split ----------------------------------------------------------------------

# Masks are part of the input: a piece of a frame is unmasked at its own offset.
masks = st.binary(min_size=4, max_size=4)


def split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    offsets = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in itertools.pairwise(offsets)]


@st.composite
def text_messages(draw: st.DrawFn, payload: bytes) -> tuple[bytes, list[int]]:
    """``payload`` as a text message cut into fragments, with pings between some.

    Returns the wire bytes and, for each payload byte, its offset on the wire.
    """
    cuts = draw(st.lists(st.integers(0, len(payload)), max_size=4))
    pieces = split(payload, cuts) if payload else [b""]
    wire = b""
    offsets: list[int] = []
    for index, piece in enumerate(pieces):
        if index and draw(st.integers(0, 3)) == 0:
            wire += client_frame(Opcode.PING, draw(st.binary(max_size=10)), mask=draw(masks))
        frame = client_frame(
            Opcode.TEXT if index == 0 else Opcode.CONT,
            piece,
            fin=index == len(pieces) - 1,
            mask=draw(masks),
        )
        start = len(wire) + len(frame) - len(piece)
        offsets.extend(range(start, start + len(piece)))
        wire += frame
    return wire, offsets


def feed(wire: bytes, chunks: list[bytes]) -> tuple[list[Frame], int | None, int | None]:
    """Feed ``chunks`` to an open connection.

    Returns the frames received, the close code the server sent, and the
    index of the chunk after which it sent it (``None`` if it did not).
    """
    connection = ServerConnection(state=State.OPEN, max_size=None)
    events: list[Frame] = []
    for index, chunk in enumerate(chunks):
        connection.receive_data(chunk)
        events += connection.events_received()  # type: ignore[arg-type]
        frames, _ = sent_frames(connection)
        closes = [frame for frame in frames if frame.opcode is Opcode.CLOSE]
        if closes:
            return events, parse_close(closes[0].data)[0], index
    return events, None, None


@BOUNDED
@given(st.text(max_size=80), st.data())
def test_any_split_of_a_valid_text_message_gives_the_same_frames_and_text(
    text: str, data: st.DataObject
) -> None:
    wire, _ = data.draw(text_messages(text.encode()), label="message")
    chunks = split(wire, data.draw(st.lists(st.integers(0, len(wire)), max_size=30)))

    events, code, _ = feed(wire, chunks)
    whole, _, _ = feed(wire, [wire])

    assert code is None
    assert events == whole
    assert texts(events) == texts(whole)
    assert "".join(texts(events)) == text
    assert all(isinstance(e, TextFrame) for e in events if e.opcode is not Opcode.PING)


# Bytes that no valid UTF-8 text may hold where they stand.
BAD_SNIPPETS = [
    b"\xff",
    b"\x80",
    b"\xc0\xaf",  # overlong
    b"\xe0\x80\x80",  # overlong
    b"\xed\xa0\x80",  # surrogate
    b"\xed\xbf\xbf",  # surrogate
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xf5",
    b"\xe2\x82(",  # a sequence cut short
]

# Every proper prefix of a valid encoded character: a pending prefix that can
# still end well. Stepping by 64 code points visits each one (the last byte
# varies fastest).
_PREFIXES = {
    chr(code).encode()[:length]
    for code in itertools.chain(range(0x80, 0xD800, 64), range(0xE000, 0x110000, 64))
    for length in range(1, len(chr(code).encode()))
}


def can_continue(prefix: bytes) -> bool:
    """Tell whether some valid UTF-8 text starts with ``prefix`` (a slow, plain oracle)."""
    for pending in range(4):
        head, tail = prefix[: len(prefix) - pending], prefix[len(prefix) - pending :]
        if pending and tail not in _PREFIXES:
            continue
        try:
            head.decode()
        except UnicodeDecodeError:
            continue
        return True
    return False


@BOUNDED
@given(st.text(max_size=40), st.sampled_from(BAD_SNIPPETS), st.text(max_size=40), st.data())
def test_any_split_of_invalid_text_fails_with_1007_at_the_piece_holding_the_first_bad_byte(
    before: str, bad: bytes, after: str, data: st.DataObject
) -> None:
    payload = before.encode() + bad + after.encode()
    # The first bad byte: where the payload stops being the start of a text.
    first_bad = next(k for k in range(1, len(payload) + 1) if not can_continue(payload[:k])) - 1
    wire, offsets = data.draw(text_messages(payload), label="message")
    chunks = split(wire, data.draw(st.lists(st.integers(0, len(wire)), max_size=30)))
    bad_offset = offsets[first_bad]
    ends = itertools.accumulate(map(len, chunks))
    bad_chunk = next(index for index, end in enumerate(ends) if end > bad_offset)

    events, code, failed_at = feed(wire, chunks)

    assert code == 1007
    assert failed_at == bad_chunk
    # The fragments that ended before the bad byte were delivered, with their text.
    delivered = b"".join(e.data for e in events if e.opcode is not Opcode.PING)
    assert payload[:first_bad].startswith(delivered)
    assert "".join(texts(events)) == codecs.getincrementaldecoder("utf-8")().decode(delivered)
