"""open_listeners(): TCP and Unix listeners on both loops, over real sockets."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from anyio.abc import ByteStream, SocketAttribute

from wsserver._transport import open_listeners
from wsserver._transport._asyncio_stream import AsyncioByteStream

from .support import (
    BACKLOG,
    HOST,
    TIMEOUT_SECONDS,
    echo,
    listen_overflows,
    listen_queue_length,
    port_of,
    receive_exactly,
    receive_until_eof,
    retransmissions,
    serving,
)

pytestmark = pytest.mark.anyio

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux feature")


def has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")


async def echo_once(host: str, port: int, message: bytes) -> bytes:
    async with await anyio.connect_tcp(host, port) as client:
        await client.send(message)
        return await receive_exactly(client, len(message))


# TCP ----------------------------------------------------------------------------------------


async def test_tcp_listener_echoes_through_the_loops_stream(anyio_backend: str) -> None:
    seen: dict[str, object] = {}

    async def record_then_echo(stream: ByteStream) -> None:
        raw_socket = stream.extra(SocketAttribute.raw_socket)
        seen.update(
            stream=stream,
            local_address=stream.extra(SocketAttribute.local_address),
            remote_address=stream.extra(SocketAttribute.remote_address),
            nodelay=raw_socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
        )
        await echo(stream)

    with anyio.fail_after(TIMEOUT_SECONDS):
        async with serving(record_then_echo) as listener, await anyio.connect_tcp(
            HOST, port_of(listener)
        ) as client:
            for index in range(100):
                message = f"message {index}".encode()
                await client.send(message)
                assert await receive_exactly(client, len(message)) == message
            client_address = client.extra(SocketAttribute.local_address)
    if anyio_backend == "asyncio":
        assert isinstance(seen["stream"], AsyncioByteStream)
    else:
        assert isinstance(seen["stream"], anyio.abc.SocketStream)
    assert seen["remote_address"] == client_address
    assert seen["local_address"] == (HOST, port_of(listener))
    assert seen["nodelay"]


async def test_listener_reports_its_socket_and_address() -> None:
    [listener] = await open_listeners(host=HOST, port=0, backlog=BACKLOG)
    async with listener:
        port = port_of(listener)
        assert port > 0
        assert listener.extra(SocketAttribute.local_address) == (HOST, port)
        assert listener.extra(SocketAttribute.family) == socket.AF_INET
        raw_socket = listener.extra(SocketAttribute.raw_socket)
        assert isinstance(raw_socket, socket.socket)
        assert raw_socket.getsockname() == (HOST, port)
    # Still known after closing: the server logs and reports them then too.
    assert listener.extra(SocketAttribute.local_address) == (HOST, port)


@needs_ipv6
async def test_all_interfaces_get_one_socket_per_family_on_one_free_port() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        listeners = await open_listeners(host=None, port=0, backlog=BACKLOG)
        try:
            families = {listener.extra(SocketAttribute.family) for listener in listeners}
            ports = {port_of(listener) for listener in listeners}
            assert families == {socket.AF_INET, socket.AF_INET6}
            assert len(ports) == 1
            async with anyio.create_task_group() as task_group:
                for listener in listeners:
                    task_group.start_soon(listener.serve, echo)
                [port] = ports
                assert await echo_once("127.0.0.1", port, b"over IPv4") == b"over IPv4"
                assert await echo_once("::1", port, b"over IPv6") == b"over IPv6"
                task_group.cancel_scope.cancel()
        finally:
            for listener in listeners:
                await listener.aclose()


@needs_ipv6
async def test_several_hosts_share_one_free_port() -> None:
    listeners = await open_listeners(host=["127.0.0.1", "::1"], port=0, backlog=BACKLOG)
    try:
        addresses = [listener.extra(SocketAttribute.local_address) for listener in listeners]
        port = addresses[0][1]
        assert addresses == [("127.0.0.1", port), ("::1", port)]
    finally:
        for listener in listeners:
            await listener.aclose()


async def test_a_port_in_use_fails_with_the_address_named() -> None:
    [listener] = await open_listeners(host=HOST, port=0, backlog=BACKLOG)
    async with listener:
        with pytest.raises(OSError, match=rf"cannot listen on .*{port_of(listener)}") as caught:
            await open_listeners(host=HOST, port=port_of(listener), backlog=BACKLOG)
    assert caught.value.errno == errno.EADDRINUSE


async def test_reuse_port_lets_two_listeners_share_a_port() -> None:
    [first] = await open_listeners(host=HOST, port=0, backlog=BACKLOG, reuse_port=True)
    async with first:
        [second] = await open_listeners(
            host=HOST, port=port_of(first), backlog=BACKLOG, reuse_port=True
        )
        async with second:
            raw_socket = second.extra(SocketAttribute.raw_socket)
            assert raw_socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
            assert port_of(second) == port_of(first)


@pytest.mark.parametrize("already_listening", [True, False])
async def test_tcp_listener_on_a_socket_passed_in(already_listening: bool) -> None:
    sock = socket.socket()
    sock.bind((HOST, 0))
    if already_listening:
        sock.listen()
    port = sock.getsockname()[1]
    with anyio.fail_after(TIMEOUT_SECONDS):
        [listener] = await open_listeners(sock=sock, backlog=BACKLOG)
        assert listener.extra(SocketAttribute.raw_socket) is sock
        async with serving(echo, listener):
            assert await echo_once(HOST, port, b"on my socket") == b"on my socket"
    assert sock.fileno() == -1  # the listener owned it and closed it


# Serving ------------------------------------------------------------------------------------


async def test_aclose_is_idempotent_and_ends_serve() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        [listener] = await open_listeners(host=HOST, port=0, backlog=BACKLOG)
        port = port_of(listener)
        async with anyio.create_task_group() as task_group:
            task_group.start_soon(listener.serve, echo)
            await anyio.wait_all_tasks_blocked()  # serve() waits for connections
            await listener.aclose()
            await listener.aclose()
        # serve() returned by itself; the port no longer accepts connections.
        with pytest.raises(OSError):
            await anyio.connect_tcp(HOST, port)
        with pytest.raises(anyio.ClosedResourceError):
            await listener.serve(echo)


async def test_a_second_serve_is_refused() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with serving(echo) as listener:
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(anyio.BusyResourceError):
                await listener.serve(echo)


async def test_connection_made_while_nobody_serves_is_served_later() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        [listener] = await open_listeners(host=HOST, port=0, backlog=BACKLOG)
        async with listener:
            with anyio.CancelScope() as scope:
                scope.cancel()
                await listener.serve(echo)  # cancelled at once: a cancellable serve
            client = await anyio.connect_tcp(HOST, port_of(listener))
            async with client:
                await client.send(b"early")
                async with serving(echo, listener):
                    assert await receive_exactly(client, 5) == b"early"


async def test_connections_still_queued_are_dropped_when_the_listener_closes() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        [listener] = await open_listeners(host=HOST, port=0, backlog=BACKLOG)
        client = await anyio.connect_tcp(HOST, port_of(listener))  # nobody accepts it
        async with client:
            await listener.aclose()
            with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                await client.receive()


async def test_handlers_run_in_the_given_task_group_and_are_cancelled_with_it() -> None:
    started = anyio.Event()
    cancelled: list[bool] = []

    async def wait_forever(stream: ByteStream) -> None:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(True)
            raise

    with anyio.fail_after(TIMEOUT_SECONDS):
        [listener] = await open_listeners(host=HOST, port=0, backlog=BACKLOG)
        async with listener:
            async with anyio.create_task_group() as handlers:
                async with anyio.create_task_group() as serving_group:
                    serving_group.start_soon(listener.serve, wait_forever, handlers)
                    client = await anyio.connect_tcp(HOST, port_of(listener))
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
    async def say_hello(stream: ByteStream) -> None:
        await stream.send(b"hello")

    with anyio.fail_after(TIMEOUT_SECONDS):
        async with serving(say_hello) as listener, await anyio.connect_tcp(
            HOST, port_of(listener)
        ) as client:
            assert await receive_until_eof(client) == b"hello"


# Bursts and accepting -----------------------------------------------------------------------


@linux_only
async def test_every_pending_connection_is_accepted_in_one_wakeup() -> None:
    """Fault 6 of issue #8: one accept per wake-up let a burst overflow the listen queue."""
    pending = 20
    queue_seen_by_first_handler: list[int] = []
    all_served = anyio.Event()
    served = 0

    with anyio.fail_after(TIMEOUT_SECONDS):
        [listener] = await open_listeners(host=HOST, port=0, backlog=BACKLOG)
        raw_listener = listener.extra(SocketAttribute.raw_socket)

        async def note_queue(stream: ByteStream) -> None:
            nonlocal served
            if not queue_seen_by_first_handler:
                queue_seen_by_first_handler.append(listen_queue_length(raw_listener))
            served += 1
            if served == pending:
                all_served.set()
            await stream.aclose()

        clients = [socket.create_connection((HOST, port_of(listener))) for _ in range(pending)]
        try:
            # The kernel completed every handshake: they all wait in the queue.
            assert listen_queue_length(raw_listener) == pending
            async with serving(note_queue, listener):
                await all_served.wait()
        finally:
            for client in clients:
                client.close()
    # By the time any handler ran, the listener had taken them all.
    assert queue_seen_by_first_handler == [0]


