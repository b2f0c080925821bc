"""Command line: ``python -m wsserver [module:function] [options]``.

With a handler, serves it; without one, serves the built-in demo: an echo and
chat endpoint at ``/`` (WebSocket) and a small page at ``/`` (plain HTTP) that
talks to it from a browser.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import ssl
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from . import __version__
from .connection import Handler
from .demo import demo_handler, demo_process_request
from .server import serve, unix_serve

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765


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


def _optional_float(value: str) -> float | None:
    return None if value.lower() in {"none", "off"} else float(value)


def _optional_int(value: str) -> int | None:
    return None if value.lower() in {"none", "off"} else int(value)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m wsserver``."""
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
    parser.add_argument("--origin", action="append", dest="origins",
                        help="allowed Origin (repeatable); any when omitted")
    parser.add_argument("--subprotocol", action="append", dest="subprotocols",
                        help="supported subprotocol, in order of preference (repeatable)")
    parser.add_argument("--no-compression", action="store_true",
                        help="disable permessage-deflate")
    parser.add_argument("--ping-interval", type=_optional_float, default=20.0)
    parser.add_argument("--ping-timeout", type=_optional_float, default=20.0)
    parser.add_argument("--open-timeout", type=_optional_float, default=10.0)
    parser.add_argument("--close-timeout", type=_optional_float, default=10.0)
    parser.add_argument("--max-size", type=_optional_int, default=2**20)
    parser.add_argument("--max-queue", type=_optional_int, default=2**5)
    parser.add_argument("--read-limit", type=int, default=2**16)
    parser.add_argument("--write-limit", type=int, default=2**16)
    parser.add_argument("--backlog", type=int, default=100)
    parser.add_argument("--reuse-port", action="store_true",
                        help="set SO_REUSEPORT to share the port between processes")
    parser.add_argument("--server-header", default=None,
                        help="the Server header; 'none' removes it")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--version", action="version", version=f"wsserver {__version__}")
    return parser


async def run(args: argparse.Namespace) -> None:
    """Serve until SIGINT or SIGTERM, then close gracefully."""
    options: dict[str, Any] = dict(
        compression=None if args.no_compression else "deflate",
        origins=args.origins,
        subprotocols=args.subprotocols,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        open_timeout=args.open_timeout,
        close_timeout=args.close_timeout,
        max_size=args.max_size,
        max_queue=args.max_queue,
        read_limit=args.read_limit,
        write_limit=args.write_limit,
        backlog=args.backlog,
    )
    if args.server_header is not None:
        options["server_header"] = (
            None if args.server_header.lower() == "none" else args.server_header
        )
    if args.certfile:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.certfile, args.keyfile)
        options["ssl"] = context
    if args.handler:
        handler = _load_handler(args.handler)
    else:
        handler = demo_handler
        options["process_request"] = demo_process_request
    async with anyio.create_task_group() as task_group:
        if args.unix_socket:
            server = await task_group.start(
                lambda task_status: unix_serve(
                    handler, args.unix_socket, task_status=task_status, **options
                )
            )
        else:
            server = await task_group.start(
                lambda task_status: serve(
                    handler, args.host, args.port, reuse_port=args.reuse_port,
                    task_status=task_status, **options
                )
            )
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                server.close()
                break
        await server.wait_closed()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m wsserver`` and of the ``wsserver`` script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        anyio.run(run, args, backend=args.backend)
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"wsserver: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
