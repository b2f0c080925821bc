"""The options: the seed's defaults, every bad value refused at once, entry_point's signature.

Synchronous and without I/O: building an options object never touches the network.
"""

from __future__ import annotations

import inspect
import math
import platform
import re
import socket
import ssl
from collections.abc import Awaitable, Generator
from typing import Any

import anyio
import anyio.abc
import attrs
import pytest

import wsserver
from wsserver.options import (
    DEFAULT_BACKLOG,
    DEFAULT_SERVER_HEADER,
    ConnectionOptions,
    ServeOptions,
    TCPServeOptions,
    UnixServeOptions,
    entry_point,
)
from wsserver.sansio.extensions import ServerPerMessageDeflateFactory

OPTION_CLASSES = [ConnectionOptions, ServeOptions, TCPServeOptions, UnixServeOptions]


def build(cls: type[ConnectionOptions], **kwargs: Any) -> ConnectionOptions:
    """Build ``cls``; a UnixServeOptions gets a path unless one is given (it needs one)."""
    if cls is UnixServeOptions:
        kwargs.setdefault("path", "/tmp/wsserver-test.sock")
    return cls(**kwargs)


# Defaults ---------------------------------------------------------------------------

SEED_DEFAULTS = {
    "logger": None,
    "compression": "deflate",
    "origins": None,
    "extensions": None,
    "subprotocols": None,
    "extra_headers": None,
    "server_header": DEFAULT_SERVER_HEADER,
    "process_request": None,
    "select_subprotocol": None,
    "open_timeout": 10,
    "ping_interval": 20,
    "ping_timeout": 20,
    "close_timeout": 10,
    "max_size": 2**20,
    "max_queue": 2**5,
    "read_limit": 2**16,
    "write_limit": 2**16,
}


ADDED_DEFAULTS = {
    # Proxy headers (issue #11): off, and when on, only a proxy on this machine trusted.
    "proxy_headers": False,
    "forwarded_allow_ips": ("127.0.0.1", "::1", "unix:"),
}


def test_connection_defaults_are_the_seeds() -> None:
    options = ConnectionOptions()
    defaults = {**SEED_DEFAULTS, **ADDED_DEFAULTS}
    assert {name: getattr(options, name) for name in defaults} == defaults
    # Nothing else takes an argument: a new option must be added here on purpose.
    assert {field.name for field in attrs.fields(ConnectionOptions) if field.init} == set(
        defaults
    )


def test_default_server_header_names_python_and_wsserver() -> None:
    expected = f"Python/{platform.python_version()} wsserver/{wsserver.__version__}"
    assert expected == DEFAULT_SERVER_HEADER


def test_listener_defaults() -> None:
    options = TCPServeOptions()
    assert (options.host, options.port, options.reuse_port) == (None, None, False)
    assert (options.create_protocol, options.ssl, options.sock) == (None, None, None)
    assert options.backlog == DEFAULT_BACKLOG == 2048
    assert UnixServeOptions("/tmp/x.sock").path == "/tmp/x.sock"


def test_host_and_port_are_positional_and_the_rest_keyword_only() -> None:
    options = TCPServeOptions("localhost", 8765, max_queue=4)
    assert (options.host, options.port, options.max_queue) == ("localhost", 8765, 4)
    # reuse_port, like every connection option, is keyword-only (mypy agrees).
    with pytest.raises(TypeError):
        TCPServeOptions("localhost", 8765, False)  # type: ignore[call-arg, arg-type]
    with pytest.raises(TypeError):
        ConnectionOptions(None)  # type: ignore[call-arg]


def test_options_are_frozen() -> None:
    options = TCPServeOptions()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        options.max_queue = 1  # type: ignore[misc]


@pytest.mark.parametrize("cls", OPTION_CLASSES)
def test_every_argument_has_help_and_every_quantity_a_unit(cls: type[ConnectionOptions]) -> None:
    # The command line and the docs are written from this metadata.
    quantities = {
        "open_timeout", "ping_interval", "ping_timeout", "close_timeout",
        "max_size", "max_queue", "read_limit", "write_limit", "backlog",
    }
    for field in attrs.fields(cls):
        if not field.init:
            continue
        assert field.metadata["help"], field.name
        assert ("unit" in field.metadata) == (field.name in quantities), field.name


