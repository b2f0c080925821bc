"""Routing by path: one server, a handler per URL pattern, 404 for the rest.

A :class:`Router` is a connection handler, so it goes wherever a handler
goes: ``serve(router, host, port)`` on Trio or with anyio,
:func:`wsserver.asyncio_io.serve`, and ``python -m wsserver myapp:router``.
It also has a ``process_request(path, request_headers)`` method, which the
opening handshake consults after the ``process_request`` option: a path that
matches no route is answered ``404 Not Found`` over HTTP, before any
WebSocket connection is opened (a browser sees the handshake fail, not a
connection that opens and closes at once).

::

    router = Router()

    @router.route("/rooms/{name}")
    async def room(websocket, name):
        ...

    @router.route("/users/{user_id:int}/feed")
    async def feed(websocket, user_id):
        ...

Each handler is called as ``handler(websocket, **params)``.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import unquote

import attrs

from .options import HTTPResponse, ProcessRequest
from .sansio import Headers
from .sansio.frames import CloseCode

if TYPE_CHECKING:
    from .connection import WebSocketServerProtocol

__all__ = ["Route", "RouteHandler", "Router"]

RouteHandler = Callable[..., Awaitable[Any]]
"""A route's handler: ``handler(websocket, **params)``, one keyword per path parameter."""

H = TypeVar("H", bound=RouteHandler)

# {name} or {name:converter}; a name is a Python identifier, since it becomes a keyword.
_PARAMETER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([a-z]+))?\}")

_CONVERTERS: Final[Mapping[str, tuple[str, Callable[[str], Any]]]] = {
    # One segment, percent-decoded after matching so that %2F stays inside it.
    "str": (r"[^/]+", unquote),
    "int": (r"[0-9]+", int),
    # The rest of the path, slashes included.
    "path": (r".+", unquote),
}

NOT_FOUND_BODY: Final[bytes] = b"Not Found.\n"


@attrs.frozen
class Route:
    """One pattern and what serves it.

    Attributes:
        pattern: the path pattern, such as ``"/rooms/{name}"``.
        handler: ``handler(websocket, **params)``.
        process_request: this route's own ``process_request(path, request_headers)``,
            sync or async, or ``None``.
    """

    pattern: str
    handler: RouteHandler
    process_request: ProcessRequest | None = None
    _regex: re.Pattern[str] = attrs.field(init=False, repr=False, eq=False)
    _converters: dict[str, Callable[[str], Any]] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        regex, converters = _compile(self.pattern)
        # Frozen: these are its only writes, made once from the pattern.
        object.__setattr__(self, "_regex", regex)
        object.__setattr__(self, "_converters", converters)

    def match(self, path: str) -> dict[str, Any] | None:
        """Match a path without its query string.

        Args:
            path: the path, percent-encoded as it was requested.

        Returns:
            The parameters, converted, if ``path`` matches; else ``None``.
        """
        found = self._regex.fullmatch(path)
        if found is None:
            return None
        return {name: self._converters[name](text) for name, text in found.groupdict().items()}


def _compile(pattern: str) -> tuple[re.Pattern[str], dict[str, Callable[[str], Any]]]:
    """Turn ``"/rooms/{name}"`` into a regular expression and its parameters' converters.

    Raises:
        ValueError: if the pattern does not start with ``/``, names a
            parameter twice, uses an unknown converter, or has a stray brace.
    """
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        raise ValueError(f"a route pattern must start with '/', got {pattern!r}")
    regex = []
    converters: dict[str, Callable[[str], Any]] = {}
    position = 0
    for parameter in _PARAMETER.finditer(pattern):
        name, kind = parameter.group(1), parameter.group(2) or "str"
        if kind not in _CONVERTERS:
            raise ValueError(
                f"unknown converter {kind!r} in route {pattern!r};"
                f" use one of {', '.join(_CONVERTERS)}"
            )
        if name in converters:
            raise ValueError(f"parameter {name!r} appears twice in route {pattern!r}")
        regex.append(_literal(pattern, pattern[position : parameter.start()]))
        expression, converters[name] = _CONVERTERS[kind]
        regex.append(f"(?P<{name}>{expression})")
        position = parameter.end()
    regex.append(_literal(pattern, pattern[position:]))
    return re.compile("".join(regex)), converters


def _literal(pattern: str, text: str) -> str:
    if "{" in text or "}" in text:
        raise ValueError(f"malformed parameter in route {pattern!r}: {text!r}")
    return re.escape(text)


