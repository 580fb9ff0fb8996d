"""The live overview of a workspace (``GET /v1/overview``, ``polku overview``, the
dashboard's first page): events per second by channel, what waits to be processed,
what was refused, what could not be delivered.

Reads only, and cheap enough to poll every two seconds: the event rate reads the
log's tail (found by a binary search on ``seq``, since ``received_ms`` grows with
it), never the whole log; counts of people come from indexes.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, Final

from polku.adapters.sqlite.deliveries import DELIVERIES_FILE
from polku.adapters.sqlite.schema import connect
from polku.core.events import format_millis

RATE_WINDOW_MS: Final = 60_000
"""Events per second are the average over the last minute."""
SERIES_WINDOW_MS: Final = 120_000
SERIES_BUCKET_MS: Final = 5_000
DAY_MS: Final = 86_400_000


def first_seq_since(log: sqlite3.Connection, since_ms: int) -> int | None:
    """The first ``seq`` received at or after ``since_ms`` (``None``: none was).
    Binary search over ``seq``: ``received_ms`` does not decrease along the log."""
    # Two queries: SQLite answers min() or max() of the key from the b-tree's ends,
    # but scans the whole table for both in one SELECT.
    first = log.execute("SELECT min(seq) FROM events").fetchone()
    if first is None or first[0] is None:
        return None
    low = int(first[0])
    high = int(log.execute("SELECT max(seq) FROM events").fetchone()[0])
    last = log.execute("SELECT received_ms FROM events WHERE seq = ?", (high,)).fetchone()
    if last is None or int(last[0]) < since_ms:
        return None
    while low < high:
        middle = (low + high) // 2
        row = log.execute(
            "SELECT seq, received_ms FROM events WHERE seq >= ? ORDER BY seq LIMIT 1", (middle,)
        ).fetchone()
        if int(row[1]) >= since_ms:
            high = min(middle, int(row[0]))
        else:
            low = int(row[0]) + 1
    return low


def event_rate(log: sqlite3.Connection, workspace: str, now_ms: int) -> dict[str, Any]:
    """Events received in the last minute by channel (per second), and the last two
    minutes in 5-second buckets by channel (for the live chart)."""
    start = first_seq_since(log, now_ms - SERIES_WINDOW_MS)
    first_bucket = (now_ms - SERIES_WINDOW_MS) // SERIES_BUCKET_MS
    buckets = [first_bucket + index for index in range(SERIES_WINDOW_MS // SERIES_BUCKET_MS + 1)]
    by_channel: dict[str, int] = {}
    series: dict[str, list[int]] = {}
    if start is not None:
        rows = log.execute(
            "SELECT channel, received_ms / ? AS bucket, count(*), sum(received_ms >= ?) FROM events "
            "WHERE seq >= ? AND workspace = ? AND received_ms >= ? GROUP BY channel, bucket",
            (SERIES_BUCKET_MS, now_ms - RATE_WINDOW_MS, start, workspace, now_ms - SERIES_WINDOW_MS),
        ).fetchall()
        position = {bucket: index for index, bucket in enumerate(buckets)}
        for channel, bucket, count, recent in rows:
            by_channel[channel] = by_channel.get(channel, 0) + int(recent or 0)
            line = series.setdefault(channel, [0] * len(buckets))
            index = position.get(int(bucket))
            if index is not None:
                line[index] += int(count)
    seconds = RATE_WINDOW_MS / 1000
    return {
        "window_s": int(seconds),
        "events_per_s": round(sum(by_channel.values()) / seconds, 2),
        "by_channel": {
            channel: round(count / seconds, 2)
            for channel, count in sorted(by_channel.items(), key=lambda item: (-item[1], item[0]))
        },
        "series": {
            "bucket_s": SERIES_BUCKET_MS // 1000,
            "x": [format_millis(bucket * SERIES_BUCKET_MS) for bucket in buckets],
            "y": {channel: series[channel] for channel in sorted(series)},
        },
    }


def quarantine_open(log: sqlite3.Connection, workspace: str) -> int:
    row = log.execute(
        "SELECT count(*) FROM quarantine WHERE workspace = ? AND status = 'open'", (workspace,)
    ).fetchone()
    return int(row[0])


def delivery_counts(data_dir: Path, workspace: str, now_ms: int) -> dict[str, int]:
    """Deliveries waiting, and sent or given up in the last 24 hours."""
    counts = {"pending": 0, "sent_24h": 0, "failed_24h": 0}
    path = data_dir / DELIVERIES_FILE
    if not path.exists():
        return counts
    connection = connect(path, readonly=True)
    try:
        for status, recent, total in connection.execute(
            "SELECT status, sum(updated_ms >= ?), count(*) FROM deliveries WHERE workspace = ? GROUP BY status",
            (now_ms - DAY_MS, workspace),
        ):
            if status == "pending":
                counts["pending"] = int(total)
            elif status == "sent":
                counts["sent_24h"] = int(recent or 0)
            elif status == "dead":
                counts["failed_24h"] = int(recent or 0)
    except sqlite3.OperationalError as error:
        if "no such table" not in str(error):  # the dispatcher is creating the file
            raise
    finally:
        connection.close()
    return counts


def people(state: sqlite3.Connection, workspace: str) -> dict[str, int]:
    """Customers, accounts, and customers who belong to at least one account."""
    customers = state.execute("SELECT count(*) FROM profiles WHERE workspace = ?", (workspace,)).fetchone()[0]
    accounts = state.execute("SELECT count(*) FROM accounts WHERE workspace = ?", (workspace,)).fetchone()[0]
    members = state.execute(
        "SELECT count(DISTINCT customer_id) FROM account_members WHERE workspace = ?", (workspace,)
    ).fetchone()[0]
    return {
        "customers": int(customers),
        "accounts": int(accounts),
        "account_members": int(members),
        "consumers": max(0, int(customers) - int(members)),
    }


def overview(
    log: sqlite3.Connection,
    state: sqlite3.Connection,
    data_dir: Path,
    workspace: str,
    now_ms: int,
    *,
    checkpoint: int,
    log_end: int,
    people_counts: dict[str, int] | None = None,
) -> dict[str, Any]:
    return {
        "at": format_millis(now_ms),
        "rate": event_rate(log, workspace, now_ms),
        "processing": {"checkpoint": checkpoint, "log_end": log_end, "lag": max(0, log_end - checkpoint)},
        "quarantine": {"open": quarantine_open(log, workspace)},
        "deliveries": delivery_counts(data_dir, workspace, now_ms),
        "people": people_counts if people_counts is not None else people(state, workspace),
    }
