"""The dispatcher's ledger, ``<data-dir>/deliveries.db``: one row per message taken
from the outbox (``state.db``'s ``messages``), keyed by the message's idempotency
key, and the cursor of the last message taken. The dispatcher is its only writer
(``SqliteDeliveryLedger``, the embedded ``DeliveryLedger``); ``deliveries`` reads it
for the API and the CLI."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Set
from pathlib import Path
from typing import Any, Final

import msgspec

from polku.adapters.sqlite.schema import connect, migrate
from polku.adapters.sqlite.state_schema import STATE_FILE
from polku.core.channels import OutboundMessage
from polku.core.deliveries import STATUSES, DeliveryStatus, Due, Lane, Outcome, Settled
from polku.core.journey_spec import BUILTIN_CHANNELS
from polku.ports import SqlReads

__all__ = ["DELIVERIES_FILE", "MAX_LIMIT", "STATUSES", "DeliveryStatus", "SqliteDeliveryLedger", "deliveries"]

log = logging.getLogger("polku.dispatcher")
DELIVERIES_FILE: Final = "deliveries.db"
MAX_LIMIT: Final = 1000
NEVER: Final = 2**62
_decode_message = msgspec.json.Decoder(OutboundMessage).decode

MIGRATIONS: Final[tuple[str, ...]] = (
    """
    CREATE TABLE deliveries (
        key TEXT PRIMARY KEY, message_id INTEGER NOT NULL, workspace TEXT NOT NULL, customer_id TEXT NOT NULL,
        channel TEXT NOT NULL, journey TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL,
        next_attempt_ms INTEGER NOT NULL, last_error TEXT, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
        announced INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX deliveries_unannounced ON deliveries (announced) WHERE announced = 0 AND status != 'pending';
    CREATE INDEX deliveries_lane ON deliveries (status, workspace, channel, next_attempt_ms);
    CREATE INDEX deliveries_next ON deliveries (status, next_attempt_ms);
    CREATE INDEX deliveries_customer ON deliveries (workspace, customer_id, created_ms);
    CREATE TABLE cursor (id INTEGER PRIMARY KEY CHECK (id = 1), message_id INTEGER NOT NULL);
    INSERT INTO cursor (id, message_id) VALUES (1, 0);
    """,
)
COLUMNS: Final = (
    "key",
    "message_id",
    "workspace",
    "customer_id",
    "channel",
    "journey",
    "status",
    "attempts",
    "next_attempt_ms",
    "last_error",
    "created_ms",
    "updated_ms",
)


def open_ledger(data_dir: Path) -> sqlite3.Connection:
    """The dispatcher's connection (the writer). ``NORMAL``: a commit survives a
    killed process; after a power loss a delivery marked ``sent`` in the last
    moments may be sent again, with the same idempotency key."""
    data_dir.mkdir(parents=True, exist_ok=True)
    connection = connect(data_dir / DELIVERIES_FILE, synchronous="NORMAL", page_size=4096, cache_kib=16384)
    migrate(connection, MIGRATIONS)
    return connection


def deliveries(
    source: Path | SqlReads,
    workspace: str,
    customer_id: str | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The newest deliveries of a workspace (of one customer, in one status).
    ``source`` is a data directory (read-only, nothing when no dispatcher has run)
    or an open connection to the ledger: SQLite's, or the scale-out's PostgreSQL one
    (its ``deliveries`` table has these columns too)."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    if not isinstance(source, Path):
        return _select(source, workspace, customer_id, status, limit)
    path = source / DELIVERIES_FILE
    if not path.exists():
        return []
    connection = connect(path, readonly=True)
    try:
        return _select(connection, workspace, customer_id, status, limit)
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):  # the dispatcher is creating the file
            return []
        raise
    finally:
        connection.close()


def _select(
    connection: SqlReads, workspace: str, customer_id: str | None, status: str | None, limit: int
) -> list[dict[str, Any]]:
    where = ["workspace = ?"]
    parameters: list[Any] = [workspace]
    if customer_id is not None:
        where.append("customer_id = ?")
        parameters.append(customer_id)
    if status is not None:
        where.append("status = ?")
        parameters.append(status)
    parameters.append(max(1, min(limit, MAX_LIMIT)))
    rows = connection.execute(
        f"SELECT {', '.join(COLUMNS)} FROM deliveries WHERE {' AND '.join(where)} "
        "ORDER BY created_ms DESC, message_id DESC LIMIT ?",
        parameters,
    ).fetchall()
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows]


class SqliteDeliveryLedger:
    """The embedded dispatcher's ledger, and its read-only view of the outbox in
    ``state.db``. One dispatcher owns both (``dispatcher.lock``), so what it takes
    is its own: there are no claims to lease."""

    def __init__(self, data_dir: Path, *, batch_size: int) -> None:
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.connection = open_ledger(data_dir)
        self.cursor: int = self.connection.execute("SELECT message_id FROM cursor WHERE id = 1").fetchone()[0]
        self.state: sqlite3.Connection | None = None

    async def close(self) -> None:
        if self.state is not None:
            self.state.close()
        self.connection.close()

    # -- the outbox ---------------------------------------------------------------

    def _state(self) -> sqlite3.Connection | None:
        if self.state is None and (self.data_dir / STATE_FILE).exists():
            self.state = connect(self.data_dir / STATE_FILE, readonly=True)
            # state.db was made anew (its file deleted): its ids start over, and
            # the ledger's keys keep what was taken before from being sent again.
            last = self._messages("SELECT max(id) FROM messages", ())
            if last and (last[0][0] or 0) < self.cursor:
                log.warning("state.db's messages start over; reading them from the beginning")
                self.cursor = 0
        return self.state

    def _messages(self, sql: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        state = self.state
        if state is None:
            return []
        try:
            return state.execute(sql, parameters).fetchall()
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):  # the processor has not created it yet
                return []
            raise

    def _bodies(self, message_ids: list[int]) -> dict[int, OutboundMessage]:
        if not message_ids:
            return {}
        marks = ", ".join("?" * len(message_ids))
        rows = self._messages(f"SELECT id, body FROM messages WHERE id IN ({marks})", tuple(message_ids))
        return {int(message_id): _decode_message(bytes(body)) for message_id, body in rows}

    async def take_new(self, now_ms: int) -> int:
        """New outbox rows (after the cursor) become pending deliveries, in one
        transaction with the cursor."""
        if self._state() is None:
            return 0
        rows = self._messages(
            "SELECT id, workspace, customer_id, key, channel, journey, created_ms FROM messages "
            "WHERE id > ? ORDER BY id LIMIT ?",
            (self.cursor, self.batch_size),
        )
        if not rows:
            return 0
        last_id = int(rows[-1][0])
        ledger = self.connection
        ledger.execute("BEGIN IMMEDIATE")
        try:
            ledger.executemany(
                "INSERT OR IGNORE INTO deliveries (key, message_id, workspace, customer_id, channel, journey, "
                "status, attempts, next_attempt_ms, last_error, created_ms, updated_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, NULL, ?, ?)",
                [
                    (key, message_id, workspace, customer, channel, journey, now_ms, created, now_ms)
                    for message_id, workspace, customer, key, channel, journey, created in rows
                    if channel not in BUILTIN_CHANNELS
                ],
            )
            ledger.execute("UPDATE cursor SET message_id = ? WHERE id = 1", (last_id,))
            ledger.execute("COMMIT")
        except BaseException:
            ledger.execute("ROLLBACK")
            raise
        self.cursor = last_id
        return len(rows)

    # -- deliveries -------------------------------------------------------------

    async def due_lanes(self, now_ms: int) -> set[Lane]:
        if self._state() is None:  # no outbox to read the messages from (yet)
            return set()
        rows = self.connection.execute(
            "SELECT DISTINCT workspace, channel FROM deliveries WHERE status = 'pending' AND next_attempt_ms <= ?",
            (now_ms,),
        )
        return {(str(workspace), str(channel)) for workspace, channel in rows}

    async def claim(self, lane: Lane, now_ms: int, limit: int, skip: Set[str]) -> list[Due]:
        rows = self.connection.execute(
            "SELECT key, message_id, attempts FROM deliveries "
            "WHERE status = 'pending' AND workspace = ? AND channel = ? AND next_attempt_ms <= ? "
            "ORDER BY next_attempt_ms LIMIT ?",
            (*lane, now_ms, limit + len(skip)),
        ).fetchall()
        taken = [row for row in rows if row[0] not in skip][:limit]
        bodies = self._bodies([int(message_id) for _, message_id, _ in taken])
        return [
            Due(key=key, workspace=lane[0], channel=lane[1], attempts=attempts, message=bodies.get(int(message_id)))
            for key, message_id, attempts in taken
        ]

    async def start_attempt(self, item: Due) -> bool:
        self.connection.execute("UPDATE deliveries SET attempts = ? WHERE key = ?", (item.attempts + 1, item.key))
        return True

    async def settle(self, item: Due, outcome: Outcome) -> bool:
        next_attempt = outcome.next_attempt_ms if outcome.next_attempt_ms is not None else outcome.at_ms
        self.connection.execute(
            "UPDATE deliveries SET status = ?, attempts = ?, next_attempt_ms = ?, last_error = ?, updated_ms = ? "
            "WHERE key = ?",
            (outcome.status, outcome.attempts, next_attempt, outcome.error, outcome.at_ms, item.key),
        )
        return True

    async def announced(self, key: str) -> None:
        self.connection.execute("UPDATE deliveries SET announced = 1 WHERE key = ?", (key,))

    async def forget(self, key: str) -> None:
        self.connection.execute("DELETE FROM deliveries WHERE key = ?", (key,))

    async def unannounced(self, skip: Set[str]) -> list[Settled]:
        self._state()
        rows = [
            row
            for row in self.connection.execute(
                "SELECT key, workspace, channel, status, attempts, last_error, updated_ms, message_id FROM deliveries "
                "WHERE announced = 0 AND status != 'pending'"
            ).fetchall()
            if row[0] not in skip
        ]
        bodies = self._bodies([int(row[-1]) for row in rows])
        return [Settled.from_row(row[:7], bodies.get(int(row[7]))) for row in rows]

    async def next_due(self, now_ms: int) -> int:
        row = self.connection.execute(
            "SELECT min(next_attempt_ms) FROM deliveries WHERE status = 'pending' AND next_attempt_ms > ?", (now_ms,)
        ).fetchone()
        return int(row[0]) if row[0] is not None else NEVER
