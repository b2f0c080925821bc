"""running_loop(): which loop runs, told without sniffio."""

from __future__ import annotations

import asyncio

import outcome
import pytest
import trio

from wsserver._transport import running_loop


@pytest.mark.anyio
async def test_running_loop_is_the_asyncio_loop_or_none_on_trio(anyio_backend: str) -> None:
    if anyio_backend == "asyncio":
        assert running_loop() is asyncio.get_running_loop()
    else:
        assert running_loop() is None


def test_trio_in_guest_mode_on_an_asyncio_loop_is_trio() -> None:
    async def report() -> asyncio.AbstractEventLoop | None:
        return running_loop()

    async def host() -> tuple[bool, asyncio.AbstractEventLoop | None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[outcome.Outcome[asyncio.AbstractEventLoop | None]] = (
            loop.create_future()
        )
        trio.lowlevel.start_guest_run(
            report, run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done.set_result,
        )
        return running_loop() is loop, (await done).unwrap()

    host_sees_asyncio, guest_sees = asyncio.run(host())
    assert host_sees_asyncio
    assert guest_sees is None


def test_running_loop_outside_any_loop_raises() -> None:
    with pytest.raises(RuntimeError):
        running_loop()
