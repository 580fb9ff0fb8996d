"""Erasing a person from the processor's state: finding their scope, deleting it,
and the records that remain (``erasures``, ``erased``); and the timeline rows of
expired events (retention) — one SQL for every state store (``polku.core.erasure``,
``polku.core.retention``; docs/privacy.md).

The statements use ``?`` placeholders and nothing SQLite-only, over tables that the
SQLite and PostgreSQL state schemas shape alike; each store passes an ``Execute``
that runs one statement in its transaction (PostgreSQL's turns ``?`` into ``%s``
and escapes the text, ``postgres.state_schema``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, Final

import msgspec

from polku.core.erasure import REDACTED, STAGES, ErasureReceipt, ErasureScope, identifier_values, keep_out, receipt
from polku.core.retention import Retention
from polku.state import MergeRecord

Execute = Callable[[str, Sequence[Any]], Any]
"""Runs one statement; returns a cursor (``fetchall``, ``rowcount``)."""
CHUNK: Final = 500
MAX_MERGED_IDS: Final = 10_000
_encode = msgspec.json.Encoder().encode
_decode_scope = msgspec.json.Decoder(ErasureScope).decode
_decode_change = msgspec.msgpack.Decoder(MergeRecord).decode
_encode_change = msgspec.msgpack.Encoder().encode
ERASED_ID: Final = "c_erased"
"""Stands for an erased person in an identity change that involved others too."""

SQLITE_TABLES: Final = """
    CREATE TABLE erasures (
        workspace TEXT NOT NULL, id TEXT NOT NULL, requested_ms INTEGER NOT NULL,
        state_ms INTEGER NOT NULL, log_ms INTEGER, analytics_ms INTEGER,
        customers INTEGER NOT NULL, suppressed INTEGER NOT NULL, removed TEXT NOT NULL, scope BLOB,
        analytics_by TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (workspace, id)
    ) WITHOUT ROWID;
    CREATE TABLE erased (
        workspace TEXT NOT NULL, hash TEXT NOT NULL, kind TEXT NOT NULL, until_seq INTEGER NOT NULL,
        PRIMARY KEY (workspace, hash)
    ) WITHOUT ROWID;
    CREATE TABLE consent_withdrawn (
        workspace TEXT NOT NULL, customer_id TEXT NOT NULL,
        PRIMARY KEY (workspace, customer_id)
    ) WITHOUT ROWID;
"""
POSTGRES_TABLES: Final = """
    CREATE TABLE erasures (
        workspace text COLLATE "C" NOT NULL, id text COLLATE "C" NOT NULL, requested_ms bigint NOT NULL,
        state_ms bigint NOT NULL, log_ms bigint, analytics_ms bigint,
        customers integer NOT NULL, suppressed integer NOT NULL, removed text NOT NULL, scope bytea,
        analytics_by text NOT NULL DEFAULT '',
        PRIMARY KEY (workspace, id)
    );
    CREATE TABLE erased (
        workspace text COLLATE "C" NOT NULL, hash text COLLATE "C" NOT NULL, kind text NOT NULL,
        until_seq bigint NOT NULL,
        PRIMARY KEY (workspace, hash)
    );
    CREATE TABLE consent_withdrawn (
        workspace text COLLATE "C" NOT NULL, customer_id text COLLATE "C" NOT NULL,
        PRIMARY KEY (workspace, customer_id)
    );
