"""Every track of migrations in polku's PostgreSQL schema, in the order they are
applied: the catalog, the event log's tables, the processors' state, the workers'
coordination and the dispatchers' delivery ledger. Each is numbered on its own (its own bookkeeping table) and applied by
the one runner (``schema.migrate``) under the schema's advisory lock; ``polku db``
migrates and reports them all."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from polku.adapters.nats import store_schema
from polku.adapters.postgres import coordination_schema, deliveries, state_schema
from polku.adapters.postgres import schema as runner
from polku.adapters.postgres.schema import DEFAULT_SCHEMA, Migration, SchemaStatus


@dataclass(frozen=True)
class Track:
    name: str
    migrations: tuple[Migration, ...]
    table: str


TRACKS: Final[tuple[Track, ...]] = (
    Track("catalog", runner.MIGRATIONS, runner.BOOKKEEPING_TABLE),
    Track("event log", store_schema.MIGRATIONS, store_schema.TRACK_TABLE),
    Track("state", state_schema.MIGRATIONS, state_schema.TRACK_TABLE),
    Track("coordination", coordination_schema.MIGRATIONS, coordination_schema.TRACK_TABLE),
    Track("deliveries", deliveries.MIGRATIONS, deliveries.TRACK_TABLE),
)


async def migrate_all(
    url: str, *, schema: str = DEFAULT_SCHEMA, allow_destructive: bool = False
) -> list[tuple[Track, list[int]]]:
    """Apply every track's pending migrations; per track, the versions applied."""
    applied = []
    for track in TRACKS:
        versions = await runner.migrate(
            url, schema=schema, migrations=track.migrations, allow_destructive=allow_destructive, table=track.table
        )
        applied.append((track, versions))
    return applied


async def status_all(url: str, *, schema: str = DEFAULT_SCHEMA) -> list[tuple[Track, SchemaStatus]]:
    return [
        (track, await runner.status(url, schema=schema, migrations=track.migrations, table=track.table))
        for track in TRACKS
    ]
