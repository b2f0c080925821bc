"""ServerConnection after the opening handshake: frames, messages, closing."""

from __future__ import annotations

import logging
import uuid

import pytest

from wsserver.sansio import (
    ConnectionClosedError,
    ConnectionClosedOK,
    Frame,
    InvalidState,
    Opcode,
    ServerConnection,
    State,
)
from wsserver.sansio.frames import parse_close, serialize_close

from .helpers import client_frame, close_payload, handshake_request, open_connection, sent_frames


def close_frame(code: int | None, reason: str = "") -> Frame:
    """The close frame a server writes."""
    return Frame(Opcode.CLOSE, serialize_close(code, reason))


def assert_failed_with(connection: ServerConnection, code: int) -> None:
    """The server sent one close frame with ``code``, then half-closed."""
    frames, eof = sent_frames(connection)
    assert [frame.opcode for frame in frames] == [Opcode.CLOSE]
    assert parse_close(frames[0].data)[0] == code
    assert eof
    assert connection.state is State.CLOSING
    assert connection.close_expected()


def assert_nothing_sent(connection: ServerConnection) -> None:
    assert connection.data_to_send() == []


# Masking, reserved bits, opcodes ---------------------------------------------------


def test_unmasked_frame_closes_with_1002() -> None:
    connection = open_connection()

    connection.receive_data(client_frame(Opcode.TEXT, b"hello", mask=None))

    assert connection.events_received() == []
    assert_failed_with(connection, 1002)


def test_connection_closes_after_protocol_error_once_client_sends_eof() -> None:
    connection = open_connection()
    connection.receive_data(client_frame(Opcode.TEXT, b"hello", mask=None))
    connection.data_to_send()

    connection.receive_eof()

    assert connection.state is State.CLOSED
    assert connection.close_code == 1006
    assert isinstance(connection.close_exc, ConnectionClosedError)
    assert connection.close_exc.sent is not None
    assert connection.close_exc.sent.code == 1002
    assert_nothing_sent(connection)


@pytest.mark.parametrize("rsv", [0b100, 0b010, 0b001, 0b111])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY, Opcode.PING])
def test_reserved_bits_without_extension_close_with_1002(rsv: int, opcode: Opcode) -> None:
    connection = open_connection()

    connection.receive_data(client_frame(opcode, b"x", rsv=rsv))

    assert connection.events_received() == []
    assert_failed_with(connection, 1002)


def test_reserved_bit_on_continuation_closes_with_1002() -> None:
    connection = open_connection()

    connection.receive_data(
        client_frame(Opcode.TEXT, b"a", fin=False) + client_frame(Opcode.CONT, b"b", rsv=0b100)
    )

    assert connection.events_received() == [Frame(Opcode.TEXT, b"a", fin=False)]
    assert_failed_with(connection, 1002)


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_unknown_opcode_closes_with_1002(opcode: int) -> None:
    connection = open_connection()

    connection.receive_data(client_frame(opcode, b"?"))

    assert connection.events_received() == []
    assert_failed_with(connection, 1002)


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_fragmented_control_frame_closes_with_1002(opcode: Opcode) -> None:
    connection = open_connection()

    connection.receive_data(client_frame(opcode, b"", fin=False))

    assert connection.events_received() == []
    assert_failed_with(connection, 1002)


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_control_frame_over_125_bytes_closes_with_1002(opcode: Opcode) -> None:
    connection = open_connection()

    connection.receive_data(client_frame(opcode, close_payload(1000, b"a" * 124)))

    assert connection.events_received() == []
    assert_failed_with(connection, 1002)


@pytest.mark.parametrize("length_bytes", [2, 8])
def test_non_minimal_length_closes_with_1002(length_bytes: int) -> None:
    connection = open_connection()

    connection.receive_data(client_frame(Opcode.BINARY, b"a" * 10, length_bytes=length_bytes))

    assert_failed_with(connection, 1002)


def test_64_bit_length_with_msb_set_closes_with_1002() -> None:
    connection = open_connection(max_size=None)

    connection.receive_data(b"\x82\xff\x80\x00\x00\x00\x00\x01\x00\x00")

    assert_failed_with(connection, 1002)


