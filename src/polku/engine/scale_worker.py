"""A worker of the scale-out deployment: the processor over the partitions it holds,
its state in PostgreSQL, its input the NATS JetStream stream (docs/scale-out.md).

The loop, between batches: renew and rebalance the partition leases (taking a
partition starts its consumer after the partition's checkpoint), fetch what the held
partitions have, evict from the caches what other workers committed, then run one
processor step in a thread (the event loop stays free for NATS and for fetching
earlier events a merge asks for). The step's commit is guarded
(``polku.adapters.postgres.commit_guard``): fenced by the leases, validated against
other workers' commits, and it moves the partitions' checkpoints in the same
transaction. Only then are the messages acknowledged, and the events the processor
wrote for the log are published.

Any number of workers may run; each takes its share of the partitions, and the
partitions of a worker that died are taken over once its leases expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
import psycopg
from nats.js import JetStreamContext
from psycopg_pool import ConnectionPool

from polku.adapters.nats.event_log import DEFAULT_STREAM, NatsEventLog
from polku.adapters.nats.log_erasure import ScaleLogEraser
from polku.adapters.nats.partition_feed import PartitionFeed
from polku.adapters.nats.routing import DEFAULT_PARTITIONS, DEFAULT_SUBJECT_PREFIX
from polku.adapters.nats.stream import check_names, connect, ensure_stream
from polku.adapters.nats.stream import check_url as check_bus_url
from polku.adapters.postgres import tracks
from polku.adapters.postgres.catalog_reads import CatalogReads
from polku.adapters.postgres.commit_guard import CommitGuard
from polku.adapters.postgres.leases import RENEW_S, PartitionLeases
from polku.adapters.postgres.schema import DEFAULT_SCHEMA, check_schema
from polku.adapters.postgres.schema import check_url as check_store_url
from polku.adapters.postgres.state_store import PostgresStateStore
from polku.core.errors import ConfigError, StoreUnavailable
from polku.core.events import Event
from polku.engine.runtime import INTERNAL_SOURCE
from polku.engine.shared_state import (
    DuplicateMessages,
    LeaseLost,
    SharedStateProcessor,
    StaleCheckpoint,
    StateConflict,
    TrackingStore,
)
from polku.engine.worker import CONFIG_REFRESH_S, wall_clock_ms
from polku.ports import AppendBatch

log = logging.getLogger("polku.worker")
_decode_event = msgspec.json.Decoder(Event).decode
GARBAGE_EVERY_S: Final = 60.0


@dataclass(frozen=True)
class ScaleOut:
    """Where the scale-out deployment's state and stream are."""

    store_url: str
    bus_url: str
    schema: str = DEFAULT_SCHEMA
    stream: str = DEFAULT_STREAM
    subject_prefix: str = DEFAULT_SUBJECT_PREFIX
    partitions: int = DEFAULT_PARTITIONS

    def event_log(self, *, duplicate_window_s: float | None = None, **options: Any) -> NatsEventLog:
        """The stream, to publish into. It never indexes (the workers do, in their
        commits); only the API sets the stream's duplicate window (the others leave
        it as it is: ``None``)."""
        return NatsEventLog(
            self.bus_url,
            self.store_url,
            stream=self.stream,
            subject_prefix=self.subject_prefix,
            partitions=self.partitions,
            schema=self.schema,
            index=False,
            duplicate_window_s=duplicate_window_s,
            **options,
        )

    @classmethod
    def checked(cls, **fields: Any) -> ScaleOut:
        """``ScaleOut(**fields)`` with its URLs and partition count checked before
        anything connects (the CLI's)."""
        check_store_url(fields["store_url"])
        check_bus_url(fields["bus_url"])
        check_schema(fields.get("schema", DEFAULT_SCHEMA))
        check_names(fields.get("stream", DEFAULT_STREAM), fields.get("subject_prefix", DEFAULT_SUBJECT_PREFIX))
        partitions = fields.get("partitions", DEFAULT_PARTITIONS)
        if not 1 <= partitions <= 4096:
            raise ConfigError(f"partitions {partitions} is not between 1 and 4,096", field="partitions")
        return cls(**fields)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


async def forward_claimed_outbox(
    pool: ConnectionPool[psycopg.Connection[Any]], event_log: NatsEventLog, limit: int = 1000
) -> int:
    """Publish the events the workers' commits wrote to ``log_outbox``, each by one
    worker: rows are claimed with ``FOR UPDATE SKIP LOCKED`` and deleted in the same
    transaction once NATS acknowledged them. A worker killed in between leaves them
    to be published again, with the same messageIds (a duplicate in the stream's
    window, and the index's unique key after it)."""
    total = 0
    while True:
        with pool.connection() as connection, connection.transaction():
            entries = connection.execute(
                "SELECT id, workspace, body FROM log_outbox ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED", (limit,)
            ).fetchall()
            if not entries:
                return total
            by_workspace: dict[str, list[Event]] = {}
            for _, workspace, body in entries:
                by_workspace.setdefault(workspace, []).append(_decode_event(bytes(body)))
            for workspace, events in by_workspace.items():
                await event_log.append(
                    AppendBatch(workspace=workspace, source=INTERNAL_SOURCE, received_ms=wall_clock_ms(), events=events)
                )
            connection.execute("DELETE FROM log_outbox WHERE id = ANY(%s)", ([int(row[0]) for row in entries],))
        total += len(entries)
        if len(entries) < limit:
            return total


async def migrate_all(deployment: ScaleOut) -> None:
    """Apply every track's pending migrations (``polku db migrate`` does the same)."""
    await tracks.migrate_all(deployment.store_url, schema=deployment.schema)


class EarlierEvents:
    """Events by stream sequence for a merge's refold: from the ``events`` index,
    and from the stream for what the index has not caught up with. Called from the
    processor's thread; the stream is read on the event loop."""

    def __init__(self, pool: ConnectionPool[psycopg.Connection[Any]], js: JetStreamContext, stream: str) -> None:
        self.pool = pool
        self.js = js
        self.stream = stream
        self.loop = asyncio.get_running_loop()
        self.loop_thread = threading.get_ident()

    def __call__(self, seqs: Sequence[int]) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        if not seqs:
            return found
        with self.pool.connection() as connection:
            for seq, body in connection.execute("SELECT seq, body FROM events WHERE seq = ANY(%s)", (list(seqs),)):
                found[int(seq)] = bytes(body)
        missing = [seq for seq in seqs if seq not in found]
        if missing:
            assert threading.get_ident() != self.loop_thread, "read earlier events from the processor's thread"
            future = asyncio.run_coroutine_threadsafe(self._from_stream(missing), self.loop)
            found.update(future.result(timeout=60))
        return found

    async def _from_stream(self, seqs: list[int]) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        for seq in seqs:
            message = await self.js.get_msg(self.stream, seq)
            if message.data is not None:
                found[seq] = message.data
        return found


