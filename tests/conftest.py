"""Fixtures shared by every test directory."""

from __future__ import annotations

import signal

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # A shell that starts the suite in the background (nohup, `&`, some CI
    # runners) makes it ignore SIGINT, and an ignored signal stays ignored in
    # every program the tests start: those that press Ctrl-C on an example or
    # on the command line would wait forever. Give them a terminal's Ctrl-C.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every I/O test runs on both backends."""
    return str(request.param)
