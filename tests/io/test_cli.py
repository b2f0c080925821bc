"""The command line: a handler given as module:function, the flags made from the options,
bad values, and docs/cli.md's table checked against --help. Serving runs on both backends.

The start-up errors and the places it listens on are in tests/cli/.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import socket
from pathlib import Path

import attrs
import pytest
import trustme
from websockets.exceptions import ConnectionClosedError

from wsserver.__main__ import build_options, build_parser, flag_fields, shown_default
from wsserver.demo import demo_process_request
from wsserver.options import (
    DEFAULT_SERVER_HEADER,
    ServeOptions,
    TCPServeOptions,
    UnixServeOptions,
)

from ..cli.runner import run_cli, running_cli
from .clients import CLIENT_TIMEOUT_SECONDS, connect

ROOT = Path(__file__).resolve().parent.parent.parent

APP = '''
async def handler(websocket):
    async for message in websocket:
        await websocket.send("app:" + message)

async def where(websocket):
    host = websocket.remote_address[0]
    await websocket.send(f"{host} {websocket.scheme}")
'''


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A directory holding myapp.py: ``handler`` echoes, ``where`` says who connected."""
    (tmp_path / "myapp.py").write_text(APP)
    return tmp_path


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_cli_serves_a_handler_from_the_current_directory(app: Path, backend: str) -> None:
    args = ["myapp:handler", "--port", "0", "--backend", backend, "--server-header", "none",
            "--ping-interval", "off"]
    with running_cli(args, app) as cli:
        with connect(f"ws://127.0.0.1:{cli.port}/") as client:
            client.send("hello")
            assert client.recv(timeout=CLIENT_TIMEOUT_SECONDS) == "app:hello"
            assert client.response is not None
            assert client.response.headers.get("Server") is None
        status, output = cli.stop()
    assert status == 0, output
    assert "server closed" in output


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_cli_option_flags_reach_the_server(app: Path, backend: str) -> None:
    args = ["myapp:handler", "--port", "0", "--backend", backend, "--max-size", "16",
            "--compression", "none", "--header", "X-Served-By: wsserver cli",
            "--log-level", "Debug"]
    with running_cli(args, app) as cli:
        with connect(f"ws://127.0.0.1:{cli.port}/") as client:
            assert client.response is not None
            assert "Sec-WebSocket-Extensions" not in client.response.headers
            assert client.response.headers["Server"] == DEFAULT_SERVER_HEADER
            assert client.response.headers["X-Served-By"] == "wsserver cli"
            client.send("x" * 16)
            assert client.recv(timeout=CLIENT_TIMEOUT_SECONDS) == "app:" + "x" * 16
            client.send("x" * 17)
            with pytest.raises(ConnectionClosedError) as closed:
                client.recv(timeout=CLIENT_TIMEOUT_SECONDS)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1009
        status, output = cli.stop()
    assert status == 0, output
    # --log-level in any case: Debug shows the frames.
    assert " DEBUG wsserver" in output


@pytest.mark.parametrize(
    ("flags", "seen"),
    [
        ([], "127.0.0.1 ws"),
        (["--proxy-headers"], "192.0.2.1 wss"),
        (["--proxy-headers", "--forwarded-allow-ips", "10.0.0.0/8, 192.0.2.7"], "127.0.0.1 ws"),
    ],
    ids=["off", "on, the proxy trusted by default", "on, the proxy not in the list"],
)
@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_cli_proxy_headers_give_the_client_behind_a_trusted_proxy(
    app: Path, backend: str, flags: list[str], seen: str
) -> None:
    args = ["myapp:where", "--port", "0", "--backend", backend, *flags]
    proxy_headers = {"X-Forwarded-For": "192.0.2.1", "X-Forwarded-Proto": "https"}
    with (
        running_cli(args, app) as cli,
        connect(f"ws://127.0.0.1:{cli.port}/", additional_headers=proxy_headers) as client,
    ):
        assert client.recv(timeout=CLIENT_TIMEOUT_SECONDS) == seen


