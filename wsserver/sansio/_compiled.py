"""Which build of the hot path runs: the modules mypyc compiled, or their sources.

setup.py compiles :data:`COMPILED_MODULES` with mypyc when it can (see
``docs/design.md``, "The compiled core"). Python then imports each compiled
module in place of the ``.py`` file beside it. This module, imported by the
package before any of them, decides whether to let it:

- ``WSSERVER_NO_SPEEDUPS`` set to anything but ``""`` or ``"0"`` asks for the
  pure-Python build: the same switch that makes setup.py skip compiling, so
  that one build can test both (``dev.py test`` does);
- a compiled module older than its source is stale (the source was edited
  after the last build): it would run old code, so the sources run instead,
  with a warning saying how to rebuild;
- mypyc keeps no docstrings (a compiled class or function has only its
  signature), so when Sphinx is what imports the package, to document it,
  the sources run and autodoc finds every docstring.

It never imports a compiled module itself, and it is never compiled.
"""

from __future__ import annotations

import os
import sys
import warnings
from importlib.machinery import (
    BYTECODE_SUFFIXES,
    EXTENSION_SUFFIXES,
    SOURCE_SUFFIXES,
    FileFinder,
    SourceFileLoader,
    SourcelessFileLoader,
)
from pathlib import Path
from types import ModuleType

__all__ = [
    "COMPILED_MODULES",
    "SKIP_ENV_VAR",
    "choose_build",
    "is_compiled",
    "pure_python_requested",
    "stale_modules",
    "use_sources",
]

SKIP_ENV_VAR = "WSSERVER_NO_SPEEDUPS"

COMPILED_MODULES: tuple[str, ...] = ("streams", "frames", "http11", "handshake", "connection")
"""The modules of :mod:`wsserver.sansio` that setup.py hands to mypyc (kept in step by a test)."""

# A wheel's files are written one after the other at install time, so a source
# may be a little younger than the module compiled from it; an edit is not.
_STALE_AFTER_SECONDS = 2.0


def pure_python_requested() -> bool:
    """Tell whether ``WSSERVER_NO_SPEEDUPS`` asks for the pure-Python build."""
    return os.environ.get(SKIP_ENV_VAR, "") not in ("", "0")


def _compiled_file(directory: Path, name: str) -> Path | None:
    for suffix in EXTENSION_SUFFIXES:
        path = directory / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def stale_modules(directory: Path) -> list[str]:
    """Name the compiled modules in ``directory`` that are older than their source.

    Args:
        directory: the directory of the :mod:`wsserver.sansio` package.

    Returns:
        The names (from :data:`COMPILED_MODULES`) whose ``.py`` file was
        changed after the extension module was built.
    """
    stale = []
    for name in COMPILED_MODULES:
        compiled = _compiled_file(directory, name)
        source = directory / f"{name}.py"
        if compiled is None or not source.exists():
            continue
        if source.stat().st_mtime > compiled.stat().st_mtime + _STALE_AFTER_SECONDS:
            stale.append(name)
    return stale


def use_sources(directory: Path) -> None:
    """Make the package's own modules load from ``.py`` files, ignoring extensions.

    The path finder keeps one finder per directory in
    :data:`sys.path_importer_cache`; a finder that knows only source and
    bytecode loaders, put there before the package imports its submodules,
    is the import system's own way to leave extension modules aside. It
    covers this directory only: ``extensions/`` is never compiled.

    Args:
        directory: the directory of the :mod:`wsserver.sansio` package.
    """
    sys.path_importer_cache[str(directory)] = FileFinder(
        str(directory),
        (SourceFileLoader, SOURCE_SUFFIXES),
        (SourcelessFileLoader, BYTECODE_SUFFIXES),
    )


def choose_build(directory: Path) -> None:
    """Decide, once, at package import, which build of the hot path is imported.

    Args:
        directory: the directory of the :mod:`wsserver.sansio` package.
    """
    if pure_python_requested() or "sphinx" in sys.modules:
        use_sources(directory)
        return
    stale = stale_modules(directory)
    if stale:
        use_sources(directory)
        warnings.warn(
            f"wsserver.sansio: compiled {', '.join(stale)} older than the source, using "
            "pure Python; rebuild with `pip install -e .` (or `python3 dev.py test`)",
            RuntimeWarning,
            stacklevel=3,
        )


def is_compiled(module: ModuleType) -> bool:
    """Tell whether ``module`` was loaded from an extension module."""
    return (module.__file__ or "").endswith(tuple(EXTENSION_SUFFIXES))
