"""Several worker processes on one port: restarts, graceful stops, SIGHUP, Unix sockets, TLS.

Each test runs ``tests/workers/app.py`` under a real supervisor, with its
workers on the test's backend, and talks to it with the ``websockets``
client. The supervisor's log (its lines and the workers') is how a test
knows what happened: it waits for lines, never for a delay.
"""

from __future__ import annotations

import os
import signal
import ssl
import threading
from pathlib import Path

import anyio
import pytest
import trustme
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, unix_connect

from tests.io.clients import in_thread, open_client, recv
from tests.workers.support import alive, running_app, wait_exited, worker_pids

pytestmark = pytest.mark.anyio


async def clients_on_every_worker(
    uri: str, workers: int, per_worker: int = 1, **options: object
) -> dict[int, list[ClientConnection]]:
    """Connect until ``per_worker`` clients are on each of ``workers`` workers."""
    by_worker: dict[int, list[ClientConnection]] = {}
    for _ in range(200):
        client = await open_client(uri, **options)
        pid = int(await recv(client))
        by_worker.setdefault(pid, []).append(client)
        if len(by_worker) == workers and all(len(c) >= per_worker for c in by_worker.values()):
            return by_worker
    raise AssertionError(f"200 connections reached only {sorted(by_worker)}")


def close_all(by_worker: dict[int, list[ClientConnection]]) -> None:
    for clients in by_worker.values():
        for client in clients:
            client.close()


async def test_connections_are_spread_over_both_workers(anyio_backend: str) -> None:
    with anyio.fail_after(60):
        async with running_app("--backend", anyio_backend) as app:
            port = await app.port()
            by_worker = await clients_on_every_worker(f"ws://127.0.0.1:{port}/pid", 2)
            assert set(by_worker) == worker_pids(app)
            close_all(by_worker)
            app.signal(signal.SIGTERM)
            assert await app.process.wait() == 0


async def test_wsserver_run_serves_from_several_workers(anyio_backend: str) -> None:
    with anyio.fail_after(60):
        async with running_app("--backend", anyio_backend, "--via-run", workers=3) as app:
            port = await app.port()
            by_worker = await clients_on_every_worker(f"ws://127.0.0.1:{port}/pid", 3)
            assert set(by_worker) == worker_pids(app)
            close_all(by_worker)
            app.signal(signal.SIGINT)
            assert await app.process.wait() == 0


async def test_killed_worker_is_restarted_and_the_other_keeps_serving(anyio_backend: str) -> None:
    with anyio.fail_after(60):
        async with running_app("--backend", anyio_backend) as app:
            port = await app.port()
            by_worker = await clients_on_every_worker(f"ws://127.0.0.1:{port}/pid", 2)
            victim, survivor = sorted(by_worker)
            mark = len(app.lines)
            os.kill(victim, signal.SIGKILL)
            await app.wait_for(rf"worker {victim} was killed by SIGKILL; starting another", mark)
            replacement = int((await app.wait_for(r"worker (\d+) serving", mark)).group(1))
            assert replacement not in by_worker
            # The survivor's connection never noticed.
            client = by_worker[survivor][0]
            await in_thread(client.send, "still here")
            assert await recv(client) == "still here"
            # And the port serves on both workers again.
            again = await clients_on_every_worker(f"ws://127.0.0.1:{port}/pid", 2)
            assert set(again) == {survivor, replacement}
            close_all(by_worker)
            close_all(again)
            app.signal(signal.SIGTERM)
            assert await app.process.wait() == 0


async def test_quick_failures_restart_a_worker_later_each_time(anyio_backend: str) -> None:
    with anyio.fail_after(60):
        async with running_app("--backend", anyio_backend) as app:
            victim = min(worker_pids(app))
            for delay in ("0.1", "0.2", "0.4"):
                mark = len(app.lines)
                os.kill(victim, signal.SIGKILL)
                await app.wait_for(rf"worker {victim} was killed by SIGKILL; "
                                   rf"starting another in {delay} s", mark)  # fmt: skip
                victim = int((await app.wait_for(r"worker (\d+) serving", mark)).group(1))
            app.signal(signal.SIGTERM)
            assert await app.process.wait() == 0


