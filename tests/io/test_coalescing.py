"""Frames sent while the handler works through queued messages leave together, and soon.

On plain sockets (both loops) the outbox keeps small frames back while
messages wait in the inbox, and writes them in one go when the handler takes
the last one, or once its task yields. Whatever the loop, every frame must
arrive, in order, and none may wait for the handler to come back to recv().
"""

from __future__ import annotations

import os

import anyio
import pytest

from wsserver.sansio.frames import Frame, Opcode, serialize_frame

from ..serving import running_server
from .clients import RawClient, port_of
from .gates import FullTransport

pytestmark = pytest.mark.anyio


async def echo(websocket: object) -> None:
    async for message in websocket:  # type: ignore[attr-defined]
        await websocket.send(message)  # type: ignore[attr-defined]


@pytest.mark.parametrize("write_limit", [2**16, 8])
async def test_pipelined_messages_are_echoed_in_order(write_limit: int) -> None:
    with anyio.fail_after(5):
        async with running_server(echo, ping_interval=None, write_limit=write_limit) as (_, uri):
            client = await RawClient.open(port_of(uri))
            for burst in range(3):
                # One write: the server reads them all at once, then echoes each.
                payloads = [f"{burst}-{n}".encode() for n in range(50)]
                await client.stream.send(b"".join(client_frames(payloads)))
                for payload in payloads:
                    frame = await client.recv_frame()
                    assert (frame.opcode, frame.data) == (Opcode.BINARY, payload)
            await client.send_close()
            assert await client.recv_close() == (1000, "")
            await client.wait_for_eof()


async def test_a_frame_sent_mid_batch_leaves_while_the_handler_waits_elsewhere() -> None:
    released = anyio.Event()

    async def answer_then_wait(websocket: object) -> None:
        first = await websocket.recv()  # type: ignore[attr-defined]
        # A second message is queued already: this answer may be kept back...
        await websocket.send(first)  # type: ignore[attr-defined]
        # ...but not until the handler comes back to recv(): it waits here
        # until the client has seen the answer.
        await released.wait()
        await websocket.send(await websocket.recv())  # type: ignore[attr-defined]

    with anyio.fail_after(5):
        async with running_server(answer_then_wait, ping_interval=None) as (_, uri):
            await exchange_two_messages(uri, released)


def client_frames(payloads: list[bytes]) -> list[bytes]:
    return [
        serialize_frame(Frame(Opcode.BINARY, payload), mask=os.urandom(4)) for payload in payloads
    ]


async def test_kept_back_frames_that_find_the_transport_full_still_leave(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The transport takes nothing at the moment the kept-back frame is
    # flushed (after the handler yields elsewhere): the writer task must take
    # over, started from the floor's callback (Trio's callback task,
    # asyncio's call_soon). Nothing else would ever write it.
    released = anyio.Event()
    handler = FullTransport(monkeypatch).answer_while_full_then_wait(released)
    with anyio.fail_after(5):
        async with running_server(handler, ping_interval=None) as (_, uri):
            await exchange_two_messages(uri, released)


async def exchange_two_messages(uri: str, released: anyio.Event) -> None:
    """Send two messages at once; get the first echo, release the handler, get the second."""
    client = await RawClient.open(port_of(uri))
    await client.stream.send(b"".join(client_frames([b"one", b"two"])))
    assert (await client.recv_frame()).data == b"one"
    released.set()
    assert (await client.recv_frame()).data == b"two"
    await client.send_close()
    assert await client.recv_close() == (1000, "")
    await client.wait_for_eof()
