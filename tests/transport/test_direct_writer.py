"""direct_writer(): the synchronous writer of a plain accepted stream, on both loops."""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable

import anyio
import pytest
import trustme
from anyio.lowlevel import checkpoint
from anyio.streams.buffered import BufferedByteStream
from anyio.streams.tls import TLSStream

from wsserver._transport import direct_half_closer, direct_writer

from .support import (
    MEBIBYTE,
    TIMEOUT_SECONDS,
    accepted_pair,
    receive_exactly,
    receive_until_eof,
    reset_on_close,
)

pytestmark = pytest.mark.anyio

CHUNK = os.urandom(2**16)


def writer_of(stream: anyio.abc.ByteStream) -> Callable[[memoryview], int]:
    write = direct_writer(stream)
    assert write is not None
    return write


def write_until_full(write: Callable[[memoryview], int]) -> bytes:
    """Write CHUNK until the writer takes nothing; return exactly what it took."""
    taken = bytearray()
    while len(taken) < 256 * MEBIBYTE:  # far beyond any kernel buffer: a bug otherwise
        written = write(memoryview(CHUNK))
        if written == 0:
            return bytes(taken)
        assert 0 < written <= len(CHUNK)
        taken += CHUNK[:written]
    pytest.fail("the writer never reported a full transport")


async def test_bytes_written_directly_arrive_in_order_with_sends() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with accepted_pair() as (server, client):
            write = writer_of(server)
            assert write(memoryview(b"first, ")) == 7
            await server.send(b"then a send, ")
            assert write(memoryview(b"then direct")) == 11
            assert write(memoryview(b"")) == 0
            await server.send_eof()
            assert await receive_until_eof(client) == b"first, then a send, then direct"


async def test_writer_takes_nothing_once_a_non_reading_peer_fills_the_buffers() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS * 3):
        async with accepted_pair() as (server, client):
            write = writer_of(server)
            taken = write_until_full(write)
            assert taken  # the kernel took something before it was full
            assert write(memoryview(CHUNK)) == 0  # still full: the client reads nothing
            async with anyio.create_task_group() as task_group:

                async def finish() -> None:
                    await server.send(b"end")  # waits for room, like any send
                    await server.send_eof()

                task_group.start_soon(finish)
                received = await receive_until_eof(client)
            # Every byte the writer said it took arrived, and nothing else.
            assert received == taken + b"end"


async def test_writer_hands_over_the_bytes_as_they_were_when_called() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS * 3):
        async with accepted_pair() as (server, client):
            write = writer_of(server)
            # One buffer, refilled after every write, as a caller reusing its
            # memory would: once the kernel is full, asyncio's transport keeps
            # what it takes, and must keep it as it was.
            reused = bytearray(1000)
            expected = bytearray()
            for index in range(256 * MEBIBYTE // len(reused)):
                reused[:] = bytes([index % 251]) * len(reused)
                written = write(memoryview(reused))
                expected += reused[:written]
                if written == 0:
                    break
            else:
                pytest.fail("the writer never reported a full transport")
            await server.send_eof()
            assert await receive_until_eof(client) == expected


async def test_writer_breaks_once_the_peer_reset_the_connection() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with accepted_pair() as (server, client):
            write = writer_of(server)
            reset_on_close(client)
            await client.aclose()
            with pytest.raises(anyio.BrokenResourceError):
                await server.receive()  # the server's side has seen the reset
            with pytest.raises(anyio.BrokenResourceError):
                write(memoryview(b"anyone there?"))


async def test_writer_breaks_soon_after_the_peer_closed() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with accepted_pair() as (server, client):
            write = writer_of(server)
            await client.aclose()
            with pytest.raises(anyio.EndOfStream):
                await server.receive()
            # The first bytes may still be taken: the peer's kernel answers
            # them with a reset, which the next writes see.
            with pytest.raises(anyio.BrokenResourceError):
                for _ in range(100):
                    write(memoryview(b"hello?"))
                    await checkpoint()  # lets asyncio notice the reset


async def test_writer_of_a_closed_stream_raises_closed_resource_error() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with accepted_pair() as (server, _client):
            write = writer_of(server)
            await server.aclose()
            with pytest.raises(anyio.ClosedResourceError):
                write(memoryview(b"too late"))


async def test_tls_and_unknown_streams_have_no_direct_writer() -> None:
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)

    with anyio.fail_after(TIMEOUT_SECONDS):
        async with accepted_pair() as (server, client):
            tls_client: list[TLSStream] = []

            async def client_handshake() -> None:
                tls_client.append(
                    await TLSStream.wrap(client, hostname="localhost", ssl_context=client_context)
                )

            async with anyio.create_task_group() as task_group:
                task_group.start_soon(client_handshake)
                tls_server = await TLSStream.wrap(
                    server, server_side=True, ssl_context=server_context,
                    standard_compatible=False,
                )
            assert direct_writer(tls_server) is None
            # A wrapper the transport does not know may buffer: no writer either.
            assert direct_writer(BufferedByteStream(server)) is None
            await tls_server.send(b"still works")
            assert await receive_exactly(tls_client[0], 11) == b"still works"

async def test_anyio_stock_stream_on_asyncio_has_no_direct_writer(anyio_backend: str) -> None:
    """anyio's own asyncio stream buffers in its transport: writing past it would reorder."""
    if anyio_backend != "asyncio":
        pytest.skip("on Trio anyio's stream is the plain socket stream the listener yields")
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with accepted_pair() as (_server, client):
            assert direct_writer(client) is None


async def test_direct_half_close_follows_the_bytes_written_before_it() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with accepted_pair() as (server, client):
            write = writer_of(server)
            half_close = direct_half_closer(server)
            assert half_close is not None
            assert write(memoryview(b"all of this, ")) == 13
            await server.send(b"then the end")
            half_close()
            assert await receive_until_eof(client) == b"all of this, then the end"
            # The other direction still works: a half-close, not a close.
            await client.send(b"reply")
            assert await server.receive() == b"reply"


async def test_no_direct_half_close_where_there_is_no_direct_writer() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with accepted_pair() as (server, _):
            assert direct_half_closer(BufferedByteStream(server)) is None
