"""The opening handshake: request checks, origins, subprotocols, extensions, responses."""

from __future__ import annotations

import re
from collections.abc import Sequence

import attrs
import pytest

from wsserver.sansio import (
    Frame,
    Headers,
    InvalidHandshake,
    InvalidHeader,
    InvalidOrigin,
    InvalidState,
    InvalidUpgrade,
    InvalidVersion,
    NegotiationError,
    Opcode,
    Request,
    Response,
    ServerConnection,
    State,
)
from wsserver.sansio.extensions.base import Extension, ExtensionParameter
from wsserver.sansio.handshake import accept_key, parse_extensions_header

from .helpers import RFC_ACCEPT, RFC_KEY, client_frame, handshake_request


def make_request(**kwargs: object) -> Request:
    """Parse a handshake request built by :func:`handshake_request`."""
    connection = ServerConnection()
    connection.receive_data(handshake_request(**kwargs))  # type: ignore[arg-type]
    (request,) = connection.events_received()
    assert isinstance(request, Request)
    return request


def handshake(
    connection: ServerConnection | None = None, /, **kwargs: object
) -> tuple[ServerConnection, Response]:
    """Receive a request, accept it and send the response."""
    connection = connection or ServerConnection()
    connection.receive_data(handshake_request(**kwargs))  # type: ignore[arg-type]
    (request,) = connection.events_received()
    assert isinstance(request, Request)
    response = connection.accept(request)
    connection.send_response(response)
    return connection, response


# The successful handshake --------------------------------------------------------


def test_accept_key_matches_rfc_6455_example() -> None:
    assert accept_key(RFC_KEY) == RFC_ACCEPT


def test_valid_request_gets_101_with_accept_header() -> None:
    connection, response = handshake()

    assert response.status_code == 101
    assert response.reason_phrase == "Switching Protocols"
    assert response.headers["Upgrade"] == "websocket"
    assert response.headers["Connection"] == "Upgrade"
    assert response.headers["Sec-WebSocket-Accept"] == RFC_ACCEPT
    assert "Sec-WebSocket-Protocol" not in response.headers
    assert "Sec-WebSocket-Extensions" not in response.headers
    assert response.body == b""
    assert connection.handshake_exc is None


def test_sent_101_response_opens_the_connection() -> None:
    connection, _ = handshake()

    (data,) = connection.data_to_send()

    assert data.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nSec-WebSocket-Accept: " + RFC_ACCEPT.encode() + b"\r\n" in data
    assert data.endswith(b"\r\n\r\n")
    assert connection.state is State.OPEN
    assert not connection.close_expected()


@pytest.mark.parametrize(
    "headers",
    [
        {"Connection": "keep-alive, Upgrade"},
        {"Connection": "upgrade"},
        {"Upgrade": "WebSocket"},
        {"Connection": "Upgrade,"},
    ],
)
def test_upgrade_tokens_are_matched_case_insensitively_in_lists(headers: dict[str, str]) -> None:
    _, response = handshake(replace=headers)

    assert response.status_code == 101


def test_connection_tokens_spread_over_several_headers_are_accepted() -> None:
    _, response = handshake(replace={"Connection": "keep-alive"}, extra=[("Connection", "Upgrade")])

    assert response.status_code == 101


def test_accept_does_not_change_state_until_the_response_is_sent() -> None:
    connection = ServerConnection()
    connection.receive_data(handshake_request())
    (request,) = connection.events_received()
    assert isinstance(request, Request)

    connection.accept(request)

    assert connection.state is State.CONNECTING
    assert connection.data_to_send() == []


def test_second_response_raises_invalid_state() -> None:
    connection, response = handshake()

    with pytest.raises(InvalidState):
        connection.send_response(response)


