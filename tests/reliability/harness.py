"""What the reliability tests share: a server with counted handlers, helper
processes, and the process's own resources (file descriptors, tasks).

The clients run in a separate process (:mod:`tests.reliability.loadclient`):
on this two-core machine the server then has a core of its own, and what the
tests measure in this process (open files, tasks) is the server's alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn

import anyio
import anyio.abc
import pytest
import sniffio
from anyio.streams.buffered import BufferedByteReceiveStream

import wsserver

CLIENT_SCRIPT = Path(__file__).with_name("loadclient.py")
SERVER_SCRIPT = Path(__file__).with_name("memserver.py")
#: A listen backlog large enough that 256 handshakes in flight never overflow it.
BACKLOG = 4096
#: The longest line the client process writes (its JSON summary).
MAX_LINE_BYTES = 2**22


def in_ci() -> bool:
    """Tell whether the tests run under CI (``CI=true``, as CI services set it)."""
    return os.environ.get("CI", "").lower() in ("true", "1")


def unavailable(reason: str) -> NoReturn:
    """Give up on a test the machine cannot run: fail under CI, skip elsewhere.

    A skip would let CI pass without the test ever running, so CI, whose
    machine is ours to configure, fails loudly instead.

    Raises:
        pytest.fail.Exception: under CI.
        pytest.skip.Exception: elsewhere.
    """
    if in_ci():
        pytest.fail(f"{reason}: CI=true, so this fails instead of skipping", pytrace=False)
    pytest.skip(reason)


def raise_open_file_limit(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit; give up on the test if that is too low.

    Raises:
        pytest.fail.Exception: under CI, if the hard limit is below ``needed``.
        pytest.skip.Exception: elsewhere, in that case.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < needed:
        unavailable(
            f"needs {needed} open files, the hard limit is {hard} "
            f"(raise it with `ulimit -Hn {needed}` as root, or in the container's settings)"
        )


def open_fd_count() -> int:
    """How many file descriptors this process has open."""
    return len(os.listdir("/proc/self/fd"))


async def wait_for_fd_count(target: int, slack: int, seconds: float = 5.0) -> int:
    """Wait until the open fd count is within ``slack`` of ``target``; return the last count.

    asyncio closes a transport's socket in a callback after ``close()``, so the
    count may lag the server's shutdown by a loop turn or two.
    """
    with anyio.move_on_after(seconds):
        while abs(open_fd_count() - target) > slack:
            await anyio.sleep(0.05)
    return open_fd_count()


RUN_WIDE_TASK_NAMES = frozenset({"wsserver call_soon"})
"""Tasks that live as long as the Trio run, not a connection: started once, on first use.

``wsserver._transport._soon`` runs the callbacks of Trio's write coalescing
from one system task per run; tests/transport/test_soon.py checks there is
only ever one.
"""


def task_count() -> int:
    """How many tasks the current event loop runs (Trio: the whole task tree).

    Trio tasks that belong to the run rather than to any connection
    (:data:`RUN_WIDE_TASK_NAMES`) are not counted, so a count taken before
    the first connection compares with one taken after the last.
    """
    if sniffio.current_async_library() == "asyncio":
        return len(asyncio.all_tasks())
    import trio

    count = 0
    root = trio.lowlevel.current_root_task()
    assert root is not None
    pending = [root]
    while pending:
        task = pending.pop()
        if task.name not in RUN_WIDE_TASK_NAMES:
            count += 1
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return count


def error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log records at ERROR or above: the server never logs one for a misbehaving peer."""
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


