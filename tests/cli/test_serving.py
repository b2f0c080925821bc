"""The command line serving, as a user runs it: the listening line, every place it can
listen on (TCP, Unix socket, an inherited descriptor, TLS), the signals that stop
it, and --version. Each runs the server on both backends, with real clients.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trustme
from websockets.exceptions import ConnectionClosedOK
from websockets.sync.client import unix_connect

import wsserver
from wsserver import __version__

from ..io.clients import CLIENT_TIMEOUT_SECONDS, connect, handshake_request
from .runner import GUARD_SECONDS, PYTHON_M, run_cli, running_cli

BACKENDS = ["trio", "asyncio"]

ECHO = '''
async def handler(websocket):
    async for message in websocket:
        await websocket.send("app:" + message)
'''


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A directory holding myapp.py, whose ``handler`` echoes with a prefix."""
    (tmp_path / "myapp.py").write_text(ECHO)
    return tmp_path


def echo_works(client: object) -> None:
    client.send("hello")  # type: ignore[attr-defined]
    assert client.recv(timeout=CLIENT_TIMEOUT_SECONDS) == "app:hello"  # type: ignore[attr-defined]


# Stopping ---------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_signal_closes_clients_with_1001_and_exits_0(
    app: Path, backend: str, signum: signal.Signals
) -> None:
    with running_cli(["myapp:handler", "--port", "0", "--backend", backend], app) as cli:
        with connect(f"ws://127.0.0.1:{cli.port}/") as client:
            echo_works(client)
            cli.process.send_signal(signum)
            with pytest.raises(ConnectionClosedOK) as closed:
                client.recv(timeout=CLIENT_TIMEOUT_SECONDS)
        status, output = cli.stop(None)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1001
    assert status == 0, output
    assert "Traceback" not in output
    assert "server closed" in output


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_signal_stops_at_once(app: Path, backend: str) -> None:
    # A client that never answers the closing handshake, and no close timeout:
    # after the first signal the server would wait for it forever.
    args = ["myapp:handler", "--port", "0", "--backend", backend,
            "--close-timeout", "off", "--ping-interval", "off"]
    with (
        running_cli(args, app) as cli,
        socket.create_connection(("127.0.0.1", cli.port), timeout=CLIENT_TIMEOUT_SECONDS) as raw,
    ):
        raw.sendall(handshake_request())
        assert raw.recv(4096).startswith(b"HTTP/1.1 101 ")
        cli.process.send_signal(signal.SIGTERM)
        cli.wait_for("stopping: closing connections with 1001")
        status, output = cli.stop(signal.SIGTERM)
    assert status == 0, output
    assert "Traceback" not in output


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_before_listening_ends_with_130_and_no_traceback(
    tmp_path: Path, signum: signal.Signals
) -> None:
    # A module that takes its time to import: the signal comes meanwhile.
    (tmp_path / "slow.py").write_text(
        "import sys, time\nprint('importing', file=sys.stderr, flush=True)\ntime.sleep(60)\n"
    )
    process = subprocess.Popen(
        [*PYTHON_M, "slow:handler"], cwd=tmp_path, stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": ""},
    )
    try:
        assert process.stderr is not None
        assert process.stderr.readline() == "importing\n"
        process.send_signal(signum)
        _, rest = process.communicate(timeout=GUARD_SECONDS)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130
    assert rest == ""


# Where it listens -------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_listening_line_says_scheme_address_and_backend(app: Path, backend: str) -> None:
    # --log-level in any case; warning hides the library's INFO lines, not the CLI's line.
    args = ["myapp:handler", "--port", "0", "--backend", backend, "--log-level", "Warning"]
    with running_cli(args, app) as cli:
        expected = f"wsserver: serving ws://127.0.0.1:{cli.port} on {backend} (Ctrl-C to stop)"
        assert cli.line == expected
        with connect(f"ws://127.0.0.1:{cli.port}/") as client:
            echo_works(client)
        status, output = cli.stop()
    assert status == 0, output
    assert " INFO " not in output


@pytest.mark.parametrize("backend", BACKENDS)
def test_uds_serves_on_a_unix_socket_and_removes_it(app: Path, backend: str) -> None:
    path = app / "app.sock"
    with running_cli(["myapp:handler", "--uds", str(path), "--backend", backend], app) as cli:
        expected = f"wsserver: serving ws:// at unix socket {path} on {backend} (Ctrl-C to stop)"
        assert cli.line == expected
        with unix_connect(str(path), "ws://localhost/", legacy=True,
                          open_timeout=CLIENT_TIMEOUT_SECONDS) as client:
            echo_works(client)
        status, output = cli.stop()
    assert status == 0, output
    assert not path.exists()


