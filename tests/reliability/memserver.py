"""A wsserver server in a fresh process, for memory measurements.

Measured in the test process, the growth of RSS depends on what earlier tests
left in the allocator's free lists (a second measurement in the same process
came out five times lower than the first). A fresh process has no history.

``python memserver.py BACKEND MODE [--write-limit BYTES]`` prints ``port N``,
then answers each command line on stdin with one JSON line:

``rss``
    ``{"rss": bytes}`` after ``gc.collect()`` and ``malloc_trim(0)``.
``wait N``
    waits until N handlers started; then for ``idle``, lets them settle in
    ``recv()``, for ``flood``, until no send completes for a second.
    Replies ``{"started": n, "open": len(server.websockets), "sent": {...}}``.
``close``
    closes the server, waits for it to close, waits for every handler to end;
    replies with the counts and exits.
``finish``
    waits for every handler to end, without closing; replies like ``close``.

Modes: ``idle`` handlers wait in ``recv()``; ``flood`` handlers send
:data:`SENDS_ATTEMPTED` messages of 1 MiB.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import json
import logging
import sys
from typing import Any

import anyio
import anyio.to_thread

import wsserver

MESSAGE = bytes(2**20)
SENDS_ATTEMPTED = 24
BACKLOG = 4096

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def rss_bytes() -> int:
    """Resident set size after a full collection and handing free heap back to the kernel."""
    gc.collect()
    _libc.malloc_trim(0)
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


class ErrorCounter(logging.Handler):
    """Counts ERROR log lines: a misbehaving peer never causes one."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def main(args: argparse.Namespace) -> None:
    errors = ErrorCounter()
    logging.getLogger().addHandler(errors)
    started = finished = 0
    unexpected: list[str] = []
    sent: dict[str, int] = {}

    async def handler(websocket: wsserver.WebSocketServerProtocol) -> None:
        nonlocal started, finished
        started += 1
        try:
            if args.mode == "idle":
                async for _ in websocket:
                    pass
            else:
                sent[websocket.path] = 0
                for _ in range(SENDS_ATTEMPTED):
                    await websocket.send(MESSAGE)
                    sent[websocket.path] += 1
        except wsserver.ConnectionClosed:
            pass
        except Exception as exc:
            unexpected.append(repr(exc))
            raise
        finally:
            finished += 1

    def reply(value: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()

    async def until(condition: Any) -> None:
        while not condition():
            await anyio.sleep(0.05)

    async with anyio.create_task_group() as task_group:
        server = await task_group.start(
            lambda task_status: wsserver.serve(
                handler, "127.0.0.1", 0, backlog=BACKLOG, write_limit=args.write_limit,
                task_status=task_status,
            )
        )
        sys.stdout.write(f"port {server.sockets[0].getsockname()[1]}\n")
        sys.stdout.flush()
        while True:
            command = (await anyio.to_thread.run_sync(sys.stdin.readline)).split()
            if not command:
                server.close()
                return
            if command[0] == "rss":
                reply({"rss": rss_bytes()})
            elif command[0] == "wait":
                count = int(command[1])
                await until(lambda: started >= count)  # noqa: B023
                if args.mode == "idle":
                    await anyio.sleep(0.5)
                else:
                    progress = -1
                    while sum(sent.values()) != progress:
                        progress = sum(sent.values())
                        await anyio.sleep(1.0)
                reply({"started": started, "open": len(server.websockets), "sent": sent})
            elif command[0] in ("close", "finish"):
                if command[0] == "close":
                    server.close()
                    await server.wait_closed()
                await until(lambda: finished >= started)
                reply({
                    "started": started, "finished": finished, "unexpected": unexpected,
                    "open": len(server.websockets), "errors": errors.lines,
                })
                server.close()
                return


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("backend", choices=["trio", "asyncio"])
    parser.add_argument("mode", choices=["idle", "flood"])
    parser.add_argument("--write-limit", type=int, default=2**16)
    arguments = parser.parse_args()
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    anyio.run(main, arguments, backend=arguments.backend)