def test_bytes_after_a_protocol_error_are_discarded() -> None:
    connection = open_connection()
    connection.receive_data(client_frame(9, b"", fin=False))
    connection.data_to_send()

    connection.receive_data(client_frame(Opcode.TEXT, b"ignored"))

    assert connection.events_received() == []
    assert_nothing_sent(connection)


# Fragmentation ---------------------------------------------------------------------


def test_fragmented_message_is_delivered_frame_by_frame() -> None:
    connection = open_connection()

    connection.receive_data(
        client_frame(Opcode.BINARY, b"ab", fin=False)
        + client_frame(Opcode.CONT, b"", fin=False)
        + client_frame(Opcode.CONT, b"cd")
    )

    assert connection.events_received() == [
        Frame(Opcode.BINARY, b"ab", fin=False),
        Frame(Opcode.CONT, b"", fin=False),
        Frame(Opcode.CONT, b"cd"),
    ]
    assert_nothing_sent(connection)


@pytest.mark.parametrize("fin", [True, False])
def test_continuation_without_a_start_closes_with_1002(fin: bool) -> None:
    connection = open_connection()

    connection.receive_data(client_frame(Opcode.CONT, b"orphan", fin=fin))

    assert connection.events_received() == []
    assert_failed_with(connection, 1002)


def test_continuation_after_a_finished_message_closes_with_1002() -> None:
    connection = open_connection()

    connection.receive_data(client_frame(Opcode.TEXT, b"done") + client_frame(Opcode.CONT, b"x"))

    assert connection.events_received() == [Frame(Opcode.TEXT, b"done")]
    assert_failed_with(connection, 1002)


@pytest.mark.parametrize("first", [Opcode.TEXT, Opcode.BINARY])
@pytest.mark.parametrize("second", [Opcode.TEXT, Opcode.BINARY])
def test_new_data_frame_during_fragmented_message_closes_with_1002(
    first: Opcode, second: Opcode
) -> None:
    connection = open_connection()

    connection.receive_data(client_frame(first, b"a", fin=False) + client_frame(second, b"b"))

    assert connection.events_received() == [Frame(first, b"a", fin=False)]
    assert_failed_with(connection, 1002)


def test_ping_between_fragments_is_allowed_and_answered() -> None:
    connection = open_connection()

    connection.receive_data(
        client_frame(Opcode.TEXT, b"hel", fin=False)
        + client_frame(Opcode.PING, b"are you there")
        + client_frame(Opcode.PONG, b"unsolicited")
        + client_frame(Opcode.CONT, b"lo")
    )

    assert connection.events_received() == [
        Frame(Opcode.TEXT, b"hel", fin=False),
        Frame(Opcode.PING, b"are you there"),
        Frame(Opcode.PONG, b"unsolicited"),
        Frame(Opcode.CONT, b"lo"),
    ]
    frames, eof = sent_frames(connection)
    assert frames == [Frame(Opcode.PONG, b"are you there")]
    assert not eof


def test_close_between_fragments_ends_the_connection() -> None:
    connection = open_connection()

    connection.receive_data(
        client_frame(Opcode.TEXT, b"hel", fin=False)
        + client_frame(Opcode.CLOSE, close_payload(1001))
        + client_frame(Opcode.CONT, b"lo")
    )

    assert connection.events_received() == [
        Frame(Opcode.TEXT, b"hel", fin=False),
        Frame(Opcode.CLOSE, close_payload(1001)),
    ]
    assert sent_frames(connection) == ([close_frame(1001)], True)


# Pings and pongs --------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"\x00\xff", b"p" * 125])
def test_ping_is_answered_with_a_pong_echoing_its_payload(payload: bytes) -> None:
    connection = open_connection()

    connection.receive_data(client_frame(Opcode.PING, payload))

    assert connection.events_received() == [Frame(Opcode.PING, payload)]
    assert sent_frames(connection) == ([Frame(Opcode.PONG, payload)], False)


