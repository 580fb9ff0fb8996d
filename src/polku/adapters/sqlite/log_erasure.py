"""Retention, and the log stage of an erasure, on the embedded store (``polku.core.erasure``): the
person leaves ``polku.db`` (their events and the erasure request, refused messages
that name them, their survey answers, their ids in the audit log's paths) and the
dispatcher's ledger ``deliveries.db``.

A second writer beside the ingestion writer and the dispatcher, as ``polku import``
is: SQLite serialises the writers (``BEGIN IMMEDIATE`` waits on the busy timeout),
and nothing the deletions touch is cached by the owners (the writer's
deduplication keeps messageIds, which are not personal and keep a retried erased
event out). Every connection zeroes what it deletes (``secure_delete``, set in
``schema.connect``), and the WAL is emptied afterwards (``wipe_wal``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from polku.adapters.duckdb.analytics_store import analytics_path
from polku.adapters.sqlite.schema import DATABASE_FILE, connect
from polku.adapters.sqlite.state_store import wipe_wal
from polku.core.erasure import ErasureScope, identifier_values, path_forms, quoted_forms, redact_action
from polku.core.retention import Retention

DELIVERIES_FILE: Final = "deliveries.db"
CHUNK: Final = 500
EXPIRY_SLICE: Final = 50_000
"""Log positions per transaction of retention."""


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


class SqliteLogEraser:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def erase(self, scope: ErasureScope) -> dict[str, int]:
        removed = self._log(scope)
        removed["deliveries"] = self._ledger(scope.workspace, scope.customer_ids)
        return removed

    def expire(self, workspace: str, retention: Retention, now_ms: int, processed_seq: int) -> dict[str, int]:
        """In slices of the log, each its own short transaction: the ingestion writer
        waits for one slice at most, not for the whole table's scan."""
        removed = {"events": 0, "quarantine": 0}
        where = retention.expired_where(now_ms, lambda column: column)
        connection = connect(self.data_dir / DATABASE_FILE)
        try:
            if where is not None:
                condition, parameters = where
                row = connection.execute("SELECT min(seq) FROM events WHERE workspace = ?", [workspace]).fetchone()
                start = int(row[0]) if row and row[0] is not None else processed_seq + 1
                while start <= processed_seq:
                    end = min(start + EXPIRY_SLICE - 1, processed_seq)
                    with _transaction(connection):
                        cursor = connection.execute(
                            f"DELETE FROM events WHERE workspace = ? AND seq BETWEEN ? AND ? AND ({condition})",
                            [workspace, start, end, *parameters],
                        )
                    removed["events"] += cursor.rowcount
                    start = end + 1
            if retention.quarantine_ms is not None:
                with _transaction(connection):
                    cursor = connection.execute(
                        "DELETE FROM quarantine WHERE workspace = ? AND received_ms < ?",
                        [workspace, now_ms - retention.quarantine_ms],
                    )
                removed["quarantine"] = cursor.rowcount
            if any(removed.values()):
                wipe_wal(connection)
        finally:
            connection.close()
        return removed

    def analytics_follow(self) -> bool:
        """An analytics store to clean: its feed does the stage (with the feed turned
        off, the file stays, and so does the person in it, until it is deleted)."""
        return analytics_path(self.data_dir).exists()

    def drop(self, late: Sequence[tuple[str, int, str | None]]) -> None:
        connection = connect(self.data_dir / DATABASE_FILE)
        try:
            with _transaction(connection):
                for workspace, seq, _ in late:
                    connection.execute("DELETE FROM events WHERE workspace = ? AND seq = ?", [workspace, seq])
        finally:
            connection.close()
        customers: dict[str, list[str]] = {}
        for workspace, _, customer_id in late:
            if customer_id is not None:
                customers.setdefault(workspace, []).append(customer_id)
        for workspace, ids in customers.items():
            self._ledger(workspace, ids)

    def _log(self, scope: ErasureScope) -> dict[str, int]:
        workspace = scope.workspace
        values = identifier_values(scope.identifiers)
        named = [*scope.customer_ids, *values]
        removed = {"events": 0, "quarantine": 0, "survey_answers": 0, "audit_log": 0}
        connection = connect(self.data_dir / DATABASE_FILE)
        try:
            with _transaction(connection):
                for chunk in _chunks([*scope.seqs, scope.marker_seq]):
                    cursor = connection.execute(
                        f"DELETE FROM events WHERE workspace = ? AND seq IN ({_marks(chunk)})", [workspace, *chunk]
                    )
                    removed["events"] += cursor.rowcount
                # Events of theirs the processor never put on a timeline (one that
                # failed, one still in a batch): by the ids the log indexes.
                users = [i.partition(":")[2] for i in scope.identifiers if i.startswith("user_id:")]
                anonymous = [i.partition(":")[2] for i in scope.identifiers if i.startswith("anonymous_id:")]
                for column, ids in (("user_id", users), ("anonymous_id", anonymous)):
                    for chunk in _chunks(ids):
                        cursor = connection.execute(
                            f"DELETE FROM events WHERE workspace = ? AND seq < ? AND {column} IN ({_marks(chunk)})",
                            [workspace, scope.marker_seq, *chunk],
                        )
                        removed["events"] += cursor.rowcount
                for needle in quoted_forms(named):
                    cursor = connection.execute(
                        "DELETE FROM quarantine WHERE workspace = ? AND instr(lower(CAST(body AS TEXT)), ?) > 0",
                        [workspace, needle],
                    )
                    removed["quarantine"] += cursor.rowcount
                for chunk in _chunks(scope.invitations):
                    cursor = connection.execute(
                        f"DELETE FROM survey_answers WHERE workspace = ? AND invitation IN ({_marks(chunk)})",
                        [workspace, *chunk],
                    )
                    removed["survey_answers"] += cursor.rowcount
                forms = path_forms(named)
                for form in forms:
                    rows = connection.execute(
                        "SELECT id, action FROM audit_log WHERE workspace = ? AND instr(action, ?) > 0",
                        [workspace, form],
                    ).fetchall()
                    for row_id, action in rows:
                        redacted = redact_action(action, set(forms))
                        if redacted != action:
                            connection.execute("UPDATE audit_log SET action = ? WHERE id = ?", [redacted, row_id])
                            removed["audit_log"] += 1
            wipe_wal(connection)
        finally:
            connection.close()
        return removed

    def _ledger(self, workspace: str, customer_ids: Sequence[str]) -> int:
        path = self.data_dir / DELIVERIES_FILE
        if not path.exists():
            return 0
        connection = connect(path)
        count = 0
        try:
            with _transaction(connection):
                for chunk in _chunks(list(customer_ids)):
                    cursor = connection.execute(
                        f"DELETE FROM deliveries WHERE workspace = ? AND customer_id IN ({_marks(chunk)})",
                        [workspace, *chunk],
                    )
                    count += cursor.rowcount
            wipe_wal(connection)
        finally:
            connection.close()
        return count


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
