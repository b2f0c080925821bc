"""Properties of the sans-I/O core that must hold for any input (hypothesis)."""

from __future__ import annotations

import codecs
import itertools
import random
import re
from collections.abc import Sequence

import hypothesis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from wsserver.sansio import Frame, Opcode, Request, ServerConnection, State
from wsserver.sansio.frames import parse_close, parse_frame, serialize_frame
from wsserver.sansio.http11 import Headers, parse_request
from wsserver.sansio.streams import StreamReader

from .helpers import client_frame, close_payload, handshake_request, parse_server_frames

BOUNDED = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

EOF = object()
"""Stands for the ``b""`` item of ``data_to_send()`` in a transcript."""

_DATE_RE = re.compile(rb"\r\nDate: [^\r]*")


def split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    """Cut ``data`` at the given offsets (any order, repeats allowed)."""
    offsets = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in itertools.pairwise(offsets)]


def cuts_for(data: bytes) -> st.SearchStrategy[list[int]]:
    return st.lists(st.integers(0, len(data)), max_size=30)


def run(chunks: Sequence[bytes], **kwargs: object) -> tuple[list[object], list[object]]:
    """Feed ``chunks`` then EOF, accepting the handshake; return events and a transcript.

    The transcript merges adjacent writes (how they are grouped depends on
    when ``data_to_send()`` is called) and blanks the Date header out.
    """
    connection = ServerConnection(**kwargs)  # type: ignore[arg-type]
    events: list[object] = []
    writes: list[bytes] = []

    def drain() -> None:
        while new := connection.events_received():
            for event in new:
                events.append(event)
                if isinstance(event, Request) and connection.state is State.CONNECTING:
                    connection.send_response(connection.accept(event))
        writes.extend(connection.data_to_send())

    for chunk in chunks:
        connection.receive_data(chunk)
        drain()
    connection.receive_eof()
    drain()
    assert connection.state is State.CLOSED
    return events, transcript(writes)


def transcript(writes: Sequence[bytes]) -> list[object]:
    merged: list[object] = []
    for item in writes:
        if item == b"":
            merged.append(EOF)
        elif merged and isinstance(merged[-1], bytes):
            merged[-1] += item
        else:
            merged.append(item)
    return [_DATE_RE.sub(b"", item) if isinstance(item, bytes) else item for item in merged]


# Strategies ---------------------------------------------------------------------------

masks = st.binary(min_size=4, max_size=4)
payloads = st.one_of(
    st.binary(max_size=40),
    st.integers(120, 300).map(lambda n: random.Random(n).randbytes(n)),
)
control_payloads = st.binary(max_size=125)


@st.composite
def pings(draw: st.DrawFn) -> tuple[list[Frame], bytes]:
    opcode = draw(st.sampled_from([Opcode.PING, Opcode.PONG]))
    frame = Frame(opcode, draw(control_payloads))
    return [frame], serialize_frame(frame, mask=draw(masks))


@st.composite
def messages(draw: st.DrawFn) -> tuple[list[Frame], bytes]:
    """A whole message, possibly fragmented, with pings and pongs between fragments."""
    if draw(st.booleans()):
        opcode = Opcode.TEXT
        data = draw(st.text(max_size=60)).encode()
    else:
        opcode = Opcode.BINARY
        data = draw(payloads)
    cuts = draw(st.lists(st.integers(0, len(data)), max_size=4))
    pieces = split(data, cuts) if data else [b""]
    pieces += [b""] * draw(st.integers(0, 1))  # an empty last fragment now and then
    frames: list[Frame] = []
    wire = b""
    for index, piece in enumerate(pieces):
        fin = index == len(pieces) - 1
        frame = Frame(opcode if index == 0 else Opcode.CONT, piece, fin=fin)
        frames.append(frame)
        wire += serialize_frame(frame, mask=draw(masks))
        if not fin and draw(st.integers(0, 3)) == 0:
            control, control_wire = draw(pings())
            frames += control
            wire += control_wire
    return frames, wire


