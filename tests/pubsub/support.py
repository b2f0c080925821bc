"""A real redis-server for the tests: started on a free port in a temporary directory.

The tests never mock Redis. ``dev.py`` installs Debian's ``redis-server``
when it is missing; without it the Redis tests fail under ``CI=true`` and
are skipped elsewhere, saying so loudly.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

#: Bound on how long redis-server may take to say it is ready.
START_TIMEOUT_SECONDS = 10


def unavailable(reason: str) -> NoReturn:
    """Fail under CI, skip elsewhere; either way, say so loudly."""
    message = f"!!! Redis tests NOT RUN: {reason} (run `python3 dev.py test`) !!!"
    print(f"\n{message}", file=sys.__stderr__, flush=True)
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server process that a test can kill and start again on the same port.

    Args:
        executable: the redis-server binary.
        directory: where it runs (it keeps nothing there: persistence is off).
    """

    def __init__(self, executable: str, directory: Path) -> None:
        self.executable = executable
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's URL."""
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server and return once it accepts connections."""
        self.process = subprocess.Popen(
            [
                self.executable,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=self.directory,
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        seen = b""
        # Wait for its own word that it is ready, not for a guessed delay.
        while b"Ready to accept connections" not in seen:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([self.process.stdout], [], [], max(remaining, 0))
            if not readable:
                self.stop()
                raise RuntimeError(f"redis-server did not start: {seen.decode(errors='replace')}")
            chunk = os.read(self.process.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"redis-server exited: {seen.decode(errors='replace')}")
            seen += chunk

    def stop(self) -> None:
        """Kill the server (no goodbye to its clients) and wait for it to exit."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None


def redis_executable() -> str:
    """The redis-server binary, or the test is skipped (failed under CI)."""
    executable = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if executable is None:
        unavailable("redis-server is not installed")
    try:
        import coredis  # noqa: F401
    except ImportError:
        unavailable("coredis (the wsserver[redis] extra) is not installed")
    return executable


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A running redis-server of the test's own, stopped after it."""
    server = RedisServer(redis_executable(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
