"""The floors of STYLE.md: imports only run downward, and only floor 1 knows the loop."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "wsserver"

SHARED_LAYER = [
    "_opening.py", "_receiving.py", "_sending.py", "_timers.py", "auth.py", "broadcast.py",
    "connection.py", "options.py", "server.py",
]
LOOP_MODULES = {"trio", "asyncio", "sniffio"}
FRONT_DOORS = {"wsserver.trio_io", "wsserver.asyncio_io"}


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, relative imports resolved against the package."""
    # The package a relative import starts from: the module's directory.
    package = path.relative_to(PACKAGE.parent).parent.parts
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def top_level(modules: set[str]) -> set[str]:
    return {module.split(".")[0] for module in modules}


@pytest.mark.parametrize("name", SHARED_LAYER)
def test_shared_layer_never_imports_a_loop_or_a_front_door(name: str) -> None:
    modules = imported_modules(PACKAGE / name)
    assert not top_level(modules) & LOOP_MODULES, sorted(modules)
    assert not {m for m in modules if any(m.startswith(door) for door in FRONT_DOORS)}


@pytest.mark.parametrize("path", sorted((PACKAGE / "sansio").glob("*.py")), ids=lambda p: p.name)
def test_core_imports_the_standard_library_and_attrs_only(path: Path) -> None:
    modules = top_level(imported_modules(path))
    third_party = modules - set(sys.stdlib_module_names) - {"wsserver", "attrs", "__future__"}
    assert not third_party, sorted(third_party)
    assert not modules & ({"socket", "ssl", "threading", "time"} | LOOP_MODULES)


@pytest.mark.parametrize(
    "path", sorted((PACKAGE / "_transport").glob("*.py")), ids=lambda p: p.name
)
def test_transport_floor_imports_nothing_above_it(path: Path) -> None:
    modules = imported_modules(path)
    above = {m for m in modules if m.startswith("wsserver.") and not (
        m.startswith("wsserver._transport") or m.startswith("wsserver.sansio")
    )}
    assert not above, sorted(above)
    if path.name == "_asyncio_stream.py":
        # It marks its callbacks' context as asyncio's (sniffio's context
        # variable for event loops); it never asks sniffio which loop runs.
        assert "current_async_library(" not in path.read_text()
    else:
        assert "sniffio" not in top_level(modules)


def test_importing_the_core_loads_no_io_library() -> None:
    # Any submodule import runs wsserver/__init__.py, which loads the I/O
    # layer; load the core under a bare package object instead.
    code = (
        "import sys, types\n"
        f"package = types.ModuleType('wsserver'); package.__path__ = [{str(PACKAGE)!r}]\n"
        "sys.modules['wsserver'] = package\n"
        "import wsserver.sansio\n"
        "assert wsserver.sansio.ServerConnection\n"
        "print(sorted({'anyio', 'trio', 'asyncio', 'sniffio'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout
