"""HTTP Basic authentication (wsserver.auth), end to end with real clients, on both backends."""

from __future__ import annotations

import base64
import functools
import logging
from collections.abc import Iterable
from typing import Any

import anyio
import anyio.to_thread
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import wsserver
import wsserver.asyncio_io
import wsserver.trio_io
from wsserver.auth import BasicAuthWebSocketServerProtocol, basic_auth_protocol_factory
from wsserver.connection import HTTPResponse, WebSocketServerProtocol
from wsserver.sansio import Headers

from ..serving import running_server

pytestmark = pytest.mark.anyio

TIMEOUT_SECONDS = 10
CHALLENGE = 'Basic realm="test", charset="UTF-8"'


def basic(username: str, password: str) -> str:
    """An ``Authorization`` header value for Basic credentials."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


async def greet(websocket: Any) -> None:
    """Handler: tell the client who it is, then echo."""
    await websocket.send(f"hello {websocket.username}")
    async for message in websocket:
        await websocket.send(message)


def _exchange(uri: str, headers: Iterable[tuple[str, str]]) -> str:
    with connect(
        uri, additional_headers=list(headers), open_timeout=5, close_timeout=2, proxy=None
    ) as client:
        greeting = client.recv(timeout=5)
        client.send("ping")
        assert client.recv(timeout=5) == "ping"
        return str(greeting)


async def exchange(uri: str, authorization: str | None) -> str:
    """Connect with the ``websockets`` client; return the handler's greeting."""
    headers = [] if authorization is None else [("Authorization", authorization)]
    return await anyio.to_thread.run_sync(
        functools.partial(_exchange, uri, headers), abandon_on_cancel=True
    )


def _refused(uri: str, headers: list[tuple[str, str]]) -> Any:
    try:
        with connect(uri, additional_headers=headers, open_timeout=5, proxy=None):
            pass
    except InvalidStatus as exc:
        return exc.response
    raise AssertionError("the handshake succeeded")


async def refused(uri: str, authorization: str | None) -> Any:
    """Connect with the ``websockets`` client, expecting a refusal; return the response."""
    headers = [] if authorization is None else [("Authorization", authorization)]
    return await anyio.to_thread.run_sync(
        functools.partial(_refused, uri, headers), abandon_on_cancel=True
    )


async def raw_request(uri: str, extra_lines: list[bytes], path: str = "/") -> tuple[int, bytes]:
    """Send a handshake request with raw header lines; return the status and the response."""
    port = int(uri.rsplit(":", 1)[1])
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n"
    ).encode() + b"".join(line + b"\r\n" for line in extra_lines) + b"\r\n"
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(request)
        response = b""
        try:
            while True:
                response += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
    return int(response.split(b" ", 2)[1]), response


