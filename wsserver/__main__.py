"""Command line: ``python -m wsserver [module:function] [options]``.

With a handler, serves it; without one, serves the built-in demo: an echo and
chat endpoint at ``/`` (WebSocket) and a small page at ``/`` (plain HTTP) that
talks to it from a browser.

The flags for numbers and strings (``--max-queue``, ``--ping-interval``,
``--server-header``...) are made from the fields of
:class:`~wsserver.options.ServeOptions`: their names, help, units and defaults
are written there once. The options are built and validated before anything
is imported or bound; a bad value is one line on standard error and status 2.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import os
import signal
import ssl
import sys
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import attrs

from . import __version__
from .demo import demo_handler, demo_process_request
from .options import Handler, ServeOptions, TCPServeOptions, UnixServeOptions
from .server import serve, unix_serve

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765

NONE_WORDS = frozenset({"none", "off"})
"""Values, in any case, that a flag takes to mean ``None`` (no limit, disabled, left out)."""

_METAVARS = {"seconds": "SECONDS", "bytes": "BYTES", "messages": "COUNT", "connections": "COUNT"}


def _load_handler(spec: str) -> Handler:
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise SystemExit(f"handler must be given as module:function, not {spec!r}")
    # Like `python -m`, find the application's modules in the current directory.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"wsserver: cannot import {module_name}: {exc}") from None
    handler: Any = module
    try:
        for part in attribute.split("."):
            handler = getattr(handler, part)
    except AttributeError:
        raise SystemExit(f"wsserver: {module_name} has no {attribute}") from None
    if not callable(handler):
        raise SystemExit(f"{spec} is not callable")
    return handler  # type: ignore[no-any-return]


# Flags made from the options --------------------------------------------------------


def _kind(field: attrs.Attribute[Any]) -> str | None:
    """Return ``"int"``, ``"float"`` or ``"str"`` for a field a flag can set, else None.

    options.py uses postponed annotations, so each field's type is its source
    text, such as ``"float | None"``.
    """
    kinds = {part.strip() for part in str(field.type).split("|")} - {"None"}
    if len(kinds) == 1 and kinds <= {"int", "float", "str"}:
        return kinds.pop()
    return None


def flag_fields() -> list[attrs.Attribute[Any]]:
    """Return the fields of :class:`ServeOptions` that have a generated flag.

    Returns:
        Every field holding a number or a string, in the class's order.
    """
    return [field for field in attrs.fields(ServeOptions) if field.init and _kind(field)]


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


def _text(text: str) -> str | None:
    return None if text.lower() in NONE_WORDS else text


def _add_option_flag(
    add_argument: Callable[..., argparse.Action], field: attrs.Attribute[Any]
) -> None:
    unit = field.metadata.get("unit")
    default = "none" if field.default is None else field.default
    shown = f"{default} {unit}" if unit and field.default is not None else default
    nullable = "None" in str(field.type)
    help_text = field.metadata["help"] + f" (default: {shown}"
    help_text += "; none or off for None)" if nullable else ")"
    add_argument(
        "--" + field.name.replace("_", "-"),
        type=_text if _kind(field) == "str" else _number,
        default=field.default,
        metavar=_METAVARS.get(unit, "VALUE") if unit else "VALUE",
        # argparse formats help with %; a literal one must be doubled.
        help=help_text.replace("%", "%%"),
    )


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``python -m wsserver``."""
    parser = argparse.ArgumentParser(
        prog="wsserver",
        description="Serve a WebSocket handler, or the built-in echo/chat demo.",
    )
    parser.add_argument(
        "handler", nargs="?",
        help="the handler as module:function; the built-in demo when omitted",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"default {DEFAULT_HOST}")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    parser.add_argument("--unix-socket", metavar="PATH", help="serve on a Unix socket instead")
    parser.add_argument("--backend", choices=["trio", "asyncio"], default="trio")
    parser.add_argument("--certfile", help="serve TLS (wss://) with this certificate chain")
    parser.add_argument("--keyfile", help="the private key, if not in --certfile")
    parser.add_argument("--origin", action="append", dest="origins", metavar="ORIGIN",
                        help="allowed Origin (repeatable); any when omitted")
    parser.add_argument("--subprotocol", action="append", dest="subprotocols", metavar="NAME",
                        help="supported subprotocol, in order of preference (repeatable)")
    parser.add_argument("--reuse-port", action="store_true",
                        help="set SO_REUSEPORT to share the port between processes")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--version", action="version", version=f"wsserver {__version__}")
    group = parser.add_argument_group("server options")
    for field in flag_fields():
        _add_option_flag(group.add_argument, field)
    # The older spelling of --compression none.
    group.add_argument("--no-compression", action="store_const", const=None,
                       dest="compression", help="disable permessage-deflate")
    return parser


def build_options(args: argparse.Namespace) -> TCPServeOptions | UnixServeOptions:
    """Build the server's options from parsed arguments, validating every value.

    Args:
        args: what :func:`build_parser` parsed.

    Returns:
        :class:`UnixServeOptions` with ``--unix-socket``, else :class:`TCPServeOptions`.

    Raises:
        ValueError: if a value is out of range (``--max-queue 0``).
        TypeError: if a value is not of the option's kind (``--max-queue 1.5``).
        OSError: if the TLS certificate or key cannot be loaded.
    """
    options: dict[str, Any] = {field.name: getattr(args, field.name) for field in flag_fields()}
    options["origins"] = args.origins
    options["subprotocols"] = args.subprotocols
    if args.certfile:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.certfile, args.keyfile)
        options["ssl"] = context
    if not args.handler:
        options["process_request"] = demo_process_request
    if args.unix_socket:
        return UnixServeOptions(args.unix_socket, **options)
    return TCPServeOptions(args.host, args.port, reuse_port=args.reuse_port, **options)


async def run(handler: Handler, options: TCPServeOptions | UnixServeOptions) -> None:
    """Serve ``handler`` until SIGINT or SIGTERM, then close gracefully.

    Args:
        handler: the connection handler.
        options: where and how to serve, from :func:`build_options`.

    Raises:
        OSError: if the address cannot be bound.
    """
    # serve and unix_serve take exactly their options class's fields.
    arguments = {
        field.name: getattr(options, field.name)
        for field in attrs.fields(type(options))
        if field.init
    }
    if isinstance(options, UnixServeOptions):
        start = functools.partial(unix_serve, handler, **arguments)
    else:
        start = functools.partial(serve, handler, **arguments)
    async with anyio.create_task_group() as task_group:
        server = await task_group.start(start)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                server.close()
                break
        await server.wait_closed()


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m wsserver`` and the ``wsserver`` script.

    Args:
        argv: the arguments; ``sys.argv[1:]`` when None.

    Returns:
        The exit status: 0 after a graceful stop, 1 if the address or the
        certificate could not be used, 2 for a bad option value.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        options = build_options(args)
    except (TypeError, ValueError) as exc:
        # The message names the option and the value: a traceback adds nothing.
        print(f"wsserver: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"wsserver: {exc}", file=sys.stderr)
        return 1
    handler = _load_handler(args.handler) if args.handler else demo_handler
    try:
        anyio.run(run, handler, options, backend=args.backend)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"wsserver: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
