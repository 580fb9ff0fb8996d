"""``EventLog`` on NATS JetStream, with its index and quarantine in PostgreSQL
(docs/nats.md, docs/scale-out.md).

The stream is the log of record: ``append`` returns once JetStream has acknowledged
every event of the batch (stored to its file store). An event goes to the subject
of its partition (``routing.py``) under ``Nats-Msg-Id: <workspace>:<messageId>``, so
a resend within the stream's duplicate window is stored once and reported as a
duplicate. Queries read the ``events`` table that the indexer (``indexer.py``) fills
behind the stream: an event shows there a moment after it is acknowledged
(``settle`` waits for that). Refused messages go to PostgreSQL's ``quarantine``.

What a batch promises: its events are published concurrently and each must be
acknowledged; if any is not (NATS down, a timeout), ``append`` raises ``Unavailable``
and writes no rejection. Events that were stored meanwhile are found again by their
``Nats-Msg-Id`` when the client retries, and count as duplicates then — a batch is
all-or-nothing from the client's side, as on SQLite, though not inside NATS.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import msgspec
import nats.errors
import psycopg
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.errors import NotFoundError
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from polku.adapters.nats import store_schema
from polku.adapters.nats.indexer import INDEX_CONSUMER, WORKSPACE_HEADER, Indexer
from polku.adapters.nats.routing import (
    DEFAULT_PARTITIONS,
    DEFAULT_SUBJECT_PREFIX,
    event_subject,
    message_id,
    quarantine_message_id,
)
from polku.adapters.nats.stream import check_names, check_url, connect, ensure_stream
from polku.adapters.postgres.schema import DEFAULT_SCHEMA, check_schema
from polku.adapters.postgres.schema import check_url as check_store_url
from polku.core.errors import Conflict, NotFound, Unavailable
from polku.core.events import SYSTEM_CHANNEL, Event
from polku.ports import (
    AppendBatch,
    AppendResult,
    EventPage,
    EventQuery,
    QuarantineEntry,
    QuarantineStatus,
    StoredEvent,
)

log = logging.getLogger("polku.nats")

DEFAULT_STREAM: Final = "POLKU_EVENTS"
QUARANTINE_COLUMNS: Final = "id, workspace, source, received_ms, code, reason, body, status, resolved_ms"

_encode = msgspec.json.Encoder().encode
_decode_event = msgspec.json.Decoder(Event).decode

Pool = AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]


def query_sql(query: EventQuery) -> tuple[str, list[Any]]:
    """The ``events`` query of ``query``: the embedded log's filters and paging
    (``polku.adapters.sqlite.event_log.query_events``), one row more than the page.
    The statement is built from literal pieces only; values travel as parameters."""
    clauses = ["workspace = %s", "seq > %s"]
    parameters: list[Any] = [query.workspace, query.after_seq]
    if query.identifier is not None:
        clauses.append("(user_id = %s OR anonymous_id = %s)")
        parameters += [query.identifier.encode(), query.identifier.encode()]
    for column, value in (
        ("user_id", query.user_id),
        ("anonymous_id", query.anonymous_id),
        ("name", query.name),
    ):
        if value is not None:
            clauses.append(f"{column} = %s")
            parameters.append(value.encode())  # bytea columns (store_schema.py)
    for column, value in (("type", query.type), ("channel", query.channel)):
        if value is not None:
            clauses.append(f"{column} = %s")
            parameters.append(value)
    if not query.include_internal and query.channel is None:
        clauses.append("channel != %s")
        parameters.append(SYSTEM_CHANNEL)
    if query.since_ms is not None:
        clauses.append("ts_ms >= %s")
        parameters.append(query.since_ms)
    if query.until_ms is not None:
        clauses.append("ts_ms < %s")
        parameters.append(query.until_ms)
    parameters.append(query.limit + 1)
    return f"SELECT seq, body FROM events WHERE {' AND '.join(clauses)} ORDER BY seq LIMIT %s", parameters


class NatsEventLog:
    """``EventLog`` on a JetStream stream (``bus_url``) and PostgreSQL (``store_url``,
    tables in ``schema``). With ``index`` (the default) this process also runs the
    indexer; any number of processes may (they share one durable consumer)."""

    def __init__(
        self,
        bus_url: str,
        store_url: str,
        *,
        stream: str = DEFAULT_STREAM,
        subject_prefix: str = DEFAULT_SUBJECT_PREFIX,
        partitions: int = DEFAULT_PARTITIONS,
        schema: str = DEFAULT_SCHEMA,
        duplicate_window_s: float | None = 600.0,
        max_pending_events: int = 20_000,
        ack_timeout_s: float = 10.0,
        index: bool = True,
        min_size: int = 1,
        max_size: int = 8,
    ) -> None:
        check_names(stream, subject_prefix)
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, not {partitions}")
        self.bus_url = check_url(bus_url)
        self.store_url = check_store_url(store_url)
        self.stream = stream
        self.subject_prefix = subject_prefix
        self.partitions = partitions
        self.schema = check_schema(schema)
        self.duplicate_window_s = duplicate_window_s
        self.max_pending_events = max_pending_events
        self.ack_timeout_s = ack_timeout_s
        self.index = index
        self.min_size = min_size
        self.max_size = max_size
        self._pending = 0
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._pool: Pool | None = None
        self._indexer: Indexer | None = None
        self._indexer_task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        await store_schema.migrate(self.store_url, schema=self.schema)
        pool: Pool = AsyncConnectionPool(
            self.store_url,
            min_size=self.min_size,
            max_size=self.max_size,
            kwargs={"autocommit": True, "options": f"-c search_path={self.schema}"},
            name=f"polku-event-log-{self.schema}",
            # Checked as it leaves the pool: after a restart or failover of PostgreSQL
            # dead connections are replaced instead of failing one request each.
            check=AsyncConnectionPool.check_connection,
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=30)
            client = await connect(self.bus_url, name="polku-event-log", timeout_s=self.ack_timeout_s)
        except BaseException:
            await pool.close()
            raise
        try:
            js = client.jetstream(
                timeout=self.ack_timeout_s, publish_async_max_pending=max(4096, self.max_pending_events)
            )
            await ensure_stream(
                js,
                stream=self.stream,
                subject_prefix=self.subject_prefix,
                partitions=self.partitions,
                duplicate_window_s=self.duplicate_window_s,
            )
        except BaseException:
            await client.close()
            await pool.close()
            raise
        self._pool, self._client, self._js = pool, client, js
        if self.index:
            self._indexer = Indexer(js, pool, stream=self.stream, subject_prefix=self.subject_prefix)
            self._indexer_task = asyncio.create_task(self._indexer.run(), name=f"polku-index-{self.stream}")

    async def close(self) -> None:
        if self._indexer is not None and self._indexer_task is not None:
            self._indexer.stop()
            while not self._indexer_task.done():  # until a cancellation takes (see Indexer.stop)
                self._indexer_task.cancel()
                await asyncio.wait({self._indexer_task}, timeout=1.0)
            if not self._indexer_task.cancelled() and self._indexer_task.exception() is not None:
                log.error("the indexer had stopped", exc_info=self._indexer_task.exception())
            self._indexer = self._indexer_task = None
        if self._client is not None:
            await self._client.close()  # flushes what is buffered (the last acknowledgements)
            self._client = self._js = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def settle(self, timeout_s: float = 30.0) -> None:
        """Wait until the index holds every message the stream held when called: the
        index consumer's acknowledgement floor (acknowledged after each commit)
        reaches the stream's last sequence. ``TimeoutError`` after ``timeout_s``."""
        assert self._js is not None, "start() the event log first"
        target = (await self._js.stream_info(self.stream)).state.last_seq
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        floor = 0
        while True:
            try:
                info = await self._js.consumer_info(self.stream, INDEX_CONSUMER)
                floor = info.ack_floor.stream_seq if info.ack_floor is not None else 0
            except NotFoundError:  # no indexer has run yet
                floor = 0
            if floor >= target:
                return
            if loop.time() > deadline:
                raise TimeoutError(f"the index of stream {self.stream} is at {floor} of {target} after {timeout_s} s")
            await asyncio.sleep(0.01)

    # -- appends ------------------------------------------------------------

    def pending_events(self) -> int:
        return self._pending

    async def append(self, batch: AppendBatch) -> AppendResult:
        workspace = batch.workspace
        weight = len(batch.events)
        self._take(weight)
        try:
            accepted = duplicates = 0
            messages: list[tuple[str, bytes, dict[str, str]]] = []
            seen: set[str] = set()
            for event in batch.events:
                if event.message_id in seen:  # twice in one batch: publish it once
                    duplicates += 1
                    continue
                seen.add(event.message_id)
                messages.append(
                    (
                        event_subject(self.subject_prefix, workspace, event, self.partitions),
                        _encode(event),
                        {"Nats-Msg-Id": message_id(workspace, event.message_id), WORKSPACE_HEADER: workspace},
                    )
                )
            for ack in await self._publish(messages):
                if ack.duplicate:
                    duplicates += 1
                else:
                    accepted += 1
        finally:
            self._pending -= weight
        if batch.rejections:
            # After the events: if this fails, the client's retry finds the events
            # stored (duplicates) and quarantines the rejections once.
            async with self._connection() as connection, connection.transaction():
                cursor = connection.cursor()
                await cursor.executemany(
                    "INSERT INTO quarantine (workspace, source, received_ms, code, reason, body) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    [
                        (workspace, batch.source, batch.received_ms, rejection.code, rejection.reason, rejection.body)
                        for rejection in batch.rejections
                    ],
                )
        return AppendResult(accepted=accepted, duplicates=duplicates, quarantined=len(batch.rejections))

    def _take(self, weight: int) -> None:
        if self._js is None:
            raise Unavailable("the event log is not running")
        if self._pending + weight > self.max_pending_events and self._pending > 0:
            raise Unavailable(
                f"ingestion queue is full ({self._pending} events waiting for NATS to acknowledge); retry shortly",
                retry_after=1,
            )
        self._pending += weight

    async def _publish(self, messages: Sequence[tuple[str, bytes, dict[str, str]]]) -> list[PubAck]:
        """Publish all, in order, with every acknowledgement in flight at once; the
        acknowledgements, or ``Unavailable`` unless all came within the timeout."""
        assert self._js is not None, "start() the event log first"
        futures: list[asyncio.Future[PubAck]] = []
        try:
            for subject, body, headers in messages:
                futures.append(
                    await self._js.publish_async(
                        subject, body, wait_stall=self.ack_timeout_s, stream=self.stream, headers=headers
                    )
                )
            return list(await asyncio.wait_for(asyncio.gather(*futures), self.ack_timeout_s))
        except (TimeoutError, nats.errors.Error) as error:
            raise Unavailable(
                f"NATS did not acknowledge the events ({str(error) or type(error).__name__}); retry: "
                "events stored meanwhile will count as duplicates",
                retry_after=1,
            ) from error
        finally:
            for future in futures:
                future.cancel()  # a no-op on the finished ones

    # -- quarantine ---------------------------------------------------------

    async def quarantined(
        self, workspace: str, *, status: QuarantineStatus | None, after_id: int, limit: int
    ) -> list[QuarantineEntry]:
        async with self._connection() as connection:
            cursor = await connection.execute(
                f"SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE workspace = %s AND id > %s "
                "AND (%s::text IS NULL OR status = %s) ORDER BY id LIMIT %s",
                (workspace, after_id, status, status, limit),
            )
            return [QuarantineEntry.from_row(row) for row in await cursor.fetchall()]

    async def quarantine_entry(self, workspace: str, entry_id: int) -> QuarantineEntry:
        async with self._connection() as connection:
            cursor = await connection.execute(
                f"SELECT {QUARANTINE_COLUMNS} FROM quarantine WHERE workspace = %s AND id = %s", (workspace, entry_id)
            )
            row = await cursor.fetchone()
        if row is None:
            raise NotFound(f"quarantine entry {entry_id} does not exist")
        return QuarantineEntry.from_row(row)

    async def resolve_quarantined(
        self, workspace: str, entry_id: int, *, event: Event | None, resolved_ms: int
    ) -> AppendResult:
        """In one PostgreSQL transaction: lock the entry, publish the event (awaiting
        its acknowledgement), mark the entry. The publish comes before the commit, so a
        crash between them leaves the entry open with the event stored; the retry
        publishes it again under the same ``Nats-Msg-Id`` (derived from the entry),
        which the stream deduplicates within its window. The other order could mark
        an entry resubmitted whose event was never stored."""
        accepted = duplicates = 0
        async with self._connection() as connection, connection.transaction():
            # FOR UPDATE: of two resolutions of one entry, the second waits for the
            # first, then finds it resolved (READ COMMITTED re-reads the row).
            cursor = await connection.execute(
                "SELECT status FROM quarantine WHERE workspace = %s AND id = %s FOR UPDATE", (workspace, entry_id)
            )
            row = await cursor.fetchone()
            if row is None:
                raise NotFound(f"quarantine entry {entry_id} does not exist")
            if row[0] != "open":
                raise Conflict(f"quarantine entry {entry_id} is already {row[0]}")
            if event is not None:
                cursor = await connection.execute(
                    "SELECT 1 FROM events WHERE workspace = %s AND message_id = %s",
                    (workspace, event.message_id.encode()),
                )
                if await cursor.fetchone() is not None:
                    duplicates = 1  # its messageId is in the log already
                else:
                    self._take(1)
                    try:
                        # A duplicate acknowledgement here is this entry's own earlier
                        # attempt (same id), whose commit did not happen: accepted.
                        await self._publish(
                            [
                                (
                                    event_subject(self.subject_prefix, workspace, event, self.partitions),
                                    _encode(event),
                                    {
                                        "Nats-Msg-Id": quarantine_message_id(workspace, entry_id),
                                        WORKSPACE_HEADER: workspace,
                                    },
                                )
                            ]
                        )
                    finally:
                        self._pending -= 1
                    accepted = 1
            await connection.execute(
                "UPDATE quarantine SET status = %s, resolved_ms = %s WHERE id = %s",
                ("resubmitted" if event is not None else "discarded", resolved_ms, entry_id),
            )
        return AppendResult(accepted=accepted, duplicates=duplicates, quarantined=0)

    # -- reads --------------------------------------------------------------

    async def query(self, query: EventQuery) -> EventPage:
        statement, parameters = query_sql(query)
        async with self._connection() as connection:
            cursor = await connection.execute(statement, parameters)
            rows = await cursor.fetchall()
        more = len(rows) > query.limit
        events = [
            StoredEvent(seq=seq, workspace=query.workspace, event=_decode_event(body))
            for seq, body in rows[: query.limit]
        ]
        return EventPage(events=events, next_cursor=events[-1].seq if more and events else None)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[TupleRow]]:
        if self._pool is None:
            raise Unavailable("the event log is not running")
        try:
            async with self._pool.connection() as connection:
                yield connection
        except (psycopg.OperationalError, PoolTimeout) as error:
            raise Unavailable(f"PostgreSQL is not answering: {error}", retry_after=1) from error
