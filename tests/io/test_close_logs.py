"""The one line logged when a connection closes says who closed it, with the code and reason."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

import wsserver

from ..serving import running_server
from .clients import RawClient, port_of

pytestmark = pytest.mark.anyio


def closed_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage().split("] ", 1)[1]
        for record in caplog.records
        if "connection closed" in record.getMessage()
    ]


async def run_one(handler: Any, client_side: Any, caplog: pytest.LogCaptureFixture) -> list[str]:
    caplog.set_level(logging.INFO, logger="wsserver")
    with anyio.fail_after(5):
        async with running_server(handler, ping_interval=None) as (_, uri):
            client = await RawClient.open(port_of(uri))
            await client_side(client)
    # Leaving running_server waits for every connection to end.
    return closed_lines(caplog)


async def answer_close(client: RawClient) -> None:
    code, reason = await client.recv_close()
    await client.send_close(code, reason)
    await client.wait_for_eof()


async def returns(ws: wsserver.WebSocketServerProtocol) -> None:
    pass


async def crashes(ws: wsserver.WebSocketServerProtocol) -> None:
    raise RuntimeError("boom")


async def closes_4000(ws: wsserver.WebSocketServerProtocol) -> None:
    await ws.close(4000, "room closed")


async def echoes(ws: wsserver.WebSocketServerProtocol) -> None:
    async for message in ws:
        await ws.send(message)


async def test_a_handler_that_returns_is_a_close_by_the_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lines = await run_one(returns, answer_close, caplog)
    assert lines == ["connection closed: closed by the server: 1000 (normal closure)"]


async def test_a_crashing_handler_is_a_close_by_the_server_with_1011(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lines = await run_one(crashes, answer_close, caplog)
    assert lines == ["connection closed: closed by the server: 1011 (internal error)"]


async def test_close_with_a_code_names_the_code_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lines = await run_one(closes_4000, answer_close, caplog)
    assert lines == ["connection closed: closed by the server: 4000 (application) room closed"]


async def test_a_client_close_is_a_close_by_the_client(caplog: pytest.LogCaptureFixture) -> None:
    async def client_closes(client: RawClient) -> None:
        await client.send_close(1001, "tab closed")
        assert await client.recv_close() == (1001, "tab closed")
        await client.wait_for_eof()

    lines = await run_one(echoes, client_closes, caplog)
    assert lines == ["connection closed: closed by the client: 1001 (going away) tab closed"]


async def test_a_client_that_never_answers_our_close_is_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="wsserver")
    with anyio.fail_after(5):
        async with running_server(returns, ping_interval=None, close_timeout=0.2) as (_, uri):
            client = await RawClient.open(port_of(uri))
            assert await client.recv_close() == (1000, "")
            await client.wait_for_eof()  # the server drops TCP after close_timeout
    assert closed_lines(caplog) == [
        "connection closed: closed by the server: 1000 (normal closure);"
        " the client did not answer"
    ]


async def test_a_dropped_connection_says_there_was_no_closing_handshake(
    caplog: pytest.LogCaptureFixture,
) -> None:
    lines = await run_one(echoes, RawClient.aclose, caplog)
    assert lines == ["connection closed: TCP closed without a closing handshake (1006)"]
