"""Journey definitions in every ``Catalog`` adapter, and what the processor's
``LogReader`` sees of them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from polku.adapters.memory import MemoryCatalog, MemoryLogReader
from polku.adapters.sqlite import SqliteCatalog
from polku.adapters.sqlite.log_reader import SqliteLogReader
from polku.core.errors import NotFound
from polku.ports import Catalog

pytestmark = pytest.mark.anyio
ADAPTERS: dict[str, Callable[[Path], Catalog]] = {
    "memory": lambda path: MemoryCatalog(),
    "sqlite": lambda path: SqliteCatalog(path),
}
T0, T1, T2 = "2024-01-01T00:00:00.000Z", "2024-01-02T00:00:00.000Z", "2024-01-03T00:00:00.000Z"


@pytest.fixture(params=sorted(ADAPTERS))
async def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Catalog]:
    adapter = ADAPTERS[request.param](tmp_path)
    await adapter.start()
    yield adapter
    await adapter.close()


async def test_versions_status_and_listing(catalog: Catalog) -> None:
    assert await catalog.deploy_journey("w", "welcome", "id: welcome # 1", T0) == (1, True)
    assert await catalog.deploy_journey("w", "welcome", "id: welcome # 1", T1) == (1, False)
    assert await catalog.deploy_journey("w", "welcome", "id: welcome # 2", T1) == (2, True)
    assert await catalog.deploy_journey("other", "welcome", "id: welcome # 1", T1) == (1, True)

    current = await catalog.journey("w", "welcome")
    assert (current.version, current.current, current.status, current.versions) == (2, 2, "active", (1, 2))
    assert current.body == "id: welcome # 2"
    first = await catalog.journey("w", "welcome", 1)
    assert (first.version, first.current, first.body, first.deployed_at) == (1, 2, "id: welcome # 1", T0)

    archived = await catalog.set_journey_status("w", "welcome", "archived", T2)
    assert (archived.status, archived.updated_at) == ("archived", T2)
    # Deploying keeps the status: an archived journey stays archived until resumed.
    assert await catalog.deploy_journey("w", "welcome", "id: welcome # 3", T2) == (3, True)
    assert (await catalog.journey("w", "welcome")).status == "archived"
    # The body of an older version is a new version, not a rollback in place.
    assert await catalog.deploy_journey("w", "welcome", "id: welcome # 1", T2) == (4, True)

    assert [j.id for j in await catalog.journeys("w")] == ["welcome"]
    assert await catalog.journeys("nobody") == []


async def test_missing_journeys_are_not_found(catalog: Catalog) -> None:
    with pytest.raises(NotFound):
        await catalog.journey("w", "nope")
    await catalog.deploy_journey("w", "welcome", "id: welcome", T0)
    with pytest.raises(NotFound):
        await catalog.journey("w", "welcome", 2)
    with pytest.raises(NotFound):
        await catalog.set_journey_status("w", "nope", "paused", T0)


async def test_the_log_reader_sees_every_version_and_every_change(tmp_path: Path) -> None:
    catalog = SqliteCatalog(tmp_path)
    await catalog.start()
    reader = SqliteLogReader(tmp_path)
    try:
        assert reader.journeys() == []
        tokens = [reader.journeys_token()]
        await catalog.deploy_journey("w", "welcome", "one", T0)
        tokens.append(reader.journeys_token())
        await catalog.deploy_journey("w", "welcome", "two", T0)
        tokens.append(reader.journeys_token())
        await catalog.set_journey_status("w", "welcome", "paused", T0)
        tokens.append(reader.journeys_token())
        await catalog.set_journey_status("w", "welcome", "active", T0)  # the same millisecond
        tokens.append(reader.journeys_token())
        await catalog.deploy_journey("w", "welcome", "two", T1)  # unchanged: no new version
        tokens.append(reader.journeys_token())
        assert len(set(tokens[:-1])) == len(tokens) - 1
        assert tokens[-1] == tokens[-2]
        assert reader.journeys() == [("w", "welcome", 1, "active", "one"), ("w", "welcome", 2, "active", "two")]
    finally:
        reader.close()
        await catalog.close()


def test_the_memory_log_reader_holds_journeys() -> None:
    reader = MemoryLogReader()
    token = reader.journeys_token()
    reader.put_journey("default", "welcome", 1, "active", "id: welcome")
    assert reader.journeys_token() != token
    token = reader.journeys_token()
    reader.set_journey_status("default", "welcome", "paused")
    assert reader.journeys_token() != token
    assert reader.journeys() == [("default", "welcome", 1, "paused", "id: welcome")]
