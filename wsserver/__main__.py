"""Command line: ``wsserver [module:function] [options]``, also ``python -m wsserver``.

With a handler, serves it; without one, serves the built-in demo: an echo and
chat endpoint at ``/`` (WebSocket) and a small page at ``/`` (plain HTTP) that
talks to it from a browser. The flags follow uvicorn's where they mean the
same (``--host``, ``--port``, ``--uds``, ``--fd``, ``--log-level``,
``--workers``, ``--header``).

The flags for numbers, strings and switches (``--max-queue``,
``--ping-interval``, ``--server-header``...) are made from the fields of
:class:`~wsserver.options.ServeOptions`: their names, help, units and defaults
are written there once. Everything is checked before the handler is imported
or anything listens, and every failure is one line on standard error: status 2
for a usage error (a bad flag or value), 1 when starting fails (an address in
use, an unreadable certificate, a handler that cannot be imported).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.metadata
import logging
import os
import platform
import signal
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, NoReturn

import anyio
import attrs

from . import HAS_SPEEDUPS, __version__
from .demo import demo_handler, demo_process_request
from .options import Handler, ServeOptions, TCPServeOptions, UnixServeOptions
from .server import WebSocketServer, serve, unix_serve

__all__ = [
    "CommandLineError",
    "build_options",
    "build_parser",
    "flag_fields",
    "listening_line",
    "main",
    "run",
    "shown_default",
    "version_text",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
BACKENDS = ("trio", "asyncio")
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")

NONE_WORDS = frozenset({"none", "off"})
"""Values, in any case, that a flag takes to mean ``None`` (no limit, disabled, left out)."""

_METAVARS = {"seconds": "SECONDS", "bytes": "BYTES", "messages": "COUNT", "connections": "COUNT"}


class CommandLineError(Exception):
    """A failure to report as one line, ``wsserver: <message>``, and an exit status.

    Args:
        message: what failed, naming the flag, file or address concerned.
        status: 2 for a usage error, 1 when starting failed.
    """

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _lower_first(text: str) -> str:
    """Lowercase a system message's capital ("Address already in use"), not an acronym's."""
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        return text[0].lower() + text[1:]
    return text


def _reason(exc: OSError) -> str:
    """The system's words for an OSError, without the errno or the repeated address.

    The transport floor re-raises a failed bind with the address in the
    message and the system's error as its cause; the cause says it plainly.
    """
    cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
    return _lower_first(cause.strerror or str(cause))


def _load_handler(spec: str) -> Handler:
    """Import ``module:function`` (the part after the colon may be dotted).

    Raises:
        CommandLineError: status 2 if ``spec`` is not ``module:function``;
            status 1 if the module cannot be imported, lacks the attribute, or
            the attribute is not callable. Any other exception raised by the
            application's import propagates with its traceback: it is a bug
            there, and the traceback is what finds it.
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise CommandLineError(f"the handler must be given as module:function, not {spec!r}", 2)
    # Like `python -m`, find the application's modules in the current directory.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CommandLineError(f"cannot import {module_name}: {exc}") from None
    handler: Any = module
    try:
        for part in attribute.split("."):
            handler = getattr(handler, part)
    except AttributeError:
        raise CommandLineError(f"{module_name} has no {attribute}") from None
    if not callable(handler):
        raise CommandLineError(f"{spec} is not callable")
    return handler  # type: ignore[no-any-return]


# Flags made from the options --------------------------------------------------------


def _kind(field: attrs.Attribute[Any]) -> str | None:
    """Return ``"int"``, ``"float"``, ``"str"``, ``"bool"`` or ``"list"`` for a field a flag sets.

    options.py uses postponed annotations, so each field's type is its source
    text, such as ``"float | None"``. A ``"list"`` is a tuple of strings whose
    converter splits a comma-separated string. Any other type (callables,
    other sequences, contexts) has no generated flag.
    """
    if str(field.type) == "tuple[str, ...]" and field.converter is not None:
        return "list"  # its converter takes a comma-separated string
    kinds = {part.strip() for part in str(field.type).split("|")} - {"None"}
    if len(kinds) == 1 and kinds <= {"int", "float", "str", "bool"}:
        return kinds.pop()
    return None


