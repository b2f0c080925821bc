"""The command line: a handler given as module:function, options, errors; both backends."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import attrs
import pytest
from websockets.exceptions import ConnectionClosedError
from websockets.sync.client import connect

from wsserver.__main__ import build_options, build_parser, flag_fields
from wsserver.demo import demo_process_request
from wsserver.options import (
    DEFAULT_SERVER_HEADER,
    ServeOptions,
    TCPServeOptions,
    UnixServeOptions,
)

ROOT = Path(__file__).resolve().parent.parent.parent

APP = '''
async def handler(websocket):
    async for message in websocket:
        await websocket.send("app:" + message)
'''

_LISTENING = re.compile(rb"server listening on 127\.0\.0\.1:(\d+)")


@contextmanager
def running_cli(
    args: list[str], cwd: Path, output: list[bytes]
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Run ``python -m wsserver ARGS --port 0``; yield it and its port once it listens.

    The port comes from the log line the server writes once listening, so
    nothing polls. Whatever the process wrote is appended to ``output``.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "wsserver", *args, "--port", "0"],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": ""},
    )
    assert process.stdout is not None
    # A guard, not a measurement: a server that never starts fails the test
    # instead of hanging it.
    watchdog = threading.Timer(30, process.kill)
    watchdog.start()
    try:
        for line in process.stdout:
            output.append(line)
            if match := _LISTENING.search(line):
                break
        else:
            raise AssertionError(b"".join(output).decode(errors="replace"))
        yield process, int(match.group(1))
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=15)
        output.append(rest)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_cli_serves_a_handler_from_the_current_directory(tmp_path: Path, backend: str) -> None:
    (tmp_path / "myapp.py").write_text(APP)
    output: list[bytes] = []
    args = ["myapp:handler", "--backend", backend, "--server-header", "none",
            "--ping-interval", "off"]
    with (
        running_cli(args, tmp_path, output) as (process, port),
        connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as client,
    ):
        client.send("hello")
        assert client.recv(timeout=10) == "app:hello"
        assert client.response is not None
        assert client.response.headers.get("Server") is None
    assert process.returncode == 0, output
    assert b"server closed" in b"".join(output)


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_cli_option_flags_reach_the_server(tmp_path: Path, backend: str) -> None:
    (tmp_path / "myapp.py").write_text(APP)
    output: list[bytes] = []
    args = ["myapp:handler", "--backend", backend, "--max-size", "16", "--compression", "none"]
    with (
        running_cli(args, tmp_path, output) as (process, port),
        connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as client,
    ):
        assert client.response is not None
        assert "Sec-WebSocket-Extensions" not in client.response.headers
        assert client.response.headers["Server"] == DEFAULT_SERVER_HEADER
        client.send("x" * 16)
        assert client.recv(timeout=10) == "app:" + "x" * 16
        client.send("x" * 17)
        with pytest.raises(ConnectionClosedError) as closed:
            client.recv(timeout=10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009
    assert process.returncode == 0, output


def test_cli_reports_a_handler_it_cannot_import(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wsserver", "nosuchmodule:handler"],
        cwd=tmp_path, capture_output=True, timeout=30,
    )
    assert result.returncode != 0
    assert b"cannot import nosuchmodule" in result.stderr
    assert b"Traceback" not in result.stderr


def test_cli_rejects_a_handler_without_module_and_function(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wsserver", "justaname"],
        cwd=tmp_path, capture_output=True, timeout=30,
    )
    assert result.returncode != 0
    assert b"module:function" in result.stderr


# Bad values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-queue", "0"], "max_queue must be a positive integer or None, got 0"),
        (["--ping-interval", "-5"],
         "ping_interval must be a positive number of seconds or None, got -5"),
        (["--ping-interval", "0"],
         "ping_interval must be a positive number of seconds or None, got 0"),
        (["--close-timeout", "nan"],
         "close_timeout must be a positive number of seconds or None, got nan"),
        (["--max-size", "lots"], "max_size must be a positive integer or None, got 'lots'"),
        (["--read-limit", "off"], "read_limit must be a positive integer, got None"),
        (["--write-limit", "-1"], "write_limit must be a non-negative integer, got -1"),
        (["--backlog", "1.5"], "backlog must be a positive integer, got 1.5"),
        (["--compression", "br"], "unsupported compression: 'br'"),
        (["--port", "70000"], "port must be an integer from 0 to 65535 or None, got 70000"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_cli_bad_value_is_one_line_and_status_2(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    # With a handler that cannot be imported: the options are refused first,
    # before the application's module is even imported.
    result = subprocess.run(
        [sys.executable, "-m", "wsserver", "nosuchmodule:handler", *flags],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr == f"wsserver: {message}\n"
    assert result.stdout == ""


# Flags made from the options ----------------------------------------------------------

GENERATED = {
    "compression", "server_header", "open_timeout", "ping_interval", "ping_timeout",
    "close_timeout", "max_size", "max_queue", "read_limit", "write_limit", "backlog",
}


def test_every_number_and_string_option_has_a_flag() -> None:
    assert {field.name for field in flag_fields()} == GENERATED
    help_text = build_parser().format_help()
    for name in GENERATED:
        assert "--" + name.replace("_", "-") in help_text


def test_without_flags_the_options_are_the_defaults() -> None:
    options = build_options(build_parser().parse_args(["myapp:handler"]))
    assert isinstance(options, TCPServeOptions)
    assert (options.host, options.port, options.reuse_port) == ("127.0.0.1", 8765, False)
    assert options.process_request is None
    defaults = TCPServeOptions()
    for field in attrs.fields(ServeOptions):
        if field.init:
            assert getattr(options, field.name) == getattr(defaults, field.name), field.name


def test_flags_set_their_options() -> None:
    args = build_parser().parse_args([
        "myapp:handler", "--max-queue", "4", "--ping-interval", "2.5", "--max-size", "off",
        "--open-timeout", "NONE", "--write-limit", "0", "--backlog", "10",
        "--server-header", "mine", "--origin", "https://a.example", "--origin", "https://b.example",
        "--subprotocol", "chat", "--host", "::1", "--reuse-port",
    ])
    options = build_options(args)
    assert isinstance(options, TCPServeOptions)
    assert (options.max_queue, options.ping_interval, options.max_size) == (4, 2.5, None)
    assert (options.open_timeout, options.write_limit, options.backlog) == (None, 0, 10)
    assert options.server_header == "mine"
    assert options.origins == ["https://a.example", "https://b.example"]
    assert options.subprotocols == ["chat"]
    assert (options.host, options.reuse_port) == ("::1", True)


@pytest.mark.parametrize(
    "flags", [["--no-compression"], ["--compression", "none"], ["--compression", "off"]]
)
def test_compression_can_be_turned_off(flags: list[str]) -> None:
    options = build_options(build_parser().parse_args(["myapp:handler", *flags]))
    assert options.compression is None
    assert options.server_extensions is None


def test_server_header_none_leaves_it_out() -> None:
    options = build_options(build_parser().parse_args(["--server-header", "None"]))
    assert options.server_header is None


def test_unix_socket_gives_a_path_and_no_handler_the_demo() -> None:
    options = build_options(build_parser().parse_args(["--unix-socket", "/tmp/demo.sock"]))
    assert isinstance(options, UnixServeOptions)
    assert options.path == "/tmp/demo.sock"
    # No handler: the demo, whose page is served by process_request.
    assert options.process_request is demo_process_request


# docs/cli.md --------------------------------------------------------------------------

_ROW = re.compile(r"^\| (?P<flags>`[^|]*`) \|(?P<default>[^|]*)\|", re.MULTILINE)


def documented_flags() -> dict[str, str]:
    """The options table of docs/cli.md: each flag (``-h``, ``--help``...) and its default."""
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    return {
        flag: match["default"].strip()
        for match in _ROW.finditer(text)
        for flag in re.findall(r"`(-?-?[a-z][\w-]*)", match["flags"])
    }


def test_docs_list_every_flag() -> None:
    documented = documented_flags()
    help_text = build_parser().format_help()
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", help_text)) | {"-h"}
    assert flags <= set(documented), flags - set(documented)
    assert set(documented) - {"handler"} <= flags


def test_docs_show_each_generated_flags_default() -> None:
    documented = documented_flags()
    for field in flag_fields():
        flag = "--" + field.name.replace("_", "-")
        if field.name == "server_header":
            # Documented as the pattern it follows, not this machine's versions.
            assert documented[flag] == "`Python/3.x.y wsserver/0.1.0`"
        else:
            assert documented[flag] == f"`{field.default}`", flag
