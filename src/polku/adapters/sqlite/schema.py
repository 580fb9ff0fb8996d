"""Schema and connection settings of the embedded store.

The event table has no secondary index: nothing sits on the append path (DESIGN.md:
every extra index costs 4-14x there). Deduplication by (workspace, messageId) reads
``message_ids`` and appends to ``pending_ids`` instead of keeping a unique index on
``events`` (see ``dedupe.py``). Migrations are numbered steps keyed by ``user_version``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Final, Literal

Synchronous = Literal["FULL", "NORMAL"]

MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        workspace TEXT NOT NULL,
        message_id TEXT NOT NULL,
        type TEXT NOT NULL,
        name TEXT,
        user_id TEXT,
        anonymous_id TEXT,
        channel TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        received_ms INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    CREATE UNIQUE INDEX events_message_id ON events (workspace, message_id);
    CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY,
        workspace TEXT NOT NULL,
        source TEXT NOT NULL,
        received_ms INTEGER NOT NULL,
        code TEXT NOT NULL,
        reason TEXT NOT NULL,
        body BLOB NOT NULL,
        status TEXT NOT NULL DEFAULT 'open',
        resolved_ms INTEGER
    );
    CREATE TABLE workspaces (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at TEXT NOT NULL,
        config BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE sources (
        workspace TEXT NOT NULL,
        name TEXT NOT NULL,
        default_channel TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (workspace, name)
    ) WITHOUT ROWID;
    CREATE TABLE credentials (
        key_hash TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        workspace TEXT NOT NULL,
        source TEXT,
        label TEXT NOT NULL,
        created_at TEXT NOT NULL,
        revoked_at TEXT
    ) WITHOUT ROWID;
    """,
    # 2: deduplication in two levels (dedupe.py) instead of a unique index on
    # events, whose seq becomes AUTOINCREMENT (never reused, even after deletes).
    """
    CREATE TABLE events_v2 (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        workspace TEXT NOT NULL,
        message_id TEXT NOT NULL,
        type TEXT NOT NULL,
        name TEXT,
        user_id TEXT,
        anonymous_id TEXT,
        channel TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        received_ms INTEGER NOT NULL,
        body BLOB NOT NULL
    );
    INSERT INTO events_v2 (seq, workspace, message_id, type, name, user_id, anonymous_id, channel, ts_ms,
                           received_ms, body)
        SELECT seq, workspace, message_id, type, name, user_id, anonymous_id, channel, ts_ms, received_ms, body
        FROM events ORDER BY seq;
    DROP TABLE events;
    ALTER TABLE events_v2 RENAME TO events;
    CREATE TABLE message_ids (
        workspace TEXT NOT NULL,
        message_id TEXT NOT NULL,
        PRIMARY KEY (workspace, message_id)
    ) WITHOUT ROWID;
    INSERT INTO message_ids (workspace, message_id)
        SELECT workspace, message_id FROM events ORDER BY workspace, message_id;
    CREATE TABLE dedupe_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        merged_seq INTEGER NOT NULL
    );
    INSERT INTO dedupe_state (id, merged_seq) SELECT 1, coalesce(max(seq), 0) FROM events;
    """,
    # 3: journey definitions (docs/journeys.md): every deployed version as sent, and
    # per journey its current version and status. The rowid of `journeys` and the
    # heads' `revision` (one more on every change) make the processor's cheap
    # change token (two changes within one millisecond still differ).
    """
    CREATE TABLE journeys (
        workspace TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        body TEXT NOT NULL,
        deployed_at TEXT NOT NULL,
        PRIMARY KEY (workspace, id, version)
    );
    CREATE TABLE journey_heads (
        workspace TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('active', 'paused', 'archived')),
        updated_at TEXT NOT NULL,
        revision INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (workspace, id)
    ) WITHOUT ROWID;
    """,
    # 4: survey definitions (docs/surveys.md), stored as journeys are; and the answers
    # given on the hosted page or the answers API: one row per invitation, its
    # revision counting edits (the answer itself is an event in the log).
    """
    CREATE TABLE surveys (
        workspace TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        body TEXT NOT NULL,
        deployed_at TEXT NOT NULL,
        PRIMARY KEY (workspace, id, version)
    );
    CREATE TABLE survey_heads (
        workspace TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('active', 'paused', 'archived')),
        updated_at TEXT NOT NULL,
        revision INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (workspace, id)
    ) WITHOUT ROWID;
    CREATE TABLE survey_answers (
        workspace TEXT NOT NULL,
        invitation TEXT NOT NULL,
        revision INTEGER NOT NULL,
        first_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (workspace, invitation)
    ) WITHOUT ROWID;
    """,
    # 5: the action catalogue of next-best-action (docs/decisions.md): one document
    # per workspace (id `actions`), versioned as journeys are.
    """
    CREATE TABLE action_catalogues (
        workspace TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        body TEXT NOT NULL,
        deployed_at TEXT NOT NULL,
        PRIMARY KEY (workspace, id, version)
    );
    CREATE TABLE action_catalogue_heads (
        workspace TEXT NOT NULL,
        id TEXT NOT NULL,
        version INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('active', 'paused', 'archived')),
        updated_at TEXT NOT NULL,
        revision INTEGER NOT NULL DEFAULT 1,
        PRIMARY KEY (workspace, id)
    ) WITHOUT ROWID;
    """,
    # 6: the audit log of admin actions (docs/security.md).
    """
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        workspace TEXT NOT NULL,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        status INTEGER NOT NULL,
        address TEXT,
        user_agent TEXT
    );
    CREATE INDEX audit_log_workspace ON audit_log (workspace, id);
    """,
    # 7: the scopes of admin tokens (docs/security.md); existing tokens keep all.
    """
    ALTER TABLE credentials ADD COLUMN scopes TEXT NOT NULL DEFAULT 'manage privacy read';
    """,
    # 8: when each key was last used (docs/keys.md).
    """
    ALTER TABLE credentials ADD COLUMN last_used_at TEXT;
    """,
)

