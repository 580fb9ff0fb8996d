"""The file of the processor's state: its tables (numbered migrations), its record
format, and the thread that checkpoints its WAL. ``state_store`` reads and writes it."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Final

from polku.adapters import state_erasure
from polku.adapters.sqlite.schema import migrate

log = logging.getLogger("polku.processor")
STATE_FILE: Final = "state.db"
STATE_FORMAT: Final = b"1"
"""The shape of the stored records (profiles, accounts, links). State is derived from
the log, so a store written in another shape is not migrated: it is emptied and
rebuilt by replaying the log (``SqliteStateStore`` does it on open, and says so).

The journey tables (migration 2) are the exception: an instance's progress depends
on when it was processed, not only on the log, so it cannot be replayed. A change
of format must migrate them (``journey_states``, ``journey_stats``,
``journey_transitions``, ``messages``) rather than discard them — and ``erasures``
and ``erased`` (migration 5) too: the receipts, and the hashes that keep erased and
suppressed people out, are no more in the log than the people are."""

MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
    CREATE TABLE checkpoint (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL);
    INSERT INTO checkpoint (id, seq) VALUES (1, 0);
    CREATE TABLE identifiers (
        workspace TEXT NOT NULL, identifier TEXT NOT NULL, customer_id TEXT NOT NULL,
        first_ts INTEGER NOT NULL, first_mid TEXT NOT NULL,
        PRIMARY KEY (workspace, identifier)
    ) WITHOUT ROWID;
    CREATE TABLE links (
        workspace TEXT NOT NULL, set_hash TEXT NOT NULL, key_ts INTEGER NOT NULL, key_mid TEXT NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (workspace, set_hash)
    ) WITHOUT ROWID;
    CREATE TABLE link_members (
        workspace TEXT NOT NULL, identifier TEXT NOT NULL, set_hash TEXT NOT NULL,
        PRIMARY KEY (workspace, identifier, set_hash)
    ) WITHOUT ROWID;
    CREATE TABLE profiles (
        id INTEGER PRIMARY KEY, workspace TEXT NOT NULL, customer_id TEXT NOT NULL, body BLOB NOT NULL,
        UNIQUE (workspace, customer_id)
    );
    CREATE TABLE redirects (
        workspace TEXT NOT NULL, old_id TEXT NOT NULL, new_id TEXT NOT NULL,
        PRIMARY KEY (workspace, old_id)
    ) WITHOUT ROWID;
    CREATE TABLE timeline (
        workspace TEXT NOT NULL, customer_id TEXT NOT NULL, ts_ms INTEGER NOT NULL, seq INTEGER NOT NULL,
        anchor TEXT NOT NULL, type TEXT NOT NULL, name TEXT, channel TEXT NOT NULL, internal INTEGER NOT NULL,
        PRIMARY KEY (workspace, customer_id, ts_ms, seq)
    ) WITHOUT ROWID;
    CREATE TABLE accounts (
        workspace TEXT NOT NULL, account_id TEXT NOT NULL, body BLOB NOT NULL,
        PRIMARY KEY (workspace, account_id)
    ) WITHOUT ROWID;
    CREATE TABLE account_members (
        workspace TEXT NOT NULL, account_id TEXT NOT NULL, customer_id TEXT NOT NULL,
        PRIMARY KEY (workspace, account_id, customer_id)
    ) WITHOUT ROWID;
    CREATE TABLE identity_refusals (
        id INTEGER PRIMARY KEY, workspace TEXT NOT NULL, seq INTEGER NOT NULL, ref TEXT NOT NULL,
        target TEXT NOT NULL, identifier TEXT NOT NULL, body BLOB NOT NULL,
        UNIQUE (workspace, ref)
    );
    CREATE INDEX identity_refusals_target ON identity_refusals (workspace, target);
    CREATE INDEX identity_refusals_identifier ON identity_refusals (workspace, identifier);
    CREATE TABLE identity_changes (
        id INTEGER PRIMARY KEY, workspace TEXT NOT NULL, seq INTEGER NOT NULL, body BLOB NOT NULL
    );
    CREATE TABLE timers (
        workspace TEXT NOT NULL, customer_id TEXT NOT NULL, due_ms INTEGER NOT NULL,
        PRIMARY KEY (workspace, customer_id)
    ) WITHOUT ROWID;
    CREATE INDEX timers_due ON timers (due_ms);
    CREATE TABLE log_outbox (id INTEGER PRIMARY KEY, workspace TEXT NOT NULL, body BLOB NOT NULL);
    CREATE TABLE processing_failures (
        id INTEGER PRIMARY KEY, workspace TEXT NOT NULL, seq INTEGER NOT NULL, error TEXT NOT NULL
    );
    """,
    """
    CREATE TABLE journey_states (
        workspace TEXT NOT NULL, holder TEXT NOT NULL, body BLOB NOT NULL,
        PRIMARY KEY (workspace, holder)
    ) WITHOUT ROWID;
    CREATE TABLE journey_transitions (
        id INTEGER PRIMARY KEY, workspace TEXT NOT NULL, holder TEXT NOT NULL, customer_id TEXT NOT NULL,
        journey TEXT NOT NULL, version INTEGER NOT NULL, instance TEXT NOT NULL, ts_ms INTEGER NOT NULL,
        seq INTEGER NOT NULL, kind TEXT NOT NULL, step TEXT NOT NULL, detail TEXT NOT NULL
    );
    CREATE INDEX journey_transitions_customer ON journey_transitions (workspace, customer_id, id);
    CREATE TABLE journey_stats (
        workspace TEXT NOT NULL, journey TEXT NOT NULL, version INTEGER NOT NULL, metric TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (workspace, journey, version, metric)
    ) WITHOUT ROWID;
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT, workspace TEXT NOT NULL, customer_id TEXT NOT NULL, key TEXT NOT NULL UNIQUE,
        channel TEXT NOT NULL, journey TEXT NOT NULL, created_ms INTEGER NOT NULL, body BLOB NOT NULL
    );
    CREATE INDEX messages_customer ON messages (workspace, customer_id, id);
    """,
    # 3: surveys (docs/surveys.md). Invitations, sent or suppressed with the reason,
    # are decisions like journey transitions: kept through a rebuild. Feedback rows
    # are derived from the log's feedback events (a rebuild recomputes them).
    """
    CREATE TABLE survey_invitations (
        workspace TEXT NOT NULL, id TEXT NOT NULL, customer_id TEXT NOT NULL, survey TEXT NOT NULL,
        status TEXT NOT NULL, reason TEXT NOT NULL, channel TEXT NOT NULL, created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL, journey TEXT NOT NULL, body BLOB NOT NULL,
        PRIMARY KEY (workspace, id)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX survey_invitations_id ON survey_invitations (id);
    CREATE INDEX survey_invitations_customer ON survey_invitations (workspace, customer_id, created_ms);
    CREATE INDEX survey_invitations_survey ON survey_invitations (workspace, survey, created_ms);
    CREATE TABLE feedback (
        workspace TEXT NOT NULL, key TEXT NOT NULL, customer_id TEXT NOT NULL, ts_ms INTEGER NOT NULL,
        seq INTEGER NOT NULL, metric TEXT NOT NULL, invitation TEXT, body BLOB NOT NULL,
        PRIMARY KEY (workspace, key)
    ) WITHOUT ROWID;
    CREATE INDEX feedback_ts ON feedback (workspace, ts_ms);
    CREATE INDEX feedback_customer ON feedback (workspace, customer_id, ts_ms);
    CREATE INDEX redirects_new_id ON redirects (workspace, new_id);
    """,
    # 4: next-best-action learning (docs/decisions.md): offers and answers per action
    # and learning group, and decisions and conversions of treatment and holdout.
    """
    CREATE TABLE action_stats (
        workspace TEXT NOT NULL, action TEXT NOT NULL, grp TEXT NOT NULL,
        offers INTEGER NOT NULL, accepts INTEGER NOT NULL, rejects INTEGER NOT NULL,
        PRIMARY KEY (workspace, action, grp)
    ) WITHOUT ROWID;
    CREATE TABLE decision_stats (
        workspace TEXT NOT NULL, arm TEXT NOT NULL, decisions INTEGER NOT NULL, conversions INTEGER NOT NULL,
        PRIMARY KEY (workspace, arm)
    ) WITHOUT ROWID;
    """,
    # 5: erasure (docs/privacy.md): receipts and the hashes that keep the erased out.
    state_erasure.SQLITE_TABLES,
)