def test_every_ping_gets_its_own_pong_in_order() -> None:
    connection = open_connection()

    connection.receive_data(client_frame(Opcode.PING, b"1") + client_frame(Opcode.PING, b"2"))

    frames, _ = sent_frames(connection)
    assert frames == [Frame(Opcode.PONG, b"1"), Frame(Opcode.PONG, b"2")]


def test_pong_is_delivered_and_not_answered() -> None:
    connection = open_connection()

    connection.receive_data(client_frame(Opcode.PONG, b"heartbeat"))

    assert connection.events_received() == [Frame(Opcode.PONG, b"heartbeat")]
    assert_nothing_sent(connection)


def test_ping_is_not_answered_once_the_server_sent_close() -> None:
    connection = open_connection()
    connection.send_close(1000)
    connection.data_to_send()

    connection.receive_data(client_frame(Opcode.PING, b"late"))

    assert connection.events_received() == [Frame(Opcode.PING, b"late")]
    assert_nothing_sent(connection)


# UTF-8 -----------------------------------------------------------------------------

INVALID_UTF8 = [
    pytest.param(b"\xff", id="invalid-byte"),
    pytest.param(b"\x80", id="lone-continuation"),
    pytest.param(b"\xc0\xaf", id="overlong"),
    pytest.param(b"\xed\xa0\x80", id="surrogate"),
    pytest.param(b"\xf4\x90\x80\x80", id="above-max"),
    pytest.param(b"\xce\xba\xe1\xbd", id="truncated"),
    pytest.param(b"ok\xe2\x82", id="truncated-at-end"),
]


@pytest.mark.parametrize("payload", INVALID_UTF8)
def test_invalid_utf8_in_a_text_frame_closes_with_1007(payload: bytes) -> None:
    connection = open_connection()

    connection.receive_data(client_frame(Opcode.TEXT, payload))

    assert connection.events_received() == []
    assert_failed_with(connection, 1007)


def test_invalid_utf8_is_found_in_the_first_fragment_before_the_message_ends() -> None:
    connection = open_connection()

    connection.receive_data(client_frame(Opcode.TEXT, b"ok \xff rest", fin=False))

    assert connection.events_received() == []
    assert_failed_with(connection, 1007)


def test_invalid_utf8_is_found_in_the_first_bad_continuation() -> None:
    connection = open_connection()
    connection.receive_data(client_frame(Opcode.TEXT, b"caf\xc3", fin=False))
    assert connection.events_received() == [Frame(Opcode.TEXT, b"caf\xc3", fin=False)]

    # \xc3 needs a continuation byte; "(" is not one. More fragments would follow.
    connection.receive_data(client_frame(Opcode.CONT, b"(", fin=False))

    assert connection.events_received() == []
    assert_failed_with(connection, 1007)


def test_code_point_truncated_at_the_end_of_a_fragmented_message_closes_with_1007() -> None:
    connection = open_connection()

    connection.receive_data(
        client_frame(Opcode.TEXT, b"\xe2", fin=False) + client_frame(Opcode.CONT, b"\x82")
    )

    assert connection.events_received() == [Frame(Opcode.TEXT, b"\xe2", fin=False)]
    assert_failed_with(connection, 1007)


@pytest.mark.parametrize("character", ["\xe9", "\u20ac", "\U0001f600"])
def test_code_point_split_across_fragments_is_accepted(character: str) -> None:
    encoded = f"<{character}>".encode()
    connection = open_connection()

    for split in range(1, len(encoded)):
        connection.receive_data(
            client_frame(Opcode.TEXT, encoded[:split], fin=False)
            + client_frame(Opcode.CONT, b"", fin=False)
            + client_frame(Opcode.CONT, encoded[split:])
        )

        events = connection.events_received()
        assert b"".join(frame.data for frame in events if isinstance(frame, Frame)) == encoded
    assert_nothing_sent(connection)


def test_code_point_split_byte_by_byte_is_accepted() -> None:
    encoded = "\U0001f600".encode()
    connection = open_connection()

    connection.receive_data(
        client_frame(Opcode.TEXT, encoded[:1], fin=False)
        + client_frame(Opcode.CONT, encoded[1:2], fin=False)
        + client_frame(Opcode.CONT, encoded[2:3], fin=False)
        + client_frame(Opcode.CONT, encoded[3:])
    )

    assert len(connection.events_received()) == 4
    assert_nothing_sent(connection)


