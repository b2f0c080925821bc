"""The opening handshake: TLS, the HTTP request, the hooks, and the response.

Everything here runs under one cancel scope whose deadline is ``open_timeout``:
the TLS handshake and the HTTP exchange together, as the docs promise. Until
the response is sent, this code is the only reader of the stream; the
receiving side (:mod:`wsserver._receiving`) takes over afterwards, starting
with any frame that arrived in the same read as the request.
"""

from __future__ import annotations

import functools
import inspect
import logging
import ssl
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from anyio.streams.tls import TLSStream

from ._sending import Outbox
from .sansio import Headers, Request, Response, State

if TYPE_CHECKING:
    from .connection import WebSocketServerProtocol

__all__ = ["open_handshake", "takes_path"]

_READ_ERRORS = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)
_TLS_ERRORS = (ssl.SSLError, OSError, anyio.BrokenResourceError, anyio.EndOfStream)


async def open_handshake(
    ws: WebSocketServerProtocol,
    stream: anyio.abc.ByteStream,
    ssl_context: ssl.SSLContext | None,
    task_group: anyio.abc.TaskGroup,
) -> bool:
    """Run TLS (if any) and the opening handshake within ``open_timeout``.

    Sets ``ws._stream`` and ``ws._outbox`` for the rest of the connection's
    life. On a refusal, the answer is written and the client given
    ``close_timeout`` seconds to read it.

    Returns:
        Whether the connection is open.
    """
    options = ws.options
    with anyio.move_on_after(_forever(options.open_timeout)) as scope:
        if ssl_context is not None:
            try:
                stream = await TLSStream.wrap(
                    stream, server_side=True, ssl_context=ssl_context,
                    standard_compatible=False,
                )
            except _TLS_ERRORS as exc:
                ws.logger.info("TLS handshake failed: %s", exc)
                ws._stream = stream
                return False
        ws._stream = stream
        outbox = ws._outbox = Outbox(
            ws.protocol, stream, options.write_limit, task_group, ws._connection_broken
        )
        request = await _read_request(ws, stream)
        if request is not None and await _respond(ws, request):
            return True
    if scope.cancelled_caught:
        ws.logger.info("opening handshake timed out after %ss", options.open_timeout)
        return False
    if ws.protocol.state is State.CLOSING:
        # A refusal is on its way: give the client a moment to read it.
        await _linger(ws, stream, outbox)
    return False


async def _read_request(
    ws: WebSocketServerProtocol, stream: anyio.abc.ByteStream
) -> Request | None:
    """Read until the core parsed the request; ``None`` if it refused it or the client left."""
    core = ws.protocol
    read_limit = ws.options.read_limit
    while True:
        for event in core.events_received():
            if isinstance(event, Request):
                return event
        if core.handshake_exc is not None:
            ws._outbox.push()  # the core's 400/431
            return None
        try:
            data = await stream.receive(read_limit)
        except _READ_ERRORS:
            core.receive_eof()
            ws.logger.debug("connection closed during the opening handshake")
            return None
        core.receive_data(data)


async def _respond(ws: WebSocketServerProtocol, request: Request) -> bool:
    """Answer the request: 101, a hook's own answer, or a refusal. Tell whether it opened."""
    core = ws.protocol
    ws.path = request.path
    ws.request_headers = request.headers
    response = await _build_response(ws, request)
    # Whoever recorded why the handshake failed (the core's checks, an auth
    # hook) logged it already: one line per refusal.
    explained = core.handshake_exc is not None
    ws.response_headers = response.headers
    core.send_response(response)
    ws._outbox.push()
    if core.state is State.OPEN:
        # Checked first: reading the address costs more than the call when INFO is off.
        if ws.logger.isEnabledFor(logging.INFO):
            ws.logger.info("connection open: %s from %s", ws.path, _address(ws.remote_address))
        return True
    if not explained:
        # A 2xx/3xx from process_request is an answer (a page, a health
        # check), not a refusal: say which.
        what = "rejected" if response.status_code >= 400 else "answered over HTTP"
        ws.logger.info(
            "%s %s (%d %s)", ws.path, what, response.status_code, response.reason_phrase
        )
    return False


async def _build_response(ws: WebSocketServerProtocol, request: Request) -> Response:
    core = ws.protocol
    if ws.ws_server.is_closing():
        response = core.reject(HTTPStatus.SERVICE_UNAVAILABLE, "Server is shutting down.\n")
    else:
        try:
            response = await _accept_or_answer(ws, request)
        except Exception as exc:
            # A user's hook failed: answer 500, keep serving everyone else.
            ws.logger.error("handshake hook failed", exc_info=True)
            core.handshake_exc = exc
            response = core.reject(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                "Failed to open a WebSocket connection.\nSee server log for more information.\n",
            )
    server_header = ws.options.server_header
    if server_header is not None and "Server" not in response.headers:
        response.headers["Server"] = server_header
    return response


async def _accept_or_answer(ws: WebSocketServerProtocol, request: Request) -> Response:
    """Let process_request answer the request, else run the handshake checks."""
    answer = await ws.process_request(request.path, request.headers)
    if answer is not None:
        status, headers, body = answer
        status = HTTPStatus(status)
        return Response(status.value, status.phrase, Headers(headers), body)
    core = ws.protocol
    response = core.accept(request)
    if core.handshake_exc is None and response.status_code == 101:
        extra = ws.options.extra_headers
        if extra is not None:
            if callable(extra):
                extra = extra(ws.path, ws.request_headers)
            response.headers.update(extra)
    return response


async def _linger(
    ws: WebSocketServerProtocol, stream: anyio.abc.ByteStream, outbox: Outbox
) -> None:
    """After a refusal: write it, then read until the client closes, within close_timeout."""
    with anyio.move_on_after(_forever(ws.options.close_timeout)):
        await outbox.drain()
        try:
            while await stream.receive(ws.options.read_limit):
                pass
        except _READ_ERRORS:
            pass


def _forever(timeout: float | None) -> float:
    return float("inf") if timeout is None else timeout


def _address(address: object) -> str:
    if isinstance(address, tuple):
        return f"{address[0]}:{address[1]}"
    return str(address or "unix socket")


def takes_path(handler: Callable[..., Any]) -> bool:
    """Tell whether a handler has the legacy ``handler(websocket, path)`` signature.

    Cached per handler: inspecting a signature for every connection showed in
    handshake profiles.
    """
    try:
        return _takes_path_cached(handler)
    except TypeError:  # an unhashable callable
        return _inspect_takes_path(handler)


def _inspect_takes_path(handler: Callable[..., Any]) -> bool:
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return False
    positional = [
        p for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    required = [p for p in positional if p.default is p.empty]
    return len(required) >= 2


_takes_path_cached = functools.lru_cache(maxsize=256)(_inspect_takes_path)