# Upgrade, version and key checks ---------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"drop": ["Connection"]}, id="no-connection"),
        pytest.param({"replace": {"Connection": "keep-alive"}}, id="connection-keep-alive"),
        pytest.param({"replace": {"Connection": "close"}}, id="connection-close"),
        pytest.param({"drop": ["Upgrade"]}, id="no-upgrade"),
        pytest.param({"replace": {"Upgrade": "h2c"}}, id="upgrade-h2c"),
        pytest.param({"replace": {"Upgrade": "websocket, h2c"}}, id="upgrade-two-protocols"),
    ],
)
def test_missing_or_invalid_upgrade_gets_426_with_upgrade_header(kwargs: dict[str, object]) -> None:
    connection, response = handshake(**kwargs)

    assert response.status_code == 426
    assert response.headers["Upgrade"] == "websocket"
    assert "upgrade" in response.headers["Connection"].lower()
    assert isinstance(connection.handshake_exc, InvalidUpgrade)


@pytest.mark.parametrize("version", ["8", "12", "14", "13, 8", "thirteen", ""])
def test_wrong_websocket_version_gets_426_with_version_13(version: str) -> None:
    connection, response = handshake(replace={"Sec-WebSocket-Version": version})

    assert response.status_code == 426
    assert response.headers["Sec-WebSocket-Version"] == "13"
    assert isinstance(connection.handshake_exc, InvalidVersion)
    assert b"\r\nSec-WebSocket-Version: 13\r\n" in connection.data_to_send()[0]


def test_missing_websocket_version_gets_426_with_version_13() -> None:
    _, response = handshake(drop=["Sec-WebSocket-Version"])

    assert response.status_code == 426
    assert response.headers["Sec-WebSocket-Version"] == "13"