def test_utf8_check_restarts_with_each_text_message() -> None:
    connection = open_connection()

    connection.receive_data(
        client_frame(Opcode.TEXT, b"a", fin=False)
        + client_frame(Opcode.CONT, b"b")
        + client_frame(Opcode.BINARY, b"\xe2", fin=False)
        + client_frame(Opcode.CONT, b"\xff")
        + client_frame(Opcode.TEXT, "\u20ac".encode())
    )

    assert len(connection.events_received()) == 5
    assert_nothing_sent(connection)


@pytest.mark.parametrize("payload", [b"\xff\xfe", b"\xe2"])
def test_binary_message_is_not_checked_for_utf8(payload: bytes) -> None:
    connection = open_connection()

    connection.receive_data(
        client_frame(Opcode.BINARY, payload, fin=False) + client_frame(Opcode.CONT, payload)
    )

    assert len(connection.events_received()) == 2
    assert_nothing_sent(connection)


# max_size ------------------------------------------------------------------------------


def test_frame_over_max_size_closes_with_1009() -> None:
    connection = open_connection(max_size=100)

    connection.receive_data(client_frame(Opcode.BINARY, b"a" * 101))

    assert connection.events_received() == []
    assert_failed_with(connection, 1009)


def test_frame_over_max_size_is_refused_from_its_header_alone() -> None:
    connection = open_connection(max_size=100)

    connection.receive_data(client_frame(Opcode.TEXT, b"a" * 1000)[:4])

    assert_failed_with(connection, 1009)


def test_frame_of_exactly_max_size_is_accepted() -> None:
    connection = open_connection(max_size=100)

    connection.receive_data(client_frame(Opcode.TEXT, b"a" * 100))

    assert connection.events_received() == [Frame(Opcode.TEXT, b"a" * 100)]
    assert_nothing_sent(connection)


def test_fragments_adding_up_to_more_than_max_size_close_with_1009() -> None:
    connection = open_connection(max_size=100)

    connection.receive_data(
        client_frame(Opcode.BINARY, b"a" * 60, fin=False) + client_frame(Opcode.CONT, b"b" * 41)
    )

    assert connection.events_received() == [Frame(Opcode.BINARY, b"a" * 60, fin=False)]
    assert_failed_with(connection, 1009)


def test_fragments_adding_up_to_max_size_are_accepted() -> None:
    connection = open_connection(max_size=100)

    connection.receive_data(
        client_frame(Opcode.TEXT, b"a" * 60, fin=False) + client_frame(Opcode.CONT, b"b" * 40)
    )

    assert len(connection.events_received()) == 2
    assert_nothing_sent(connection)


def test_max_size_applies_to_each_message_separately() -> None:
    connection = open_connection(max_size=100)

    connection.receive_data(
        client_frame(Opcode.BINARY, b"a" * 60, fin=False)
        + client_frame(Opcode.CONT, b"b" * 40)
        + client_frame(Opcode.BINARY, b"c" * 100)
    )

    assert len(connection.events_received()) == 3
    assert_nothing_sent(connection)


def test_control_frames_between_fragments_do_not_count_toward_max_size() -> None:
    connection = open_connection(max_size=10)

    connection.receive_data(
        client_frame(Opcode.BINARY, b"a" * 10, fin=False)
        + client_frame(Opcode.PING, b"ping")
        + client_frame(Opcode.CONT, b"")
    )

    assert len(connection.events_received()) == 3
    assert sent_frames(connection) == ([Frame(Opcode.PONG, b"ping")], False)


def test_control_frame_larger_than_a_small_max_size_is_accepted() -> None:
    connection = open_connection(max_size=4)

    connection.receive_data(client_frame(Opcode.PONG, b"p" * 125))

    assert connection.events_received() == [Frame(Opcode.PONG, b"p" * 125)]
    assert_nothing_sent(connection)


