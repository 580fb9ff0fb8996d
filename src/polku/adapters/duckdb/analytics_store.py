"""The analytics store: a columnar copy of every customer event, in one DuckDB file
(``<data-dir>/analytics.duckdb``), fed incrementally from the log by
``polku.engine.analytics_feed`` (docs/analytics.md).

One row per event with its customer as resolved now (``customer_id`` is rewritten
when identities merge or split, by the identifier that named the event,
``anchor``), its channel, its account and its feedback fields. Segment
memberships are kept from the log's segment events. The rows and the feed's
position commit in one transaction, so a crash re-feeds nothing twice.

DuckDB allows one writer process per file: the feeder holds the file open for
writing; readers (the API, the CLI) open short read-only connections, which
DuckDB allows beside no writer only — so the feeder releases the file between
batches (``close``), and readers retry briefly when it is held.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from polku.core.erasure import ErasureScope
from polku.core.retention import Retention

ANALYTICS_FILE: Final = "analytics.duckdb"
EVENT_COLUMNS: Final = (
    ("workspace", "VARCHAR"),
    ("seq", "BIGINT"),
    ("ts", "TIMESTAMP"),
    ("customer_id", "VARCHAR"),
    ("anchor", "VARCHAR"),
    ("type", "VARCHAR"),
    ("name", "VARCHAR"),
    ("channel", "VARCHAR"),
    ("account", "VARCHAR"),
    ("metric", "VARCHAR"),
    ("score", "DOUBLE"),
    ("survey", "VARCHAR"),
    ("journey", "VARCHAR"),
    ("step", "VARCHAR"),
    ("source", "VARCHAR"),
)
SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS events ({", ".join(f"{name} {kind}" for name, kind in EVENT_COLUMNS)});
CREATE TABLE IF NOT EXISTS segment_members (
    workspace VARCHAR, customer_id VARCHAR, segment VARCHAR, since TIMESTAMP,
    PRIMARY KEY (workspace, customer_id, segment)
);
CREATE TABLE IF NOT EXISTS feed (id INTEGER PRIMARY KEY, seq BIGINT, identity_change BIGINT, identity_epoch VARCHAR);
CREATE TABLE IF NOT EXISTS consent_withdrawn (workspace VARCHAR, customer_id VARCHAR, PRIMARY KEY (workspace, customer_id));
INSERT INTO feed SELECT 1, 0, 0, '' WHERE NOT EXISTS (SELECT 1 FROM feed);
"""
RETRY_S: Final = 10.0


_CREATING = threading.Lock()


def analytics_path(data_dir: Path) -> Path:
    return data_dir / ANALYTICS_FILE


def connect(data_dir: Path, *, read_only: bool = False) -> Any:
    """A connection to the store; a reader waits (briefly) while the feeder writes."""
    import duckdb

    path = analytics_path(data_dir)
    if read_only and not path.exists():
        with _CREATING:  # one thread creates it; the others then find it
            if not path.exists():
                with writer(data_dir):
                    pass
    deadline = time.monotonic() + RETRY_S
    while True:
        try:
            connection = duckdb.connect(str(path), read_only=read_only, config={"threads": 2})
        except (duckdb.IOException, duckdb.ConnectionException):
            # IOException: the feeder (another process) holds the file. ConnectionException:
            # this process has it open in the other mode for a moment (a reader that
            # found no store creates it with a short write connection).
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
            continue
        if not read_only:
            connection.execute(SCHEMA)
        elif str(path) not in _CURRENT and not _has_table(connection, "consent_withdrawn"):
            # A store from before this table: a short write connection adds it.
            connection.close()
            with writer(data_dir):
                pass
            continue
        _CURRENT.add(str(path))
        return connection


_CURRENT: set[str] = set()
"""Stores this process found at the current schema (readers check once)."""


def _has_table(connection: Any, name: str) -> bool:
    row = connection.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = ?", [name]).fetchone()
    return bool(row and row[0])


@contextmanager
def writer(data_dir: Path) -> Iterator[Any]:
    connection = connect(data_dir)
    try:
        yield connection
    finally:
        connection.close()


@contextmanager
def reader(data_dir: Path) -> Iterator[Any]:
    connection = connect(data_dir, read_only=True)
    try:
        yield connection
    finally:
        connection.close()


def erase(connection: Any, scope: ErasureScope) -> dict[str, int]:
    """Delete a person's rows (``polku.core.erasure``): their events by customer, log
    position and identifier, their segment memberships and consent. ``compact``
    then takes the deleted rows out of the file."""
    workspace = scope.workspace
    removed = {"events": 0, "segment_members": 0}
    for column, values in (("customer_id", scope.customer_ids), ("seq", scope.seqs), ("anchor", scope.identifiers)):
        for start in range(0, len(values), 1000):
            chunk = values[start : start + 1000]
            marks = ", ".join("?" * len(chunk))
            # Only before the request: later events are a returning person's.
            removed["events"] += _deleted(
                connection,
                f"DELETE FROM events WHERE workspace = ? AND seq < ? AND {column} IN ({marks})",
                [workspace, scope.marker_seq, *chunk],
            )
    for start in range(0, len(scope.customer_ids), 1000):
        chunk = scope.customer_ids[start : start + 1000]
        marks = ", ".join("?" * len(chunk))
        removed["segment_members"] += _deleted(
            connection,
            f"DELETE FROM segment_members WHERE workspace = ? AND customer_id IN ({marks})",
            [workspace, *chunk],
        )
        connection.execute(
            f"DELETE FROM consent_withdrawn WHERE workspace = ? AND customer_id IN ({marks})", [workspace, *chunk]
        )
    return removed


