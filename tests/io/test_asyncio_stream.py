"""The lean asyncio byte stream and listener, over real sockets on 127.0.0.1.

These tests are asyncio-specific: the classes under test exist only because
anyio's stock asyncio stream is slow. Clients are anyio's stock streams or
plain sockets, so both ends are not the code under test.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.tls import TLSAttribute

from wsserver.asyncio_io._stream import (
    MAX_CALLS_WITHOUT_YIELD,
    AsyncioByteStream,
    AsyncioListener,
)

pytestmark = pytest.mark.anyio

HOST = "127.0.0.1"
TIMEOUT_SECONDS = 10
MEBIBYTE = 2**20


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def echo(stream: AsyncioByteStream) -> None:
    async with stream:
        try:
            while True:
                await stream.send(await stream.receive())
        except anyio.EndOfStream:
            pass


def listener_port(listener: AsyncioListener) -> int:
    port: int = listener.extra(SocketAttribute.local_port)
    return port


@asynccontextmanager
async def serving(
    handler: Any, listener: AsyncioListener | None = None
) -> AsyncIterator[AsyncioListener]:
    """Run ``listener.serve(handler)`` in a task group for the block's duration."""
    if listener is None:
        listener = await AsyncioListener.create_tcp(HOST, 0)
    async with listener, anyio.create_task_group() as task_group:
        task_group.start_soon(listener.serve, handler)
        yield listener
        task_group.cancel_scope.cancel()


@asynccontextmanager
async def connected_pair(
    **listener_options: Any,
) -> AsyncIterator[tuple[AsyncioByteStream, ByteStream]]:
    """Yield (server side stream under test, client side anyio stream)."""
    listener = await AsyncioListener.create_tcp(HOST, 0, **listener_options)
    accepted_send, accepted_receive = anyio.create_memory_object_stream[AsyncioByteStream](1)

    async def hand_over(stream: AsyncioByteStream) -> None:
        await accepted_send.send(stream)
        await anyio.sleep_forever()

    async with serving(hand_over, listener):
        client = await anyio.connect_tcp(HOST, listener_port(listener))
        async with client:
            server_stream = await accepted_receive.receive()
            yield server_stream, client