def test_max_size_none_accepts_large_messages() -> None:
    connection = open_connection(max_size=None)
    payload = b"x" * (2**20 + 1)

    connection.receive_data(
        client_frame(Opcode.BINARY, payload, fin=False) + client_frame(Opcode.CONT, payload)
    )

    assert connection.events_received() == [
        Frame(Opcode.BINARY, payload, fin=False),
        Frame(Opcode.CONT, payload),
    ]
    assert_nothing_sent(connection)


def test_default_max_size_is_one_mebibyte() -> None:
    connection = open_connection()

    connection.receive_data(client_frame(Opcode.BINARY, b"x" * (2**20 + 1))[:14])

    assert_failed_with(connection, 1009)


# Closing handshake started by the client -----------------------------------------------


def test_client_close_is_echoed_with_code_and_reason_then_eof() -> None:
    connection = open_connection()

    connection.receive_data(client_frame(Opcode.CLOSE, close_payload(1000, b"bye")))

    assert connection.events_received() == [Frame(Opcode.CLOSE, close_payload(1000, b"bye"))]
    assert sent_frames(connection) == ([close_frame(1000, "bye")], True)
    assert connection.state is State.CLOSING
    assert connection.close_expected()
    assert connection.close_code is None
    assert connection.close_reason is None


@pytest.mark.parametrize(
    ("code", "exc_type"),
    [
        (1000, ConnectionClosedOK),
        (1001, ConnectionClosedOK),
        (1002, ConnectionClosedError),
        (1003, ConnectionClosedError),
        (1011, ConnectionClosedError),
        (3000, ConnectionClosedError),
        (4999, ConnectionClosedError),
    ],
)
def test_client_close_completes_when_the_client_closes_tcp(code: int, exc_type: type) -> None:
    connection = open_connection()
    connection.receive_data(client_frame(Opcode.CLOSE, close_payload(code, "ciao \u2603".encode())))
    connection.data_to_send()

    connection.receive_eof()

    assert connection.state is State.CLOSED
    assert connection.close_code == code
    assert connection.close_reason == "ciao \u2603"
    exc = connection.close_exc
    assert type(exc) is exc_type
    assert exc.code == code
    assert exc.rcvd is not None and exc.rcvd.code == code
    assert exc.sent is not None and exc.sent.code == code
    assert connection.close_rcvd_then_sent is True
    assert_nothing_sent(connection)


def test_empty_close_is_echoed_empty_and_reports_1005() -> None:
    connection = open_connection()

    connection.receive_data(client_frame(Opcode.CLOSE, b""))
    frames, eof = sent_frames(connection)
    connection.receive_eof()

    assert frames == [Frame(Opcode.CLOSE, b"")]
    assert eof
    assert connection.close_code == 1005
    assert connection.close_reason == ""
    assert isinstance(connection.close_exc, ConnectionClosedOK)


def test_data_after_the_client_close_is_ignored() -> None:
    connection = open_connection()

    connection.receive_data(
        client_frame(Opcode.CLOSE, close_payload(1000))
        + client_frame(Opcode.TEXT, b"too late")
        + client_frame(Opcode.PING, b"too late")
    )
    connection.receive_data(client_frame(Opcode.CLOSE, close_payload(1001)) + b"\xff" * 10)

    assert connection.events_received() == [Frame(Opcode.CLOSE, close_payload(1000))]
    assert sent_frames(connection) == ([close_frame(1000)], True)


def test_nothing_can_be_sent_after_the_client_close() -> None:
    connection = open_connection()
    connection.receive_data(client_frame(Opcode.CLOSE, close_payload(1000)))

    with pytest.raises(InvalidState):
        connection.send_text(b"too late")
    with pytest.raises(InvalidState):
        connection.send_close(1000)


# Closing handshake started by the server ------------------------------------------------


def test_server_close_sends_a_close_frame_and_expects_the_close() -> None:
    connection = open_connection()

    connection.send_close(1001, "going away")

    assert sent_frames(connection) == ([close_frame(1001, "going away")], False)
    assert connection.state is State.CLOSING
    assert connection.close_expected()