close_codes = st.sampled_from([1000, 1001, 1002, 1003, 1008, 1011, 3000, 4999])


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[Frame], bytes]:
    """A client's whole valid conversation after the request, ending in a close."""
    items = draw(st.lists(st.one_of(messages(), pings()), max_size=8))
    frames = [frame for item_frames, _ in items for frame in item_frames]
    wire = b"".join(item_wire for _, item_wire in items)
    if draw(st.booleans()):
        payload = b""
    else:
        payload = close_payload(draw(close_codes), draw(st.text(max_size=20)).encode())
    close = Frame(Opcode.CLOSE, payload)
    return [*frames, close], wire + serialize_frame(close, mask=draw(masks))


# (1) Any split of a valid stream gives the same result ---------------------------------------


@BOUNDED
@given(streams(), st.data())
def test_any_split_of_a_valid_stream_gives_the_same_events_and_output(
    stream: tuple[list[Frame], bytes], data: st.DataObject
) -> None:
    frames, wire = stream
    whole = handshake_request() + wire
    chunks = split(whole, data.draw(cuts_for(whole), label="cuts"))

    events, output = run(chunks)

    assert (events, output) == run([whole])
    assert isinstance(events[0], Request)
    assert events[1:] == frames
    # The server answers every ping, echoes the close, then half-closes.
    written, eof = output
    assert eof is EOF
    assert isinstance(written, bytes)
    response, _, frames_sent = written.partition(b"\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 101 ")
    expected = [Frame(Opcode.PONG, f.data) for f in frames if f.opcode is Opcode.PING]
    expected.append(Frame(Opcode.CLOSE, frames[-1].data))
    assert parse_server_frames(frames_sent) == expected


@BOUNDED
@given(streams(), st.data())
def test_any_split_of_frames_on_an_open_connection_gives_the_same_result(
    stream: tuple[list[Frame], bytes], data: st.DataObject
) -> None:
    _, wire = stream
    chunks = split(wire, data.draw(cuts_for(wire), label="cuts"))

    split_run = run(chunks, state=State.OPEN)

    assert split_run == run([wire], state=State.OPEN)


# (2) Arbitrary bytes never escape as exceptions ----------------------------------------------

garbage_pieces = st.one_of(
    st.binary(min_size=1, max_size=30),
    messages().map(lambda item: item[1]),
    pings().map(lambda item: item[1]),
    st.tuples(st.integers(0, 15), st.integers(0, 7), st.booleans(), st.binary(max_size=140)).map(
        lambda t: client_frame(t[0], t[3], rsv=t[1], fin=t[2])
    ),
    st.tuples(st.integers(0, 70000), st.binary(max_size=130)).map(
        lambda t: client_frame(Opcode.CLOSE, t[0].to_bytes(3, "big")[1:] + t[1])
    ),
)


def check_received(events: list[object]) -> None:
    """The frames delivered obey every rule of RFC 6455 section 5."""
    receiving: Opcode | None = None
    utf8 = codecs.getincrementaldecoder("utf-8")()
    for event in events:
        assert isinstance(event, Frame)
        assert not (event.rsv1 or event.rsv2 or event.rsv3)
        if event.opcode >= Opcode.CLOSE:
            assert event.fin and len(event.data) <= 125
            continue
        if event.opcode is Opcode.CONT:
            assert receiving is not None
        else:
            assert receiving is None
            receiving = event.opcode
            utf8.reset()
        if receiving is Opcode.TEXT:
            utf8.decode(event.data, final=event.fin)
        if event.fin:
            receiving = None


