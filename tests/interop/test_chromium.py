"""Headless Chromium against wsserver, and the built-in demo of ``python -m wsserver``.

Chromium takes seconds to start, so it starts once per server backend: a
module-scoped fixture serves ``browser_checks.html`` from a wsserver echo
server, lets Chromium run every check in it (against that server, a second
one without compression, and the demo started as ``python -m wsserver
--backend <backend>``), and collects the page's JSON report plus what the
servers recorded. The tests below then assert one check each. Chromium also
dumps the demo's own page (``--dump-dom``). A page cannot send pings or
fragmented messages, nor choose its permessage-deflate offer: those are
checked with the other clients.

Chromium comes from Debian's ``chromium`` package (``python3 dev.py test``
installs it). When it is missing the tests fail under CI (``CI=true``) and
are skipped, loudly, elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn

import anyio
import anyio.abc
import attrs
import pytest

from .echo_server import (
    FRAGMENTED_BINARY,
    FRAGMENTED_TEXT,
    SERVER_CLOSE_CODE,
    SERVER_CLOSE_REASON,
    EchoRecorder,
    Session,
    echo_server,
    extension_params,
)

HERE = Path(__file__).resolve().parent
CHECKS_PAGE = HERE / "browser_checks.html"
REPORT_TIMEOUT_SECONDS = 90.0
DUMP_DOM_TIMEOUT_SECONDS = 60.0
DEMO_START_TIMEOUT_SECONDS = 20.0
DEMO_STOP_TIMEOUT_SECONDS = 15.0

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--no-proxy-server",
]

DEFAULT_DEFLATE = {"permessage-deflate", "server_max_window_bits=12", "client_max_window_bits=12"}


def text(value: str) -> dict[str, str]:
    """A text message as the page describes it."""
    return {"text": value}


def binary(value: bytes) -> dict[str, str]:
    """A binary message as the page describes it."""
    return {"hex": value.hex()}


# What each check of browser_checks.html must observe ("extensions" compared as sets).
EXPECTED: dict[str, dict[str, Any]] = {
    "text-and-binary": {"echoes": [
        text("hello"), text("caf\N{LATIN SMALL LETTER E WITH ACUTE} \N{SNOWMAN}"),
        binary(b"\x00\xff"), binary(b"b"),
    ]},
    "empty": {"echoes": [text(""), binary(b"")]},
    "mebibyte": {"binaryEchoed": True, "textEchoed": True},
    "fragmented-from-server": {
        "received": [text("".join(FRAGMENTED_TEXT)), binary(b"".join(FRAGMENTED_BINARY))]
    },
    "server-ping": {"received": [text("pong received"), text("after ping")]},
    "subprotocol": {"protocol": "chat.v1"},
    "deflate-on": {"echoed": True, "extensions": DEFAULT_DEFLATE},
    "deflate-off": {"echoed": True, "extensions": set()},
    "rejected": {"opened": False, "code": 1006},
    "close-1000": {"closed": {"code": 1000, "reason": "done", "wasClean": True}},
    "close-custom": {
        "closed": {"code": 4000, "reason": "custom reason \N{SNOWMAN}", "wasClean": True}
    },
    "server-close": {
        "closed": {"code": SERVER_CLOSE_CODE, "reason": SERVER_CLOSE_REASON, "wasClean": True}
    },
    "demo-echo": {"echo": text("hello demo"), "extensions": DEFAULT_DEFLATE},
}

# The server-side records each test needs: case -> path recorded by the echo server.
RECORDED_PATHS = {
    "server-ping": "/ping?case=server-ping",
    "subprotocol": "/echo?case=subprotocol",
    "deflate-on": "/echo?case=deflate-on",
    "close-1000": "/echo?case=close-1000",
    "close-custom": "/echo?case=close-custom",
    "server-close": "/close?case=server-close",
}


@attrs.frozen
class BrowserRun:
    """Everything one Chromium run against one server backend produced."""

    backend: str
    report: dict[str, dict[str, Any]]
    sessions: dict[str, Session]
    forbidden_sessions: list[Session]
    demo_dom: str
    demo_exit_code: int | None


def unavailable(reason: str) -> NoReturn:
    """Fail under CI, skip elsewhere; either way, say so loudly."""
    message = f"!!! Chromium interop tests NOT RUN: {reason} (run `python3 dev.py test`) !!!"
    print(f"\n{message}", file=sys.__stderr__, flush=True)
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium executable: Debian's ``/usr/bin/chromium``, or one on PATH."""
    candidates = ["/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    unavailable("no chromium found (Debian package `chromium`)")


@pytest.fixture(scope="module", params=["trio", "asyncio"])
def browser_run(
    request: pytest.FixtureRequest, chromium: str, tmp_path_factory: pytest.TempPathFactory
) -> BrowserRun:
    """Run every browser check once with the servers on the given backend."""
    backend = str(request.param)
    workdir = tmp_path_factory.mktemp(f"chromium-{backend}")
    return anyio.run(run_browser, chromium, backend, workdir, backend=backend)


async def run_browser(chromium: str, backend: str, workdir: Path) -> BrowserRun:
    page = ("text/html; charset=utf-8", CHECKS_PAGE.read_bytes())
    async with (
        demo_server(backend, workdir) as (demo_port, demo_process),
        echo_server(pages={"/test.html": page}) as (recorder, url),
        echo_server(compression=None) as (_, plain_url),
    ):
        port, plain_port = _port(url), _port(plain_url)
        page_url = f"http://127.0.0.1:{port}/test.html?plain={plain_port}&demo={demo_port}"
        async with browser(chromium, page_url, workdir / "checks"):
            raw_report = await recorder.report(REPORT_TIMEOUT_SECONDS)
        report = json.loads(raw_report)
        sessions = await _recorded_sessions(recorder)
        demo_dom = await dump_dom(chromium, f"http://127.0.0.1:{demo_port}/", workdir / "dump")
        forbidden = [s for s in recorder.sessions if s.path.startswith("/forbidden")]
    return BrowserRun(
        backend=backend,
        report=report,
        sessions=sessions,
        forbidden_sessions=forbidden,
        demo_dom=demo_dom,
        demo_exit_code=demo_process.returncode,
    )


async def _recorded_sessions(recorder: EchoRecorder) -> dict[str, Session]:
    sessions = {}
    for case, path in RECORDED_PATHS.items():
        with contextlib.suppress(TimeoutError):  # the tests report what is missing
            sessions[case] = await recorder.session(path)
    return sessions


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def demo_server(
    backend: str, workdir: Path
) -> AsyncIterator[tuple[int, anyio.abc.Process]]:
    """Run ``python -m wsserver`` (the demo) on a free port; stop it with SIGTERM on exit."""
    port = _free_port()
    command = [
        sys.executable, "-m", "wsserver", "--host", "127.0.0.1", "--port", str(port),
        "--backend", backend, "--log-level", "WARNING",
    ]
    with open(workdir / "demo.log", "wb") as log:
        process = await anyio.open_process(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    try:
        with anyio.fail_after(DEMO_START_TIMEOUT_SECONDS):
            while True:
                if process.returncode is not None:
                    raise AssertionError(
                        f"the demo exited with {process.returncode}:\n"
                        + (workdir / "demo.log").read_text()
                    )
                try:
                    stream = await anyio.connect_tcp("127.0.0.1", port)
                except OSError:
                    await anyio.sleep(0.1)
                else:
                    await stream.aclose()
                    break
        yield port, process
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()
            with anyio.move_on_after(DEMO_STOP_TIMEOUT_SECONDS):
                await process.wait()
            if process.returncode is None:
                _kill_group(process)
                await process.wait()


@asynccontextmanager
async def browser(chromium: str, url: str, profile: Path) -> AsyncIterator[None]:
    """Keep a headless Chromium on ``url`` open; kill it and its children on exit."""
    profile.mkdir()
    command = [
        chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", url,
    ]
    with open(profile.parent / f"{profile.name}.log", "wb") as log:
        process = await anyio.open_process(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            _kill_group(process)
            with anyio.move_on_after(10):
                await process.wait()


async def dump_dom(chromium: str, url: str, profile: Path) -> str:
    """Load ``url`` in headless Chromium and return the DOM it dumps."""
    profile.mkdir()
    command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url]
    with anyio.fail_after(DUMP_DOM_TIMEOUT_SECONDS):
        result = await anyio.run_process(command, stdin=subprocess.DEVNULL, check=False)
    return result.stdout.decode(errors="replace")


def _kill_group(process: anyio.abc.Process) -> None:
    # The process was started in a session of its own: its group is its children.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _normalised(result: dict[str, Any]) -> dict[str, Any]:
    result = dict(result)
    if "extensions" in result:
        result["extensions"] = extension_params(result["extensions"])
    return result


@pytest.mark.parametrize("check", list(EXPECTED))
def test_chromium_check(browser_run: BrowserRun, check: str) -> None:
    """One check of browser_checks.html, as Chromium observed it."""
    result = dict(browser_run.report[check])
    assert result.pop("ok"), result.get("error")
    assert _normalised(result) == EXPECTED[check]


def test_chromium_offers_permessage_deflate_and_gets_the_response_it_saw(
    browser_run: BrowserRun,
) -> None:
    session = browser_run.sessions["deflate-on"]
    offer = session.request_headers.get("Sec-WebSocket-Extensions")
    assert extension_params(offer) == {"permessage-deflate", "client_max_window_bits"}
    response = session.response_headers.get("Sec-WebSocket-Extensions")
    assert response == browser_run.report["deflate-on"]["extensions"]


def test_chromium_pongs_reach_the_server(browser_run: BrowserRun) -> None:
    assert browser_run.sessions["server-ping"].pong_received


def test_chromium_subprotocol_is_recorded_by_the_server(browser_run: BrowserRun) -> None:
    assert browser_run.sessions["subprotocol"].subprotocol == "chat.v1"


@pytest.mark.parametrize(
    ("case", "code", "reason"),
    [
        ("close-1000", 1000, "done"),
        ("close-custom", 4000, "custom reason \N{SNOWMAN}"),
        # Chromium echoes the server's close frame, code and reason.
        ("server-close", SERVER_CLOSE_CODE, SERVER_CLOSE_REASON),
    ],
)
def test_chromium_close_code_and_reason_reach_the_server(
    browser_run: BrowserRun, case: str, code: int, reason: str
) -> None:
    session = browser_run.sessions[case]
    assert (session.close_code, session.close_reason) == (code, reason)


def test_rejected_handshake_opens_no_connection(browser_run: BrowserRun) -> None:
    assert browser_run.forbidden_sessions == []


def test_demo_page_loads_in_chromium(browser_run: BrowserRun) -> None:
    assert "<title>wsserver demo</title>" in browser_run.demo_dom
    assert "<h1>wsserver demo</h1>" in browser_run.demo_dom


def test_demo_stops_cleanly_on_sigterm(browser_run: BrowserRun) -> None:
    assert browser_run.demo_exit_code == 0