def flag_fields() -> list[attrs.Attribute[Any]]:
    """Return the fields of :class:`ServeOptions` that have a generated flag.

    Returns:
        Every field holding a number, a string or a boolean, in the class's order.
    """
    return [field for field in attrs.fields(ServeOptions) if field.init and _kind(field)]


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _number(text: str) -> int | float | str | None:
    """Read a number, or None from a NONE_WORDS word.

    Anything else is kept as given: the options' validation then refuses it
    with the same one-line message as any other bad value.
    """
    if text.lower() in NONE_WORDS:
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _required_number(text: str) -> int | float | str:
    """Read a number for an option that cannot be None: ``off`` is refused as given."""
    number = _number(text)
    return text if number is None else number


def _text(text: str) -> str | None:
    return None if text.lower() in NONE_WORDS else text


def shown_default(field: attrs.Attribute[Any]) -> str:
    """Return a generated flag's default as ``--help`` and docs/cli.md show it.

    Args:
        field: one of :func:`flag_fields`.

    Returns:
        ``on`` or ``off`` for a switch, a comma-separated list, ``none``, or
        the value itself (without its unit).
    """
    default = field.default
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, tuple):
        return ",".join(default)
    return "none" if default is None else str(default)


def _add_option_flag(
    add_argument: Callable[..., argparse.Action], field: attrs.Attribute[Any]
) -> None:
    kind = _kind(field)
    unit = field.metadata.get("unit")
    shown = shown_default(field)
    if unit and field.default is not None:
        shown += f" {unit}"
    nullable = "None" in str(field.type)
    help_text = field.metadata["help"] + f" (default: {shown}"
    help_text += "; none or off for None)" if nullable and kind != "list" else ")"
    # argparse formats help with %; a literal one must be doubled.
    help_text = help_text.replace("%", "%%")
    if kind == "bool":
        # --name / --no-name, as uvicorn spells its switches.
        add_argument(_flag(field.name), action=argparse.BooleanOptionalAction,
                     default=field.default, help=help_text)
    elif kind == "list":
        # Given as typed: the field's converter splits it, as it does in Python.
        add_argument(_flag(field.name), default=field.default, metavar="LIST", help=help_text)
    else:
        add_argument(
            _flag(field.name),
            type=_text if kind == "str" else _number if nullable else _required_number,
            default=field.default,
            metavar=_METAVARS.get(unit, "VALUE") if unit else "VALUE",
            help=help_text,
        )


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME:VALUE, got {text!r}")
    if any(character in text for character in "\r\n\x00"):
        raise argparse.ArgumentTypeError(f"CR, LF and NUL are not allowed, got {text!r}")
    return name.strip(), value.strip()


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line like every other error."""

    def error(self, message: str) -> NoReturn:
        """Print ``wsserver: <message>`` and exit with status 2."""
        self.exit(2, f"{self.prog}: {message}\n")


def version_text() -> str:
    """Return what ``--version`` prints: versions, backends, and the C speed-up's state."""
    if HAS_SPEEDUPS:
        speedups = "in use (the compiled core and C unmasking)"
    elif os.environ.get("WSSERVER_NO_SPEEDUPS", "") not in ("", "0"):
        speedups = "not in use: WSSERVER_NO_SPEEDUPS is set (pure Python)"
    else:
        speedups = "not in use: not built at install time, or stale (pure Python)"
    return (
        f"wsserver {__version__} with {platform.python_implementation()}"
        f" {platform.python_version()} on {platform.system()}\n"
        # From the installed metadata: anyio has no __version__, and trio
        # need not be imported to be named.
        f"backends: trio {importlib.metadata.version('trio')} (default), asyncio;"
        f" through anyio {importlib.metadata.version('anyio')}\n"
        f"C speed-up: {speedups}\n"
    )


class _VersionAction(argparse.Action):
    """Print :func:`version_text` as it is: argparse's own would re-wrap its lines."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        # On standard output, as argparse's own version action prints it.
        sys.stdout.write(version_text())
        parser.exit(0)


_EPILOG = """\
examples:
  wsserver myapp:handler --port 9000
      serve handler from myapp.py, found in the current directory
  wsserver --backend asyncio --log-level debug
      the built-in demo on asyncio, every frame logged
  wsserver myapp:handler --uds /run/myapp.sock --proxy-headers
      behind a proxy on the same machine, on a Unix socket
  wsserver myapp:handler --port 8443 --certfile cert.pem --keyfile key.pem
      wss:// (TLS)