def expire(connection: Any, workspace: str, retention: Retention, now_ms: int) -> int:
    """Retention: the workspace's expired events (``compact`` then clears the file)."""
    where = retention.expired_where(now_ms, analytics_column)
    if where is None:
        return 0
    condition, parameters = where
    return _deleted(connection, f"DELETE FROM events WHERE workspace = ? AND ({condition})", [workspace, *parameters])


def analytics_column(name: str) -> str:
    """The analytics rows' column for a retention condition's (time in ms)."""
    return "epoch_ms(ts)" if name == "ts_ms" else name


def _deleted(connection: Any, sql: str, parameters: list[Any]) -> int:
    row = connection.execute(sql, parameters).fetchone()
    return int(row[0]) if row else 0


def compact(data_dir: Path) -> None:
    """Write the store anew, with only its live rows, and put it in place of the old
    file: DuckDB marks deleted rows and reuses their blocks but does not clear them,
    so an erased person would stay readable in the file's bytes until then. Only the
    feeder calls it (it holds the analytics lock); readers that had the old file
    open keep reading it until they close."""
    path = analytics_path(data_dir)
    fresh = path.with_name(path.name + ".compacting")
    fresh.unlink(missing_ok=True)
    with writer(data_dir) as connection:
        (name,) = connection.execute("SELECT current_database()").fetchone()
        connection.execute(f"ATTACH '{fresh}' AS compacted")
        connection.execute(f'COPY FROM DATABASE "{name}" TO compacted')
        connection.execute("DETACH compacted")
    os.replace(fresh, path)
    path.with_name(path.name + ".wal").unlink(missing_ok=True)


def feed_position(connection: Any) -> tuple[int, int, str]:
    """(log position fed, identity change applied, the identity epoch)."""
    row = connection.execute("SELECT seq, identity_change, identity_epoch FROM feed WHERE id = 1").fetchone()
    return int(row[0]), int(row[1]), str(row[2])


def append(
    connection: Any,
    columns: Mapping[str, Sequence[Any]],
    segments: Sequence[tuple[str, str, str, int, bool]],
    seq: int,
    consent: Sequence[tuple[str, Sequence[str], Sequence[str]]] = (),
) -> None:
    """Rows (column → values), segment changes (workspace, customer, segment, ts,
    entered) and consent (workspace, the customers looked at, those of them who
    withdrew analytics consent) up to log position ``seq``, in one transaction."""
    import pyarrow as pa

    connection.execute("BEGIN TRANSACTION")
    try:
        if columns and len(columns["seq"]):
            batch = pa.table({name: pa.array(columns[name], type=_ARROW_TYPES[kind]) for name, kind in EVENT_COLUMNS})
            connection.register("incoming", batch)
            connection.execute("INSERT INTO events SELECT * FROM incoming")
            connection.unregister("incoming")
        for workspace, customer_id, segment, ts_ms, entered in segments:
            if entered:
                connection.execute(
                    "INSERT OR REPLACE INTO segment_members VALUES (?, ?, ?, make_timestamp(? * 1000))",
                    [workspace, customer_id, segment, ts_ms],
                )
            else:
                connection.execute(
                    "DELETE FROM segment_members WHERE workspace = ? AND customer_id = ? AND segment = ?",
                    [workspace, customer_id, segment],
                )
        for workspace, looked_at, withdrawn in consent:
            if looked_at:
                marks = ", ".join("?" * len(looked_at))
                connection.execute(
                    f"DELETE FROM consent_withdrawn WHERE workspace = ? AND customer_id IN ({marks})",
                    [workspace, *looked_at],
                )
            for customer_id in withdrawn:
                connection.execute("INSERT INTO consent_withdrawn VALUES (?, ?)", [workspace, customer_id])
        connection.execute("UPDATE feed SET seq = ? WHERE id = 1", [seq])
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


def _arrow_type(kind: str) -> Any:
    import pyarrow as pa

    return {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "DOUBLE": pa.float64(), "TIMESTAMP": pa.timestamp("ms")}[kind]


class _ArrowTypes(dict[str, Any]):
    def __missing__(self, kind: str) -> Any:
        value = _arrow_type(kind)
        self[kind] = value
        return value


_ARROW_TYPES: Final = _ArrowTypes()


def status(connection: Any, data_dir: Path) -> dict[str, Any]:
    """How far the store is fed, and how big it is."""
    position, _, _ = feed_position(connection)
    (events,) = connection.execute("SELECT count(*) FROM events").fetchone()
    path = analytics_path(data_dir)
    size = sum(p.stat().st_size for p in (path, path.with_name(path.name + ".wal")) if p.exists())
    return {"fed_to": int(position), "events": int(events), "size_bytes": size}
