"""The application the worker tests run: ``python -m tests.workers.app [options]``.

Paths it serves:

* ``/pid``: sends this worker's process id, then echoes;
* ``/sub/NAME``: subscribes to channel NAME, sends ``"subscribed PID"``, then
  publishes every message it receives to NAME (each reply ``"unsent ..."``
  reports a PublishError); messages published to NAME arrive as they come.
"""

from __future__ import annotations

import argparse
import logging
import os
import ssl
import sys

import wsserver
from wsserver import WebSocketServerProtocol
from wsserver.demo import demo_handler, demo_process_request
from wsserver.options import TCPServeOptions, UnixServeOptions
from wsserver.pubsub import PublishError, current_channels
from wsserver.workers import serve_workers


async def handler(websocket: WebSocketServerProtocol) -> None:
    """Serve the paths of the module's documentation."""
    if websocket.path.startswith("/sub/"):
        channel = websocket.path[len("/sub/") :]
        channels = current_channels()
        async with channels.subscribe(websocket, channel):
            await websocket.send(f"subscribed {os.getpid()}")
            async for message in websocket:
                try:
                    await channels.publish(channel, message)
                except PublishError as exc:
                    await websocket.send(f"unsent {exc.delivered}")
        return
    await websocket.send(str(os.getpid()))
    async for message in websocket:
        await websocket.send(message)


def main() -> int:
    """Parse the options and serve."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backend", default="trio")
    parser.add_argument("--redis")
    parser.add_argument("--unix")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reuse-port", action="store_true")
    parser.add_argument("--certfile")
    parser.add_argument("--close-timeout", type=float, default=5)
    parser.add_argument("--write-limit", type=int, default=2**16)
    parser.add_argument("--demo", action="store_true", help="serve wsserver.demo instead")
    parser.add_argument("--via-run", action="store_true", help="start with wsserver.run")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO,
        format="%(process)d %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    context = None
    if args.certfile:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.certfile)
    common = {
        "ssl": context,
        "close_timeout": args.close_timeout,
        "write_limit": args.write_limit,
        "ping_interval": None,
        "process_request": demo_process_request if args.demo else None,
    }
    if args.via_run:
        wsserver.run(
            handler,
            "127.0.0.1",
            args.port,
            workers=args.workers,
            backend=args.backend,
            redis=args.redis,
            close_timeout=args.close_timeout,
            ping_interval=None,
        )
        return 0
    options: TCPServeOptions | UnixServeOptions
    if args.unix:
        options = UnixServeOptions(args.unix, **common)  # type: ignore[arg-type]
    else:
        options = TCPServeOptions(  # type: ignore[arg-type]
            "127.0.0.1", args.port, reuse_port=args.reuse_port, **common
        )
    return serve_workers(
        demo_handler if args.demo else handler,
        options,
        workers=args.workers,
        backend=args.backend,
        redis_url=args.redis,
        handler_spec=None if args.demo else "tests.workers.app:handler",
    )


if __name__ == "__main__":
    sys.exit(main())
