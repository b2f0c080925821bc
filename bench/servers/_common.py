"""What every benchmark server shares: its command line, file limit and ready line."""

from __future__ import annotations

import argparse
import resource

HOST = "127.0.0.1"
MAX_MESSAGE_BYTES = 2**21  # above the 1 MiB scenario, the same for every contender
OPEN_FILES = 20_000  # the idle-memory scenario holds 5,000 connections


def parse_port() -> int:
    """Read ``--port`` from the command line and raise the open-file limit."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    port: int = parser.parse_args().port
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = OPEN_FILES if hard == resource.RLIM_INFINITY else max(hard, OPEN_FILES)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    return port


def announce_ready() -> None:
    """Tell bench_echo.py that the server is listening."""
    print("READY", flush=True)
