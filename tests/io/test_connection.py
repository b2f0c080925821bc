"""The connection object a handler receives, seen from real clients on both backends."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from websockets.exceptions import ConnectionClosed as ClientConnectionClosed

import wsserver
from wsserver.sansio.frames import Opcode

from ..serving import running_server
from .clients import RawClient, in_thread, open_client, port_of, recv

pytestmark = pytest.mark.anyio

TIMEOUT = 10


async def echo(ws: wsserver.WebSocketServerProtocol) -> None:
    async for message in ws:
        await ws.send(message)


# Messages ---------------------------------------------------------------------------


async def test_text_message_round_trips_as_str() -> None:
    received: list[Any] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        message = await ws.recv()
        received.append(message)
        await ws.send(message)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            client = await open_client(uri)
            await in_thread(client.send, "héllo wörld")
            assert await recv(client) == "héllo wörld"
            await in_thread(client.close)
    assert received == ["héllo wörld"]


async def test_binary_message_round_trips_as_bytes() -> None:
    received: list[Any] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        message = await ws.recv()
        received.append(message)
        await ws.send(message)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            client = await open_client(uri)
            await in_thread(client.send, b"\x00\xff\x80binary")
            assert await recv(client) == b"\x00\xff\x80binary"
            await in_thread(client.close)
    assert received == [b"\x00\xff\x80binary"]


async def test_bytearray_and_memoryview_are_sent_as_binary() -> None:
    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        await ws.send(bytearray(b"array"))
        await ws.send(memoryview(b"view"))

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            client = await open_client(uri)
            assert await recv(client) == b"array"
            assert await recv(client) == b"view"
            await in_thread(client.close)


async def test_empty_text_and_binary_messages_round_trip() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running_server(echo) as (_, uri):
            client = await open_client(uri)
            await in_thread(client.send, "")
            assert await recv(client) == ""
            await in_thread(client.send, b"")
            assert await recv(client) == b""
            await in_thread(client.close)


async def test_one_mebibyte_message_round_trips() -> None:
    # Uncompressed: deflate makes random bytes longer than max_size on the wire.
    payload = os.urandom(2**20)
    with anyio.fail_after(TIMEOUT):
        async with running_server(echo) as (_, uri):
            client = await open_client(uri, compression=None)
            await in_thread(client.send, payload)
            assert await recv(client) == payload
            await in_thread(client.close)


async def test_one_mebibyte_compressed_text_message_round_trips() -> None:
    payload = "".join(f"line {i}: {i * i}\n" for i in range(2**16))[: 2**20]
    with anyio.fail_after(TIMEOUT):
        async with running_server(echo) as (_, uri):
            client = await open_client(uri)
            assert "permessage-deflate" in client.response.headers["Sec-WebSocket-Extensions"]
            await in_thread(client.send, payload)
            assert await recv(client) == payload
            await in_thread(client.close)


async def test_send_of_a_list_arrives_as_one_message() -> None:
    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        await ws.send(["fragmented ", "text ", "message"])
        await ws.send([b"\x01", b"\x02"])

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            client = await open_client(uri)
            assert await recv(client) == "fragmented text message"
            assert await recv(client) == b"\x01\x02"
            await in_thread(client.close)


async def test_send_of_an_async_generator_arrives_as_one_message() -> None:
    async def fragments() -> AsyncIterator[str]:
        for part in ("made ", "by ", "a generator"):
            await anyio.lowlevel.checkpoint()
            yield part

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        await ws.send(fragments())

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            client = await open_client(uri)
            assert await recv(client) == "made by a generator"
            await in_thread(client.close)


async def test_send_of_a_list_goes_out_as_fragment_frames() -> None:
    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        await ws.send([b"ab", b"cd"])
        await ws.wait_closed()

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            client = await RawClient.open(port_of(uri))
            frames = [await client.recv_frame() for _ in range(3)]
            await client.aclose()
    assert [(f.opcode, f.data, f.fin) for f in frames] == [
        (Opcode.BINARY, b"ab", False),
        (Opcode.CONT, b"cd", False),
        (Opcode.CONT, b"", True),
    ]


async def test_send_of_mixed_fragments_raises_type_error() -> None:
    errors: list[BaseException] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        try:
            await ws.send(["text", b"bytes"])
        except TypeError as exc:
            errors.append(exc)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            client = await open_client(uri)
            with pytest.raises(ClientConnectionClosed):
                await recv(client)
    assert len(errors) == 1


async def test_fragmented_message_from_client_is_received_whole() -> None:
    with anyio.fail_after(TIMEOUT):
        async with running_server(echo) as (_, uri):
            client = await open_client(uri)
            await in_thread(client.send, ["one ", "two ", "three"])
            assert await recv(client) == "one two three"
            await in_thread(client.send, [b"\x00", b"\x01"])
            assert await recv(client) == b"\x00\x01"
            await in_thread(client.close)


async def test_control_frame_between_fragments_does_not_break_the_message() -> None:
    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        await ws.send(await ws.recv())

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            client = await RawClient.open(port_of(uri))
            await client.send_frame(Opcode.TEXT, b"frag", fin=False)
            await client.send_frame(Opcode.PING, b"in between")
            await client.send_frame(Opcode.CONT, b"mented", fin=True)
            pong = await client.recv_frame()
            message = await client.recv_frame()
            await client.aclose()
    assert (pong.opcode, pong.data) == (Opcode.PONG, b"in between")
    assert (message.opcode, message.data) == (Opcode.TEXT, b"fragmented")


# Iteration and closing ----------------------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1001])
async def test_async_for_ends_quietly_on_normal_close(code: int) -> None:
    outcome: list[Any] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        try:
            async for message in ws:
                outcome.append(message)
        except Exception as exc:
            outcome.append(exc)
        else:
            outcome.append("ended")

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            client = await open_client(uri)
            await in_thread(client.send, "a")
            await in_thread(client.send, "b")
            await in_thread(client.close, code)
    assert outcome == ["a", "b", "ended"]


async def test_async_for_raises_connection_closed_error_on_1011() -> None:
    outcome: list[Any] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        try:
            async for message in ws:
                outcome.append(message)
        except wsserver.ConnectionClosedError as exc:
            outcome.append((exc.code, exc.reason))

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            client = await open_client(uri)
            await in_thread(client.send, "a")
            await in_thread(client.close, 1011, "client broke")
    assert outcome == ["a", (1011, "client broke")]


async def test_async_for_raises_connection_closed_error_on_1006() -> None:
    outcome: list[Any] = []
    done = anyio.Event()

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        try:
            async for message in ws:
                outcome.append(message)
        except wsserver.ConnectionClosedError as exc:
            outcome.append(exc.code)
        finally:
            done.set()

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            client = await RawClient.open(port_of(uri))
            await client.send_frame(Opcode.TEXT, b"last words")
            await client.aclose()  # no closing handshake
            await done.wait()
    assert outcome == ["last words", 1006]


async def test_recv_after_close_raises_connection_closed_ok() -> None:
    outcome: list[Any] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        await ws.wait_closed()
        for _ in range(2):
            try:
                await ws.recv()
            except wsserver.ConnectionClosedOK as exc:
                outcome.append(exc.code)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            client = await open_client(uri)
            await in_thread(client.close)
    assert outcome == [1000, 1000]


async def test_send_after_close_raises_connection_closed() -> None:
    outcome: list[Any] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        await ws.wait_closed()
        try:
            await ws.send("too late")
        except wsserver.ConnectionClosed as exc:
            outcome.append(exc.code)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            client = await open_client(uri)
            await in_thread(client.close, 1001)
    assert outcome == [1001]


async def test_close_code_and_reason_reach_the_client() -> None:
    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        await ws.close(4000, "see you")

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            client = await open_client(uri)
            with pytest.raises(ClientConnectionClosed) as caught:
                await recv(client)
    assert caught.value.rcvd is not None
    assert (caught.value.rcvd.code, caught.value.rcvd.reason) == (4000, "see you")


async def test_close_code_and_reason_are_set_once_closed() -> None:
    seen: list[Any] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        seen.append((ws.close_code, ws.close_reason))
        await ws.wait_closed()
        seen.append((ws.close_code, ws.close_reason))

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            client = await open_client(uri)
            await in_thread(client.close, 4001, "done here")
    assert seen == [(None, None), (4001, "done here")]


async def test_close_code_is_the_echo_after_a_server_initiated_close() -> None:
    seen: list[Any] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        await ws.close(4002, "bye")
        seen.append((ws.close_code, ws.close_reason, ws.closed))

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            client = await open_client(uri)
            with pytest.raises(ClientConnectionClosed):
                await recv(client)
    # websockets echoes the code it received.
    assert seen == [(4002, "bye", True)]


async def test_close_is_idempotent() -> None:
    calls: list[str] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        await ws.close()
        await ws.close(4000, "again")
        calls.append("closed twice")

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            client = await open_client(uri)
            with pytest.raises(ClientConnectionClosed) as caught:
                await recv(client)
    assert calls == ["closed twice"]
    assert caught.value.rcvd is not None and caught.value.rcvd.code == 1000


async def test_wait_closed_returns_when_the_client_disconnects() -> None:
    states: list[Any] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        states.append((ws.open, ws.closed))
        await ws.wait_closed()
        states.append((ws.open, ws.closed))

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            client = await RawClient.open(port_of(uri))
            await client.send_close(1000)
            assert await client.recv_close() == (1000, "")
            await client.wait_for_eof()
    assert states == [(True, False), (False, True)]


# Pings and pongs --------------------------------------------------------------------


async def test_ping_resolves_with_latency_when_the_pong_arrives() -> None:
    latencies: list[float] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        waiter = await ws.ping()
        latencies.append(await waiter)
        await ws.send("pong received")

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            client = await open_client(uri)  # websockets answers pings by itself
            assert await recv(client) == "pong received"
            await in_thread(client.close)
    assert len(latencies) == 1
    assert 0 <= latencies[0] < TIMEOUT


async def test_ping_sends_its_payload_and_waits_for_the_matching_pong() -> None:
    outcome: list[Any] = []
    sent = anyio.Event()

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        waiter = await ws.ping(b"abc")
        sent.set()
        outcome.append(waiter.done())
        outcome.append(await waiter)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, ping_interval=None) as (_, uri):
            client = await RawClient.open(port_of(uri))
            ping = await client.recv_frame()
            await sent.wait()
            await client.send_frame(Opcode.PONG, b"other")  # not ours: ignored
            await client.send_frame(Opcode.PONG, b"abc")
            assert await client.recv_close() == (1000, "")
            await client.send_close(1000)
            await client.wait_for_eof()
    assert (ping.opcode, ping.data) == (Opcode.PING, b"abc")
    assert outcome[0] is False
    assert isinstance(outcome[1], float)


async def test_ping_waiter_raises_if_the_connection_closes_first() -> None:
    outcome: list[Any] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        waiter = await ws.ping("never answered")
        try:
            await waiter
        except wsserver.ConnectionClosed as exc:
            outcome.append(exc.code)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, ping_interval=None) as (_, uri):
            client = await RawClient.open(port_of(uri))
            assert (await client.recv_frame()).opcode is Opcode.PING
            await client.send_close(1000)
            await client.wait_for_eof()
    assert outcome == [1000]


async def test_ping_with_a_payload_already_waiting_raises_value_error() -> None:
    errors: list[BaseException] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        await ws.ping(b"same")
        with pytest.raises(ValueError) as caught:
            await ws.ping(b"same")
        errors.append(caught.value)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, ping_interval=None) as (_, uri):
            client = await RawClient.open(port_of(uri))
            assert await client.recv_close() == (1000, "")
            await client.send_close(1000)
            await client.wait_for_eof()
    assert len(errors) == 1


async def test_pong_sends_an_unsolicited_pong() -> None:
    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        await ws.pong(b"heartbeat")
        await ws.pong("text heartbeat")

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, ping_interval=None) as (_, uri):
            client = await RawClient.open(port_of(uri))
            first = await client.recv_frame()
            second = await client.recv_frame()
            await client.aclose()
    assert (first.opcode, first.data) == (Opcode.PONG, b"heartbeat")
    assert (second.opcode, second.data) == (Opcode.PONG, b"text heartbeat")


async def test_client_ping_is_answered_with_a_pong() -> None:
    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        await ws.wait_closed()

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, ping_interval=None) as (_, uri):
            client = await open_client(uri)
            pong = await in_thread(client.ping, b"hello?")
            assert await in_thread(pong.wait, TIMEOUT)
            await in_thread(client.close)


async def test_keepalive_updates_latency() -> None:
    latencies: list[float] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        assert ws.latency == 0
        while ws.latency == 0:  # until the first keepalive pong
            await anyio.sleep(0.01)
        latencies.append(ws.latency)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler, ping_interval=0.05, ping_timeout=5) as (_, uri):
            client = await open_client(uri)
            with pytest.raises(ClientConnectionClosed):
                await recv(client)
    assert len(latencies) == 1
    assert 0 < latencies[0] < 5


# Attributes ---------------------------------------------------------------------------


async def test_connection_attributes_describe_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: dict[str, Any] = {}

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        seen.update(
            id=ws.id,
            local_address=ws.local_address,
            remote_address=ws.remote_address,
            open=ws.open,
            closed=ws.closed,
            path=ws.path,
            user_agent=ws.request_headers["User-Agent"],
            upgrade=ws.response_headers["Upgrade"],
            subprotocol=ws.subprotocol,
        )
        ws.logger.warning("hello from the handler")
        await ws.send("ready")
        await ws.wait_closed()
        seen.update(open_after=ws.open, closed_after=ws.closed)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            client = await open_client(uri + "/chat?room=1", user_agent_header="attr-test/1.0")
            assert await recv(client) == "ready"
            client_address = client.local_address
            await in_thread(client.close)

    assert isinstance(seen["id"], uuid.UUID)
    assert seen["local_address"] == ("127.0.0.1", port_of(uri))
    assert seen["remote_address"] == client_address
    assert (seen["open"], seen["closed"]) == (True, False)
    assert (seen["open_after"], seen["closed_after"]) == (False, True)
    assert seen["path"] == "/chat?room=1"
    assert seen["user_agent"] == "attr-test/1.0"
    assert seen["upgrade"].lower() == "websocket"
    assert seen["subprotocol"] is None
    [record] = [r for r in caplog.records if r.getMessage().endswith("hello from the handler")]
    assert record.levelno == logging.WARNING
    assert str(seen["id"])[:8] in record.getMessage()


async def test_connection_ids_are_unique() -> None:
    ids: list[uuid.UUID] = []

    async def handler(ws: wsserver.WebSocketServerProtocol) -> None:
        ids.append(ws.id)

    with anyio.fail_after(TIMEOUT):
        async with running_server(handler) as (_, uri):
            for _ in range(3):
                client = await open_client(uri)
                with pytest.raises(ClientConnectionClosed):
                    await recv(client)
    assert len(set(ids)) == 3
