"""The processor's state on PostgreSQL: ``PostgresStateStore``, for the scale-out
deployment, where several workers share one database (docs/postgresql.md, "The state
store").

The same records as ``SqliteStateStore``, row for row and byte for byte: the rows
come from ``polku.adapters.state_records``; the tables, how their text holds U+0000
and the statements of a commit from ``state_schema``. Synchronous, like the
processor: psycopg 3 with a ``ConnectionPool`` of autocommit connections, so a read
is one statement and ``commit`` opens the batch's one transaction.

A commit sends its statements in one pipeline, one per table, each row of a column
in an array that ``unnest`` turns back into rows: a batch of a thousand events costs
a few round trips and a few dozen statements, not one of each per row. Where two rows
of one statement would meet the same key, the rows are merged first (an upsert may
change a row once per statement).

Failures of the server or of a connection (``transient``: lost connections, pool
timeouts, serialization failures, deadlocks) are raised as ``StoreUnavailable``,
which the processor treats as the store's failure, not the event's: it stops and
starts again from its checkpoint. An error PostgreSQL raises about a value (a number
out of range, a key too large for its index) is the event's.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Collection, Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Final, LiteralString, TypeVar

import psycopg
from psycopg.abc import Params
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from polku.adapters import state_erasure
from polku.adapters.nats.routing import partition
from polku.adapters.postgres import state_schema
from polku.adapters.postgres.schema import DEFAULT_SCHEMA, check_schema, check_url, status
from polku.adapters.postgres.state_schema import batch_statements, escape, unescape
from polku.adapters.state_records import (
    DERIVED_TABLES,
    Row,
    decode_account,
    decode_change,
    decode_journey_state,
    decode_link,
    decode_profile,
    decode_refusal,
)
from polku.core.erasure import ErasureReceipt, ErasureScope
from polku.core.errors import ConfigError, PolkuError, StoreUnavailable
from polku.core.identity import LinkEvent
from polku.core.journey_state import JourneyState
from polku.core.profile import Profile
from polku.core.retention import Retention
from polku.state import Account, IdentifierRecord, MergeRecord, RefusalRecord, StateChanges, TimelineRow

T = TypeVar("T")
CommitHook = Callable[[psycopg.Connection[Any], StateChanges], None]
SECRETS: Final = ("salt", "survey_secret", "identity_epoch")
"""Made once per schema (``meta``), so every process sharing it gets the same: the
salt of customer ids, the key that signs survey links, and the identity epoch."""
LAST: Final = (1 << 63) - 1
"""A timeline cursor after every row."""


def transient(error: psycopg.Error) -> bool:
    """Whether ``error`` is the server's or the connection's failure, which trying
    again can cure: psycopg's ``OperationalError`` (connections, pool timeouts,
    serialization failures, deadlocks, cancelled statements, a server short of
    memory or disk) and ``InterfaceError``, and a server that turned read-only (a
    failover). Not class 54, "program limit exceeded" (a value too large for an
    index, an array too long): the same data fails again."""
    if isinstance(error, psycopg.errors.ReadOnlySqlTransaction):
        return True
    limit = (error.sqlstate or "").startswith("54")
    return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError) and not limit


@contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except psycopg.Error as error:
        if not transient(error):
            raise
        reason = " ".join(str(error).split()) or type(error).__name__
        raise StoreUnavailable(f"the state store failed: {reason}") from error


def _escaped(value: Any) -> Any:
    """A parameter with its strings (a list's too) escaped for a ``text`` column."""
    if type(value) is str:
        return escape(value)
    if type(value) is list:
        return [escape(item) if type(item) is str else item for item in value]
    return value


def _parameters(parameters: Params) -> Params:
    if isinstance(parameters, Mapping):
        return {name: _escaped(value) for name, value in parameters.items()}
    return [_escaped(value) for value in parameters]


def _unescaped(row: TupleRow) -> TupleRow:
    return tuple(unescape(value) if type(value) is str else value for value in row)


def _columns(rows: Sequence[Row]) -> list[list[Any]]:
    """Rows as one list per column, the arrays a statement ``unnest``s, their strings
    escaped."""
    return [_escaped(list(column)) for column in zip(*rows, strict=True)]


def _run(work: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine of the async migration runner from synchronous code: in a
    thread of its own, so it works inside a running event loop too."""
    with ThreadPoolExecutor(1, thread_name_prefix="polku-state-migrations") as executor:
        return executor.submit(asyncio.run, work).result()


def _check_current(url: str, schema: str) -> None:
    """``ConfigError`` unless the state's tables are at exactly the code's version."""
    found = _run(status(url, schema=schema, migrations=state_schema.MIGRATIONS, table=state_schema.TRACK_TABLE))
    if found.version != found.latest:
        raise ConfigError(
            f"the state's tables in schema {schema!r} are at version {found.version}, this polku's are at "
            f"{found.latest}: run `polku db migrate --store …` with the polku that will use them",
            field="store",
        )


class PostgresStateStore:
    """``StateStore`` (and the reads of ``StateReads``) on PostgreSQL.

    ``migrate`` applies the state's pending migrations on open; without it, a schema
    that is not at this polku's version is refused (``ConfigError``). ``scope`` names
    this processor's checkpoint (one row of ``checkpoints``); ``None`` keeps none here
    (the workers keep theirs per partition, in their ``commit_hook``: one row that
    every worker wrote would serialize their commits and mean nothing). ``timer_partitions`` is
    the stream's partition count: each timer is stored with its partition, and when
    ``owned_partitions`` is given, ``due_timers`` (and ``journey_holders_due``) return
    only the timers of the partitions it names at the moment of the call, and
    ``on_timers`` learns the partitions of the timers each call returned (to fence them). ``commit_hook(connection, changes)`` runs in the batch's
    transaction after its writes and before COMMIT; if it raises, the transaction
    rolls back and its exception is raised (a connection failure as
    ``StoreUnavailable``, like every other in the transaction)."""

    def __init__(
        self,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        migrate: bool = True,
        scope: str | None = "processor",
        timer_partitions: int = 1,
        owned_partitions: Callable[[], Collection[int]] | None = None,
        commit_hook: CommitHook | None = None,
        on_timers: Callable[[set[int]], None] | None = None,
    ) -> None:
        if timer_partitions < 1:
            raise ValueError(f"timer_partitions must be at least 1, not {timer_partitions}")
        self.url = check_url(url)
        self.schema = check_schema(schema)
        self.scope = scope
        self.timer_partitions = timer_partitions
        self.owned_partitions = owned_partitions
        self.commit_hook = commit_hook
        self.on_timers = on_timers
        if migrate:
            _run(state_schema.migrate(self.url, schema=self.schema))
        else:
            _check_current(self.url, self.schema)
        self.pool: ConnectionPool[psycopg.Connection[TupleRow]] = ConnectionPool(
            self.url,
            min_size=1,
            max_size=4,
            kwargs={"autocommit": True, "client_encoding": "utf8", "options": f"-c search_path={self.schema}"},
            name=f"polku-state-{self.schema}",
            # After a restart of PostgreSQL, dead connections are replaced as they
            # leave the pool instead of failing one read or commit each.
            check=ConnectionPool.check_connection,
            open=False,
        )
        try:
            with _unavailable():
                self.pool.open(wait=True, timeout=30)
            self._make_secrets()
        except BaseException:
            self.pool.close()
            raise

    def close(self) -> None:
        self.pool.close()

    # -- plumbing -------------------------------------------------------------------

    def _execute(self, query: LiteralString, parameters: Params) -> None:
        with _unavailable(), self.pool.connection() as connection:
            connection.execute(query, _parameters(parameters))

    def _all(self, query: LiteralString, parameters: Params = ()) -> list[TupleRow]:
        """The rows of a read (one statement, so no transaction), strings unescaped."""
        with _unavailable(), self.pool.connection() as connection:
            rows = connection.execute(query, _parameters(parameters)).fetchall()
        return [_unescaped(row) for row in rows]

    def _one(self, query: LiteralString, parameters: Params) -> TupleRow | None:
        rows = self._all(query, parameters)
        return rows[0] if rows else None

    def _make_secrets(self) -> None:
        """Insert each secret unless one exists: of processes opening a new schema at
        once, the first insert wins and every process reads it."""
        self._execute(
            "INSERT INTO meta (key, value) SELECT * FROM unnest(%s::text[], %s::bytea[]) ON CONFLICT DO NOTHING",
            (list(SECRETS), [os.urandom(32) for _ in SECRETS]),
        )

    def _meta(self, key: str) -> bytes:
        row = self._one("SELECT value FROM meta WHERE key = %s", (key,))
        if row is None:
            raise PolkuError(f"the state store's {key} is missing from {self.schema}.meta")
        return bytes(row[0])

    # -- the installation's secrets and the checkpoint ---------------------------------

    def salt(self) -> bytes:
        return self._meta("salt")

    def survey_secret(self) -> bytes:
        """The key that signs survey links (made with the store)."""
        return self._meta("survey_secret")

    def identity_epoch(self) -> str:
        """Changes when the state is rebuilt (``identity_changes`` ids start over)."""
        return self._meta("identity_epoch").hex()

    def checkpoint(self) -> int:
        if self.scope is None:  # kept per partition, by the commit hook
            return 0
        row = self._one("SELECT seq FROM checkpoints WHERE scope = %s", (self.scope,))
        return 0 if row is None else int(row[0])

    # -- identity and profiles ------------------------------------------------------

    def identifier(self, workspace: str, identifier: str) -> IdentifierRecord | None:
        row = self._one(
            "SELECT customer_id, first_ts, first_mid FROM identifiers WHERE workspace = %s AND identifier = %s",
            (workspace, identifier),
        )
        return None if row is None else IdentifierRecord(row[0], (row[1], row[2]))

    def owners(self, workspace: str, identifiers: Sequence[str]) -> dict[str, IdentifierRecord]:
        """``identifier`` for many at once (those without an owner are left out)."""
        rows = self._all(
            "SELECT identifier, customer_id, first_ts, first_mid FROM identifiers "
            "WHERE workspace = %s AND identifier = ANY(%s::text[])",
            (workspace, list(identifiers)),
        )
        return {identifier: IdentifierRecord(customer_id, (ts, mid)) for identifier, customer_id, ts, mid in rows}

    def profile(self, workspace: str, customer_id: str) -> Profile | None:
        row = self._one("SELECT body FROM profiles WHERE workspace = %s AND customer_id = %s", (workspace, customer_id))
        return None if row is None else decode_profile(row[0])

    def profiles(self, workspace: str, customer_ids: Sequence[str]) -> dict[str, Profile]:
        rows = self._all(
            "SELECT customer_id, body FROM profiles WHERE workspace = %s AND customer_id = ANY(%s::text[])",
            (workspace, list(customer_ids)),
        )
        return {customer_id: decode_profile(body) for customer_id, body in rows}

    def count_customers(self, workspace: str) -> int:
        row = self._one("SELECT count(*) FROM profiles WHERE workspace = %s", (workspace,))
        return 0 if row is None else int(row[0])

    def redirect(self, workspace: str, customer_id: str) -> str:
        """Follow merges: the live id a (possibly retired) customer id now has. An id
        with a profile is live, whatever redirect it may once have had."""
        for _ in range(64):
            step = self.redirect_step(workspace, customer_id)
            if step is None:
                return customer_id
            customer_id = step
        return customer_id

    def redirect_step(self, workspace: str, customer_id: str) -> str | None:
        """The id a retired customer id was merged into; ``None`` for a live (or
        unknown) one."""
        row = self._one(
            "SELECT EXISTS (SELECT 1 FROM profiles WHERE workspace = %(workspace)s AND customer_id = %(id)s), "
            "(SELECT new_id FROM redirects WHERE workspace = %(workspace)s AND old_id = %(id)s)",
            {"workspace": workspace, "id": customer_id},
        )
        assert row is not None
        live, new_id = row
        return None if live or new_id is None else str(new_id)

    def link_hashes(self, workspace: str, identifiers: Sequence[str], *, limit: int = 1 << 62) -> dict[str, list[str]]:
        """The links each identifier took part in (at most ``limit`` per query)."""
        found: dict[str, list[str]] = {}
        for identifier, set_hash in self._all(
            "SELECT identifier, set_hash FROM link_members WHERE workspace = %s AND identifier = ANY(%s::text[]) "
            "LIMIT %s",
            (workspace, list(identifiers), limit),
        ):
            found.setdefault(identifier, []).append(set_hash)
        return found

    def links(self, workspace: str, set_hashes: Sequence[str]) -> dict[str, LinkEvent]:
        rows = self._all(
            "SELECT set_hash, body FROM links WHERE workspace = %s AND set_hash = ANY(%s::text[])",
            (workspace, list(set_hashes)),
        )
        return {set_hash: decode_link(body) for set_hash, body in rows}

    def account(self, workspace: str, account_id: str) -> Account | None:
        row = self._one("SELECT body FROM accounts WHERE workspace = %s AND account_id = %s", (workspace, account_id))
        return None if row is None else decode_account(row[0])

    def accounts(self, workspace: str, account_ids: Sequence[str]) -> dict[str, Account]:
        rows = self._all(
            "SELECT account_id, body FROM accounts WHERE workspace = %s AND account_id = ANY(%s::text[])",
            (workspace, list(account_ids)),
        )
        return {account_id: decode_account(body) for account_id, body in rows}

    def account_members(self, workspace: str, account_id: str, *, limit: int = 10_000) -> list[str]:
        rows = self._all(
            "SELECT customer_id FROM account_members WHERE workspace = %s AND account_id = %s "
            "ORDER BY customer_id LIMIT %s",
            (workspace, account_id, limit),
        )
        return [row[0] for row in rows]

    def timeline(
        self, workspace: str, customer_id: str, *, before: tuple[int, int] | None = None, limit: int | None = None
    ) -> list[TimelineRow]:
        """Newest first; ``before`` is a (ts_ms, seq) cursor."""
        before_ts, before_seq = before or (LAST, LAST)
        rows = self._all(
            "SELECT ts_ms, seq, anchor, type, name, channel, internal FROM timeline "
            "WHERE workspace = %s AND customer_id = %s AND (ts_ms, seq) < (%s, %s) "
            "ORDER BY ts_ms DESC, seq DESC LIMIT %s",
            (workspace, customer_id, before_ts, before_seq, limit),
        )
        return [TimelineRow(*row) for row in rows]

    # -- identity audit, failures -----------------------------------------------------

    def refusals(self, workspace: str, *, after_id: int = 0, limit: int = 100) -> list[tuple[int, RefusalRecord]]:
        rows = self._all(
            "SELECT id, body FROM identity_refusals WHERE workspace = %s AND id > %s ORDER BY id LIMIT %s",
            (workspace, after_id, limit),
        )
        return [(entry_id, decode_refusal(body)) for entry_id, body in rows]

    def refusals_about(
        self, workspace: str, identifiers: Sequence[str], limit: int = 50
    ) -> list[tuple[int, RefusalRecord]]:
        """Refusals that involve any of these identifiers (a customer's), newest first."""
        rows = self._all(
            "SELECT id, body FROM identity_refusals WHERE workspace = %(workspace)s "
            "AND (target = ANY(%(identifiers)s::text[]) OR identifier = ANY(%(identifiers)s::text[])) "
            "ORDER BY id DESC LIMIT %(limit)s",
            {"workspace": workspace, "identifiers": list(identifiers), "limit": limit},
        )
        return [(entry_id, decode_refusal(body)) for entry_id, body in rows]

    def identity_changes(self, workspace: str, *, after_id: int = 0, limit: int = 100) -> list[tuple[int, MergeRecord]]:
        rows = self._all(
            "SELECT id, body FROM identity_changes WHERE workspace = %s AND id > %s ORDER BY id LIMIT %s",
            (workspace, after_id, limit),
        )
        return [(entry_id, decode_change(body)) for entry_id, body in rows]

    def failures(self, workspace: str, limit: int = 20) -> list[dict[str, Any]]:
        """The latest events the processor skipped because they failed alone."""
        rows = self._all(
            "SELECT seq, error FROM processing_failures WHERE workspace = %s ORDER BY id DESC LIMIT %s",
            (workspace, limit),
        )
        return [{"seq": seq, "error": error} for seq, error in rows]

    # -- timers, journeys, the log's outbox ----------------------------------------------

    def _owned(self) -> list[int] | None:
        return None if self.owned_partitions is None else sorted(self.owned_partitions())

    def due_timers(self, now_ms: int, limit: int) -> list[tuple[str, str, int]]:
        owned = self._owned()
        if owned is None:
            rows = self._all(
                "SELECT workspace, customer_id, due_ms FROM timers WHERE due_ms <= %s "
                "ORDER BY due_ms, workspace, customer_id LIMIT %s",
                (now_ms, limit),
            )
        else:
            rows = self._all(
                "SELECT workspace, customer_id, due_ms, part FROM timers WHERE part = ANY(%s::integer[]) "
                "AND due_ms <= %s ORDER BY due_ms, workspace, customer_id LIMIT %s",
                (owned, now_ms, limit),
            )
            if self.on_timers is not None:
                self.on_timers({int(row[3]) for row in rows})
        return [(row[0], row[1], row[2]) for row in rows]

    def journey_state(self, workspace: str, holder: str) -> JourneyState | None:
        row = self._one("SELECT body FROM journey_states WHERE workspace = %s AND holder = %s", (workspace, holder))
        return None if row is None else decode_journey_state(row[0])

    def journey_entries(self, workspace: str, journey_id: str) -> int:
        row = self._one(
            "SELECT coalesce(sum(count), 0) FROM journey_stats WHERE workspace = %s AND journey = %s "
            "AND metric IN ('entered', 'entered:holdout')",
            (workspace, journey_id),
        )
        return 0 if row is None else int(row[0])

    def journey_holders_due(self) -> list[tuple[str, str, int]]:
        """(workspace, holder, due) of every journey state with something due (of the
        owned partitions): a rebuild, which empties the timers, sets them again from
        these."""
        owned = self._owned()
        found = []
        for workspace, holder, body in self._all("SELECT workspace, holder, body FROM journey_states"):
            if owned is not None and partition(workspace, holder, self.timer_partitions) not in owned:
                continue
            due = decode_journey_state(body).next_due()
            if due:
                found.append((workspace, holder, due))
        return found

    def outbox(self, limit: int = 1000) -> list[tuple[int, str, bytes]]:
        rows = self._all("SELECT id, workspace, body FROM log_outbox ORDER BY id LIMIT %s", (limit,))
        return [(entry_id, workspace, bytes(body)) for entry_id, workspace, body in rows]

    def delete_outbox(self, ids: Sequence[int]) -> None:
        self._execute("DELETE FROM log_outbox WHERE id = ANY(%s::bigint[])", (list(ids),))

    # -- erasure (``adapters.state_erasure``) -------------------------------------------

    def erased(self) -> dict[tuple[str, str], int]:
        with _unavailable(), self.pool.connection() as connection:
            return state_erasure.erased_hashes(_QmarkCursor(connection.cursor()).execute)

    def erasure_scope(
        self, workspace: str, customer_id: str, *, erasure: str, requested_ms: int, marker_seq: int, suppress: bool
    ) -> ErasureScope:
        with _unavailable(), self.pool.connection() as connection, connection.transaction():
            # One snapshot: no commit of another worker half-seen.
            connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            return state_erasure.find_scope(
                _QmarkCursor(connection.cursor()).execute,
                workspace,
                customer_id,
                erasure=erasure,
                requested_ms=requested_ms,
                marker_seq=marker_seq,
                suppress=suppress,
            )

    def pending_erasures(self, stage: str, consumer: str | None = None) -> list[ErasureScope]:
        with _unavailable(), self.pool.connection() as connection:
            return state_erasure.pending(_QmarkCursor(connection.cursor()).execute, stage, consumer)

    def mark_erasure_consumer(
        self,
        workspace: str,
        erasure: str,
        consumer: str,
        removed: dict[str, int],
        now_ms: int,
        consumers: Collection[str],
    ) -> None:
        """One Parquet consumer's part of the analytics stage (``state_erasure.mark_consumer``)."""
        with _unavailable(), self.pool.connection() as connection, connection.transaction():
            execute = _QmarkCursor(connection.cursor()).execute
            state_erasure.mark_consumer(execute, workspace, erasure, consumer, removed, now_ms, consumers)

    def mark_erasure(self, workspace: str, erasure: str, stage: str, removed: dict[str, int], now_ms: int) -> None:
        with _unavailable(), self.pool.connection() as connection, connection.transaction():
            state_erasure.mark_stage(
                _QmarkCursor(connection.cursor()).execute, workspace, erasure, stage, removed, now_ms
            )

    def erasure_receipts(self, workspace: str, *, erasure: str | None = None, limit: int = 100) -> list[ErasureReceipt]:
        with _unavailable(), self.pool.connection() as connection:
            execute = _QmarkCursor(connection.cursor()).execute
            return state_erasure.receipts(execute, workspace, erasure=erasure, limit=limit)

    def expire_timeline(self, workspace: str, retention: Retention, now_ms: int) -> dict[str, int]:
        with _unavailable(), self.pool.connection() as connection, connection.transaction():
            execute = _QmarkCursor(connection.cursor()).execute
            return {"timeline": state_erasure.expire_timeline(execute, workspace, retention, now_ms)}

    def wipe_wal(self) -> None:
        """Deleted rows stay in their pages until vacuumed: autovacuum reclaims them
        (docs/privacy.md says so); nothing is waited for here."""

    # -- writes ----------------------------------------------------------------------

    def commit(self, changes: StateChanges) -> None:
        """Write one batch's changes and this scope's checkpoint in one transaction
        (then ``commit_hook``, before COMMIT). The arrays go in binary: no quoting of
        every element, as text arrays need."""
        with _unavailable(), self.pool.connection() as connection, connection.transaction():
            cursor = connection.cursor()
            with connection.pipeline():
                for query, rows in batch_statements(changes, self.timer_partitions):
                    cursor.execute(query, _columns(rows))
                if self.scope is not None:
                    cursor.execute(_SAVE_CHECKPOINT, _columns([(self.scope, changes.checkpoint)]))
            for scope in changes.erasures:
                state_erasure.erase_state(_QmarkCursor(cursor).execute, scope, scope.state_ms)
            if self.commit_hook is not None:
                self.commit_hook(connection, changes)

    def reset(self) -> None:
        """Forget every derived record and every scope's checkpoint (``polku identity
        rebuild``); the salt stays, so the rebuilt customers get the same ids, and the
        journey records stay (``state_records.DERIVED_TABLES``). Ids start over, as in
        SQLite, under a new identity epoch."""
        with _unavailable(), self.pool.connection() as connection, connection.transaction():
            connection.execute("TRUNCATE " + ", ".join(DERIVED_TABLES) + ", checkpoints RESTART IDENTITY")
            connection.execute("UPDATE meta SET value = %s WHERE key = 'identity_epoch'", (os.urandom(8),))


class _QmarkCursor:
    """``state_erasure``'s statements on a psycopg cursor: ``?`` placeholders, text
    escaped on the way in and out (``state_schema.escape``)."""

    def __init__(self, cursor: psycopg.Cursor[TupleRow]) -> None:
        self.cursor = cursor

    def execute(self, sql: str, parameters: Sequence[Any]) -> _QmarkCursor:
        self.cursor.execute(sql.replace("?", "%s"), _parameters(list(parameters)))
        return self

    def fetchall(self) -> list[TupleRow]:
        return [_unescaped(row) for row in self.cursor.fetchall()]

    def fetchone(self) -> TupleRow | None:
        row = self.cursor.fetchone()
        return None if row is None else _unescaped(row)

    @property
    def rowcount(self) -> int:
        return self.cursor.rowcount


_SAVE_CHECKPOINT: Final = (
    "INSERT INTO checkpoints (scope, seq) SELECT * FROM unnest(%b::text[], %b::bigint[]) "
    "ON CONFLICT (scope) DO UPDATE SET seq = excluded.seq"
)
