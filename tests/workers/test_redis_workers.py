"""Channels across worker processes, through a real redis-server of the test's own."""

from __future__ import annotations

import signal

import anyio
import pytest
from websockets.sync.client import ClientConnection

from tests.io.clients import in_thread, open_client, recv
from tests.pubsub.support import RedisServer
from tests.workers.support import App, running_app

pytestmark = pytest.mark.anyio


async def subscribers_on_every_worker(
    app: App, channel: str, per_worker: int
) -> dict[int, list[ClientConnection]]:
    """Subscribe clients to ``channel`` until each of the 2 workers has ``per_worker``."""
    uri = f"ws://127.0.0.1:{await app.port()}/sub/{channel}"
    by_worker: dict[int, list[ClientConnection]] = {}
    for _ in range(200):
        client = await open_client(uri)
        greeting = await recv(client)
        assert isinstance(greeting, str) and greeting.startswith("subscribed ")
        by_worker.setdefault(int(greeting.split()[1]), []).append(client)
        if len(by_worker) == 2 and all(len(c) >= per_worker for c in by_worker.values()):
            return by_worker
    raise AssertionError(f"200 connections reached only {sorted(by_worker)}")


async def everyone_receives(clients: list[ClientConnection], message: str) -> None:
    for client in clients:
        assert await recv(client) == message


async def test_message_published_on_either_worker_reaches_every_subscriber(
    anyio_backend: str, redis_server: RedisServer
) -> None:
    with anyio.fail_after(60):
        async with running_app("--backend", anyio_backend, "--redis", redis_server.url) as app:
            by_worker = await subscribers_on_every_worker(app, "room", 3)
            everyone = [client for clients in by_worker.values() for client in clients]
            first, second = sorted(by_worker)
            await in_thread(by_worker[first][0].send, f"hello from {first}")
            await everyone_receives(everyone, f"hello from {first}")
            await in_thread(by_worker[second][0].send, f"hello from {second}")
            await everyone_receives(everyone, f"hello from {second}")
            for client in everyone:
                client.close()
            app.signal(signal.SIGTERM)
            assert await app.process.wait() == 0


async def test_redis_restart_keeps_local_delivery_and_resumes_across_workers(
    anyio_backend: str, redis_server: RedisServer
) -> None:
    with anyio.fail_after(60):
        async with running_app("--backend", anyio_backend, "--redis", redis_server.url) as app:
            by_worker = await subscribers_on_every_worker(app, "room", 2)
            first, second = sorted(by_worker)
            here, there = by_worker[first], by_worker[second]
            mark = len(app.lines)
            await in_thread(redis_server.stop)
            await app.count(r"redis at .* is unreachable", 2, mark)
            # Cut off from each other, each worker still serves its own subscribers;
            # the publisher is told the message went no further.
            for group in (here, there):
                await in_thread(group[0].send, "while redis is down")
                replies = {await recv(group[0]), await recv(group[0])}
                assert replies == {"while redis is down", f"unsent {len(group)}"}
                await everyone_receives(group[1:], "while redis is down")
            mark = len(app.lines)
            await in_thread(redis_server.start)
            await app.count(r"redis at .* is back after .* subscribed again to 1 channels", 2, mark)
            await in_thread(here[0].send, "redis is back")
            await everyone_receives(here + there, "redis is back")
            for client in here + there:
                client.close()
            app.signal(signal.SIGTERM)
            assert await app.process.wait() == 0


async def test_demo_chat_works_across_workers(
    anyio_backend: str, redis_server: RedisServer
) -> None:
    with anyio.fail_after(60):
        args = ("--backend", anyio_backend, "--redis", redis_server.url, "--demo")
        async with running_app(*args) as app:
            uri = f"ws://127.0.0.1:{await app.port()}/chat"
            clients = []
            # The log says which worker opened each connection (its pid leads the line).
            for _ in range(100):
                mark = len(app.lines)
                clients.append(await open_client(uri))
                await app.wait_for(r"connection open: /chat", mark)
                pids = {line.split()[0] for line in app.lines if "connection open: /chat" in line}
                if len(pids) == 2:
                    break
            assert len(pids) == 2
            # Each client hears the message, after the arrivals announced to it.
            await in_thread(clients[-1].send, "hello, other worker")
            for client in clients:
                heard = await recv(client)
                while heard == "someone joined":
                    heard = await recv(client)
                assert heard == "hello, other worker"
            for client in clients:
                client.close()
            app.signal(signal.SIGTERM)
            assert await app.process.wait() == 0