def test_client_answer_to_server_close_ends_with_eof_and_no_echo() -> None:
    connection = open_connection()
    connection.send_close(1000, "done")
    connection.data_to_send()

    connection.receive_data(client_frame(Opcode.CLOSE, close_payload(1000, b"ok")))

    assert connection.events_received() == [Frame(Opcode.CLOSE, close_payload(1000, b"ok"))]
    assert connection.data_to_send() == [b""]
    assert connection.state is State.CLOSING


def test_server_close_completes_when_the_client_closes_tcp() -> None:
    connection = open_connection()
    connection.send_close(1001)
    connection.receive_data(client_frame(Opcode.CLOSE, close_payload(1001, b"ok")))
    connection.data_to_send()

    connection.receive_eof()

    assert connection.state is State.CLOSED
    assert connection.close_code == 1001
    assert connection.close_reason == "ok"
    assert isinstance(connection.close_exc, ConnectionClosedOK)
    assert connection.close_rcvd_then_sent is False
    assert_nothing_sent(connection)


def test_server_close_answered_with_an_error_code_is_an_error() -> None:
    connection = open_connection()
    connection.send_close(1000)
    connection.receive_data(client_frame(Opcode.CLOSE, close_payload(4000)))

    connection.receive_eof()

    assert connection.close_code == 4000
    assert isinstance(connection.close_exc, ConnectionClosedError)


def test_empty_server_close_answered_empty_is_ok() -> None:
    connection = open_connection()
    connection.send_close()
    frames, _ = sent_frames(connection)
    connection.receive_data(client_frame(Opcode.CLOSE, b""))

    connection.receive_eof()

    assert frames == [Frame(Opcode.CLOSE, b"")]
    assert connection.close_code == 1005
    assert isinstance(connection.close_exc, ConnectionClosedOK)


def test_data_frames_are_still_delivered_while_closing() -> None:
    connection = open_connection()
    connection.send_close(1000)

    connection.receive_data(client_frame(Opcode.TEXT, b"in flight"))

    assert connection.events_received() == [Frame(Opcode.TEXT, b"in flight")]


def test_protocol_error_while_closing_sends_only_eof() -> None:
    connection = open_connection()
    connection.send_close(1000)
    connection.data_to_send()

    connection.receive_data(client_frame(Opcode.CLOSE, close_payload(1005)))

    assert connection.data_to_send() == [b""]
    connection.receive_eof()
    assert connection.close_code == 1006


def test_peer_that_closes_tcp_without_answering_close_is_1006() -> None:
    connection = open_connection()
    connection.send_close(1000)
    connection.data_to_send()

    connection.receive_eof()

    assert connection.state is State.CLOSED
    assert connection.data_to_send() == [b""]
    assert connection.close_code == 1006
    assert isinstance(connection.close_exc, ConnectionClosedError)


@pytest.mark.parametrize("code", [1005, 1006, 1015, 999, 5000])
def test_send_close_with_an_invalid_code_raises_value_error(code: int) -> None:
    connection = open_connection()

    with pytest.raises(ValueError):
        connection.send_close(code)

    assert connection.state is State.OPEN
    assert_nothing_sent(connection)


# Abrupt closes ---------------------------------------------------------------------------


def test_eof_without_close_frame_is_1006_and_an_error() -> None:
    connection = open_connection()

    connection.receive_eof()

    assert connection.state is State.CLOSED
    assert connection.data_to_send() == [b""]
    assert connection.close_code == 1006
    assert connection.close_reason == ""
    exc = connection.close_exc
    assert isinstance(exc, ConnectionClosedError)
    assert exc.rcvd is None and exc.sent is None
    assert exc.code == 1006


def test_eof_in_the_middle_of_a_frame_is_1006() -> None:
    connection = open_connection()
    connection.receive_data(client_frame(Opcode.TEXT, b"cut short")[:-3])

    connection.receive_eof()

    assert connection.events_received() == []
    assert connection.data_to_send() == [b""]
    assert connection.close_code == 1006


