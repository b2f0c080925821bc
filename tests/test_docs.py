"""The documentation cannot drift silently from the code.

- Every ```python block in ``docs/*.md`` and ``README.md`` compiles.
- Every dotted name ``wsserver.X`` / ``wsserver.sub.X`` written in backticks in
  the docs exists: the longest importable module prefix is imported and the
  rest looked up with ``getattr`` (or, for instance attributes, found assigned
  as ``self.X`` in an ``__init__`` of the class).
- Reference blocks in ``docs/api.md`` (a Python block whose first line is a
  comment naming a module, ``# wsserver.server``) are checked against that
  module: each ``def`` has the real parameters (names, kinds, defaults) and
  is ``async`` exactly when the real one is; each ``class`` has the listed
  bases, methods, properties, attributes and constant values.
- Every name in the ``__all__`` of a public module is mentioned in api.md.

- The Sphinx documentation builds with ``-W`` (every warning an error), which
  also checks every link between pages and every cross-reference.

Nothing here runs an event loop or opens a socket (tests/test_examples.py runs
the examples).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
import subprocess
import sys
import typing
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _page_is_built(path: Path) -> bool:
    """Tell whether Sphinx builds ``path`` (docs/conf.py leaves out pages of
    features not landed yet: a reference page whose module does not exist)."""
    if "_build" in path.relative_to(ROOT).parts:
        return False
    if path.parent.name == "reference" and path.stem != "index":
        module = "wsserver" if path.stem == "wsserver" else f"wsserver.{path.stem}"
        return importlib.util.find_spec(module) is not None
    return True


DOCS = sorted(path for path in (ROOT / "docs").rglob("*.md") if _page_is_built(path))
API = ROOT / "docs" / "api.md"

PUBLIC_MODULES = [
    "wsserver",
    "wsserver.server",
    "wsserver.connection",
    "wsserver.options",
    "wsserver.broadcast",
    "wsserver.auth",
    "wsserver.trio_io",
    "wsserver.asyncio_io",
    "wsserver.sansio",
    "wsserver.sansio.extensions",
]

_BLOCK_RE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
_NAME_RE = re.compile(r"`[^`\n]*?\b(wsserver(?:\.[A-Za-z_]\w*)+)")
_REFERENCE_RE = re.compile(r"# (wsserver(?:\.\w+)*)\n")


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """Return ``(line number, code)`` for each ```python block of ``path``."""
    text = path.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, match.start()) + 2, match.group(1))
        for match in _BLOCK_RE.finditer(text)
    ]


ALL_BLOCKS = [
    pytest.param(code, id=f"{path.name}:{line}")
    for path in [*DOCS, ROOT / "README.md"]
    for line, code in python_blocks(path)
]


def test_docs_exist() -> None:
    names = {path.name for path in DOCS}
    expected = {"index.md", "quickstart.md", "api.md", "design.md", "bad-input.md"}
    assert expected | {"cli.md", "deployment.md"} <= names


def test_sphinx_build_has_no_warning(tmp_path: Path) -> None:
    """``python -m sphinx -W -b html docs <tmp>`` succeeds: no warning at all.

    ``-t offline`` leaves out the intersphinx inventories, which only the
    network has (see docs/conf.py); ``-E`` reads every page afresh.
    """
    result = subprocess.run(
        [
            *(sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html"),
            *("-t", "offline", "-d", str(tmp_path / "doctrees")),
            *(str(ROOT / "docs"), str(tmp_path / "html")),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    # -W makes any Sphinx warning fail the build (stderr may still hold a
    # Python warning from importing the code, which is not the docs' concern).
    assert result.returncode == 0, result.stderr[-5000:]
    for page in ["index", "quickstart", "api", "reference/server", "reference/sansio"]:
        assert (tmp_path / "html" / f"{page}.html").is_file(), page
    # autodoc really documented the code: a signature from a docstring's module.
    server = (tmp_path / "html" / "reference" / "server.html").read_text(encoding="utf-8")
    assert 'id="wsserver.server.serve"' in server


@pytest.mark.parametrize("code", ALL_BLOCKS)
def test_python_block_compiles(code: str) -> None:
    compile(code, "<docs>", "exec")


# Names -------------------------------------------------------------------------------


def _init_assigns(cls: type, name: str) -> bool:
    """Tell whether some ``__init__`` in ``cls``'s MRO assigns ``self.<name>``."""
    pattern = re.compile(rf"\bself\.{re.escape(name)}\s*(?::[^=\n]+)?=")
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            source = inspect.getsource(init)
        except (OSError, TypeError):
            continue
        if pattern.search(source):
            return True
    return False


def resolve(dotted: str) -> Any:
    """Import the longest module prefix of ``dotted`` and look the rest up.

    :raises LookupError: if some part does not exist.
    """
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for index, part in enumerate(parts[split:], start=split):
            if hasattr(obj, part):
                obj = getattr(obj, part)
            elif isinstance(obj, type) and _init_assigns(obj, part) and index == len(parts) - 1:
                return None  # an instance attribute
            else:
                raise LookupError(f"{dotted}: {'.'.join(parts[:index])} has no {part!r}")
        return obj
    raise LookupError(f"{dotted}: cannot import {parts[0]}")


def documented_names() -> list[Any]:
    names = set()
    for path in [*DOCS, ROOT / "README.md"]:
        for match in _NAME_RE.finditer(path.read_text(encoding="utf-8")):
            names.add((path.name, match.group(1)))
    return [pytest.param(name, id=f"{file}:{name}") for file, name in sorted(names)]


@pytest.mark.parametrize("dotted", documented_names())
def test_documented_name_exists(dotted: str) -> None:
    resolve(dotted)


def test_api_mentions_every_public_name() -> None:
    text = API.read_text(encoding="utf-8")
    mentioned = set(re.findall(r"[A-Za-z_]\w*", " ".join(re.findall(r"`[^`]+`", text))))
    mentioned |= set(re.findall(r"^\s*(?:async def|def|class) (\w+)", text, re.MULTILINE))
    mentioned |= set(re.findall(r"^(\w+)(?:: | = )", text, re.MULTILINE))
    missing = {
        f"{module}.{name}"
        for module in PUBLIC_MODULES
        for name in importlib.import_module(module).__all__
        if name not in mentioned
    }
    assert not missing, sorted(missing)


# Reference blocks ----------------------------------------------------------------------


def reference_blocks() -> list[Any]:
    return [
        pytest.param(code, id=f"api.md:{line}")
        for line, code in python_blocks(API)
        if _REFERENCE_RE.match(code)
    ]


def _namespace(obj: Any, fallback: ModuleType) -> dict[str, Any]:
    obj = getattr(obj, "__objclass__", obj)  # a compiled slot: its class's module
    module = sys.modules.get(getattr(obj, "__module__", "") or "", fallback)
    return vars(module)


def _evaluate(node: ast.expr, namespace: dict[str, Any]) -> Any:
    return eval(compile(ast.Expression(node), "<docs>", "eval"), dict(namespace))


def _documented_parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[Any]:
    """``(name, kind, default node or None)`` for each parameter, in order."""
    args = node.args
    params: list[Any] = []
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    defaults += args.defaults
    for index, (arg, default) in enumerate(zip(positional, defaults, strict=True)):
        kind = (
            inspect.Parameter.POSITIONAL_ONLY
            if index < len(args.posonlyargs)
            else inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        params.append((arg.arg, kind, default))
    if args.vararg:
        params.append((args.vararg.arg, inspect.Parameter.VAR_POSITIONAL, None))
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        params.append((arg.arg, inspect.Parameter.KEYWORD_ONLY, default))
    if args.kwarg:
        params.append((args.kwarg.arg, inspect.Parameter.VAR_KEYWORD, None))
    return params


_OPAQUE = ["self", "args", "kwargs"]  # the signature mypyc gives a compiled __init__


def _real_parameters(real: Any, module: ModuleType) -> list[inspect.Parameter]:
    """The parameters of ``real``, read from its source when it is compiled.

    A method of a class compiled by mypyc (the optional speed-up) shows
    ``(self, /, *args, **kwargs)`` or a positional-only ``self``; the
    checkout's ``.py`` file still holds the definition, which is what gets
    checked then.
    """
    parameters = list(inspect.signature(real).parameters.values())
    if inspect.isfunction(real) or isinstance(real, (classmethod, staticmethod)):
        return parameters
    holder = getattr(real, "__objclass__", real)
    compiled = not str(getattr(sys.modules.get(holder.__module__), "__file__", "")).endswith(".py")
    if not compiled and [p.name for p in parameters] != _OPAQUE:
        return parameters
    # A slot such as __init__ is a wrapper descriptor, named by its class.
    cls = getattr(real, "__objclass__", None)
    qualname = f"{cls.__qualname__}.{real.__name__}" if cls else real.__qualname__
    owner = sys.modules[(cls or real).__module__]
    source = ROOT.joinpath(*owner.__name__.split(".")).with_suffix(".py")
    scope: list[ast.stmt] = ast.parse(source.read_text(encoding="utf-8")).body
    node: ast.AST | None = None
    for part in qualname.split("."):
        node = next(n for n in scope if getattr(n, "name", None) == part)
        scope = getattr(node, "body", [])
    assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)), real.__qualname__
    # mypyc keeps Final constants out of the compiled module's namespace;
    # the documented module re-exports them.
    namespace = {**vars(module), **vars(owner)}
    return [
        inspect.Parameter(
            name,
            kind,
            default=inspect.Parameter.empty if default is None else _evaluate(default, namespace),
        )
        for name, kind, default in _documented_parameters(node)
    ]