class Worker:
    def __init__(
        self,
        deployment: ScaleOut,
        *,
        owner: str | None = None,
        clock: Callable[[], int] = wall_clock_ms,
        batch_size: int = 1000,
    ) -> None:
        self.deployment = deployment
        self.owner = owner or worker_id()
        self.clock = clock
        self.batch_size = batch_size
        self.applied = 0

    async def run(self, stop: asyncio.Event) -> None:
        deployment = self.deployment
        await migrate_all(deployment)
        client = await connect(deployment.bus_url, name=f"polku-worker {self.owner}")
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            deployment.store_url,
            min_size=1,
            max_size=4,
            kwargs={"autocommit": True, "options": f"-c search_path={deployment.schema}"},
            check=ConnectionPool.check_connection,
            open=False,
        )
        event_log = deployment.event_log()
        try:
            await asyncio.to_thread(pool.open, True, 30)
            js = client.jetstream(timeout=10)
            await ensure_stream(
                js,
                stream=deployment.stream,
                subject_prefix=deployment.subject_prefix,
                partitions=deployment.partitions,
                duplicate_window_s=None,  # the API's to choose
            )
            await event_log.start()
            await self._loop(stop, js, pool, event_log)
        finally:
            await event_log.close()
            await client.close()
            await asyncio.to_thread(pool.close)

    async def _loop(
        self,
        stop: asyncio.Event,
        js: JetStreamContext,
        pool: ConnectionPool[psycopg.Connection[Any]],
        event_log: NatsEventLog,
    ) -> None:
        deployment = self.deployment
        feed = PartitionFeed(
            js,
            CatalogReads(pool),
            EarlierEvents(pool, js, deployment.stream),
            stream=deployment.stream,
            subject_prefix=deployment.subject_prefix,
        )
        reads: set[str] = set()
        guard = CommitGuard(
            owner=self.owner,
            stream=deployment.stream,
            schema=deployment.schema,
            positions=feed.positions,
            applied=feed.applied,
            reads=reads,
            epochs=feed.epochs,
        )
        store = await asyncio.to_thread(
            PostgresStateStore,
            deployment.store_url,
            schema=deployment.schema,
            scope=None,  # the checkpoints are per partition (the guard's)
            timer_partitions=deployment.partitions,
            owned_partitions=lambda: list(feed.held),
            commit_hook=guard.hook,
            on_timers=guard.timers_fired,
        )
        leases = PartitionLeases(
            deployment.store_url,
            schema=deployment.schema,
            owner=self.owner,
            stream=deployment.stream,
            partitions=deployment.partitions,
        )
        leases.commits_seen = lambda: guard.seen
        await leases.connect()
        try:
            tracking = TrackingStore(store, reads)
            with pool.connection() as connection:
                guard.start(connection)
            eraser = ScaleLogEraser(
                pool, js, deployment.stream, asyncio.get_running_loop(), partitions=deployment.partitions
            )
            processor = await asyncio.to_thread(
                SharedStateProcessor, tracking, feed, clock=self.clock, batch_size=self.batch_size, eraser=eraser
            )

            def after_commit(changes: Any) -> None:
                processor.evict(guard.committed())
                feed.committed(changes.checkpoint)

            tracking.after_commit.append(after_commit)
            await leases.register()
            log.info("worker started", extra={"worker": self.owner, "partitions": deployment.partitions})
            await self._steps(stop, feed, guard, processor, leases, store, pool, event_log)
        finally:
            try:
                await feed.stop()
                await leases.leave()
            finally:
                await leases.close()
                await asyncio.to_thread(store.close)

    async def _steps(
        self,
        stop: asyncio.Event,
        feed: PartitionFeed,
        guard: CommitGuard,
        processor: SharedStateProcessor,
        leases: PartitionLeases,
        store: PostgresStateStore,
        pool: ConnectionPool[psycopg.Connection[Any]],
        event_log: NatsEventLog,
    ) -> None:
        next_lease = next_config = next_garbage = 0.0
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_lease:
                try:
                    await self._rebalance(feed, leases, processor, guard, pool)
                except psycopg.Error as error:  # PostgreSQL restarting: the leases expire meanwhile
                    log.warning("worker %s: leases not renewed: %s; retrying in 1 s", self.owner, error)
                    await leases.reconnect()
                    await asyncio.sleep(1.0)
                    continue
                next_lease = now + RENEW_S
            if now >= next_garbage:
                await leases.collect_garbage()
                next_garbage = now + GARBAGE_EVERY_S
            if now >= next_config:
                await asyncio.to_thread(processor.refresh_configs)
                await asyncio.to_thread(processor.expire)
                next_config = now + CONFIG_REFRESH_S
            with pool.connection() as connection:
                processor.evict(guard.refresh(connection))
            done = 0
            try:
                done = await self._step(processor, leases)
            except LeaseLost as error:
                log.warning("worker %s: %s; dropping them", self.owner, error)
                for partition in error.partitions:
                    await feed.drop(partition)
                leases.forget(error.partitions)
                guard.reads.clear()
                continue
            except StaleCheckpoint as error:
                log.warning("worker %s: %s; giving them back", self.owner, error)
                for partition in error.partitions:
                    await feed.drop(partition)
                await leases.release(error.partitions)
                guard.reads.clear()
                continue
            except DuplicateMessages as error:
                log.warning("worker %s: %s; left out", self.owner, error)
                feed.skip(error.seqs)
                guard.reads.clear()
                continue
            except StateConflict as error:
                log.info("worker %s: batch runs again: %s", self.owner, error)
                guard.reads.clear()
                continue
            except StoreUnavailable as error:
                log.warning("worker %s: the state store failed (%s); retrying in 1 s", self.owner, error)
                guard.reads.clear()
                await asyncio.sleep(1.0)
                continue
            self.applied += done
            await feed.acknowledge()
            await forward_claimed_outbox(pool, event_log)
            if not done:
                feed.arrived.clear()
                if not feed.buffered():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(feed.arrived.wait(), 0.05)

    async def _step(self, processor: SharedStateProcessor, leases: PartitionLeases) -> int:
        """One processor step in a thread; its leases are extended while it runs (a
        merge that folds a long history again may take longer than a lease)."""
        step = asyncio.ensure_future(asyncio.to_thread(processor.step))
        while True:
            finished, _ = await asyncio.wait({step}, timeout=RENEW_S)
            if finished:
                return step.result()
            with contextlib.suppress(psycopg.Error):
                await leases.extend()

    async def _rebalance(
        self,
        feed: PartitionFeed,
        leases: PartitionLeases,
        processor: SharedStateProcessor,
        guard: CommitGuard,
        pool: ConnectionPool[psycopg.Connection[Any]],
    ) -> None:
        change = await leases.rebalance()
        for partition in change.lost:
            await feed.drop(partition)
        if leases.forgotten:
            # Declared dead while stalled: what others wrote meanwhile may be gone
            # from the commit log, so nothing cached can be trusted.
            leases.forgotten = False
            processor.caches.clear()
            processor.journeys.reset()
            with pool.connection() as connection:
                guard.start(connection)
        for partition, (epoch, checkpoint) in sorted(change.gained.items()):
            await feed.hold(partition, epoch, checkpoint)
        if change.gained or change.lost:
            log.info(
                "worker %s holds %d partitions",
                self.owner,
                len(feed.held),
                extra={"gained": sorted(change.gained), "lost": change.lost},
            )


async def run_worker(deployment: ScaleOut, *, stop: asyncio.Event | None = None, batch_size: int = 1000) -> None:
    """Run one worker until ``stop`` is set (forever without one)."""
    await Worker(deployment, batch_size=batch_size).run(stop or asyncio.Event())