@pytest.mark.parametrize("cls", OPTION_CLASSES)
def test_docstring_lists_the_class_own_arguments(cls: type[ConnectionOptions]) -> None:
    doc = inspect.getdoc(cls)
    assert doc is not None
    base = cls.__mro__[1]
    inherited = {field.name for field in attrs.fields(base)} if attrs.has(base) else set()
    for field in attrs.fields(cls):
        if field.init and field.name not in inherited:
            assert f"\n    {field.name}" in doc, field.name


# Validation -------------------------------------------------------------------------


def _refused(
    name: str, values: list[Any], kind: str, message: str | None = None
) -> Generator[Any, None, None]:
    """One case per value: (option, value, exception type, exact message)."""
    for value in values:
        expected = message or f"{name} must be {kind}, got {value!r}"
        yield pytest.param(name, value, ValueError, expected, id=f"{name}={value!r}")


def _wrong_type(name: str, values: list[Any], kind: str) -> Generator[Any, None, None]:
    for value in values:
        yield pytest.param(
            name, value, TypeError, f"{name} must be {kind}, got {value!r}", id=f"{name}={value!r}"
        )


POSITIVE_OR_NONE = "a positive integer or None"
SECONDS = "a positive number of seconds or None"

INVALID = [
    *_refused("max_queue", [0, -1], POSITIVE_OR_NONE),
    *_wrong_type("max_queue", [True, 1.0, "4"], POSITIVE_OR_NONE),
    *_refused("max_size", [0, -(2**20)], POSITIVE_OR_NONE),
    *_wrong_type("max_size", [False, 1e6], POSITIVE_OR_NONE),
    *_refused("read_limit", [0, -1], "a positive integer"),
    *_wrong_type("read_limit", [None, True, 65536.0], "a positive integer"),
    *_refused("write_limit", [-1], "a non-negative integer"),
    *_wrong_type("write_limit", [None, False, "0"], "a non-negative integer"),
    *_refused("backlog", [0, -5], "a positive integer"),
    *_wrong_type("backlog", [None, True, 100.0], "a positive integer"),
    *(
        case
        for name in ["open_timeout", "ping_interval", "ping_timeout", "close_timeout"]
        for case in [
            *_refused(name, [0, 0.0, -5, -0.5, math.nan, math.inf, -math.inf], SECONDS),
            *_wrong_type(name, [True, "20", b"20"], SECONDS),
        ]
    ),
    pytest.param("compression", "br", ValueError, "unsupported compression: 'br'", id="br"),
    pytest.param("compression", "", ValueError, "unsupported compression: ''", id="empty"),
    pytest.param(
        "compression", True, TypeError, "compression must be 'deflate' or None, got True",
        id="compression=True",
    ),
    *(
        pytest.param(
            "origins", value, TypeError, "origins must be a sequence of allowed origins",
            id=f"origins={value!r}",
        )
        for value in ["https://example.org", b"x", {"https://example.org": 1}, 5]
    ),
    pytest.param(
        "origins", ["https://example.org", 5], TypeError,
        "an allowed origin must be a string, a compiled pattern or None, got 5",
        id="origins-item",
    ),
    *(
        pytest.param(
            "subprotocols", value, TypeError,
            f"subprotocols must be a sequence of subprotocol names, got {value!r}",
            id=f"subprotocols={value!r}",
        )
        for value in ["chat", {"chat"}, ["chat", 2], 3]
    ),
    *(
        pytest.param(
            "extensions", value, TypeError,
            f"extensions must be a sequence of extension factories, got {value!r}",
            id=f"extensions={value!r}",
        )
        for value in ["permessage-deflate", ["permessage-deflate"], 1]
    ),
    *(
        pytest.param(
            name, value, TypeError, f"{name} must be callable or None, got {value!r}",
            id=f"{name}={value!r}",
        )
        for name in ["process_request", "select_subprotocol", "create_protocol"]
        for value in ["handler", 1]
    ),
    pytest.param(
        "server_header", 1, TypeError, "server_header must be a string or None, got 1",
        id="server_header=1",
    ),
    pytest.param(
        "server_header", "x\r\nSet-Cookie: a=b", ValueError,
        "server_header must not contain CR, LF or NUL, got 'x\\r\\nSet-Cookie: a=b'",
        id="server_header-crlf",
    ),
    pytest.param(
        "extra_headers", "X-A: b", TypeError,
        "extra_headers must be a mapping, (name, value) pairs or a callable, got 'X-A: b'",
        id="extra_headers-str",
    ),
    pytest.param(
        "ssl", True, TypeError, "ssl must be an ssl.SSLContext or None, got True", id="ssl=True"
    ),
    pytest.param(
        "sock", 3, TypeError, "sock must be a socket.socket or None, got 3", id="sock=3"
    ),
]


