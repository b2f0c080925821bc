"""Running ``tests/workers/app.py`` under a supervisor, and watching its log."""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
from anyio.streams.text import TextReceiveStream

ROOT = Path(__file__).resolve().parent.parent.parent


class App:
    """A supervisor process and every line it and its workers logged so far."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = anyio.Event()

    async def read_log(self) -> None:
        """Collect the log lines until the process closes its standard error."""
        assert self.process.stderr is not None
        pending = ""
        async for chunk in TextReceiveStream(self.process.stderr):
            pending += chunk
            *complete, pending = pending.split("\n")
            self.lines.extend(complete)
            if complete:
                self._changed.set()
                self._changed = anyio.Event()
        if pending:
            self.lines.append(pending)
        self._changed.set()

    async def wait_for(self, pattern: str, start: int = 0) -> re.Match[str]:
        """Wait for a log line matching ``pattern``, from line ``start`` on."""
        compiled = re.compile(pattern)
        index = start
        while True:
            while index < len(self.lines):
                match = compiled.search(self.lines[index])
                index += 1
                if match:
                    return match
            if self.process.returncode is not None:
                raise AssertionError(f"no line matches {pattern!r}:\n" + "\n".join(self.lines))
            await self._changed.wait()

    async def count(self, pattern: str, number: int, start: int = 0) -> list[re.Match[str]]:
        """Wait for ``number`` lines matching ``pattern`` from line ``start``."""
        compiled = re.compile(pattern)
        while True:
            found = [m for line in self.lines[start:] if (m := compiled.search(line))]
            if len(found) >= number:
                return found
            if self.process.returncode is not None:
                raise AssertionError(
                    f"{len(found)} lines match {pattern!r}:\n" + "\n".join(self.lines)
                )
            await self._changed.wait()

    async def port(self) -> int:
        """The port the supervisor listens on."""
        return int((await self.wait_for(r"listening on 127\.0\.0\.1:(\d+) with")).group(1))

    def signal(self, number: int) -> None:
        """Send the supervisor a signal."""
        self.process.send_signal(signal.Signals(number))


@asynccontextmanager
async def running_app(*args: str, workers: int = 2) -> AsyncIterator[App]:
    """Start the app with ``workers`` workers; on exit make sure nothing is left running.

    Yields once every worker serves.
    """
    process = await anyio.open_process(
        [sys.executable, "-m", "tests.workers.app", "--workers", str(workers), *args],
        cwd=ROOT,
        stdin=None,
        stdout=None,
    )
    app = App(process)
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(app.read_log)
        try:
            await app.count(r"worker \d+ serving", workers)
            yield app
        except BaseException:
            print("\n".join(app.lines), file=sys.stderr)
            raise
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    # A test that failed midway: stop it the graceful way, then not.
                    process.send_signal(signal.SIGTERM)
                    with anyio.move_on_after(20):
                        await process.wait()
                if process.returncode is None:
                    process.kill()
                await process.wait()
        for pid in worker_pids(app):
            assert not alive(pid), f"worker {pid} outlived its supervisor"


def worker_pids(app: App) -> set[int]:
    """Every worker pid the supervisor reported serving."""
    return {
        int(m.group(1)) for line in app.lines if (m := re.search(r"worker (\d+) serving", line))
    }


def alive(pid: int) -> bool:
    """Whether a process (not a zombie) with this pid runs."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"


async def wait_exited(pid: int) -> None:
    """Wait until process ``pid`` (not a child of ours) has exited."""
    try:
        descriptor = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        # A pidfd becomes readable when its process terminates.
        await anyio.wait_readable(descriptor)
    finally:
        os.close(descriptor)
