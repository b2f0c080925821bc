"""The HTTP/1.1 request parser, the response writer and the Headers multi-dict."""

from __future__ import annotations

import pytest

from wsserver.sansio import (
    Headers,
    InvalidMessage,
    MultipleValuesError,
    Request,
    RequestTooLarge,
    Response,
    ServerConnection,
    State,
)
from wsserver.sansio.http11 import MAX_HEADERS, MAX_LINE_BYTES, parse_request, serialize_response
from wsserver.sansio.streams import StreamReader

from .helpers import handshake_request


def feed(data: bytes, chunk_size: int | None = None) -> ServerConnection:
    connection = ServerConnection()
    if chunk_size is None:
        connection.receive_data(data)
    else:
        for start in range(0, len(data), chunk_size):
            connection.receive_data(data[start : start + chunk_size])
    return connection


def only_request(connection: ServerConnection) -> Request:
    """The one event received, which must be the request."""
    (request,) = connection.events_received()
    assert isinstance(request, Request)
    return request


def status_of(writes: list[bytes]) -> int:
    """The status code of the HTTP response at the start of ``writes``."""
    status_line = b"".join(writes).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 ")
    return int(status_line.split(b" ")[1])


def assert_rejected(connection: ServerConnection, status: int) -> None:
    writes = connection.data_to_send()
    assert status_of(writes) == status
    assert writes[-1] == b""
    assert connection.events_received() == []
    assert connection.state is State.CLOSING
    assert connection.close_expected()
    assert isinstance(connection.handshake_exc, InvalidMessage)


# Valid requests ---------------------------------------------------------------


def test_request_in_one_chunk_is_parsed() -> None:
    connection = feed(handshake_request("/chat?room=1"))

    request = only_request(connection)

    assert request.path == "/chat?room=1"
    assert request.headers["host"] == "example.com"
    assert request.headers["Sec-WebSocket-Version"] == "13"
    assert connection.data_to_send() == []
    assert connection.state is State.CONNECTING


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 16, 64])
def test_request_split_in_chunks_is_parsed_the_same(chunk_size: int) -> None:
    data = handshake_request()
    expected = feed(data).events_received()

    events = feed(data, chunk_size).events_received()

    assert events == expected


def test_request_is_not_reported_before_the_blank_line() -> None:
    data = handshake_request()
    connection = feed(data[:-2])

    assert connection.events_received() == []
    connection.receive_data(data[-2:])
    assert len(connection.events_received()) == 1


def test_header_values_lose_surrounding_whitespace() -> None:
    connection = feed(handshake_request(extra=[("X-Padded", " \t value \t ")]))

    request = only_request(connection)

    assert request.headers["X-Padded"] == "value"


def test_repeated_headers_are_all_kept_in_order() -> None:
    connection = feed(handshake_request(extra=[("X-Tag", "a"), ("x-tag", "b")]))

    request = only_request(connection)

    assert request.headers.get_all("X-Tag") == ["a", "b"]


def test_obs_text_header_value_is_decoded_as_latin1() -> None:
    data = handshake_request().replace(b"\r\n\r\n", b"\r\nX-Name: caf\xe9\r\n\r\n")
    connection = feed(data)

    request = only_request(connection)

    assert request.headers["X-Name"] == "caf\xe9"


def test_content_length_zero_is_accepted() -> None:
    connection = feed(handshake_request(extra=[("Content-Length", "0")]))

    assert len(connection.events_received()) == 1


def test_line_of_exactly_8_kib_is_accepted() -> None:
    prefix = b"X-Long: "
    value = b"a" * (MAX_LINE_BYTES - len(prefix) - 2)
    data = handshake_request().replace(b"\r\n\r\n", b"\r\n" + prefix + value + b"\r\n\r\n")

    connection = feed(data)

    request = only_request(connection)
    assert len(request.headers["X-Long"]) == len(value)


def test_128_headers_are_accepted() -> None:
    base = handshake_request()
    padding = MAX_HEADERS - base.count(b"\r\n") + 2
    data = handshake_request(extra=[(f"X-H{i}", "v") for i in range(padding)])
    assert data.count(b"\r\n") - 2 == MAX_HEADERS

    connection = feed(data)

    assert len(connection.events_received()) == 1


