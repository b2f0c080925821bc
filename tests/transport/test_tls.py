"""TLS as the shared layer does it: anyio's TLSStream over the accepted stream, both loops."""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.tls import TLSAttribute, TLSStream

from wsserver._transport import open_listeners

from .support import BACKLOG, HOST, TIMEOUT_SECONDS, port_of, receive_exactly, serving

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_context(certificate_authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("localhost").configure_cert(context)
    context.set_alpn_protocols(["http/1.1"])
    return context


@pytest.fixture
def client_context(certificate_authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    certificate_authority.configure_trust(context)
    context.set_alpn_protocols(["http/1.1"])
    return context


def tls_handler(
    server_context: ssl.SSLContext, serve_tls: Callable[[TLSStream], Awaitable[None]]
) -> Callable[[ByteStream], Awaitable[None]]:
    """Wrap each accepted stream in TLS exactly as the shared layer does, then serve it."""

    async def handle(stream: ByteStream) -> None:
        tls_stream = await TLSStream.wrap(
            stream, server_side=True, ssl_context=server_context, standard_compatible=False
        )
        async with tls_stream:
            await serve_tls(tls_stream)

    return handle


async def tls_echo(stream: TLSStream) -> None:
    try:
        while True:
            await stream.send(await stream.receive())
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        pass


@asynccontextmanager
async def tls_server(
    server_context: ssl.SSLContext,
    serve_tls: Callable[[TLSStream], Awaitable[None]],
    unix_path: str | None = None,
) -> AsyncIterator[Callable[[ssl.SSLContext], Awaitable[ByteStream]]]:
    """Serve TLS on TCP (or on a Unix socket); yield a function that connects a client."""
    if unix_path is None:
        [listener] = await open_listeners(host=HOST, port=0, backlog=BACKLOG)
    else:
        [listener] = await open_listeners(path=unix_path, unix=True, backlog=BACKLOG)

    async def connect(client_context: ssl.SSLContext) -> ByteStream:
        if unix_path is None:
            plain: ByteStream = await anyio.connect_tcp(HOST, port_of(listener))
        else:
            plain = await anyio.connect_unix(unix_path)
        # Not standard-compatible, like the server: neither side waits for
        # the other's close_notify when it closes.
        return await TLSStream.wrap(
            plain, hostname="localhost", ssl_context=client_context, standard_compatible=False
        )

    async with serving(tls_handler(server_context, serve_tls), listener):
        yield connect


@pytest.mark.parametrize("transport", ["tcp", "unix"])
async def test_tls_handshake_echo_and_close_over_the_accepted_stream(
    transport: str, server_context: ssl.SSLContext, client_context: ssl.SSLContext,
    tmp_path: Path,
) -> None:
    unix_path = str(tmp_path / "tls.sock") if transport == "unix" else None
    payload = os.urandom(300_000)
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with tls_server(server_context, tls_echo, unix_path) as connect:
            client = await connect(client_context)
            async with client, anyio.create_task_group() as task_group:
                task_group.start_soon(client.send, payload)
                assert await receive_exactly(client, len(payload)) == payload
            # The client closed first (close_notify); the server's echo ended
            # and closed its side: a second connection is served as well.
            second = await connect(client_context)
            async with second:
                await second.send(b"again")
                assert await receive_exactly(second, 5) == b"again"


async def test_tls_attributes_reach_through_to_the_socket(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    seen: dict[str, Any] = {}

    async def record(stream: TLSStream) -> None:
        seen.update(
            standard_compatible=stream.extra(TLSAttribute.standard_compatible),
            server_side=stream.extra(TLSAttribute.server_side),
            alpn_protocol=stream.extra(TLSAttribute.alpn_protocol),
            tls_version=stream.extra(TLSAttribute.tls_version),
            remote_port=stream.extra(SocketAttribute.remote_port),
            raw_socket=stream.extra(SocketAttribute.raw_socket) is not None,
        )
        await stream.send(b"recorded")

    with anyio.fail_after(TIMEOUT_SECONDS):
        async with tls_server(server_context, record) as connect:
            client = await connect(client_context)
            async with client:
                assert await receive_exactly(client, 8) == b"recorded"
                client_port = client.extra(SocketAttribute.local_port)
    assert seen == {
        "standard_compatible": False,
        "server_side": True,
        "alpn_protocol": "http/1.1",
        "tls_version": seen["tls_version"],
        "remote_port": client_port,
        "raw_socket": True,
    }
    assert seen["tls_version"].startswith("TLS")


async def test_server_closing_tls_ends_the_clients_stream(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> None:
    async def say_goodbye(stream: TLSStream) -> None:
        await stream.send(b"goodbye")
        # Leaving tls_handler's "async with" closes the TLS stream.

    with anyio.fail_after(TIMEOUT_SECONDS):
        async with tls_server(server_context, say_goodbye) as connect:
            client = await connect(client_context)
            async with client:
                assert await receive_exactly(client, 7) == b"goodbye"
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await client.receive()


async def test_failed_handshake_raises_in_the_handler_and_drops_the_connection(
    server_context: ssl.SSLContext,
) -> None:
    failures: list[BaseException] = []
    handle = tls_handler(server_context, tls_echo)

    async def record_failure(stream: ByteStream) -> None:
        try:
            await handle(stream)
        except (ssl.SSLError, anyio.BrokenResourceError) as exc:
            failures.append(exc)

    with anyio.fail_after(TIMEOUT_SECONDS):
        async with serving(record_failure) as listener, await anyio.connect_tcp(
            HOST, port_of(listener)
        ) as client:
            await client.send(b"GET / HTTP/1.1\r\nHost: not-tls\r\n\r\n")
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                while True:
                    await client.receive()  # an alert, maybe, then the end
    assert len(failures) == 1
