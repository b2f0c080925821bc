"""Fixtures shared by every test directory."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every I/O test runs on both backends."""
    return str(request.param)
