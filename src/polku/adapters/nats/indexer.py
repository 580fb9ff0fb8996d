"""The indexer: the stream, copied into PostgreSQL's ``events`` table for queries.

A durable pull consumer (``polku-index``, explicit acknowledgement) reads the stream
in order, in batches. Each batch is one transaction: the events are inserted with
``ON CONFLICT (workspace, message_id) DO NOTHING`` — a resend older than the stream's
duplicate window is stored in the stream a second time and dropped here, once — and
``index_checkpoint`` moves to the batch's last sequence. The messages are acknowledged
only after the commit: a crash before it indexes nothing (NATS redelivers), a crash
after it makes NATS redeliver rows the insert then skips. So the table holds every
event the stream holds exactly once, whichever process crashed when, and however
many indexers share the consumer.

A commit that fails (PostgreSQL restarting) is retried with the same batch, with
back-off, rather than skipped: the index never has a hole behind its checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import msgspec
import nats.errors
import psycopg
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from polku.core.events import time_millis

log = logging.getLogger("polku.nats.indexer")

INDEX_CONSUMER: Final = "polku-index"
WORKSPACE_HEADER: Final = "Polku-Workspace"
EVENT_COLUMNS: Final = (
    "seq, workspace, message_id, type, name, user_id, anonymous_id, channel, ts_ms, received_ms, body"
)
# One statement per batch: arrays, unnested in order, so that of two rows with one
# messageId in a batch the earlier (lower sequence) is kept.
INSERT_EVENTS: Final = (
    "INSERT INTO events (seq, workspace, message_id, type, name, user_id, anonymous_id, channel, ts_ms, "
    "received_ms, body) SELECT * FROM unnest(%s::bigint[], %s::text[], %s::bytea[], %s::text[], %s::bytea[], "
    "%s::bytea[], %s::bytea[], %s::text[], %s::bigint[], %s::bigint[], %s::bytea[]) "
    "ON CONFLICT (workspace, message_id) DO NOTHING"
)
ADVANCE_CHECKPOINT: Final = (
    "INSERT INTO index_checkpoint (stream, seq) VALUES (%s, %s) "
    "ON CONFLICT (stream) DO UPDATE SET seq = greatest(index_checkpoint.seq, excluded.seq)"
)

Row = tuple[int, str, bytes, str, bytes | None, bytes | None, bytes | None, str, int, int, bytes]


class _Indexed(msgspec.Struct, rename="camel"):
    """The fields of a stored event that the index has columns for."""

    message_id: str
    type: str
    channel: str
    timestamp: str
    received_at: str
    user_id: str | None = None
    anonymous_id: str | None = None
    event: str | None = None
    name: str | None = None


_decode_indexed = msgspec.json.Decoder(_Indexed).decode


def _utf8(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def index_row(seq: int, workspace: str, body: bytes) -> Row:
    """The ``events`` row of the message at ``seq``; ``ValueError`` if the body is not
    an event polku wrote."""
    try:
        event = _decode_indexed(body)
        ts_ms, received_ms = time_millis(event.timestamp), time_millis(event.received_at)
    except Exception as error:  # msgspec's DecodeError, or a time the parser refuses
        raise ValueError(f"not a polku event: {error}") from None
    return (
        seq,
        workspace,
        event.message_id.encode(),
        event.type,
        _utf8(event.event if event.type == "track" else event.name),
        _utf8(event.user_id),
        _utf8(event.anonymous_id),
        event.channel,
        ts_ms,
        received_ms,
        body,
    )


def columns(rows: list[Row]) -> list[list[Any]]:
    """Rows turned into the per-column arrays ``INSERT_EVENTS`` takes."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(11)]


def consumer_config(*, max_ack_pending: int = 20_000, ack_wait_s: float = 30.0) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=INDEX_CONSUMER,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait_s,
        max_ack_pending=max_ack_pending,
    )


async def write_batch(
    connection: psycopg.AsyncConnection[TupleRow], stream: str, rows: list[Row], last_seq: int
) -> None:
    """Insert ``rows`` and advance the checkpoint to ``last_seq``, in one transaction."""
    async with connection.transaction():
        if rows:
            await connection.execute(INSERT_EVENTS, columns(rows))
        await connection.execute(ADVANCE_CHECKPOINT, (stream, last_seq))


class Indexer:
    """Runs until cancelled. ``batch`` messages per fetch and per transaction."""

    def __init__(
        self,
        js: JetStreamContext,
        pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]],
        *,
        stream: str,
        subject_prefix: str,
        batch: int = 1000,
        fetch_timeout_s: float = 1.0,
    ) -> None:
        self.js = js
        self.pool = pool
        self.stream = stream
        self.subject_prefix = subject_prefix
        self.batch = batch
        self.fetch_timeout_s = fetch_timeout_s
        self.indexed = 0
        """Messages committed by this indexer since it started (a gauge for tests and metrics)."""
        self._stopping = False

    def stop(self) -> None:
        """End ``run`` after the batch in hand. (Cancelling the task alone is not
        enough on Python 3.11: ``asyncio.wait_for`` inside nats-py can swallow a
        cancellation that meets a message arriving.)"""
        self._stopping = True

    async def run(self) -> None:
        """Index until stopped; a failure is logged and the indexer starts over (what it
        had not acknowledged is delivered again)."""
        while not self._stopping:
            try:
                await self._run()
            except Exception:
                log.exception("the indexer of stream %s failed; starting over in 1 s", self.stream)
                await asyncio.sleep(1.0)

    async def _run(self) -> None:
        subscription = await self.js.pull_subscribe(
            f"{self.subject_prefix}.*", durable=INDEX_CONSUMER, stream=self.stream, config=consumer_config()
        )
        try:
            while not self._stopping:
                try:
                    messages = await subscription.fetch(self.batch, timeout=self.fetch_timeout_s)
                except TimeoutError:  # nothing new (nats' TimeoutError is one too)
                    continue
                except nats.errors.Error as error:  # reconnecting: the consumer waits on the server
                    log.warning("index fetch failed, retrying: %s", error)
                    await asyncio.sleep(0.5)
                    continue
                await self._commit(messages)
                for message in messages:
                    await message.ack()
                self.indexed += len(messages)
        finally:
            try:
                await subscription.unsubscribe()
            except nats.errors.Error:
                pass

    async def _commit(self, messages: list[Msg]) -> None:
        rows: list[Row] = []
        last_seq = 0
        for message in messages:
            seq = message.metadata.sequence.stream
            last_seq = max(last_seq, seq)
            workspace = (message.headers or {}).get(WORKSPACE_HEADER)
            try:
                if workspace is None:
                    raise ValueError(f"no {WORKSPACE_HEADER} header")
                rows.append(index_row(seq, workspace, message.data))
            except ValueError as error:
                # Someone else's message on polku's subjects: it cannot be indexed, and
                # holding it back would stop the index for good.
                log.error("message %d of stream %s is skipped by the index: %s", seq, self.stream, error)
        delay = 0.2
        while True:
            try:
                async with self.pool.connection() as connection:
                    await write_batch(connection, self.stream, rows, last_seq)
                return
            except (psycopg.OperationalError, psycopg.errors.SerializationFailure) as error:
                log.warning("index commit failed, retrying in %.1f s: %s", delay, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
