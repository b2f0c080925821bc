"""TLS (wss://) and Unix domain sockets, on both backends."""

from __future__ import annotations

import functools
import os
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import trustme
from websockets.exceptions import ConnectionClosedOK as ClientConnectionClosedOK
from websockets.sync.client import unix_connect

import wsserver
from wsserver.sansio.frames import Opcode

from ..serving import running_server
from .clients import (
    CLIENT_TIMEOUT_SECONDS,
    RawClient,
    handshake_request,
    in_thread,
    open_client,
    port_of,
    recv,
)

pytestmark = pytest.mark.anyio

TIMEOUT = 10


async def echo(ws: wsserver.WebSocketServerProtocol) -> None:
    async for message in ws:
        await ws.send(message)


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_ssl(certificate_authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    # No TLS 1.3 session tickets: the websockets sync client reads in one
    # thread while it writes in another, and OpenSSL sometimes fails that
    # client's first write with "[SSL] internal error" when a ticket arrives
    # meanwhile (a client-side race, not a server issue).
    context.num_tickets = 0
    return context


@pytest.fixture
def client_ssl(certificate_authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    certificate_authority.configure_trust(context)
    return context


def wss(uri: str) -> str:
    return uri.replace("ws://", "wss://", 1)


# TLS ----------------------------------------------------------------------------------------


async def test_wss_client_exchanges_messages(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with running_server(echo, ssl=server_ssl) as (_, uri):
            client = await open_client(wss(uri) + "/secure", ssl=client_ssl, compression=None)
            await in_thread(client.send, "over TLS")
            assert await recv(client) == "over TLS"
            payload = os.urandom(2**20)
            await in_thread(client.send, payload)
            assert await recv(client) == payload
            await in_thread(client.close)


async def test_wss_closing_handshake_closes_tcp_without_waiting_for_close_timeout(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    # TLS cannot half-close: the server must close the connection outright,
    # or a client waiting for it (as RFC 6455 says it should) waits close_timeout.
    ended = anyio.Event()

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        await ws.wait_closed()
        ended.set()

    # Both sides wait close_timeout far longer than the test's TIMEOUT: a
    # closing handshake that waits for it fails the test.
    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, ssl=server_ssl, close_timeout=60) as (_, uri):
            client = await open_client(wss(uri), ssl=client_ssl, close_timeout=60)
            await in_thread(client.close)
            await ended.wait()


async def test_wss_server_close_sends_1001(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    connected = anyio.Event()

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        connected.set()
        await ws.wait_closed()

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, ssl=server_ssl) as (server, uri):
            client = await open_client(wss(uri), ssl=client_ssl)
            await connected.wait()
            await server.aclose()
            with pytest.raises(ClientConnectionClosedOK) as caught:
                await recv(client)
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1001


async def test_plaintext_client_on_tls_port_is_dropped_and_server_carries_on(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with running_server(echo, ssl=server_ssl) as (_, uri):
            plain = await RawClient.connect(port_of(uri))
            await plain.stream.send(handshake_request())
            answer = await plain.read_until_eof()
            await plain.aclose()

            client = await open_client(wss(uri), ssl=client_ssl)
            await in_thread(client.send, "fine")
            assert await recv(client) == "fine"
            await in_thread(client.close)
    assert b"101" not in answer


async def test_client_that_never_starts_tls_is_dropped_after_open_timeout(
    server_ssl: ssl.SSLContext,
) -> None:
    with anyio.fail_after(TIMEOUT):
        async with running_server(echo, ssl=server_ssl, open_timeout=0.3) as (_, uri):
            silent = await RawClient.connect(port_of(uri))
            started = anyio.current_time()
            assert await silent.read_until_eof() == b""
            elapsed = anyio.current_time() - started
            await silent.aclose()
    assert elapsed >= 0.3 * 0.8


async def open_tls_raw_client(uri: str, client_ssl: ssl.SSLContext) -> RawClient:
    """A hand-made client over TLS, past the opening handshake."""
    stream = await anyio.connect_tcp(
        "127.0.0.1", port_of(uri), ssl_context=client_ssl, tls_hostname="localhost",
        tls_standard_compatible=False,  # the server may close TCP without a close_notify
    )
    client = RawClient(stream)
    await client.handshake()
    return client


# Over TLS the keepalive waits in a task of its own (a TLS read cut short by a
# deadline could lose part of a record): the same pings and pong timeout.


async def test_wss_client_that_answers_pings_stays_connected_and_latency_is_measured(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    latencies: list[float] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        message = await ws.recv()
        latencies.append(ws.latency)
        await ws.send(message)

    with anyio.fail_after(TIMEOUT):
        async with running_server(
            handler, ssl=server_ssl, ping_interval=0.05, ping_timeout=0.5
        ) as (_, uri):
            client = await open_tls_raw_client(uri, client_ssl)
            payloads = set()
            while len(payloads) < 3:  # several ping intervals, each after a pong
                ping = await client.recv_frame()
                assert ping.opcode is Opcode.PING
                payloads.add(ping.data)
                await client.send_frame(Opcode.PONG, ping.data)
            await client.send_frame(Opcode.TEXT, b"alive")
            while (frame := await client.recv_frame()).opcode is Opcode.PING:
                await client.send_frame(Opcode.PONG, frame.data)
            await client.aclose()
    assert (frame.opcode, frame.data) == (Opcode.TEXT, b"alive")
    assert latencies and latencies[0] > 0


async def test_wss_client_that_never_answers_pings_is_closed_with_1011(
    server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    outcome: list[Any] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        try:
            await ws.recv()
        except wsserver.ConnectionClosedError as exc:
            outcome.append(exc.sent.code if exc.sent else None)

    with anyio.fail_after(TIMEOUT):
        async with running_server(
            handler, ssl=server_ssl, ping_interval=0.1, ping_timeout=0.2, close_timeout=1
        ) as (_, uri):
            client = await open_tls_raw_client(uri, client_ssl)
            ping = await client.recv_frame()
            try:
                close: Any = await client.recv_frame()
            except EOFError:
                # Over TLS the 1011 frame waits for the writer task, and the
                # drop can close the stream first (see the issue 9 note).
                close = None
            await client.aclose()
    assert ping.opcode is Opcode.PING
    if close is not None:
        assert close.opcode is Opcode.CLOSE
        assert int.from_bytes(close.data[:2], "big") == 1011
    assert outcome == [1011]


# Unix sockets ---------------------------------------------------------------------------


@pytest.fixture
def socket_path() -> Iterator[str]:
    # Short: Unix socket paths are limited to about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="wsserver-") as directory:
        yield os.path.join(directory, "ws.sock")


@asynccontextmanager
async def unix_server(handler: Any, **options: Any) -> AsyncIterator[wsserver.WebSocketServer]:
    async with anyio.create_task_group() as task_group:
        server = await task_group.start(functools.partial(wsserver.unix_serve, handler, **options))
        try:
            yield server
        finally:
            await server.aclose()


def unix_exchange(path: str, uri: str, message: str) -> Any:
    with unix_connect(path, uri, proxy=None, open_timeout=CLIENT_TIMEOUT_SECONDS) as client:
        client.send(message)
        return client.recv(CLIENT_TIMEOUT_SECONDS)


async def test_unix_serve_exchanges_messages(socket_path: str) -> None:
    seen: dict[str, Any] = {}

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        seen.update(path=ws.path, local_address=ws.local_address)
        await ws.send(await ws.recv())

    with anyio.fail_after(TIMEOUT):
        async with unix_server(handler, path=socket_path) as server:
            assert server.is_serving()
            assert [s.getsockname() for s in server.sockets] == [socket_path]
            answer = await in_thread(unix_exchange, socket_path, "ws://localhost/unix", "hi")
    assert answer == "hi"
    assert seen == {"path": "/unix", "local_address": socket_path}


async def test_unix_serve_on_an_existing_socket(socket_path: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(socket_path)
    sock.listen()
    with anyio.fail_after(TIMEOUT):
        async with unix_server(echo, sock=sock):
            answer = await in_thread(unix_exchange, socket_path, "ws://localhost/", "mine")
    assert answer == "mine"


async def test_unix_serve_with_tls(
    socket_path: str, server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    def exchange() -> Any:
        with unix_connect(
            socket_path, "wss://localhost/", ssl=client_ssl, proxy=None,
            open_timeout=CLIENT_TIMEOUT_SECONDS,
        ) as client:
            client.send("tls over unix")
            return client.recv(CLIENT_TIMEOUT_SECONDS)

    with anyio.fail_after(TIMEOUT):
        async with unix_server(echo, path=socket_path, ssl=server_ssl):
            assert await in_thread(exchange) == "tls over unix"