A number takes "none" or "off" (any case) to mean no limit, or disabled.
SIGINT (Ctrl-C) or SIGTERM stops the server gracefully: it stops listening
and closes every connection with 1001; a second signal stops it at once.
"""


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``wsserver`` and ``python -m wsserver``."""
    parser = _Parser(
        prog="wsserver",
        description="Serve a WebSocket handler, or the built-in echo/chat demo.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "handler", nargs="?",
        help="the handler as module:function; the built-in demo when omitted",
    )
    parser.add_argument("--version", action=_VersionAction,
                        help="show the version, the backends and the C speed-up's state")
    parser.add_argument("--backend", choices=BACKENDS, default="trio",
                        help="the event loop to run on (default: trio)")
    parser.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, default="info",
                        metavar="LEVEL",
                        help="one of critical, error, warning, info, debug, in any case;"
                             " debug shows every frame (default: info)")

    where = parser.add_argument_group("where to listen")
    # Left None here, so that giving one with --uds or --fd can be refused.
    where.add_argument("--host", help=f"interface to listen on (default: {DEFAULT_HOST})")
    where.add_argument("--port", type=int,
                       help=f"TCP port; 0 picks a free one (default: {DEFAULT_PORT})")
    elsewhere = where.add_mutually_exclusive_group()
    elsewhere.add_argument("--uds", "--unix-socket", dest="uds", metavar="PATH",
                           help="serve on this Unix socket instead of TCP")
    elsewhere.add_argument("--fd", type=int, metavar="N",
                           help="serve on the listening socket inherited as file descriptor N")
    where.add_argument("--uds-mode", metavar="MODE",
                       help="permissions of the --uds socket file, in octal, e.g. 660 to let"
                            " a proxy in the same group connect (default: what the umask"
                            " gives)")
    where.add_argument("--reuse-port", action="store_true",
                       help="set SO_REUSEPORT to share the port between processes (default: off)")

    tls = parser.add_argument_group("TLS (wss://)")
    tls.add_argument("--certfile", metavar="PATH",
                     help="serve TLS with this certificate chain, PEM (default: plain ws://)")
    tls.add_argument("--keyfile", metavar="PATH",
                     help="the private key, PEM, if it is not in --certfile")

    processes = parser.add_argument_group("processes")
    processes.add_argument("--workers", type=_positive, default=1, metavar="N",
                           help="serve from N processes sharing the port (default: 1)")
    processes.add_argument("--redis", metavar="URL",
                           help="link the processes' channels (wsserver.pubsub) through this"
                                " Redis server (default: none)")

    group = parser.add_argument_group("connection options")
    group.add_argument("--origin", action="append", dest="origins", metavar="ORIGIN",
                       help="allowed Origin, repeatable; requests without Origin are then"
                            " refused (default: any origin)")
    group.add_argument("--subprotocol", action="append", dest="subprotocols", metavar="NAME",
                       help="supported subprotocol, repeatable, in order of preference"
                            " (default: none)")
    group.add_argument("--header", action="append", dest="headers", type=_header,
                       metavar="NAME:VALUE",
                       help="header added to every 101 response, repeatable (default: none)")
    for field in flag_fields():
        _add_option_flag(group.add_argument, field)
    # The older spelling of --compression none.
    group.add_argument("--no-compression", action="store_const", const=None,
                       dest="compression", help="the same as --compression none")
    return parser


# From arguments to options ----------------------------------------------------------


def _check_flag_values(args: argparse.Namespace) -> None:
    """Validate each generated flag's value alone, so that the message names the flag.

    Raises:
        CommandLineError: status 2, ``--open-timeout must be ..., got 'soon'``.
    """
    port_field = attrs.fields(TCPServeOptions).port
    for field in [*flag_fields(), port_field]:
        value = getattr(args, field.name)
        if value is None and field is port_field:
            continue  # not given: the default, or --uds or --fd
        try:
            # Its own converter and validator, with every other option at its default.
            TCPServeOptions(**{field.name: value})
        except (TypeError, ValueError) as exc:
            # The command line spells None "none".
            message = str(exc).replace(" or None,", " or none,")
            if message.startswith((field.name + " ", field.name + ":")):
                message = _flag(field.name) + message[len(field.name):]
            else:
                message = f"{_flag(field.name)}: {message}"
            raise CommandLineError(message, 2) from None


def _check_places(args: argparse.Namespace) -> None:
    """Refuse flags that do not apply together (status 2)."""
    other = "--uds" if args.uds is not None else "--fd" if args.fd is not None else None
    if other is not None:
        for given, flag in ((args.host, "--host"), (args.port, "--port"),
                            (args.reuse_port or None, "--reuse-port")):
            if given is not None:
                raise CommandLineError(f"{flag} does not apply with {other}", 2)
    if args.uds_mode is not None and args.uds is None:
        raise CommandLineError("--uds-mode applies only with --uds", 2)
    if args.keyfile and not args.certfile:
        raise CommandLineError("--keyfile needs --certfile: the certificate to serve TLS with", 2)


