"""Run a callback once the running Trio task yields: Trio's counterpart of ``loop.call_soon``.

A writer that keeps small frames back while its task works through queued
messages must be sure they leave soon even if the task then waits for
something else. asyncio has ``call_soon`` for that. Trio's only callback
entry, :meth:`trio.lowlevel.TrioToken.run_sync_soon`, wakes the run loop
through its wake-up socket: a system call per callback, which is what
coalescing means to save.

So each Trio run gets one task that runs callbacks. It waits in
:func:`trio.lowlevel.wait_task_rescheduled`; :func:`call_soon` appends the
callback and, if the task waits, reschedules it, which costs a list append and
no system call. Trio runs it in its next batch, after the task that called
:func:`call_soon` has yielded. It is a Trio *system task*: its parent is the
run itself, which cancels it and waits for it once the main task has
returned, so it never outlives the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

__all__ = ["trio_call_soon"]

_logger = logging.getLogger("wsserver.server")


class _SoonRunner:
    __slots__ = ("_abort", "_callbacks", "_waiting")

    def __init__(self) -> None:
        self._callbacks: list[Callable[[], None]] = []
        self._waiting: trio.lowlevel.Task | None = None
        self._abort = self._aborted

    def call_soon(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)
        task = self._waiting
        if task is not None:
            self._waiting = None
            trio.lowlevel.reschedule(task)

    async def run(self) -> None:
        while True:
            if not self._callbacks:
                self._waiting = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._abort)
            callbacks, self._callbacks = self._callbacks, []
            for callback in callbacks:
                try:
                    callback()
                except Exception:
                    # A failure here would end the whole Trio run; the caller's
                    # own error handling missed it, so say so and go on.
                    _logger.error("callback %r failed", callback, exc_info=True)

    def _aborted(self, _: Any) -> trio.lowlevel.Abort:
        self._waiting = None
        return trio.lowlevel.Abort.SUCCEEDED


_RUNNER: trio.lowlevel.RunVar[_SoonRunner] = trio.lowlevel.RunVar("wsserver_soon_runner")


def trio_call_soon() -> Callable[[Callable[[], None]], None]:
    """The running Trio run's ``call_soon``; starts its runner task on first use.

    Returns:
        A function that takes a callback without arguments and runs it from
        the runner task once the calling task yields. Callbacks run in the
        order given; one that raises is logged and the others still run.

    Raises:
        RuntimeError: outside a Trio run.
    """
    try:
        runner = _RUNNER.get()
    except LookupError:
        runner = _SoonRunner()
        trio.lowlevel.spawn_system_task(runner.run, name="wsserver call_soon")
        _RUNNER.set(runner)
    return runner.call_soon