def test_unix_socket_is_the_older_spelling_of_uds(app: Path) -> None:
    path = app / "app.sock"
    with running_cli(["myapp:handler", "--unix-socket", str(path)], app) as cli:
        assert f"at unix socket {path} on trio" in cli.line


@pytest.mark.parametrize("family", ["tcp", "unix"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_fd_serves_on_an_inherited_listening_socket(app: Path, backend: str, family: str) -> None:
    # As a supervisor (systemd, circus) does: it binds, the server inherits.
    if family == "tcp":
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(app / "inherited.sock"))
    with sock:
        sock.listen()
        fd = sock.fileno()
        args = ["myapp:handler", "--fd", str(fd), "--backend", backend]
        with running_cli(args, app, pass_fds=[fd]) as cli:
            if family == "tcp":
                port = sock.getsockname()[1]
                assert f"serving ws://127.0.0.1:{port} on {backend}" in cli.line
                client = connect(f"ws://127.0.0.1:{port}/")
            else:
                assert f"serving ws:// at unix socket {app / 'inherited.sock'}" in cli.line
                client = unix_connect(str(app / "inherited.sock"), "ws://localhost/",
                                      legacy=True, open_timeout=CLIENT_TIMEOUT_SECONDS)
            with client:
                echo_works(client)
            status, output = cli.stop()
    assert status == 0, output


@pytest.mark.parametrize("backend", BACKENDS)
def test_certfile_and_keyfile_serve_wss(app: Path, backend: str) -> None:
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1")
    issued.cert_chain_pems[0].write_to_path(app / "cert.pem")
    issued.private_key_pem.write_to_path(app / "key.pem")
    client_ssl = ssl.create_default_context()
    authority.configure_trust(client_ssl)
    args = ["myapp:handler", "--port", "0", "--backend", backend,
            "--certfile", "cert.pem", "--keyfile", "key.pem"]
    with running_cli(args, app) as cli:
        assert cli.line.startswith(f"wsserver: serving wss://127.0.0.1:{cli.port} on {backend}")
        with connect(f"wss://127.0.0.1:{cli.port}/", ssl=client_ssl) as client:
            echo_works(client)
        status, output = cli.stop()
    assert status == 0, output


@pytest.mark.parametrize("backend", BACKENDS)
def test_workers_serve_from_several_processes(app: Path, backend: str) -> None:
    # wsserver.workers runs them; what is checked here is that the flag gets there.
    args = ["myapp:handler", "--port", "0", "--backend", backend, "--workers", "2"]
    supervisor = re.compile(r"supervisor \d+ listening on 127\.0\.0\.1:\d+ with 2 workers")
    with running_cli(args, app, ready=supervisor) as cli:
        for _ in range(2):
            cli.wait_for(re.compile(r"worker \d+ serving$"))
        with connect(f"ws://127.0.0.1:{cli.port}/") as client:
            echo_works(client)
            cli.process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosedOK) as closed:
                client.recv(timeout=CLIENT_TIMEOUT_SECONDS)
        status, output = cli.stop(None)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1001
    assert status == 0, output


# What it says about itself ----------------------------------------------------------


def test_version_shows_backends_and_the_c_speedup(tmp_path: Path) -> None:
    result = run_cli(["--version"], tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"wsserver {__version__} with ")
    assert lines[1].startswith("backends: trio ")
    assert "asyncio" in lines[1]
    state = "in use" if wsserver.HAS_SPEEDUPS else "not in use"
    assert lines[2].startswith(f"C speed-up: {state}")


def test_version_says_when_the_speedup_is_switched_off(tmp_path: Path) -> None:
    result = run_cli(["--version"], tmp_path, env={"WSSERVER_NO_SPEEDUPS": "1"})
    assert result.returncode == 0, result.stderr
    assert "C speed-up: not in use: WSSERVER_NO_SPEEDUPS is set" in result.stdout


def test_the_installed_script_is_the_same_program(app: Path) -> None:
    script = Path(sys.executable).parent / "wsserver"
    assert script.exists(), "the wsserver script is declared in pyproject.toml [project.scripts]"
    with running_cli(["myapp:handler", "--port", "0"], app, program=[str(script)]) as cli:
        with connect(f"ws://127.0.0.1:{cli.port}/") as client:
            echo_works(client)
        status, output = cli.stop()
    assert status == 0, output
