"""Packaging: the LICENSE that pyproject.toml declares, and an sdist that carries docs/ and tests/.

The sdist is built from a copy of the source tree (without what is built or
installed: the venv, caches, node_modules, compiled modules), so the test
writes nothing beside the sources and runs as well from an unpacked sdist.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Never source: what setuptools, Sphinx, npm, pytest and the compiler leave behind.
BUILT = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "_build", "node_modules", "__pycache__", "*.egg-info",
    "*.py[cod]", "*.so", "*.pyd", ".mypy_cache", ".ruff_cache", ".hypothesis", ".pytest_cache",
)


def test_license_is_the_declared_bsd_3_clause() -> None:
    # Either spelling: license = { text = "BSD-3-Clause" } or license = "BSD-3-Clause".
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^license\s*=.*"BSD-3-Clause"', pyproject, re.MULTILINE)
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License\n")
    assert "Copyright (c) 2026, wsserver developers" in text
    assert "Neither the name of the copyright holder" in text  # the third clause


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    """Build the sdist from a clean copy; return the copy and the sdist's file names."""
    source = tmp_path_factory.mktemp("source") / "wsserver"
    shutil.copytree(ROOT, source, ignore=BUILT)
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(dist)],
        cwd=source, check=True, capture_output=True, timeout=120,
    )
    (archive,) = dist.glob("wsserver-*.tar.gz")
    with tarfile.open(archive) as tar:
        # Each name is "wsserver-X.Y.Z/path"; keep the path, files only.
        names = {
            member.name.split("/", 1)[1] for member in tar.getmembers()
            if member.isfile() and "/" in member.name
        }
    return source, names


def _files_under(root: Path, directory: str) -> set[str]:
    return {
        path.relative_to(root).as_posix()
        for path in (root / directory).rglob("*")
        if path.is_file()
    }


@pytest.mark.parametrize("directory", ["docs", "tests"])
def test_sdist_carries_every_file_of(sdist: tuple[Path, set[str]], directory: str) -> None:
    source, names = sdist
    expected = _files_under(source, directory)
    assert expected, f"no {directory}/ in the source tree"
    assert expected <= names, sorted(expected - names)


def test_sdist_carries_the_project_files(sdist: tuple[Path, set[str]]) -> None:
    _, names = sdist
    for name in [
        "LICENSE", "README.md", "pyproject.toml", "setup.py", "dev.py", "PKG-INFO",
        "wsserver/__init__.py", "wsserver/py.typed", "wsserver/sansio/_speedups.c",
        "docs/conf.py", "docs/index.md", "tests/conftest.py", "tests/test_packaging.py",
        "tests/io/clients.py", "tests/interop/package-lock.json",
    ]:
        assert name in names, name


def test_sdist_carries_nothing_built(sdist: tuple[Path, set[str]]) -> None:
    _, names = sdist
    built = [
        name for name in names
        if "__pycache__" in name or "node_modules/" in name or "_build/" in name
        or name.endswith((".pyc", ".so", ".pyd"))
    ]
    assert built == []