"""
"""The tables of both state stores (SQLite's ``state_schema`` migration 5, the
PostgreSQL state track's migration 2). ``scope`` holds the person's identifiers
until every stage is done, then ``NULL``. ``consent_withdrawn`` (with them: not
released yet) is who withdrew analytics consent, kept by the processor for the
analyses that read the state (the Parquet files')."""


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" * len(values))


def _column(execute: Execute, sql: str, workspace: str, values: Sequence[Any]) -> list[Any]:
    """``sql`` (``… WHERE workspace = ? AND x IN ({})``) over ``values`` in chunks."""
    found: list[Any] = []
    for chunk in _chunks(values):
        found.extend(row[0] for row in execute(sql.format(_marks(chunk)), [workspace, *chunk]).fetchall())
    return found


def find_scope(
    execute: Execute,
    workspace: str,
    customer_id: str,
    *,
    erasure: str,
    requested_ms: int,
    marker_seq: int,
    suppress: bool,
) -> ErasureScope:
    """Everything the state holds of ``customer_id`` (the live id) and the ids merged
    into it: read in the store's committed state (the processor commits what it held
    before it asks)."""
    ids = [customer_id]
    frontier = [customer_id]
    while frontier and len(ids) < MAX_MERGED_IDS:
        older = _column(
            execute, "SELECT old_id FROM redirects WHERE workspace = ? AND new_id IN ({})", workspace, frontier
        )
        frontier = [old for old in dict.fromkeys(older) if old not in ids]
        ids.extend(frontier)
    identifiers = sorted(
        set(
            _column(
                execute,
                "SELECT identifier FROM identifiers WHERE workspace = ? AND customer_id IN ({})",
                workspace,
                ids,
            )
        )
    )
    seqs = sorted(
        set(_column(execute, "SELECT seq FROM timeline WHERE workspace = ? AND customer_id IN ({})", workspace, ids))
    )
    invitations = sorted(
        _column(
            execute, "SELECT id FROM survey_invitations WHERE workspace = ? AND customer_id IN ({})", workspace, ids
        )
    )
    named = set(ids)
    changes: list[int] = []
    shared: list[int] = []
    for row_id, body in execute("SELECT id, body FROM identity_changes WHERE workspace = ?", [workspace]).fetchall():
        involved = _change_ids(bytes(body))
        if involved & named:
            # A change that involved someone else too stays theirs, without this person.
            (changes if involved <= named else shared).append(int(row_id))
    outbox = [
        int(row_id)
        for row_id, body in execute("SELECT id, body FROM log_outbox WHERE workspace = ?", [workspace]).fetchall()
        if any(found.encode() in bytes(body) for found in ids)
    ]
    return ErasureScope(
        erasure=erasure,
        workspace=workspace,
        requested_ms=requested_ms,
        marker_seq=marker_seq,
        customer_ids=ids,
        identifiers=identifiers,
        seqs=seqs,
        invitations=invitations,
        identity_changes=changes,
        shared_changes=shared,
        outbox=outbox,
        suppress=suppress,
    )


def encode_scope(scope: ErasureScope) -> bytes:
    """The scope as ``erasures.scope`` holds it."""
    return _encode(scope)


def _change_ids(body: bytes) -> set[str]:
    record = _decode_change(body)
    return {record.survivor, *record.absorbed}


def _deletions(scope: ErasureScope) -> Iterator[tuple[str, str, list[Any]]]:
    """(table, column, values): every row whose column holds one of the values."""
    ids, identifiers = scope.customer_ids, scope.identifiers
    yield "identifiers", "identifier", identifiers
    yield "identifiers", "customer_id", ids
    yield "profiles", "customer_id", ids
    yield "redirects", "old_id", ids
    yield "redirects", "new_id", ids
    yield "timeline", "customer_id", ids
    yield "account_members", "customer_id", ids
    yield "identity_refusals", "identifier", identifiers
    yield "identity_refusals", "target", [*identifiers, *ids]
    yield "identity_changes", "id", scope.identity_changes
    yield "timers", "customer_id", ids
    yield "log_outbox", "id", scope.outbox
    yield "processing_failures", "seq", scope.seqs
    yield "journey_states", "holder", ids
    yield "journey_transitions", "customer_id", ids
    yield "messages", "customer_id", ids
    yield "survey_invitations", "customer_id", ids
    yield "feedback", "customer_id", ids
    yield "consent_withdrawn", "customer_id", ids


def erase_state(execute: Execute, scope: ErasureScope, now_ms: int) -> dict[str, int]:
    """Delete everything the scope names, and record the erasure (its scope kept
    until the other stages are done) and the hashes that keep the person out: their
    customer ids always (late events about them are dropped), their identifiers
    when asked to suppress. In the caller's transaction. Returns rows removed per
    table."""
    workspace = scope.workspace
    removed: dict[str, int] = {}
    # The links that name an identifier of the person, and every member row of them.
    link_sets = _column(
        execute,
        "SELECT DISTINCT set_hash FROM link_members WHERE workspace = ? AND identifier IN ({})",
        workspace,
        scope.identifiers,
    )
    for table in ("links", "link_members"):
        removed[table] = _delete(execute, table, "set_hash", workspace, link_sets)
    for table, column, values in _deletions(scope):
        removed[table] = removed.get(table, 0) + _delete(execute, table, column, workspace, values)
    named = set(scope.customer_ids)
    for row_id in scope.shared_changes:
        row = execute("SELECT body FROM identity_changes WHERE id = ?", [row_id]).fetchone()
        if row is not None:
            record = _decode_change(bytes(row[0]))
            record.survivor = ERASED_ID if record.survivor in named else record.survivor
            record.absorbed = [ERASED_ID if found in named else found for found in record.absorbed]
            for value in [*scope.customer_ids, *identifier_values(scope.identifiers)]:
                record.reason = record.reason.replace(value, REDACTED)
            execute("UPDATE identity_changes SET body = ? WHERE id = ?", [_encode_change(record), row_id])
            removed["identity_changes"] = removed.get("identity_changes", 0) + 1
    for row in erased_rows(scope):
        execute(
            "INSERT INTO erased (workspace, hash, kind, until_seq) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (workspace, hash) DO UPDATE SET kind = excluded.kind, until_seq = CASE "
            "WHEN excluded.until_seq > erased.until_seq THEN excluded.until_seq ELSE erased.until_seq END",
            row,
        )
    counts = {f"state.{table}": count for table, count in removed.items() if count}
    execute(
        "INSERT INTO erasures (workspace, id, requested_ms, state_ms, customers, suppressed, removed, scope) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (workspace, id) DO NOTHING",
        [
            workspace,
            scope.erasure,
            scope.requested_ms,
            now_ms,
            len(scope.customer_ids),
            len(scope.identifiers) if scope.suppress else 0,
            _encode(counts).decode(),
            _encode(scope),
        ],
    )
    return removed


def _delete(execute: Execute, table: str, column: str, workspace: str, values: Sequence[Any]) -> int:
    count = 0
    for chunk in _chunks(list(values)):
        cursor = execute(
            f"DELETE FROM {table} WHERE workspace = ? AND {column} IN ({_marks(chunk)})", [workspace, *chunk]
        )
        count += max(cursor.rowcount, 0)
    return count


def mark_stage(
    execute: Execute, workspace: str, erasure: str, stage: str, removed: dict[str, int], now_ms: int
) -> None:
    """A stage done: its counts join the receipt's; once every stage is, the scope
    (the person's identifiers) is wiped. ``stage`` is one of ``log`` or ``analytics``."""
    if stage not in ("log", "analytics"):
        raise ValueError(f"no erasure stage {stage!r}")
    row = execute("SELECT removed FROM erasures WHERE workspace = ? AND id = ?", [workspace, erasure]).fetchone()
    if row is None:
        return
    counts = msgspec.json.decode(row[0]) | {f"{stage}.{table}": count for table, count in removed.items() if count}
    execute(
        f"UPDATE erasures SET {stage}_ms = ?, removed = ? WHERE workspace = ? AND id = ?",
        [now_ms, _encode(dict(sorted(counts.items()))).decode(), workspace, erasure],
    )
    execute(
        "UPDATE erasures SET scope = NULL WHERE workspace = ? AND id = ? "
        "AND log_ms IS NOT NULL AND analytics_ms IS NOT NULL",
        [workspace, erasure],
    )


def pending(execute: Execute, stage: str, consumer: str | None = None) -> list[ErasureScope]:
    """The scopes whose ``stage`` is not done, oldest first (the analytics stage
    waits for the log's: the feeder would otherwise copy again what the log held);
    with ``consumer``, the analytics stage's scopes that consumer has not done yet
    (the scale-out may have several Parquet folders, each its own consumer)."""
    if stage == "log":
        where = "log_ms IS NULL"
    elif stage == "analytics":
        where = "log_ms IS NOT NULL AND analytics_ms IS NULL"
    else:
        raise ValueError(f"no erasure stage {stage!r}")
    rows = execute(
        f"SELECT scope, analytics_by FROM erasures WHERE {where} AND scope IS NOT NULL ORDER BY state_ms, id", []
    ).fetchall()
    return [_decode_scope(bytes(scope)) for scope, by in rows if consumer is None or consumer not in str(by).split()]


def mark_consumer(
    execute: Execute,
    workspace: str,
    erasure: str,
    consumer: str,
    removed: dict[str, int],
    now_ms: int,
    consumers: Collection[str],
) -> None:
    """One analytics consumer has done its part; the analytics stage is done (and
    the scope wiped) once every one of ``consumers`` has."""
    row = execute(
        "SELECT removed, analytics_by FROM erasures WHERE workspace = ? AND id = ?", [workspace, erasure]
    ).fetchone()
    if row is None:
        return
    done = {*str(row[1]).split(), consumer}
    counts = msgspec.json.decode(row[0])
    for table, count in removed.items():
        if count:
            counts[f"analytics.{table}"] = counts.get(f"analytics.{table}", 0) + count
    execute(
        "UPDATE erasures SET analytics_by = ?, removed = ? WHERE workspace = ? AND id = ?",
        [" ".join(sorted(done)), _encode(dict(sorted(counts.items()))).decode(), workspace, erasure],
    )
    if set(consumers) <= done:
        mark_stage(execute, workspace, erasure, "analytics", {}, now_ms)


_RECEIPT_COLUMNS: Final = "workspace, id, requested_ms, state_ms, log_ms, analytics_ms, customers, suppressed, removed"


def receipts(execute: Execute, workspace: str, *, erasure: str | None = None, limit: int = 100) -> list[ErasureReceipt]:
    """The workspace's erasures, newest first (or the one named)."""
    if erasure is not None:
        rows = execute(
            f"SELECT {_RECEIPT_COLUMNS} FROM erasures WHERE workspace = ? AND id = ?", [workspace, erasure]
        ).fetchall()
    else:
        rows = execute(
            f"SELECT {_RECEIPT_COLUMNS} FROM erasures WHERE workspace = ? ORDER BY state_ms DESC, id DESC LIMIT ?",
            [workspace, limit],
        ).fetchall()
    return [_receipt(row) for row in rows]


def _receipt(row: Sequence[Any]) -> ErasureReceipt:
    workspace, erasure, requested_ms, state_ms, log_ms, analytics_ms, customers, suppressed, removed = row
    return receipt(
        erasure=str(erasure),
        workspace=str(workspace),
        requested_ms=int(requested_ms),
        stages=dict(zip(STAGES, (state_ms, log_ms, analytics_ms), strict=True)),
        removed=msgspec.json.decode(removed),
        customers=int(customers),
        suppressed=int(suppressed),
    )


def erased_rows(scope: ErasureScope) -> list[tuple[str, str, str, int]]:
    """(workspace, hash, kind, until_seq) that keep an erased person out
    (``polku.core.erasure.keep_out``)."""
    return [(scope.workspace, found, kind, until) for found, kind, until in keep_out(scope)]


def erased_hashes(execute: Execute) -> dict[tuple[str, str], int]:
    """(workspace, hash) → the log position before which events naming it are an
    erased person's (``FOREVER`` for erased customer ids and suppressed identifiers)."""
    rows = execute("SELECT workspace, hash, until_seq FROM erased", []).fetchall()
    return {(str(w), str(h)): int(until) for w, h, until in rows}


def expire_timeline(execute: Execute, workspace: str, retention: Retention, now_ms: int) -> int:
    """Retention (``polku.core.retention``): the timeline rows of expired events."""
    where = retention.expired_where(now_ms, lambda column: column)
    if where is None:
        return 0
    condition, parameters = where
    cursor = execute(f"DELETE FROM timeline WHERE workspace = ? AND ({condition})", [workspace, *parameters])
    return int(max(cursor.rowcount, 0))
