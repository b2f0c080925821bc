"""What must hold on both builds of the core: the mypyc-compiled one and the pure-Python one.

``python3 dev.py test`` runs this directory on each; mypyc checks argument
types at run time and makes classes native, so these pin the behaviours
where the two could drift apart.
"""

from __future__ import annotations

import pytest

from wsserver.sansio import Frame, Opcode, ServerConnection, State, TextFrame

from .helpers import MASK, client_frame, open_connection, parse_server_frames

BYTES_LIKE = [
    pytest.param(bytes, id="bytes"),
    pytest.param(bytearray, id="bytearray"),
    pytest.param(memoryview, id="memoryview"),
]


@pytest.mark.parametrize("kind", BYTES_LIKE)
def test_receive_data_takes_any_bytes_like_object(kind: type) -> None:
    connection = open_connection()

    connection.receive_data(kind(client_frame(Opcode.BINARY, b"payload")))

    assert connection.events_received() == [Frame(Opcode.BINARY, b"payload")]


@pytest.mark.parametrize("kind", BYTES_LIKE)
def test_send_methods_take_any_bytes_like_object(kind: type) -> None:
    connection = open_connection()

    connection.send_binary(kind(b"whole"))
    connection.send_text(kind(b"first "), fin=False)
    connection.send_continuation(kind(b"last"), fin=True)
    connection.send_ping(kind(b"ping"))
    connection.send_pong(kind(b"pong"))

    frames = parse_server_frames(b"".join(connection.data_to_send()))
    assert frames == [
        Frame(Opcode.BINARY, b"whole"),
        Frame(Opcode.TEXT, b"first ", fin=False),
        Frame(Opcode.CONT, b"last"),
        Frame(Opcode.PING, b"ping"),
        Frame(Opcode.PONG, b"pong"),
    ]


def test_a_bytearray_changed_after_sending_does_not_change_the_frame() -> None:
    connection = open_connection()
    payload = bytearray(b"x" * 70_000)  # large: queued apart from its header

    connection.send_binary(payload)
    payload[:] = b"y" * 70_000

    assert b"".join(connection.data_to_send()).endswith(b"x" * 70_000)


def test_server_connection_can_be_subclassed_in_python() -> None:
    class CountingConnection(ServerConnection):
        def __init__(self) -> None:
            super().__init__(state=State.OPEN)
            self.chunks = 0

        def receive_data(self, data: bytes | bytearray | memoryview) -> None:
            self.chunks += 1
            super().receive_data(data)

    connection = CountingConnection()
    frame = client_frame(Opcode.TEXT, b"caf\xc3\xa9")
    connection.receive_data(frame[:3])
    connection.receive_data(frame[3:])

    assert connection.chunks == 2
    (event,) = connection.events_received()
    assert isinstance(event, TextFrame)
    assert event.text == "café"


def test_text_frame_is_a_frame_with_its_text() -> None:
    connection = open_connection()
    connection.receive_data(client_frame(Opcode.TEXT, b"hello", mask=MASK))

    (event,) = connection.events_received()
    assert type(event) is TextFrame
    assert isinstance(event, Frame)
    assert event == Frame(Opcode.TEXT, b"hello")
    assert event.text == "hello"
    # A changed frame no longer carries text decoded from other bytes.
    assert type(event._replace(data=b"other")) is Frame
