"""The processor's state on SQLite: ``<data_dir>/state.db`` (WAL).

A file of its own, beside the event log's ``polku.db``: the processor is its only
writer, so it never waits on ingestion's writer, and the layout matches the
scale-out deployment (log in NATS, state in PostgreSQL). The checkpoint lives in
this file and commits in the same transaction as the state it covers.

Rows that are read whole (profiles, accounts) are msgpack blobs; rows that are
searched (identifiers, links, timeline, account members) are columns with
``WITHOUT ROWID`` primary keys that serve the lookups. Profiles, rewritten on every
event and often over a kilobyte, are a rowid table updated in place (a large row in
a ``WITHOUT ROWID`` table spills to overflow pages, and a replace would move it).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from polku.adapters import state_erasure
from polku.adapters.sqlite.schema import Synchronous, connect
from polku.adapters.sqlite.state_schema import (
    STATE_FILE,
    STATE_FORMAT,
    Checkpointer,
    discard_other_format,
    migrate_state,
)
from polku.adapters.sqlite.survey_store import write_decisions, write_surveys
from polku.adapters.state_records import (
    DERIVED_TABLES,
    consent_rows,
    decode_account,
    decode_change,
    decode_journey_state,
    decode_link,
    decode_profile,
    decode_refusal,
    encode_msgpack,
    encoded_rows,
    identifier_rows,
    journey_stat_rows,
    link_member_rows,
    link_rows,
    merge_rows,
    message_rows,
    outbox_rows,
    refusal_rows,
    timeline_rows,
    transition_rows,
    written_and_deleted,
)
from polku.core.erasure import ErasureReceipt, ErasureScope
from polku.core.identity import LinkEvent
from polku.core.journey_state import JourneyState
from polku.core.profile import Profile
from polku.core.retention import Retention
from polku.state import (
    Account,
    IdentifierRecord,
    MergeRecord,
    RefusalRecord,
    StateChanges,
    TimelineRow,
)

log = logging.getLogger("polku.processor")
MAX_IN_PARAMETERS: Final = 500


def link_hash(identifiers: Sequence[str]) -> str:
    return hashlib.blake2b("\x00".join(sorted(identifiers)).encode(), digest_size=12).hexdigest()


def _chunks(values: Sequence[Any], size: int = MAX_IN_PARAMETERS) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class StateReads:
    """Reads over one connection (the writer's own, or a read-only one)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def salt(self) -> bytes:
        return bytes(self.connection.execute("SELECT value FROM meta WHERE key = 'salt'").fetchone()[0])

    def identity_epoch(self) -> str:
        """Changes when the state is rebuilt (``identity_changes`` ids start over)."""
        row = self.connection.execute("SELECT value FROM meta WHERE key = 'identity_epoch'").fetchone()
        return bytes(row[0]).hex() if row else ""

    def survey_secret(self) -> bytes:
        """The key that signs survey links (made with the store)."""
        return bytes(self.connection.execute("SELECT value FROM meta WHERE key = 'survey_secret'").fetchone()[0])

    def checkpoint(self) -> int:
        return int(self.connection.execute("SELECT seq FROM checkpoint WHERE id = 1").fetchone()[0])

    def journey_state(self, workspace: str, holder: str) -> JourneyState | None:
        row = self.connection.execute(
            "SELECT body FROM journey_states WHERE workspace = ? AND holder = ?", (workspace, holder)
        ).fetchone()
        return decode_journey_state(row[0]) if row else None

    def identifier(self, workspace: str, identifier: str) -> IdentifierRecord | None:
        row = self.connection.execute(
            "SELECT customer_id, first_ts, first_mid FROM identifiers WHERE workspace = ? AND identifier = ?",
            (workspace, identifier),
        ).fetchone()
        return None if row is None else IdentifierRecord(row[0], (row[1], row[2]))

    def profiles(self, workspace: str, customer_ids: Sequence[str]) -> dict[str, Profile]:
        found: dict[str, Profile] = {}
        for chunk in _chunks(customer_ids):
            marks = ",".join("?" * len(chunk))
            for customer_id, body in self.connection.execute(
                f"SELECT customer_id, body FROM profiles WHERE workspace = ? AND customer_id IN ({marks})",
                (workspace, *chunk),
            ):
                found[customer_id] = decode_profile(body)
        return found

    def profile(self, workspace: str, customer_id: str) -> Profile | None:
        row = self.connection.execute(
            "SELECT body FROM profiles WHERE workspace = ? AND customer_id = ?", (workspace, customer_id)
        ).fetchone()
        return None if row is None else decode_profile(row[0])

    def redirect(self, workspace: str, customer_id: str) -> str:
        """Follow merges: the live id a (possibly retired) customer id now has. An id
        with a profile is live, whatever redirect it may once have had."""
        for _ in range(64):
            if self.connection.execute(
                "SELECT 1 FROM profiles WHERE workspace = ? AND customer_id = ?", (workspace, customer_id)
            ).fetchone():
                return customer_id
            row = self.connection.execute(
                "SELECT new_id FROM redirects WHERE workspace = ? AND old_id = ?", (workspace, customer_id)
            ).fetchone()
            if row is None:
                return customer_id
            customer_id = row[0]
        return customer_id

    def redirect_step(self, workspace: str, customer_id: str) -> str | None:
        """The id a retired customer id was merged into; ``None`` for a live (or
        unknown) one."""
        if self.connection.execute(
            "SELECT 1 FROM profiles WHERE workspace = ? AND customer_id = ?", (workspace, customer_id)
        ).fetchone():
            return None
        row = self.connection.execute(
            "SELECT new_id FROM redirects WHERE workspace = ? AND old_id = ?", (workspace, customer_id)
        ).fetchone()
        return None if row is None else str(row[0])

    def link_hashes(self, workspace: str, identifiers: Sequence[str], *, limit: int = 1 << 62) -> dict[str, list[str]]:
        """The links each identifier took part in (at most ``limit`` per query)."""
        found: dict[str, list[str]] = {}
        for chunk in _chunks(identifiers):
            marks = ",".join("?" * len(chunk))
            for identifier, set_hash in self.connection.execute(
                f"SELECT identifier, set_hash FROM link_members WHERE workspace = ? AND identifier IN ({marks}) LIMIT ?",
                (workspace, *chunk, limit),
            ):
                found.setdefault(identifier, []).append(set_hash)
        return found

    def links(self, workspace: str, set_hashes: Sequence[str]) -> dict[str, LinkEvent]:
        found: dict[str, LinkEvent] = {}
        for chunk in _chunks(set_hashes):
            marks = ",".join("?" * len(chunk))
            for set_hash, body in self.connection.execute(
                f"SELECT set_hash, body FROM links WHERE workspace = ? AND set_hash IN ({marks})", (workspace, *chunk)
            ):
                found[set_hash] = decode_link(body)
        return found

    def account(self, workspace: str, account_id: str) -> Account | None:
        row = self.connection.execute(
            "SELECT body FROM accounts WHERE workspace = ? AND account_id = ?", (workspace, account_id)
        ).fetchone()
        return None if row is None else decode_account(row[0])

    def accounts(self, workspace: str, account_ids: Sequence[str]) -> dict[str, Account]:
        found: dict[str, Account] = {}
        for chunk in _chunks(account_ids):
            marks = ",".join("?" * len(chunk))
            for account_id, body in self.connection.execute(
                f"SELECT account_id, body FROM accounts WHERE workspace = ? AND account_id IN ({marks})",
                (workspace, *chunk),
            ):
                found[account_id] = decode_account(body)
        return found

    def account_members(self, workspace: str, account_id: str, *, limit: int = 10_000) -> list[str]:
        return [
            row[0]
            for row in self.connection.execute(
                "SELECT customer_id FROM account_members WHERE workspace = ? AND account_id = ? "
                "ORDER BY customer_id LIMIT ?",
                (workspace, account_id, limit),
            )
        ]

    def timeline(
        self, workspace: str, customer_id: str, *, before: tuple[int, int] | None = None, limit: int | None = None
    ) -> list[TimelineRow]:
        """Newest first; ``before`` is a (ts_ms, seq) cursor."""
        sql = "SELECT ts_ms, seq, anchor, type, name, channel, internal FROM timeline WHERE workspace = ? AND customer_id = ?"
        parameters: list[Any] = [workspace, customer_id]
        if before is not None:
            sql += " AND (ts_ms, seq) < (?, ?)"
            parameters += list(before)
        sql += " ORDER BY ts_ms DESC, seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            parameters.append(limit)
        return [
            TimelineRow(ts, seq, anchor, kind, name, channel, bool(internal))
            for ts, seq, anchor, kind, name, channel, internal in self.connection.execute(sql, parameters)
        ]

    def refusals(self, workspace: str, *, after_id: int = 0, limit: int = 100) -> list[tuple[int, RefusalRecord]]:
        return [
            (row[0], decode_refusal(row[1]))
            for row in self.connection.execute(
                "SELECT id, body FROM identity_refusals WHERE workspace = ? AND id > ? ORDER BY id LIMIT ?",
                (workspace, after_id, limit),
            )
        ]

    def refusals_about(
        self, workspace: str, identifiers: Sequence[str], limit: int = 50
    ) -> list[tuple[int, RefusalRecord]]:
        """Refusals that involve any of these identifiers (a customer's), newest first."""
        found: dict[int, RefusalRecord] = {}
        for chunk in _chunks(identifiers):
            marks = ",".join("?" * len(chunk))
            for column in ("target", "identifier"):
                for entry_id, body in self.connection.execute(
                    f"SELECT id, body FROM identity_refusals WHERE workspace = ? AND {column} IN ({marks}) "
                    "ORDER BY id DESC LIMIT ?",
                    (workspace, *chunk, limit),
                ):
                    found[entry_id] = decode_refusal(body)
        return sorted(found.items(), reverse=True)[:limit]

    def identity_changes(self, workspace: str, *, after_id: int = 0, limit: int = 100) -> list[tuple[int, MergeRecord]]:
        return [
            (row[0], decode_change(row[1]))
            for row in self.connection.execute(
                "SELECT id, body FROM identity_changes WHERE workspace = ? AND id > ? ORDER BY id LIMIT ?",
                (workspace, after_id, limit),
            )
        ]

    def due_timers(self, now_ms: int, limit: int) -> list[tuple[str, str, int]]:
        return list(
            self.connection.execute(
                "SELECT workspace, customer_id, due_ms FROM timers WHERE due_ms <= ? ORDER BY due_ms LIMIT ?",
                (now_ms, limit),
            )
        )

    def outbox(self, limit: int = 1000) -> list[tuple[int, str, bytes]]:
        return [
            (row[0], row[1], bytes(row[2]))
            for row in self.connection.execute(
                "SELECT id, workspace, body FROM log_outbox ORDER BY id LIMIT ?", (limit,)
            )
        ]

    def failures(self, workspace: str, limit: int = 20) -> list[dict[str, Any]]:
        """The latest events the processor skipped because they failed alone."""
        return [
            {"seq": seq, "error": error}
            for seq, error in self.connection.execute(
                "SELECT seq, error FROM processing_failures WHERE workspace = ? ORDER BY id DESC LIMIT ?",
                (workspace, limit),
            )
        ]

    def erasure_receipts(self, workspace: str, *, erasure: str | None = None, limit: int = 100) -> list[ErasureReceipt]:
        return state_erasure.receipts(self.connection.execute, workspace, erasure=erasure, limit=limit)

    def pending_erasures(self, stage: str, consumer: str | None = None) -> list[ErasureScope]:
        return state_erasure.pending(self.connection.execute, stage, consumer)

    def erased(self) -> dict[tuple[str, str], int]:
        return state_erasure.erased_hashes(self.connection.execute)

    def count_customers(self, workspace: str) -> int:
        return int(
            self.connection.execute("SELECT count(*) FROM profiles WHERE workspace = ?", (workspace,)).fetchone()[0]
        )


class SqliteStateStore(StateReads):
    """The writer side (the processor's): ``commit`` writes one batch's changes and
    the checkpoint in one transaction. Reads go through a connection of their own,
    so reading never sees a transaction half-way (the processor reads through its
    own pending changes)."""

    def __init__(self, data_dir: Path, *, synchronous: Synchronous = "FULL") -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        # Every event updates rows at random keys (profile, identifiers, timeline):
        # 4 KB pages write a quarter of what the log's 16 KB pages would, and a
        # checkpoint every 40 MB of WAL instead of every few commits.
        # 4 KB pages write a quarter of what the log's 16 KB pages would. The WAL
        # is checkpointed by a thread of its own (``Checkpointer``), not by the
        # commit that happens to cross the threshold: that commit (and every
        # event in its batch) would otherwise wait for the copy and its fsync.
        options: dict[str, Any] = {
            "synchronous": synchronous,
            "page_size": 4096,
            "autocheckpoint_pages": 0,
            "cache_kib": 131_072,
        }
        salt = discard_other_format(data_dir / STATE_FILE)
        writer = connect(data_dir / STATE_FILE, **options)
        migrate_state(writer)
        if salt is not None:  # the same customer ids after the rebuild
            writer.execute("UPDATE meta SET value = ? WHERE key = 'salt'", (salt,))
        self.writer = writer
        super().__init__(connect(data_dir / STATE_FILE, **options))
        self.checkpointer = Checkpointer(data_dir / STATE_FILE)
        self.checkpointer.start()
        writer.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('format', ?)", (STATE_FORMAT,))

    def close(self) -> None:
        self.checkpointer.stop()
        self.connection.close()
        self.writer.close()

    def commit(self, changes: StateChanges) -> None:
        connection = self.writer
        connection.execute("BEGIN IMMEDIATE")
        try:
            self._write(connection, changes)
            connection.execute("UPDATE checkpoint SET seq = ? WHERE id = 1", (changes.checkpoint,))
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    @staticmethod
    def _write(connection: sqlite3.Connection, changes: StateChanges) -> None:
        if changes.journey_states or changes.transitions or changes.journey_stats or changes.messages:
            _write_journeys(connection, changes)
        if changes.invitations or changes.feedback:
            write_surveys(connection, changes)
        if changes.action_stats or changes.decision_stats:
            write_decisions(connection, changes)
        if changes.identifiers:
            connection.executemany(
                "INSERT OR REPLACE INTO identifiers (workspace, identifier, customer_id, first_ts, first_mid) "
                "VALUES (?, ?, ?, ?, ?)",
                identifier_rows(changes),
            )
        if changes.links:
            # A link keeps the key of the earliest event that carried it.
            connection.executemany(
                "INSERT INTO links (workspace, set_hash, key_ts, key_mid, body) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (workspace, set_hash) DO UPDATE SET key_ts = excluded.key_ts, "
                "key_mid = excluded.key_mid, body = excluded.body "
                "WHERE (excluded.key_ts, excluded.key_mid) < (links.key_ts, links.key_mid)",
                link_rows(changes),
            )
            connection.executemany(
                "INSERT OR IGNORE INTO link_members (workspace, identifier, set_hash) VALUES (?, ?, ?)",
                link_member_rows(changes),
            )
        profiles, deleted = written_and_deleted(changes.profiles, encode_msgpack)
        if deleted:
            connection.executemany("DELETE FROM profiles WHERE workspace = ? AND customer_id = ?", deleted)
            connection.executemany("DELETE FROM timers WHERE workspace = ? AND customer_id = ?", deleted)
        connection.executemany(
            # In place (same rowid): the key index is not touched by an update.
            "INSERT INTO profiles (workspace, customer_id, body) VALUES (?, ?, ?) "
            "ON CONFLICT (workspace, customer_id) DO UPDATE SET body = excluded.body",
            profiles,
        )
        withdrawn, kept = consent_rows(changes)
        if deleted or kept:
            connection.executemany(
                "DELETE FROM consent_withdrawn WHERE workspace = ? AND customer_id = ?", [*deleted, *kept]
            )
        if withdrawn:
            connection.executemany(
                "INSERT OR IGNORE INTO consent_withdrawn (workspace, customer_id) VALUES (?, ?)", withdrawn
            )
        if changes.unredirected:
            connection.executemany(
                "DELETE FROM redirects WHERE workspace = ? AND old_id = ?", sorted(changes.unredirected)
            )
        if changes.redirects:
            connection.executemany(
                "INSERT OR REPLACE INTO redirects (workspace, old_id, new_id) VALUES (?, ?, ?)",
                [(workspace, old, new) for (workspace, old), new in changes.redirects.items()],
            )
        for (workspace, customer_id), rows in changes.timeline_replaced.items():
            connection.execute("DELETE FROM timeline WHERE workspace = ? AND customer_id = ?", (workspace, customer_id))
            connection.executemany(
                "INSERT OR REPLACE INTO timeline (workspace, customer_id, ts_ms, seq, anchor, type, name, channel, "
                "internal) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                timeline_rows({(workspace, customer_id): rows}),
            )
        if changes.timeline:
            connection.executemany(
                "INSERT OR REPLACE INTO timeline (workspace, customer_id, ts_ms, seq, anchor, type, name, channel, "
                "internal) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                timeline_rows(changes.timeline),
            )
        if changes.accounts:
            connection.executemany(
                "INSERT OR REPLACE INTO accounts (workspace, account_id, body) VALUES (?, ?, ?)",
                encoded_rows(changes.accounts, encode_msgpack),
            )
        if changes.members_removed:
            connection.executemany(
                "DELETE FROM account_members WHERE workspace = ? AND account_id = ? AND customer_id = ?",
                sorted(changes.members_removed),
            )
        if changes.members_added:
            connection.executemany(
                "INSERT OR IGNORE INTO account_members (workspace, account_id, customer_id) VALUES (?, ?, ?)",
                sorted(changes.members_added),
            )
        for workspace, identifiers in changes.refusals_cleared:
            for chunk in _chunks(identifiers):
                marks = ",".join("?" * len(chunk))
                connection.execute(
                    f"DELETE FROM identity_refusals WHERE workspace = ? AND (target IN ({marks}) OR identifier IN ({marks}))",
                    (workspace, *chunk, *chunk),
                )
        if changes.refusals:
            connection.executemany(
                "INSERT OR IGNORE INTO identity_refusals (workspace, seq, ref, target, identifier, body) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                refusal_rows(changes),
            )
        if changes.merges:
            connection.executemany(
                "INSERT INTO identity_changes (workspace, seq, body) VALUES (?, ?, ?)", merge_rows(changes)
            )
        if changes.timers:
            connection.executemany(
                "DELETE FROM timers WHERE workspace = ? AND customer_id = ?",
                [key for key, due_ms in changes.timers.items() if due_ms is None],
            )
            connection.executemany(
                "INSERT OR REPLACE INTO timers (workspace, customer_id, due_ms) VALUES (?, ?, ?)",
                [(*key, due_ms) for key, due_ms in changes.timers.items() if due_ms is not None],
            )
        if changes.failures:
            connection.executemany(
                "INSERT INTO processing_failures (workspace, seq, error) VALUES (?, ?, ?)", changes.failures
            )
        if changes.emitted:
            connection.executemany("INSERT INTO log_outbox (workspace, body) VALUES (?, ?)", outbox_rows(changes))
        for scope in changes.erasures:
            state_erasure.erase_state(connection.execute, scope, scope.state_ms)

    def erasure_scope(
        self, workspace: str, customer_id: str, *, erasure: str, requested_ms: int, marker_seq: int, suppress: bool
    ) -> ErasureScope:
        return state_erasure.find_scope(
            self.writer.execute,
            workspace,
            customer_id,
            erasure=erasure,
            requested_ms=requested_ms,
            marker_seq=marker_seq,
            suppress=suppress,
        )

    def mark_erasure(self, workspace: str, erasure: str, stage: str, removed: dict[str, int], now_ms: int) -> None:
        self.writer.execute("BEGIN IMMEDIATE")
        try:
            state_erasure.mark_stage(self.writer.execute, workspace, erasure, stage, removed, now_ms)
            self.writer.execute("COMMIT")
        except BaseException:
            self.writer.execute("ROLLBACK")
            raise
        self.wipe_wal()

    def expire_timeline(self, workspace: str, retention: Retention, now_ms: int) -> dict[str, int]:
        self.writer.execute("BEGIN IMMEDIATE")
        try:
            removed = state_erasure.expire_timeline(self.writer.execute, workspace, retention, now_ms)
            self.writer.execute("COMMIT")
        except BaseException:
            self.writer.execute("ROLLBACK")
            raise
        return {"timeline": removed}

    def wipe_wal(self) -> None:
        """Empty the WAL, which still holds earlier copies of the pages an erasure
        cleared (``secure_delete`` zeroes the pages themselves)."""
        wipe_wal(self.writer)

    def delete_outbox(self, ids: Sequence[int]) -> None:
        self.writer.execute("BEGIN IMMEDIATE")
        try:
            self.writer.executemany("DELETE FROM log_outbox WHERE id = ?", [(entry_id,) for entry_id in ids])
            self.writer.execute("COMMIT")
        except BaseException:
            self.writer.execute("ROLLBACK")
            raise

    def journey_entries(self, workspace: str, journey_id: str) -> int:
        row = self.connection.execute(
            "SELECT coalesce(sum(count), 0) FROM journey_stats WHERE workspace = ? AND journey = ? "
            "AND metric IN ('entered', 'entered:holdout')",
            (workspace, journey_id),
        ).fetchone()
        return int(row[0])

    def journey_holders_due(self) -> list[tuple[str, str, int]]:
        """(workspace, holder, due) of every journey state with something due: a
        rebuild, which empties the timers, sets them again from these."""
        found = []
        for workspace, holder, body in self.connection.execute("SELECT workspace, holder, body FROM journey_states"):
            due = decode_journey_state(body).next_due()
            if due:
                found.append((workspace, holder, due))
        return found

    def reset(self) -> None:
        """Forget every derived record and the checkpoint (``polku identity rebuild``);
        the salt stays, so the rebuilt customers get the same ids."""
        self.writer.execute("BEGIN IMMEDIATE")
        try:
            for table in DERIVED_TABLES:
                self.writer.execute(f"DELETE FROM {table}")
            self.writer.execute("UPDATE checkpoint SET seq = 0 WHERE id = 1")
            self.writer.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('identity_epoch', ?)", (os.urandom(8),)
            )
            self.writer.execute("COMMIT")
        except BaseException:
            self.writer.execute("ROLLBACK")
            raise