@pytest.mark.parametrize(("name", "value", "error", "message"), INVALID)
def test_invalid_value_is_refused_with_a_precise_message(
    name: str, value: Any, error: type[Exception], message: str
) -> None:
    cls = TCPServeOptions if name in {"create_protocol", "ssl", "sock", "backlog"} else (
        ConnectionOptions
    )
    with pytest.raises(error) as raised:
        build(cls, **{name: value})
    assert str(raised.value) == message
    # The same check guards every class that has the option.
    for other in OPTION_CLASSES:
        if any(field.name == name for field in attrs.fields(other)):
            with pytest.raises(error, match=re.escape(message)):
                build(other, **{name: value})


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"port": 65536}, ValueError, "port must be an integer from 0 to 65535 or None, got 65536"),
        ({"port": -1}, ValueError, "port must be an integer from 0 to 65535 or None, got -1"),
        ({"port": "80"}, TypeError, "port must be an integer from 0 to 65535 or None, got '80'"),
        ({"port": True}, TypeError, "port must be an integer from 0 to 65535 or None, got True"),
        (
            {"host": 127},
            TypeError,
            "host must be a string, a sequence of strings or None, got 127",
        ),
        (
            {"host": ["::1", None]},
            TypeError,
            "host must be a string, a sequence of strings or None, got ['::1', None]",
        ),
        ({"reuse_port": 1}, TypeError, "reuse_port must be True or False, got 1"),
    ],
)
def test_invalid_address_is_refused(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as raised:
        TCPServeOptions(**kwargs)
    assert str(raised.value) == message


def test_unix_serve_needs_a_path_or_a_sock() -> None:
    with pytest.raises(TypeError) as raised:
        UnixServeOptions()
    assert str(raised.value) == "unix_serve needs a path or a sock"
    with socket.socket(socket.AF_UNIX) as sock:
        assert UnixServeOptions(sock=sock).sock is sock
    with pytest.raises(TypeError, match=r"^path must be a string or None, got b'/tmp/x'$"):
        UnixServeOptions(b"/tmp/x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_queue": None}, {"max_queue": 1},
        {"max_size": None}, {"max_size": 1},
        {"read_limit": 1}, {"write_limit": 0}, {"write_limit": 1},
        {"open_timeout": None}, {"ping_interval": None}, {"ping_timeout": None},
        {"close_timeout": None}, {"close_timeout": 0.001}, {"ping_interval": 1},
        {"compression": None}, {"server_header": None}, {"server_header": ""},
        {"origins": ["https://example.org", re.compile(r"https://.*\.example\.org"), None]},
        {"origins": ("https://example.org",)}, {"origins": {"https://example.org"}},
        {"origins": frozenset({None})}, {"origins": []},
        {"subprotocols": ["chat", "superchat"]}, {"subprotocols": ()},
        {"extensions": [ServerPerMessageDeflateFactory()]},
        {"extra_headers": {"X-A": "b"}}, {"extra_headers": [("X-A", "b")]},
        {"extra_headers": lambda path, headers: {}},
        {"process_request": lambda path, headers: None},
        {"select_subprotocol": lambda client, server: None},
    ],
    ids=lambda kwargs: ",".join(
        f"{name}=<callable>" if callable(value) else f"{name}={value!r}"
        for name, value in kwargs.items()
    ),
)
def test_edge_values_are_accepted(kwargs: dict[str, Any]) -> None:
    for cls in OPTION_CLASSES:
        options = build(cls, **kwargs)
        for name, value in kwargs.items():
            assert getattr(options, name) is value