async def receive_exactly(stream: ByteStream, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunks += await stream.receive()
    return bytes(chunks)


async def receive_until_eof(stream: ByteStream) -> bytes:
    chunks = bytearray()
    try:
        while True:
            chunks += await stream.receive()
    except anyio.EndOfStream:
        return bytes(chunks)


async def fill_until_send_blocks(stream: ByteStream, chunk: bytes) -> int:
    """Send ``chunk`` until a send waits for 0.2 s; return the bytes sent."""
    sent = 0
    while True:
        with anyio.move_on_after(0.2) as scope:
            await stream.send(chunk)
        if scope.cancelled_caught:
            return sent
        sent += len(chunk)


# -- data transfer ------------------------------------------------------------


async def test_echo_round_trips_messages() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with serving(echo) as listener:
            port = listener_port(listener)
            async with await anyio.connect_tcp(HOST, port) as client:
                for index in range(100):
                    message = f"message {index}".encode()
                    await client.send(message)
                    assert await receive_exactly(client, len(message)) == message


async def test_echo_serves_many_connections_at_once() -> None:
    async def one_client(port: int, index: int) -> None:
        async with await anyio.connect_tcp(HOST, port) as client:
            for round_trip in range(20):
                message = f"{index}:{round_trip}".encode()
                await client.send(message)
                assert await receive_exactly(client, len(message)) == message

    with anyio.fail_after(TIMEOUT_SECONDS):
        async with serving(echo) as listener, anyio.create_task_group() as clients:
            for index in range(50):
                clients.start_soon(one_client, listener_port(listener), index)


async def test_large_transfers_both_ways_arrive_intact() -> None:
    payload = os.urandom(4 * MEBIBYTE)

    async def send_all_then_eof(client: ByteStream) -> None:
        for start in range(0, len(payload), 100_000):
            await client.send(payload[start : start + 100_000])
        await client.send_eof()

    with anyio.fail_after(TIMEOUT_SECONDS * 3):
        async with serving(echo) as listener:
            client = await anyio.connect_tcp(HOST, listener_port(listener))
            async with client, anyio.create_task_group() as task_group:
                task_group.start_soon(send_all_then_eof, client)
                echoed = await receive_until_eof(client)
    assert len(echoed) == len(payload)
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
            with pytest.raises(ValueError):
                await server.receive(0)


# -- end of stream, reset, close ------------------------------------------------


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
            raw_client = client.extra(SocketAttribute.raw_socket)
            # SO_LINGER with a zero timeout makes close() send a RST.
            raw_client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
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
            # Let the bytes reach the server's buffer before the RST.
            while server.buffered_bytes < 16:
                await anyio.sleep(0.01)
            raw_client = client.extra(SocketAttribute.raw_socket)
            raw_client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await client.aclose()
            await anyio.sleep(0.1)
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
                await anyio.sleep(0.3)  # the client reads nothing: sends block
                with anyio.move_on_after(1):  # the unread bytes cannot flush
                    await server.aclose()
            assert outcomes == [anyio.ClosedResourceError] * 2


async def test_aclose_cancelled_while_flushing_aborts_the_connection() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with connected_pair(write_high_water_bytes=2**14) as (server, client):
            await fill_until_send_blocks(server, b"x" * 2**16)
            with anyio.move_on_after(0.2) as scope:
                await server.aclose()
            assert scope.cancelled_caught
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
            await anyio.sleep(0.05)
            with pytest.raises(anyio.BusyResourceError):
                await server.receive()
            await client.send(b"x")


# -- cancellation -----------------------------------------------------------------


async def test_cancelled_receive_loses_no_data() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with connected_pair() as (server, client):
            with anyio.move_on_after(0.1) as scope:
                await server.receive()
            assert scope.cancelled_caught
            await client.send(b"arrived later")
            assert await receive_exactly(server, 13) == b"arrived later"


async def test_receive_is_a_checkpoint_even_with_buffered_data() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with connected_pair() as (server, client):
            await client.send(b"kept")
            while server.buffered_bytes < 4:
                await anyio.sleep(0.01)
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


async def test_cancelled_send_on_a_paused_writer_writes_nothing() -> None:
    chunk = b"y" * 2**16
    with anyio.fail_after(TIMEOUT_SECONDS * 2):
        async with connected_pair(write_high_water_bytes=2**14) as (server, client):
            # The client reads nothing, so a send ends up waiting, and is cancelled.
            sent = await fill_until_send_blocks(server, chunk)
            assert sent > 0
            async with anyio.create_task_group() as task_group:

                async def finish() -> None:
                    await server.send(b"end")
                    await server.send_eof()

                task_group.start_soon(finish)
                received = await receive_until_eof(client)
            assert received == chunk * (sent // len(chunk)) + b"end"


async def test_deadline_fires_while_receive_never_has_to_wait() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with connected_pair() as (server, client):
            await client.send(b"z" * 200_000)
            while server.buffered_bytes < 200_000:
                await anyio.sleep(0.01)
            received = 0
            with anyio.move_on_after(0.05) as scope:
                while True:
                    received += len(await server.receive(1))
            assert scope.cancelled_caught
            # Without a yield every MAX_CALLS_WITHOUT_YIELD calls the loop
            # would drain all 200 000 bytes before the timer could fire.
            assert MAX_CALLS_WITHOUT_YIELD <= received < 200_000


# -- back-pressure ------------------------------------------------------------------


async def test_send_blocks_when_the_peer_does_not_read() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with connected_pair(write_high_water_bytes=2**16) as (server, _client):
            sent = await fill_until_send_blocks(server, b"w" * 2**16)
            # Kernel buffers plus the transport's high-water mark, not unbounded.
            assert 0 < sent < 64 * MEBIBYTE


async def test_reading_pauses_when_the_application_does_not_read() -> None:
    high_water = 2**16
    chunk = b"r" * 2**16
    with anyio.fail_after(TIMEOUT_SECONDS * 2):
        async with connected_pair(read_high_water_bytes=high_water) as (
            server,
            client,
        ):
            # The client's sends block once the server stops reading the socket.
            sent = await fill_until_send_blocks(client, chunk)
            buffered = server.buffered_bytes
            assert 0 < buffered <= high_water + 256 * 1024
            assert buffered < sent
            async with anyio.create_task_group() as task_group:

                async def send_rest() -> None:
                    await client.send(b"done")
                    await client.send_eof()

                task_group.start_soon(send_rest)
                received = await receive_until_eof(server)
            # anyio's stock stream may have queued the chunk whose send was
            # cancelled; nothing was lost or reordered either way.
            assert received.endswith(b"done")
            assert received[:-4] == b"r" * len(received[:-4])
            assert len(received) - 4 in (sent, sent + len(chunk))


# -- TLS, Unix sockets, attributes ----------------------------------------------


@pytest.fixture(scope="module")
def certificate_authority() -> trustme.CA:
    return trustme.CA()


async def test_tls_echo_and_attributes(certificate_authority: trustme.CA) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("localhost").configure_cert(server_context)
    server_context.set_alpn_protocols(["http/1.1"])
    client_context = ssl.create_default_context()
    certificate_authority.configure_trust(client_context)
    client_context.set_alpn_protocols(["http/1.1"])
    attributes: dict[str, Any] = {}

    async def record_then_echo(stream: AsyncioByteStream) -> None:
        attributes.update(
            ssl_object=stream.extra(TLSAttribute.ssl_object),
            standard_compatible=stream.extra(TLSAttribute.standard_compatible),
            server_side=stream.extra(TLSAttribute.server_side),
            alpn_protocol=stream.extra(TLSAttribute.alpn_protocol),
            tls_version=stream.extra(TLSAttribute.tls_version),
            cipher=stream.extra(TLSAttribute.cipher),
            peer_certificate=stream.extra(TLSAttribute.peer_certificate),
            remote_port=stream.extra(SocketAttribute.remote_port),
        )
        await echo(stream)

    with anyio.fail_after(TIMEOUT_SECONDS):
        listener = await AsyncioListener.create_tcp(HOST, 0, ssl=server_context)
        async with serving(record_then_echo, listener):
            client = await anyio.connect_tcp(
                HOST,
                listener_port(listener),
                ssl_context=client_context,
                tls_hostname="localhost",
            )
            async with client:
                payload = os.urandom(300_000)
                async with anyio.create_task_group() as task_group:
                    task_group.start_soon(client.send, payload)
                    assert await receive_exactly(client, len(payload)) == payload
                client_port = client.extra(SocketAttribute.local_port)

    assert isinstance(attributes["ssl_object"], ssl.SSLObject)
    assert attributes["standard_compatible"] is False
    assert attributes["server_side"] is True
    assert attributes["alpn_protocol"] == "http/1.1"
    assert attributes["tls_version"].startswith("TLS")
    assert len(attributes["cipher"]) == 3
    assert attributes["peer_certificate"] is None  # no client certificate
    assert attributes["remote_port"] == client_port


async def test_tls_stream_cannot_half_close(certificate_authority: trustme.CA) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    certificate_authority.configure_trust(client_context)
    errors: list[BaseException] = []

    async def try_send_eof(stream: AsyncioByteStream) -> None:
        try:
            await stream.send_eof()
        except NotImplementedError as exc:
            errors.append(exc)

    with anyio.fail_after(TIMEOUT_SECONDS):
        listener = await AsyncioListener.create_tcp(HOST, 0, ssl=server_context)
        async with serving(try_send_eof, listener):
            client = await AsyncioByteStream.connect_tcp(
                HOST, listener_port(listener), ssl=client_context, server_hostname="localhost"
            )
            async with client:
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await client.receive()
    assert len(errors) == 1


async def test_unix_socket_echo_and_cleanup(tmp_path: Path) -> None:
    path = tmp_path / "echo.sock"
    with anyio.fail_after(TIMEOUT_SECONDS):
        listener = await AsyncioListener.create_unix(path)
        assert listener.extra(SocketAttribute.family) == socket.AF_UNIX
        assert listener.extra(SocketAttribute.local_address) == str(path)
        async with serving(echo, listener):
            async with await anyio.connect_unix(path) as client:
                await client.send(b"over a unix socket")
                assert await receive_exactly(client, 18) == b"over a unix socket"
            async with await AsyncioByteStream.connect_unix(path) as own_client:
                assert own_client.extra(SocketAttribute.family) == socket.AF_UNIX
                assert own_client.extra(SocketAttribute.remote_address) == str(path)
                with pytest.raises(anyio.TypedAttributeLookupError):
                    own_client.extra(SocketAttribute.local_port)
                await own_client.send(b"ours too")
                assert await receive_exactly(own_client, 8) == b"ours too"
    assert not path.exists()


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
            raw_socket = server.extra(SocketAttribute.raw_socket)
            assert raw_socket.fileno() >= 0
            assert raw_socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            with pytest.raises(anyio.TypedAttributeLookupError):
                server.extra(TLSAttribute.ssl_object)


async def test_own_client_stream_echoes_and_reports_attributes() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with serving(echo) as listener:
            port = listener_port(listener)
            async with await AsyncioByteStream.connect_tcp(HOST, port) as client:
                assert client.extra(SocketAttribute.remote_port) == port
                await client.send(b"ping")
                assert await receive_exactly(client, 4) == b"ping"


# -- listener -----------------------------------------------------------------------


async def test_listener_attributes_and_sockets() -> None:
    listener = await AsyncioListener.create_tcp(HOST, 0)
    async with listener:
        port = listener.extra(SocketAttribute.local_port)
        assert port > 0
        assert listener.extra(SocketAttribute.local_address) == (HOST, port)
        assert listener.extra(SocketAttribute.family) == socket.AF_INET
        assert len(listener.sockets) == 1
        raw_socket = listener.extra(SocketAttribute.raw_socket)
        assert raw_socket.getsockname() == (HOST, port)


async def test_listener_on_an_existing_socket() -> None:
    sock = socket.socket()
    sock.bind((HOST, 0))
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with serving(echo, await AsyncioListener.create_tcp(sock=sock)) as lst:
            assert listener_port(lst) == sock.getsockname()[1]
            async with await anyio.connect_tcp(HOST, listener_port(lst)) as client:
                await client.send(b"hi")
                assert await receive_exactly(client, 2) == b"hi"
    with pytest.raises(ValueError):
        await AsyncioListener.create_tcp(HOST, sock=socket.socket())


async def test_listener_aclose_is_idempotent_and_ends_serve() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        listener = await AsyncioListener.create_tcp(HOST, 0)
        port = listener_port(listener)
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(listener.serve, echo)
            await anyio.sleep(0.05)
            await listener.aclose()
            await listener.aclose()
        # serve() returned by itself; the port no longer accepts connections.
        with pytest.raises(OSError):
            await anyio.connect_tcp(HOST, port)
        with pytest.raises(anyio.ClosedResourceError):
            await listener.serve(echo)


async def test_handlers_run_in_the_given_task_group_and_are_cancelled_with_it() -> None:
    started = anyio.Event()
    cancelled: list[bool] = []

    async def wait_forever(stream: AsyncioByteStream) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(True)
            raise

    with anyio.fail_after(TIMEOUT_SECONDS):
        listener = await AsyncioListener.create_tcp(HOST, 0)
        async with listener:
            async with anyio.create_task_group() as handlers:
                async with anyio.create_task_group() as serving_group:
                    serving_group.start_soon(listener.serve, wait_forever, handlers)
                    client = await anyio.connect_tcp(HOST, listener_port(listener))
                    await started.wait()
                    # Stopping serve() leaves the handler to its own task group.
                    serving_group.cancel_scope.cancel()
                assert cancelled == []
                handlers.cancel_scope.cancel()
            assert cancelled == [True]
            # The handler's stream was closed when its task ended.
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await client.receive()
            await client.aclose()


async def test_stream_left_open_by_its_handler_is_closed() -> None:
    async def say_hello(stream: AsyncioByteStream) -> None:
        await stream.send(b"hello")

    with anyio.fail_after(TIMEOUT_SECONDS):
        async with serving(say_hello) as listener:
            client = await anyio.connect_tcp(HOST, listener_port(listener))
            async with client:
                assert await receive_until_eof(client) == b"hello"


async def test_connections_never_handed_to_a_handler_are_closed_with_the_listener() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        listener = await AsyncioListener.create_tcp(HOST, 0)
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(listener.serve, echo)
            await anyio.sleep(0.05)
            task_group.cancel_scope.cancel()
        # asyncio still accepts, but nobody serves: the connection waits.
        client = await anyio.connect_tcp(HOST, listener_port(listener))
        async with client:
            await anyio.sleep(0.1)
            await listener.aclose()
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await client.receive()


async def test_a_second_serve_is_refused() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with serving(echo) as listener:
            await anyio.sleep(0.05)
            with pytest.raises(anyio.BusyResourceError):
                await listener.serve(echo)


async def test_connection_made_before_serve_runs_is_served() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        listener = await AsyncioListener.create_tcp(HOST, 0)
        client = await anyio.connect_tcp(HOST, listener_port(listener))
        async with client:
            await client.send(b"early")
            async with serving(echo, listener):
                assert await receive_exactly(client, 5) == b"early"