DATABASE_FILE: Final = "polku.db"


def connect(
    path: Path,
    *,
    synchronous: Synchronous = "FULL",
    readonly: bool = False,
    page_size: int = 16384,
    autocheckpoint_pages: int = 250,
    cache_kib: int = 65536,
) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit ``BEGIN``s). The
    defaults suit the event log's appends; the processor's state passes its own."""
    if readonly:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    else:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 10000")
    if not readonly:
        # Deleted and overwritten records are zeroed in the file, not left in free
        # space: an erased person must not be readable from the file's bytes.
        connection.execute("PRAGMA secure_delete = ON")
        # 16 KB pages (set before WAL mode, so only for a new file): an event row is
        # about 700 bytes, and the append path wrote ~25% less per event than with
        # 4 KB pages (benchmarks/RESULTS.md). The checkpoint stays at every 4 MB of
        # WAL, as with SQLite's default of 1,000 4 KB pages.
        connection.execute(f"PRAGMA page_size = {int(page_size)}")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute(f"PRAGMA wal_autocheckpoint = {int(autocheckpoint_pages)}")
    # FULL fsyncs the WAL on every commit: a 2xx then survives power loss, not just
    # kill -9. Group commit makes that one fsync per batch of requests.
    connection.execute(f"PRAGMA synchronous = {synchronous}")
    connection.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
    connection.execute("PRAGMA temp_store = MEMORY")
    return connection


def migrate(
    connection: sqlite3.Connection,
    migrations: tuple[str, ...] = MIGRATIONS,
    then: Callable[[sqlite3.Connection], None] = lambda connection: None,
) -> None:
    """Apply the numbered ``migrations`` not applied yet (``user_version``), then
    ``then``, in one transaction."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        (version,) = connection.execute("PRAGMA user_version").fetchone()
        for number, script in enumerate(migrations[version:], start=version + 1):
            for statement in script.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {number}")
        then(connection)
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def open_database(data_dir: Path, *, synchronous: Synchronous = "FULL") -> sqlite3.Connection:
    data_dir.mkdir(parents=True, exist_ok=True)
    connection = connect(data_dir / DATABASE_FILE, synchronous=synchronous)
    migrate(connection)
    return connection
