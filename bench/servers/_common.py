"""What every benchmark server shares: its command line, file limit and ready line."""

from __future__ import annotations

import argparse
import resource

HOST = "127.0.0.1"
MAX_MESSAGE_BYTES = 2**21  # above the 1 MiB scenario, the same for every contender
OPEN_FILES = 20_000  # the idle-memory scenario holds 5,000 connections
DEFLATE = False
"""Whether ``--deflate`` was given: offer permessage-deflate at the library's defaults."""


def parse_port() -> int:
    """Read ``--port`` (and ``--deflate``) from the command line; raise the open-file limit."""
    global DEFLATE
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--deflate", action="store_true", help="enable permessage-deflate")
    arguments = parser.parse_args()
    port: int = arguments.port
    DEFLATE = arguments.deflate
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = OPEN_FILES if hard == resource.RLIM_INFINITY else max(hard, OPEN_FILES)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    return port


def compression() -> str | None:
    """The ``compression`` option of websockets and wsserver: ``"deflate"`` with ``--deflate``."""
    return "deflate" if DEFLATE else None


def announce_ready() -> None:
    """Tell bench_echo.py that the server is listening."""
    print("READY", flush=True)