def test_second_eof_changes_nothing() -> None:
    connection = open_connection()
    connection.receive_eof()
    connection.data_to_send()

    connection.receive_eof()

    assert connection.state is State.CLOSED
    assert_nothing_sent(connection)


def test_receive_data_after_eof_raises_eof_error() -> None:
    connection = open_connection()
    connection.receive_eof()

    with pytest.raises(EOFError):
        connection.receive_data(b"\x81")


def test_close_details_are_unknown_until_closed() -> None:
    connection = open_connection()

    assert connection.close_code is None
    assert connection.close_reason is None
    with pytest.raises(InvalidState):
        connection.close_exc  # noqa: B018


# Sending ----------------------------------------------------------------------------------


def test_sent_frames_are_unmasked_and_final_by_default() -> None:
    connection = open_connection()

    connection.send_text("caf\xe9".encode())
    connection.send_binary(b"\x00\x01")
    connection.send_ping(b"p")
    connection.send_pong(b"q")

    assert connection.data_to_send() == [
        b"\x81\x05caf\xc3\xa9",
        b"\x82\x02\x00\x01",
        b"\x89\x01p",
        b"\x8a\x01q",
    ]


def test_fragmented_message_is_sent_in_order() -> None:
    connection = open_connection()

    connection.send_text(b"a", fin=False)
    connection.send_ping(b"between")
    connection.send_continuation(b"b", fin=False)
    connection.send_continuation(b"c", fin=True)
    connection.send_binary(b"next")

    frames, _ = sent_frames(connection)
    assert frames == [
        Frame(Opcode.TEXT, b"a", fin=False),
        Frame(Opcode.PING, b"between"),
        Frame(Opcode.CONT, b"b", fin=False),
        Frame(Opcode.CONT, b"c"),
        Frame(Opcode.BINARY, b"next"),
    ]


@pytest.mark.parametrize("fin", [True, False])
def test_continuation_without_a_fragmented_message_raises_invalid_state(fin: bool) -> None:
    connection = open_connection()

    with pytest.raises(InvalidState):
        connection.send_continuation(b"x", fin=fin)

    assert_nothing_sent(connection)


def test_continuation_after_the_last_fragment_raises_invalid_state() -> None:
    connection = open_connection()
    connection.send_binary(b"a", fin=False)
    connection.send_continuation(b"b", fin=True)

    with pytest.raises(InvalidState):
        connection.send_continuation(b"c", fin=True)


@pytest.mark.parametrize("method", ["send_text", "send_binary"])
def test_new_message_during_a_fragmented_one_raises_invalid_state(method: str) -> None:
    connection = open_connection()
    connection.send_text(b"a", fin=False)
    connection.data_to_send()

    with pytest.raises(InvalidState):
        getattr(connection, method)(b"b")

    assert_nothing_sent(connection)


def test_close_during_a_fragmented_message_is_allowed() -> None:
    connection = open_connection()
    connection.send_binary(b"a", fin=False)

    connection.send_close(1000)

    frames, _ = sent_frames(connection)
    assert frames[-1] == close_frame(1000)


@pytest.mark.parametrize("method", ["send_ping", "send_pong"])
def test_control_payload_over_125_bytes_is_refused(method: str) -> None:
    connection = open_connection()

    # A caller's mistake, not the peer's: ValueError, as for send_close.
    with pytest.raises(ValueError):
        getattr(connection, method)(b"a" * 126)

    assert_nothing_sent(connection)


SEND_CALLS = [
    pytest.param(lambda c: c.send_text(b"x"), id="send_text"),
    pytest.param(lambda c: c.send_binary(b"x"), id="send_binary"),
    pytest.param(lambda c: c.send_continuation(b"x", fin=True), id="send_continuation"),
    pytest.param(lambda c: c.send_ping(b""), id="send_ping"),
    pytest.param(lambda c: c.send_pong(b""), id="send_pong"),
    pytest.param(lambda c: c.send_close(1000), id="send_close"),
]


@pytest.mark.parametrize("call", SEND_CALLS)
def test_sending_before_the_handshake_raises_invalid_state(call: object) -> None:
    connection = ServerConnection()
    connection.receive_data(handshake_request())

    with pytest.raises(InvalidState):
        call(connection)  # type: ignore[operator]

    assert_nothing_sent(connection)


