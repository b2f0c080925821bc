"""Opening, keepalive and closing timeouts against peers that stall, on both backends."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import wsserver
from wsserver.sansio.frames import Opcode

from ..serving import running_server
from .clients import RawClient, handshake_request, open_client, port_of, recv

pytestmark = pytest.mark.anyio

TIMEOUT = 10
#: Timers may fire a little early by the clock the test reads.
SLACK = 0.8


async def never_called(ws: wsserver.WebSocketServerProtocol) -> None:
    raise AssertionError("the handshake should not have completed")


# open_timeout -----------------------------------------------------------------------------


async def test_client_that_sends_nothing_is_dropped_after_open_timeout() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running_server(never_called, open_timeout=0.3) as (_, uri):
            client = await RawClient.connect(port_of(uri))
            started = anyio.current_time()
            received = await client.read_until_eof()
            elapsed = anyio.current_time() - started
            await client.aclose()
    assert received == b""
    assert elapsed >= 0.3 * SLACK


async def test_client_that_trickles_the_handshake_is_dropped_after_open_timeout() -> None:
    request = handshake_request()
    sent = 0

    async def trickle(client: RawClient) -> None:
        nonlocal sent
        # At one byte every 20 ms the request would take several seconds.
        for index in range(len(request)):
            try:
                await client.stream.send(request[index:index + 1])
            except (anyio.BrokenResourceError, OSError):
                return
            sent += 1
            await anyio.sleep(0.02)

    with anyio.fail_after(TIMEOUT):
        async with running_server(never_called, open_timeout=0.5) as (_, uri):
            client = await RawClient.connect(port_of(uri))
            started = anyio.current_time()
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(trickle, client)
                received = await client.read_until_eof()
                elapsed = anyio.current_time() - started
                task_group.cancel_scope.cancel()
            await client.aclose()
    assert received == b""
    assert 0 < sent < len(request)  # dropped mid-request: the timeout is for the whole handshake
    assert elapsed >= 0.5 * SLACK


async def test_open_timeout_does_not_limit_an_open_connection() -> None:
    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        await anyio.sleep(0.4)  # longer than open_timeout
        await ws.send("still here")

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, open_timeout=0.1) as (_, uri):
            client = await open_client(uri)
            assert await recv(client) == "still here"


# ping_timeout -----------------------------------------------------------------------------


async def test_client_that_never_answers_pings_is_closed_with_1011() -> None:
    outcome: list[Any] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        try:
            await ws.recv()
        except wsserver.ConnectionClosedError as exc:
            outcome.append(exc.sent.code if exc.sent else None)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, ping_interval=0.1, ping_timeout=0.2) as (_, uri):
            client = await RawClient.open(port_of(uri))
            ping = await client.recv_frame()
            pinged = anyio.current_time()
            close = await client.recv_frame()
            elapsed = anyio.current_time() - pinged
            await client.wait_for_eof()
    assert ping.opcode is Opcode.PING
    assert close.opcode is Opcode.CLOSE
    assert int.from_bytes(close.data[:2], "big") == 1011
    assert elapsed >= 0.2 * SLACK
    assert outcome == [1011]


async def test_client_that_answers_pings_stays_connected() -> None:
    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        await ws.send(await ws.recv())

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, ping_interval=0.05, ping_timeout=0.1) as (_, uri):
            client = await RawClient.open(port_of(uri))
            payloads = set()
            while len(payloads) < 4:  # several ping intervals and timeouts
                ping = await client.recv_frame()
                assert ping.opcode is Opcode.PING
                payloads.add(ping.data)
                await client.send_frame(Opcode.PONG, ping.data)
            await client.send_frame(Opcode.TEXT, b"alive")
            while (frame := await client.recv_frame()).opcode is Opcode.PING:
                await client.send_frame(Opcode.PONG, frame.data)
            await client.aclose()
    assert (frame.opcode, frame.data) == (Opcode.TEXT, b"alive")


# close_timeout ----------------------------------------------------------------------------


async def test_client_that_never_answers_our_close_is_dropped_after_close_timeout() -> None:
    outcome: list[Any] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        await ws.close(1000, "bye")
        outcome.append((ws.closed, ws.close_code))

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, close_timeout=0.3, ping_interval=None) as (_, uri):
            client = await RawClient.open(port_of(uri))
            assert await client.recv_close() == (1000, "bye")
            close_received = anyio.current_time()
            await client.read_until_eof()  # never answering the close
            elapsed = anyio.current_time() - close_received
            await client.aclose()
    assert elapsed >= 0.3 * SLACK
    assert outcome == [(True, 1006)]


async def test_client_that_never_closes_tcp_is_dropped_after_close_timeout() -> None:
    closed_after: list[float] = []
    handler_done = anyio.Event()

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        started = anyio.current_time()
        await ws.close()
        closed_after.append(anyio.current_time() - started)
        handler_done.set()

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, close_timeout=0.3, ping_interval=None) as (_, uri):
            client = await RawClient.open(port_of(uri))
            assert await client.recv_close() == (1000, "")
            await client.send_close(1000)
            await client.read_until_eof()
            # Keep our side open: the server must not wait for it forever.
            await handler_done.wait()
            await client.aclose()
    assert closed_after[0] >= 0.3 * SLACK


async def test_clean_close_does_not_wait_for_close_timeout() -> None:
    closed_after: list[float] = []
    handler_done = anyio.Event()

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        started = anyio.current_time()
        await ws.close()
        closed_after.append(anyio.current_time() - started)
        handler_done.set()

    close_timeout = 60  # far beyond the test's TIMEOUT: waiting for it fails the test
    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, close_timeout=close_timeout) as (_, uri):
            client = await RawClient.open(port_of(uri))
            assert await client.recv_close() == (1000, "")
            await client.send_close(1000)
            await client.wait_for_eof()
            await handler_done.wait()
    assert closed_after[0] < close_timeout
