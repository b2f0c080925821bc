"""The command line: a handler given as module:function, options, errors; both backends."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.sync.client import connect

APP = '''
async def handler(websocket):
    async for message in websocket:
        await websocket.send("app:" + message)
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on {port}")


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
def test_cli_serves_a_handler_from_the_current_directory(tmp_path: Path, backend: str) -> None:
    (tmp_path / "myapp.py").write_text(APP)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "wsserver", "myapp:handler", "--port", str(port),
         "--backend", backend, "--server-header", "none", "--ping-interval", "off"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": ""},
    )
    try:
        wait_for_port(port, process)
        with connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as client:
            client.send("hello")
            assert client.recv(timeout=10) == "app:hello"
            assert client.response.headers.get("Server") is None
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert b"server closed" in output


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