@pytest.mark.parametrize("call", SEND_CALLS)
def test_sending_after_send_close_raises_invalid_state(call: object) -> None:
    connection = open_connection()
    connection.send_binary(b"a", fin=False)
    connection.send_close(1000)
    connection.data_to_send()

    with pytest.raises(InvalidState):
        call(connection)  # type: ignore[operator]

    assert_nothing_sent(connection)


@pytest.mark.parametrize("call", SEND_CALLS)
def test_sending_after_the_connection_closed_raises_invalid_state(call: object) -> None:
    connection = open_connection()
    connection.receive_eof()
    connection.data_to_send()

    with pytest.raises(InvalidState):
        call(connection)  # type: ignore[operator]

    assert_nothing_sent(connection)


# fail() ------------------------------------------------------------------------------------


def test_fail_sends_a_close_frame_then_eof() -> None:
    connection = open_connection()

    connection.fail(1011, "database is down")

    assert sent_frames(connection) == ([close_frame(1011, "database is down")], True)
    assert connection.state is State.CLOSING
    assert connection.close_expected()


def test_fail_stops_parsing() -> None:
    connection = open_connection()
    connection.fail(1008)
    connection.data_to_send()

    connection.receive_data(client_frame(Opcode.PING, b"ignored"))
    connection.receive_eof()

    assert connection.events_received() == []
    assert_nothing_sent(connection)
    assert connection.state is State.CLOSED
    assert connection.close_code == 1006
    assert isinstance(connection.close_exc, ConnectionClosedError)


def test_fail_truncates_a_reason_too_long_for_a_close_frame() -> None:
    connection = open_connection()

    connection.fail(1011, "\u20ac" * 100)

    (frame,), _ = sent_frames(connection)
    code, reason = parse_close(frame.data)
    assert code == 1011
    assert len(frame.data) <= 125
    assert reason.startswith("\u20ac\u20ac") and reason.endswith("...")


def test_fail_after_server_close_sends_only_eof() -> None:
    connection = open_connection()
    connection.send_close(1000)
    connection.data_to_send()

    connection.fail(1011)

    assert connection.data_to_send() == [b""]


def test_fail_before_the_handshake_sends_only_eof() -> None:
    connection = ServerConnection()
    connection.receive_data(handshake_request())

    connection.fail(1011)

    assert connection.data_to_send() == [b""]
    connection.receive_eof()
    assert connection.state is State.CLOSED


def test_fail_after_closed_sends_nothing() -> None:
    connection = open_connection()
    connection.receive_eof()
    connection.data_to_send()

    connection.fail(1000)

    assert_nothing_sent(connection)
    assert connection.state is State.CLOSED


# Construction ------------------------------------------------------------------------------


def test_open_state_skips_the_handshake() -> None:
    connection = ServerConnection(state=State.OPEN)

    connection.receive_data(client_frame(Opcode.TEXT, b"straight in"))

    assert connection.state is State.OPEN
    assert connection.events_received() == [Frame(Opcode.TEXT, b"straight in")]
    connection.send_text(b"reply")
    assert connection.data_to_send() == [b"\x81\x05reply"]


def test_open_state_treats_a_handshake_request_as_frames() -> None:
    connection = ServerConnection(state=State.OPEN)

    connection.receive_data(handshake_request())

    # "G" is 0x47: opcode 7, unknown.
    assert connection.events_received() == []
    assert_failed_with(connection, 1002)


def test_new_connection_waits_for_the_request() -> None:
    connection = ServerConnection()

    assert connection.state is State.CONNECTING
    assert not connection.close_expected()
    assert connection.handshake_exc is None
    assert isinstance(connection.id, uuid.UUID)
    assert connection.id != ServerConnection().id
    assert connection.events_received() == []
    assert connection.data_to_send() == []


def test_custom_logger_is_used() -> None:
    logger = logging.getLogger("tests.sansio.custom")

    assert ServerConnection(logger=logger).logger is logger
    assert ServerConnection().logger.name == "wsserver.server"