# Limits -------------------------------------------------------------------------


def test_request_line_over_8_kib_is_rejected_with_400() -> None:
    connection = feed(handshake_request("/" + "a" * MAX_LINE_BYTES))

    assert_rejected(connection, 400)


def test_request_line_over_8_kib_is_rejected_before_its_end_arrives() -> None:
    connection = feed(b"GET /" + b"a" * MAX_LINE_BYTES)

    assert_rejected(connection, 400)


def test_header_line_over_8_kib_is_rejected_with_431() -> None:
    connection = feed(handshake_request(extra=[("X-Long", "a" * MAX_LINE_BYTES)]))

    assert_rejected(connection, 431)
    assert isinstance(connection.handshake_exc, RequestTooLarge)


def test_header_line_over_8_kib_is_rejected_in_small_chunks() -> None:
    connection = feed(handshake_request(extra=[("X-Long", "a" * MAX_LINE_BYTES)]), 100)

    assert_rejected(connection, 431)


def test_more_than_128_headers_are_rejected_with_431() -> None:
    connection = feed(handshake_request(extra=[(f"X-H{i}", "v") for i in range(MAX_HEADERS)]))

    assert_rejected(connection, 431)
    assert isinstance(connection.handshake_exc, RequestTooLarge)


def test_header_count_limit_is_configurable() -> None:
    connection = ServerConnection(max_headers=4)
    connection.receive_data(handshake_request())

    assert_rejected(connection, 431)


def test_line_length_limit_is_configurable() -> None:
    connection = ServerConnection(max_line_bytes=20)
    connection.receive_data(handshake_request(extra=[("X-Long", "a" * 20)]))

    assert_rejected(connection, 431)


# Not a WebSocket-capable HTTP request -----------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"hello world\r\n\r\n", id="text"),
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n", id="tls"),
        pytest.param(b"GET / SPDY/3\r\n\r\n", id="not-http-version"),
        pytest.param(b"GET  / HTTP/1.1\r\n\r\n", id="two-spaces"),
        pytest.param(b"GET /\r\n\r\n", id="http-0.9"),
        pytest.param(b"G(T / HTTP/1.1\r\n\r\n", id="bad-method"),
        pytest.param(b"GET / HTTP/1.1\n\r\n", id="bare-lf-request-line"),
        pytest.param(b"GET /\x7f HTTP/1.1\r\n\r\n", id="control-in-target"),
        pytest.param("GET /caf\xe9 HTTP/1.1\r\n\r\n".encode(), id="non-ascii-target"),
    ],
)
def test_not_http_is_rejected_with_400(data: bytes) -> None:
    assert_rejected(feed(data), 400)


@pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/2.0", "HTTP/1.2"])
def test_http_version_other_than_1_1_is_rejected_with_400(version: str) -> None:
    connection = feed(handshake_request(request_line=f"GET / {version}"))

    assert_rejected(connection, 400)


@pytest.mark.parametrize("method", ["POST", "HEAD", "PUT", "OPTIONS", "CONNECT", "get"])
def test_method_other_than_get_is_rejected_with_400(method: str) -> None:
    connection = feed(handshake_request(request_line=f"{method} / HTTP/1.1"))

    assert_rejected(connection, 400)


@pytest.mark.parametrize(
    "header",
    [
        ("Content-Length", "5"),
        ("Content-Length", "-1"),
        ("Transfer-Encoding", "chunked"),
        ("Transfer-Encoding", "identity"),
    ],
)
def test_request_with_a_body_is_rejected_with_400(header: tuple[str, str]) -> None:
    connection = feed(handshake_request(extra=[header]))

    assert_rejected(connection, 400)


