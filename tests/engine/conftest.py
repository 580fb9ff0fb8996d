"""Every engine test runs on each state store: the in-memory reference, SQLite and
PostgreSQL (in a database made for the test session, schemas of each test's own,
dropped when it ends)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.contract.conftest import fresh_database
from tests.engine import helpers


@pytest.fixture(scope="session")
def engine_database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture(autouse=True, params=["sqlite", "memory", "postgresql"])
def state_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    previous = helpers.BACKEND, helpers.SCHEMAS
    schemas = None
    if request.param == "postgresql":
        schemas = helpers.PostgresSchemas(request.getfixturevalue("engine_database"))
    helpers.BACKEND, helpers.SCHEMAS = request.param, schemas
    try:
        yield request.param
    finally:
        if schemas is not None:
            schemas.drop()
        helpers.BACKEND, helpers.SCHEMAS = previous
