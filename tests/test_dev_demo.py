"""``python3 dev.py demo``: installs the project alone, and becomes the server it starts.

Nothing here installs anything: the install steps are checked with ``run``
replaced by a recorder, and the process test runs a copy of dev.py beside a
stand-in ``.venv`` whose ``python`` is the interpreter running these tests.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parent.parent


def load_dev(path: Path = ROOT / "dev.py") -> ModuleType:
    spec = importlib.util.spec_from_file_location("dev_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Installing -------------------------------------------------------------------------


@pytest.fixture
def dev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, list[list[str]]]:
    """dev.py with an existing venv, a stamp in ``tmp_path`` and ``run`` recorded."""
    module = load_dev()
    commands: list[list[str]] = []
    monkeypatch.setattr(module, "venv_python", lambda: Path(sys.executable))
    monkeypatch.setattr(module, "STAMP", tmp_path / ".installed-from")
    monkeypatch.setattr(module, "run", lambda *args, **kwargs: commands.append(
        [str(arg) for arg in args]
    ))
    return module, commands


def test_demo_installs_the_project_and_nothing_else(dev: tuple[ModuleType, Any]) -> None:
    module, commands = dev
    module.ensure_venv("")
    assert commands == [[sys.executable, "-m", "pip", "install", "--quiet", "-e", str(ROOT)]]


def test_test_installs_the_toolchain_after_a_demo_install(dev: tuple[ModuleType, Any]) -> None:
    module, commands = dev
    module.ensure_venv("")
    module.ensure_venv(module.FULL_EXTRAS)
    assert commands[-1] == [
        sys.executable, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[test,bench]"
    ]
    installs = len(commands)
    # Installed in full, both commands are ready.
    module.ensure_venv("")
    module.ensure_venv(module.FULL_EXTRAS)
    assert len(commands) == installs


def test_stamp_tells_what_was_installed() -> None:
    is_installed = load_dev().is_installed
    assert not is_installed(None, "f", "")
    assert is_installed("f\nextras=", "f", "")
    assert not is_installed("f\nextras=", "f", "[test,bench]")
    assert is_installed("f\nextras=[test,bench]", "f", "")
    assert not is_installed("f\nextras=[test,bench]", "g", "")  # pyproject.toml changed
    # A stamp from before, without the extras line, installed everything.
    assert is_installed("f", "f", "[test,bench]") and is_installed("f", "f", "")


# Running ----------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # ended meanwhile
            # The parent's pid is the second field after "(comm)".
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_dev_demo_becomes_the_server_and_stops_with_it(tmp_path: Path, stop: int) -> None:
    (tmp_path / "dev.py").write_text((ROOT / "dev.py").read_text())
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    # Stamped as installed for the demo, so that nothing is installed.
    fingerprint = load_dev(tmp_path / "dev.py").project_fingerprint()
    (tmp_path / ".venv" / ".installed-from").write_text(f"{fingerprint}\nextras=")
    process = subprocess.Popen(
        [sys.executable, str(tmp_path / "dev.py"), "demo", "--port", "0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "WSSERVER_NO_SPEEDUPS": "1"},
    )
    assert process.stdout is not None
    # A guard, not a measurement: a server that never starts fails the test.
    watchdog = threading.Timer(30, process.kill)
    watchdog.start()
    output = []
    try:
        for line in process.stdout:
            output.append(line)
            if match := re.search(rb"127\.0\.0\.1:(\d+)", line):
                break
        else:
            raise AssertionError(b"".join(output).decode(errors="replace"))
        # The process dev.py started is now the server itself, with no child.
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:3] == [b"-m", b"wsserver"], cmdline
        assert children_of(process.pid) == []
        with connect(f"ws://127.0.0.1:{int(match.group(1))}/", open_timeout=10) as client:
            client.send("still there?")
            assert client.recv(timeout=10) == "still there?"
        process.send_signal(stop)
        rest, _ = process.communicate(timeout=15)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, b"".join(output) + rest
