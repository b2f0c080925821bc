"""Every option of a server: named, typed, defaulted, documented and validated once.

:class:`ConnectionOptions` holds what each connection is configured with,
:class:`ServeOptions` adds the listener's options, and :class:`TCPServeOptions`
and :class:`UnixServeOptions` the address. Building one validates every value,
so a bad option raises :exc:`ValueError` or :exc:`TypeError` where the server
starts, before anything listens. :func:`entry_point` turns a function taking an
options object into one taking the options as arguments, with the full
signature shown to :func:`help`, :mod:`inspect`, Sphinx and mypy.

Each field's ``metadata`` carries a one-line ``"help"`` and, for quantities,
its ``"unit"``: the command line and the docs take them from there.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import platform
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from http import HTTPStatus
from ssl import SSLContext
from typing import (
    TYPE_CHECKING,
    Any,
    Concatenate,
    Final,
    ParamSpec,
    TypeAlias,
    TypeGuard,
    TypeVar,
    cast,
)

import attrs

from . import __version__
from ._proxy import trusted_proxies
from .sansio import Headers, Origin, Subprotocol
from .sansio.connection import LoggerLike, SelectSubprotocol
from .sansio.extensions import ServerExtensionFactory, enable_server_permessage_deflate
from .sansio.http11 import HeadersLike

if TYPE_CHECKING:
    from .connection import WebSocketServerProtocol

__all__ = [
    "DEFAULT_BACKLOG",
    "DEFAULT_SERVER_HEADER",
    "ConnectionOptions",
    "HTTPResponse",
    "Handler",
    "HeadersLike",
    "HeadersLikeOrCallable",
    "LoggerLike",
    "ProcessRequest",
    "SelectSubprotocol",
    "ServeOptions",
    "TCPServeOptions",
    "UnixServeOptions",
    "entry_point",
]

DEFAULT_SERVER_HEADER: Final[str] = f"Python/{platform.python_version()} wsserver/{__version__}"
"""The ``Server`` header sent unless ``server_header`` says otherwise."""

DEFAULT_BACKLOG: Final[int] = 2048
"""The ``listen()`` backlog: room for a burst of 500 connections on both loops.

