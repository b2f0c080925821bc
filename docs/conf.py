"""Sphinx configuration for wsserver's documentation.

Build with ``python -m sphinx -W -b html docs docs/_build/html``. The test suite
builds it offline with ``-t offline``, which drops the intersphinx inventories
(fetching them needs the network); everything else is the same build.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # document the checkout, not some installed copy

import wsserver  # noqa: E402

project = "wsserver"
author = "wsserver developers"
copyright = "wsserver developers"
release = wsserver.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


# Pages of features that land separately: each is listed in its toctree and
# built when its feature exists, and left out (page and toctree line) before.
OPTIONAL_PAGES = {
    "workers": (ROOT / "docs" / "workers.md").exists(),
    "reference/routing": _importable("wsserver.routing"),
    "reference/workers": _importable("wsserver.workers"),
    "reference/pubsub": _importable("wsserver.pubsub"),
}
MISSING_PAGES = sorted(name for name, present in OPTIONAL_PAGES.items() if not present)
exclude_patterns += [f"{name}.md" for name in MISSING_PAGES]


def _drop_missing_pages(app: object, docname: str, source: list[str]) -> None:
    """Remove toctree lines naming a page whose feature has not landed."""
    folder, _, _ = docname.rpartition("/")
    for name in MISSING_PAGES:
        page_folder, _, local = name.rpartition("/")
        if page_folder == folder:  # toctree entries are relative to their document
            source[0] = re.sub(rf"(?m)^{re.escape(local)}\n", "", source[0])


def setup(app: Any) -> None:
    app.connect("source-read", _drop_missing_pages)


# MyST: the pages stay plain markdown that reads well on a forge too.
myst_enable_extensions = ["colon_fence", "deflist"]
# GitHub-style anchors, so "page.md#a-heading" links work in Sphinx and on a forge.
myst_heading_anchors = 4

# autodoc + napoleon: the reference is made from the Google-style docstrings.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
# Types of parameters and of documented returns only: no "Return type: None" lines.
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# Cross-references to the standard library, Trio and anyio. The inventories
# come from the network: online builds fetch them (within a short timeout);
# the test suite runs with "-t offline", where none is fetched and names of
# those projects are printed as plain literals. Vendoring them was rejected:
# no registry ships Trio's or anyio's objects.inv, and a stale copy would
# link to pages that moved.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "trio": ("https://trio.readthedocs.io/en/stable", None),
    "anyio": ("https://anyio.readthedocs.io/en/stable", None),
}
intersphinx_timeout = 10
if tags.has("offline"):  # type: ignore[name-defined]  # noqa: F821 - Sphinx injects tags
    intersphinx_mapping = {}

html_theme = "furo"
html_title = f"wsserver {release}"
html_static_path = ["_static"]
html_show_sourcelink = False