def _octal_mode(text: str) -> int:
    """Read permission bits written in octal (``660``, ``0660`` or ``0o660``)."""
    digits = text[2:] if text.lower().startswith("0o") else text
    try:
        mode = int(digits, 8)
    except ValueError:
        raise CommandLineError(
            f"--uds-mode must be permission bits in octal, such as 660, got {text!r}", 2
        ) from None
    if not 0 <= mode <= 0o777:
        raise CommandLineError(
            f"--uds-mode must be permission bits from 0 to 777, got {text!r}", 2
        )
    return mode


def _tls_context(certfile: str, keyfile: str | None) -> ssl.SSLContext:
    """Load the certificate chain and key; name the file that is wrong.

    Raises:
        CommandLineError: status 1, naming the file and what is wrong with it.
    """
    for flag, path in (("--certfile", certfile), ("--keyfile", keyfile)):
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise CommandLineError(f"cannot read {flag} {path}: {_reason(exc)}") from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except ssl.SSLError as exc:
        # OpenSSL says "PEM lib" for a bad certificate and a bad key alike: try
        # the certificate alone to tell which file is wrong.
        try:
            ssl.create_default_context().load_verify_locations(cafile=certfile)
        except ssl.SSLError:
            raise CommandLineError(f"--certfile {certfile} holds no PEM certificate") from None
        key_source = f"--keyfile {keyfile}" if keyfile else f"--certfile {certfile}"
        if exc.reason == "KEY_VALUES_MISMATCH":
            message = f"the private key in {key_source} does not match the certificate"
        else:
            message = f"{key_source} holds no usable PEM private key"
        raise CommandLineError(message) from None
    return context


def _inherited_socket(fd: int) -> socket.socket:
    """Wrap the inherited file descriptor ``fd``, which must be a stream socket.

    Raises:
        CommandLineError: status 1 if ``fd`` is not an open stream socket.
    """
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise CommandLineError(f"cannot use --fd {fd}: {_reason(exc)}") from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()  # leave the descriptor as it was: the error is reported, not "fixed"
        raise CommandLineError(f"cannot use --fd {fd}: not a stream socket")
    return sock


def build_options(args: argparse.Namespace) -> TCPServeOptions | UnixServeOptions:
    """Build the server's options from parsed arguments, validating every value.

    Args:
        args: what :func:`build_parser` parsed.

    Returns:
        :class:`UnixServeOptions` with ``--uds`` or an inherited Unix socket,
        else :class:`TCPServeOptions`.

    Raises:
        CommandLineError: status 2 for a bad value or flags that do not go
            together, status 1 if the certificate, the key or the inherited
            socket cannot be used.
    """
    _check_places(args)
    _check_flag_values(args)
    options: dict[str, Any] = {field.name: getattr(args, field.name) for field in flag_fields()}
    options["origins"] = args.origins
    options["subprotocols"] = args.subprotocols
    options["extra_headers"] = args.headers
    if args.certfile:
        options["ssl"] = _tls_context(args.certfile, args.keyfile)
    if not args.handler:
        options["process_request"] = demo_process_request
    try:
        if args.fd is not None:
            sock = _inherited_socket(args.fd)
            if sock.family == socket.AF_UNIX:
                return UnixServeOptions(sock=sock, **options)
            return TCPServeOptions(sock=sock, **options)
        if args.uds is not None:
            mode = None if args.uds_mode is None else _octal_mode(args.uds_mode)
            return UnixServeOptions(args.uds, mode=mode, **options)
        host = DEFAULT_HOST if args.host is None else args.host
        port = DEFAULT_PORT if args.port is None else args.port
        return TCPServeOptions(host, port, reuse_port=args.reuse_port, **options)
    except (TypeError, ValueError) as exc:
        # The options say which value and why: a traceback adds nothing.
        raise CommandLineError(str(exc), 2) from None


# Running ----------------------------------------------------------------------------


def _place(options: TCPServeOptions | UnixServeOptions) -> str:
    """Where the server was asked to listen, as the error messages name it."""
    if options.sock is not None:
        return f"file descriptor {options.sock.fileno()}"
    if isinstance(options, UnixServeOptions):
        return str(options.path)
    host = str(options.host)
    return f"[{host}]:{options.port}" if ":" in host else f"{host}:{options.port}"


