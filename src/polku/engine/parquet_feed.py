"""The analytics consumer of the scale-out deployment: the stream, written as Parquet
files partitioned by day (docs/parquet.md).

A durable pull consumer (``polku-parquet`` by default) reads every partition's
subject in stream order. The consumer buffers up to ``max_events`` messages or
``max_seconds``, then writes the batch as one file per day its events fall on
(``polku.adapters.parquet.files``: temporary file, ``fsync``, rename), and only then
acknowledges the batch's last message (acknowledge-all: one acknowledgement covers
the batch, and nothing is acknowledged that is not durable).

**Exactly once.** The file names carry the batch's sequence range, so the files say
what is written. On start the consumer deletes an incomplete last batch (a crash
between two renames), takes the highest sequence of the complete ones, and places
its consumer right after it (deleting and re-creating it: the files, not the
consumer's acknowledgement floor, are the record). A message at or below that
sequence — a redelivery — is skipped. A crash before a batch's last rename writes
the batch again; after it, NATS redelivers what the high-water mark then skips.

Messages are treated as the workers treat them: one without the ``Polku-Workspace``
header, or whose body is not a polku event, is logged and skipped (it could never
be applied). Like the embedded analytics feed, the files hold what customers did
and what polku did to a named customer; segment entries and exits and polku's
other events are left out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec
import nats.errors
import psycopg
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from polku.adapters.duckdb.analytics_store import analytics_column
from polku.adapters.nats.indexer import WORKSPACE_HEADER
from polku.adapters.nats.stream import STREAM_PATTERN, connect, ensure_stream
from polku.adapters.parquet import files
from polku.adapters.postgres.state_store import PostgresStateStore
from polku.adapters.sqlite.log_reader import decode_config
from polku.core.erasure import identity_hash
from polku.core.errors import ConfigError, StoreUnavailable
from polku.core.events import SYSTEM_CHANNEL, Event, time_millis
from polku.core.identity import event_identifiers
from polku.core.retention import Retention
from polku.core.workspace import WorkspaceConfig
from polku.engine.analytics_feed import store_row
from polku.engine.runtime import INTERNAL_SOURCE, internal_customer, is_interaction
from polku.engine.scale_worker import ScaleOut
from polku.engine.worker import exclusive_lock

log = logging.getLogger("polku.parquet")
_decode_event = msgspec.json.Decoder(Event).decode

DEFAULT_DURABLE: Final = "polku-parquet"
MAX_EVENTS: Final = 50_000
MAX_SECONDS: Final = 5.0
FETCH: Final = 5_000
ACK_WAIT_S: Final = 120.0
CONFIG_REFRESH_S: Final = 10.0
LOCK_FILE: Final = ".polku-parquet.lock"
_DEFAULT_CONFIG: Final = decode_config(b"{}")

Row = tuple[Any, ...]


def event_row(seq: int, workspace: str, body: bytes, config: WorkspaceConfig) -> tuple[str, Row] | None:
    """The day and the row (``files.NAMES`` order) of one message; ``None`` for an
    event the analytics leave out; ``ValueError`` for a body that is not a polku event."""
    try:
        event = _decode_event(body)
        ts = time_millis(event.timestamp)
        received = time_millis(event.received_at)
    except Exception as error:  # msgspec's DecodeError, or a time the parser refuses
        raise ValueError(f"not a polku event: {error}") from None
    name = event.event if event.type == "track" else event.name
    internal = internal_customer(event)
    customer: str | None = None
    if internal is not None:
        if event.channel == SYSTEM_CHANNEL or not is_interaction(event):
            return None  # a segment change, or what polku showed them: not a step of theirs
        anchor = "customer:" + internal
        customer = internal
    elif event.source == INTERNAL_SOURCE:
        return None
    else:
        identifiers = event_identifiers(event, config.identity)
        if not identifiers:
            return None
        anchor = identifiers[0]
    row = (
        *store_row(workspace, seq, ts, customer, anchor, event, name, config),
        event.message_id,
        event.user_id,
        event.anonymous_id,
        received,
    )
    return files.day_of(ts), row


@dataclass
class Batch:
    """Messages read and not yet written: their rows, days and the last message (to
    acknowledge, which acknowledges all before it)."""

    first: int = 0
    last: int = 0
    rows: list[Row] = field(default_factory=list)
    days: list[str] = field(default_factory=list)
    seen: set[tuple[str, str]] = field(default_factory=set)
    """(workspace, messageId) of the rows: a repeat in the batch is left out."""
    started: float = 0.0
    to_ack: Msg | None = None

    def columns(self) -> dict[str, list[Any]]:
        if not self.rows:
            return {name: [] for name in files.NAMES}
        return {name: list(column) for name, column in zip(files.NAMES, zip(*self.rows, strict=True), strict=True)}


def add_message(
    batch: Batch,
    seq: int,
    workspace: str | None,
    body: bytes,
    configs: Mapping[str, WorkspaceConfig],
    erased: Mapping[tuple[str, str], int] | None = None,
) -> str | None:
    """Add one new message (``seq`` above everything written and buffered); why it
    was skipped, or ``None``. An event that names an erased person's identifier
    (``erased``: hash → the position before which it is theirs; for good when
    suppressed) is left out, as the workers drop it."""
    batch.first = batch.first or seq
    batch.last = seq
    if workspace is None:
        return f"no {WORKSPACE_HEADER} header"
    try:
        found = event_row(seq, workspace, body, configs.get(workspace, _DEFAULT_CONFIG))
    except ValueError as error:
        return str(error)
    if found is None:
        return None
    day, row = found
    anchor = row[_ANCHOR]
    if (
        erased
        and not anchor.startswith("customer:")
        and erased.get((workspace, identity_hash(workspace, anchor)), 0) > seq
    ):
        return None
    key = (workspace, row[files.NAMES.index("message_id")])
    if key in batch.seen:
        return None  # sent again after the stream's duplicate window, read in one batch
    batch.seen.add(key)
    batch.rows.append(row)
    batch.days.append(day)
    return None


class ParquetFeed:
    """Runs until ``stop`` is set; one per output folder (it holds a lock there)."""

    def __init__(
        self,
        deployment: ScaleOut,
        out: Path,
        *,
        durable: str | None = None,
        max_events: int = MAX_EVENTS,
        max_seconds: float = MAX_SECONDS,
    ) -> None:
        self.deployment = deployment
        self.out = out
        self.durable = durable or ""
        """Set from the folder's id at the start unless given."""
        self.max_events = max_events
        self.max_seconds = max_seconds
        self.high_water = 0
        """The highest sequence written (or skipped as not for the files)."""
        self.written = 0
        """Rows written by this process (a gauge for tests and the benchmark)."""
        self.skipped = 0
        self.configs: dict[str, WorkspaceConfig] = {}
        self._configs_read = 0.0
        self.erased_seqs: set[int] = set()
        """Sequences of people erased while this process ran: a message of theirs the
        client held before the stream deleted it is not written."""
        self._erasures: Any = None
        self.erased: dict[tuple[str, str], int] = {}
        self._erased_read = 0.0
        """Hashes of erased customers and suppressed identifiers (read every second)."""
        self._expired: dict[str, tuple[float, bytes]] = {}
        self._js: JetStreamContext | None = None
        self._erasures_read = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        with exclusive_lock(self.out, LOCK_FILE, "Parquet consumer"):
            state = await asyncio.to_thread(files.recover, self.out)
            self.high_water = state.high_water
            if not self.durable:
                self.durable = await asyncio.to_thread(folder_consumer, self.out)
            if state.incomplete:
                part = state.incomplete[0]
                log.warning(
                    "deleted %d files of the incomplete batch of sequences %d-%d (written again now)",
                    len(state.incomplete),
                    part.first,
                    part.last,
                )
            deployment = self.deployment
            client = await connect(deployment.bus_url, name=f"polku-parquet {self.durable}")
            try:
                async with await self._postgres() as postgres:
                    await self._refresh_configs(postgres, force=True)
                    js = client.jetstream(timeout=10)
                    self._js = js
                    await ensure_stream(
                        js,
                        stream=deployment.stream,
                        subject_prefix=deployment.subject_prefix,
                        partitions=deployment.partitions,
                        duplicate_window_s=None,
                    )
                    subscription = await self._subscribe(js)
                    log.info(
                        "parquet consumer started",
                        extra={"out": str(self.out), "after_seq": self.high_water, "files": state.files},
                    )
                    try:
                        while True:
                            try:
                                await self._loop(stop, subscription, postgres)
                                break
                            except DeliveryGap as gap:
                                # A delivery was lost on the way (a reconnect): what came
                                # after it is not written, and the consumer starts over
                                # after what the files hold, as at a restart.
                                log.warning("%s; reading again after sequence %d", gap, self.high_water)
                                with contextlib.suppress(nats.errors.Error):
                                    await subscription.unsubscribe()
                                subscription = await self._subscribe(js)
                    finally:
                        with contextlib.suppress(nats.errors.Error):
                            await subscription.unsubscribe()
            finally:
                await client.close()
                if self._erasures is not None:
                    await asyncio.to_thread(self._erasures.close)

    async def _postgres(self) -> psycopg.AsyncConnection[Any]:
        try:
            return await psycopg.AsyncConnection.connect(
                self.deployment.store_url,
                autocommit=True,
                connect_timeout=10,
                options=f"-c search_path={self.deployment.schema}",
            )
        except psycopg.OperationalError as error:
            reason = " ".join(str(error).split())
            raise ConfigError(f"cannot connect to PostgreSQL: {reason}", field="store") from None

    async def _refresh_configs(self, postgres: psycopg.AsyncConnection[Any], *, force: bool = False) -> None:
        """The workspaces' identity rules and feedback event (they decide ``anchor``,
        ``metric`` and ``score``); on failure the ones read before are kept."""
        if not force and time.monotonic() - self._configs_read < CONFIG_REFRESH_S:
            return
        self._configs_read = time.monotonic()
        try:
            cursor = await postgres.execute("SELECT id, config FROM workspaces")
            rows = await cursor.fetchall()
        except psycopg.errors.UndefinedTable:
            raise ConfigError(
                f"schema {self.deployment.schema} has no workspaces table: run `polku db migrate` first", field="schema"
            ) from None
        except psycopg.Error as error:
            if force:
                raise
            log.warning("workspace configurations not refreshed: %s", error)
            return
        self.configs = {str(workspace): decode_config(bytes(body)) for workspace, body in rows}

    async def _subscribe(self, js: JetStreamContext) -> JetStreamContext.PullSubscription:
        """The durable consumer, placed right after what the files hold."""
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(self.deployment.stream, self.durable)
        start = (
            {"deliver_policy": DeliverPolicy.BY_START_SEQUENCE, "opt_start_seq": self.high_water + 1}
            if self.high_water
            else {"deliver_policy": DeliverPolicy.ALL}
        )
        await js.add_consumer(
            self.deployment.stream,
            ConsumerConfig(
                durable_name=self.durable,
                description="polku: the analytics consumer writing Parquet",
                filter_subject=f"{self.deployment.subject_prefix}.*",
                ack_policy=AckPolicy.ALL,
                ack_wait=ACK_WAIT_S,
                max_ack_pending=self.max_events + 2 * FETCH,
                **start,
            ),
        )
        return await js.pull_subscribe_bind(durable=self.durable, stream=self.deployment.stream)

    async def _loop(
        self,
        stop: asyncio.Event,
        subscription: JetStreamContext.PullSubscription,
        postgres: psycopg.AsyncConnection[Any],
    ) -> None:
        batch = Batch()
        highest = self.high_water
        delivered = 0  # the consumer's delivery count: each delivery, redeliveries too, is the next
        while not stop.is_set():
            waited = time.monotonic() - batch.started if batch.last else 0.0
            if batch.last and (len(batch.rows) >= self.max_events or waited >= self.max_seconds):
                await self._write(batch)
                batch = Batch()
                continue
            if not batch.last:  # between batches: a configuration changed meanwhile applies to the next
                await self._refresh_configs(postgres)
            await self._apply_erasures(batch)
            await self._expire()
            room = self.max_events - len(batch.rows)
            try:
                timeout = min(1.0, max(0.05, self.max_seconds - waited))
                messages = await subscription.fetch(min(room, FETCH), timeout=timeout)
            except TimeoutError:  # nothing new (nats' TimeoutError is one too)
                messages = []
            except nats.errors.Error as error:  # reconnecting
                log.warning("parquet fetch failed, retrying: %s", error)
                await asyncio.sleep(0.5)
                continue
            for message in messages:
                seq = message.metadata.sequence.stream
                number = message.metadata.sequence.consumer
                if delivered and number != delivered + 1:
                    raise DeliveryGap(delivered, number)
                delivered = number
                batch.to_ack = message
                if seq <= highest:
                    continue  # a redelivery: written already, or in this batch
                highest = seq
                if seq in self.erased_seqs:
                    continue
                if not batch.last:
                    batch.started = time.monotonic()
                workspace = (message.headers or {}).get(WORKSPACE_HEADER)
                reason = add_message(batch, seq, workspace, message.data, self.configs, self.erased)
                if reason is not None:
                    self.skipped += 1
                    log.error("message %d of stream %s is skipped: %s", seq, self.deployment.stream, reason)
            if not batch.last and batch.to_ack is not None:  # only redeliveries: acknowledge them again
                await self._acknowledge(batch.to_ack)
                batch.to_ack = None
        if batch.last:
            await self._write(batch)

    async def _apply_erasures(self, batch: Batch) -> None:
        """The analytics stage of erasures whose log stage is done (their messages are
        gone from the stream): their rows leave the files and the batch being read,
        and the stage is marked in the state. Looked for every second."""
        if time.monotonic() - self._erasures_read < ERASURE_CHECK_S:
            return
        self._erasures_read = time.monotonic()
        try:
            if self._erasures is None:
                self._erasures = await asyncio.to_thread(
                    PostgresStateStore,
                    self.deployment.store_url,
                    schema=self.deployment.schema,
                    migrate=False,
                    scope=None,
                )
            scopes = await asyncio.to_thread(self._erasures.pending_erasures, "analytics", self.durable)
            # Who is kept out changes with an erasure (it is pending here first); read
            # it again then, and now and then (the workers drop such events anyway).
            if scopes or time.monotonic() - self._erased_read > ERASED_REFRESH_S:
                self.erased = await asyncio.to_thread(self._erasures.erased)
                self._erased_read = time.monotonic()
        except (psycopg.Error, StoreUnavailable, ConfigError) as error:
            log.warning("erasures not read: %s", error)
            return
        for scope in scopes:
            seqs = {*scope.seqs, scope.marker_seq}
            self.erased_seqs.update(seqs)
            kept = [(row, day) for row, day in zip(batch.rows, batch.days, strict=True) if row[1] not in seqs]
            from_batch = len(batch.rows) - len(kept)
            batch.rows = [row for row, _ in kept]
            batch.days = [day for _, day in kept]
            removed = await asyncio.to_thread(files.erase_rows, self.out, seqs)
            await asyncio.to_thread(
                self._erasures.mark_erasure_consumer,
                scope.workspace,
                scope.erasure,
                self.durable,
                {"parquet_rows": removed + from_batch},
                int(time.time() * 1000),
                await self._analytics_consumers(),
            )
            log.info("erasure %s: %d rows left the Parquet files", scope.erasure, removed + from_batch)

    async def _analytics_consumers(self) -> set[str]:
        """Every Parquet folder's consumer on the stream (each erases its own files)."""
        names = {self.durable}
        if self._js is not None:
            with contextlib.suppress(nats.errors.Error):
                infos = await self._js.consumers_info(self.deployment.stream)
                names.update(info.name for info in infos if info.name.startswith(DEFAULT_DURABLE))
        return names

    async def _expire(self) -> None:
        """Retention (``polku.core.retention``): rows of expired events leave the files
        of the days that can hold them — hourly, and soon after a workspace's rules
        change (the configurations are read every ``CONFIG_REFRESH_S``)."""
        now = time.monotonic()
        wall = int(time.time() * 1000)
        for workspace, config in list(self.configs.items()):
            rules = msgspec.json.encode(config.retention)
            last = self._expired.get(workspace)
            if last is not None and last[1] == rules and now - last[0] < RETENTION_EVERY_S:
                continue
            self._expired[workspace] = (now, rules)
            retention = Retention.compile(config.retention)
            where = retention.expired_where(wall, analytics_column)
            if where is None:
                continue
            shortest = min(keep for keep in (*(r.keep_ms for r in retention.rules), retention.default_ms) if keep)
            before_day = files.day_of(wall - shortest + files.DAY_MS)
            removed = await asyncio.to_thread(files.expire_rows, self.out, workspace, where[0], where[1], before_day)
            if removed:
                log.info("workspace %s: %d expired rows left the Parquet files", workspace, removed)

    async def _write(self, batch: Batch) -> None:
        """Write ``batch`` durably (retrying until it is), then acknowledge it."""
        delay = 0.2
        while True:
            try:
                await asyncio.to_thread(
                    files.write_batch, self.out, batch.first, batch.last, batch.columns(), batch.days
                )
                break
            except OSError as error:  # a full disk: the same batch, under the same names, again
                log.error(
                    "parquet batch %d-%d not written, retrying in %.1f s: %s", batch.first, batch.last, delay, error
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        self.high_water = batch.last
        self.written += len(batch.rows)
        log.debug("wrote sequences %d-%d: %d rows", batch.first, batch.last, len(batch.rows))
        if batch.to_ack is not None:
            await self._acknowledge(batch.to_ack)

    async def _acknowledge(self, message: Msg) -> None:
        try:
            await message.ack()
        except nats.errors.Error as error:  # redelivered, and skipped by the high-water mark
            log.warning("parquet acknowledgement failed: %s", error)


FOLDER_ID: Final = ".polku-parquet-id"
ERASURE_CHECK_S: Final = 1.0
ERASED_REFRESH_S: Final = 60.0
_ANCHOR: Final = files.NAMES.index("anchor")
RETENTION_EVERY_S: Final = 3600.0


def folder_consumer(out: Path) -> str:
    """The folder's consumer name, ``polku-parquet-<id>``, the id made on first use
    (written atomically): consumers of two folders never take each other's place,
    on one host or several."""
    path = out / FOLDER_ID
    if not path.exists():
        temporary = out / f"{FOLDER_ID}.{os.getpid()}"
        temporary.write_text(uuid.uuid4().hex[:12] + "\n")
        with temporary.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    return f"{DEFAULT_DURABLE}-{path.read_text().strip()}"


class DeliveryGap(Exception):
    """The consumer delivered messages this process did not receive. JetStream would
    deliver them again only after the acknowledgement wait, after later ones — and an
    acknowledgement of those (acknowledge-all) would cover the lost ones too."""

    def __init__(self, delivered: int, number: int) -> None:
        super().__init__(f"deliveries {delivered + 1}-{number - 1} of the consumer did not arrive")


def check_options(*, durable: str | None, max_events: int, max_seconds: float, out: Path) -> None:
    """The consumer's own options (``ConfigError`` naming the one that is wrong)."""
    if durable is not None and not STREAM_PATTERN.fullmatch(durable):
        raise ConfigError(f"consumer name {durable!r} must be letters, digits, '-' or '_'", field="durable")
    if durable is not None and not durable.startswith(DEFAULT_DURABLE):
        # The workers recognise an analytics consumer by it (erasure waits for it).
        raise ConfigError(f"consumer name {durable!r} must start with {DEFAULT_DURABLE!r}", field="durable")
    if not 1 <= max_events <= 1_000_000:
        raise ConfigError(f"batch events {max_events} is not between 1 and 1,000,000", field="batch_events")
    if not 0.05 <= max_seconds <= 3600:
        raise ConfigError(f"batch seconds {max_seconds} is not between 0.05 and 3,600", field="batch_seconds")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder", field="out")


async def run_parquet_feed(
    deployment: ScaleOut, out: Path, *, stop: asyncio.Event | None = None, **options: Any
) -> ParquetFeed:
    """Run the consumer until ``stop`` is set (forever without one)."""
    feed = ParquetFeed(deployment, out, **options)
    await feed.run(stop or asyncio.Event())
    return feed