def test_two_content_length_headers_are_rejected_with_400() -> None:
    connection = feed(handshake_request(extra=[("Content-Length", "0"), ("Content-Length", "0")]))

    assert_rejected(connection, 400)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b" folded continuation", id="folding-space"),
        pytest.param(b"\tfolded continuation", id="folding-tab"),
        pytest.param(b"No-Colon", id="no-colon"),
        pytest.param(b": no name", id="empty-name"),
        pytest.param(b"Bad Name: value", id="space-in-name"),
        pytest.param(b"Host : example.com", id="space-before-colon"),
        pytest.param(b"X-Nul: a\x00b", id="nul-in-value"),
        pytest.param(b"X-Cr: a\rb", id="cr-in-value"),
        pytest.param(b"X-Esc: a\x1bb", id="escape-in-value"),
        pytest.param(b"X-Del: a\x7fb", id="del-in-value"),
        pytest.param("X-\xe9: value".encode(), id="non-ascii-name"),
    ],
)
def test_invalid_header_line_is_rejected_with_400(line: bytes) -> None:
    data = handshake_request().replace(b"\r\n\r\n", b"\r\n" + line + b"\r\n\r\n")

    assert_rejected(feed(data), 400)


def test_header_line_ending_in_bare_lf_is_rejected_with_400() -> None:
    data = handshake_request().replace(b"\r\n\r\n", b"\r\nX-Lf: value\n\r\n")

    assert_rejected(feed(data), 400)


def test_bytes_after_a_bad_request_are_discarded() -> None:
    connection = feed(b"POST / HTTP/1.1\r\n\r\n")
    connection.data_to_send()

    connection.receive_data(handshake_request())

    assert connection.events_received() == []
    assert connection.data_to_send() == []


def test_eof_in_the_middle_of_the_request_closes_without_a_response() -> None:
    connection = feed(handshake_request()[:20])

    connection.receive_eof()

    assert connection.data_to_send() == [b""]
    assert connection.events_received() == []
    assert connection.state is State.CLOSED
    assert isinstance(connection.handshake_exc, InvalidMessage)


def test_eof_before_any_byte_closes_without_a_response() -> None:
    connection = ServerConnection()

    connection.receive_eof()

    assert connection.data_to_send() == [b""]
    assert connection.state is State.CLOSED
    assert connection.close_code == 1006


# Responses --------------------------------------------------------------------


def test_error_response_gets_a_content_length() -> None:
    response = Response(404, "Not Found", Headers(), b"nothing here")

    data = serialize_response(response)

    assert data == b"HTTP/1.1 404 Not Found\r\nContent-Length: 12\r\n\r\nnothing here"


def test_error_response_keeps_its_own_content_length() -> None:
    response = Response(400, "Bad Request", Headers({"content-length": "2"}), b"no")

    data = serialize_response(response)

    assert data.count(b"ength: ") == 1
    assert data.endswith(b"\r\n\r\nno")


def test_switching_protocols_response_has_no_content_length() -> None:
    response = Response(101, "Switching Protocols", Headers(Upgrade="websocket"))

    data = serialize_response(response)

    assert data == b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"


@pytest.mark.parametrize("value", ["a\r\nSet-Cookie: x=1", "a\nb", "a\x00b"])
def test_response_header_with_a_line_break_is_refused(value: str) -> None:
    response = Response(400, "Bad Request", Headers({"X-Echo": value}))

    with pytest.raises(ValueError):
        serialize_response(response)


# Headers --------------------------------------------------------------------------


def test_headers_lookup_ignores_case() -> None:
    headers = Headers({"Content-Type": "text/plain"})

    assert headers["content-type"] == "text/plain"
    assert headers["CONTENT-TYPE"] == "text/plain"
    assert "content-TYPE" in headers
    assert "Content-Length" not in headers
    assert 42 not in headers  # type: ignore[comparison-overlap]


def test_headers_assignment_adds_a_value() -> None:
    headers = Headers()

    headers["Set-Cookie"] = "a=1"
    headers["set-cookie"] = "b=2"

    assert headers.get_all("SET-COOKIE") == ["a=1", "b=2"]
    assert len(headers) == 1
    assert list(headers.raw_items()) == [("Set-Cookie", "a=1"), ("set-cookie", "b=2")]