def auth_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The log records about authentication, and any generic rejection line."""
    return [
        record
        for record in caplog.records
        if record.name == "wsserver.server"
        and ("authentication" in record.getMessage() or "rejected" in record.getMessage())
    ]


def assert_refusal_logged_once(caplog: pytest.LogCaptureFixture, fragment: str) -> None:
    lines = auth_lines(caplog)
    assert [record.levelno for record in lines] == [logging.INFO]
    assert fragment in lines[0].getMessage()


@pytest.fixture
def info_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="wsserver.server")
    return caplog


# Accepting ----------------------------------------------------------------------------


async def test_single_pair_lets_the_user_in() -> None:
    factory = basic_auth_protocol_factory(realm="test", credentials=("alice", "s3cret"))
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with running_server(greet, create_protocol=factory) as (_, uri):
            assert await exchange(uri, basic("alice", "s3cret")) == "hello alice"


async def test_list_of_pairs_lets_each_user_in() -> None:
    factory = basic_auth_protocol_factory(
        realm="test", credentials=[("alice", "s3cret"), ("bob", "pa:ss wörd")]
    )
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with running_server(greet, create_protocol=factory) as (_, uri):
            assert await exchange(uri, basic("alice", "s3cret")) == "hello alice"
            assert await exchange(uri, basic("bob", "pa:ss wörd")) == "hello bob"
            response = await refused(uri, basic("alice", "pa:ss wörd"))
            assert response.status_code == 401


async def test_sync_check_credentials() -> None:
    seen: list[tuple[str, str]] = []

    def check(username: str, password: str) -> bool:
        seen.append((username, password))
        return password == username[::-1]

    factory = basic_auth_protocol_factory(realm="test", check_credentials=check)
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with running_server(greet, create_protocol=factory) as (_, uri):
            assert await exchange(uri, basic("carol", "lorac")) == "hello carol"
            assert (await refused(uri, basic("carol", "carol"))).status_code == 401
    assert seen == [("carol", "lorac"), ("carol", "carol")]


async def test_async_check_credentials() -> None:
    async def check(username: str, password: str) -> bool:
        await anyio.sleep(0)
        return (username, password) == ("dave", "hunter2")

    factory = basic_auth_protocol_factory(realm="test", check_credentials=check)
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with running_server(greet, create_protocol=factory) as (_, uri):
            assert await exchange(uri, basic("dave", "hunter2")) == "hello dave"
            assert (await refused(uri, basic("dave", "hunter3"))).status_code == 401


async def test_scheme_is_case_insensitive() -> None:
    factory = basic_auth_protocol_factory(realm="test", credentials=("alice", "s3cret"))
    token = base64.b64encode(b"alice:s3cret").decode()
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with running_server(greet, create_protocol=factory) as (_, uri):
            assert await exchange(uri, f"bAsIc   {token}") == "hello alice"


async def test_subclass_overriding_check_credentials() -> None:
    class TokenAuth(BasicAuthWebSocketServerProtocol):
        realm = "test"

        async def check_credentials(self, username: str, password: str) -> bool:
            return password == "token-" + username

    with anyio.fail_after(TIMEOUT_SECONDS):
        async with running_server(greet, create_protocol=TokenAuth) as (_, uri):
            assert await exchange(uri, basic("erin", "token-erin")) == "hello erin"
            response = await refused(uri, basic("erin", "nope"))
            assert response.headers["WWW-Authenticate"] == CHALLENGE


# Refusing -------------------------------------------------------------------------


async def test_missing_header_gets_401_with_the_challenge(
    info_logs: pytest.LogCaptureFixture,
) -> None:
    factory = basic_auth_protocol_factory(realm="test", credentials=("alice", "s3cret"))
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with running_server(greet, create_protocol=factory) as (_, uri):
            response = await refused(uri, None)
    assert response.status_code == 401
    assert response.headers.get_all("WWW-Authenticate") == [CHALLENGE]
    assert_refusal_logged_once(info_logs, "missing credentials")


async def test_realm_is_quoted_in_the_challenge() -> None:
    factory = basic_auth_protocol_factory(
        realm='say "hi" \\ bye', credentials=("alice", "s3cret")
    )
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with running_server(greet, create_protocol=factory) as (_, uri):
            response = await refused(uri, None)
    assert response.headers["WWW-Authenticate"] == (
        'Basic realm="say \\"hi\\" \\\\ bye", charset="UTF-8"'
    )


async def test_wrong_password_gets_401(info_logs: pytest.LogCaptureFixture) -> None:
    factory = basic_auth_protocol_factory(realm="test", credentials=("alice", "s3cret"))
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with running_server(greet, create_protocol=factory) as (_, uri):
            response = await refused(uri, basic("alice", "letmein"))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    assert_refusal_logged_once(info_logs, "invalid credentials for user 'alice'")
    assert "letmein" not in info_logs.text


async def test_unknown_user_gets_the_same_401_as_a_wrong_password(
    info_logs: pytest.LogCaptureFixture,
) -> None:
    factory = basic_auth_protocol_factory(realm="test", credentials=("alice", "s3cret"))
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with running_server(greet, create_protocol=factory) as (_, uri):
            unknown = await refused(uri, basic("mallory", "s3cret"))
            wrong = await refused(uri, basic("alice", "wrong"))
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.body == wrong.body
    assert unknown.headers["WWW-Authenticate"] == wrong.headers["WWW-Authenticate"]
    assert "s3cret" not in info_logs.text


async def test_other_scheme_gets_401_with_the_basic_challenge(
    info_logs: pytest.LogCaptureFixture,
) -> None:
    factory = basic_auth_protocol_factory(realm="test", credentials=("alice", "s3cret"))
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with running_server(greet, create_protocol=factory) as (_, uri):
            response = await refused(uri, "Bearer abc.def")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == CHALLENGE
    assert_refusal_logged_once(info_logs, "unsupported authorization scheme 'Bearer'")


@pytest.mark.parametrize(
    "header_line",
    [
        pytest.param(b"Authorization: Basic", id="no-credentials"),
        pytest.param(b"Authorization: Basic !!!not-base64!!!", id="not-token68"),
        pytest.param(b"Authorization: Basic YWxpY2U6czNjcmU", id="bad-padding"),
        pytest.param(b"Authorization: Basic YWxpY2U=", id="no-colon"),
        pytest.param(b"Authorization: Basic " + base64.b64encode(b"\xffalice:x"), id="not-utf8"),
        pytest.param(b"Authorization: Basic " + base64.b64encode(b"al\x01ce:x"), id="control"),
        pytest.param(b"Authorization: Basic a b", id="two-tokens"),
        pytest.param(b"Authorization: {basic} abc", id="not-a-scheme"),
    ],
)
async def test_malformed_header_gets_400(
    header_line: bytes, info_logs: pytest.LogCaptureFixture
) -> None:
    factory = basic_auth_protocol_factory(realm="test", credentials=("alice", "s3cret"))
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with running_server(greet, create_protocol=factory) as (_, uri):
            status, response = await raw_request(uri, [header_line])
            # The server still serves the next client.
            assert await exchange(uri, basic("alice", "s3cret")) == "hello alice"
    assert status == 400
    assert b"WWW-Authenticate" not in response
    assert_refusal_logged_once(info_logs, "authentication failed (400)")


async def test_two_authorization_headers_get_400() -> None:
    factory = basic_auth_protocol_factory(realm="test", credentials=("alice", "s3cret"))
    line = b"Authorization: " + basic("alice", "s3cret").encode()
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with running_server(greet, create_protocol=factory) as (_, uri):
            status, _ = await raw_request(uri, [line, line])
    assert status == 400


# Composing ----------------------------------------------------------------------------


async def test_process_request_option_answers_before_authentication() -> None:
    def health(path: str, headers: Headers) -> HTTPResponse | None:
        if path == "/healthz":
            return 200, [("Content-Type", "text/plain")], b"OK\n"
        return None

    factory = basic_auth_protocol_factory(realm="test", credentials=("alice", "s3cret"))
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with running_server(greet, create_protocol=factory, process_request=health) as (
            _,
            uri,
        ):
            status, response = await raw_request(uri, [], path="/healthz")
            assert status == 200
            assert response.endswith(b"OK\n")
            assert (await refused(uri + "/chat", None)).status_code == 401
            assert await exchange(uri + "/chat", basic("alice", "s3cret")) == "hello alice"


async def test_user_protocol_subclass_is_composed_with_authentication() -> None:
    class Tagged(WebSocketServerProtocol):
        tag = "custom"

        async def process_request(self, path: str, headers: Headers) -> HTTPResponse | None:
            if path == "/teapot":
                return 418, [], b"short and stout\n"
            return await super().process_request(path, headers)

    async def handler(websocket: Any) -> None:
        await websocket.send(f"{websocket.tag} {websocket.username}")

    factory = basic_auth_protocol_factory(
        realm="test", credentials=("alice", "s3cret"), create_protocol=Tagged
    )
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with running_server(handler, create_protocol=factory) as (server, uri):
            status, _ = await raw_request(uri, [], path="/teapot")
            assert status == 418
            assert (await refused(uri, basic("alice", "nope"))).status_code == 401
            greeting = await anyio.to_thread.run_sync(
                functools.partial(_first_message, uri, basic("alice", "s3cret")),
                abandon_on_cancel=True,
            )
            assert greeting == "custom alice"
            assert isinstance(server, wsserver.WebSocketServer)


def _first_message(uri: str, authorization: str) -> str:
    with connect(
        uri, additional_headers=[("Authorization", authorization)], open_timeout=5, proxy=None
    ) as client:
        return str(client.recv(timeout=5))


# Front doors --------------------------------------------------------------------------


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_asyncio_front_door() -> None:
    factory = basic_auth_protocol_factory(realm="test", credentials=("alice", "s3cret"))
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with wsserver.asyncio_io.serve(
            greet, "127.0.0.1", 0, create_protocol=factory
        ) as server:
            uri = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            assert await exchange(uri, basic("alice", "s3cret")) == "hello alice"
            assert (await refused(uri, None)).status_code == 401


async def test_trio_front_door() -> None:
    factory = basic_auth_protocol_factory(realm="test", credentials=("alice", "s3cret"))
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with anyio.create_task_group() as task_group:
            server = await task_group.start(
                functools.partial(
                    wsserver.trio_io.serve, greet, "127.0.0.1", 0, create_protocol=factory
                )
            )
            uri = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            assert await exchange(uri, basic("alice", "s3cret")) == "hello alice"
            assert (await refused(uri, None)).status_code == 401
            await server.aclose()


# Arguments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="neither"),
        pytest.param(
            {"credentials": ("a", "b"), "check_credentials": lambda u, p: True}, id="both"
        ),
        pytest.param({"credentials": "alice:s3cret"}, id="string"),
        pytest.param({"credentials": ("alice",)}, id="short-pair"),
        pytest.param({"credentials": [("alice", "s3cret"), ("bob",)]}, id="bad-item"),
        pytest.param({"credentials": [("alice", 42)]}, id="not-str"),
        pytest.param({"credentials": 42}, id="not-iterable"),
        pytest.param({"check_credentials": "yes"}, id="not-callable"),
        pytest.param(
            {"credentials": ("a", "b"), "create_protocol": lambda *a, **k: None},
            id="create-protocol-not-a-class",
        ),
    ],
)
def test_bad_arguments_raise_type_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        basic_auth_protocol_factory(realm="test", **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"credentials": []}, id="empty"),
        pytest.param({"credentials": [("a", "1"), ("a", "2")]}, id="duplicate-user"),
        pytest.param({"credentials": ("a", "b"), "realm": "line\r\nbreak"}, id="bad-realm"),
    ],
)
def test_bad_values_raise_value_error(kwargs: dict[str, Any]) -> None:
    kwargs.setdefault("realm", "test")
    with pytest.raises(ValueError):
        basic_auth_protocol_factory(**kwargs)
