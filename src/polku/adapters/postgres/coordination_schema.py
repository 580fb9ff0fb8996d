"""The tables the workers coordinate through, and their migrations (docs/scale-out.md).

A track of their own (``coordination_migrations``), run by the catalog's runner in
the same schema under the same advisory lock:

- ``workers``: every live process of a role, with the moment it was last seen; the
  partition share of a worker is the partition count over the live workers.
- ``partition_leases``: who holds each partition of the stream, until when, and the
  lease's ``epoch`` — a fencing token that moves whenever the lease changes hands, so
  a worker that stalled past its lease cannot commit.
- ``partition_checkpoints``: per stream and partition, the last stream sequence whose
  effects are committed; a worker taking a partition reads from the next one.
- ``state_commits``: the keys each commit of the processors wrote, in commit order
  (``polku.engine.shared_state``); kept a few minutes, and always while a live
  worker's caches reflect less (``workers.commits_seen``, step 2).
"""

from __future__ import annotations

from typing import Final

from polku.adapters.postgres import schema as schema_runner
from polku.adapters.postgres.schema import DEFAULT_SCHEMA, Migration

TRACK_TABLE: Final = "coordination_migrations"

MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        "coordination: workers, partition leases and checkpoints, the commit log",
        """
        CREATE TABLE workers (
            id TEXT COLLATE "C" PRIMARY KEY,
            role TEXT NOT NULL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            seen_at TIMESTAMPTZ NOT NULL DEFAULT now()
        );
        CREATE TABLE partition_leases (
            stream TEXT COLLATE "C" NOT NULL,
            partition INTEGER NOT NULL,
            owner TEXT COLLATE "C",
            epoch BIGINT NOT NULL DEFAULT 0,
            expires_at TIMESTAMPTZ NOT NULL DEFAULT '-infinity',
            PRIMARY KEY (stream, partition)
        );
        CREATE TABLE partition_checkpoints (
            stream TEXT COLLATE "C" NOT NULL,
            partition INTEGER NOT NULL,
            seq BIGINT NOT NULL,
            PRIMARY KEY (stream, partition)
        );
        CREATE SEQUENCE state_commit_ids;
        CREATE TABLE state_commits (
            id BIGINT PRIMARY KEY,
            owner TEXT COLLATE "C" NOT NULL,
            committed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            keys TEXT[] NOT NULL
        );
        CREATE INDEX state_commits_time ON state_commits (committed_at);
        """,
    ),
    Migration(
        "coordination: the commit-log position each worker's caches reflect",
        """
        ALTER TABLE workers ADD COLUMN commits_seen BIGINT;
        """,
    ),
)


async def migrate(url: str, *, schema: str = DEFAULT_SCHEMA, allow_destructive: bool = False) -> list[int]:
    """Apply the coordination track's pending migrations; the versions applied."""
    return await schema_runner.migrate(
        url, schema=schema, migrations=MIGRATIONS, allow_destructive=allow_destructive, table=TRACK_TABLE
    )
