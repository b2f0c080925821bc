"""The request parser's two paths give the same answers.

A request that arrives whole, in one read, is parsed in one pass over its
head; any other (cut in pieces, longer than a line may be, or unusual in any
way) is parsed line by line. Fed byte by byte, every request takes the second
path; fed in one buffer, the usual ones take the first. Both must agree on
every input: the same request, or the same error with the same message.
"""

from __future__ import annotations

import datetime
import email.utils
import re
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsserver.sansio import Headers, Request, RequestTooLarge, ServerConnection, http11
from wsserver.sansio.http11 import MAX_HEADERS, MAX_LINE_BYTES, parse_request
from wsserver.sansio.streams import StreamReader

from .helpers import handshake_request

Outcome = tuple[object, ...]


def outcome(chunks: list[bytes], max_line_bytes: int, max_headers: int) -> Outcome:
    """Feed ``chunks`` one by one to a fresh parser; say how it ended and what is left."""
    reader = StreamReader()
    parser = parse_request(reader, max_line_bytes=max_line_bytes, max_headers=max_headers)
    next(parser)
    for index, chunk in enumerate(chunks):
        reader.feed_data(chunk)
        try:
            next(parser)
        except StopIteration as stop:
            request = stop.value
            assert isinstance(request, Request)
            # What is left for the frames: buffered, or not fed yet.
            left = len(reader) + sum(map(len, chunks[index + 1 :]))
            return ("request", request.path, list(request.headers.raw_items()), left)
        except Exception as exc:
            return ("error", type(exc), str(exc))
    return ("incomplete", len(reader))


def in_one_buffer(data: bytes, max_line_bytes: int, max_headers: int) -> Outcome:
    return outcome([data], max_line_bytes, max_headers)


def byte_by_byte(data: bytes, max_line_bytes: int, max_headers: int) -> Outcome:
    return outcome([data[i : i + 1] for i in range(len(data))], max_line_bytes, max_headers)


# Pieces of request heads, valid and not: each a few bytes a client or an
# attacker could send, so that drawn heads are mostly near-valid.
request_lines = st.sampled_from([
    b"GET / HTTP/1.1", b"GET /chat?room=1 HTTP/1.1", b"GET http://h/x HTTP/1.1",
    b"GET / HTTP/1.0", b"POST / HTTP/1.1", b"get / HTTP/1.1", b"GET  / HTTP/1.1",
    b"GET /\x7f HTTP/1.1", b"GET /caf\xc3\xa9 HTTP/1.1", b"GET /", b"", b"GET / SPDY/3",
    b"G(T / HTTP/1.1", b"\x16\x03\x01",
])  # fmt: skip
names = st.sampled_from([
    b"Host", b"host", b"Upgrade", b"Connection", b"Sec-WebSocket-Key", b"X-Tag", b"x-tag",
    b"Content-Length", b"Transfer-Encoding", b"Bad Name", b"", b"X-\xe9", b"Host ",
])  # fmt: skip
values = st.sampled_from([
    b"example.com", b" websocket", b"Upgrade ", b"\t 13 \t", b"", b"0", b"5", b"caf\xe9",
    b"a\x00b", b"a\rb", b"a\x1bb", b"a\x7fb", b"a\nb", b"x" * 40, b"  ",
])  # fmt: skip
separators = st.sampled_from([b":", b":", b":", b": ", b"", b" :"])
line_ends = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r"])
any_lines = st.builds(lambda *parts: b"".join(parts), names, separators, values, line_ends)
clean_lines = st.builds(
    lambda name, value: b"%s: %s\r\n" % (name, value),
    st.sampled_from([b"Upgrade", b"Connection", b"X-Tag", b"x-tag", b"Sec-WebSocket-Key"]),
    st.sampled_from([b"websocket", b"Upgrade", b"a b", b"", b"caf\xe9", b"\t13 "]),
)
header_lines = st.one_of(clean_lines, clean_lines, clean_lines, any_lines)
tails = st.sampled_from([b"\r\n", b"\r\n", b"\r\n\x81\x80", b"\n", b"", b"\r\nGET"])


