"""The front doors are fully typed: mypy checks every option's name and type.

A user's editor and type checker see ``serve(handler, host, port, **options)``
with each option named and typed, on all four doors. mypy runs once, in a
subprocess, over a snippet with correct calls (no error expected) and calls
with a misspelt option or a value of the wrong type (an error naming the
option expected). Each line under test carries a ``# case:`` marker.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).absolute().parent.parent

SNIPPET = '''\
from __future__ import annotations

import re

import wsserver
import wsserver.asyncio_io
from wsserver import WebSocketServer, WebSocketServerProtocol


async def handler(websocket: WebSocketServerProtocol) -> None:
    await websocket.send("hello")


async def trio_doors() -> None:
    await wsserver.serve(  # case: serve ok
        handler, "localhost", 8765, max_queue=4, ping_interval=None, close_timeout=1.5,
        compression=None, origins=["https://example.org", re.compile("https://.*"), None],
        subprotocols=["chat"], server_header=None, backlog=100, reuse_port=True,
    )
    await wsserver.unix_serve(  # case: unix_serve ok
        handler, "/tmp/ws.sock", max_size=None, write_limit=0,
    )
    await wsserver.serve(  # case: serve misspelt max_queu
        handler, "localhost", 8765, max_queu=4,
    )
    await wsserver.serve(  # case: serve wrong ping_interval
        handler, "localhost", 8765, ping_interval="20",
    )
    await wsserver.unix_serve(  # case: unix_serve misspelt read_limt
        handler, "/tmp/ws.sock", read_limt=1,
    )
    await wsserver.unix_serve(  # case: unix_serve wrong max_size
        handler, "/tmp/ws.sock", max_size="1",
    )


async def asyncio_doors() -> None:
    async with wsserver.asyncio_io.serve(  # case: asyncio serve ok
        handler, "localhost", 8765, max_queue=4, open_timeout=2, extra_headers={"X-A": "b"},
    ) as server:
        checked: WebSocketServer = server
        checked.close()
    started: WebSocketServer = await wsserver.asyncio_io.unix_serve(  # case: asyncio unix_serve ok
        handler, "/tmp/ws.sock", ping_timeout=None, max_queue=None,
    )
    started.close()
    wsserver.asyncio_io.serve(  # case: asyncio serve misspelt pingtimeout
        handler, "localhost", 8765, pingtimeout=1,
    )
    wsserver.asyncio_io.serve(  # case: asyncio serve wrong max_size
        handler, "localhost", 8765, max_size=1.5,
    )
    wsserver.asyncio_io.unix_serve(  # case: asyncio unix_serve misspelt originz
        handler, "/tmp/ws.sock", originz=None,
    )
    wsserver.asyncio_io.unix_serve(  # case: asyncio unix_serve wrong close_timeout
        handler, "/tmp/ws.sock", close_timeout="10",
    )
'''

_CASE = re.compile(r"# case: (?P<door>.+?) (?P<kind>ok|misspelt|wrong)(?: (?P<option>\w+))?$")
_ERROR = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: (?P<message>.*)$")

def _cases() -> dict[tuple[str, str, str | None], range]:
    """Map each ``(door, kind, option)`` to the lines of its statement.

    A statement runs from its marker to the line before the next marker or blank
    line: mypy may report an error on any line of a call spread over several.
    """
    lines = SNIPPET.splitlines()
    starts = [
        (number, match)
        for number, line in enumerate(lines, start=1)
        if (match := _CASE.search(line))
    ]
    cases: dict[tuple[str, str, str | None], range] = {}
    for number, match in starts:
        end = number + 1
        while end <= len(lines) and lines[end - 1].strip() and not _CASE.search(lines[end - 1]):
            end += 1
        cases[(match["door"], match["kind"], match["option"])] = range(number, end)
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def mypy_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[str]]:
    """Run mypy --strict over the snippet once; return its error messages by line."""
    directory = tmp_path_factory.mktemp("typing")
    snippet = directory / "snippet.py"
    snippet.write_text(SNIPPET)
    result = subprocess.run(
        [
            sys.executable, "-m", "mypy", "--strict", "--no-error-summary",
            "--show-error-codes", "--hide-error-context", "--no-pretty",
            # The library's own errors are `mypy wsserver`'s business, not this test's.
            "--follow-imports=silent",
            "--cache-dir", str(directory / "cache"), "--config-file", "",
            str(snippet),
        ],
        # The source tree, not whatever copy is installed, is what is checked.
        cwd=ROOT, env={**os.environ, "MYPYPATH": str(ROOT)},
        capture_output=True, text=True, timeout=300,
    )
    errors: dict[int, list[str]] = {}
    for line in result.stdout.splitlines():
        if (match := _ERROR.match(line)) and Path(match["path"]).name == "snippet.py":
            errors.setdefault(int(match["line"]), []).append(match["message"])
    # mypy exits with 1 when it found errors and 0 when not; anything else
    # (mypy missing, or crashing) must not pass for "no error".
    assert result.returncode == (1 if errors else 0), result.stdout + result.stderr
    return errors


def messages_in(lines: range, errors: dict[int, list[str]]) -> list[str]:
    return [message for line in lines for message in errors.get(line, [])]


def test_only_the_calls_that_should_fail_have_errors(mypy_errors: dict[int, list[str]]) -> None:
    # Also catches a snippet that no longer matches the library (an import that fails).
    may_fail = {line for (_, kind, _), lines in CASES.items() if kind != "ok" for line in lines}
    assert set(mypy_errors) <= may_fail, mypy_errors


@pytest.mark.parametrize("door", [door for (door, kind, _) in CASES if kind == "ok"])
def test_a_correct_call_type_checks(door: str, mypy_errors: dict[int, list[str]]) -> None:
    assert messages_in(CASES[(door, "ok", None)], mypy_errors) == []


@pytest.mark.parametrize(
    ("door", "option"), [(door, option) for (door, kind, option) in CASES if kind == "misspelt"]
)
def test_a_misspelt_option_is_an_error(
    door: str, option: str, mypy_errors: dict[int, list[str]]
) -> None:
    messages = messages_in(CASES[(door, "misspelt", option)], mypy_errors)
    assert any(f'Unexpected keyword argument "{option}"' in message for message in messages), (
        messages
    )


@pytest.mark.parametrize(
    ("door", "option"), [(door, option) for (door, kind, option) in CASES if kind == "wrong"]
)
def test_a_value_of_the_wrong_type_is_an_error(
    door: str, option: str, mypy_errors: dict[int, list[str]]
) -> None:
    messages = messages_in(CASES[(door, "wrong", option)], mypy_errors)
    assert any(
        f'Argument "{option}"' in message and "incompatible type" in message
        for message in messages
    ), messages
