"""The event log and quarantine on SQLite (WAL), written through one group-commit
writer (a child process by default, see ``writer.py``) and read through a small
pool of read-only connections."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import msgspec

from polku.adapters.sqlite.dedupe import Deduplicator
from polku.adapters.sqlite.schema import DATABASE_FILE, Synchronous, connect, open_database
from polku.adapters.sqlite.transaction import Append, Outcome, Resolve, Transaction, raise_for
from polku.adapters.sqlite.writer import CommitStats, ThreadWriter, Writer
from polku.adapters.sqlite.writer_process import ProcessWriter
from polku.core.errors import NotFound
from polku.core.events import Event, time_millis
from polku.ports import (
    AppendBatch,
    AppendResult,
    EventPage,
    EventQuery,
    QuarantineEntry,
    QuarantineStatus,
    StoredEvent,
)

T = TypeVar("T")
WriterKind = Literal["process", "thread"]

QUARANTINE_COLUMNS: Final = "id, workspace, source, received_ms, code, reason, body, status, resolved_ms"

_encode = msgspec.json.Encoder().encode
_decode_event = msgspec.json.Decoder(Event).decode


def event_row(workspace: str, event: Event, received_ms: int | None = None) -> tuple[Any, ...]:
    """The ``events`` row of one event (``transaction.EVENT_COLUMNS`` values);
    ``received_ms`` is ``event.received_at`` in milliseconds, if known."""
    return (
        workspace,
        event.message_id,
        event.type,
        event.event if event.type == "track" else event.name,
        event.user_id,
        event.anonymous_id,
        event.channel,
        time_millis(event.timestamp),
        time_millis(event.received_at) if received_ms is None else received_ms,
        _encode(event),
    )


def _result(outcome: Outcome) -> AppendResult:
    raise_for(outcome)
    return AppendResult(accepted=outcome.accepted, duplicates=outcome.duplicates, quarantined=outcome.quarantined)


class SqliteEventLog:
    """``EventLog`` on ``<data_dir>/polku.db``. ``writer="process"`` commits in a child
    process (two cores: see ``writer_process.py``); ``"thread"`` on a thread of
    this process."""

    def __init__(
        self,
        data_dir: Path,
        *,
        synchronous: Synchronous = "FULL",
        max_pending_events: int = 200_000,
        on_commit: Callable[[CommitStats], None] = lambda stats: None,
        writer: WriterKind = "process",
    ) -> None:
        self.data_dir = data_dir
        self.synchronous: Synchronous = synchronous
        self.max_pending_events = max_pending_events
        self.on_commit = on_commit
        self.writer_kind: WriterKind = writer
        self._writer: Writer | None = None
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="polku-sqlite-reader")
        self._local = threading.local()
        self._reader_connections: list[sqlite3.Connection] = []

    async def start(self) -> None:
        connection = await asyncio.to_thread(open_database, self.data_dir, synchronous=self.synchronous)
        writer: Writer
        if self.writer_kind == "process":
            connection.close()
            writer = ProcessWriter(
                self.data_dir / DATABASE_FILE,
                synchronous=self.synchronous,
                max_pending=self.max_pending_events,
                on_commit=self.on_commit,
            )
        else:
            dedupe = Deduplicator()
            dedupe.load(connection)
            writer = ThreadWriter(
                connection, Transaction(dedupe), max_pending=self.max_pending_events, on_commit=self.on_commit
            )
        await writer.start()
        self._writer = writer

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer.stop()
            self._writer = None
        self._readers.shutdown(wait=True)
        for connection in self._reader_connections:
            connection.close()
        self._reader_connections.clear()

    def pending_events(self) -> int:
        return self._writer.pending if self._writer is not None else 0

    async def append(self, batch: AppendBatch) -> AppendResult:
        assert self._writer is not None, "start() the event log first"
        workspace = batch.workspace
        # Rows are encoded here, on the event loop: the writer only binds them. A
        # batch's events share one receive time (one text): it is parsed once.
        parameters: list[Any] = []
        extend = parameters.extend
        received_text, received_ms = "", 0
        for event in batch.events:
            if event.received_at != received_text:
                received_text, received_ms = event.received_at, time_millis(event.received_at)
            extend(event_row(workspace, event, received_ms))
        append = Append(
            workspace=workspace,
            message_ids=[event.message_id for event in batch.events],
            parameters=parameters,
            rejected=[
                (workspace, batch.source, batch.received_ms, rejection.code, rejection.reason, rejection.body)
                for rejection in batch.rejections
            ],
        )
        outcome = await self._writer.submit(append, max(1, len(batch.events) + len(batch.rejections)))
        return _result(outcome)

    async def resolve_quarantined(
        self, workspace: str, entry_id: int, *, event: Event | None, resolved_ms: int
    ) -> AppendResult:
        assert self._writer is not None, "start() the event log first"
        append = (
            Append(workspace=workspace, message_ids=[event.message_id], parameters=list(event_row(workspace, event)))
            if event is not None
            else None
        )
        outcome = await self._writer.submit(
            Resolve(workspace=workspace, entry_id=entry_id, resolved_ms=resolved_ms, append=append), 1
        )
        return _result(outcome)

    # -- reads --------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = connect(self.data_dir / DATABASE_FILE, synchronous=self.synchronous, readonly=True)
            self._local.connection = connection
            self._reader_connections.append(connection)
        return connection

    async def _read(self, function: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: function(self._reader()))

    async def query(self, query: EventQuery) -> EventPage:
        return await self._read(lambda connection: query_events(connection, query))

    async def quarantined(
        self, workspace: str, *, status: QuarantineStatus | None, after_id: int, limit: int
    ) -> list[QuarantineEntry]:
        def read(connection: sqlite3.Connection) -> list[QuarantineEntry]:
            sql = f"SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE workspace = ? AND id > ?"
            parameters: list[Any] = [workspace, after_id]
            if status is not None:
                sql += " AND status = ?"
                parameters.append(status)
            sql += " ORDER BY id LIMIT ?"
            parameters.append(limit)
            return [QuarantineEntry.from_row(row) for row in connection.execute(sql, parameters)]

        return await self._read(read)

    async def quarantine_entry(self, workspace: str, entry_id: int) -> QuarantineEntry:
        def read(connection: sqlite3.Connection) -> QuarantineEntry:
            row = connection.execute(
                f"SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE workspace = ? AND id = ?", (workspace, entry_id)
            ).fetchone()
            if row is None:
                raise NotFound(f"quarantine entry {entry_id} does not exist")
            return QuarantineEntry.from_row(row)

        return await self._read(read)


def query_events(connection: sqlite3.Connection, query: EventQuery) -> EventPage:
    """Events of one workspace in log order, filtered. Filters other than the cursor
    scan the log (no secondary index on the append path); per-customer timelines
    come from the processor's tables in a later release."""
    clauses = ["workspace = ?", "seq > ?"]
    parameters: list[Any] = [query.workspace, query.after_seq]
    if query.identifier is not None:
        clauses.append("(user_id = ? OR anonymous_id = ?)")
        parameters += [query.identifier, query.identifier]
    for column, value in (
        ("user_id", query.user_id),
        ("anonymous_id", query.anonymous_id),
        ("type", query.type),
        ("name", query.name),
        ("channel", query.channel),
    ):
        if value is not None:
            clauses.append(f"{column} = ?")
            parameters.append(value)
    if not query.include_internal and query.channel is None:
        clauses.append("channel != 'system'")
    if query.since_ms is not None:
        clauses.append("ts_ms >= ?")
        parameters.append(query.since_ms)
    if query.until_ms is not None:
        clauses.append("ts_ms < ?")
        parameters.append(query.until_ms)
    sql = f"SELECT seq, body FROM events WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT ?"
    parameters.append(query.limit + 1)
    rows = connection.execute(sql, parameters).fetchall()
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    events = [StoredEvent(seq=seq, workspace=query.workspace, event=_decode_event(body)) for seq, body in rows]
    return EventPage(events=events, next_cursor=events[-1].seq if more and events else None)