SCHEMA_WAIT_S: Final = 10.0
WIPE_TRIES: Final = 50


def wipe_wal(connection: sqlite3.Connection) -> bool:
    """A ``TRUNCATE`` checkpoint: the WAL's frames (earlier copies of pages) are
    copied back and the file is cut to nothing. It waits for the readers of the
    moment (the busy timeout) and is tried again while one holds an old snapshot.
    Whether the WAL is empty now."""
    for _ in range(WIPE_TRIES):
        busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if not busy:
            return True
        time.sleep(0.1)
    log.warning("the WAL could not be emptied after an erasure (readers held it); the next checkpoint will")
    return False


def mark_erasure_stage(data_dir: Path, scope: ErasureScope, stage: str, removed: dict[str, int]) -> None:
    """A stage done by another process than the processor (the analytics feeder):
    a short write of its own beside the processor's."""
    connection = connect(data_dir / STATE_FILE, page_size=4096)
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            state_erasure.mark_stage(
                connection.execute, scope.workspace, scope.erasure, stage, removed, int(time.time() * 1000)
            )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        wipe_wal(connection)
    finally:
        connection.close()


def open_state_reader(data_dir: Path) -> StateReads:
    """A read-only view (the API's); the processor creates the file. A file just
    created holds no tables until the processor's migration commits: wait for them
    (a read before that would fail with "no such table")."""
    path = data_dir / STATE_FILE
    if not path.exists():
        SqliteStateStore(data_dir).close()
    connection = connect(path, readonly=True)
    deadline = time.monotonic() + SCHEMA_WAIT_S
    while not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'checkpoint'").fetchone():
        if time.monotonic() > deadline:
            connection.close()
            SqliteStateStore(data_dir).close()  # no processor is making it: make it here
            connection = connect(path, readonly=True)
            break
        time.sleep(0.02)
    return StateReads(connection)


