"""mypyc's class options, for the compiled modules, without mypy_extensions at run time.

For mypy and mypyc, ``_mypyc.pyi`` makes :func:`mypyc_attr` the real
``mypy_extensions.mypyc_attr``, whose options mypyc reads while compiling;
mypy_extensions comes with mypy, which the build requires. At run time this
module stands in for it: a compiled module calls it only for a class it left
to the interpreter, and the pure-Python build for every class it decorates;
either way it changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["mypyc_attr"]

_T = TypeVar("_T")


def mypyc_attr(*attrs: str, **options: object) -> Callable[[_T], _T]:
    """Return a class decorator that leaves the class as it is."""
    return lambda cls: cls