def test_repeated_websocket_version_gets_426() -> None:
    _, response = handshake(extra=[("Sec-WebSocket-Version", "13")])

    assert response.status_code == 426


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"replace": {"Sec-WebSocket-Version": "8"}}, id="wrong-version"),
        pytest.param({"replace": {"Sec-WebSocket-Version": ""}}, id="empty-version"),
        pytest.param({"drop": ["Sec-WebSocket-Version"]}, id="missing-version"),
        pytest.param({"extra": [("Sec-WebSocket-Version", "13")]}, id="repeated-version"),
        pytest.param({"drop": ["Upgrade"]}, id="missing-upgrade"),
        pytest.param({"replace": {"Connection": "keep-alive"}}, id="no-upgrade-option"),
    ],
)
def test_every_426_names_websocket_in_upgrade_and_connection(kwargs: dict[str, object]) -> None:
    # RFC 9110 section 15.5.22: a 426 MUST carry Upgrade; section 7.8: whoever
    # sends Upgrade MUST list it in Connection, a hop-by-hop header.
    connection, response = handshake(**kwargs)
    wire = connection.data_to_send()[0]

    assert response.status_code == 426
    head = wire.partition(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"HTTP/1.1 426 Upgrade Required"
    assert b"Upgrade: websocket" in head
    assert b"Connection: Upgrade, close" in head
    assert len([line for line in head if line.lower().startswith(b"connection:")]) == 1


def test_reject_with_426_names_websocket_in_upgrade_and_connection() -> None:
    response = ServerConnection().reject(426, "upgrade first\n")

    assert response.headers["Upgrade"] == "websocket"
    assert response.headers["Connection"] == "Upgrade, close"
    assert response.body == b"upgrade first\n"


@pytest.mark.parametrize("status", [400, 403, 404, 500])
def test_reject_with_other_statuses_sends_no_upgrade(status: int) -> None:
    response = ServerConnection().reject(status, "no\n")

    assert "Upgrade" not in response.headers
    assert response.headers["Connection"] == "close"


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"drop": ["Sec-WebSocket-Key"]}, id="missing"),
        pytest.param({"replace": {"Sec-WebSocket-Key": ""}}, id="empty"),
        pytest.param({"replace": {"Sec-WebSocket-Key": "not base64!"}}, id="not-base64"),
        pytest.param({"replace": {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ"}}, id="no-padding"),
        pytest.param({"replace": {"Sec-WebSocket-Key": "c2hvcnQga2V5"}}, id="9-bytes"),
        pytest.param({"replace": {"Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAAAAAA"}}, id="18-bytes"),
        pytest.param({"replace": {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25j\xe9Q=="}}, id="l1"),
        pytest.param({"extra": [("Sec-WebSocket-Key", RFC_KEY)]}, id="repeated"),
    ],
)
def test_missing_or_bad_websocket_key_gets_400(kwargs: dict[str, object]) -> None:
    connection, response = handshake(**kwargs)

    assert response.status_code == 400
    assert isinstance(connection.handshake_exc, InvalidHeader)
    assert connection.handshake_exc.name == "Sec-WebSocket-Key"


def test_malformed_connection_header_gets_400() -> None:
    _, response = handshake(replace={"Connection": "Upgrade; x"})

    assert response.status_code == 400


# Origins --------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [None, "https://anything.example", "null"])
def test_any_origin_is_allowed_without_an_origin_list(origin: str | None) -> None:
    extra = [] if origin is None else [("Origin", origin)]

    _, response = handshake(extra=extra)

    assert response.status_code == 101


@pytest.mark.parametrize(
    ("origins", "origin", "status"),
    [
        pytest.param(["https://a.example"], "https://a.example", 101, id="string-match"),
        pytest.param(["https://a.example"], "https://b.example", 403, id="string-mismatch"),
        pytest.param(["https://a.example"], "https://a.example.evil", 403, id="string-prefix"),
        pytest.param(["https://a.example"], "HTTPS://A.EXAMPLE", 403, id="string-case"),
        pytest.param(["https://a.example"], None, 403, id="string-no-header"),
        pytest.param(
            [re.compile(r"https://[a-z]+\.example")], "https://chat.example", 101, id="regex-match"
        ),
        pytest.param(
            [re.compile(r"https://[a-z]+\.example")],
            "https://chat.example.evil",
            403,
            id="regex-needs-fullmatch",
        ),
        pytest.param(
            [re.compile(r"[a-z]+\.example")], "https://chat.example", 403, id="regex-no-search"
        ),
        pytest.param([re.compile(r".*")], None, 403, id="regex-no-header"),
        pytest.param([None], None, 101, id="none-no-header"),
        pytest.param([None], "https://a.example", 403, id="none-with-header"),
        pytest.param([None, "https://a.example"], "https://a.example", 101, id="mixed-string"),
        pytest.param([None, "https://a.example"], None, 101, id="mixed-none"),
        pytest.param([], None, 403, id="empty-list-no-header"),
        pytest.param([], "https://a.example", 403, id="empty-list"),
    ],
)
def test_origin_is_checked_against_allowed_origins(
    origins: list[str | re.Pattern[str] | None], origin: str | None, status: int
) -> None:
    extra = [] if origin is None else [("Origin", origin)]

    connection, response = handshake(ServerConnection(origins=origins), extra=extra)

    assert response.status_code == status
    if status == 403:
        assert isinstance(connection.handshake_exc, InvalidOrigin)
        assert connection.state is State.CLOSING
    else:
        assert connection.handshake_exc is None
        assert connection.state is State.OPEN


def test_repeated_origin_header_gets_400() -> None:
    connection = ServerConnection(origins=["https://a.example"])

    _, response = handshake(
        connection, extra=[("Origin", "https://a.example"), ("Origin", "https://a.example")]
    )

    assert response.status_code == 400


# Subprotocols ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("server", "client", "chosen"),
    [
        pytest.param(["chat", "superchat"], "superchat, chat", "chat", id="server-order-wins"),
        pytest.param(["superchat", "chat"], "chat, superchat", "superchat", id="server-first"),
        pytest.param(["chat"], "v2.chat, chat", "chat", id="one-shared"),
        pytest.param(["chat"], "other", None, id="none-shared"),
        pytest.param(["chat"], None, None, id="client-offers-none"),
        pytest.param(None, "chat", None, id="server-supports-none"),
        pytest.param([], "chat", None, id="server-supports-empty-list"),
    ],
)
def test_subprotocol_is_chosen_in_server_preference_order(
    server: list[str] | None, client: str | None, chosen: str | None
) -> None:
    extra = [] if client is None else [("Sec-WebSocket-Protocol", client)]

    connection, response = handshake(ServerConnection(subprotocols=server), extra=extra)

    assert response.status_code == 101
    assert response.headers.get("Sec-WebSocket-Protocol") == chosen
    assert connection.subprotocol == chosen


def test_subprotocol_offers_across_several_headers_are_combined() -> None:
    extra = [("Sec-WebSocket-Protocol", "a"), ("Sec-WebSocket-Protocol", "b")]

    _, response = handshake(ServerConnection(subprotocols=["b"]), extra=extra)

    assert response.headers["Sec-WebSocket-Protocol"] == "b"


def test_custom_select_subprotocol_receives_both_lists_and_decides() -> None:
    calls = []

    def pick_last(client: Sequence[str], server: Sequence[str]) -> str | None:
        calls.append((list(client), list(server)))
        return client[-1]

    connection = ServerConnection(subprotocols=["a", "b"], select_subprotocol=pick_last)
    extra = [("Sec-WebSocket-Protocol", "a, b, c")]

    connection, response = handshake(connection, extra=extra)

    assert calls == [(["a", "b", "c"], ["a", "b"])]
    assert response.headers["Sec-WebSocket-Protocol"] == "c"
    assert connection.subprotocol == "c"


def test_custom_select_subprotocol_returning_none_sends_no_header() -> None:
    connection = ServerConnection(subprotocols=["a"], select_subprotocol=lambda c, s: None)

    _, response = handshake(connection, extra=[("Sec-WebSocket-Protocol", "a")])

    assert response.status_code == 101
    assert "Sec-WebSocket-Protocol" not in response.headers


def test_failing_select_subprotocol_gets_500() -> None:
    def broken(client: Sequence[str], server: Sequence[str]) -> str | None:
        raise RuntimeError("boom")

    connection = ServerConnection(subprotocols=["a"], select_subprotocol=broken)

    connection, response = handshake(connection, extra=[("Sec-WebSocket-Protocol", "a")])

    assert response.status_code == 500
    assert isinstance(connection.handshake_exc, RuntimeError)
    assert b"boom" not in response.body


def test_subprotocol_takes_effect_only_when_101_is_sent() -> None:
    connection = ServerConnection(subprotocols=["chat"])
    connection.receive_data(handshake_request(extra=[("Sec-WebSocket-Protocol", "chat")]))
    (request,) = connection.events_received()
    assert isinstance(request, Request)

    response = connection.accept(request)

    assert connection.subprotocol is None
    connection.send_response(response)
    assert connection.subprotocol == "chat"


# Extensions -----------------------------------------------------------------------


@attrs.frozen
class RecordingExtension:
    """An extension that leaves frames alone and remembers its parameters."""

    name: str
    params: tuple[ExtensionParameter, ...]

    def decode(self, frame: Frame, *, max_size: int | None = None) -> Frame:
        return frame._replace(rsv1=False)

    def encode(self, frame: Frame) -> Frame:
        return frame


@attrs.define
class RecordingFactory:
    """Accepts offers of ``name`` unless they carry a ``decline`` parameter."""

    name: str
    offers: list[list[ExtensionParameter]] = attrs.field(factory=list)

    def process_request_params(
        self,
        params: Sequence[ExtensionParameter],
        accepted_extensions: Sequence[Extension],
    ) -> tuple[list[ExtensionParameter], Extension]:
        self.offers.append(list(params))
        if any(name == "decline" for name, _ in params):
            raise NegotiationError("declined")
        if any(ext.name == self.name for ext in accepted_extensions):
            raise NegotiationError("already accepted")
        return list(params), RecordingExtension(self.name, tuple(params))


@pytest.mark.parametrize(
    ("values", "offers"),
    [
        pytest.param(["x-a"], [("x-a", [])], id="bare"),
        pytest.param(["x-a; p"], [("x-a", [("p", None)])], id="flag"),
        pytest.param(["x-a;p=1 ; q = 2"], [("x-a", [("p", "1"), ("q", "2")])], id="values-ows"),
        pytest.param(['x-a; p="10"'], [("x-a", [("p", "10")])], id="quoted"),
        pytest.param(['x-a; p="1\\0"'], [("x-a", [("p", "10")])], id="quoted-pair"),
        pytest.param(["x-a, x-b; p"], [("x-a", []), ("x-b", [("p", None)])], id="list"),
        pytest.param(["x-a", "x-b"], [("x-a", []), ("x-b", [])], id="two-headers"),
        pytest.param([" , x-a ,, "], [("x-a", [])], id="empty-items"),
    ],
)
def test_extension_header_is_parsed(
    values: list[str], offers: list[tuple[str, list[ExtensionParameter]]]
) -> None:
    headers = Headers([("Sec-WebSocket-Extensions", value) for value in values])

    assert parse_extensions_header(headers) == offers


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("x-a; p=", id="missing-value"),
        pytest.param("x-a; =1", id="missing-name"),
        pytest.param("x-a p", id="missing-semicolon"),
        pytest.param('x-a; p="10', id="unterminated-quote"),
        pytest.param('x-a; p="a b"', id="quoted-non-token"),
        pytest.param('x-a; p=""', id="quoted-empty"),
        pytest.param("x-a; p=1=2", id="two-equals"),
        pytest.param("x-a;;", id="empty-param"),
        pytest.param("@", id="not-a-token"),
    ],
)
def test_malformed_extension_header_gets_400(value: str) -> None:
    factory = RecordingFactory("x-a")
    connection = ServerConnection(extensions=[factory])

    connection, response = handshake(connection, extra=[("Sec-WebSocket-Extensions", value)])

    assert response.status_code == 400
    assert isinstance(connection.handshake_exc, InvalidHeader)
    assert connection.handshake_exc.name == "Sec-WebSocket-Extensions"


def test_accepted_extension_is_announced_and_applied() -> None:
    factory = RecordingFactory("x-a")
    connection = ServerConnection(extensions=[factory])
    extra = [("Sec-WebSocket-Extensions", 'x-a; p="1"; q')]

    connection, response = handshake(connection, extra=extra)

    assert response.headers["Sec-WebSocket-Extensions"] == "x-a; p=1; q"
    assert factory.offers == [[("p", "1"), ("q", None)]]
    assert connection.extensions == [RecordingExtension("x-a", (("p", "1"), ("q", None)))]


def test_declined_offer_falls_back_to_the_next_offer() -> None:
    factory = RecordingFactory("x-a")
    connection = ServerConnection(extensions=[factory])
    extra = [("Sec-WebSocket-Extensions", "x-a; decline, x-a; p=2")]

    connection, response = handshake(connection, extra=extra)

    assert response.headers["Sec-WebSocket-Extensions"] == "x-a; p=2"
    assert factory.offers == [[("decline", None)], [("p", "2")]]


def test_extensions_spread_over_two_headers_are_negotiated_in_client_order() -> None:
    connection = ServerConnection(extensions=[RecordingFactory("x-b"), RecordingFactory("x-a")])
    extra = [("Sec-WebSocket-Extensions", "x-a"), ("Sec-WebSocket-Extensions", "x-b")]

    connection, response = handshake(connection, extra=extra)

    assert response.headers["Sec-WebSocket-Extensions"] == "x-a, x-b"
    assert [extension.name for extension in connection.extensions] == ["x-a", "x-b"]


def test_unknown_or_declined_extensions_send_no_header() -> None:
    connection = ServerConnection(extensions=[RecordingFactory("x-a")])
    extra = [("Sec-WebSocket-Extensions", "x-unknown, x-a; decline")]

    connection, response = handshake(connection, extra=extra)

    assert response.status_code == 101
    assert "Sec-WebSocket-Extensions" not in response.headers
    assert connection.extensions == []


def test_extension_offer_is_ignored_without_factories() -> None:
    _, response = handshake(extra=[("Sec-WebSocket-Extensions", "permessage-deflate")])

    assert response.status_code == 101
    assert "Sec-WebSocket-Extensions" not in response.headers


def test_negotiated_extension_allows_rsv1() -> None:
    connection = ServerConnection(extensions=[RecordingFactory("x-a")])
    connection, _ = handshake(connection, extra=[("Sec-WebSocket-Extensions", "x-a")])
    connection.data_to_send()

    connection.receive_data(client_frame(Opcode.TEXT, b"hi", rsv=0b100))

    assert connection.events_received() == [Frame(Opcode.TEXT, b"hi")]
    assert connection.data_to_send() == []


# Rejections -----------------------------------------------------------------------


def test_reject_builds_a_plain_text_response_with_content_length() -> None:
    connection = ServerConnection()

    response = connection.reject(404, "No such room: caf\xe9.\n")

    assert response.status_code == 404
    assert response.reason_phrase == "Not Found"
    assert response.body == "No such room: caf\xe9.\n".encode()
    assert response.headers["Content-Length"] == str(len(response.body))
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers["Connection"] == "close"
    assert "Date" in response.headers
    assert connection.state is State.CONNECTING
    assert connection.handshake_exc is None


def test_sent_rejection_ends_with_eof_and_expects_close() -> None:
    connection = ServerConnection()
    connection.receive_data(handshake_request())
    connection.events_received()

    connection.send_response(connection.reject(403, "Go away.\n"))

    writes = connection.data_to_send()
    assert len(writes) == 2
    assert writes[0].startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"\r\nContent-Length: 9\r\n" in writes[0]
    assert writes[0].endswith(b"\r\n\r\nGo away.\n")
    assert writes[1] == b""
    assert connection.state is State.CLOSING
    assert connection.close_expected()
    assert isinstance(connection.handshake_exc, InvalidHandshake)


def test_failed_handshake_response_ends_with_eof_and_sets_handshake_exc() -> None:
    connection, response = handshake(drop=["Sec-WebSocket-Key"])

    writes = connection.data_to_send()

    assert writes[-1] == b""
    assert writes[0].startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert writes[0].endswith(response.body)
    assert b"Sec-WebSocket-Key" in response.body
    assert connection.state is State.CLOSING
    assert connection.close_expected()
    assert isinstance(connection.handshake_exc, InvalidHeader)


def test_rejected_connection_closes_on_eof() -> None:
    connection, _ = handshake(drop=["Upgrade"])
    connection.data_to_send()

    connection.receive_eof()

    assert connection.state is State.CLOSED
    assert connection.data_to_send() == []
    assert connection.close_code == 1006
    assert connection.close_exc.__cause__ is connection.handshake_exc


def test_rejected_connection_cannot_send_frames() -> None:
    connection, _ = handshake(drop=["Upgrade"])

    with pytest.raises(InvalidState):
        connection.send_text(b"hello")
    with pytest.raises(InvalidState):
        connection.send_close(1000)


def test_frames_pipelined_after_the_request_are_parsed_once_accepted() -> None:
    connection = ServerConnection()
    connection.receive_data(handshake_request() + client_frame(Opcode.TEXT, b"early"))
    (request,) = connection.events_received()
    assert isinstance(request, Request)
    assert connection.events_received() == []

    connection.send_response(connection.accept(request))

    assert connection.events_received() == [Frame(Opcode.TEXT, b"early")]


def test_pipelined_ping_is_answered_after_the_101() -> None:
    connection = ServerConnection()
    connection.receive_data(handshake_request() + client_frame(Opcode.PING, b"p"))
    (request,) = connection.events_received()
    assert isinstance(request, Request)

    connection.send_response(connection.accept(request))

    response, pong = connection.data_to_send()
    assert response.startswith(b"HTTP/1.1 101 ")
    assert pong == b"\x8a\x01p"


def test_frames_pipelined_after_the_request_are_discarded_after_a_rejection() -> None:
    connection = ServerConnection()
    connection.receive_data(handshake_request() + client_frame(Opcode.PING, b"early"))
    (request,) = connection.events_received()
    assert isinstance(request, Request)

    connection.send_response(connection.reject(401, "Who are you?\n"))
    connection.receive_data(client_frame(Opcode.TEXT, b"late"))

    assert connection.events_received() == []
    writes = connection.data_to_send()
    assert len(writes) == 2
    assert writes[0].startswith(b"HTTP/1.1 401 ")
    assert writes[1] == b""
