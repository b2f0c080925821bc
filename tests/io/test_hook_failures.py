"""A failing user hook costs one connection a 500, never the server; both backends."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

import wsserver

from ..serving import running_server
from .clients import RawClient, connect, in_thread, port_of, recv

pytestmark = pytest.mark.anyio


async def echo(websocket: Any) -> None:
    async for message in websocket:
        await websocket.send(message)


async def still_serves(uri: str) -> None:
    client = await in_thread(connect, uri)
    try:
        await in_thread(client.send, "still there?")
        assert await recv(client) == "still there?"
    finally:
        await in_thread(client.close)


def raising_process_request(path: str, headers: wsserver.Headers) -> None:
    raise RuntimeError("bug in process_request")


def raising_extra_headers(path: str, headers: wsserver.Headers) -> dict[str, str]:
    if path == "/boom":
        raise RuntimeError("bug in extra_headers")
    return {}


def invalid_status(path: str, headers: wsserver.Headers) -> tuple[int, list[Any], bytes] | None:
    return (999, [], b"") if path == "/boom" else None


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"process_request": raising_process_request}, id="process_request-raises"),
        pytest.param({"extra_headers": raising_extra_headers}, id="extra_headers-raises"),
        pytest.param({"process_request": invalid_status}, id="invalid-status"),
    ],
)
async def test_failing_handshake_hook_answers_500_and_server_keeps_serving(
    options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wsserver.server")
    failing = options.get("process_request") is raising_process_request
    with anyio.fail_after(10):
        async with running_server(echo, **options) as (server, uri):
            client = await RawClient.connect(port_of(uri))
            await client.stream.send(
                b"GET /boom HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n"
            )
            await client.read_response_head()
            assert client.status == 500
            await client.aclose()
            if not failing:
                await still_serves(uri + "/")
            assert server.is_serving()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info is not None  # the traceback is in the log


async def test_client_that_leaves_while_process_request_runs_does_not_disturb_server() -> None:
    entered = anyio.Event()
    release = anyio.Event()

    async def slow(path: str, headers: wsserver.Headers) -> None:
        entered.set()
        await release.wait()

    with anyio.fail_after(10):
        async with running_server(echo, process_request=slow) as (server, uri):
            client = await RawClient.connect(port_of(uri))
            await client.stream.send(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            await entered.wait()
            await client.aclose()
            release.set()
            with anyio.fail_after(5):
                while server.websockets:
                    await anyio.sleep(0.01)
            assert server.is_serving()