def listening_line(server: WebSocketServer, options: ServeOptions, backend: str) -> str:
    """Return the line telling where the server listens, once it does.

    Args:
        server: the running server.
        options: its options (TLS or not).
        backend: ``"trio"`` or ``"asyncio"``.

    Returns:
        ``serving ws://127.0.0.1:8765 on trio (Ctrl-C to stop)``, with every
        listening socket's address (``--port 0`` shows the port picked).
    """
    scheme = "wss://" if options.ssl is not None else "ws://"
    places = []
    for sock in server.sockets:
        address = sock.getsockname()
        if sock.family == socket.AF_UNIX:
            if isinstance(address, bytes):  # an abstract name, shown as ss does
                address = "@" + address[1:].decode(errors="replace")
            places.append(f"{scheme} at unix socket {address}")
        else:
            host, port = address[:2]
            host = f"[{host}]" if ":" in host else host
            places.append(f"{scheme}{host}:{port}")
    return f"serving {' and '.join(places)} on {backend} (Ctrl-C to stop)"


async def _stop_on_signals(
    signals: AsyncIterator[signal.Signals], server: WebSocketServer, scope: anyio.CancelScope
) -> None:
    """Close the server gracefully on the first signal, at once on the second."""
    async for _ in signals:
        if not server.is_closing():
            logging.getLogger("wsserver.server").info(
                "stopping: closing connections with 1001; send the signal again to stop now"
            )
            server.close()
        else:
            scope.cancel()
            return


async def run(
    handler: Handler,
    options: TCPServeOptions | UnixServeOptions,
    *,
    on_listening: Callable[[WebSocketServer], None] | None = None,
) -> None:
    """Serve ``handler`` until SIGINT or SIGTERM, then close gracefully.

    The first signal stops listening and closes every connection with 1001,
    waiting for them at most ``close_timeout``; a second stops at once.

    Args:
        handler: the connection handler.
        options: where and how to serve, from :func:`build_options`.
        on_listening: called with the server once it listens.

    Raises:
        CommandLineError: if the address cannot be listened on, naming it.
    """
    # serve and unix_serve take exactly their options class's fields.
    arguments = {
        field.name: getattr(options, field.name)
        for field in attrs.fields(type(options))
        if field.init
    }
    start = functools.partial(
        unix_serve if isinstance(options, UnixServeOptions) else serve, handler, **arguments
    )
    failure: OSError | None = None
    # Open before the server starts: from here on, a signal is an event, not
    # a KeyboardInterrupt that a task group would wrap in an exception group.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as task_group:
            try:
                server = await task_group.start(start)
            except OSError as exc:
                # Kept for after the task group: raised inside it, it would
                # leave wrapped in an exception group.
                failure = exc
            else:
                if on_listening is not None:
                    on_listening(server)
                task_group.start_soon(_stop_on_signals, signals, server, task_group.cancel_scope)
                await server.wait_closed()
                task_group.cancel_scope.cancel()
    if failure is not None:
        raise CommandLineError(f"cannot listen on {_place(options)}: {_reason(failure)}")


def _serve_here(
    handler: Handler, options: TCPServeOptions | UnixServeOptions, backend: str
) -> None:
    def announce(server: WebSocketServer) -> None:
        print(f"wsserver: {listening_line(server, options, backend)}", file=sys.stderr,
              flush=True)

    anyio.run(functools.partial(run, handler, options, on_listening=announce), backend=backend)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``wsserver`` and ``python -m wsserver``.

    Args:
        argv: the arguments; ``sys.argv[1:]`` when None.

    Returns:
        The exit status: 0 after a stop by signal, 1 if starting failed,
        2 for a usage error, 130 if interrupted before serving.
    """
    # Until the server's own handler takes over, SIGTERM interrupts like
    # Ctrl-C: a stop requested while starting up ends without a traceback.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=args.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
        options = build_options(args)
        handler = _load_handler(args.handler) if args.handler else demo_handler
        if args.workers > 1 or args.redis is not None:
            from .workers import serve_workers  # only several processes or Redis need it

            try:
                status: int = serve_workers(
                    handler, options, workers=args.workers, backend=args.backend,
                    redis_url=args.redis, handler_spec=args.handler,
                )
            except ValueError as exc:  # flags that do not go together, such as --port 0
                raise CommandLineError(str(exc), 2) from None
            return status
        _serve_here(handler, options, args.backend)
        # Stopped: a signal arriving now, while the interpreter exits, must
        # not end the exit in a KeyboardInterrupt traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    except CommandLineError as exc:
        print(f"wsserver: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
