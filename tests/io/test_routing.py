"""Routing: a Router as the handler of serve, on both loops, both front doors and the CLI.

Matching is checked alone first (sync); then over real sockets with the
``websockets`` client, and with raw HTTP for the 404 that an unknown path gets
during the handshake.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from websockets.asyncio.client import connect as asyncio_connect
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as sync_connect

import wsserver
from wsserver import Headers, Router
from wsserver.asyncio_io import serve as asyncio_serve

from ..serving import running_server
from .clients import RawClient, handshake_request, in_thread, open_client, port_of, recv

TIMEOUT = 10


async def nothing(ws: wsserver.WebSocketServerProtocol, **params: Any) -> None:
    """A handler for routes that only need to match."""


# Matching -----------------------------------------------------------------------------


def test_parameters_are_matched_and_converted() -> None:
    router = Router({"/rooms/{name}": nothing, "/users/{user_id:int}/feed": nothing})
    room = router.match("/rooms/lobby")
    assert room is not None and room[0].pattern == "/rooms/{name}" and room[1] == {"name": "lobby"}
    feed = router.match("/users/42/feed")
    assert feed is not None and feed[1] == {"user_id": 42}
    assert router.match("/users/x/feed") is None
    assert router.match("/rooms/a/b") is None
    assert router.match("/rooms/") is None  # a parameter is never empty
    assert router.match("/nowhere") is None


def test_parameters_are_percent_decoded_after_matching() -> None:
    router = Router({"/rooms/{name}": nothing})
    found = router.match("/rooms/caf%C3%A9%2Fbar")
    # %2F does not split the segment: matching sees the path as sent.
    assert found is not None and found[1] == {"name": "café/bar"}


def test_path_parameter_takes_the_rest() -> None:
    router = Router([("/files/{rest:path}", nothing)])
    found = router.match("/files/a/b%20c.txt")
    assert found is not None and found[1] == {"rest": "a/b c.txt"}


def test_query_string_is_ignored_by_matching() -> None:
    router = Router({"/chat": nothing})
    assert router.match("/chat?token=abc&x=1") is not None


def test_trailing_slash_is_not_significant_unless_both_spellings_are_routed() -> None:
    def a(ws: Any) -> Any: ...
    def b(ws: Any) -> Any: ...

    router = Router({"/chat": a, "/news/": b})
    assert router.match("/chat/")[0].handler is a  # type: ignore[index]
    assert router.match("/news")[0].handler is b  # type: ignore[index]
    router.add("/chat/", b)
    assert router.match("/chat/")[0].handler is b  # type: ignore[index]
    assert router.match("/chat")[0].handler is a  # type: ignore[index]
    assert Router({"/x": a}).match("/") is None


def test_first_route_added_wins() -> None:
    def a(ws: Any) -> Any: ...
    def b(ws: Any) -> Any: ...

    router = Router([("/rooms/{name}", a), ("/rooms/special", b)])
    assert router.match("/rooms/special")[0].handler is a  # type: ignore[index]


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("rooms", "must start with '/'"),
        ("/rooms/{name:float}", "unknown converter 'float'"),
        ("/a/{x}/{x}", "parameter 'x' appears twice"),
        ("/a/{x", "malformed parameter"),
        ("/a/{1x}", "malformed parameter"),
        ("/a/x}", "malformed parameter"),
    ],
)
def test_bad_pattern_is_refused(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Router().add(pattern, nothing)


def test_same_pattern_twice_is_refused() -> None:
    router = Router({"/a": nothing})
    with pytest.raises(ValueError, match="already served"):
        router.add("/a", nothing)
    with pytest.raises(TypeError, match="callable"):
        router.add("/b", "handler")  # type: ignore[arg-type]


def test_route_decorator_returns_the_handler() -> None:
    router = Router()

    @router.route("/echo")
    async def echo(ws: Any) -> None: ...

    assert router.routes[0].handler is echo and echo.__name__ == "echo"


# Serving, on both backends -------------------------------------------------------------


def chat_router(seen: list[Any]) -> Router:
    router = Router()

    @router.route("/rooms/{name}")
    async def room(ws: wsserver.WebSocketServerProtocol, name: str) -> None:
        seen.append(("room", name, ws.path))
        async for message in ws:
            await ws.send(f"{name}:{message}")

    @router.route("/users/{user_id:int}")
    async def user(ws: wsserver.WebSocketServerProtocol, user_id: int) -> None:
        seen.append(("user", user_id, ws.path))
        await ws.send(repr(user_id))

    return router


@pytest.mark.anyio
async def test_router_dispatches_with_parameters() -> None:
    seen: list[Any] = []
    with anyio.fail_after(TIMEOUT):
        async with running_server(chat_router(seen)) as (_, uri):
            client = await open_client(f"{uri}/rooms/lobby?since=5")
            await in_thread(client.send, "hi")
            assert await recv(client) == "lobby:hi"
            await in_thread(client.close)
            client = await open_client(f"{uri}/users/7/")
            assert await recv(client) == "7"
            await in_thread(client.close)
    # The handler finds the query string in ws.path.
    assert seen == [("room", "lobby", "/rooms/lobby?since=5"), ("user", 7, "/users/7/")]


@pytest.mark.anyio
async def test_unknown_path_is_answered_404_during_the_handshake() -> None:
    seen: list[Any] = []
    with anyio.fail_after(TIMEOUT):
        async with running_server(chat_router(seen)) as (_, uri):
            with pytest.raises(InvalidStatus) as caught:
                await open_client(f"{uri}/nowhere")
            assert caught.value.response.status_code == 404
            # Raw: a WebSocket request gets the 404 instead of a 101, then the close.
            raw = await RawClient.connect(port_of(uri))
            await raw.stream.send(handshake_request("/users/abc"))
            await raw.read_response_head()
            body = await raw.read_until_eof()
            await raw.aclose()
    assert raw.status == 404
    assert raw.headers["content-type"].startswith("text/plain")
    assert body == b"Not Found.\n"
    assert seen == []


@pytest.mark.anyio
async def test_route_process_request_guards_its_route_only() -> None:
    def members_only(path: str, headers: Headers) -> Any:
        if headers.get("Authorization") != "Bearer ok":
            return 401, [("WWW-Authenticate", "Bearer")], b"who are you?\n"
        return None

    router = Router()
    router.add("/public", echo_handler)
    router.add("/private", echo_handler, process_request=members_only)
    with anyio.fail_after(TIMEOUT):
        async with running_server(router) as (_, uri):
            with pytest.raises(InvalidStatus) as caught:
                await open_client(f"{uri}/private")
            assert caught.value.response.status_code == 401
            client = await open_client(
                f"{uri}/private", additional_headers={"Authorization": "Bearer ok"}
            )
            await in_thread(client.close)
            client = await open_client(f"{uri}/public")
            await in_thread(client.close)


@pytest.mark.anyio
async def test_server_process_request_runs_first_for_every_path() -> None:
    async def health(path: str, headers: Headers) -> Any:
        if path == "/healthz":
            return 200, [], b"OK\n"
        return None

    with anyio.fail_after(TIMEOUT):
        async with running_server(Router({"/echo": echo_handler}), process_request=health) as (
            _, uri
        ):
            port = port_of(uri)
            assert await _http_get(port, "/healthz") == (200, b"OK\n")
            assert (await _http_get(port, "/other"))[0] == 404
            # A known route without the upgrade gets the handshake's own answer.
            assert (await _http_get(port, "/echo"))[0] == 426


@pytest.mark.anyio
async def test_unknown_path_closes_with_1008_when_process_request_is_bypassed() -> None:
    class NoHooks(wsserver.WebSocketServerProtocol):
        async def process_request(self, path: str, request_headers: Headers) -> Any:
            return None  # does not call super(): the router is never asked

    with anyio.fail_after(TIMEOUT):
        async with running_server(Router({"/a": echo_handler}), create_protocol=NoHooks) as (
            _, uri
        ):
            raw = await RawClient.open(port_of(uri), "/b")
            assert await raw.recv_close() == (1008, "no route for this path")
            await raw.aclose()


# Front doors and the command line ---------------------------------------------------


def test_router_serves_on_the_asyncio_front_door() -> None:
    seen: list[Any] = []

    async def main() -> None:
        async with asyncio_serve(chat_router(seen), "127.0.0.1", 0) as server:
            port = server.sockets[0].getsockname()[1]
            async with asyncio_connect(f"ws://127.0.0.1:{port}/rooms/blue") as client:
                await client.send("x")
                assert await client.recv() == "blue:x"
            with pytest.raises(InvalidStatus) as caught:
                async with asyncio_connect(f"ws://127.0.0.1:{port}/rooms"):
                    pass
            assert caught.value.response.status_code == 404

    async def bounded() -> None:
        async with asyncio.timeout(TIMEOUT):
            await main()

    asyncio.run(bounded())
    assert seen == [("room", "blue", "/rooms/blue")]


APP = """
from wsserver import Router

