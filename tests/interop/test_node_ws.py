"""Node's ``ws`` client (``node_client.js``) against a wsserver echo server.

Each scenario of ``node_client.js`` runs in its own Node process against a
fresh server, on both server backends; this module asserts on what the
client observed and on what the server recorded.

Node and the ``ws`` package come from ``python3 dev.py test`` (``npm ci`` in
this directory). When they are missing the tests fail under CI (``CI=true``)
and are skipped, loudly, elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import anyio
import pytest

from wsserver.sansio.extensions.permessage_deflate import ServerPerMessageDeflateFactory

from .echo_server import (
    FRAGMENTED_BINARY,
    FRAGMENTED_TEXT,
    SERVER_CLOSE_CODE,
    SERVER_CLOSE_REASON,
    SERVER_PING_DATA,
    Session,
    echo_server,
    extension_params,
)

pytestmark = pytest.mark.anyio

HERE = Path(__file__).resolve().parent
NODE_CLIENT = HERE / "node_client.js"
NODE_TIMEOUT_SECONDS = 30.0
NPM_TIMEOUT_SECONDS = 300.0


def unavailable(reason: str) -> NoReturn:
    """Fail under CI, skip elsewhere; either way, say so loudly."""
    message = f"!!! Node interop tests NOT RUN: {reason} (run `python3 dev.py test`) !!!"
    print(f"\n{message}", file=sys.__stderr__, flush=True)
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` executable, with the ``ws`` package installed beside this file."""
    executable = shutil.which("node")
    if executable is None:
        unavailable("`node` is not on PATH")
    if not (HERE / "node_modules" / "ws").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            unavailable("the `ws` package is not installed and `npm` is not on PATH")
        try:
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True,
                timeout=NPM_TIMEOUT_SECONDS,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            unavailable(f"`npm ci` in {HERE} failed: {exc}")
    return executable


async def run_scenario(node: str, url: str, scenario: str) -> dict[str, Any]:
    """Run one scenario of ``node_client.js``; return its result, checked to be ``ok``."""
    with anyio.fail_after(NODE_TIMEOUT_SECONDS):
        process = await anyio.run_process(
            [node, str(NODE_CLIENT), url, scenario], cwd=HERE, check=False
        )
    stdout, stderr = process.stdout.decode(), process.stderr.decode()
    assert process.returncode == 0, f"node exited with {process.returncode}:\n{stderr}"
    result: dict[str, Any] = json.loads(stdout)[scenario]
    assert result.pop("ok"), result.get("error")
    return result


def text(value: str) -> dict[str, str]:
    """A text message as node_client.js describes it."""
    return {"text": value}


def binary(value: bytes) -> dict[str, str]:
    """A binary message as node_client.js describes it."""
    return {"hex": value.hex()}


Check = Callable[[dict[str, Any], Any], None]

SCENARIOS: dict[str, tuple[str | None, Check]] = {}
"""scenario -> (the path the server records, or None; check(result, session))."""


def scenario(name: str, path: str | None = "/echo") -> Callable[[Check], Check]:
    """Register the check of one scenario of node_client.js."""

    def register(check: Check) -> Check:
        SCENARIOS[name] = (path, check)
        return check

    return register


@scenario("text-and-binary")
def check_text_and_binary(result: dict[str, Any], session: Session) -> None:
    assert result["echoes"] == [
        text("hello"), text("caf\N{LATIN SMALL LETTER E WITH ACUTE} \N{SNOWMAN}"),
        binary(b"\x00\xff"), binary(b"b"),
    ]
    assert session.messages_received == 4


@scenario("empty")
def check_empty(result: dict[str, Any], session: Session) -> None:
    assert result["echoes"] == [text(""), binary(b"")]


@scenario("mebibyte")
def check_mebibyte(result: dict[str, Any], session: Session) -> None:
    assert result == {"binaryEchoed": True, "textEchoed": True}


@scenario("fragmented-from-client")
def check_fragmented_from_client(result: dict[str, Any], session: Session) -> None:
    assert result["echoes"] == [
        text("".join(FRAGMENTED_TEXT)), binary(b"".join(FRAGMENTED_BINARY))
    ]


@scenario("fragmented-from-server", "/fragmented")
def check_fragmented_from_server(result: dict[str, Any], session: Session) -> None:
    assert result["received"] == [
        text("".join(FRAGMENTED_TEXT)), binary(b"".join(FRAGMENTED_BINARY))
    ]


