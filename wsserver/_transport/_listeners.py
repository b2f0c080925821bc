"""Listening sockets on both loops: binding them, accepting in batches, removing socket files.

One :class:`SocketListener` owns one stdlib listening socket. It waits until
the socket is readable and then accepts every pending connection at once, in
a synchronous loop, before it waits again: a burst of connections leaves the
kernel's listen queue as fast as it fills, however busy the loop is with the
connections already open. Each accepted socket becomes a byte stream in its
own task, through a loop-specific ``wrap`` function chosen by the package.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, NamedTuple

import anyio
from anyio.abc import ByteStream, Listener, SocketAttribute, TaskGroup
from anyio.lowlevel import checkpoint

from ._attributes import IP_FAMILIES, constant, short_address

__all__ = [
    "EPHEMERAL_PORT_ATTEMPTS",
    "HANDLER_CLOSE_TIMEOUT_SECONDS",
    "MAX_ACCEPTS_PER_WAKEUP",
    "SocketListener",
    "adopt_socket",
    "bind_tcp",
    "bind_unix",
]

MAX_ACCEPTS_PER_WAKEUP: Final = 4096
"""Connections accepted in one go before the listener lets the loop run.

Linux's default ``net.core.somaxconn``: a full listen queue is drained in one
wake-up, and a flood of connections still cannot hold the loop forever.
"""
HANDLER_CLOSE_TIMEOUT_SECONDS: Final = 10.0
"""How long a stream its handler left open may flush before it is aborted."""
EPHEMERAL_PORT_ATTEMPTS: Final = 10
"""Fresh ports tried when the free port of one address is taken on another."""

# accept(2) on Linux reports errors already pending on the new connection
# (the peer reset it, a network went down, a firewall refused it); the man
# page says to treat them like EAGAIN. They concern one connection, not the
# listener.
_ONE_CONNECTION_ERRNOS: Final = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNABORTED", "EPERM", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN",
        "ENONET", "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH",
    )
    if hasattr(errno, name)
)

StreamFactory = Callable[[socket.socket], Awaitable[ByteStream]]
"""Turns an accepted, non-blocking socket into a stream that owns it."""


class _SocketFile(NamedTuple):
    """The file a Unix listener bound, as it was right after binding."""

    path: str
    device: int
    inode: int


class SocketListener(Listener[ByteStream]):
    """An anyio listener over one listening socket, accepting every pending connection.

    Extra attributes: :attr:`~anyio.abc.SocketAttribute.raw_socket` (the
    stdlib socket), ``family``, ``local_address``, and ``local_port`` for TCP.

    Args:
        sock: a bound, listening, non-blocking socket; the listener owns it.
        wrap: makes a stream of each accepted socket.
        socket_file: the Unix socket file to remove on :meth:`aclose`, if
            this listener created it.
    """

    def __init__(
        self,
        sock: socket.socket,
        wrap: StreamFactory,
        *,
        socket_file: _SocketFile | None = None,
    ) -> None:
        self._sock = sock
        self._wrap = wrap
        self._socket_file = socket_file
        self._is_serving = False
        self._is_closed = False
        # Known now: a closed socket can no longer tell, and the server logs
        # and reports them after listening stopped too.
        local_address = short_address(sock.getsockname())
        self._attributes: dict[Any, Callable[[], Any]] = {
            SocketAttribute.raw_socket: constant(sock),
            SocketAttribute.family: constant(sock.family),
            SocketAttribute.local_address: constant(local_address),
        }
        # Accepted sockets share the listener's family: asking each for it
        # (an enum conversion in Python) showed in handshake profiles.
        self._is_ip = sock.family in IP_FAMILIES
        if self._is_ip:
            self._attributes[SocketAttribute.local_port] = constant(local_address[1])

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """The socket attributes described in the class documentation."""
        return self._attributes

    async def serve(
        self, handler: Callable[[ByteStream], Any], task_group: TaskGroup | None = None
    ) -> None:
        """Accept connections and run ``handler(stream)`` for each in a task.

        Every time the socket is readable, every pending connection is
        accepted before the loop runs again (at most
        :data:`MAX_ACCEPTS_PER_WAKEUP`). Each handler runs in a task of
        ``task_group``, or of a task group owned by this call, which then also
        waits for the handlers. A stream still open when its handler returns
        is closed, aborted if it cannot flush within
        :data:`HANDLER_CLOSE_TIMEOUT_SECONDS`. A handler's exception
        propagates through its task group, as with anyio's own listeners.

        Runs until cancelled, or returns once :meth:`aclose` closed the
        listener. Out of file descriptors or buffers, it raises and may be
        called again: the kernel keeps the pending connections meanwhile.
        (Without ``task_group``, the error leaves this call's own task group,
        which cancels the handlers and wraps it in an exception group, as
        anyio's listeners do.)

        Args:
            handler: an async callable taking the accepted stream.
            task_group: the task group that owns the handler tasks.

        Raises:
            anyio.ClosedResourceError: if the listener is already closed.
            anyio.BusyResourceError: if another task is serving it.
            OSError: if accepting fails for the listener as a whole, e.g.
                ``EMFILE``, ``ENFILE``, ``ENOBUFS`` or ``ENOMEM``.
        """
        if self._is_closed:
            raise anyio.ClosedResourceError
        if self._is_serving:
            raise anyio.BusyResourceError("accepting connections from")
        self._is_serving = True
        try:
            if task_group is None:
                async with anyio.create_task_group() as own_task_group:
                    await self._accept_until_closed(handler, own_task_group)
            else:
                await self._accept_until_closed(handler, task_group)
        finally:
            self._is_serving = False

    async def aclose(self) -> None:
        """Stop listening; remove the Unix socket file this listener created.

        Pending connections not yet accepted are reset by the kernel;
        connections already handed to handlers belong to them and stay open.
        Closing again does nothing.
        """
        if not self._is_closed:
            self._is_closed = True
            # Wake a serve() waiting for connections before the descriptor
            # goes away (anyio's rule for closing a watched descriptor).
            anyio.notify_closing(self._sock)
            self._sock.close()
            self._remove_socket_file()
        await checkpoint()

    async def _accept_until_closed(
        self, handler: Callable[[ByteStream], Any], task_group: TaskGroup
    ) -> None:
        sock = self._sock
        while True:
            try:
                await anyio.wait_readable(sock)
            except anyio.ClosedResourceError:
                if self._is_closed:
                    return
                raise
            if self._is_closed:  # closed while this task was about to resume
                return
            for _ in range(MAX_ACCEPTS_PER_WAKEUP):
                try:
                    connection, _address = sock.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in _ONE_CONNECTION_ERRNOS:
                        continue
                    raise
                try:
                    task_group.start_soon(self._run_handler, handler, connection)
                except BaseException:
                    connection.close()
                    raise

    async def _run_handler(
        self, handler: Callable[[ByteStream], Any], connection: socket.socket
    ) -> None:
        try:
            connection.setblocking(False)
            if self._is_ip:
                # Frames are written whole: Nagle's delay would only add latency.
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            stream = await self._wrap(connection)
        except (OSError, ValueError):
            # The peer left between accept() and here (anyio reports a socket
            # no longer connected as ValueError): nothing to serve.
            connection.close()
            return
        except BaseException:
            connection.close()
            raise
        try:
            await handler(stream)
        finally:
            with anyio.move_on_after(HANDLER_CLOSE_TIMEOUT_SECONDS):
                await stream.aclose()

    def _remove_socket_file(self) -> None:
        socket_file, self._socket_file = self._socket_file, None
        if socket_file is None:
            return
        with contextlib.suppress(FileNotFoundError):  # removed by someone else already
            status = os.stat(socket_file.path)
            # Only our own socket: another server may have bound the path since.
            if stat.S_ISSOCK(status.st_mode) and (status.st_dev, status.st_ino) == (
                socket_file.device,
                socket_file.inode,
            ):
                os.unlink(socket_file.path)


def _listen(sock: socket.socket, address: Any, backlog: int, *, mode: int | None = None) -> None:
    """Bind ``sock`` to ``address`` and listen; name the address if that fails.

    ``mode`` (Unix paths) is applied between bind and listen: until listen(),
    connecting is refused, so no client ever sees the file's first permissions.
    """
    try:
        sock.bind(address)
        if mode is not None:
            os.chmod(address, mode)
    except OSError as exc:
        reason = f"cannot listen on {address!r}: {exc.strerror or exc}"
        if exc.errno is None:  # e.g. a Unix path too long, found before any system call
            raise OSError(reason) from exc
        raise OSError(exc.errno, reason) from exc
    sock.listen(backlog)
    sock.setblocking(False)


async def bind_tcp(
    host: str | Sequence[str] | None, port: int, *, backlog: int, reuse_port: bool
) -> list[socket.socket]:
    """Open one listening socket per address of ``host``, all on the same port.

    Args:
        host: a name or address, several of them, or ``None`` (or ``""``)
            for every interface, IPv4 and IPv6.
        port: the TCP port; 0 picks a free one, the same for every socket.
        backlog: the kernel's queue of connections not yet accepted.
        reuse_port: set ``SO_REUSEPORT`` to share the port with other processes.

    Returns:
        The listening sockets, non-blocking, in the resolver's order.

    Raises:
        OSError: if a host does not resolve or an address cannot be bound.
    """
    hosts: list[str | None]
    if host is None or host == "":
        hosts = [None]
    elif isinstance(host, str):
        hosts = [host]
    else:
        hosts = list(host)
    addresses: list[tuple[socket.AddressFamily, Any]] = []
    for one_host in hosts:
        # AI_ADDRCONFIG: no IPv6 socket on a machine without IPv6, as anyio does.
        for family, _, _, _, sockaddr in await anyio.getaddrinfo(
            one_host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_ADDRCONFIG
        ):
            # A set would lose the order; glibc may list an address twice.
            if (family, sockaddr) not in addresses:
                addresses.append((family, sockaddr))
    for attempt in range(EPHEMERAL_PORT_ATTEMPTS):
        sockets: list[socket.socket] = []
        try:
            chosen_port = port
            for family, sockaddr in addresses:
                sock = socket.socket(family, socket.SOCK_STREAM)
                sockets.append(sock)
                _configure_tcp(sock, reuse_port)
                _listen(sock, (sockaddr[0], chosen_port, *sockaddr[2:]), backlog)
                chosen_port = chosen_port or sock.getsockname()[1]
            return sockets
        except BaseException as exc:
            for sock in sockets:
                sock.close()
            if (
                isinstance(exc, OSError)
                and exc.errno == errno.EADDRINUSE
                and port == 0
                and len(sockets) > 1  # the free port of the first address is taken here
                and attempt + 1 < EPHEMERAL_PORT_ATTEMPTS
            ):
                continue
            raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def _configure_tcp(sock: socket.socket, reuse_port: bool) -> None:
    # Restart at once on a port whose old connections are in TIME_WAIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if sock.family == socket.AF_INET6:
        # IPv4 has its own socket: without this, "::" would also claim the
        # IPv4 port and the IPv4 socket could not bind.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)


def bind_unix(
    path: str, *, backlog: int, mode: int | None = None
) -> tuple[socket.socket, _SocketFile | None]:
    """Open a listening Unix socket at ``path``, replacing a stale socket file.

    Args:
        path: a filesystem path, or an abstract name starting with ``"\\0"``
            (Linux), which has no file.
        backlog: the kernel's queue of connections not yet accepted.
        mode: permission bits given to the socket file before it listens, so
            that no client connects while it has the umask's; ``None`` keeps those.

    Returns:
        The non-blocking listening socket, and the file it created (``None``
        for an abstract name), for :class:`SocketListener` to remove.

    Raises:
        OSError: if the path cannot be bound (or a file that is not a socket
            is in the way).
    """
    abstract = path.startswith("\0")
    if not abstract:
        # A socket file left by a server that did not stop cleanly would make
        # bind() fail; anything that is not a socket is left alone.
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _listen(sock, path, backlog, mode=None if abstract else mode)
        socket_file = None
        if not abstract:
            status = os.stat(path)
            # Absolute: the process may change directory before it closes.
            socket_file = _SocketFile(os.path.abspath(path), status.st_dev, status.st_ino)
    except BaseException:
        sock.close()
        raise
    return sock, socket_file


def adopt_socket(sock: socket.socket, *, backlog: int) -> socket.socket:
    """Prepare a socket the user bound to be listened on.

    ``listen(backlog)`` is called (again), as asyncio does, so a socket that
    is only bound works too; the socket becomes non-blocking.

    Args:
        sock: a bound stream socket, TCP or Unix, listening or not.
        backlog: the kernel's queue of connections not yet accepted.

    Returns:
        ``sock``.

    Raises:
        ValueError: if ``sock`` is not a stream socket.
        OSError: if it cannot listen.
    """
    if sock.type != socket.SOCK_STREAM:
        raise ValueError(f"sock must be a stream socket (SOCK_STREAM), got {sock.type!r}")
    sock.listen(backlog)
    sock.setblocking(False)
    return sock