router = Router()

@router.route("/shout/{word}")
async def shout(websocket, word):
    await websocket.send(word.upper())
"""


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_cli_serves_a_router(tmp_path: Path, backend: str) -> None:
    (tmp_path / "myapp.py").write_text(APP)
    process = subprocess.Popen(
        [sys.executable, "-m", "wsserver", "myapp:router", "--backend", backend, "--port", "0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert process.stdout is not None
    # A guard, not a measurement: a server that never starts fails the test.
    watchdog = threading.Timer(30, process.kill)
    watchdog.start()
    output = []
    try:
        for line in process.stdout:
            output.append(line)
            # The listening line is the first to name the address.
            if match := re.search(rb"127\.0\.0\.1:(\d+)", line):
                break
        else:
            raise AssertionError(b"".join(output).decode(errors="replace"))
        port = int(match.group(1))
        with sync_connect(f"ws://127.0.0.1:{port}/shout/hey", open_timeout=10) as client:
            assert client.recv(timeout=10) == "HEY"
        with pytest.raises(InvalidStatus) as caught:
            sync_connect(f"ws://127.0.0.1:{port}/whisper", open_timeout=10)
        assert caught.value.response.status_code == 404
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=15)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, b"".join(output) + rest


# Helpers ------------------------------------------------------------------------------


async def echo_handler(ws: wsserver.WebSocketServerProtocol) -> None:
    async for message in ws:
        await ws.send(message)


async def _http_get(port: int, path: str) -> tuple[int, bytes]:
    client = await RawClient.connect(port)
    await client.stream.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await client.read_response_head()
    body = await client.read_until_eof()
    await client.aclose()
    assert client.status is not None
    return client.status, body