async def test_workers_stop_gracefully_when_the_supervisor_is_killed(anyio_backend: str) -> None:
    with anyio.fail_after(60):
        async with running_app("--backend", anyio_backend) as app:
            port = await app.port()
            by_worker = await clients_on_every_worker(f"ws://127.0.0.1:{port}/pid", 2)
            app.signal(signal.SIGKILL)
            await app.process.wait()
            # Their clients hear 1001: the kernel told each worker with SIGTERM.
            for clients in by_worker.values():
                with pytest.raises(ConnectionClosed) as closed:
                    await recv(clients[0])
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
            for pid in worker_pids(app):
                await wait_exited(pid)


def echo_until_closed(
    client: ClientConnection, codes: list[int | None], started: threading.Event
) -> None:
    """Echo as fast as possible until the server closes; record its close code."""
    try:
        count = 0
        while True:
            client.send(f"message {count}")
            client.recv(10)
            count += 1
            if count == 5:
                started.set()
    except ConnectionClosed as exc:
        codes.append(exc.rcvd.code if exc.rcvd else None)
    finally:
        started.set()


async def test_sigterm_under_load_closes_every_client_with_1001(anyio_backend: str) -> None:
    with anyio.fail_after(60):
        async with running_app("--backend", anyio_backend) as app:
            port = await app.port()
            by_worker = await clients_on_every_worker(f"ws://127.0.0.1:{port}/pid", 2, 4)
            clients = [client for clients in by_worker.values() for client in clients]
            codes: list[int | None] = []
            async with anyio.create_task_group() as task_group:
                for client in clients:
                    started = threading.Event()
                    task_group.start_soon(in_thread, echo_until_closed, client, codes, started)
                    await in_thread(started.wait, 10)
                app.signal(signal.SIGTERM)
            assert codes == [1001] * len(clients)
            assert await app.process.wait() == 0
            await app.wait_for(r"all workers stopped")
            assert not any(alive(pid) for pid in worker_pids(app))


async def test_sighup_restarts_workers_one_at_a_time_on_the_same_socket(
    anyio_backend: str,
) -> None:
    with anyio.fail_after(60):
        async with running_app("--backend", anyio_backend) as app:
            port = await app.port()
            before = worker_pids(app)
            mark = len(app.lines)
            app.signal(signal.SIGHUP)
            replaced = await app.count(r"worker (\d+) stopped; worker (\d+) took over", 2, mark)
            await app.wait_for(r"every worker restarted", mark)
            old = [int(m.group(1)) for m in replaced]
            new = [int(m.group(2)) for m in replaced]
            assert sorted(old) == sorted(before)
            assert not set(new) & before
            # One at a time: the second replacement started after the first finished.
            lines = app.lines[mark:]
            first_done = next(i for i, line in enumerate(lines) if "took over" in line)
            second_serving = [
                i for i, line in enumerate(lines) if f"worker {new[1]} serving" in line
            ]
            assert second_serving[0] > first_done
            # The same socket, now served by the new workers only.
            by_worker = await clients_on_every_worker(f"ws://127.0.0.1:{port}/pid", 2)
            assert set(by_worker) == set(new)
            close_all(by_worker)
            app.signal(signal.SIGINT)
            assert await app.process.wait() == 0


async def test_unix_socket_is_served_by_every_worker(anyio_backend: str, tmp_path: Path) -> None:
    path = str(tmp_path / "ws.sock")
    with anyio.fail_after(60):
        async with running_app("--backend", anyio_backend, "--unix", path) as app:
            pids = set()
            clients = []
            for _ in range(200):
                client = await in_thread(
                    unix_connect, path, "ws://localhost/pid", open_timeout=10, legacy=True
                )
                clients.append(client)
                pids.add(int(await recv(client)))
                if len(pids) == 2:
                    break
            assert pids == worker_pids(app)
            for client in clients:
                client.close()
            app.signal(signal.SIGTERM)
            assert await app.process.wait() == 0
            assert not os.path.exists(path), "the supervisor removes the socket file it bound"


async def test_tls_is_served_by_every_worker(anyio_backend: str, tmp_path: Path) -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    pem = tmp_path / "server.pem"
    certificate.private_key_and_cert_chain_pem.write_to_path(str(pem))
    client_context = ssl.create_default_context()
    authority.configure_trust(client_context)
    with anyio.fail_after(60):
        async with running_app("--backend", anyio_backend, "--certfile", str(pem)) as app:
            port = await app.port()
            by_worker = await clients_on_every_worker(
                f"wss://127.0.0.1:{port}/pid", 2, ssl=client_context
            )
            assert set(by_worker) == worker_pids(app)
            close_all(by_worker)
            app.signal(signal.SIGTERM)
            assert await app.process.wait() == 0