def _write_journeys(connection: sqlite3.Connection, changes: StateChanges) -> None:
    """The journey engine's part of a batch: states, transitions, stats deltas and
    the messages for the dispatcher (the outbox), in the batch's transaction."""
    states, deleted = written_and_deleted(changes.journey_states, encode_msgpack)
    if deleted:
        connection.executemany("DELETE FROM journey_states WHERE workspace = ? AND holder = ?", deleted)
    connection.executemany(
        "INSERT INTO journey_states (workspace, holder, body) VALUES (?, ?, ?) "
        "ON CONFLICT (workspace, holder) DO UPDATE SET body = excluded.body",
        states,
    )
    connection.executemany(
        "INSERT INTO journey_transitions (workspace, holder, customer_id, journey, version, instance, ts_ms, seq, "
        "kind, step, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        transition_rows(changes),
    )
    connection.executemany(
        "INSERT INTO journey_stats (workspace, journey, version, metric, count) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (workspace, journey, version, metric) DO UPDATE SET count = count + excluded.count",
        journey_stat_rows(changes),
    )
    # A message decided again (a batch replayed after a crash between the outbox
    # commit and the checkpoint cannot happen: they are one transaction; but a
    # rebuild or an isolated retry may decide it again): the key keeps it once.
    connection.executemany(
        "INSERT OR IGNORE INTO messages (workspace, customer_id, key, channel, journey, created_ms, body) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        message_rows(changes),
    )