def test_listener_edge_values_are_accepted() -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    assert TCPServeOptions(ssl=context, backlog=1).ssl is context
    assert TCPServeOptions(port=0).port == 0
    assert TCPServeOptions(port=65535).port == 65535
    assert TCPServeOptions(["127.0.0.1", "::1"]).host == ["127.0.0.1", "::1"]
    assert TCPServeOptions(create_protocol=wsserver.WebSocketServerProtocol).create_protocol is (
        wsserver.WebSocketServerProtocol
    )
    assert UnixServeOptions("\0abstract").path == "\0abstract"


def test_the_first_bad_value_is_reported() -> None:
    # Fields are checked in their order, before anything is derived from them.
    with pytest.raises(ValueError, match=r"^unsupported compression: 'br'$"):
        ConnectionOptions(compression="br", extensions="not factories")  # type: ignore[arg-type]


# Derived values ---------------------------------------------------------------------


def test_deflate_adds_permessage_deflate_to_the_extensions() -> None:
    options = ConnectionOptions()
    assert options.server_extensions is not None
    assert [factory.name for factory in options.server_extensions] == ["permessage-deflate"]
    # Built once, not on each access (each connection reads it).
    assert options.server_extensions is options.server_extensions


def test_deflate_keeps_the_users_own_deflate_factory() -> None:
    mine = ServerPerMessageDeflateFactory(server_no_context_takeover=True)
    options = ConnectionOptions(extensions=[mine])
    assert options.server_extensions == [mine]


def test_without_compression_the_extensions_are_as_given() -> None:
    assert ConnectionOptions(compression=None).server_extensions is None
    mine = [ServerPerMessageDeflateFactory()]
    assert ConnectionOptions(compression=None, extensions=mine).server_extensions is mine


def test_server_extensions_is_not_an_argument() -> None:
    with pytest.raises(TypeError):
        ConnectionOptions(server_extensions=[])  # type: ignore[call-arg]
    # evolve() derives it again from the new values.
    assert attrs.evolve(ConnectionOptions(), compression=None).server_extensions is None


# entry_point ------------------------------------------------------------------------

Calls = list[tuple[Any, Any, dict[str, Any]]]


def make_serve(calls: Calls) -> Any:
    @entry_point(TCPServeOptions, passthrough=("task_status",))
    async def serve(
        ws_handler: Any,
        options: TCPServeOptions,
        *,
        task_status: anyio.abc.TaskStatus[Any] = anyio.TASK_STATUS_IGNORED,
    ) -> str:
        """Serve, for the tests."""
        calls.append((ws_handler, options, {"task_status": task_status}))
        return "served"

    return serve


async def handler(websocket: Any) -> None:
    pass


def finish(coroutine: Awaitable[Any]) -> Any:
    """Run a coroutine that never waits to its end, without an event loop."""
    with pytest.raises(StopIteration) as stopped:
        coroutine.send(None)  # type: ignore[attr-defined]
    return stopped.value.value


def test_entry_point_signature_shows_every_option_with_its_default() -> None:
    serve = make_serve([])
    parameters = inspect.signature(serve).parameters
    first, *rest = parameters.values()
    assert (first.name, first.kind) == ("ws_handler", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    options = inspect.signature(TCPServeOptions).parameters
    assert [parameter.name for parameter in rest] == [*options, "task_status"]
    for name, parameter in options.items():
        assert parameters[name].default == parameter.default
        assert parameters[name].kind == parameter.kind
    assert parameters["host"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert parameters["max_queue"].default == 32
    assert parameters["backlog"].default == DEFAULT_BACKLOG
    assert parameters["task_status"].kind is inspect.Parameter.KEYWORD_ONLY
    assert parameters["task_status"].default is anyio.TASK_STATUS_IGNORED


def test_entry_point_keeps_the_functions_name_and_docs() -> None:
    serve = make_serve([])
    assert serve.__name__ == "serve"
    assert serve.__qualname__.endswith("make_serve.<locals>.serve")
    assert serve.__doc__ == "Serve, for the tests."
    assert serve.__module__ == __name__
    assert "max_queue: 'int | None' = 32" in str(inspect.signature(serve))


def test_entry_point_builds_the_options_and_passes_task_status_through() -> None:
    calls: Calls = []
    serve = make_serve(calls)
    status = object()
    assert finish(serve(handler, "localhost", 8765, max_queue=4, task_status=status)) == "served"
    [(given_handler, options, passed)] = calls
    assert given_handler is handler
    assert options == TCPServeOptions("localhost", 8765, max_queue=4)
    assert passed == {"task_status": status}


def test_entry_point_leaves_an_absent_passthrough_to_runs_default() -> None:
    calls: Calls = []
    serve = make_serve(calls)
    finish(serve(ws_handler=handler, port=0))
    [(given_handler, options, passed)] = calls
    assert given_handler is handler
    assert options.port == 0
    assert passed == {"task_status": anyio.TASK_STATUS_IGNORED}


def test_entry_point_of_an_async_run_is_a_coroutine_function() -> None:
    # What Trio, inspect and the docs' checks look for in an async API.
    assert inspect.iscoroutinefunction(make_serve([]))


def test_entry_point_refuses_a_bad_value_before_run_is_called() -> None:
    calls: Calls = []
    serve = make_serve(calls)
    with pytest.raises(ValueError, match=r"^max_queue must be a positive integer or None, got 0$"):
        finish(serve(handler, max_queue=0))
    with pytest.raises(ValueError, match=r"^ping_interval must be a positive number"):
        finish(serve(handler, "localhost", 8765, ping_interval=-5))
    assert calls == []


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((handler,), {"max_queu": 4}, "serve() got an unexpected keyword argument 'max_queu'"),
        ((), {}, "serve() missing a required argument: 'ws_handler'"),
        ((handler, "h", 1, False), {}, "serve() too many positional arguments"),
        ((handler,), {"ws_handler": handler}, "serve() multiple values for argument 'ws_handler'"),
    ],
)
def test_entry_point_reports_a_call_that_does_not_fit(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    calls: Calls = []
    serve = make_serve(calls)
    with pytest.raises(TypeError) as raised:
        finish(serve(*args, **kwargs))
    assert str(raised.value) == message
    assert calls == []


def test_entry_point_works_for_a_sync_run_returning_an_awaitable() -> None:
    class Started:
        def __init__(self, options: UnixServeOptions) -> None:
            self.options = options

    @entry_point(UnixServeOptions)
    def unix_serve(ws_handler: Any, options: UnixServeOptions) -> Started:
        return Started(options)

    started = unix_serve(handler, "/tmp/x.sock", close_timeout=1.5)
    assert isinstance(started, Started)
    assert started.options == UnixServeOptions("/tmp/x.sock", close_timeout=1.5)
    assert list(inspect.signature(unix_serve).parameters)[:3] == ["ws_handler", "path", "logger"]
    with pytest.raises(TypeError, match=r"^unix_serve needs a path or a sock$"):
        unix_serve(handler)


def test_entry_point_needs_runs_passthrough_parameters() -> None:
    with pytest.raises(TypeError, match="has no parameter 'task_status' to pass through"):

        @entry_point(TCPServeOptions, passthrough=("task_status",))
        async def serve(ws_handler: Any, options: TCPServeOptions) -> None:
            pass
