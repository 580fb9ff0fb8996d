"""The dispatcher: delivers the messages the processor decided to send.

The processor writes each message into ``state.db``'s ``messages`` table in the
transaction of its state change (the transactional outbox). The dispatcher reads
new rows (by id, after its cursor), records each in its own ledger
(``deliveries.db``, ``polku.adapters.sqlite.deliveries``) as ``pending`` together
with the cursor, and delivers pending ones through the workspace's configured
channels, each channel with its own concurrency limit, so one slow or failing
destination never holds up another. It then writes the result into the log as a
``Message Sent`` or ``Message Failed`` event (a deterministic messageId: written
twice, it is kept once) and marks the ledger row ``sent`` or ``dead``; a retryable
failure is tried again after an exponential backoff with full jitter.

Crash safety: the ledger is keyed by the message's idempotency key and a key is
taken once (``INSERT OR IGNORE``), so a message marked ``sent`` is never sent
again, and a ``pending`` one is resumed after a restart. One window cannot be
closed: the receiver accepted the message and the process died before the ledger
said ``sent``. That message is sent again after the restart, with the same SMTP
``Message-ID`` and the same ``Idempotency-Key`` header, so a receiver that checks
them drops the repeat.

Only one dispatcher may run on a data directory: it holds an exclusive ``flock``
on ``dispatcher.lock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import sqlite3
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

import msgspec

from polku.adapters.channels import Channel, DeliveryResult, build_channel
from polku.adapters.sqlite import wakeup
from polku.adapters.sqlite.deliveries import open_ledger
from polku.adapters.sqlite.event_log import SqliteEventLog
from polku.adapters.sqlite.log_reader import SqliteLogReader, decode_config
from polku.adapters.sqlite.schema import connect
from polku.adapters.sqlite.state_schema import STATE_FILE
from polku.core.attributes import parse_duration
from polku.core.channels import FAILED_EVENT, SENT_EVENT, ChannelConfig, OutboundMessage
from polku.core.errors import PolkuError
from polku.core.events import Event
from polku.core.journey_spec import BUILTIN_CHANNELS
from polku.engine.runtime import INTERNAL_SOURCE, internal_event
from polku.engine.worker import exclusive_lock
from polku.ports import AppendBatch

log = logging.getLogger("polku.dispatcher")
LOCK_FILE: Final = "dispatcher.lock"
POLL_S: Final = 0.005
NUDGED_POLL_S: Final = 0.05
"""The poll while the processor nudges: a safety net for a lost nudge, not the path."""
CONFIG_REFRESH_S: Final = 1.0
MAX_BACKOFF_MS: Final = 3_600_000
BATCH_SIZE: Final = 500
QUEUED_PER_SLOT: Final = 2
"""Deliveries taken per unit of a channel's concurrency (the rest wait in the ledger)."""
NEVER: Final = 2**62
_decode_message = msgspec.json.Decoder(OutboundMessage).decode


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def dispatcher_lock(data_dir: Path) -> AbstractContextManager[IO[str]]:
    return exclusive_lock(data_dir, LOCK_FILE, "dispatcher")


@dataclass
class Lane:
    """One configured channel of one workspace: its connector and its slots."""

    workspace: str
    name: str
    config: ChannelConfig
    connector: Channel
    semaphore: asyncio.Semaphore
    inflight: int = 0


@dataclass(frozen=True)
class Due:
    key: str
    message_id: int
    workspace: str
    channel: str
    attempts: int


