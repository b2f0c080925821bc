"""Shutdown under load: server.close() while 2,000 handlers are sending, on both backends.

Once all 2,000 clients are connected, every handler sends a burst of
:data:`BURST_MESSAGES` numbered text messages (random sizes up to 2 KiB) as
fast as its client reads them and records, after each ``send()`` returned,
the number it sent. The test closes the server as soon as every handler has
sent :data:`MESSAGES_BEFORE_CLOSE` of them, most bursts half done. Every
client must then have received, in order and with no gap, at least every
message up to the last one its handler reported as sent, and then a 1001
close frame; ``wait_closed()`` must return, every handler must have ended,
and no task may be left behind.
"""

from __future__ import annotations

import random

import anyio
import anyio.lowlevel
import pytest

import wsserver

from .harness import (
    ClientProcess,
    HandlerTally,
    error_lines,
    raise_open_file_limit,
    serving,
    task_count,
)

pytestmark = pytest.mark.anyio

CONNECTIONS = 2000
#: Bounded so that what is in flight at the close stays readable in seconds:
#: a handler sending without end fills the socket buffers, 0.5 MB per client.
BURST_MESSAGES = 40
#: Close once every handler has sent at least this many messages.
MESSAGES_BEFORE_CLOSE = 5
MAX_PADDING_BYTES = 2048
TEST_TIMEOUT_SECONDS = 120
#: Bound on wait_closed(): every client must read what is in flight and answer the close.
WAIT_CLOSED_SECONDS = 60


async def test_close_under_load_delivers_every_sent_message_then_1001(
    caplog: pytest.LogCaptureFixture,
) -> None:
    raise_open_file_limit(CONNECTIONS + 200)
    tasks_before = task_count()
    last_sent: dict[int, int] = {}
    slow_handlers = set(range(CONNECTIONS))
    everyone_sent_enough = anyio.Event()

    async def burst(websocket: wsserver.WebSocketServerProtocol) -> None:
        index = int(websocket.path.rsplit("/", 1)[1])
        rng = random.Random(index)
        await tally.wait_all_started(CONNECTIONS)
        for number in range(BURST_MESSAGES):
            padding = "x" * rng.randint(0, MAX_PADDING_BYTES)
            await websocket.send(f"{number}:{padding}")
            last_sent[index] = number
            # Let the other handlers run: a send that does not block does not
            # yield every time on asyncio, and the close should find most
            # bursts half done on both backends.
            await anyio.lowlevel.checkpoint()
            if number + 1 == MESSAGES_BEFORE_CLOSE:
                slow_handlers.discard(index)
                if not slow_handlers:
                    everyone_sent_enough.set()
        await websocket.wait_closed()

    tally = HandlerTally()
    # A generous close timeout: this test is about delivery, not about
    # dropping clients that answer the close late on a busy machine.
    options = {"close_timeout": WAIT_CLOSED_SECONDS, "ping_interval": None}
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with serving(tally.counted(burst), **options) as (server, port):
            clients_running = ClientProcess.start_clients("burst", port, connections=CONNECTIONS)
            async with clients_running as clients:
                await clients.expect_ready()
                await everyone_sent_enough.wait()
                bursts_unfinished = sum(
                    number < BURST_MESSAGES - 1 for number in last_sent.values()
                )
                server.close()
                with anyio.fail_after(WAIT_CLOSED_SECONDS):
                    await server.wait_closed()
                sent = dict(last_sent)
                finished = tally.finished
                summary = await clients.summary()
    assert summary["errors"] == []
    assert summary["close_codes"] == {"1001": CONNECTIONS}
    received = {int(index): number for index, number in summary["last"].items()}
    short = {
        index: (received.get(index), number)
        for index, number in sent.items()
        if received.get(index, -1) < number
    }
    assert short == {}, f"(received, sent) for clients missing messages: {short}"
    assert len(sent) == CONNECTIONS
    assert finished == tally.started == CONNECTIONS
    assert tally.unexpected == []
    assert server.websockets == set()
    assert task_count() == tasks_before
    assert error_lines(caplog) == []
    # The close came in the middle of the bursts (all 2,000 in the runs so far).
    assert bursts_unfinished > 0