@settings(BOUNDED, max_examples=200)
@given(st.lists(garbage_pieces, max_size=8), st.data())
def test_arbitrary_bytes_after_the_handshake_end_in_frames_or_a_protocol_close(
    pieces: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(pieces)
    chunks = split(stream, data.draw(cuts_for(stream), label="cuts"))
    connection = ServerConnection(state=State.OPEN, max_size=200)
    events: list[object] = []
    writes: list[bytes] = []

    for chunk in chunks:
        connection.receive_data(chunk)
        events += connection.events_received()
        writes += connection.data_to_send()
    connection.receive_eof()
    events += connection.events_received()
    writes += connection.data_to_send()

    assert connection.state is State.CLOSED
    assert writes[-1] == b"" and writes.count(b"") == 1
    check_received(events)
    received_closes = [e for e in events if isinstance(e, Frame) and e.opcode is Opcode.CLOSE]
    assert len(received_closes) <= 1
    sent = parse_server_frames(b"".join(writes))
    assert all(frame.opcode in (Opcode.PONG, Opcode.CLOSE) for frame in sent)
    sent_closes = [frame for frame in sent if frame.opcode is Opcode.CLOSE]
    assert len(sent_closes) <= 1
    if sent_closes:
        assert sent[-1] is sent_closes[0]
        if received_closes:  # the client closed: its close is echoed
            assert sent_closes[0].data == received_closes[0].data
        else:  # the client broke a rule
            assert parse_close(sent_closes[0].data)[0] in (1002, 1007, 1009)
    else:
        assert not received_closes
        assert connection.close_code == 1006
    hypothesis.event(f"server close codes: {[parse_close(f.data)[0] for f in sent_closes]}")


# (3) Frames round-trip ------------------------------------------------------------------------

frame_sizes = st.one_of(
    st.integers(0, 130),
    st.sampled_from([65534, 65535, 65536, 65537]),
    st.integers(0, 70000),
)


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    opcode = draw(st.sampled_from(list(Opcode)))
    is_control = opcode >= Opcode.CLOSE
    size = draw(st.integers(0, 125) if is_control else frame_sizes)
    payload = random.Random(draw(st.integers(0, 2**32))).randbytes(size)
    return Frame(
        opcode,
        payload,
        fin=True if is_control else draw(st.booleans()),
        rsv1=draw(st.booleans()),
        rsv2=draw(st.booleans()),
        rsv3=draw(st.booleans()),
    )


@BOUNDED
@given(frames(), st.none() | masks, st.data())
def test_frames_round_trip_through_serialize_and_parse(
    frame: Frame, mask: bytes | None, data: st.DataObject
) -> None:
    wire = serialize_frame(frame, mask=mask)
    reader = StreamReader()
    parser = parse_frame(reader, mask_required=mask is not None)
    next(parser)

    parsed = None
    for chunk in split(wire, data.draw(cuts_for(wire), label="cuts")):
        reader.feed_data(chunk)
        try:
            next(parser)
        except StopIteration as stop:
            parsed = stop.value
    assert parsed == frame
    assert len(reader) == 0


# (4) Any split of an HTTP request parses the same -----------------------------------------------

header_names = st.text(
    alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    min_size=1,
    max_size=20,
).filter(lambda name: name.lower() not in ("content-length", "transfer-encoding"))
header_values = st.text(
    alphabet="".join(map(chr, [0x09, *range(0x20, 0x7F), *range(0x80, 0x100)])), max_size=40
).map(lambda value: value.strip(" \t"))
paths = st.text(alphabet="".join(map(chr, range(0x21, 0x7F))), max_size=40).map(lambda p: "/" + p)


def parse_in_chunks(chunks: Sequence[bytes]) -> Request:
    reader = StreamReader()
    parser = parse_request(reader)
    next(parser)
    for chunk in chunks:
        reader.feed_data(chunk)
        try:
            next(parser)
        except StopIteration as stop:
            assert isinstance(stop.value, Request)
            return stop.value
    raise AssertionError("request not complete")


@BOUNDED
@given(paths, st.lists(st.tuples(header_names, header_values), max_size=20), st.data())
def test_any_split_of_an_http_request_parses_to_the_same_request(
    path: str, headers: list[tuple[str, str]], data: st.DataObject
) -> None:
    assume(all(name.lower() != "host" for name, _ in headers))
    headers = [("Host", "example.com"), *headers]  # RFC 9112 requires exactly one
    lines = [f"GET {path} HTTP/1.1", *(f"{name}:{value}" for name, value in headers)]
    wire = ("\r\n".join(lines) + "\r\n\r\n").encode("iso-8859-1")
    chunks = split(wire, data.draw(cuts_for(wire), label="cuts"))

    request = parse_in_chunks(chunks)

    assert request == parse_in_chunks([wire])
    assert request == Request(path, Headers(headers))
    assert list(request.headers.raw_items()) == headers
