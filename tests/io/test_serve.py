"""Every option of ``serve``, as a client sees it, on both backends."""

from __future__ import annotations

import functools
import logging
import re
import socket
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from websockets.exceptions import ConnectionClosed as ClientConnectionClosed
from websockets.exceptions import InvalidStatus

import wsserver
from wsserver import Headers
from wsserver.connection import DEFAULT_SERVER_HEADER

from ..serving import running_server
from .clients import RawClient, in_thread, open_client, port_of, recv

pytestmark = pytest.mark.anyio

TIMEOUT = 10


async def echo(ws: wsserver.WebSocketServerProtocol) -> None:
    async for message in ws:
        await ws.send(message)


async def wait_for_close(ws: wsserver.WebSocketServerProtocol) -> None:
    await ws.wait_closed()


async def response_headers(uri: str, **client_options: Any) -> Any:
    """Open a connection, return the 101 response's headers, close."""
    client = await open_client(uri, **client_options)
    headers = client.response.headers
    await in_thread(client.close)
    return headers


async def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """Send a plain HTTP GET; return the status, headers and body of the answer."""
    client = await RawClient.connect(port)
    await client.stream.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await client.read_response_head()
    body = await client.read_until_eof()
    await client.aclose()
    assert client.status is not None
    return client.status, client.headers, body


# Compression ----------------------------------------------------------------------------


async def test_compression_is_negotiated_by_default() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running_server(wait_for_close) as (_, uri):
            headers = await response_headers(uri)
    assert headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")


async def test_compression_none_disables_permessage_deflate() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running_server(echo, compression=None) as (_, uri):
            client = await open_client(uri)  # offers permessage-deflate
            assert "Sec-WebSocket-Extensions" not in client.response.headers
            await in_thread(client.send, "still works")
            assert await recv(client) == "still works"
            await in_thread(client.close)


async def test_unknown_compression_is_rejected() -> None:
    with anyio.fail_after(TIMEOUT), pytest.raises(ValueError, match="compression"):
        await wsserver.serve(echo, "127.0.0.1", 0, compression="brotli")


# Origins ------------------------------------------------------------------------------


async def test_allowed_origin_connects() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running_server(echo, origins=["https://good.example"]) as (_, uri):
            client = await open_client(uri, origin="https://good.example")
            await in_thread(client.send, "hi")
            assert await recv(client) == "hi"
            await in_thread(client.close)


@pytest.mark.parametrize("origin", ["https://evil.example", None])
async def test_other_origin_is_rejected_with_403(origin: str | None) -> None:
    handled: list[Any] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        handled.append(ws)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, origins=["https://good.example"]) as (_, uri):
            with pytest.raises(InvalidStatus) as caught:
                await open_client(uri, origin=origin)
    assert caught.value.response.status_code == 403
    assert handled == []


# Subprotocols ---------------------------------------------------------------------------


async def test_server_preferred_subprotocol_is_selected() -> None:
    seen: list[Any] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        seen.append(ws.subprotocol)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, subprotocols=["chat", "superchat"]) as (_, uri):
            client = await open_client(uri, subprotocols=["superchat", "chat"])
            assert client.subprotocol == "chat"
            await in_thread(client.close)
    assert seen == ["chat"]


async def test_no_common_subprotocol_connects_without_one() -> None:
    seen: list[Any] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        seen.append(ws.subprotocol)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, subprotocols=["chat"]) as (_, uri):
            client = await open_client(uri, subprotocols=["mqtt"])
            assert client.subprotocol is None
            await in_thread(client.close)
    assert seen == [None]


async def test_select_subprotocol_option_decides() -> None:
    calls: list[Any] = []

    def select(client: Sequence[str], server: Sequence[str]) -> str | None:
        calls.append((list(client), list(server)))
        return "superchat" if "superchat" in client else None

    with anyio.fail_after(TIMEOUT):
        async with running_server(
            wait_for_close, subprotocols=["chat", "superchat"], select_subprotocol=select
        ) as (_, uri):
            client = await open_client(uri, subprotocols=["chat", "superchat"])
            assert client.subprotocol == "superchat"
            await in_thread(client.close)
    assert calls == [(["chat", "superchat"], ["chat", "superchat"])]


# Response headers ---------------------------------------------------------------------


async def test_extra_headers_mapping_is_added_to_the_response() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running_server(wait_for_close, extra_headers={"X-Deploy": "blue"}) as (_, uri):
            headers = await response_headers(uri)
    assert headers["X-Deploy"] == "blue"


