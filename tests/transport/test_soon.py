"""soon_caller(): run a callback once the calling task yields, on both loops.

Write coalescing relies on it: small frames kept back while the handler works
through queued messages must leave once its task yields, whatever it awaits.
On Trio the floor runs such callbacks from one task per run
(``wsserver._transport._soon``); on asyncio from the loop's ``call_soon``.
"""

from __future__ import annotations

import logging

import anyio
import pytest
import sniffio
from anyio.lowlevel import checkpoint

from wsserver._transport import soon_caller

from .support import TIMEOUT_SECONDS, accepted_pair

pytestmark = pytest.mark.anyio


async def test_callbacks_run_in_order_once_the_caller_yields() -> None:
    ran: list[int] = []
    with anyio.fail_after(TIMEOUT_SECONDS):
        async with accepted_pair() as (server, _):
            soon = soon_caller(server)
            assert soon is not None
            for n in range(3):
                soon(lambda n=n: ran.append(n))
            assert ran == []  # nothing runs until this task yields
            while len(ran) < 3:
                await checkpoint()
            assert ran == [0, 1, 2]


async def test_callbacks_of_many_connections_share_one_trio_task() -> None:
    ran: list[int] = []
    with anyio.fail_after(TIMEOUT_SECONDS):
        for round_ in range(3):
            async with accepted_pair() as (server, _):
                soon = soon_caller(server)
                assert soon is not None
                soon(lambda round_=round_: ran.append(round_))
                while len(ran) <= round_:
                    await checkpoint()
    assert ran == [0, 1, 2]
    if sniffio.current_async_library() == "trio":
        assert callback_tasks() == 1


# Trio only: this is the floor's own runner task. On asyncio the loop's
# call_soon does the same (its exception handler logs), but the test runner
# replaces that handler to fail the test instead.
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_failing_callback_is_logged_and_the_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    def fail() -> None:
        raise RuntimeError("boom")

    with anyio.fail_after(TIMEOUT_SECONDS):
        async with accepted_pair() as (server, _):
            soon = soon_caller(server)
            assert soon is not None
            soon(fail)
            soon(lambda: ran.append("after"))
            with caplog.at_level(logging.ERROR):
                while not ran:
                    await checkpoint()
    assert ran == ["after"]
    [record] = [r for r in caplog.records if r.name == "wsserver.server"]
    assert record.exc_info is not None and str(record.exc_info[1]) == "boom"


def callback_tasks() -> int:
    import trio

    found = 0
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        assert task is not None
        found += task.name == "wsserver call_soon"
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return found
