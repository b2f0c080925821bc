"""Run ``python -m wsserver`` as a user does: a subprocess, real sockets, its exit status.

:func:`running_cli` starts the command line and returns once it printed its
listening line, so nothing polls; :func:`run_cli` runs it to its end, for the
start-up errors.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import attrs

#: A guard, not a measurement: a command line that never starts or never
#: stops fails its test instead of hanging the suite.
GUARD_SECONDS = 30

LISTENING = re.compile(
    r"^wsserver: serving (?P<places>.+) on (?P<backend>trio|asyncio) \(Ctrl-C to stop\)$"
)
TCP_PLACE = re.compile(r"(?P<host>\d+\.\d+\.\d+\.\d+|\[[0-9a-f:]+\]):(?P<port>\d+)")


PYTHON_M = (sys.executable, "-m", "wsserver")
"""``python -m wsserver`` with this interpreter."""


def _environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    # The application's modules must come from the working directory, as for
    # a user, not from a PYTHONPATH the test run happens to have.
    return {**os.environ, "PYTHONPATH": "", **(extra or {})}


def run_cli(
    args: Sequence[str],
    cwd: Path,
    *,
    pass_fds: Sequence[int] = (),
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m wsserver ARGS`` to its end; return its status and output.

    ``env`` adds to (or overrides) this process's environment.
    """
    return subprocess.run(
        [*PYTHON_M, *args], cwd=cwd, capture_output=True, text=True, timeout=GUARD_SECONDS,
        env=_environment(env), stdin=subprocess.DEVNULL, pass_fds=pass_fds,
    )


@attrs.define
class Running:
    """A command line that is listening."""

    process: subprocess.Popen[str]
    line: str
    """The listening line, ``wsserver: serving ws://127.0.0.1:8765 on trio (Ctrl-C to stop)``."""
    output: list[str]
    """Everything it wrote so far (standard output and error, merged)."""

    @property
    def port(self) -> int:
        """The TCP port of the first address in the listening line."""
        match = TCP_PLACE.search(self.line)
        assert match is not None, self.line
        return int(match["port"])

    def wait_for(self, text: str | re.Pattern[str]) -> None:
        """Read the output until a line containing ``text`` (or matching it) arrives."""
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            if text.search(line) if isinstance(text, re.Pattern) else text in line:
                return
        raise AssertionError(f"{text!r} never came:\n" + "".join(self.output))

    def stop(self, signum: int | None = signal.SIGTERM) -> tuple[int, str]:
        """Send ``signum`` (None: none), wait for the end; return the status and all output."""
        if signum is not None:
            self.process.send_signal(signum)
        rest, _ = self.process.communicate(timeout=GUARD_SECONDS)
        self.output.append(rest)
        return self.process.returncode, "".join(self.output)


@contextmanager
def running_cli(
    args: Sequence[str],
    cwd: Path,
    *,
    pass_fds: Sequence[int] = (),
    program: Sequence[str] = PYTHON_M,
    ready: re.Pattern[str] = LISTENING,
) -> Iterator[Running]:
    """Run ``python -m wsserver ARGS`` (or ``program ARGS``) until it prints its listening line.

    ``ready`` is the line to wait for, when it is not the command line's own
    (the supervisor of ``--workers`` says where it listens itself).

    On exit, a process still running gets SIGTERM, then SIGKILL if it does
    not end within the guard.
    """
    process = subprocess.Popen(
        [*program, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, text=True, env=_environment(), pass_fds=pass_fds,
    )
    assert process.stdout is not None
    watchdog = threading.Timer(GUARD_SECONDS * 2, process.kill)
    watchdog.start()
    output: list[str] = []
    try:
        for line in process.stdout:
            output.append(line)
            if ready.search(line.rstrip("\n")):
                break
        else:
            process.wait()
            raise AssertionError(
                f"exited with {process.returncode} before listening:\n" + "".join(output)
            )
        yield Running(process, line.rstrip("\n"), output)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=GUARD_SECONDS)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.communicate()
