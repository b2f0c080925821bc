"""Serving from several processes: one supervisor, N workers sharing one listening socket.

The supervisor binds the listening socket(s), forks the workers, and then
only waits for signals: it never runs an event loop while workers live, and
never touches a connection. Each worker inherits the listening socket and
serves it with :func:`wsserver.serve` on the chosen loop; the kernel hands
each new connection to one of the workers waiting in ``accept()``. The
socket stays open in the supervisor for its whole life, so a worker that
dies or restarts loses no pending connection: the others accept it.

Signals to the supervisor: SIGTERM or SIGINT stops every worker gracefully
(each closes its connections with 1001 within ``close_timeout``) and then
the supervisor returns 0; a second one kills the workers at once. SIGHUP
restarts the workers one at a time: a new worker starts, and once it serves,
the old one is stopped gracefully. A worker that exits on its own is started
again after a delay that doubles with each quick failure (0.1 s up to 10 s).

Workers are forked, and the supervisor waits with ``sigtimedwait`` for
real-time signals: several workers need Linux. They inherit the handler, the
options (TLS context included) and the sockets as they are.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeAlias

import anyio
import attrs

from ._transport._listeners import bind_tcp, bind_unix
from .options import Handler, TCPServeOptions, UnixServeOptions, entry_point
from .pubsub import _redis_channels, open_channels
from .server import run_server

__all__ = ["RunOptions", "run", "serve_workers"]

logger: Final = logging.getLogger("wsserver.server")

READY_SIGNAL: Final[int] = getattr(signal, "SIGRTMIN", 0)
"""What a worker sends the supervisor once it serves: a real-time signal, since
those queue (two workers ready at once are two signals, where two SIGUSR1
would merge into one). 0 where the system has none: no supervisor there."""

FIRST_RESTART_DELAY: Final[float] = 0.1
"""Seconds before a dead worker is started again; doubles with each quick failure."""
MAX_RESTART_DELAY: Final[float] = 10.0
"""The longest wait before starting a dead worker again, in seconds."""
STABLE_AFTER: Final[float] = 10.0
"""A worker that served this many seconds before dying resets the back-off."""
STOP_GRACE: Final[float] = 5.0
"""Seconds allowed beyond ``close_timeout`` for a worker to stop, before SIGKILL."""

# Looked up by name: Windows has neither SIGHUP nor SIGCHLD, and importing
# wsserver must work there all the same.
_SIGNALS: Final = {
    getattr(signal, name, 0) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGCHLD")
} | {READY_SIGNAL}
SUPERVISOR_AVAILABLE: Final = 0 not in _SIGNALS and hasattr(signal, "sigtimedwait")
"""Whether this system can run several workers: Linux (real-time signals, sigtimedwait, fork)."""

ServeOptionsAny: TypeAlias = TCPServeOptions | UnixServeOptions


# The workers ----------------------------------------------------------------------------


async def _serve(
    ws_handler: Handler,
    options: Sequence[ServeOptionsAny],
    redis_url: str | None,
    *,
    notify: bool,
) -> None:
    """Serve until SIGINT or SIGTERM, then close every connection with 1001."""
    # Installed first and kept to the end: a second signal during the
    # graceful close must not kill the process with the default action.
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_channels(redis_url), anyio.create_task_group() as task_group:
            servers = [await task_group.start(run_server, ws_handler, one) for one in options]
            if notify:
                os.kill(os.getppid(), READY_SIGNAL)
            async for _ in signals:
                break
            for server in servers:
                server.close()
            for server in servers:
                await server.wait_closed()


def _worker_main(
    ws_handler: Handler,
    options: Sequence[ServeOptionsAny],
    redis_url: str | None,
    backend: str,
    mask: set[int | signal.Signals],
    supervisor: int,
) -> int:
    """Run in a freshly forked worker; return its exit status."""
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    _stop_with_supervisor(supervisor)
    # A terminal hang-up is the supervisor's business (a rolling restart).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        anyio.run(functools.partial(_serve, notify=True), ws_handler, options, redis_url,
                  backend=backend)
    except KeyboardInterrupt:
        pass  # stopped before it served
    except Exception:
        logger.exception("worker %d failed", os.getpid())
        return 1
    return 0


def _stop_with_supervisor(supervisor: int) -> None:
    """Have the kernel send this worker SIGTERM if the supervisor dies (Linux).

    Without it, a supervisor killed with SIGKILL would leave its workers
    serving, unsupervised, on a socket nobody restarts.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return  # not Linux: the workers outlive a killed supervisor
    if os.getppid() != supervisor:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG: Final = 1


# The supervisor -------------------------------------------------------------------------