def check_function(
    where: str, real: Any, node: ast.FunctionDef | ast.AsyncFunctionDef, module: ModuleType
) -> None:
    assert callable(real), f"{where} is not callable"
    is_async = isinstance(node, ast.AsyncFunctionDef)
    assert inspect.iscoroutinefunction(real) == is_async, (
        f"{where}: documented as {'async ' if is_async else ''}def"
    )
    actual = _real_parameters(real, module)
    documented = _documented_parameters(node)
    assert [(p.name, p.kind) for p in actual] == [(n, k) for n, k, _ in documented], where
    namespace = _namespace(real, module)
    for param, (name, _, default) in zip(actual, documented, strict=True):
        if default is None:
            assert param.default is inspect.Parameter.empty, f"{where}: {name} has a default"
        else:
            assert param.default is not inspect.Parameter.empty, f"{where}: {name} has none"
            expected = _evaluate(default, namespace)
            assert param.default == expected, f"{where}: {name}={param.default!r}"


def _has_attribute(cls: type, name: str) -> bool:
    return any(name in vars(klass) for klass in cls.__mro__) or _init_assigns(cls, name)


def check_class(where: str, cls: Any, node: ast.ClassDef, module: ModuleType) -> None:
    assert isinstance(cls, type), f"{where} is not a class"
    namespace = _namespace(cls, module)
    for base_node in node.bases:
        base = _evaluate(base_node, namespace)
        base = typing.get_origin(base) or base
        assert base in cls.__mro__, f"{where} does not derive from {ast.unparse(base_node)}"
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            member = f"{where}.{item.name}"
            assert hasattr(cls, item.name), f"{where} has no {item.name}"
            static = inspect.getattr_static(cls, item.name)
            if any(ast.unparse(d) == "property" for d in item.decorator_list):
                # mypyc compiles a property into a getset descriptor.
                is_property = isinstance(static, property) or inspect.isgetsetdescriptor(static)
                assert is_property, f"{member} is not a property"
            else:
                check_function(member, getattr(cls, item.name), item, module)
        elif isinstance(item, ast.AnnAssign):
            assert isinstance(item.target, ast.Name)
            assert _has_attribute(cls, item.target.id), f"{where} has no {item.target.id}"
        elif isinstance(item, ast.Assign):
            for target in item.targets:
                assert isinstance(target, ast.Name)
                expected = _evaluate(item.value, _namespace(cls, module))
                assert getattr(cls, target.id) == expected, f"{where}.{target.id}"


@pytest.mark.parametrize("code", reference_blocks())
def test_reference_block_matches_the_code(code: str) -> None:
    match = _REFERENCE_RE.match(code)
    assert match is not None
    module = importlib.import_module(match.group(1))
    for node in ast.parse(code).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            where = f"{module.__name__}.{node.name}"
            check_function(where, getattr(module, node.name), node, module)
        elif isinstance(node, ast.ClassDef):
            where = f"{module.__name__}.{node.name}"
            check_class(where, getattr(module, node.name), node, module)
        elif isinstance(node, ast.AnnAssign):
            assert isinstance(node.target, ast.Name)
            assert hasattr(module, node.target.id), f"{module.__name__}.{node.target.id}"
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                assert isinstance(target, ast.Name)
                expected = _evaluate(node.value, vars(module))
                assert getattr(module, target.id) == expected, target.id
        else:
            pytest.fail(f"unexpected statement in a reference block: {ast.unparse(node)}")
