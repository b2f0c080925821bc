"""aiohttp's ``ClientSession.ws_connect`` against a wsserver echo server.

Each test runs on both server backends: under asyncio the client shares the
server's loop; under Trio it runs in a thread with its own loop. aiohttp's
client cannot send a fragmented message, nor offer no-context-takeover; the
server can still require no-context-takeover of it, which is checked.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp import WSMsgType

from wsserver.sansio.extensions.permessage_deflate import ServerPerMessageDeflateFactory

from .echo_server import (
    FRAGMENTED_BINARY,
    FRAGMENTED_TEXT,
    SERVER_CLOSE_CODE,
    SERVER_CLOSE_REASON,
    SERVER_PING_DATA,
    echo_server,
    extension_params,
    run_asyncio_client,
)

pytestmark = pytest.mark.anyio

T = TypeVar("T")

MEBIBYTE = 2**20
RECEIVE_TIMEOUT_SECONDS = 10.0


@asynccontextmanager
async def ws_connect(
    url: str, **options: Any
) -> AsyncIterator[aiohttp.ClientWebSocketResponse[bool]]:
    """Open a session (ignoring proxies from the environment) and connect."""
    if hasattr(aiohttp, "ClientWSTimeout"):  # aiohttp 3.10 and later
        options["timeout"] = aiohttp.ClientWSTimeout(
            ws_receive=RECEIVE_TIMEOUT_SECONDS, ws_close=RECEIVE_TIMEOUT_SECONDS
        )
    else:
        options["receive_timeout"] = RECEIVE_TIMEOUT_SECONDS
    async with (
        aiohttp.ClientSession(trust_env=False) as session,
        session.ws_connect(url, **options) as ws,
    ):
        yield ws


async def run(client: Callable[[], Awaitable[T]]) -> T:
    """Run the client on the server's loop (asyncio) or in a thread (Trio)."""
    return await run_asyncio_client(client)


async def exchange(url: str, messages: list[Any], **options: Any) -> list[Any]:
    """Connect, send each message and read its echo, close; return the echoes."""

    async def client() -> list[Any]:
        async with ws_connect(url, **options) as ws:
            echoes = []
            for message in messages:
                if isinstance(message, str):
                    await ws.send_str(message)
                else:
                    await ws.send_bytes(message)
                reply = await ws.receive()
                assert reply.type in (WSMsgType.TEXT, WSMsgType.BINARY), reply
                echoes.append(reply.data)
            return echoes

    return await run(client)


async def test_text_and_binary_messages_are_echoed() -> None:
    messages = ["hello", "caf\N{LATIN SMALL LETTER E WITH ACUTE} \N{SNOWMAN}", b"\x00\xff", b"b"]
    async with echo_server() as (recorder, url):
        echoes = await exchange(url + "/echo", messages)
        session = await recorder.session("/echo")
    assert echoes == messages
    assert session.messages_received == 4


async def test_empty_messages_are_echoed() -> None:
    async with echo_server() as (_, url):
        assert await exchange(url + "/echo", ["", b""]) == ["", b""]