@attrs.define
class _Worker:
    slot: int
    pid: int
    started: float
    ready: bool = False
    retiring: bool = False


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


class _Supervisor:
    """Keep ``count`` workers alive; the whole state machine of the supervisor."""

    def __init__(self, spawn: Callable[[], int], count: int, stop_timeout: float) -> None:
        self._spawn_process = spawn
        self._count = count
        self._stop_timeout = stop_timeout
        self._workers: dict[int, _Worker] = {}
        self._failures = [0] * count
        self._restarts: dict[int, float] = {}  # slot -> when to start it again
        self._rolling: list[int] = []  # slots still to restart after SIGHUP
        self._replacing: tuple[int | None, int] | None = None  # (old pid, new pid)
        self._stop_deadline: float | None = None
        self._status = 0

    def run(self) -> int:
        for slot in range(self._count):
            self._spawn(slot)
        while self._stop_deadline is None or self._workers:
            info = self._wait()
            if info is None:
                self._on_timer()
            elif info.si_signo == signal.SIGCHLD:
                self._reap()
            elif info.si_signo == READY_SIGNAL:
                self._on_ready(info.si_pid)
            elif info.si_signo == signal.SIGHUP:
                self._on_hangup()
            else:
                self._on_stop(signal.Signals(info.si_signo).name)
        logger.info("all workers stopped")
        return self._status

    def _wait(self) -> Any:
        deadlines = list(self._restarts.values())
        if self._stop_deadline is not None:
            deadlines.append(self._stop_deadline)
        if not deadlines:
            return signal.sigwaitinfo(_SIGNALS)
        return signal.sigtimedwait(_SIGNALS, max(0.0, min(deadlines) - time.monotonic()))

    def _spawn(self, slot: int) -> int:
        pid = self._spawn_process()
        self._workers[pid] = _Worker(slot, pid, time.monotonic())
        return pid

    def _on_ready(self, pid: int) -> None:
        worker = self._workers.get(pid)
        if worker is None:
            return
        worker.ready = True
        logger.info("worker %d serving", pid)
        if self._replacing is not None and self._replacing[1] == pid:
            old = self._replacing[0]
            if old is None:  # died meanwhile: nothing left to stop
                self._next_replacement()
            elif old in self._workers:
                self._workers[old].retiring = True
                os.kill(old, signal.SIGTERM)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self._workers.pop(pid, None)
            if worker is not None:
                self._on_exit(worker, status)

    def _on_exit(self, worker: _Worker, status: int) -> None:
        if self._stop_deadline is not None:
            if status != 0:
                logger.warning("worker %d %s while stopping", worker.pid, _describe_status(status))
                self._status = 1
            return
        replacing = self._replacing
        if worker.retiring:
            logger.info("worker %d stopped; worker %d took over", worker.pid,
                        replacing[1] if replacing else 0)
            self._next_replacement()
            return
        if replacing is not None and replacing[1] == worker.pid:
            logger.warning("worker %d %s before serving; worker %s keeps serving",
                           worker.pid, _describe_status(status), replacing[0])
            self._next_replacement()
            return
        if replacing is not None and replacing[0] == worker.pid:
            # Its replacement is on its way: that is the restart.
            self._replacing = (None, replacing[1])
            logger.warning("worker %d %s", worker.pid, _describe_status(status))
            return
        now = time.monotonic()
        if worker.ready and now - worker.started >= STABLE_AFTER:
            self._failures[worker.slot] = 0
        self._failures[worker.slot] += 1
        delay = min(FIRST_RESTART_DELAY * 2 ** (self._failures[worker.slot] - 1), MAX_RESTART_DELAY)
        logger.warning("worker %d %s; starting another in %.1f s",
                       worker.pid, _describe_status(status), delay)
        self._restarts[worker.slot] = now + delay

    def _on_timer(self) -> None:
        now = time.monotonic()
        if self._stop_deadline is not None and now >= self._stop_deadline:
            for pid in self._workers:
                logger.warning("worker %d did not stop in time: killing it", pid)
                os.kill(pid, signal.SIGKILL)
            self._stop_deadline = float("inf")
            self._status = 1
        for slot, when in list(self._restarts.items()):
            if when <= now:
                del self._restarts[slot]
                self._spawn(slot)

    def _on_hangup(self) -> None:
        if self._stop_deadline is not None:
            return
        logger.info("SIGHUP: restarting the workers one at a time")
        self._rolling = list(range(self._count))
        if self._replacing is None:
            self._next_replacement()

    def _next_replacement(self) -> None:
        self._replacing = None
        while self._rolling and self._stop_deadline is None:
            slot = self._rolling.pop(0)
            current = [w for w in self._workers.values() if w.slot == slot and not w.retiring]
            if not current:
                continue  # dead: its restart is already scheduled
            self._replacing = (current[0].pid, self._spawn(slot))
            return
        logger.info("every worker restarted")

    def _on_stop(self, name: str) -> None:
        if self._stop_deadline is not None:
            logger.warning("%s again: killing the workers", name)
            for pid in self._workers:
                os.kill(pid, signal.SIGKILL)
            self._status = 1
            return
        logger.info("%s: stopping %d workers", name, len(self._workers))
        self._stop_deadline = time.monotonic() + self._stop_timeout
        self._restarts.clear()
        self._rolling.clear()
        for pid in self._workers:
            os.kill(pid, signal.SIGTERM)


# Listening sockets ----------------------------------------------------------------------


def _bind(options: ServeOptionsAny) -> tuple[list[ServeOptionsAny], Callable[[], None]]:
    """Bind the listening sockets once, for every worker; return each's options and a cleanup."""
    sockets: list[socket.socket]
    remove: Callable[[], None] = lambda: None  # noqa: E731
    if options.sock is not None:
        sockets = [options.sock]
    elif isinstance(options, UnixServeOptions):
        assert options.path is not None  # the options' validator: path or sock
        sock, socket_file = bind_unix(options.path, backlog=options.backlog, mode=options.mode)
        sockets = [sock]
        if socket_file is not None:
            def remove() -> None:
                try:
                    status = os.stat(socket_file.path)
                except OSError:
                    return
                if (status.st_dev, status.st_ino) == (socket_file.device, socket_file.inode):
                    os.unlink(socket_file.path)
    else:
        # The resolver runs in a loop that ends here, before any fork. asyncio:
        # its executor's threads are joined when the run ends.
        sockets = anyio.run(
            _bind_tcp, options.host, options.port or 0, options.backlog, backend="asyncio"
        )

    def cleanup() -> None:
        for sock in sockets:
            sock.close()
        remove()

    per_socket: list[ServeOptionsAny] = []
    for sock in sockets:
        if isinstance(options, UnixServeOptions):
            per_socket.append(attrs.evolve(options, path=None, sock=sock))
        else:
            per_socket.append(attrs.evolve(options, host=None, port=None, sock=sock))
    return per_socket, cleanup


async def _bind_tcp(
    host: str | Sequence[str] | None, port: int, backlog: int
) -> list[socket.socket]:
    return await bind_tcp(host, port, backlog=backlog, reuse_port=False)


def _log_listening(options: Sequence[ServeOptionsAny], workers: int) -> None:
    for one in options:
        assert one.sock is not None
        address = one.sock.getsockname()
        if isinstance(address, tuple):
            host = f"[{address[0]}]" if ":" in address[0] else address[0]
            where = f"{host}:{address[1]}"
        else:
            where = address.decode(errors="replace") if isinstance(address, bytes) else address
        logger.info("supervisor %d listening on %s with %d workers", os.getpid(), where, workers)


# Entry points ---------------------------------------------------------------------------


def serve_workers(
    ws_handler: Handler,
    options: ServeOptionsAny,
    *,
    workers: int,
    backend: str,
    redis_url: str | None = None,
    handler_spec: str | None = None,
) -> int:
    """Serve in ``workers`` processes (1: this one) until SIGINT/SIGTERM; return the exit status.

    With more than one, this process becomes the supervisor described in
    the module's documentation, and the workers fork from it. With
    ``redis_url``, each worker opens Redis channels
    (:func:`wsserver.pubsub.open_channels`) for its handlers to publish
    and subscribe across processes; without it, each worker's channels
    reach its own connections only.

    With ``reuse_port=True`` in TCP options, each worker binds a socket of
    its own with ``SO_REUSEPORT`` instead, and the kernel spreads the
    connections evenly; that needs a fixed port, and a restarting worker's
    pending connections are lost with its socket.

    Args:
        ws_handler: the connection handler.
        options: where and how to serve, already validated.
        workers: how many processes serve.
        backend: ``"trio"`` or ``"asyncio"``, the loop of every worker.
        redis_url: the Redis server linking the workers' channels, if any.
        handler_spec: the handler as ``module:function``, for the logs.

    Returns:
        0 after a graceful stop; 1 if the address could not be bound, the
        ``redis`` extra (coredis) is missing, or a worker had to be killed or
        failed while stopping. Each of these is one line on the
        ``wsserver.server`` logger.

    Raises:
        ValueError: before anything starts, for arguments that cannot work:
            ``workers`` not a positive integer, an unknown ``backend``, a
            malformed Redis URL, ``reuse_port`` without a fixed port, or
            several workers off Linux.
    """
    try:
        return _serve_workers(
            ws_handler, options, workers=workers, backend=backend, redis_url=redis_url,
            handler_spec=handler_spec,
        )
    except (OSError, ImportError) as exc:
        logger.error("cannot serve: %s", exc)
        return 1