def test_headers_single_lookup_of_repeated_header_raises_multiple_values_error() -> None:
    headers = Headers([("X-Tag", "a"), ("X-Tag", "b")])

    with pytest.raises(MultipleValuesError) as info:
        headers["x-tag"]

    assert isinstance(info.value, LookupError)
    assert "X-Tag" in str(info.value) or "x-tag" in str(info.value)


def test_headers_missing_name_raises_key_error_and_get_returns_default() -> None:
    headers = Headers()

    with pytest.raises(KeyError):
        headers["Origin"]
    assert headers.get("Origin") is None
    assert headers.get("Origin", "x") == "x"
    assert headers.get_all("Origin") == []


def test_headers_delete_removes_every_value_whatever_the_case() -> None:
    headers = Headers([("X-Tag", "a"), ("Host", "h"), ("x-tag", "b")])

    del headers["X-TAG"]

    assert "X-Tag" not in headers
    assert headers.get_all("x-tag") == []
    assert list(headers.raw_items()) == [("Host", "h")]
    with pytest.raises(KeyError):
        del headers["X-Tag"]


def test_headers_copy_is_independent() -> None:
    headers = Headers([("X-Tag", "a"), ("X-Tag", "b")])

    copy = headers.copy()
    copy["X-Tag"] = "c"
    del copy["X-Tag"]

    assert headers.get_all("X-Tag") == ["a", "b"]
    assert copy.get_all("X-Tag") == []


def test_headers_copy_equals_original() -> None:
    headers = Headers([("X-Tag", "a"), ("Host", "h"), ("X-Tag", "b")])

    assert headers.copy() == headers
    assert isinstance(headers.copy(), Headers)


def test_headers_equality_ignores_name_case_but_not_values() -> None:
    assert Headers({"Host": "h"}) == Headers({"host": "h"})
    assert Headers({"Host": "h"}) != Headers({"Host": "H"})
    assert Headers([("X", "a"), ("X", "b")]) != Headers([("X", "b"), ("X", "a")])


def test_headers_str_is_the_wire_format() -> None:
    headers = Headers([("Upgrade", "websocket"), ("Connection", "Upgrade"), ("X", "1")])
    headers["x"] = "2"

    assert str(headers) == "Upgrade: websocket\r\nConnection: Upgrade\r\nX: 1\r\nx: 2\r\n\r\n"


def test_empty_headers_str_is_a_blank_line() -> None:
    assert str(Headers()) == "\r\n"


def test_headers_accept_mappings_pairs_headers_and_keywords() -> None:
    headers = Headers(Headers({"A": "1"}), [("B", "2")], {"C": "3"}, D="4")

    assert [headers[name] for name in "abcd"] == ["1", "2", "3", "4"]
    # Iteration gives names as first spelled, so dict(headers) keeps them.
    assert list(headers) == ["A", "B", "C", "D"]


def test_headers_update_adds_values() -> None:
    headers = Headers({"A": "1"})

    headers.update({"A": "2"}, [("B", "3")])

    assert headers.get_all("A") == ["1", "2"]
    assert headers["B"] == "3"


def test_headers_clear_empties_them() -> None:
    headers = Headers({"A": "1", "B": "2"})

    headers.clear()

    assert len(headers) == 0
    assert list(headers.raw_items()) == []
    assert str(headers) == "\r\n"


def test_headers_are_unhashable() -> None:
    with pytest.raises(TypeError):
        hash(Headers())


def test_headers_repr_shows_raw_items() -> None:
    assert repr(Headers({"A": "1"})) == "Headers([('A', '1')])"


@pytest.mark.parametrize(
    "host_lines",
    [pytest.param(b"", id="missing"), pytest.param(b"Host: a\r\nHost: b\r\n", id="repeated")],
)
def test_request_without_exactly_one_host_header_is_invalid(host_lines: bytes) -> None:
    reader = StreamReader()
    reader.feed_data(b"GET / HTTP/1.1\r\n" + host_lines + b"Upgrade: websocket\r\n\r\n")
    parser = parse_request(reader)

    with pytest.raises(InvalidMessage, match="Host"):
        next(parser)
