"""Load and faults: 2,000 concurrent connections echoing on one server, on both backends.

The clients live in a separate asyncio process (:mod:`.loadclient`). Every
connection sends messages of random sizes (0..64 KiB, log-uniform, seeded),
text and binary, each split into 1..4 fragments at random byte offsets, and
checks every echo comes back in order and unchanged.

Every one of the 2,000 connections sends :data:`FULL_MESSAGES` (50) messages,
all at once: 100,000 echoes checked per backend. The knobs
(:data:`FULL_CONNECTIONS`, :data:`FEW_MESSAGES`) remain to shorten a run by
hand; the whole file takes about 90 s for both backends on this two-core
machine.
"""

from __future__ import annotations

import logging

import anyio
import pytest

from .harness import (
    ClientProcess,
    HandlerTally,
    echo,
    error_lines,
    open_fd_count,
    raise_open_file_limit,
    serving,
    task_count,
    wait_for_fd_count,
)

pytestmark = pytest.mark.anyio

CONNECTIONS = 2000
FULL_CONNECTIONS = 2000
FULL_MESSAGES = 50
FEW_MESSAGES = 3
TOTAL_MESSAGES = FULL_CONNECTIONS * FULL_MESSAGES + (CONNECTIONS - FULL_CONNECTIONS) * FEW_MESSAGES
#: A tenth of the clients drop abruptly in the faults test.
DROP_FRACTION = 0.1
#: Open fds may differ from the baseline by this much (the loop's own
#: bookkeeping, a wakeup pipe opened lazily...), never by a connection per client.
FD_SLACK = 5
TEST_TIMEOUT_SECONDS = 150
#: Keepalive runs during the load (pings every few seconds) but never closes a
#: connection: on a machine busy with other work a pong can take long to come.
SERVER_OPTIONS = {"ping_interval": 3, "ping_timeout": None, "close_timeout": 30}


async def test_2000_connections_echo_every_message_in_order_unchanged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    raise_open_file_limit(CONNECTIONS + 200)
    tally = HandlerTally()
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with serving(tally.counted(echo), **SERVER_OPTIONS) as (server, port):
            options = {"full_connections": FULL_CONNECTIONS, "messages": FULL_MESSAGES}
            async with ClientProcess.start_clients(
                "echo", port, connections=CONNECTIONS, seed=1, few_messages=FEW_MESSAGES, **options
            ) as clients:
                summary = await clients.summary()
    assert summary["errors"] == []
    assert summary["connections"] == CONNECTIONS
    assert summary["completed"] == CONNECTIONS
    assert summary["close_1000"] == CONNECTIONS
    assert summary["messages_checked"] == TOTAL_MESSAGES
    assert (tally.started, tally.finished, tally.unexpected) == (CONNECTIONS, CONNECTIONS, [])
    assert server.websockets == set()
    assert error_lines(caplog) == []


async def test_a_tenth_of_clients_dropping_abruptly_leaks_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    raise_open_file_limit(CONNECTIONS + 200)
    fds_before = open_fd_count()
    tasks_before = task_count()
    tally = HandlerTally()
    with anyio.fail_after(TEST_TIMEOUT_SECONDS):
        async with serving(tally.counted(echo), **SERVER_OPTIONS) as (server, port):
            async with ClientProcess.start_clients(
                "echo", port, connections=CONNECTIONS, seed=2,
                full_connections=FULL_CONNECTIONS, messages=FULL_MESSAGES,
                few_messages=FEW_MESSAGES, drop_fraction=DROP_FRACTION,
            ) as clients:
                summary = await clients.summary()
            server.close()
            await server.wait_closed()
            assert server.websockets == set()
        fds_after = await wait_for_fd_count(fds_before, FD_SLACK)
    assert summary["errors"] == []
    # Seeded: the same clients drop every run, about a tenth of them.
    dropped = summary["dropped"]
    assert CONNECTIONS * DROP_FRACTION * 0.8 < dropped < CONNECTIONS * DROP_FRACTION * 1.2
    assert summary["completed"] == CONNECTIONS - dropped
    assert summary["close_1000"] == CONNECTIONS - dropped
    assert (tally.started, tally.finished, tally.unexpected) == (CONNECTIONS, CONNECTIONS, [])
    assert abs(fds_after - fds_before) <= FD_SLACK, (fds_before, fds_after)
    assert task_count() == tasks_before
    assert error_lines(caplog) == []
    logging.getLogger(__name__).info(
        "faults: %d dropped, %d completed, %d messages checked",
        dropped, summary["completed"], summary["messages_checked"],
    )
