"""A place for one task to wait until another wakes it: the cheapest wake-up on each loop.

The shared layer's hot waits have exactly one waiter each (``recv()`` waiting
for a message, the reader waiting for room in the queue), and it re-checks its
condition after every wake-up. :class:`anyio.Event` is more than that needs:
on asyncio each one holds an :class:`asyncio.Event` with its own waiter deque
(over 600 bytes), on Trio a :class:`trio.Event` with a parking lot; and one is
made per wait. A parker is made once per connection, holds one reference
while a task waits, and parks on the loop's own primitive: a future on
asyncio, :func:`trio.lowlevel.wait_task_rescheduled` on Trio.

The waiter must check its condition and park with no ``await`` in between,
and the waker must change the condition before it calls :meth:`Parker.unpark`:
then no wake-up is lost, as with a condition variable.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import trio

__all__ = ["Parker", "new_parker"]


class Parker(Protocol):
    """One task parks, another unparks it. Cancelling the parked task unparks it too."""

    def parked(self) -> bool:
        """Tell whether a task is parked here."""

    async def park(self) -> None:
        """Wait until :meth:`unpark` is called (or the caller is cancelled).

        Raises:
            RuntimeError: if a task is parked here already.
        """

    def unpark(self) -> None:
        """Wake the parked task, if any; otherwise do nothing."""


class _TrioParker:
    __slots__ = ("_abort", "_task")

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None
        self._abort = self._aborted  # bound once: no allocation per wait

    def parked(self) -> bool:
        return self._task is not None

    async def park(self) -> None:
        if self._task is not None:
            raise RuntimeError("a task is parked here already")
        self._task = trio.lowlevel.current_task()
        await trio.lowlevel.wait_task_rescheduled(self._abort)

    def unpark(self) -> None:
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)

    def _aborted(self, _: Any) -> trio.lowlevel.Abort:
        # Cancelled while parked: forget the task, so unpark() cannot wake it twice.
        self._task = None
        return trio.lowlevel.Abort.SUCCEEDED


class _AsyncioParker:
    __slots__ = ("_future", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._future: asyncio.Future[None] | None = None

    def parked(self) -> bool:
        return self._future is not None

    async def park(self) -> None:
        if self._future is not None:
            raise RuntimeError("a task is parked here already")
        future = self._future = self._loop.create_future()
        try:
            # anyio cancels an asyncio task by cancelling what it awaits: this future.
            await future
        finally:
            self._future = None

    def unpark(self) -> None:
        future = self._future
        if future is not None:
            self._future = None
            if not future.done():
                future.set_result(None)


def new_parker() -> Parker:
    """Make a parker for the running loop (Trio or asyncio).

    Returns:
        The parker; use it from tasks of this loop only.

    Raises:
        RuntimeError: if no loop runs in this thread.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    # Trio in guest mode runs its tasks outside any asyncio task: Trio's primitive then.
    if loop is not None and asyncio.current_task(loop) is not None:
        return _AsyncioParker(loop)
    trio.lowlevel.current_task()  # raises RuntimeError outside Trio as well
    return _TrioParker()