async def test_extra_headers_callable_gets_path_and_request_headers() -> None:
    def extra(path: str, request_headers: Headers) -> dict[str, str]:
        return {"X-Path": path, "X-Agent": request_headers["User-Agent"]}

    with anyio.fail_after(TIMEOUT):
        async with running_server(wait_for_close, extra_headers=extra) as (_, uri):
            headers = await response_headers(uri + "/room/7", user_agent_header="agent/2")
    assert headers["X-Path"] == "/room/7"
    assert headers["X-Agent"] == "agent/2"


async def test_server_header_defaults_to_python_and_wsserver_versions() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running_server(wait_for_close) as (_, uri):
            headers = await response_headers(uri)
    assert headers["Server"] == DEFAULT_SERVER_HEADER
    assert re.fullmatch(r"Python/\d+\.\d+\.\d+\S* wsserver/\S+", headers["Server"])
    assert headers["Server"].endswith(f"wsserver/{wsserver.__version__}")


async def test_server_header_can_be_customised() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running_server(wait_for_close, server_header="Unicorn/1") as (_, uri):
            headers = await response_headers(uri)
    assert headers["Server"] == "Unicorn/1"


async def test_server_header_none_removes_it() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running_server(wait_for_close, server_header=None) as (_, uri):
            headers = await response_headers(uri)
    assert "Server" not in headers


# process_request and create_protocol ----------------------------------------------------


def health_check(path: str, request_headers: Headers) -> Any:
    if path == "/healthz":
        return 200, [("Content-Type", "text/plain")], b"OK\n"
    return None


def forbid_secret(path: str, request_headers: Headers) -> Any:
    if path.startswith("/secret"):
        return 403, {"X-Reason": "secret"}, b"Forbidden\n"
    return None


def sync_or_async(hook: Any, kind: str) -> Any:
    """``hook`` itself, or an async function returning what it returns."""
    if kind == "sync":
        return hook

    async def async_hook(path: str, request_headers: Headers) -> Any:
        await anyio.lowlevel.checkpoint()
        return hook(path, request_headers)

    return async_hook


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_process_request_answers_a_health_check(kind: str) -> None:
    with anyio.fail_after(TIMEOUT):
        async with running_server(
            echo, process_request=sync_or_async(health_check, kind)
        ) as (_, uri):
            status, headers, body = await http_get(port_of(uri), "/healthz")
            # Other paths still upgrade.
            client = await open_client(uri + "/chat")
            await in_thread(client.send, "hi")
            assert await recv(client) == "hi"
            await in_thread(client.close)
    assert status == 200
    assert headers["content-type"] == "text/plain"
    assert body == b"OK\n"


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_process_request_rejects_with_403(kind: str) -> None:
    handled: list[Any] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        handled.append(ws.path)

    with anyio.fail_after(TIMEOUT):
        async with running_server(
            handler, process_request=sync_or_async(forbid_secret, kind)
        ) as (_, uri):
            with pytest.raises(InvalidStatus) as caught:
                await open_client(uri + "/secret/plans")
            client = await open_client(uri + "/public")
            with pytest.raises(ClientConnectionClosed):
                await recv(client)
    response = caught.value.response
    assert response.status_code == 403
    assert response.headers["X-Reason"] == "secret"
    assert response.body == b"Forbidden\n"
    assert handled == ["/public"]


async def test_create_protocol_subclass_overrides_hooks() -> None:
    class Custom(wsserver.WebSocketServerProtocol):
        async def process_request(self, path: str, request_headers: Headers) -> Any:
            if path == "/teapot":
                return 418, {}, b"I'm a teapot\n"
            return None

        def select_subprotocol(
            self, client_subprotocols: Sequence[str], server_subprotocols: Sequence[str]
        ) -> str | None:
            return client_subprotocols[-1]  # the client's least preferred, on purpose

    seen: list[Any] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        seen.append((type(ws), ws.subprotocol))

    with anyio.fail_after(TIMEOUT):
        async with running_server(
            handler, create_protocol=Custom, subprotocols=["a", "b"]
        ) as (_, uri):
            with pytest.raises(InvalidStatus) as caught:
                await open_client(uri + "/teapot")
            client = await open_client(uri, subprotocols=["a", "b"])
            assert client.subprotocol == "b"
            await in_thread(client.close)
    assert caught.value.response.status_code == 418
    assert seen == [(Custom, "b")]


# Limits ---------------------------------------------------------------------------------


async def test_message_over_max_size_closes_with_1009() -> None:
    outcome: list[Any] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        try:
            async for message in ws:
                outcome.append(len(message))
        except wsserver.ConnectionClosedError as exc:
            outcome.append(exc.sent.code if exc.sent else None)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, max_size=1000) as (_, uri):
            client = await open_client(uri, compression=None)
            await in_thread(client.send, b"x" * 1000)
            await in_thread(client.send, b"x" * 1001)
            with pytest.raises(ClientConnectionClosed) as caught:
                await recv(client)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1009
    assert outcome == [1000, 1009]


