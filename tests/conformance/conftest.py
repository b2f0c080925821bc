"""One echo server per test module and backend, for the raw-socket conformance suite.

``anyio_backend`` is module-scoped here so that a module-scoped async fixture
may depend on it: pytest then groups each module's tests by backend, and the
server started for the first test of a group serves the whole group.

A module tunes its server with a ``SERVER_OPTIONS`` dict of :func:`wsserver.serve`
options; ``ping_interval`` is always ``None`` so that no keepalive ping gets in
the way of what the tests read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

import wsserver

from ..serving import running_server


@pytest.fixture(scope="module", params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every conformance case runs on both backends."""
    return str(request.param)


async def echo(websocket: wsserver.WebSocketServerProtocol) -> None:
    """Send every message back as it came: text as text, binary as binary."""
    async for message in websocket:
        await websocket.send(message)


@pytest.fixture(scope="module")
async def port(anyio_backend: str, request: pytest.FixtureRequest) -> AsyncIterator[int]:
    """The port of an echo server run with the module's ``SERVER_OPTIONS``."""
    options = getattr(request.module, "SERVER_OPTIONS", {})
    async with serve_echo(**options) as echo_port:
        yield echo_port


@asynccontextmanager
async def serve_echo(**options: Any) -> AsyncIterator[int]:
    """Serve :func:`echo` with ``options`` (keepalive off); yield the port."""
    async with running_server(echo, **{"ping_interval": None, **options}) as (server, _url):
        yield int(server.sockets[0].getsockname()[1])
