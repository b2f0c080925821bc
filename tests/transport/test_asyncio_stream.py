"""The lean asyncio byte stream's own behaviour, over real sockets on 127.0.0.1.

These tests are asyncio-specific: the class under test exists only because
anyio's stock asyncio stream is slow. Clients are anyio's stock streams or
plain sockets, so the other end is never the code under test.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import ByteStream, SocketAttribute
from anyio.lowlevel import checkpoint

from wsserver._transport._asyncio_stream import (
    MAX_CALLS_WITHOUT_YIELD,
    AsyncioByteStream,
    wrap_accepted_socket,
)

from .support import (
    HOST,
    MEBIBYTE,
    TIMEOUT_SECONDS,
    receive_exactly,
    receive_until_eof,
    reset_on_close,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def connected_pair(
    *, read_high_water_bytes: int = 2**18, write_high_water_bytes: int = 2**16
) -> AsyncIterator[tuple[AsyncioByteStream, ByteStream]]:
    """Yield (a stream under test over an accepted socket, the client's anyio stream)."""
    with socket.socket() as listening:
        listening.bind((HOST, 0))
        listening.listen()
        client = await anyio.connect_tcp(HOST, listening.getsockname()[1])
        accepted, _ = listening.accept()  # the kernel completed the handshake already
        accepted.setblocking(False)
        server = await wrap_accepted_socket(
            accepted,
            read_high_water_bytes=read_high_water_bytes,
            write_high_water_bytes=write_high_water_bytes,
        )
    async with client, server:
        yield server, client


async def wait_until_buffered(stream: AsyncioByteStream, size: int) -> None:
    """Let the loop run until ``size`` received bytes wait in the stream."""
    while stream.buffered_bytes < size:
        await checkpoint()


async def wait_until_broken(stream: AsyncioByteStream) -> None:
    """Let the loop run until the stream has seen its connection fail."""
    while True:
        try:
            stream.write_nowait(memoryview(b""))
        except anyio.BrokenResourceError:
            return
        await checkpoint()


async def send_until_blocked(stream: ByteStream, chunk: bytes) -> int:
    """Send ``chunk`` until a send has to wait (the peer reads nothing); cancel it.

    Returns:
        The bytes of the sends that completed.
    """
    sent = 0

    async def keep_sending() -> None:
        nonlocal sent
        while True:
            await stream.send(chunk)
            sent += len(chunk)

    async with anyio.create_task_group() as task_group:
        task_group.start_soon(keep_sending)
        await anyio.wait_all_tasks_blocked()
        task_group.cancel_scope.cancel()
    return sent


# Data transfer ------------------------------------------------------------------------------


async def test_large_transfers_both_ways_arrive_intact() -> None:
    payload = os.urandom(4 * MEBIBYTE)

    async def echo(server: AsyncioByteStream) -> None:
        try:
            while True:
                await server.send(await server.receive())
        except anyio.EndOfStream:
            await server.send_eof()

    async def send_all_then_eof(client: ByteStream) -> None:
        for start in range(0, len(payload), 100_000):
            await client.send(payload[start : start + 100_000])
        await client.send_eof()

    with anyio.fail_after(TIMEOUT_SECONDS * 3):
        async with connected_pair() as (server, client), anyio.create_task_group() as tasks:
            tasks.start_soon(echo, server)
            tasks.start_soon(send_all_then_eof, client)
            echoed = await receive_until_eof(client)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()


async def test_large_send_from_server_arrives_intact() -> None:
    payload = os.urandom(3 * MEBIBYTE)

    async def send_then_eof(server: AsyncioByteStream) -> None:
        await server.send(payload)
        await server.send(payload[:1000])
        await server.send_eof()

    with anyio.fail_after(TIMEOUT_SECONDS * 3):
        async with (
            connected_pair(write_high_water_bytes=2**14) as (server, client),
            anyio.create_task_group() as task_group,
        ):
            task_group.start_soon(send_then_eof, server)
            received = await receive_until_eof(client)
    assert received == payload + payload[:1000]


async def test_receive_respects_max_bytes() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with connected_pair() as (server, client):
            await client.send(b"abcdefghij")
            data = bytearray()
            while len(data) < 10:
                chunk = await server.receive(3)
                assert 1 <= len(chunk) <= 3
                data += chunk
            assert data == b"abcdefghij"
            with pytest.raises(ValueError, match="max_bytes"):
                await server.receive(0)


async def test_tcp_extra_attributes() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with connected_pair() as (server, client):
            port = server.extra(SocketAttribute.local_port)
            assert server.extra(SocketAttribute.family) == socket.AF_INET
            assert server.extra(SocketAttribute.local_address) == (HOST, port)
            assert server.extra(SocketAttribute.remote_address) == client.extra(
                SocketAttribute.local_address
            )
            assert server.extra(SocketAttribute.remote_port) == client.extra(
                SocketAttribute.local_port
            )
            assert client.extra(SocketAttribute.remote_port) == port
            assert server.extra(SocketAttribute.raw_socket).fileno() >= 0


# End of stream, reset, close ----------------------------------------------------------------


async def test_receive_raises_end_of_stream_after_peer_eof() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with connected_pair() as (server, client):
            await client.send(b"last words")
            await client.send_eof()
            assert await receive_until_eof(server) == b"last words"
            with pytest.raises(anyio.EndOfStream):
                await server.receive()
            # The peer only half-closed: the other direction still works.
            await server.send(b"reply")
            assert await receive_exactly(client, 5) == b"reply"


async def test_send_eof_half_closes_the_write_side() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with connected_pair() as (server, client):
            await server.send(b"bye")
            await server.send_eof()
            await server.send_eof()  # again: nothing happens
            assert await receive_until_eof(client) == b"bye"
            with pytest.raises(anyio.ClosedResourceError):
                await server.send(b"too late")
            await client.send(b"still listening?")
            assert await receive_exactly(server, 16) == b"still listening?"


async def test_peer_reset_breaks_the_stream() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with connected_pair() as (server, client):
            reset_on_close(client)
            await client.aclose()
            with pytest.raises(anyio.BrokenResourceError) as caught:
                await server.receive()
            assert isinstance(caught.value.__cause__, ConnectionResetError)
            with pytest.raises(anyio.BrokenResourceError):
                await server.send(b"anyone there?")


async def test_data_received_before_a_reset_is_still_delivered() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with connected_pair() as (server, client):
            await client.send(b"before the reset")
            await wait_until_buffered(server, 16)
            reset_on_close(client)
            await client.aclose()
            await wait_until_broken(server)
            assert await server.receive() == b"before the reset"
            with pytest.raises(anyio.BrokenResourceError):
                await server.receive()


async def test_aclose_is_idempotent_and_closes_both_directions() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with connected_pair() as (server, client):
            await client.send(b"unread")
            await server.aclose()
            await server.aclose()
            with pytest.raises(anyio.ClosedResourceError):
                await server.receive()
            with pytest.raises(anyio.ClosedResourceError):
                await server.send(b"x")
            with pytest.raises(anyio.ClosedResourceError):
                await server.send_eof()
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await client.receive()


async def test_aclose_flushes_queued_bytes() -> None:
    payload = os.urandom(MEBIBYTE)

    async def send_and_close(server: AsyncioByteStream) -> None:
        await server.send(payload)
        await server.aclose()

    with anyio.fail_after(TIMEOUT_SECONDS):
        async with (
            connected_pair() as (server, client),
            anyio.create_task_group() as task_group,
        ):
            task_group.start_soon(send_and_close, server)
            assert await receive_until_eof(client) == payload


async def test_aclose_wakes_blocked_receive_and_send() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with connected_pair(write_high_water_bytes=2**14) as (server, _client):
            outcomes: list[type[BaseException]] = []

            async def receive_until_closed() -> None:
                with pytest.raises(anyio.ClosedResourceError):
                    await server.receive()
                outcomes.append(anyio.ClosedResourceError)

            async def send_until_closed() -> None:
                with pytest.raises(anyio.ClosedResourceError):
                    while True:
                        await server.send(b"x" * 2**16)
                outcomes.append(anyio.ClosedResourceError)

            async with anyio.create_task_group() as task_group:
                task_group.start_soon(receive_until_closed)
                task_group.start_soon(send_until_closed)
                await anyio.wait_all_tasks_blocked()  # the client reads nothing
                with anyio.CancelScope() as scope:
                    scope.cancel()  # the unread bytes could never flush: abort
                    await server.aclose()
            assert outcomes == [anyio.ClosedResourceError] * 2


async def test_aclose_cancelled_while_flushing_aborts_the_connection() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with connected_pair(write_high_water_bytes=2**14) as (server, client):
            await send_until_blocked(server, b"x" * 2**16)
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(server.aclose)
                await anyio.wait_all_tasks_blocked()  # aclose() waits for the flush
                task_group.cancel_scope.cancel()
            with pytest.raises(anyio.ClosedResourceError):
                await server.receive()
            # The abort reaches the peer: reading ends instead of hanging.
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                while True:
                    await client.receive()


async def test_concurrent_receives_are_refused() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with (
            connected_pair() as (server, client),
            anyio.create_task_group() as task_group,
        ):
            task_group.start_soon(server.receive)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(anyio.BusyResourceError):
                await server.receive()
            await client.send(b"x")


# Cancellation -------------------------------------------------------------------------------


async def test_cancelled_receive_loses_no_data() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with connected_pair() as (server, client):
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(server.receive)
                await anyio.wait_all_tasks_blocked()
                task_group.cancel_scope.cancel()
            await client.send(b"arrived later")
            assert await receive_exactly(server, 13) == b"arrived later"


async def test_receive_is_a_checkpoint_even_with_buffered_data() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with connected_pair() as (server, client):
            await client.send(b"kept")
            await wait_until_buffered(server, 4)
            with anyio.CancelScope() as scope:
                scope.cancel()
                await server.receive()
                pytest.fail("receive() did not raise in a cancelled scope")
            assert scope.cancelled_caught
            assert await server.receive() == b"kept"


async def test_send_is_a_checkpoint_and_writes_nothing_when_cancelled() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with connected_pair() as (server, client):
            with anyio.CancelScope() as scope:
                scope.cancel()
                await server.send(b"never sent")
            assert scope.cancelled_caught
            await server.send(b"sent")
            await server.send_eof()
            assert await receive_until_eof(client) == b"sent"


async def test_send_waits_while_the_peer_does_not_read_and_a_cancelled_one_is_whole_or_nothing(
) -> None:
    chunk = b"y" * 2**16
    with anyio.fail_after(TIMEOUT_SECONDS * 2):
        async with connected_pair(write_high_water_bytes=2**14) as (server, client):
            sent = await send_until_blocked(server, chunk)
            # Kernel buffers plus the high-water mark, not unbounded.
            assert 0 < sent < 64 * MEBIBYTE
            async with anyio.create_task_group() as task_group:

                async def finish() -> None:
                    await server.send(b"end")
                    await server.send_eof()

                task_group.start_soon(finish)
                received = await receive_until_eof(client)
            # The send that was cancelled had either handed nothing over (it
            # waited before writing) or all of it (it waited for the kernel to
            # take the rest): never part of a chunk.
            whole = sent // len(chunk)
            assert received in (chunk * whole + b"end", chunk * (whole + 1) + b"end")


async def test_calls_that_never_wait_still_let_other_tasks_run() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with connected_pair() as (server, client):
            await client.send(b"z" * 200_000)
            await wait_until_buffered(server, 200_000)
            received = 0
            seen_by_other_task: list[int] = []
            async with anyio.create_task_group() as task_group:

                async def interrupt() -> None:
                    seen_by_other_task.append(received)
                    task_group.cancel_scope.cancel()  # a deadline would do the same

                task_group.start_soon(interrupt)
                while True:
                    received += len(await server.receive(1))
            # Without a real yield every MAX_CALLS_WITHOUT_YIELD calls the
            # receives would drain all 200 000 bytes before the other task ran.
            assert seen_by_other_task
            assert seen_by_other_task[0] <= MAX_CALLS_WITHOUT_YIELD + 1
            assert received < 200_000


# Back-pressure ------------------------------------------------------------------------------


async def test_reading_pauses_while_the_application_does_not_read() -> None:
    high_water = 2**16
    chunk = os.urandom(2**16)
    with anyio.fail_after(TIMEOUT_SECONDS * 2), socket.socket() as listening:
        listening.bind((HOST, 0))
        listening.listen()
        with socket.create_connection(listening.getsockname()) as raw_client:
            accepted, _ = listening.accept()
            accepted.setblocking(False)
            server = await wrap_accepted_socket(accepted, read_high_water_bytes=high_water)
            async with server:
                raw_client.setblocking(False)
                sent = bytearray()
                # Write until the kernel takes nothing more, even after the
                # loop ran: the server stopped reading from its socket.
                idle_rounds = 0
                while idle_rounds < 20 and len(sent) < 64 * MEBIBYTE:
                    try:
                        sent += chunk[: raw_client.send(chunk)]
                        idle_rounds = 0
                    except BlockingIOError:
                        idle_rounds += 1
                        await checkpoint()
                buffered = server.buffered_bytes
                # One read of asyncio's (up to 256 KiB) may land past the mark.
                assert 0 < buffered <= high_water + 256 * 1024
                assert len(sent) > buffered + 256 * 1024  # the rest waits in the kernel
                raw_client.shutdown(socket.SHUT_WR)  # queued behind the data: never blocks
                assert await receive_until_eof(server) == sent


# Validation ---------------------------------------------------------------------------------


async def test_high_water_marks_out_of_range_are_refused() -> None:
    for marks in ({"read_high_water_bytes": 0}, {"write_high_water_bytes": -1}):
        with socket.socket() as sock, pytest.raises(ValueError, match="high_water_bytes"):
            sock.setblocking(False)
            sock.connect_ex((HOST, 9))  # any stream socket: refused before use
            await wrap_accepted_socket(sock, **marks)
