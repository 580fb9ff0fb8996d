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

from polku.adapters.postgres import schema as schema_runner
from polku.adapters.postgres.schema import DEFAULT_SCHEMA, Migration

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


async def migrate(url: str, *, schema: str = DEFAULT_SCHEMA, allow_destructive: bool = False) -> list[int]:
    """Apply the event log's pending migrations (the catalog's runner, on this
    module's track); the versions this call applied."""
    return await schema_runner.migrate(
        url, schema=schema, migrations=MIGRATIONS, allow_destructive=allow_destructive, table=TRACK_TABLE
    )