# Bad values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--max-queue", "0"], "--max-queue must be a positive integer or none, got 0"),
        (["--ping-interval", "-5"],
         "--ping-interval must be a positive number of seconds or none, got -5"),
        (["--ping-interval", "0"],
         "--ping-interval must be a positive number of seconds or none, got 0"),
        (["--close-timeout", "nan"],
         "--close-timeout must be a positive number of seconds or none, got nan"),
        (["--open-timeout", "soon"],
         "--open-timeout must be a positive number of seconds or none, got 'soon'"),
        (["--max-size", "lots"], "--max-size must be a positive integer or none, got 'lots'"),
        # No "none" for an option that cannot be None: the word is refused as given.
        (["--read-limit", "off"], "--read-limit must be a positive integer, got 'off'"),
        (["--write-limit", "-1"], "--write-limit must be a non-negative integer, got -1"),
        (["--backlog", "1.5"], "--backlog must be a positive integer, got 1.5"),
        (["--compression", "br"], "--compression: unsupported compression: 'br'"),
        (["--forwarded-allow-ips", "10.0.0.0/33"],
         "--forwarded-allow-ips: a trusted proxy must be an IP address, a network or '*',"
         " got '10.0.0.0/33'"),
        (["--port", "70000"], "--port must be an integer from 0 to 65535 or none, got 70000"),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else "",
)
def test_cli_bad_value_is_one_line_naming_the_flag_and_status_2(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    # With a handler that cannot be imported: the options are refused first,
    # before the application's module is even imported.
    result = run_cli(["nosuchmodule:handler", *flags], tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"wsserver: {message}\n"
    assert result.stdout == ""


# Flags made from the options ----------------------------------------------------------

WITHOUT_GENERATED_FLAG = {
    # Written by hand: repeatable, or a file rather than the value.
    "origins": "--origin",
    "subprotocols": "--subprotocol",
    "extra_headers": "--header",
    "ssl": "--certfile",
    "sock": "--fd",
    # Python objects, which a command line cannot give.
    "logger": None,
    "extensions": None,
    "process_request": None,
    "select_subprotocol": None,
    "create_protocol": None,
}


def test_every_option_has_a_flag_or_a_reason_not_to() -> None:
    generated = {field.name for field in flag_fields()}
    fields = {field.name for field in attrs.fields(ServeOptions) if field.init}
    # A new option gets a flag made for it, or is named here with its reason.
    assert fields - generated == set(WITHOUT_GENERATED_FLAG)
    help_text = build_parser().format_help()
    for name in generated:
        assert "--" + name.replace("_", "-") + " " in help_text, name
    for flag in filter(None, WITHOUT_GENERATED_FLAG.values()):
        assert flag + " " in help_text, flag


def test_help_shows_each_quantity_with_its_unit_and_default() -> None:
    help_text = " ".join(build_parser().format_help().split())
    for field in flag_fields():
        unit = field.metadata.get("unit")
        shown = f"{shown_default(field)} {unit}" if unit else shown_default(field)
        assert f"(default: {shown}" in help_text, field.name
    assert "(default: 10 seconds; none or off for None)" in help_text


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
        "--subprotocol", "chat", "--host", "::1", "--reuse-port", "--header", "X-A: 1",
        "--header", "X-B:two words", "--proxy-headers", "--forwarded-allow-ips", "10.0.0.0/8,*",
    ])
    options = build_options(args)
    assert isinstance(options, TCPServeOptions)
    assert (options.max_queue, options.ping_interval, options.max_size) == (4, 2.5, None)
    assert (options.open_timeout, options.write_limit, options.backlog) == (None, 0, 10)
    assert options.server_header == "mine"
    assert options.origins == ["https://a.example", "https://b.example"]
    assert options.subprotocols == ["chat"]
    assert options.extra_headers == [("X-A", "1"), ("X-B", "two words")]
    assert (options.proxy_headers, options.forwarded_allow_ips) == (True, ("10.0.0.0/8", "*"))
    assert (options.host, options.reuse_port) == ("::1", True)


@pytest.mark.parametrize("level", ["info", "INFO", "Info", "debug", "Warning", "CRITICAL"])
def test_log_level_takes_any_case(level: str) -> None:
    assert build_parser().parse_args(["--log-level", level]).log_level == level.lower()


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


@pytest.mark.parametrize("flag", ["--uds", "--unix-socket"])
def test_uds_gives_a_path_and_no_handler_the_demo(flag: str) -> None:
    options = build_options(build_parser().parse_args([flag, "/tmp/demo.sock"]))
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
            assert documented[flag] == f"`{shown_default(field)}`", flag


def documented_errors(status: int) -> list[tuple[str, str]]:
    """The ``$ wsserver ...`` commands of docs/cli.md under a status, and what each prints."""
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    block = text.split(f"**Status {status}", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    lines = block.splitlines()
    return [
        (command.removeprefix("$ wsserver "), printed)
        for command, printed in zip(lines[::2], lines[1::2], strict=True)
    ]


@pytest.mark.parametrize(("command", "printed"), documented_errors(2))
def test_docs_usage_errors_are_what_the_program_prints(
    tmp_path: Path, command: str, printed: str
) -> None:
    result = run_cli(shlex.split(command), tmp_path)
    assert (result.returncode, result.stderr) == (2, printed + "\n")


@pytest.mark.parametrize(("command", "printed"), documented_errors(1))
def test_docs_start_up_errors_are_what_the_program_prints(
    tmp_path: Path, command: str, printed: str
) -> None:
    # What the examples assume: cert.pem with a key that is not other.pem,
    # and port 8765 taken (by this test, unless something else has it).
    authority = trustme.CA()
    authority.issue_cert("127.0.0.1").cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    authority.issue_cert("127.0.0.1").private_key_pem.write_to_path(tmp_path / "other.pem")
    with contextlib.ExitStack() as stack:
        if "--port 8765" in command:
            sock = stack.enter_context(socket.socket())
            with contextlib.suppress(OSError):  # already in use: all the better
                sock.bind(("127.0.0.1", 8765))
                sock.listen()
        result = run_cli(shlex.split(command), tmp_path)
    assert result.returncode == 1, result.stderr
    if "nosuch.invalid" in command:
        # The resolver's own words vary from one C library to another.
        printed = printed.rsplit(": ", 1)[0] + ": "
        assert result.stderr.startswith(printed)
        assert result.stderr.count("\n") == 1
    else:
        assert result.stderr == printed + "\n"