class HandlerTally:
    """Counts handler runs and anything unexpected they see.

    Wrap a handler body with :meth:`counted`: it counts the start, the end (in a
    ``finally``, so every way out counts), treats
    :class:`~wsserver.ConnectionClosed` as a normal end, and records any other
    exception before re-raising it.
    """

    def __init__(self) -> None:
        self.started = 0
        self.finished = 0
        self.unexpected: list[str] = []
        self.all_started = anyio.Event()
        self.expected_count: int | None = None

    def counted(
        self, body: Callable[[wsserver.WebSocketServerProtocol], Awaitable[None]]
    ) -> Callable[[wsserver.WebSocketServerProtocol], Awaitable[None]]:
        async def handler(websocket: wsserver.WebSocketServerProtocol) -> None:
            self.started += 1
            if self.started == self.expected_count:
                self.all_started.set()
            try:
                await body(websocket)
            except wsserver.ConnectionClosed:
                pass
            except BaseException as exc:
                if not isinstance(exc, anyio.get_cancelled_exc_class()):
                    self.unexpected.append(f"{websocket.path}: {exc!r}")
                raise
            finally:
                self.finished += 1

        return handler

    async def wait_all_started(self, count: int) -> None:
        """Wait until ``count`` handlers have started."""
        self.expected_count = count
        if self.started >= count:
            return
        await self.all_started.wait()


async def echo(websocket: wsserver.WebSocketServerProtocol) -> None:
    """Send every message back."""
    async for message in websocket:
        await websocket.send(message)


@asynccontextmanager
async def serving(
    handler: Callable[[wsserver.WebSocketServerProtocol], Awaitable[None]], **options: Any
) -> AsyncIterator[tuple[wsserver.WebSocketServer, int]]:
    """Serve on 127.0.0.1 with a large backlog; yield ``(server, port)``.

    On exit the server is closed (if the test did not close it) and waited for.
    """
    options.setdefault("backlog", BACKLOG)
    async with anyio.create_task_group() as task_group:
        server = await task_group.start(
            lambda task_status: wsserver.serve(
                handler, "127.0.0.1", 0, task_status=task_status, **options
            )
        )
        try:
            yield server, server.sockets[0].getsockname()[1]
        finally:
            server.close()
            with anyio.fail_after(60):
                await server.wait_closed()


class ChildProcess:
    """A helper process speaking in lines on stdin / stdout, seen from the test."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        assert process.stdout is not None
        self._stdout = BufferedByteReceiveStream(process.stdout)

    @classmethod
    @asynccontextmanager
    async def start(cls, script: Path, *arguments: str) -> AsyncIterator[ChildProcess]:
        """Run ``script`` with ``arguments``; kill it on exit if it still runs."""
        process = await anyio.open_process(
            [sys.executable, str(script), *arguments],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
        )
        try:
            yield cls(process)
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                await process.wait()
                await process.aclose()

    async def read_line(self) -> str:
        """The next line the process writes.

        :raises AssertionError: if the process exits first.
        """
        try:
            line = await self._stdout.receive_until(b"\n", MAX_LINE_BYTES)
        except (anyio.IncompleteRead, anyio.EndOfStream):
            raise AssertionError("the helper process exited early") from None
        return line.decode()

    async def send_line(self, line: str) -> None:
        """Write one line to the process's stdin."""
        assert self.process.stdin is not None
        await self.process.stdin.send(line.encode() + b"\n")

    async def ask(self, command: str) -> dict[str, Any]:
        """Send a command line; return the JSON line that answers it."""
        await self.send_line(command)
        answer: dict[str, Any] = json.loads(await self.read_line())
        return answer


class ClientProcess(ChildProcess):
    """The client process (:mod:`tests.reliability.loadclient`)."""

    @classmethod
    @asynccontextmanager
    async def start_clients(
        cls, mode: str, port: int, **options: Any
    ) -> AsyncIterator[ClientProcess]:
        """Start the clients in ``mode`` against ``port``; options become ``--flags``."""
        arguments = [mode, "--port", str(port)]
        for name, value in options.items():
            arguments += [f"--{name.replace('_', '-')}", str(value)]
        async with cls.start(CLIENT_SCRIPT, *arguments) as child:
            assert isinstance(child, ClientProcess)
            yield child

    async def expect_ready(self) -> None:
        """Wait until every client finished its opening handshake."""
        line = await self.read_line()
        assert line == "ready", line

    async def tell(self) -> None:
        """Send a line: the ``idle`` and ``slow`` modes stop on it."""
        await self.send_line("go")

    async def summary(self) -> dict[str, Any]:
        """Wait for the summary line and for the process to exit; return the summary."""
        result: dict[str, Any] = json.loads(await self.read_line())
        assert await self.process.wait() == 0
        return result
