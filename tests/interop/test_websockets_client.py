"""The ``websockets`` library's clients, asyncio and sync, against a wsserver echo server.

Each test runs on both server backends (the ``anyio_backend`` fixture) and
with both clients: the asyncio client runs on the server's loop under asyncio
and in a thread with its own loop under Trio; the sync client always runs in
a thread.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.sync.client import connect as sync_connect
from websockets.typing import Subprotocol

from .echo_server import (
    FRAGMENTED_BINARY,
    FRAGMENTED_TEXT,
    SERVER_CLOSE_CODE,
    SERVER_CLOSE_REASON,
    echo_server,
    extension_params,
    run_asyncio_client,
    run_in_thread,
)

pytestmark = pytest.mark.anyio

MEBIBYTE = 2**20
RECV_TIMEOUT_SECONDS = 10

# Proxies from the environment must not get between the client and 127.0.0.1.
CLIENT_OPTIONS: dict[str, Any] = {"proxy": None, "open_timeout": 10, "close_timeout": 10}


@pytest.fixture(params=["asyncio_client", "sync_client"])
def flavour(request: pytest.FixtureRequest) -> str:
    """Which of the two websockets clients a test uses."""
    return str(request.param)


async def run_client(
    flavour: str,
    async_client: Callable[[], Awaitable[Any]],
    sync_client: Callable[[], Any],
) -> Any:
    """Run the client of the given flavour; return what it returned."""
    if flavour == "asyncio_client":
        return await run_asyncio_client(async_client)
    return await run_in_thread(sync_client)


async def exchange(url: str, flavour: str, messages: list[Any], **options: Any) -> list[Any]:
    """Connect, send each message and read its echo, close; return the echoes."""

    async def async_client() -> list[Any]:
        async with async_connect(url, **CLIENT_OPTIONS, **options) as ws:
            echoes = []
            for message in messages:
                await ws.send(message)
                echoes.append(await ws.recv())
            return echoes

    def sync_client() -> list[Any]:
        with sync_connect(url, **CLIENT_OPTIONS, **options) as ws:
            echoes = []
            for message in messages:
                ws.send(message)
                echoes.append(ws.recv(timeout=RECV_TIMEOUT_SECONDS))
            return echoes

    return list(await run_client(flavour, async_client, sync_client))


async def test_text_and_binary_messages_are_echoed(flavour: str) -> None:
    messages = ["hello", "caf\N{LATIN SMALL LETTER E WITH ACUTE} \N{SNOWMAN}", b"\x00\xff", b"b"]
    async with echo_server() as (recorder, url):
        echoes = await exchange(url + "/echo", flavour, messages)
        session = await recorder.session("/echo")
    assert echoes == messages
    assert [type(echo) for echo in echoes] == [str, str, bytes, bytes]
    assert session.messages_received == 4


async def test_empty_messages_are_echoed(flavour: str) -> None:
    async with echo_server() as (_, url):
        echoes = await exchange(url + "/echo", flavour, ["", b""])
    assert echoes == ["", b""]


@pytest.mark.parametrize("compression", ["deflate", None])
async def test_one_mebibyte_messages_are_echoed(flavour: str, compression: str | None) -> None:
    random_binary = os.urandom(MEBIBYTE)
    compressible_text = ("wsserver " * (MEBIBYTE // 9 + 1))[:MEBIBYTE]
    async with echo_server() as (_, url):
        # websockets caps a compressed frame at max_size before inflating it, and
        # random bytes grow a little when deflated: leave the client room.
        echoes = await exchange(
            url + "/echo", flavour, [random_binary, compressible_text],
            compression=compression, max_size=2 * MEBIBYTE,
        )
    assert echoes[0] == random_binary
    assert echoes[1] == compressible_text


async def test_fragmented_messages_from_the_client_are_reassembled(flavour: str) -> None:
    async with echo_server() as (_, url):
        echoes = await exchange(
            url + "/echo", flavour, [list(FRAGMENTED_TEXT), list(FRAGMENTED_BINARY)]
        )
    assert echoes == ["".join(FRAGMENTED_TEXT), b"".join(FRAGMENTED_BINARY)]


async def test_fragmented_messages_from_the_server_are_reassembled(flavour: str) -> None:
    async def async_client() -> list[Any]:
        async with async_connect(url + "/fragmented", **CLIENT_OPTIONS) as ws:
            return [await ws.recv(), await ws.recv()]

    def sync_client() -> list[Any]:
        with sync_connect(url + "/fragmented", **CLIENT_OPTIONS) as ws:
            return [ws.recv(timeout=RECV_TIMEOUT_SECONDS), ws.recv(timeout=RECV_TIMEOUT_SECONDS)]

    async with echo_server() as (_, url):
        received = await run_client(flavour, async_client, sync_client)
    assert received == ["".join(FRAGMENTED_TEXT), b"".join(FRAGMENTED_BINARY)]


async def test_client_ping_is_answered_with_a_pong(flavour: str) -> None:
    async def async_client() -> bool:
        async with async_connect(url + "/echo", **CLIENT_OPTIONS) as ws:
            waiter = await ws.ping(b"client ping")
            await waiter
            return True

    def sync_client() -> bool:
        with sync_connect(url + "/echo", **CLIENT_OPTIONS) as ws:
            return bool(ws.ping(b"client ping").wait(RECV_TIMEOUT_SECONDS))

    async with echo_server() as (_, url):
        assert await run_client(flavour, async_client, sync_client)


async def test_server_ping_is_answered_by_the_client(flavour: str) -> None:
    async with echo_server() as (recorder, url):
        echoes = await _receive_then_exchange(url + "/ping", flavour, ["after ping"])
        session = await recorder.session("/ping")
    assert echoes == ["pong received", "after ping"]
    assert session.pong_received


async def _receive_then_exchange(url: str, flavour: str, messages: list[Any]) -> list[Any]:
    """Receive one message first, then exchange ``messages``; return all received."""

    async def async_client() -> list[Any]:
        async with async_connect(url, **CLIENT_OPTIONS) as ws:
            received = [await ws.recv()]
            for message in messages:
                await ws.send(message)
                received.append(await ws.recv())
            return received

    def sync_client() -> list[Any]:
        with sync_connect(url, **CLIENT_OPTIONS) as ws:
            received = [ws.recv(timeout=RECV_TIMEOUT_SECONDS)]
            for message in messages:
                ws.send(message)
                received.append(ws.recv(timeout=RECV_TIMEOUT_SECONDS))
            return received

    return list(await run_client(flavour, async_client, sync_client))


async def _negotiated_extensions(
    url: str, flavour: str, **options: Any
) -> tuple[str | None, str | None, str]:
    """Connect, echo a compressible message; return (offer, response header, echo)."""
    message = "compress me " * 1000

    async def async_client() -> tuple[str | None, str | None, str]:
        async with async_connect(url, **CLIENT_OPTIONS, **options) as ws:
            await ws.send(message)
            echo = await ws.recv()
            assert ws.request is not None and ws.response is not None
            return (
                ws.request.headers.get("Sec-WebSocket-Extensions"),
                ws.response.headers.get("Sec-WebSocket-Extensions"),
                str(echo),
            )

    def sync_client() -> tuple[str | None, str | None, str]:
        with sync_connect(url, **CLIENT_OPTIONS, **options) as ws:
            ws.send(message)
            echo = ws.recv(timeout=RECV_TIMEOUT_SECONDS)
            assert ws.request is not None and ws.response is not None
            return (
                ws.request.headers.get("Sec-WebSocket-Extensions"),
                ws.response.headers.get("Sec-WebSocket-Extensions"),
                str(echo),
            )

    offer, response, echo = await run_client(flavour, async_client, sync_client)
    assert echo == message
    return offer, response, echo


# The server's default permessage-deflate uses 12-bit windows both ways.
DEFLATE_OFFERS = {
    "default-offer": (
        None,
        {"permessage-deflate", "server_max_window_bits=12", "client_max_window_bits=12"},
    ),
    "client_max_window_bits=10": (
        ClientPerMessageDeflateFactory(client_max_window_bits=10),
        {"permessage-deflate", "server_max_window_bits=12", "client_max_window_bits=10"},
    ),
    "server_max_window_bits=10": (
        ClientPerMessageDeflateFactory(server_max_window_bits=10),
        {"permessage-deflate", "server_max_window_bits=10", "client_max_window_bits=12"},
    ),
    "no-context-takeover": (
        ClientPerMessageDeflateFactory(
            server_no_context_takeover=True, client_no_context_takeover=True
        ),
        {
            "permessage-deflate", "server_no_context_takeover", "client_no_context_takeover",
            "server_max_window_bits=12", "client_max_window_bits=12",
        },
    ),
    "no-client_max_window_bits": (
        ClientPerMessageDeflateFactory(client_max_window_bits=None),
        {"permessage-deflate", "server_max_window_bits=12"},
    ),
}


@pytest.mark.parametrize("offer_name", list(DEFLATE_OFFERS))
async def test_permessage_deflate_offers_are_negotiated(flavour: str, offer_name: str) -> None:
    factory, expected = DEFLATE_OFFERS[offer_name]
    options: dict[str, Any] = {} if factory is None else {
        "compression": None, "extensions": [factory]
    }
    async with echo_server() as (recorder, url):
        offer, response, _ = await _negotiated_extensions(url + "/echo", flavour, **options)
        session = await recorder.session("/echo")
    assert extension_params(response) == expected
    assert session.response_headers.get("Sec-WebSocket-Extensions") == response
    assert session.request_headers.get("Sec-WebSocket-Extensions") == offer


async def test_no_compression_when_the_client_does_not_offer_it(flavour: str) -> None:
    async with echo_server() as (_, url):
        offer, response, _ = await _negotiated_extensions(
            url + "/echo", flavour, compression=None
        )
    assert offer is None
    assert response is None


async def test_no_compression_when_the_server_disables_it(flavour: str) -> None:
    async with echo_server(compression=None) as (_, url):
        offer, response, _ = await _negotiated_extensions(url + "/echo", flavour)
    assert extension_params(offer) == {"permessage-deflate", "client_max_window_bits"}
    assert response is None


@pytest.mark.parametrize(
    ("offered", "expected"),
    [(["other", "chat.v1"], "chat.v1"), (["chat.v1", "chat.v2"], "chat.v2"), (["other"], None)],
)
async def test_subprotocol_is_negotiated(
    flavour: str, offered: list[str], expected: str | None
) -> None:
    subprotocols = [Subprotocol(name) for name in offered]

    async def async_client() -> str | None:
        async with async_connect(url + "/echo", subprotocols=subprotocols, **CLIENT_OPTIONS) as ws:
            await ws.send("hi")
            await ws.recv()
            return ws.subprotocol

    def sync_client() -> str | None:
        with sync_connect(url + "/echo", subprotocols=subprotocols, **CLIENT_OPTIONS) as ws:
            ws.send("hi")
            ws.recv(timeout=RECV_TIMEOUT_SECONDS)
            subprotocol: str | None = ws.subprotocol
            return subprotocol

    async with echo_server() as (recorder, url):
        subprotocol = await run_client(flavour, async_client, sync_client)
        session = await recorder.session("/echo")
    assert subprotocol == expected
    assert session.subprotocol == expected


async def test_handshake_rejected_by_process_request_gets_403(flavour: str) -> None:
    async def async_client() -> tuple[int, bytes]:
        try:
            async with async_connect(url + "/forbidden", **CLIENT_OPTIONS):
                pass
        except InvalidStatus as exc:
            return exc.response.status_code, bytes(exc.response.body or b"")
        raise AssertionError("the handshake succeeded")

    def sync_client() -> tuple[int, bytes]:
        try:
            with sync_connect(url + "/forbidden", **CLIENT_OPTIONS):
                pass
        except InvalidStatus as exc:
            return exc.response.status_code, bytes(exc.response.body or b"")
        raise AssertionError("the handshake succeeded")

    async with echo_server() as (recorder, url):
        status, body = await run_client(flavour, async_client, sync_client)
        assert recorder.sessions == []
    assert (status, body) == (403, b"Forbidden.\n")


@pytest.mark.parametrize(
    ("code", "reason"), [(1000, ""), (1000, "done"), (4000, "custom reason \N{SNOWMAN}")]
)
async def test_client_close_code_and_reason_reach_the_server(
    flavour: str, code: int, reason: str
) -> None:
    async def async_client() -> None:
        async with async_connect(url + "/echo", **CLIENT_OPTIONS) as ws:
            await ws.send("bye soon")
            await ws.recv()
            await ws.close(code, reason)

    def sync_client() -> None:
        with sync_connect(url + "/echo", **CLIENT_OPTIONS) as ws:
            ws.send("bye soon")
            ws.recv(timeout=RECV_TIMEOUT_SECONDS)
            ws.close(code, reason)

    async with echo_server() as (recorder, url):
        await run_client(flavour, async_client, sync_client)
        session = await recorder.session("/echo")
    assert (session.close_code, session.close_reason) == (code, reason)


async def test_server_close_code_and_reason_reach_the_client(flavour: str) -> None:
    async def async_client() -> tuple[int, str]:
        async with async_connect(url + "/close", **CLIENT_OPTIONS) as ws:
            try:
                await ws.recv()
            except ConnectionClosed as exc:
                assert exc.rcvd is not None
                return exc.rcvd.code, exc.rcvd.reason
        raise AssertionError("the connection did not close")

    def sync_client() -> tuple[int, str]:
        with sync_connect(url + "/close", **CLIENT_OPTIONS) as ws:
            try:
                ws.recv(timeout=RECV_TIMEOUT_SECONDS)
            except ConnectionClosed as exc:
                assert exc.rcvd is not None
                return exc.rcvd.code, exc.rcvd.reason
        raise AssertionError("the connection did not close")

    async with echo_server() as (recorder, url):
        received = await run_client(flavour, async_client, sync_client)
        session = await recorder.session("/close")
    assert received == (SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)
    # The client echoes the server's close frame, which the server records.
    assert session.close_code == SERVER_CLOSE_CODE
