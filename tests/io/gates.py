"""A transport that is full exactly when a test says: for the outbox's worst moments."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import pytest

import wsserver._sending


class Releasable(Protocol):
    def wait(self) -> Awaitable[Any]: ...


class FullTransport:
    """While :attr:`full` is true, the outbox's direct writer takes nothing.

    Installed over ``wsserver._sending.direct_writer`` for the test: the
    writes that would go straight to the socket find it full, and what is
    left must go through the writer task (``stream.send``, not gated).
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = False
        real_direct_writer = wsserver._sending.direct_writer

        def gated_direct_writer(stream: Any) -> Any:
            write = real_direct_writer(stream)
            return None if write is None else (lambda view: 0 if self.full else write(view))

        monkeypatch.setattr(wsserver._sending, "direct_writer", gated_direct_writer)

    def answer_while_full_then_wait(
        self, released: Releasable
    ) -> Callable[[Any], Awaitable[None]]:
        """A handler: echo the first of two queued messages while full, wait, echo the second.

        The first answer is kept back by coalescing (a second message is
        queued) and flushed once the handler waits on ``released``, with the
        transport full: only the writer task, started from the flush, can
        send it.
        """

        async def handler(websocket: Any) -> None:
            first = await websocket.recv()
            self.full = True
            await websocket.send(first)
            await released.wait()
            self.full = False
            await websocket.send(await websocket.recv())

        return handler
