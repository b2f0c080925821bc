"""Build the optional compiled hot path; all other metadata lives in pyproject.toml.

Two kinds of extension modules are built when a C compiler is available:

- ``wsserver.sansio._speedups``, hand-written C for unmasking;
- the sans-I/O hot path (``streams``, ``frames``, ``http11``, ``handshake``,
  ``connection`` in ``wsserver/sansio``), compiled from the same ``.py``
  files by mypyc, which pyproject.toml lists as a build requirement.

When compiling fails, or when ``WSSERVER_NO_SPEEDUPS=1`` is set, the install
still succeeds, wsserver runs the same sources as pure Python, and the wheel
is tagged ``py3-none-any``. The mypyc modules are kept all or none: they share
one runtime library, and a partial set could not be imported.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, ExecError, PlatformError

SKIP_ENV_VAR = "WSSERVER_NO_SPEEDUPS"
FALLBACK_WARNING = "wsserver: compiled hot path not built, using pure Python"
SANSIO_DIR = Path(__file__).resolve().parent / "wsserver" / "sansio"

# The modules mypyc compiles; wsserver/sansio/_compiled.py names the same ones
# (tests/test_build.py checks that they agree).
COMPILED_MODULES = ("streams", "frames", "http11", "handshake", "connection")
# The runtime library the mypyc modules share, inside the package rather than
# at the top level of site-packages, where mypyc would put it by default.
MYPYC_GROUP = "wsserver.sansio._hotpath"

# Commands that read the extensions' declarations without building them.
METADATA_COMMANDS = {"sdist", "egg_info", "dist_info"}

# Everything a missing or broken compiler raises: no compiler configured
# (PlatformError), compiler not found or it exited non-zero (ExecError, OSError),
# compile or link errors (CCompilerError).
BUILD_ERRORS = (CCompilerError, ExecError, PlatformError, OSError)


def warn_fallback(reason: str) -> None:
    """Tell the installing user, loudly, that (part of) the compiled path is missing."""
    print(f"\n*** {FALLBACK_WARNING} ({reason})\n", file=sys.stderr, flush=True)


def skip_requested() -> bool:
    """Tell whether the environment opts out of every compiled module."""
    return os.environ.get(SKIP_ENV_VAR, "") not in ("", "0")


def mypyc_extensions() -> list[Extension]:
    """Translate the hot-path modules to C with mypyc; none if that fails.

    mypyc type-checks the modules first (with pyproject.toml's mypy settings)
    and writes C sources under ``build/mypyc``: this runs only when extensions
    are actually built, not each time pip asks setup.py for metadata.
    """
    try:
        from mypyc.build import mypycify
    except ImportError as exc:  # an install without build isolation, lacking mypy
        warn_fallback(f"mypyc is not installed: {exc}")
        return []
    paths = [f"wsserver/sansio/{name}.py" for name in COMPILED_MODULES]
    try:
        return mypycify(
            # mypy also reads the package's other modules (wsserver/__init__.py
            # and what it imports): their own errors, or dependencies absent
            # from the build environment, must not cost the compiled core.
            ["--follow-imports=silent", *paths],
            opt_level="3",
            group_name=MYPYC_GROUP,
            target_dir=os.path.join("build", "mypyc"),
        )
    except (Exception, SystemExit) as exc:  # mypyc reports type errors by exiting
        warn_fallback(f"mypyc failed: {type(exc).__name__}: {exc}")
        return []


class OptionalBuildExt(build_ext):
    """``build_ext`` that turns a failed compile into a warning, not an error.

    Attributes:
        built: names of the extension modules that did build, which
            :class:`WheelTaggedByBuild` reads to tag the wheel.
    """

    def initialize_options(self) -> None:
        super().initialize_options()
        self.built: list[str] = []

    def finalize_options(self) -> None:
        # Only a build finalizes build_ext, so mypyc runs for builds alone;
        # the extensions must be declared before setuptools finalizes them.
        declared = self.distribution.ext_modules
        # sdist finalizes build_ext too, to list the extensions' sources: the
        # C that mypyc writes is built output, never part of the sdist.
        building = not set(self.distribution.commands) <= METADATA_COMMANDS
        if building and declared and all(ext.name == SPEEDUPS_MODULE for ext in declared):
            self.distribution.ext_modules = [*declared, *mypyc_extensions()]
        super().finalize_options()

    def run(self) -> None:
        # Compiler discovery happens here, before any extension is built.
        try:
            super().run()
        except BUILD_ERRORS as exc:
            warn_fallback(f"{type(exc).__name__}: {exc}")
            self.built = []

    def build_extensions(self) -> None:
        failed: list[str] = []
        for ext in self.extensions:
            try:
                self.build_extension(ext)
            except BUILD_ERRORS as exc:
                warn_fallback(f"{ext.name}: {type(exc).__name__}: {exc}")
                failed.append(ext.name)
        mypyc_names = {ext.name for ext in self.extensions if ext.name != SPEEDUPS_MODULE}
        if mypyc_names & set(failed):
            # All or none: each compiled module imports the shared runtime.
            failed = sorted(set(failed) | mypyc_names)
            for name in mypyc_names:
                path = Path(self.get_ext_fullpath(name))
                if path.exists():
                    path.unlink()
        # The copy into the source tree (editable installs) skips what failed.
        self.extensions = [ext for ext in self.extensions if ext.name not in failed]
        self.built = [ext.name for ext in self.extensions]

    def copy_extensions_to_source(self) -> None:
        super().copy_extensions_to_source()
        # mypyc leaves a module in the source tree alone when the new build is
        # byte for byte the same (its shims always are), so its time would be
        # that of the first build: wsserver would then take it for older than
        # an edited source and run pure Python. Its time says when it was built.
        for ext in self.extensions:
            path = Path(self.get_ext_filename(self.get_ext_fullname(ext.name)))
            if path.exists():
                os.utime(path)


class WheelTaggedByBuild(bdist_wheel):
    """``bdist_wheel`` that tags the wheel pure when no extension module built.

    setuptools decides the tag from the extensions *declared*, before any is
    built; a wheel holding only Python files must still be ``py3-none-any``.
    """

    def run(self) -> None:
        self.run_command("build")
        build_ext_command = self.get_finalized_command("build_ext")
        if not getattr(build_ext_command, "built", None):
            self.root_is_pure = True
        super().run()


SPEEDUPS_MODULE = "wsserver.sansio._speedups"


def speedup_extensions() -> list[Extension]:
    """Return the C extension to build, none when the environment opts out.

    The mypyc modules join it in :meth:`OptionalBuildExt.run`.
    """
    if skip_requested():
        warn_fallback(f"{SKIP_ENV_VAR} is set")
        stale = [path for pattern in ("*.so", "*.pyd") for path in sorted(SANSIO_DIR.glob(pattern))]
        for path in stale:
            print(
                f"*** wsserver: {path} is left from an earlier build; it is ignored "
                f"while {SKIP_ENV_VAR} is set at run time too, delete it otherwise",
                file=sys.stderr,
                flush=True,
            )
        return []
    return [Extension(SPEEDUPS_MODULE, sources=["wsserver/sansio/_speedups.c"])]


setup(
    ext_modules=speedup_extensions(),
    cmdclass={"build_ext": OptionalBuildExt, "bdist_wheel": WheelTaggedByBuild},
)