def _ensure_salt(connection: sqlite3.Connection) -> None:
    """The installation's secrets, made once: the salt of customer ids, and the key
    that signs survey links (``polku.core.survey_tokens``)."""
    for key in ("salt", "survey_secret", "identity_epoch"):
        if connection.execute("SELECT 1 FROM meta WHERE key = ?", (key,)).fetchone() is None:
            connection.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, os.urandom(32)))


def migrate_state(connection: sqlite3.Connection) -> None:
    migrate(connection, MIGRATIONS, then=_ensure_salt)


def discard_other_format(path: Path) -> bytes | None:
    """Delete a ``state.db`` whose records (or tables) have another format than this
    release's: state is derived, so the processor replays the log into a new one.
    Returns the old salt, so customer ids stay the same."""
    if not path.exists():
        return None
    probe = sqlite3.connect(path)
    try:
        tables = {row[0] for row in probe.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        found: dict[str, bytes] = {}
        if "meta" in tables:
            found = {key: bytes(value) for key, value in probe.execute("SELECT key, value FROM meta")}
    finally:
        probe.close()
    if not tables or found.get("format") == STATE_FORMAT:
        return None
    log.warning(
        "state.db has another format (%s, not %s): rebuilding it from the log", found.get("format"), STATE_FORMAT
    )
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    return found.get("salt")


class Checkpointer(threading.Thread):
    """Copies the WAL back into ``state.db`` in the background (``PASSIVE``: it never
    blocks the processor's commits or the API's reads), every ``interval`` seconds.

    A passive checkpoint cannot start the WAL over while readers hold snapshots, and
    the API's readers rarely all rest at once, so the WAL could grow without bound
    ("checkpoint starvation"): past ``truncate_bytes`` it runs a ``TRUNCATE``
    checkpoint, which waits for the readers of the moment and empties the file."""

    def __init__(self, path: Path, interval: float = 0.5, truncate_bytes: int = 64 << 20) -> None:
        # A TRUNCATE holds the processor's commits for as long as it copies the WAL
        # (~0.5 s at 256 MB on this machine): 64 MB keeps that stall to ~0.2 s at the
        # cost of more of them (bench_journey_latency: p99 350 → 230 ms, p90 30 → 45 ms).
        super().__init__(name="polku-state-checkpoint", daemon=True)
        self.path = path
        self.interval = interval
        self.truncate_bytes = truncate_bytes
        self._stopped = threading.Event()

    def run(self) -> None:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute("PRAGMA busy_timeout = 1000")
        try:
            while not self._stopped.wait(self.interval):
                try:
                    wal = self.path.with_name(self.path.name + "-wal")
                    large = wal.exists() and wal.stat().st_size > self.truncate_bytes
                    connection.execute(f"PRAGMA wal_checkpoint({'TRUNCATE' if large else 'PASSIVE'})").fetchall()
                except sqlite3.Error:
                    log.warning("state.db checkpoint failed; retrying", exc_info=True)
        finally:
            connection.close()

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)
