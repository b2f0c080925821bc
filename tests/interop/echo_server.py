"""The wsserver side of the interoperability tests: an echo server that records each connection.

Every client under test talks to the same handler, whose behaviour depends on
the request path (the query string is ignored, so a test can tag its
connections, as in ``/echo?case=close-4000``):

* ``/echo`` (and any other path): echo every message back;
* ``/fragmented``: send a text message in three fragments and a binary
  message in two, then echo;
* ``/ping``: ping the client, wait for its pong, send ``"pong received"``, then echo;
* ``/close``: close at once with code 4001 and reason ``"server says bye"``;
* ``/forbidden``: rejected with 403 by ``process_request``;
* ``/report``: keep every message received in :attr:`EchoRecorder.reports`
  (how a browser page reports its results).

Once a connection has ended, its :class:`Session` is recorded, so that tests
can check what the server saw: subprotocol, handshake headers, close code and
reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import attrs
import sniffio

from wsserver import ConnectionClosed, Headers, WebSocketServerProtocol

from ..serving import running_server

__all__ = [
    "FRAGMENTED_BINARY",
    "FRAGMENTED_TEXT",
    "SERVER_CLOSE_CODE",
    "SERVER_CLOSE_REASON",
    "SERVER_PING_DATA",
    "SUBPROTOCOLS",
    "EchoRecorder",
    "Session",
    "echo_server",
    "extension_params",
    "run_asyncio_client",
    "run_in_thread",
]

T = TypeVar("T")

CLIENT_TIMEOUT_SECONDS = 20.0
"""How long a client run in a test may take, whatever it does."""

SESSION_TIMEOUT_SECONDS = 10.0
"""How long the server may take to record a connection after the client is done."""

FRAGMENTED_TEXT = ("frag", "ment", "ed \N{SNOWMAN}")
FRAGMENTED_BINARY = (b"\x00\x01", b"\xfe\xff")
SERVER_PING_DATA = b"server ping"
SERVER_CLOSE_CODE = 4001
SERVER_CLOSE_REASON = "server says bye"
SUBPROTOCOLS = ["chat.v2", "chat.v1"]
"""What the server supports, in order of preference."""


@attrs.frozen
class Session:
    """What the server saw of one connection, recorded once it ended."""

    path: str
    subprotocol: str | None
    request_headers: Headers
    response_headers: Headers
    close_code: int | None
    close_reason: str | None
    messages_received: int
    pong_received: bool


class EchoRecorder:
    """The handler and ``process_request`` of the echo server, and its records."""

    def __init__(self, pages: dict[str, tuple[str, bytes]] | None = None) -> None:
        self.sessions: list[Session] = []
        self.pages = pages or {}
        """Plain HTTP pages to serve: path -> (content type, body)."""
        self.reports: list[str | bytes] = []
        """Messages received on ``/report``."""
        self._recorded = anyio.Event()
        self._reported = anyio.Event()

    def process_request(self, path: str, request_headers: Headers) -> Any:
        """Reject ``/forbidden`` with 403; serve :attr:`pages`; let the rest through."""
        route = path.split("?", 1)[0]
        if route == "/forbidden":
            return 403, {"Content-Type": "text/plain"}, b"Forbidden.\n"
        if route in self.pages:
            content_type, body = self.pages[route]
            return 200, {"Content-Type": content_type, "Cache-Control": "no-store"}, body
        return None

    async def handler(self, websocket: WebSocketServerProtocol) -> None:
        """Serve one connection as its path says, then record it."""
        route = websocket.path.split("?", 1)[0]
        received = 0
        pong_received = False
        try:
            if route == "/report":
                async for message in websocket:
                    self.reports.append(message)
                    self._reported.set()
                return
            if route == "/close":
                await websocket.close(SERVER_CLOSE_CODE, SERVER_CLOSE_REASON)
                return
            if route == "/fragmented":
                await websocket.send(FRAGMENTED_TEXT)
                await websocket.send(FRAGMENTED_BINARY)
            elif route == "/ping":
                waiter = await websocket.ping(SERVER_PING_DATA)
                with anyio.fail_after(SESSION_TIMEOUT_SECONDS):
                    await waiter
                pong_received = True
                await websocket.send("pong received")
            async for message in websocket:
                received += 1
                await websocket.send(message)
        except ConnectionClosed:
            pass  # a close code other than 1000/1001: recorded below
        finally:
            with anyio.move_on_after(SESSION_TIMEOUT_SECONDS, shield=True):
                await websocket.wait_closed()
            self.sessions.append(
                Session(
                    path=websocket.path,
                    subprotocol=websocket.subprotocol,
                    request_headers=websocket.request_headers,
                    response_headers=websocket.response_headers,
                    close_code=websocket.close_code,
                    close_reason=websocket.close_reason,
                    messages_received=received,
                    pong_received=pong_received,
                )
            )
            self._recorded.set()

    async def session(self, path: str) -> Session:
        """Wait (bounded) for the connection to ``path`` (query string included) to end.

        :raises TimeoutError: if it does not end within ``SESSION_TIMEOUT_SECONDS``.
        """
        with anyio.fail_after(SESSION_TIMEOUT_SECONDS):
            while True:
                for session in self.sessions:
                    if session.path == path:
                        return session
                self._recorded = anyio.Event()
                await self._recorded.wait()


    async def report(self, timeout_seconds: float) -> str | bytes:
        """Wait (bounded) for the first message on ``/report``; return it.

        :raises TimeoutError: if none arrives within ``timeout_seconds``.
        """
        with anyio.fail_after(timeout_seconds):
            await self._reported.wait()
        return self.reports[0]


@asynccontextmanager
async def echo_server(
    pages: dict[str, tuple[str, bytes]] | None = None, **options: Any
) -> AsyncIterator[tuple[EchoRecorder, str]]:
    """Run the echo server on 127.0.0.1; yield ``(recorder, "ws://127.0.0.1:PORT")``."""
    recorder = EchoRecorder(pages)
    options.setdefault("subprotocols", SUBPROTOCOLS)
    options.setdefault("ping_interval", None)
    async with running_server(
        recorder.handler, process_request=recorder.process_request, **options
    ) as (_, url):
        yield recorder, url


def extension_params(header: str | None) -> set[str]:
    """The parameters of a one-extension ``Sec-WebSocket-Extensions`` value, as a set.

    ``"permessage-deflate; client_max_window_bits=10"`` gives
    ``{"permessage-deflate", "client_max_window_bits=10"}``; ``None`` gives an empty set.
    """
    if not header:
        return set()
    return {part.strip() for part in header.split(";")}


async def run_in_thread(function: Callable[[], T]) -> T:
    """Run a blocking client in a worker thread, bounded by ``CLIENT_TIMEOUT_SECONDS``.

    A client that hangs fails the test; its thread is abandoned.
    """
    with anyio.fail_after(CLIENT_TIMEOUT_SECONDS):
        return await anyio.to_thread.run_sync(function, abandon_on_cancel=True)


async def run_asyncio_client(function: Callable[[], Awaitable[T]]) -> T:
    """Run an asyncio client coroutine function, bounded by ``CLIENT_TIMEOUT_SECONDS``.

    On asyncio it runs on the server's own loop; on Trio in a thread with its
    own loop (``asyncio.run``).
    """
    if sniffio.current_async_library() == "asyncio":
        with anyio.fail_after(CLIENT_TIMEOUT_SECONDS):
            return await function()
    return await run_in_thread(lambda: asyncio.run(_bounded(function)))


async def _bounded(function: Callable[[], Awaitable[T]]) -> T:
    return await asyncio.wait_for(function(), CLIENT_TIMEOUT_SECONDS)