async def test_compressed_message_over_max_size_once_inflated_closes_with_1009() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running_server(echo, max_size=1000) as (_, uri):
            client = await open_client(uri)  # 2000 bytes of "a" deflate to a few bytes
            await in_thread(client.send, "a" * 2000)
            with pytest.raises(ClientConnectionClosed) as caught:
                await recv(client)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1009


async def test_fragmented_message_over_max_size_closes_with_1009() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running_server(echo, max_size=1000) as (_, uri):
            client = await open_client(uri, compression=None)
            with pytest.raises(ClientConnectionClosed) as caught:
                # The close may arrive before the client sent its last fragment.
                await in_thread(client.send, [b"x" * 600, b"x" * 600, b"x" * 600])
                await recv(client)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1009


# Handlers -------------------------------------------------------------------------------


async def test_legacy_handler_with_path_argument_gets_the_path() -> None:
    async def handler(ws: wsserver.WebSocketServerProtocol, path: str) -> None:
        await ws.send(path)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            client = await open_client(uri + "/legacy?x=1")
            assert await recv(client) == "/legacy?x=1"
            await in_thread(client.close)


async def test_handler_with_optional_second_argument_gets_only_the_connection() -> None:
    async def handler(ws: wsserver.WebSocketServerProtocol, extra: str = "default") -> None:
        await ws.send(extra)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            client = await open_client(uri + "/x")
            assert await recv(client) == "default"
            await in_thread(client.close)


async def test_raising_handler_closes_with_1011_logs_once_and_server_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Boom(Exception):
        pass

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        message = await ws.recv()
        if message == "explode":
            raise Boom("handler exploded")
        await ws.send(f"fine: {message}")

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            first = await open_client(uri)
            await in_thread(first.send, "explode")
            with pytest.raises(ClientConnectionClosed) as caught:
                await recv(first)
            second = await open_client(uri)
            await in_thread(second.send, "hello")
            assert await recv(second) == "fine: hello"
            await in_thread(second.close)

    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1011
    tracebacks = [
        r for r in caplog.records
        if r.exc_info is not None and isinstance(r.exc_info[1], Boom)
    ]
    assert len(tracebacks) == 1
    assert tracebacks[0].levelno == logging.ERROR
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r not in tracebacks]


async def test_sync_process_request_returning_none_lets_the_handshake_proceed() -> None:
    calls: list[str] = []

    def record(path: str, request_headers: Headers) -> None:
        calls.append(path)

    with anyio.fail_after(TIMEOUT):
        async with running_server(echo, process_request=record) as (_, uri):
            client = await open_client(uri + "/go")
            await in_thread(client.send, "through")
            assert await recv(client) == "through"
            await in_thread(client.close)
    assert calls == ["/go"]


# Listening --------------------------------------------------------------------------------


async def test_serve_on_an_existing_socket() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    with anyio.fail_after(TIMEOUT):
        async with anyio.create_task_group() as task_group:
            server = await task_group.start(functools.partial(wsserver.serve, echo, sock=sock))
            assert server.is_serving()
            assert [s.getsockname() for s in server.sockets] == [("127.0.0.1", port)]
            client = await open_client(f"ws://127.0.0.1:{port}")
            await in_thread(client.send, "on my socket")
            assert await recv(client) == "on my socket"
            await in_thread(client.close)
            await server.aclose()
    assert not server.is_serving()


async def test_server_reports_its_sockets_and_is_serving() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running_server(echo) as (server, uri):
            assert server.is_serving()
            assert not server.is_closing()
            [sock] = server.sockets
            assert sock.getsockname() == ("127.0.0.1", port_of(uri))


# Broadcast --------------------------------------------------------------------------------


async def test_broadcast_reaches_every_open_connection_and_skips_closed_ones() -> None:
    connected: list[wsserver.WebSocketServerProtocol] = []
    all_connected = anyio.Event()
    one_closed = anyio.Event()

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        connected.append(ws)
        if len(connected) == 3:
            all_connected.set()
        await ws.wait_closed()
        one_closed.set()

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            clients = [await open_client(uri) for _ in range(3)]
            await all_connected.wait()
            await in_thread(clients[2].close)
            await one_closed.wait()

            assert wsserver.broadcast(connected, "news") == 2
            assert wsserver.broadcast(connected, b"\x00bytes") == 2
            for client in clients[:2]:
                assert await recv(client) == "news"
                assert await recv(client) == b"\x00bytes"
                await in_thread(client.close)


async def test_broadcast_rejects_what_is_not_a_message() -> None:
    with pytest.raises(TypeError):
        wsserver.broadcast([], 42)  # type: ignore[arg-type]
