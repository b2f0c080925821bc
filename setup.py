"""Build the optional C speed-up; all other metadata lives in pyproject.toml.

``wsserver.sansio._speedups`` is compiled when a C compiler is available. When
compiling fails, or when ``WSSERVER_NO_SPEEDUPS=1`` is set, the install still
succeeds and wsserver uses its pure-Python masking.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

SKIP_ENV_VAR = "WSSERVER_NO_SPEEDUPS"
FALLBACK_WARNING = "wsserver: C speed-up not built, using pure Python"
SANSIO_DIR = Path(__file__).resolve().parent / "wsserver" / "sansio"

# Everything a missing or broken compiler raises: no compiler configured
# (PlatformError), compiler not found or it exited non-zero (ExecError, OSError),
# compile or link errors (CCompilerError).
BUILD_ERRORS = (CCompilerError, ExecError, PlatformError, OSError)


def warn_fallback(reason: str) -> None:
    """Tell the installing user, loudly, that the C speed-up is missing."""
    print(f"\n*** {FALLBACK_WARNING} ({reason})\n", file=sys.stderr, flush=True)


class OptionalBuildExt(build_ext):
    """``build_ext`` that turns a failed compile into a warning, not an error."""

    def run(self) -> None:
        # Compiler discovery happens here, before any extension is built.
        try:
            super().run()
        except BUILD_ERRORS as exc:
            warn_fallback(f"{type(exc).__name__}: {exc}")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except BUILD_ERRORS as exc:
            warn_fallback(f"{type(exc).__name__}: {exc}")


def speedup_extensions() -> list[Extension]:
    """Return the extensions to build, none when the environment opts out."""
    if os.environ.get(SKIP_ENV_VAR, "") not in ("", "0"):
        warn_fallback(f"{SKIP_ENV_VAR} is set")
        stale = sorted(SANSIO_DIR.glob("_speedups*.so")) + sorted(SANSIO_DIR.glob("_speedups*.pyd"))
        for path in stale:
            print(
                f"*** wsserver: {path} is left from an earlier build and will "
                "still be imported; delete it to use pure Python",
                file=sys.stderr,
                flush=True,
            )
        return []
    return [
        Extension(
            "wsserver.sansio._speedups",
            sources=["wsserver/sansio/_speedups.c"],
        )
    ]


setup(ext_modules=speedup_extensions(), cmdclass={"build_ext": OptionalBuildExt})