def _serve_workers(
    ws_handler: Handler,
    options: ServeOptionsAny,
    *,
    workers: int,
    backend: str,
    redis_url: str | None,
    handler_spec: str | None,
) -> int:
    """:func:`serve_workers`, raising OSError if the address cannot be bound."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if backend not in ("trio", "asyncio"):
        raise ValueError(f"backend must be 'trio' or 'asyncio', got {backend!r}")
    reuse_port = isinstance(options, TCPServeOptions) and options.reuse_port
    if reuse_port and workers > 1 and not (isinstance(options, TCPServeOptions) and options.port):
        raise ValueError("reuse_port with several workers needs a fixed port, not 0")
    if redis_url is not None:
        # Fail here, once, rather than in every worker as it starts.
        _redis_channels(redis_url)
    if workers > 1 and not SUPERVISOR_AVAILABLE:
        raise ValueError(f"several workers need Linux; this is {sys.platform}")
    if workers == 1:
        # Ctrl-C before the signal receiver is installed: stopped before serving.
        with contextlib.suppress(KeyboardInterrupt):
            anyio.run(_serve_here, ws_handler, options, redis_url, backend=backend)
        return 0
    if redis_url is None:
        logger.warning("without Redis, each worker's channels reach only its own connections")
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    if reuse_port:
        per_socket: list[ServeOptionsAny] = [options]
    else:
        per_socket, cleanup = _bind(options)
        _log_listening(per_socket, workers)
    what = handler_spec or getattr(ws_handler, "__qualname__", "the handler")
    logger.info("serving %s with %d %s workers", what, workers, backend)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)

    supervisor = os.getpid()

    def spawn() -> int:
        pid = os.fork()
        if pid:
            return pid
        status = 1
        try:
            status = _worker_main(
                ws_handler, per_socket, redis_url, backend, mask, supervisor
            )
        finally:
            # Never return into the supervisor's stack (or a test runner's).
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            os._exit(status)

    try:
        timeout = options.close_timeout if options.close_timeout is not None else 60.0
        return _Supervisor(spawn, workers, timeout + STOP_GRACE).run()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        cleanup()


async def _serve_here(
    ws_handler: Handler, options: ServeOptionsAny, redis_url: str | None
) -> None:
    await _serve(ws_handler, [options], redis_url, notify=False)


def _positive(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise (TypeError if not isinstance(value, int) else ValueError)(
            f"workers must be a positive integer, got {value!r}"
        )


def _backend(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in ("trio", "asyncio"):
        raise ValueError(f"backend must be 'trio' or 'asyncio', got {value!r}")


def _url(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"redis must be a URL string or None, got {value!r}")


@attrs.frozen
class RunOptions(TCPServeOptions):
    """The options of :func:`run`: those of ``serve``, and how many processes serve.

    Attributes:
        workers: how many processes serve the port. Default: ``1``.
        backend: the loop of every worker, ``"trio"`` or ``"asyncio"``. Default: ``"trio"``.
        redis: the Redis URL linking the workers' channels; None keeps them in
            memory, one set per worker. Default: ``None``.
    """

    workers: int = attrs.field(default=1, kw_only=True, validator=_positive)
    backend: str = attrs.field(default="trio", kw_only=True, validator=_backend)
    redis: str | None = attrs.field(default=None, kw_only=True, validator=_url)


@entry_point(RunOptions)
def run(ws_handler: Handler, options: RunOptions) -> None:
    """Serve ``ws_handler`` on TCP from one process or several, until SIGINT or SIGTERM.

    ``wsserver.run(handler, "0.0.0.0", 8765, workers=4, redis="redis://...")``
    is ``python -m wsserver`` from Python: it blocks, and returns after a
    graceful stop. Every option of :func:`wsserver.serve` applies.

    Raises:
        OSError: if the address cannot be bound.
        ImportError: with ``redis``, if the ``redis`` extra (coredis) is not installed.
        ValueError: if ``redis`` is not a Redis URL, or several workers are
            asked for off Linux.
        RuntimeError: if a worker had to be killed, or failed, while stopping.
        ValueError: if an option's value is out of range.
        TypeError: if an option has the wrong type or name.
    """
    served = TCPServeOptions(
        **{field.name: getattr(options, field.name)
           for field in attrs.fields(TCPServeOptions) if field.init}
    )
    status = _serve_workers(
        ws_handler, served, workers=options.workers, backend=options.backend,
        redis_url=options.redis, handler_spec=None,
    )
    if status:
        raise RuntimeError(f"serving ended with status {status}; see the log")
