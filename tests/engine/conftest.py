"""Every engine test runs on each state store: the in-memory reference and SQLite
(the contract the PostgreSQL store will have to pass too)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.engine import helpers


@pytest.fixture(autouse=True, params=["sqlite", "memory"])
def state_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    previous = helpers.BACKEND
    helpers.BACKEND = request.param
    yield request.param
    helpers.BACKEND = previous