@st.composite
def request_heads(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        head = b"GET /chat HTTP/1.1\r\n"
    else:
        head = draw(request_lines) + draw(line_ends)
    lines = draw(st.lists(header_lines, max_size=8))
    if draw(st.booleans()):  # often the one Host header a request needs, somewhere
        lines.insert(draw(st.integers(0, len(lines))), b"Host: example.com\r\n")
    head += b"".join(lines)
    return head + draw(tails)


PATHS = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PATHS
@given(
    request_heads(),
    st.sampled_from([16, 40, 80, MAX_LINE_BYTES]),
    st.sampled_from([1, 3, MAX_HEADERS]),
)
def test_one_buffer_and_byte_by_byte_give_the_same_answer(
    data: bytes, max_line_bytes: int, max_headers: int
) -> None:
    assert in_one_buffer(data, max_line_bytes, max_headers) == byte_by_byte(
        data, max_line_bytes, max_headers
    )


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: handshake_request(), id="usual"),
        pytest.param(
            lambda: handshake_request(extra=[("X-Tag", "a"), ("x-tag", "b")]), id="repeats"
        ),
        pytest.param(
            lambda: handshake_request(extra=[("X-Long", "a" * (MAX_LINE_BYTES - 12))]),
            id="longer-than-a-line-in-all",
        ),
        pytest.param(
            lambda: handshake_request(extra=[(f"X-H{i}", "v") for i in range(MAX_HEADERS - 5)]),
            id="128-headers",
        ),
        pytest.param(
            lambda: handshake_request(extra=[(f"X-H{i}", "v") for i in range(MAX_HEADERS)]),
            id="too-many-headers",
        ),
        pytest.param(
            lambda: handshake_request(extra=[("X-Long", "a" * MAX_LINE_BYTES)]), id="line-too-long"
        ),
        pytest.param(lambda: handshake_request() + b"\x81\x85frame", id="frame-after-request"),
    ],
)
def test_both_paths_agree_at_the_limits(make: Callable[[], bytes]) -> None:
    data = make()

    assert in_one_buffer(data, MAX_LINE_BYTES, MAX_HEADERS) == byte_by_byte(
        data, MAX_LINE_BYTES, MAX_HEADERS
    )


def test_bytes_after_the_request_stay_buffered_for_the_frames() -> None:
    data = handshake_request()

    assert in_one_buffer(data + b"\x81\x85", MAX_LINE_BYTES, MAX_HEADERS)[-1] == 2


def test_too_many_headers_in_one_buffer_are_refused_with_431() -> None:
    data = handshake_request(extra=[(f"X-H{i}", "v") for i in range(MAX_HEADERS)])

    kind, exc_type, _ = in_one_buffer(data, MAX_LINE_BYTES, MAX_HEADERS)

    assert (kind, exc_type) == ("error", RequestTooLarge)


def test_headers_of_a_parsed_request_behave_like_headers_built_by_hand() -> None:
    data = handshake_request(extra=[("X-Tag", "a"), ("x-TAG", "b"), ("Origin", "o")])
    connection = ServerConnection()
    connection.receive_data(data)
    (request,) = connection.events_received()
    assert isinstance(request, Request)
    by_hand = Headers(list(request.headers.raw_items()))

    headers = request.headers

    assert headers == by_hand
    assert list(headers) == list(by_hand) == ["Host", "Upgrade", "Connection",
        "Sec-WebSocket-Key", "Sec-WebSocket-Version", "X-Tag", "Origin"]  # fmt: skip
    assert len(headers) == 7
    assert headers.get_all("X-TAG") == ["a", "b"]
    assert headers["origin"] == "o"
    headers["X-Tag"] = "c"
    del headers["Origin"]
    assert headers.get_all("x-tag") == ["a", "b", "c"]
    assert "Origin" not in headers


def test_response_date_is_an_http_date_of_now() -> None:
    connection = ServerConnection()
    connection.receive_data(handshake_request())
    (request,) = connection.events_received()
    assert isinstance(request, Request)
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)

    date = connection.accept(request).headers["Date"]

    # IMF-fixdate, RFC 9110 section 5.6.7: "Sun, 06 Nov 1994 08:49:37 GMT".
    assert re.fullmatch(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT", date)
    assert date == email.utils.format_datetime(email.utils.parsedate_to_datetime(date), usegmt=True)
    # The value is made once per second: it is the second the response was built in.
    after = datetime.datetime.now(datetime.timezone.utc)
    assert before <= email.utils.parsedate_to_datetime(date) <= after


def test_names_clients_make_up_do_not_grow_the_shared_names_without_bound() -> None:
    # A client chooses header names freely: the spellings shared between
    # requests stay bounded in number and length, whatever it sends.
    for batch in range(20):
        extra = [(f"X-Made-Up-{batch}-{i}-" + "n" * (i % 60), "v") for i in range(100)]
        connection = ServerConnection()
        connection.receive_data(handshake_request(extra=extra))
        (request,) = connection.events_received()
        assert isinstance(request, Request)
        assert request.headers[extra[-1][0]] == "v"

    assert len(http11._SPELLINGS) <= http11._MAX_SPELLINGS
    assert all(len(name) <= http11._MAX_SPELLING_LENGTH for name in http11._SPELLINGS)
