"""The build: the compiled hot path is optional, and the pure-Python one stays whole.

Whether the compiled modules did build is checked in
``tests/sansio/test_masking.py`` (failing under ``CI=true``); here, what holds
whether or not they did: one list of compiled modules, the switch that runs
the sources, stale builds left aside, and a pure wheel when nothing compiled.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import pytest

from wsserver.sansio import _compiled

ROOT = Path(__file__).resolve().parent.parent

# What a build or an install leaves beside the sources (as tests/test_packaging.py).
BUILT = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "_build", "node_modules", "__pycache__", "*.egg-info",
    "*.py[cod]", "*.so", "*.pyd", ".mypy_cache", ".ruff_cache", ".hypothesis", ".pytest_cache",
    "docs", "tests", "bench",
)  # fmt: skip


def assigned_tuple(path: Path, name: str) -> tuple[str, ...]:
    """Return the tuple of strings assigned to ``name`` at the top of ``path``."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            found = ast.literal_eval(value)
            assert isinstance(found, tuple)
            return found
    raise AssertionError(f"{name} is not assigned in {path}")


def test_setup_and_dev_compile_the_modules_the_package_checks() -> None:
    # setup.py and dev.py cannot import wsserver: each names the modules itself.
    assert assigned_tuple(ROOT / "setup.py", "COMPILED_MODULES") == _compiled.COMPILED_MODULES
    assert assigned_tuple(ROOT / "dev.py", "COMPILED_MODULES") == _compiled.COMPILED_MODULES
    for name in _compiled.COMPILED_MODULES:
        assert (ROOT / "wsserver" / "sansio" / f"{name}.py").exists()


PROBE = """
import sys, wsserver
names = ["masking", *sys.argv[1:]]
files = [sys.modules["wsserver.sansio." + name].__file__ for name in names]
print(wsserver.HAS_SPEEDUPS, *[f.rsplit("/", 1)[1] for f in files])
print(sys.modules["wsserver.sansio.masking"].apply_mask.__name__)
"""


def test_no_speedups_at_import_runs_every_module_from_its_source() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *_compiled.COMPILED_MODULES],
        env={**os.environ, "WSSERVER_NO_SPEEDUPS": "1"},
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    flag, *files = result.stdout.splitlines()[0].split()
    assert flag == "False"
    assert files == [f"{name}.py" for name in ("masking", *_compiled.COMPILED_MODULES)]
    # The C unmasking is an extension module too: left aside as well.
    assert result.stdout.splitlines()[1] == "apply_mask_python"


def test_sphinx_documents_the_sources_which_keep_their_docstrings() -> None:
    # mypyc drops docstrings: autodoc of the compiled build would be empty.
    probe = "import sphinx, wsserver.sansio as s; print(s.HAS_SPEEDUPS, s.ServerConnection.__doc__)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.startswith("False The server side of one WebSocket connection")


def touch(path: Path, mtime: float) -> None:
    path.write_text("")
    os.utime(path, (mtime, mtime))


def test_a_source_edited_after_the_build_makes_its_module_stale(tmp_path: Path) -> None:
    suffix = EXTENSION_SUFFIXES[0]
    touch(tmp_path / "frames.py", 1_000_000.0)
    touch(tmp_path / f"frames{suffix}", 1_000_000.0 + 0.5)  # built after the source
    touch(tmp_path / "streams.py", 1_000_100.0)  # edited a minute after its build
    touch(tmp_path / f"streams{suffix}", 1_000_040.0)
    touch(tmp_path / "connection.py", 1_000_000.0)  # never compiled: not stale

    assert _compiled.stale_modules(tmp_path) == ["streams"]


def test_a_wheel_installed_moments_apart_is_not_stale(tmp_path: Path) -> None:
    # Unpacking a wheel may write a source a moment after its compiled module.
    suffix = EXTENSION_SUFFIXES[0]
    touch(tmp_path / f"frames{suffix}", 1_000_000.0)
    touch(tmp_path / "frames.py", 1_000_000.5)

    assert _compiled.stale_modules(tmp_path) == []


def test_wheel_without_compiled_modules_is_pure(tmp_path: Path) -> None:
    """With nothing compiled, the wheel is ``py3-none-any`` and holds no extension.

    Built from a clean copy of the sources, without build isolation (the
    venv has setuptools and wheel), so that it needs no network.
    """
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=BUILT)
    (source / "README.md").touch()
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
            "--no-build-isolation", "--wheel-dir", str(dist), str(source),
        ],
        env={**os.environ, "WSSERVER_NO_SPEEDUPS": "1"},
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = dist.glob("*.whl")
    assert wheel.name.endswith("-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/WHEEL")))
    assert "wsserver/sansio/connection.py" in names
    assert not [name for name in names if name.endswith((".so", ".pyd", ".c"))]
    assert b"Root-Is-Purelib: true" in metadata


@pytest.mark.skipif(not _compiled.pure_python_requested(), reason="WSSERVER_NO_SPEEDUPS unset")
def test_this_run_uses_the_sources_as_asked() -> None:
    # dev.py test runs tests/sansio and tests/conformance again this way.
    import wsserver

    assert not wsserver.HAS_SPEEDUPS
