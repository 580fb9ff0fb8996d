"""The dispatcher's ledger, ``<data-dir>/deliveries.db``: one row per message taken
from the outbox (``state.db``'s ``messages``), keyed by the message's idempotency
key, and the cursor of the last message taken. The dispatcher is its only writer;
``deliveries`` reads it for the API and the CLI."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Final, Literal

from polku.adapters.sqlite.schema import connect, migrate

DELIVERIES_FILE: Final = "deliveries.db"
STATUSES: Final = ("pending", "sent", "dead")
DeliveryStatus = Literal["pending", "sent", "dead"]
MAX_LIMIT: Final = 1000

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
    source: Path | sqlite3.Connection,
    workspace: str,
    customer_id: str | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The newest deliveries of a workspace (of one customer, in one status).
    ``source`` is a data directory (read-only, nothing when no dispatcher has run)
    or an open connection to the ledger."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
    if isinstance(source, sqlite3.Connection):
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
    connection: sqlite3.Connection, workspace: str, customer_id: str | None, status: str | None, limit: int
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