@pytest.fixture
def descriptors_for_a_burst() -> Iterator[None]:
    """Make room for 500 clients and 500 accepted sockets in this process."""
    needed = 2 * 500 + 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.fail(f"the burst needs {needed} file descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


BURST_CONNECTIONS = 500
BURST_BACKLOG = 1024
"""The default backlog recommended for wsserver.options: twice the burst, under somaxconn."""


@linux_only
@pytest.mark.usefixtures("descriptors_for_a_burst")
async def test_burst_of_500_connections_is_accepted_and_answered_without_drops() -> None:
    """Fault 6 of issue #8: 500 clients at once, each answered, none made to retry."""
    answered: list[bytes] = []
    retried: list[int] = []
    overflows_before = listen_overflows()

    async def one_client(port: int, index: int) -> None:
        async with await anyio.connect_tcp(HOST, port) as client:
            message = f"client {index}".encode()
            await client.send(message)
            answered.append(await receive_exactly(client, len(message)))
            # A SYN or handshake ACK dropped by a full listen queue is resent.
            retried.append(retransmissions(client.extra(SocketAttribute.raw_socket)))

    with anyio.fail_after(60):
        [listener] = await open_listeners(host=HOST, port=0, backlog=BURST_BACKLOG)
        async with serving(echo, listener), anyio.create_task_group() as clients:
            for index in range(BURST_CONNECTIONS):
                clients.start_soon(one_client, port_of(listener), index)
    overflows_after = listen_overflows()

    assert sorted(answered) == sorted(f"client {index}".encode() for index in range(500))
    # The kernel's ListenOverflows counter is shared by every process on the
    # machine, so it only explains a failure; the clients' own retransmission
    # counts are what this test's connections went through.
    overflows = (
        None if overflows_before is None or overflows_after is None
        else overflows_after - overflows_before
    )
    assert sum(retried) == 0, f"{sum(retried)} retransmissions; ListenOverflows grew by {overflows}"


@linux_only
async def test_running_out_of_descriptors_raises_from_serve_which_can_resume() -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        [listener] = await open_listeners(host=HOST, port=0, backlog=BACKLOG)
        async with listener:
            client = await anyio.connect_tcp(HOST, port_of(listener))
            async with client:
                soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                fillers: list[int] = []
                try:
                    # Every descriptor number below the limit taken: accept() must fail.
                    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
                    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
                    with contextlib.suppress(OSError):
                        while True:
                            fillers.append(os.open(os.devnull, os.O_RDONLY))
                    async with anyio.create_task_group() as handlers:
                        with pytest.raises(OSError) as caught:
                            await listener.serve(echo, handlers)
                finally:
                    for filler in fillers:
                        os.close(filler)
                    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
                assert caught.value.errno == errno.EMFILE
                # The connection waited in the queue meanwhile.
                async with serving(echo, listener):
                    await client.send(b"still there")
                    assert await receive_exactly(client, 11) == b"still there"


# Unix sockets -------------------------------------------------------------------------------


@pytest.fixture
def socket_path(tmp_path: Path) -> str:
    return str(tmp_path / "ws.sock")


async def unix_echo_once(path: str, message: bytes) -> bytes:
    async with await anyio.connect_unix(path) as client:
        await client.send(message)
        return await receive_exactly(client, len(message))


async def test_unix_listener_echoes_and_removes_its_file_once(socket_path: str) -> None:
    with anyio.fail_after(TIMEOUT_SECONDS):
        [listener] = await open_listeners(path=socket_path, unix=True, backlog=BACKLOG)
        assert listener.extra(SocketAttribute.family) == socket.AF_UNIX
        assert listener.extra(SocketAttribute.local_address) == socket_path
        with pytest.raises(anyio.TypedAttributeLookupError):
            listener.extra(SocketAttribute.local_port)
        async with serving(echo, listener):
            assert await unix_echo_once(socket_path, b"over unix") == b"over unix"
        assert not os.path.exists(socket_path)
        # A new server binds the path; closing the old listener again leaves it alone.
        [successor] = await open_listeners(path=socket_path, unix=True, backlog=BACKLOG)
        async with successor:
            await listener.aclose()
            assert os.path.exists(socket_path)
        assert not os.path.exists(socket_path)


async def test_unix_socket_file_replaced_meanwhile_is_not_removed(socket_path: str) -> None:
    [listener] = await open_listeners(path=socket_path, unix=True, backlog=BACKLOG)
    os.unlink(socket_path)
    with socket.socket(socket.AF_UNIX) as other_server:
        other_server.bind(socket_path)
        await listener.aclose()
        assert os.path.exists(socket_path)


async def test_stale_unix_socket_file_is_replaced(socket_path: str) -> None:
    with socket.socket(socket.AF_UNIX) as crashed_server:
        crashed_server.bind(socket_path)  # closed without removing its file
    with anyio.fail_after(TIMEOUT_SECONDS):
        [listener] = await open_listeners(path=socket_path, unix=True, backlog=BACKLOG)
        async with serving(echo, listener):
            assert await unix_echo_once(socket_path, b"fresh") == b"fresh"


async def test_a_file_that_is_not_a_socket_is_left_alone(socket_path: str) -> None:
    Path(socket_path).write_text("precious")
    with pytest.raises(OSError, match="cannot listen on"):
        await open_listeners(path=socket_path, unix=True, backlog=BACKLOG)
    assert Path(socket_path).read_text() == "precious"


@linux_only
async def test_abstract_unix_name_serves_and_closes_without_a_file() -> None:
    name = f"\0wsserver-transport-{os.getpid()}-{id(object())}"
    with anyio.fail_after(TIMEOUT_SECONDS):
        [listener] = await open_listeners(path=name, unix=True, backlog=BACKLOG)
        async with serving(echo, listener):
            assert await unix_echo_once(name, b"abstract") == b"abstract"
        await listener.aclose()
    # The name is free again: a new listener can take it.
    [again] = await open_listeners(path=name, unix=True, backlog=BACKLOG)
    await again.aclose()


async def test_unix_socket_passed_in_is_served_and_its_file_kept(socket_path: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(socket_path)
    sock.listen()
    with anyio.fail_after(TIMEOUT_SECONDS):
        [listener] = await open_listeners(sock=sock, unix=True, backlog=BACKLOG)
        async with serving(echo, listener):
            assert await unix_echo_once(socket_path, b"mine") == b"mine"
    assert sock.fileno() == -1
    assert os.path.exists(socket_path)  # the user's file: the user removes it


async def test_accepted_unix_stream_reports_its_addresses(socket_path: str) -> None:
    local_addresses: list[object] = []

    async def record_then_echo(stream: ByteStream) -> None:
        local_addresses.append(stream.extra(SocketAttribute.local_address))
        await echo(stream)

    with anyio.fail_after(TIMEOUT_SECONDS):
        [listener] = await open_listeners(path=socket_path, unix=True, backlog=BACKLOG)
        async with serving(record_then_echo, listener):
            assert await unix_echo_once(socket_path, b"hi") == b"hi"
    assert local_addresses == [socket_path]


# Arguments ----------------------------------------------------------------------------------


async def test_contradictory_arguments_are_refused(socket_path: str) -> None:
    with socket.socket() as tcp_sock, socket.socket(socket.AF_UNIX) as unix_sock:
        with pytest.raises(TypeError):
            await open_listeners(unix=True, backlog=BACKLOG)
        with pytest.raises(ValueError):
            await open_listeners(path=socket_path, sock=unix_sock, unix=True, backlog=BACKLOG)
        with pytest.raises(ValueError):
            await open_listeners(host=HOST, path=socket_path, unix=True, backlog=BACKLOG)
        with pytest.raises(ValueError):
            await open_listeners(path=socket_path, unix=True, backlog=BACKLOG, reuse_port=True)
        with pytest.raises(ValueError):
            await open_listeners(path=socket_path, backlog=BACKLOG)
        with pytest.raises(ValueError):
            await open_listeners(host=HOST, sock=tcp_sock, backlog=BACKLOG)
        with pytest.raises(ValueError):
            await open_listeners(sock=tcp_sock, backlog=BACKLOG, reuse_port=True)
    with socket.socket(type=socket.SOCK_DGRAM) as udp_sock:
        udp_sock.bind((HOST, 0))
        with pytest.raises(ValueError, match="stream socket"):
            await open_listeners(sock=udp_sock, backlog=BACKLOG)

