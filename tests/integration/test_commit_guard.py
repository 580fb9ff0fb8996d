"""The worker's commit guard and the commit log against a real PostgreSQL: a batch
that only fired timers is fenced like one that applied messages — it commits only
while its worker still holds the timers' partitions at the epoch it read them under;
the commit log is kept while a live worker's caches reflect less of it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from tests.contract.conftest import fresh_database

from polku.adapters.postgres import tracks
from polku.adapters.postgres.commit_guard import CommitGuard
from polku.adapters.postgres.leases import PartitionLeases
from polku.engine.shared_state import LeaseLost
from polku.state import StateChanges

STREAM = "S"


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
def schema(database: str) -> str:
    name = f"guard_{uuid.uuid4().hex[:10]}"
    asyncio.run(tracks.migrate_all(database, schema=name))
    return name


@pytest.fixture
def connection(database: str, schema: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(database, autocommit=True, options=f"-c search_path={schema}") as found:
        found.execute(
            "INSERT INTO partition_leases (stream, partition, owner, epoch, expires_at) "
            "VALUES (%s, 3, 'me', 2, now() + interval '1 minute'), (%s, 4, 'other', 7, now() + interval '1 minute')",
            (STREAM, STREAM),
        )
        yield found


def guard(epochs: dict[int, int]) -> CommitGuard:
    """A guard for a batch that applied no message (timers only)."""
    return CommitGuard(
        owner="me",
        stream=STREAM,
        schema="unused",
        positions=lambda checkpoint: {},
        applied=lambda checkpoint: [],
        reads=set(),
        epochs=lambda: epochs,
    )


def commit_timers(connection: psycopg.Connection[tuple[object, ...]], found: CommitGuard, parts: set[int]) -> None:
    found.timers_fired(parts)
    with connection.transaction():
        found.hook(connection, StateChanges(checkpoint=0))


def test_timers_of_a_partition_still_held_commit(connection: psycopg.Connection[tuple[object, ...]]) -> None:
    commit_timers(connection, guard({3: 2}), {3})


def test_timers_of_a_partition_taken_over_meanwhile_do_not_commit(
    connection: psycopg.Connection[tuple[object, ...]],
) -> None:
    stalled = guard({3: 2})
    stalled.timers_fired({3})
    # While this worker stalled, another took the partition (a new epoch).
    connection.execute("UPDATE partition_leases SET owner = 'other', epoch = 3 WHERE partition = 3")
    with pytest.raises(LeaseLost), connection.transaction():
        stalled.hook(connection, StateChanges(checkpoint=0))


def test_timers_of_a_partition_given_up_before_the_commit_do_not_commit(
    connection: psycopg.Connection[tuple[object, ...]],
) -> None:
    with pytest.raises(LeaseLost):
        commit_timers(connection, guard({3: 2}), {3, 4})  # 4 is not (or no longer) this worker's


def test_the_commit_log_is_kept_from_the_lowest_live_workers_position(
    database: str, schema: str, connection: psycopg.Connection[tuple[object, ...]]
) -> None:
    """Old commits are collected only up to what every live worker has seen: one
    whose step outlasted the age still validates against the commits since."""
    connection.execute(
        "INSERT INTO state_commits (id, owner, committed_at, keys) "
        "SELECT n, 'other', now() - interval '1 hour', ARRAY['c|x'] FROM generate_series(1, 9) AS n"
    )

    async def collect(seen: int) -> list[int]:
        leases = PartitionLeases(database, schema=schema, owner="slow", stream=STREAM, partitions=8)
        leases.commits_seen = lambda: seen
        await leases.connect()
        try:
            await leases.register()  # publishes the position with the heartbeat
            await leases.collect_garbage()
        finally:
            await leases.close()
        return [int(n) for (n,) in connection.execute("SELECT id FROM state_commits ORDER BY id").fetchall()]

    assert asyncio.run(collect(5)) == [6, 7, 8, 9]
    assert asyncio.run(collect(8)) == [9]