class Router:
    """Map URL paths to handlers; use it as the connection handler of a server.

    Patterns are paths with parameters in braces: ``{name}`` matches one
    path segment (percent-decoded), ``{name:int}`` digits, passed as an
    :class:`int`, and ``{name:path}`` the rest of the path, slashes included.
    Routes are tried in the order they were added; the first match wins.

    Matching ignores the query string: the handler finds it in
    ``websocket.path`` (``urllib.parse.urlsplit(websocket.path).query``). A
    trailing slash does not matter either: ``/rooms/`` is served by the route
    ``/rooms`` and the other way round, unless a route matches the path
    exactly (WebSocket clients do not follow redirects, so redirecting to the
    other spelling, as web frameworks do, would only make the handshake fail).

    A path that matches no route is answered ``404 Not Found``, during the
    handshake. Per-route checks (authentication, say) go in the route's
    ``process_request``; the server's ``process_request`` option runs first,
    for every path, known or not (health checks, for instance).

    Args:
        routes: initial routes, as a mapping or ``(pattern, handler)`` pairs.

    Raises:
        ValueError: if a pattern is malformed or added twice.
    """

    def __init__(
        self, routes: Mapping[str, RouteHandler] | Iterable[tuple[str, RouteHandler]] = ()
    ) -> None:
        self.routes: list[Route] = []
        """The routes, in the order they are tried."""
        pairs = routes.items() if isinstance(routes, Mapping) else routes
        for pattern, handler in pairs:
            self.add(pattern, handler)

    def add(
        self,
        pattern: str,
        handler: RouteHandler,
        *,
        process_request: ProcessRequest | None = None,
    ) -> Route:
        """Serve ``pattern`` with ``handler(websocket, **params)``.

        Args:
            pattern: the path pattern, such as ``"/rooms/{name}"``.
            handler: the coroutine function serving the route's connections.
            process_request: a hook for this route alone, called like the
                ``process_request`` option: ``(path, request_headers)``, sync
                or async, returning ``None`` to go on with the handshake or
                ``(status, headers, body)`` to answer instead.

        Returns:
            The new route.

        Raises:
            ValueError: if ``pattern`` is malformed or already routed.
            TypeError: if ``handler`` or ``process_request`` is not callable.
        """
        if not callable(handler):
            raise TypeError(f"a route handler must be callable, got {handler!r}")
        if process_request is not None and not callable(process_request):
            raise TypeError(f"process_request must be callable or None, got {process_request!r}")
        if any(route.pattern == pattern for route in self.routes):
            raise ValueError(f"route {pattern!r} is already served")
        route = Route(pattern, handler, process_request)
        self.routes.append(route)
        return route

    def route(
        self, pattern: str, *, process_request: ProcessRequest | None = None
    ) -> Callable[[H], H]:
        """Decorate a handler to serve ``pattern``; see :meth:`add`.

        Raises:
            ValueError: if ``pattern`` is malformed or already routed.
        """

        def decorate(handler: H) -> H:
            self.add(pattern, handler, process_request=process_request)
            return handler

        return decorate

    def match(self, path: str) -> tuple[Route, dict[str, Any]] | None:
        """Find the route serving ``path`` and its parameters.

        Args:
            path: the request target, query string included or not.

        Returns:
            ``(route, params)``, or ``None`` if no route matches.
        """
        path = path.partition("?")[0]
        for candidate in (path, _other_spelling(path)):
            if candidate is None:
                continue
            for route in self.routes:
                params = route.match(candidate)
                if params is not None:
                    return route, params
        return None

    async def process_request(self, path: str, request_headers: Headers) -> HTTPResponse | None:
        """Answer ``404 Not Found`` for a path no route serves; else run the route's hook.

        The opening handshake calls this after the server's ``process_request``
        option, when the router is the server's handler.

        Args:
            path: the request path and query string.
            request_headers: the request's headers.

        Returns:
            ``None`` to go on with the handshake, or the HTTP response to send.
        """
        found = self.match(path)
        if found is None:
            headers = Headers([("Content-Type", "text/plain; charset=utf-8")])
            return HTTPStatus.NOT_FOUND, headers, NOT_FOUND_BODY
        hook = found[0].process_request
        if hook is None:
            return None
        result = hook(path, request_headers)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def __call__(self, websocket: WebSocketServerProtocol) -> None:
        """Serve a connection with the handler of the route matching its path.

        Args:
            websocket: the open connection.
        """
        found = self.match(websocket.path)
        if found is None:
            # Only when the handshake did not consult process_request (a
            # custom create_protocol that overrides it without calling
            # super()): too late for a 404, so say it in the close frame.
            websocket.logger.warning("no route for %s", websocket.path)
            await websocket.close(CloseCode.POLICY_VIOLATION, "no route for this path")
            return
        route, params = found
        await route.handler(websocket, **params)


def _other_spelling(path: str) -> str | None:
    """The path with its trailing slash removed, or one added; ``None`` for ``/``."""
    if path == "/":
        return None
    return path[:-1] if path.endswith("/") else path + "/"