class Dispatcher:
    def __init__(
        self,
        data_dir: Path,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        rng: random.Random | None = None,
        environ: Mapping[str, str] | None = None,
        poll_s: float = POLL_S,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.data_dir = data_dir
        self.clock = clock
        self.rng = rng or random.Random()
        self.environ = os.environ if environ is None else environ
        self.poll_s = poll_s
        self.batch_size = batch_size
        self.ledger = open_ledger(data_dir)
        self.cursor: int = self.ledger.execute("SELECT message_id FROM cursor WHERE id = 1").fetchone()[0]
        self.state: sqlite3.Connection | None = None
        self.reader = SqliteLogReader(data_dir)
        self.event_log = SqliteEventLog(data_dir, writer="thread")
        self.lanes: dict[tuple[str, str], Lane] = {}
        self._retired: list[Lane] = []
        self._config_bodies: dict[str, bytes] = {}
        self._pairs: set[tuple[str, str]] = {
            (workspace, channel)
            for workspace, channel in self.ledger.execute(
                "SELECT DISTINCT workspace, channel FROM deliveries WHERE status = 'pending'"
            )
        }
        self._inflight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._listener: socket.socket | None = None
        self._next_check = 0

    async def start(self) -> None:
        await self.event_log.start()
        self.refresh_configs()
        await self.announce_unannounced()

    async def announce_unannounced(self) -> None:
        """Write the results a killed dispatcher had recorded but not yet told."""
        self._state()
        rows = self.ledger.execute(
            "SELECT key, message_id, workspace, channel, status, attempts, last_error, updated_ms FROM deliveries "
            "WHERE announced = 0 AND status != 'pending'"
        ).fetchall()
        bodies = self._bodies([int(row[1]) for row in rows])
        for key, message_id, workspace, channel, status, attempts, error, updated in rows:
            message = bodies.get(int(message_id))
            if message is not None:
                lane = self.lanes.get((workspace, channel))
                config = lane.config if lane is not None else None
                name = SENT_EVENT if status == "sent" else FAILED_EVENT
                await self._append(workspace, self._result_event(name, config, message, attempts, updated, error))
            self.ledger.execute("UPDATE deliveries SET announced = 1 WHERE key = ?", (key,))

    async def close(self, grace_s: float = 5.0) -> None:
        """Let deliveries under way finish (for ``grace_s``); the others stay pending."""
        if self._tasks:
            _, unfinished = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in unfinished:
                task.cancel()
            if unfinished:
                await asyncio.wait(unfinished)
        for lane in [*self.lanes.values(), *self._retired]:
            await lane.connector.aclose()
        await self.event_log.close()
        self.reader.close()
        if self.state is not None:
            self.state.close()
        self.ledger.close()

    # -- configuration ------------------------------------------------------------

    def refresh_configs(self) -> bool:
        """Build the lanes of the workspaces' channels again where they changed."""
        bodies = self.reader.configs()
        if bodies == self._config_bodies:
            return False
        self._config_bodies = bodies
        wanted: dict[tuple[str, str], ChannelConfig] = {}
        for workspace, body in bodies.items():
            try:
                config = decode_config(body)
            except (PolkuError, msgspec.ValidationError, msgspec.DecodeError) as error:
                log.error("workspace %s: its configuration cannot be read: %s", workspace, error)
                continue
            for name, channel in config.channels.items():
                wanted[(workspace, name)] = channel
        for pair, lane in list(self.lanes.items()):
            if wanted.get(pair) != lane.config:
                self._retired.append(self.lanes.pop(pair))
        for pair, channel in wanted.items():
            if pair not in self.lanes:
                self.lanes[pair] = Lane(
                    workspace=pair[0],
                    name=pair[1],
                    config=channel,
                    connector=build_channel(channel, environ=self.environ, clock=self.clock),
                    semaphore=asyncio.Semaphore(channel.concurrency),
                )
        return True

    async def _close_retired(self) -> None:
        """Close the connectors of replaced channels once their deliveries are done."""
        idle = [lane for lane in self._retired if lane.inflight == 0]
        self._retired = [lane for lane in self._retired if lane.inflight > 0]
        for lane in idle:
            await lane.connector.aclose()

    # -- taking messages from the outbox ------------------------------------------

    def _state(self) -> sqlite3.Connection | None:
        if self.state is None and (self.data_dir / STATE_FILE).exists():
            self.state = connect(self.data_dir / STATE_FILE, readonly=True)
            # state.db was made anew (its file deleted): its ids start over, and
            # the ledger's keys keep what was taken before from being sent again.
            last = self._messages("SELECT max(id) FROM messages", ())
            if last and (last[0][0] or 0) < self.cursor:
                log.warning("state.db's messages start over; reading them from the beginning")
                self.cursor = 0
        return self.state

    def _messages(self, sql: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        state = self.state
        if state is None:
            return []
        try:
            return state.execute(sql, parameters).fetchall()
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):  # the processor has not created it yet
                return []
            raise

    def take_new(self) -> int:
        """Record new outbox messages as pending deliveries (with the cursor, in one
        transaction). Returns how many rows were read."""
        if self._state() is None:
            return 0
        rows = self._messages(
            "SELECT id, workspace, customer_id, key, channel, journey, created_ms FROM messages "
            "WHERE id > ? ORDER BY id LIMIT ?",
            (self.cursor, self.batch_size),
        )
        if not rows:
            return 0
        now = self.clock()
        taken = [row for row in rows if row[4] not in BUILTIN_CHANNELS]
        last_id = int(rows[-1][0])
        ledger = self.ledger
        ledger.execute("BEGIN IMMEDIATE")
        try:
            ledger.executemany(
                "INSERT OR IGNORE INTO deliveries (key, message_id, workspace, customer_id, channel, journey, "
                "status, attempts, next_attempt_ms, last_error, created_ms, updated_ms) "
                "VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, NULL, ?, ?)",
                [
                    (key, message_id, workspace, customer, channel, journey, now, created, now)
                    for message_id, workspace, customer, key, channel, journey, created in taken
                ],
            )
            ledger.execute("UPDATE cursor SET message_id = ? WHERE id = 1", (last_id,))
            ledger.execute("COMMIT")
        except BaseException:
            ledger.execute("ROLLBACK")
            raise
        self.cursor = last_id
        self._pairs.update((str(row[1]), str(row[4])) for row in taken)
        return len(rows)

    # -- delivering ------------------------------------------------------------

    def _bodies(self, message_ids: list[int]) -> dict[int, OutboundMessage]:
        if not message_ids:
            return {}
        marks = ", ".join("?" * len(message_ids))
        rows = self._messages(f"SELECT id, body FROM messages WHERE id IN ({marks})", tuple(message_ids))
        return {int(message_id): _decode_message(bytes(body)) for message_id, body in rows}

    def _has_pending(self, pair: tuple[str, str]) -> bool:
        return (
            self.ledger.execute(
                "SELECT 1 FROM deliveries WHERE status = 'pending' AND workspace = ? AND channel = ? LIMIT 1", pair
            ).fetchone()
            is not None
        )

    def _due(self, pair: tuple[str, str], now: int, limit: int) -> list[Due]:
        rows = self.ledger.execute(
            "SELECT key, message_id, attempts FROM deliveries "
            "WHERE status = 'pending' AND workspace = ? AND channel = ? AND next_attempt_ms <= ? "
            "ORDER BY next_attempt_ms LIMIT ?",
            (pair[0], pair[1], now, limit),
        ).fetchall()
        return [
            Due(key=key, message_id=message_id, workspace=pair[0], channel=pair[1], attempts=attempts)
            for key, message_id, attempts in rows
            if key not in self._inflight
        ]

    def dispatch_due(self, now: int) -> int:
        """Start the deliveries that are due, as far as each channel has room."""
        if self._state() is None:  # no outbox to read the messages from (yet)
            return 0
        started = 0
        refreshed = False
        for pair in sorted(self._pairs):
            lane = self.lanes.get(pair)
            if lane is None and not refreshed:
                # A channel configured a moment ago is not dead-lettered for it.
                self.refresh_configs()
                refreshed = True
                lane = self.lanes.get(pair)
            room = (lane.config.concurrency * QUEUED_PER_SLOT - lane.inflight) if lane is not None else self.batch_size
            if room <= 0:
                continue
            due = self._due(pair, now, room + (lane.inflight if lane is not None else 0))[:room]
            if not due:
                if lane is None and not self._has_pending(pair):
                    self._pairs.discard(pair)
                continue
            bodies = self._bodies([item.message_id for item in due])
            for item in due:
                message = bodies.get(item.message_id)
                if message is None:  # erased from the outbox: nothing to send, nothing to tell
                    self._mark(item.key, "dead", item.attempts, now, "the message no longer exists (erased)")
                else:
                    self._inflight.add(item.key)
                    if lane is not None:
                        lane.inflight += 1
                    task = asyncio.create_task(self._attempt(lane, item, message))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                    started += 1
        return started

    async def _attempt(self, lane: Lane | None, item: Due, message: OutboundMessage) -> None:
        try:
            if lane is None:
                result = DeliveryResult.failed(f"channel {item.channel} is not configured")
            else:
                async with lane.semaphore:
                    # Counted before it starts: a crash during it leaves the count.
                    self.ledger.execute(
                        "UPDATE deliveries SET attempts = ? WHERE key = ?", (item.attempts + 1, item.key)
                    )
                    try:
                        result = await lane.connector.deliver(message)
                    except Exception as error:  # a connector's bug must not stop the others
                        log.exception("channel %s failed on %s", lane.name, item.key)
                        result = DeliveryResult.retry(f"{type(error).__name__}: {error}")
            await self._finish(lane.config if lane is not None else None, item, message, result)
        finally:
            if lane is not None:
                lane.inflight -= 1
            self._inflight.discard(item.key)
            self._wake.set()

    async def _finish(
        self, config: ChannelConfig | None, item: Due, message: OutboundMessage, result: DeliveryResult
    ) -> None:
        now = self.clock()
        attempts = item.attempts + 1
        max_attempts = config.max_attempts if config is not None else 1
        if result.ok:
            self._mark(item.key, "sent", attempts, now, None)
            await self._append(item.workspace, self._result_event(SENT_EVENT, config, message, attempts, now, None))
            self.ledger.execute("UPDATE deliveries SET announced = 1 WHERE key = ?", (item.key,))
        elif result.permanent or attempts >= max_attempts:
            self._mark(item.key, "dead", attempts, now, result.error)
            event = self._result_event(FAILED_EVENT, config, message, attempts, now, result.error)
            await self._append(item.workspace, event)
            self.ledger.execute("UPDATE deliveries SET announced = 1 WHERE key = ?", (item.key,))
            log.warning("message %s dead-lettered after %d attempts: %s", item.key, attempts, result.error)
        else:
            assert config is not None
            next_attempt = now + self.backoff_ms(config, attempts, result.retry_after_s)
            self._mark(item.key, "pending", attempts, now, result.error, next_attempt)
            self._next_check = min(self._next_check, next_attempt)

    def backoff_ms(self, config: ChannelConfig, attempts: int, retry_after_s: float | None = None) -> int:
        """Full jitter: uniform in [0, base·2^(attempts−1)], capped at an hour; never
        sooner than the receiver's ``Retry-After``."""
        base = parse_duration(config.backoff, "backoff")
        ceiling = min(MAX_BACKOFF_MS, base * 2 ** min(attempts - 1, 40))
        delay = self.rng.uniform(0, ceiling)
        if retry_after_s is not None:
            delay = max(delay, retry_after_s * 1000)
        return int(min(delay, MAX_BACKOFF_MS))

    def _result_event(
        self,
        name: str,
        config: ChannelConfig | None,
        message: OutboundMessage,
        attempts: int,
        now: int,
        error: str | None,
    ) -> Event:
        properties: dict[str, object] = {
            "key": message.key,
            "journey": message.journey,
            "version": message.version,
            "step": message.step,
            "message": message.message,
            "channel_name": message.channel,
            "attempts": attempts,
        }
        if error is not None:
            properties |= {"error": error, "dead_lettered": True}
        return internal_event(
            name,
            message.customer_id,
            now,
            identity=f"{name}|{message.key}",
            properties=properties,
            received_ms=now,
            channel=(config.channel if config is not None else None) or message.channel,
        )

    async def _append(self, workspace: str, event: Event) -> None:
        try:
            await self.event_log.append(
                AppendBatch(workspace=workspace, source=INTERNAL_SOURCE, received_ms=self.clock(), events=[event])
            )
        except PolkuError as error:  # the delivery stands; only its event is missing
            log.error("could not write %s for %s: %s", event.event, workspace, error)

    def _mark(
        self, key: str, status: str, attempts: int, now: int, error: str | None, next_attempt: int | None = None
    ) -> None:
        self.ledger.execute(
            "UPDATE deliveries SET status = ?, attempts = ?, next_attempt_ms = ?, last_error = ?, updated_ms = ? "
            "WHERE key = ?",
            (status, attempts, next_attempt if next_attempt is not None else now, error, now, key),
        )

    def _next_due(self, now: int) -> int:
        row = self.ledger.execute(
            "SELECT min(next_attempt_ms) FROM deliveries WHERE status = 'pending' AND next_attempt_ms > ?", (now,)
        ).fetchone()
        return int(row[0]) if row[0] is not None else NEVER

    # -- the loop ----------------------------------------------------------------

    def _poll_interval(self) -> float:
        return max(NUDGED_POLL_S, self.poll_s) if self._listener is not None else self.poll_s

    def listen(self) -> None:
        """Wake on the processor's nudges (``polku.adapters.sqlite.wakeup``)."""
        listener = wakeup.listen(self.data_dir)
        if listener is None:
            log.info("no wake-up socket in %s; polling every %.0f ms", self.data_dir, self.poll_s * 1000)
            return
        self._listener = listener

        def woken() -> None:
            wakeup.drain(listener)
            self._wake.set()

        asyncio.get_running_loop().add_reader(listener.fileno(), woken)

    def unlisten(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None

    async def run(self, stop: asyncio.Event) -> None:
        self.listen()
        try:
            await self._run(stop)
        finally:
            self.unlisten()

    async def _run(self, stop: asyncio.Event) -> None:
        refreshed = time.monotonic()
        while not stop.is_set():
            dirty = self._wake.is_set()
            self._wake.clear()
            if time.monotonic() - refreshed >= CONFIG_REFRESH_S:
                dirty = self.refresh_configs() or dirty
                refreshed = time.monotonic()
                await self._close_retired()
            taken = self.take_new()
            now = self.clock()
            if taken or dirty or now >= self._next_check:
                self.dispatch_due(now)
                self._next_check = self._next_due(now)
            if taken < self.batch_size and not self._wake.is_set():
                # The processor's nudge (or a delivery finishing) sets _wake; the
                # timeout is the poll for when no nudge can come.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_interval())

    async def run_until_idle(self, timeout_s: float = 10.0) -> None:
        """Deliver until nothing is due and nothing is under way (tests, ``--once``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            taken = self.take_new()
            now = self.clock()
            self.dispatch_due(now)
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=deadline - time.monotonic())
                continue
            if not taken:
                return
        raise TimeoutError("the dispatcher did not become idle")


async def run_dispatcher(
    data_dir: Path,
    *,
    stop: asyncio.Event | None = None,
    clock: Callable[[], int] = wall_clock_ms,
    rng: random.Random | None = None,
    environ: Mapping[str, str] | None = None,
    poll_s: float = POLL_S,
) -> None:
    """Deliver the outbox until ``stop`` is set (forever without one)."""
    with dispatcher_lock(data_dir):
        dispatcher = Dispatcher(data_dir, clock=clock, rng=rng, environ=environ, poll_s=poll_s)
        try:
            await dispatcher.start()
            log.info("dispatcher started", extra={"data_dir": str(data_dir), "cursor": dispatcher.cursor})
            await dispatcher.run(stop or asyncio.Event())
        finally:
            with contextlib.suppress(Exception):
                await dispatcher.close()