Connections wait in the kernel's queue until the server accepts them, and a
burst arrives faster than handshakes run: with the former 100, 500 clients
connecting at once overflowed the queue on Trio and were reset. Linux clamps
the value to ``net.core.somaxconn`` (4096 by default since 5.4), so asking
for more than a small system allows costs nothing.
"""

# The other aliases come from the core, which defines them for itself:
# LoggerLike, SelectSubprotocol (sansio.connection) and HeadersLike (sansio.http11).
HeadersLikeOrCallable: TypeAlias = "HeadersLike | Callable[[str, Headers], HeadersLike]"
"""Headers to add to the 101 response, or ``callable(path, request_headers)`` returning them."""

HTTPResponse: TypeAlias = "tuple[HTTPStatus | int, HeadersLike, bytes]"
"""What ``process_request`` returns to answer a request itself: status, headers, body."""

ProcessRequest: TypeAlias = Callable[
    [str, Headers], "HTTPResponse | Awaitable[HTTPResponse | None] | None"
]
"""``process_request(path, request_headers)``, sync or async."""

Handler: TypeAlias = Callable[..., Awaitable[Any]]
"""A connection handler: ``handler(websocket)``, or the legacy ``handler(websocket, path)``."""

_Validator: TypeAlias = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _about(text: str, unit: str | None = None) -> dict[str, str]:
    """The metadata of a field: its one-line help and, for a quantity, its unit."""
    return {"help": text} if unit is None else {"help": text, "unit": unit}


# Validators ---------------------------------------------------------------------------
#
# bool is a subclass of int, but max_queue=True is a mistake, not the number 1,
# so every numeric check refuses it by name.


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(minimum: int, *, optional: bool) -> _Validator:
    """Accept an int of at least ``minimum`` (1 or 0), and None if ``optional``."""
    kind = "a positive integer" if minimum == 1 else "a non-negative integer"
    expected = f"{kind} or None" if optional else kind

    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and optional:
            return
        message = f"{attribute.name} must be {expected}, got {value!r}"
        if not _is_int(value):
            raise TypeError(message)
        if value < minimum:
            raise ValueError(message)

    return check


def _seconds(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """Accept a positive, finite number of seconds, or None to disable the timer.

    0 would make a keepalive loop spin and a timeout fire at once; None is how
    to turn a timer off, so 0, negatives, NaN and infinity are all refused.
    """
    if value is None:
        return
    message = f"{attribute.name} must be a positive number of seconds or None, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(message)
    seconds = float(value)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(message)


def _port(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    message = f"port must be an integer from 0 to 65535 or None, got {value!r}"
    if not _is_int(value):
        raise TypeError(message)
    if not 0 <= value <= 65535:
        raise ValueError(message)


def _compression(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None or value == "deflate":
        return
    if isinstance(value, str):
        raise ValueError(f"unsupported compression: {value!r}")
    raise TypeError(f"compression must be 'deflate' or None, got {value!r}")


def _origins(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    # A set is fine here (the order of origins does not matter); a bare string
    # is not, as it would allow each of its characters.
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise TypeError("origins must be a sequence of allowed origins")
    for origin in value:
        if origin is not None and not isinstance(origin, (str, re.Pattern)):
            raise TypeError(
                f"an allowed origin must be a string, a compiled pattern or None, got {origin!r}"
            )


def _is_sequence(value: object) -> TypeGuard[Sequence[Any]]:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray))


def _subprotocols(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    # A sequence, not a set: the order is the server's preference.
    if not _is_sequence(value) or not all(isinstance(name, str) for name in value):
        raise TypeError(f"subprotocols must be a sequence of subprotocol names, got {value!r}")


def _extensions(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    # ServerExtensionFactory is a Protocol, not checkable at runtime: look for
    # what the handshake calls.
    if not _is_sequence(value) or not all(
        isinstance(getattr(factory, "name", None), str)
        and callable(getattr(factory, "process_request_params", None))
        for factory in value
    ):
        raise TypeError(f"extensions must be a sequence of extension factories, got {value!r}")


def _extra_headers(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None or callable(value) or isinstance(value, (Headers, Mapping)):
        return
    if not isinstance(value, Iterable) or isinstance(value, (str, bytes, bytearray)):
        raise TypeError(
            f"extra_headers must be a mapping, (name, value) pairs or a callable, got {value!r}"
        )


def _server_header(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"server_header must be a string or None, got {value!r}")
    # Checked here rather than when the first response is written, where it
    # would fail every handshake of a server that looks healthy.
    if any(character in value for character in "\r\n\x00"):
        raise ValueError(f"server_header must not contain CR, LF or NUL, got {value!r}")


def _callable(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{attribute.name} must be callable or None, got {value!r}")


def _instance_of(kind: type, description: str) -> _Validator:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None and not isinstance(value, kind):
            raise TypeError(f"{attribute.name} must be {description} or None, got {value!r}")

    return check


def _host(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None or isinstance(value, str):
        return
    if not _is_sequence(value) or not all(isinstance(host, str) for host in value):
        raise TypeError(f"host must be a string, a sequence of strings or None, got {value!r}")


def _flag(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be True or False, got {value!r}")


def _proxy_list(value: str | Sequence[str]) -> tuple[str, ...]:
    """Accept ``"127.0.0.1,10.0.0.0/8"`` (the command line's, uvicorn's form) or a sequence."""
    if isinstance(value, str):
        return tuple(entry.strip() for entry in value.split(",") if entry.strip())
    if not _is_sequence(value) or not all(isinstance(entry, str) for entry in value):
        raise TypeError(
            "forwarded_allow_ips must be a sequence of IP addresses or networks,"
            f" or a comma-separated string, got {value!r}"
        )
    return tuple(entry.strip() for entry in value)


def _trusted_proxies(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    # Parsed here, so that a typo stops the server before it listens; the
    # parsed form is cached for the connections, which look it up by value.
    assert isinstance(value, tuple)  # the converter's result
    try:
        trusted_proxies(value)
    except ValueError as exc:
        raise ValueError(f"{attribute.name}: {exc}") from None


# Options ------------------------------------------------------------------------------


def _document(cls: type) -> None:
    """Append an ``Attributes:`` section built from the class's own fields' metadata."""
    inherited = {
        field.name for base in cls.__mro__[1:] if attrs.has(base) for field in attrs.fields(base)
    }
    own = [field for field in attrs.fields(cls) if field.init and field.name not in inherited]
    # Indented like the docstrings above, so that inspect.cleandoc and napoleon
    # see one block.
    lines = ["", "", "    Attributes:"]
    for field in own:
        unit = field.metadata.get("unit")
        kind = f" ({unit})" if unit else ""
        default = "" if field.default is attrs.NOTHING else f" Default: ``{field.default!r}``."
        lines.append(f"        {field.name}{kind}: {field.metadata['help']}.{default}")
    cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n".join(lines) + "\n"


@attrs.frozen(kw_only=True)
class ConnectionOptions:
    """What every connection of a server is configured with.

    Raises:
        ValueError: if a value has the right type but is out of range
            (``max_queue=0``, ``ping_interval=-5``, ``compression="br"``...).
        TypeError: if a value has the wrong type (``True`` is not a number here).
    """

    logger: LoggerLike | None = attrs.field(
        default=None,
        metadata=_about("where to log; the wsserver.server logger when None"),
    )
    compression: str | None = attrs.field(
        default="deflate",
        validator=_compression,
        metadata=_about("'deflate' enables permessage-deflate; None disables compression"),
    )
    origins: Sequence[Origin | None] | None = attrs.field(
        default=None,
        validator=_origins,
        metadata=_about(
            "allowed Origin values (strings, compiled patterns, None for no Origin);"
            " any origin when None"
        ),
    )
    extensions: Sequence[ServerExtensionFactory] | None = attrs.field(
        default=None,
        validator=_extensions,
        metadata=_about("extension factories, in order of preference"),
    )
    subprotocols: Sequence[Subprotocol] | None = attrs.field(
        default=None,
        validator=_subprotocols,
        metadata=_about("supported subprotocols, in order of preference"),
    )
    extra_headers: HeadersLikeOrCallable | None = attrs.field(
        default=None,
        validator=_extra_headers,
        metadata=_about(
            "headers added to the 101 response, or callable(path, request_headers) returning them"
        ),
    )
    server_header: str | None = attrs.field(
        default=DEFAULT_SERVER_HEADER,
        validator=_server_header,
        metadata=_about("the Server header of every response; None leaves it out"),
    )
    process_request: ProcessRequest | None = attrs.field(
        default=None,
        validator=_callable,
        metadata=_about(
            "callable(path, request_headers), sync or async, that may return"
            " (status, headers, body) to answer with"
        ),
    )
    select_subprotocol: SelectSubprotocol | None = attrs.field(
        default=None,
        validator=_callable,
        metadata=_about("callable(client_subprotocols, server_subprotocols) picking one"),
    )
    open_timeout: float | None = attrs.field(
        default=10,
        validator=_seconds,
        metadata=_about(
            "time allowed for the opening handshake, TLS included; None for no limit",
            "seconds",
        ),
    )
    ping_interval: float | None = attrs.field(
        default=20,
        validator=_seconds,
        metadata=_about("time between keepalive pings; None disables them", "seconds"),
    )
    ping_timeout: float | None = attrs.field(
        default=20,
        validator=_seconds,
        metadata=_about(
            "time to wait for a pong before closing with 1011; None waits forever",
            "seconds",
        ),
    )
    close_timeout: float | None = attrs.field(
        default=10,
        validator=_seconds,
        metadata=_about("time allowed for the closing handshake; None for no limit", "seconds"),
    )
    max_size: int | None = attrs.field(
        default=2**20,
        validator=_count(1, optional=True),
        metadata=_about("largest incoming message; None for no limit", "bytes"),
    )
    max_queue: int | None = attrs.field(
        default=2**5,
        validator=_count(1, optional=True),
        metadata=_about(
            "messages kept unread before reading pauses; None for no limit",
            "messages",
        ),
    )
    read_limit: int = attrs.field(
        default=2**16,
        validator=_count(1, optional=False),
        metadata=_about("most bytes read from the socket at a time", "bytes"),
    )
    write_limit: int = attrs.field(
        default=2**16,
        validator=_count(0, optional=False),
        metadata=_about(
            "buffered bytes above which send() waits; 0 waits until everything is written",
            "bytes",
        ),
    )
    proxy_headers: bool = attrs.field(
        default=False,
        validator=_flag,
        metadata=_about(
            "take remote_address and the scheme from Forwarded or X-Forwarded-For and"
            " X-Forwarded-Proto when the peer is in forwarded_allow_ips"
        ),
    )
    forwarded_allow_ips: tuple[str, ...] = attrs.field(
        default=("127.0.0.1", "::1", "unix:"),
        converter=_proxy_list,
        validator=_trusted_proxies,
        metadata=_about(
            "the proxies trusted with proxy_headers: IP addresses, CIDR networks, 'unix:'"
            " for Unix socket peers, or '*' for every peer; a sequence or a comma-separated"
            " string"
        ),
    )
    server_extensions: Sequence[ServerExtensionFactory] | None = attrs.field(
        init=False, repr=False, eq=False
    )
    """The extensions a connection negotiates: ``extensions``, plus permessage-deflate
    when ``compression`` is ``"deflate"``. Computed once, not an argument."""

    def __attrs_post_init__(self) -> None:
        # Runs after the validators, so compression and extensions are sound here.
        extensions = (
            enable_server_permessage_deflate(self.extensions)
            if self.compression == "deflate"
            else self.extensions
        )
        # The class is frozen: this is its one write after construction.
        object.__setattr__(self, "server_extensions", extensions)


@attrs.frozen(kw_only=True)
class ServeOptions(ConnectionOptions):
    """What a server is configured with: its connections' options and its listener's."""

    create_protocol: Callable[..., WebSocketServerProtocol] | None = attrs.field(
        default=None,
        validator=_callable,
        metadata=_about(
            "factory of the connection object, usually a WebSocketServerProtocol subclass"
        ),
    )
    ssl: SSLContext | None = attrs.field(
        default=None,
        validator=_instance_of(SSLContext, "an ssl.SSLContext"),
        metadata=_about("a server-side ssl.SSLContext to serve TLS (wss://)"),
    )
    sock: socket.socket | None = attrs.field(
        default=None,
        validator=_instance_of(socket.socket, "a socket.socket"),
        metadata=_about("an already bound socket to serve on, instead of an address"),
    )
    backlog: int = attrs.field(
        default=DEFAULT_BACKLOG,
        validator=_count(1, optional=False),
        metadata=_about("the listen() backlog", "connections"),
    )


@attrs.frozen
class TCPServeOptions(ServeOptions):
    """The options of ``serve(ws_handler, host=None, port=None, *, ...)``.

    ``host`` and ``port`` may be given by position, every other option by keyword:
    ``TCPServeOptions("localhost", 8765, max_queue=4)``.
    """

    host: str | Sequence[str] | None = attrs.field(
        default=None,
        kw_only=False,
        validator=_host,
        metadata=_about("the interface(s) to listen on; every interface when None"),
    )
    port: int | None = attrs.field(
        default=None,
        kw_only=False,
        validator=_port,
        metadata=_about("the TCP port; 0 or None picks a free one"),
    )
    reuse_port: bool = attrs.field(
        default=False,
        kw_only=True,
        validator=_flag,
        metadata=_about("set SO_REUSEPORT to share the port between processes"),
    )


def _path(instance: UnixServeOptions, attribute: attrs.Attribute[Any], value: object) -> None:
    # Validators run once every field is set, so sock is known here.
    if value is None:
        if instance.sock is None:
            raise TypeError("unix_serve needs a path or a sock")
        return
    if not isinstance(value, str):
        raise TypeError(f"path must be a string or None, got {value!r}")


def _mode(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    message = f"mode must be permission bits from 0 to 0o777 or None, got {value!r}"
    if not _is_int(value):
        raise TypeError(message)
    if not 0 <= value <= 0o777:
        raise ValueError(message)


@attrs.frozen
class UnixServeOptions(ServeOptions):
    """The options of ``unix_serve(ws_handler, path=None, *, ...)``.

    Raises:
        TypeError: if neither ``path`` nor ``sock`` is given.
    """

    path: str | None = attrs.field(
        default=None,
        kw_only=False,
        validator=_path,
        metadata=_about("the socket's path; a leading NUL byte names an abstract socket"),
    )
    mode: int | None = attrs.field(
        default=None,
        kw_only=True,
        validator=_mode,
        metadata=_about(
            "permission bits of the socket file created at path, such as 0o660 to let a"
            " proxy in the same group connect; None leaves what the umask gives"
        ),
    )


for _options_class in (ConnectionOptions, ServeOptions, TCPServeOptions, UnixServeOptions):
    _document(_options_class)


# Entry points -------------------------------------------------------------------------

P = ParamSpec("P")
A = TypeVar("A")
R = TypeVar("R")


def entry_point(
    arguments: Callable[P, A], *, passthrough: tuple[str, ...] = ()
) -> Callable[[Callable[..., R]], Callable[Concatenate[Handler, P], R]]:
    """Give ``run(ws_handler, options, **passed)`` the public signature ``(ws_handler, *P)``.

    The decorated function takes the handler, then exactly the parameters of
    ``arguments`` (an options class), then the ``passthrough`` keywords. Each
    call builds ``arguments(*args, **kwargs)``, which validates every value, so
    a bad one raises before ``run`` is even called; then it returns
    ``run(ws_handler, built, **passed)``, where ``passed`` are the passthrough
    keywords the caller gave (``task_status``, which ``nursery.start`` and
    ``TaskGroup.start`` add). ``run`` may be async (the call then returns its
    coroutine) or sync returning an awaitable.

    The result keeps ``run``'s name, qualified name, docstring and module, and
    its ``__signature__`` lists every option with its default, so that
    :func:`help`, :func:`inspect.signature` and Sphinx show them all; mypy sees
    ``Callable[Concatenate[Handler, P], R]`` and checks every option's name and
    type (the passthrough keywords are for the framework, not typed callers).

    Args:
        arguments: what builds the options from the arguments, usually an
            options class such as :class:`TCPServeOptions`.
        passthrough: names of ``run``'s keyword parameters to hand over as given.

    Returns:
        A decorator for ``run``.

    Raises:
        TypeError: when decorating, if ``run`` lacks a passthrough parameter;
            when calling, if the arguments do not fit the signature (an unknown
            option, a missing handler) or a value has the wrong type.
        ValueError: when calling, if an option's value is out of range.
    """
    options_parameters = list(inspect.signature(arguments).parameters.values())

    def decorate(run: Callable[..., R]) -> Callable[Concatenate[Handler, P], R]:
        run_signature = inspect.signature(run)
        run_parameters = run_signature.parameters
        handler = next(iter(run_parameters.values())).replace(
            kind=inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        passed_parameters = []
        for name in passthrough:
            if name not in run_parameters:
                raise TypeError(f"{run.__qualname__}() has no parameter {name!r} to pass through")
            passed_parameters.append(
                run_parameters[name].replace(kind=inspect.Parameter.KEYWORD_ONLY)
            )
        signature = inspect.Signature(
            [handler, *options_parameters, *passed_parameters],
            return_annotation=run_signature.return_annotation,
        )

        def call(*args: Any, **kwargs: Any) -> R:
            # Check the call's shape against the public signature first, so that
            # a misspelt option is reported against this function, not the class.
            try:
                signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{run.__name__}() {exc}") from None
            passed = {name: kwargs.pop(name) for name in passthrough if name in kwargs}
            if args:
                ws_handler, args = args[0], args[1:]
            else:
                ws_handler = kwargs.pop(handler.name)
            return run(ws_handler, arguments(*args, **kwargs), **passed)

        entry: Callable[..., Any] = call
        if inspect.iscoroutinefunction(run):
            # An async function to introspection too (inspect, Trio, docs).
            # The options are then validated when the call is awaited, which
            # nursery.start and TaskGroup.start do at once.
            async def call_async(*args: Any, **kwargs: Any) -> Any:
                return await call(*args, **kwargs)  # type: ignore[misc]

            entry = call_async
        functools.update_wrapper(entry, run)
        # update_wrapper copied run's annotations (which name the options
        # object); describe the public parameters instead.
        entry.__annotations__ = {
            parameter.name: parameter.annotation
            for parameter in signature.parameters.values()
            if parameter.annotation is not inspect.Parameter.empty
        }
        if signature.return_annotation is not inspect.Signature.empty:
            entry.__annotations__["return"] = signature.return_annotation
        entry.__signature__ = signature  # type: ignore[attr-defined]
        # The runtime shape (*args, **kwargs) is wider than the public one;
        # the signature check above makes them agree.
        return cast("Callable[Concatenate[Handler, P], R]", entry)

    return decorate