@scenario("client-ping")
def check_client_ping(result: dict[str, Any], session: Session) -> None:
    assert result["pong"] == "client ping"


@scenario("server-ping", "/ping")
def check_server_ping(result: dict[str, Any], session: Session) -> None:
    assert result["ping"] == SERVER_PING_DATA.decode()
    assert result["received"] == [text("pong received"), text("after ping")]
    assert session.pong_received


def check_deflate(expected: set[str]) -> Check:
    """Check that the echo worked and the 101 carried exactly ``expected``."""

    def check(result: dict[str, Any], session: Session) -> None:
        assert result["echoed"]
        assert extension_params(result["extensions"]) == expected
        assert session.response_headers.get("Sec-WebSocket-Extensions") == result["extensions"]

    return check


DEFAULT_DEFLATE = {"permessage-deflate", "server_max_window_bits=12", "client_max_window_bits=12"}

scenario("deflate-default")(check_deflate(DEFAULT_DEFLATE))
scenario("deflate-off")(check_deflate(set()))
scenario("deflate-client-max-window-bits-10")(check_deflate(
    {"permessage-deflate", "server_max_window_bits=12", "client_max_window_bits=10"}
))
scenario("deflate-server-max-window-bits-10")(check_deflate(
    {"permessage-deflate", "server_max_window_bits=10", "client_max_window_bits=12"}
))
scenario("deflate-no-context-takeover")(check_deflate(
    DEFAULT_DEFLATE | {"server_no_context_takeover", "client_no_context_takeover"}
))


@scenario("subprotocol")
def check_subprotocol(result: dict[str, Any], session: Session) -> None:
    assert result["protocol"] == "chat.v1"
    assert session.subprotocol == "chat.v1"


@scenario("no-subprotocol-offered")
def check_no_subprotocol_offered(result: dict[str, Any], session: Session) -> None:
    assert result == {"protocol": "", "header": None}
    assert session.subprotocol is None


@scenario("no-common-subprotocol")
def check_no_common_subprotocol(result: dict[str, Any], session: Session) -> None:
    assert result == {"error": "Server sent no subprotocol"}
    assert session.subprotocol is None
    assert "Sec-WebSocket-Protocol" not in session.response_headers


@scenario("rejected", None)
def check_rejected(result: dict[str, Any], session: None) -> None:
    assert result == {"statusCode": 403, "body": "Forbidden.\n"}


def check_close(code: int, reason: str) -> Check:
    """Check that both sides saw the close ``code`` and ``reason``."""

    def check(result: dict[str, Any], session: Session) -> None:
        assert result["closed"] == {"code": code, "reason": reason}
        assert (session.close_code, session.close_reason) == (code, reason)

    return check


scenario("close-1000")(check_close(1000, "done"))
scenario("close-custom")(check_close(4000, "custom reason \N{SNOWMAN}"))
scenario("server-close", "/close")(check_close(SERVER_CLOSE_CODE, SERVER_CLOSE_REASON))


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_node_ws_client(node: str, scenario: str) -> None:
    """One scenario of node_client.js, checked on both ends."""
    path, check = SCENARIOS[scenario]
    async with echo_server() as (recorder, url):
        result = await run_scenario(node, url, scenario)
        if path is None:
            session = None
            assert recorder.sessions == []
        else:
            session = await recorder.session(f"{path}?case={scenario}")
    check(result, session)


@pytest.mark.parametrize(
    ("scenario", "server_options", "expected"),
    [
        ("deflate-default", {"compression": None}, set()),
        (
            "deflate-default",
            {"extensions": [ServerPerMessageDeflateFactory(
                server_no_context_takeover=True, client_no_context_takeover=True
            )]},
            {"permessage-deflate", "server_no_context_takeover", "client_no_context_takeover"},
        ),
        (
            "deflate-default",
            {"extensions": [ServerPerMessageDeflateFactory(client_max_window_bits=9)]},
            {"permessage-deflate", "client_max_window_bits=9"},
        ),
    ],
    ids=["server-compression-off", "server-no-context-takeover", "server-client_max_window_bits=9"],
)
async def test_node_ws_client_with_server_deflate_settings(
    node: str, scenario: str, server_options: dict[str, Any], expected: set[str]
) -> None:
    async with echo_server(**server_options) as (recorder, url):
        result = await run_scenario(node, url, scenario)
        session = await recorder.session(f"/echo?case={scenario}")
    check_deflate(expected)(result, session)
