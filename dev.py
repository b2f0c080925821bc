#!/usr/bin/env python3
"""Set up and run wsserver from a fresh clone, with nothing but Python.

``python3 dev.py demo`` runs the demo server; ``python3 dev.py test`` runs the
whole test suite. Both create ``.venv`` beside this file on first use; ``demo``
installs the project alone into it, ``test`` the project with everything its
tests need. Stopping ``demo`` (Ctrl-C, SIGTERM) stops the server: dev.py
becomes the server process rather than starting a child.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".installed-from"


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def run(*args: str | Path, **kwargs: object) -> None:
    print("+", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True, **kwargs)  # type: ignore[call-overload]


COMPILED_MODULES = ("streams", "frames", "http11", "handshake", "connection")
"""The modules setup.py compiles with mypyc (as wsserver/sansio/_compiled.py names them)."""

PURE_PYTHON_TESTS = ("tests/sansio", "tests/conformance")
"""What ``test`` runs a second time on the pure-Python build of the same install."""


def project_fingerprint() -> str:
    parts = []
    # The C and mypyc-compiled sources: an edit to one needs a new build, or
    # wsserver runs (and says it runs) the sources as pure Python.
    compiled = [f"wsserver/sansio/{name}.py" for name in COMPILED_MODULES]
    for name in ("pyproject.toml", "setup.py", "wsserver/sansio/_speedups.c", *compiled):
        path = ROOT / name
        if path.exists():
            parts.append(f"{name}:{path.stat().st_mtime_ns}:{path.stat().st_size}")
    return "\n".join(parts)


FULL_EXTRAS = "[test,bench]"
"""What ``test`` installs besides the project; ``demo`` needs none of it."""


def is_installed(stamp: str | None, fingerprint: str, extras: str) -> bool:
    """Tell whether the venv's stamp says the project is installed with ``extras``.

    The stamp is the fingerprint, then a line naming the extras; a stamp
    without that line comes from before ``demo`` installed less, with all of
    them. The full toolchain serves the demo too, not the other way round.
    """
    if stamp is None:
        return False
    stamped, _, installed = stamp.partition("\nextras=")
    if stamped != fingerprint:
        return False
    installed = installed if "\nextras=" in stamp else FULL_EXTRAS
    return extras in ("", installed)


def ensure_venv(extras: str = FULL_EXTRAS) -> Path:
    """Create the virtual environment and install the project into it, with ``extras``."""
    if not venv_python().exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    fingerprint = project_fingerprint()
    stamp = STAMP.read_text() if STAMP.exists() else None
    if not is_installed(stamp, fingerprint, extras):
        py = venv_python()
        if extras:
            run(py, "-m", "pip", "install", "--quiet", "--upgrade", "pip", "setuptools", "wheel")
        run(py, "-m", "pip", "install", "--quiet", "-e", f"{ROOT}{extras}")
        STAMP.write_text(f"{fingerprint}\nextras={extras}")
    return venv_python()


def exec_demo(py: Path, args: list[str]) -> int:
    """Become the demo server: Ctrl-C and SIGTERM then reach it, and no child is left behind."""
    command = [str(py), "-m", "wsserver", *args]
    sys.stdout.flush()
    if os.name == "nt":
        # No exec on Windows (os.execv starts a new process and returns at
        # once); the child shares the console, so Ctrl-C reaches it as well.
        return subprocess.call(command)
    os.execv(command[0], command)


SPEEDUPS_PROBE = """
import wsserver.sansio
raise SystemExit(0 if wsserver.sansio.HAS_SPEEDUPS else 3)
"""


def check_speedups(py: Path) -> None:
    """Say in one clear line whether the compiled hot path is in use.

    setup.py turns a failed compile into a warning, and pip shows a build's
    output only with ``-v``: without this line the fallback to pure Python
    would go unnoticed (the tests fail on it only under ``CI=true``).
    """
    if os.environ.get("WSSERVER_NO_SPEEDUPS", "") not in ("", "0"):
        print("wsserver: WSSERVER_NO_SPEEDUPS is set: the pure-Python build runs", flush=True)
        return
    # Exit status 3 means the compiled modules are missing or stale; any other
    # failure to import wsserver is for the tests to report.
    probe = subprocess.run([str(py), "-c", SPEEDUPS_PROBE], capture_output=True, cwd=ROOT)
    if probe.returncode == 0:
        print("wsserver: compiled hot path in use (mypyc core, C unmasking)", flush=True)
    elif probe.returncode == 3:
        print("!!! wsserver: the compiled hot path is NOT in use: wsserver runs as pure Python")
        print("!!! (correct, but slower); to see why the build failed, run")
        print(f"!!!     {py} -m pip install -v -e {ROOT}", flush=True)
        print("!!! (it needs a C compiler and the Python headers, e.g. gcc and python3-dev)")
        print(probe.stderr.decode(errors="replace").strip(), flush=True)


def ensure_node_packages() -> None:
    """Install the Node clients used by the interoperability tests, if any."""
    package_dir = ROOT / "tests" / "interop"
    if not (package_dir / "package.json").exists():
        return
    if subprocess.run(["sh", "-c", "command -v npm"], capture_output=True).returncode:
        print("!!! npm is not installed: trying apt-get install nodejs npm", flush=True)
        subprocess.run(
            ["sh", "-c", "apt-get update -q && apt-get install -y -q nodejs npm"],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    if subprocess.run(["sh", "-c", "command -v npm"], capture_output=True).returncode:
        print("!!! npm is still missing: the Node interop tests will not run", flush=True)
        return
    lock = package_dir / "package-lock.json"
    installed = package_dir / "node_modules" / ".package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    # npm ci installs exactly what package-lock.json pins.
    if subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=package_dir).returncode:
        print("!!! npm ci failed: the Node interop tests will not run", flush=True)


def ensure_chromium() -> None:
    """Install Debian's headless Chromium for the browser interoperability tests."""
    if not (ROOT / "tests" / "interop" / "test_chromium.py").exists():
        return
    if Path("/usr/bin/chromium").exists():
        return
    print("installing Debian's chromium for the browser tests", flush=True)
    subprocess.run(
        ["sh", "-c", "apt-get update -q && apt-get install -y -q chromium"],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    if not Path("/usr/bin/chromium").exists():
        print("!!! chromium could not be installed: the browser tests will not run", flush=True)


def ensure_redis_server() -> None:
    """Install Debian's redis-server for the Redis pub/sub tests (each starts its own)."""
    if not (ROOT / "tests" / "pubsub").exists():
        return
    if Path("/usr/bin/redis-server").exists():
        return
    print("installing Debian's redis-server for the pub/sub tests", flush=True)
    subprocess.run(
        ["sh", "-c", "apt-get update -q && apt-get install -y -q redis-server"],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    if not Path("/usr/bin/redis-server").exists():
        print("!!! redis-server could not be installed: the Redis tests will not run", flush=True)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test"}:
        print(__doc__)
        print("usage: python3 dev.py demo [wsserver options] | test [pytest options]")
        return 2
    command, rest = argv[0], argv[1:]
    py = ensure_venv("" if command == "demo" else FULL_EXTRAS)
    check_speedups(py)
    os.chdir(ROOT)
    if command == "demo":
        return exec_demo(py, rest)
    ensure_node_packages()
    ensure_chromium()
    ensure_redis_server()
    status = subprocess.call([str(py), "-m", "pytest", *rest])
    if rest:
        return status
    # The whole suite ran on the compiled build; the core's own tests run
    # again on the pure-Python one, which installs without a compiler.
    print(f"+ WSSERVER_NO_SPEEDUPS=1 pytest {' '.join(PURE_PYTHON_TESTS)}", flush=True)
    pure_status = subprocess.call(
        [str(py), "-m", "pytest", "-q", *PURE_PYTHON_TESTS],
        env={**os.environ, "WSSERVER_NO_SPEEDUPS": "1"},
    )
    return status or pure_status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