@pytest.mark.parametrize("compress", [15, 0])
async def test_one_mebibyte_messages_are_echoed(compress: int) -> None:
    random_binary = os.urandom(MEBIBYTE)
    compressible_text = ("wsserver " * (MEBIBYTE // 9 + 1))[:MEBIBYTE]
    async with echo_server() as (_, url):
        echoes = await exchange(
            url + "/echo", [random_binary, compressible_text], compress=compress
        )
    assert echoes[0] == random_binary
    assert echoes[1] == compressible_text


async def test_fragmented_messages_from_the_server_are_reassembled() -> None:
    async def client() -> list[Any]:
        async with ws_connect(url + "/fragmented") as ws:
            return [(await ws.receive()).data, (await ws.receive()).data]

    async with echo_server() as (_, url):
        received = await run(client)
    assert received == ["".join(FRAGMENTED_TEXT), b"".join(FRAGMENTED_BINARY)]


async def test_client_ping_is_answered_with_a_pong() -> None:
    async def client() -> tuple[WSMsgType, bytes]:
        async with ws_connect(url + "/echo", autoping=False) as ws:
            await ws.ping(b"client ping")
            reply = await ws.receive()
            return reply.type, reply.data

    async with echo_server() as (_, url):
        assert await run(client) == (WSMsgType.PONG, b"client ping")


@pytest.mark.parametrize("autoping", [True, False])
async def test_server_ping_is_answered_by_the_client(autoping: bool) -> None:
    async def client() -> list[Any]:
        async with ws_connect(url + "/ping", autoping=autoping) as ws:
            received = []
            if not autoping:
                ping = await ws.receive()
                assert (ping.type, ping.data) == (WSMsgType.PING, SERVER_PING_DATA)
                await ws.pong(ping.data)
            received.append((await ws.receive()).data)
            await ws.send_str("after ping")
            received.append((await ws.receive()).data)
            return received

    async with echo_server() as (recorder, url):
        received = await run(client)
        session = await recorder.session("/ping")
    assert received == ["pong received", "after ping"]
    assert session.pong_received


async def _negotiate(url: str, **options: Any) -> tuple[int, bool]:
    """Connect, echo a compressible message; return aiohttp's (compress, client_notakeover)."""
    message = "compress me " * 1000

    async def client() -> tuple[int, bool]:
        async with ws_connect(url, **options) as ws:
            await ws.send_str(message)
            assert (await ws.receive()).data == message
            await ws.send_str(message)  # a second message, after any context reset
            assert (await ws.receive()).data == message
            return ws.compress, ws.client_notakeover

    return await run(client)


# aiohttp's compress=N offers server_max_window_bits=N when N < 15; the
# server's default permessage-deflate uses 12-bit windows both ways.
@pytest.mark.parametrize(
    ("compress", "offer", "response"),
    [
        (
            15,
            {"permessage-deflate", "client_max_window_bits"},
            {"permessage-deflate", "server_max_window_bits=12", "client_max_window_bits=12"},
        ),
        (
            10,
            {"permessage-deflate", "client_max_window_bits", "server_max_window_bits=10"},
            {"permessage-deflate", "server_max_window_bits=10", "client_max_window_bits=12"},
        ),
        (
            9,
            {"permessage-deflate", "client_max_window_bits", "server_max_window_bits=9"},
            {"permessage-deflate", "server_max_window_bits=9", "client_max_window_bits=12"},
        ),
    ],
)
async def test_permessage_deflate_offers_are_negotiated(
    compress: int, offer: set[str], response: set[str]
) -> None:
    async with echo_server() as (recorder, url):
        window_bits, notakeover = await _negotiate(url + "/echo", compress=compress)
        session = await recorder.session("/echo")
    assert extension_params(session.request_headers.get("Sec-WebSocket-Extensions")) == offer
    assert extension_params(session.response_headers.get("Sec-WebSocket-Extensions")) == response
    assert (window_bits, notakeover) == (12, False)


@pytest.mark.parametrize(
    ("factory", "response", "client_view"),
    [
        (
            ServerPerMessageDeflateFactory(
                server_no_context_takeover=True, client_no_context_takeover=True
            ),
            {"permessage-deflate", "server_no_context_takeover", "client_no_context_takeover"},
            (15, True),
        ),
        (
            ServerPerMessageDeflateFactory(client_max_window_bits=9),
            {"permessage-deflate", "client_max_window_bits=9"},
            (9, False),
        ),
    ],
    ids=["no-context-takeover", "client_max_window_bits=9"],
)
async def test_server_deflate_settings_are_honoured_by_the_client(
    factory: ServerPerMessageDeflateFactory, response: set[str], client_view: tuple[int, bool]
) -> None:
    async with echo_server(extensions=[factory]) as (recorder, url):
        negotiated = await _negotiate(url + "/echo", compress=15)
        session = await recorder.session("/echo")
    assert extension_params(session.response_headers.get("Sec-WebSocket-Extensions")) == response
    assert negotiated == client_view


async def test_no_compression_when_the_client_does_not_offer_it() -> None:
    async with echo_server() as (recorder, url):
        assert await _negotiate(url + "/echo", compress=0) == (0, False)
        session = await recorder.session("/echo")
    assert "Sec-WebSocket-Extensions" not in session.request_headers
    assert "Sec-WebSocket-Extensions" not in session.response_headers


async def test_no_compression_when_the_server_disables_it() -> None:
    async with echo_server(compression=None) as (recorder, url):
        assert await _negotiate(url + "/echo", compress=15) == (0, False)
        session = await recorder.session("/echo")
    assert "Sec-WebSocket-Extensions" in session.request_headers
    assert "Sec-WebSocket-Extensions" not in session.response_headers


@pytest.mark.parametrize(
    ("offered", "expected"),
    [(("other", "chat.v1"), "chat.v1"), (("chat.v1", "chat.v2"), "chat.v2"), (("other",), None)],
)
async def test_subprotocol_is_negotiated(offered: tuple[str, ...], expected: str | None) -> None:
    async def client() -> str | None:
        async with ws_connect(url + "/echo", protocols=offered) as ws:
            await ws.send_str("hi")
            await ws.receive()
            return ws.protocol

    async with echo_server() as (recorder, url):
        subprotocol = await run(client)
        session = await recorder.session("/echo")
    assert subprotocol == expected
    assert session.subprotocol == expected


async def test_handshake_rejected_by_process_request_gets_403() -> None:
    async def client() -> int:
        try:
            async with ws_connect(url + "/forbidden"):
                pass
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        raise AssertionError("the handshake succeeded")

    async with echo_server() as (recorder, url):
        assert await run(client) == 403
        assert recorder.sessions == []


@pytest.mark.parametrize(
    ("code", "reason"), [(1000, ""), (1000, "done"), (4000, "custom reason \N{SNOWMAN}")]
)
async def test_client_close_code_and_reason_reach_the_server(code: int, reason: str) -> None:
    async def client() -> int | None:
        async with ws_connect(url + "/echo") as ws:
            await ws.send_str("bye soon")
            await ws.receive()
            await ws.close(code=code, message=reason.encode())
            return ws.close_code

    async with echo_server() as (recorder, url):
        echoed_code = await run(client)
        session = await recorder.session("/echo")
    assert (session.close_code, session.close_reason) == (code, reason)
    assert echoed_code == code


async def test_server_close_code_and_reason_reach_the_client() -> None:
    async def client() -> tuple[WSMsgType, Any, Any, int | None]:
        async with ws_connect(url + "/close") as ws:
            message = await ws.receive()
            return message.type, message.data, message.extra, ws.close_code

    async with echo_server() as (recorder, url):
        received = await run(client)
        session = await recorder.session("/close")
    assert received == (WSMsgType.CLOSE, SERVER_CLOSE_CODE, SERVER_CLOSE_REASON, SERVER_CLOSE_CODE)
    # aiohttp answers any close frame with 1000 rather than echoing the code.
    assert session.close_code == 1000
