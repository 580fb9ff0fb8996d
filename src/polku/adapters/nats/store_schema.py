"""The event log's tables in PostgreSQL, and their migrations (docs/nats.md).

They live in the same schema as the catalog (``polku`` by default) but are numbered
on a track of their own, recorded in ``event_log_migrations``: the catalog's
``polku_migrations`` counts the catalog's steps, and a second list numbered in the
same table would read the catalog's versions as its own. Each step runs as the
catalog's do (``polku.adapters.postgres.schema``): in its own transaction, under the
same advisory lock (so the two tracks never change one schema at once), reading the
version again under the lock, refusing a database newer than the code and a
destructive step unless allowed.

- ``events``: the queryable index of the stream. ``seq`` is the stream sequence;
  ``UNIQUE (workspace, message_id)`` is the permanent deduplication — a resend older
  than the stream's duplicate window is stored in the stream again and dropped here.
  Free-text identifiers (``message_id``, ``user_id``, ``anonymous_id``, ``name``) are
  UTF-8 ``bytea``: PostgreSQL's ``text`` refuses U+0000, which an SDK may send.
- ``index_checkpoint``: per stream, the highest sequence the indexer committed.
- ``quarantine``: refused messages, with the fields of the embedded store's.
"""

from __future__ import annotations

from typing import Final

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from polku.adapters.postgres.schema import DEFAULT_SCHEMA, Migration, check_schema, connect, lock_key
from polku.core.errors import ConfigError, PolkuError

TRACK_TABLE: Final = "event_log_migrations"

MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        "event log: events index, index checkpoint, quarantine",
        """
        CREATE TABLE events (
            seq BIGINT PRIMARY KEY,
            workspace TEXT COLLATE "C" NOT NULL,
            message_id BYTEA NOT NULL,
            type TEXT NOT NULL,
            name BYTEA,
            user_id BYTEA,
            anonymous_id BYTEA,
            channel TEXT NOT NULL,
            ts_ms BIGINT NOT NULL,
            received_ms BIGINT NOT NULL,
            body BYTEA NOT NULL,
            UNIQUE (workspace, message_id)
        );
        -- Off the append path (the indexer writes behind the stream), so the reads
        -- get their indexes: a workspace's log in order, and a person's timeline.
        CREATE INDEX events_workspace ON events (workspace, seq);
        CREATE INDEX events_user ON events (workspace, user_id, seq) WHERE user_id IS NOT NULL;
        CREATE INDEX events_anonymous ON events (workspace, anonymous_id, seq) WHERE anonymous_id IS NOT NULL;
        CREATE TABLE index_checkpoint (
            stream TEXT COLLATE "C" PRIMARY KEY,
            seq BIGINT NOT NULL
        );
        CREATE TABLE quarantine (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            workspace TEXT COLLATE "C" NOT NULL,
            source TEXT NOT NULL,
            received_ms BIGINT NOT NULL,
            code TEXT NOT NULL,
            reason TEXT NOT NULL,
            body BYTEA NOT NULL,
            status TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resubmitted', 'discarded')),
            resolved_ms BIGINT
        );
        CREATE INDEX quarantine_workspace ON quarantine (workspace, id);
        """,
    ),
)


async def migrate(
    url: str,
    *,
    schema: str = DEFAULT_SCHEMA,
    migrations: tuple[Migration, ...] = MIGRATIONS,
    allow_destructive: bool = False,
) -> list[int]:
    """Apply the event log's pending migrations, each in its own transaction; the
    versions this call applied."""
    check_schema(schema)
    applied: list[int] = []
    table = sql.Identifier(schema, TRACK_TABLE)
    async with await connect(url) as connection:
        while True:
            async with connection.transaction():
                await connection.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(schema),))
                await _create_track(connection, schema)
                cursor = await connection.execute(sql.SQL("SELECT coalesce(max(version), 0) FROM {}").format(table))
                row = await cursor.fetchone()
                version = int(row[0]) if row is not None else 0
                if version > len(migrations):
                    raise ConfigError(
                        f"the event log's tables in schema {schema!r} are at version {version}, newer than this "
                        f"polku knows ({len(migrations)}): upgrade polku before using this database",
                        field="store",
                    )
                if version == len(migrations):
                    return applied
                migration = migrations[version]
                if migration.destructive and not allow_destructive:
                    raise ConfigError(
                        f"event log migration {version + 1} ({migration.name}) is destructive and was not applied: "
                        "back up the database, then migrate with allow_destructive=True",
                        field="store",
                    )
                await connection.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
                try:
                    await connection.execute(migration.sql)
                except psycopg.DatabaseError as error:
                    raise PolkuError(
                        f"event log migration {version + 1} ({migration.name}) failed and was rolled back: {error}"
                    ) from error
                await connection.execute(
                    sql.SQL("INSERT INTO {} (version, name) VALUES (%s, %s)").format(table),
                    (version + 1, migration.name),
                )
            applied.append(version + 1)


async def _create_track(connection: psycopg.AsyncConnection[TupleRow], schema: str) -> None:
    # Checked before created, as the catalog's bookkeeping is: CREATE … IF NOT EXISTS
    # needs the CREATE privilege even when the object exists.
    cursor = await connection.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
    if await cursor.fetchone() is None:
        await connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    cursor = await connection.execute("SELECT to_regclass(%s)", (f'"{schema}".{TRACK_TABLE}',))
    row = await cursor.fetchone()
    if row is None or row[0] is None:
        await connection.execute(
            sql.SQL(
                "CREATE TABLE {} (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), "
                "name TEXT NOT NULL)"
            ).format(sql.Identifier(schema, TRACK_TABLE))
        )
