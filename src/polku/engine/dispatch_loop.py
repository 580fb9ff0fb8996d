"""The delivery loop both dispatchers run: the embedded one (``dispatcher.py``, its
ledger in SQLite) and the scale-out one (``scale_dispatcher.py``, its ledger in
PostgreSQL, shared by several).

Each round takes the outbox's new messages into the ledger (``DeliveryLedger``), then
claims the due deliveries lane by lane — one lane per configured channel of a
workspace, each with its own connector and ``concurrency`` slots, so one slow or
failing destination never holds up another — and delivers each in a task of its own.
An attempt is counted before it is made and its outcome recorded right after the
channel answered (``polku.core.deliveries.settle``: sent, dead, or tried again after
a backoff); a settled delivery's result is then written into the log as a
``Message Sent`` or ``Message Failed`` event with a deterministic messageId, so an
event written twice is kept once. Channels are built again within a second of a
workspace's configuration changing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final

import msgspec

from polku.adapters.channels import Channel, DeliveryResult, build_channel
from polku.adapters.sqlite.log_reader import decode_config
from polku.core.channels import FAILED_EVENT, SENT_EVENT, ChannelConfig, OutboundMessage
from polku.core.deliveries import Due, Lane, Outcome, settle
from polku.core.errors import PolkuError, StoreUnavailable
from polku.core.events import Event
from polku.engine.runtime import INTERNAL_SOURCE, internal_event
from polku.ports import AppendBatch, DeliveryLedger, EventLog

log = logging.getLogger("polku.dispatcher")
CONFIG_REFRESH_S: Final = 1.0
BATCH_SIZE: Final = 500
QUEUED_PER_SLOT: Final = 2
"""Deliveries taken per unit of a channel's concurrency (the rest wait in the ledger)."""
RECORD_RETRY_S: Final = 0.5
"""How often an outcome the store could not take is offered again."""

Configs = Callable[[], Awaitable[Mapping[str, bytes]]]
"""Each workspace's stored configuration (JSON bytes, compared to notice changes)."""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class ChannelLane:
    """One configured channel of one workspace: its connector and its slots."""

    workspace: str
    name: str
    config: ChannelConfig
    connector: Channel
    semaphore: asyncio.Semaphore
    inflight: int = 0


def result_event(
    name: str, config: ChannelConfig | None, message: OutboundMessage, attempts: int, now: int, error: str | None
) -> Event:
    """``Message Sent`` or ``Message Failed``, on the channel's event channel; its
    messageId depends only on the message's key."""
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


class DispatchLoop:
    def __init__(
        self,
        ledger: DeliveryLedger,
        event_log: EventLog,
        configs: Configs,
        *,
        clock: Callable[[], int] = wall_clock_ms,
        rng: random.Random | None = None,
        environ: Mapping[str, str] | None = None,
        poll_s: float,
        batch_size: int = BATCH_SIZE,
        record_for_s: float = 0.0,
    ) -> None:
        self.ledger = ledger
        self.event_log = event_log
        self.configs = configs
        self.clock = clock
        self.rng = rng or random.Random()
        self.environ = os.environ if environ is None else environ
        self.poll_s = poll_s
        self.batch_size = batch_size
        self.record_for_s = record_for_s
        """How long an outcome is offered again while the store is unavailable."""
        self.lanes: dict[Lane, ChannelLane] = {}
        self._retired: list[ChannelLane] = []
        self._config_bodies: Mapping[str, bytes] = {}
        self._inflight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._next_check = 0

    async def start(self) -> None:
        await self.event_log.start()
        await self.refresh_configs()
        await self.announce_unannounced()

    async def announce_unannounced(self) -> None:
        """Write the results a killed dispatcher had recorded but not yet told."""
        for settled in await self.ledger.unannounced(self._inflight):
            if settled.message is not None:
                lane = self.lanes.get((settled.workspace, settled.channel))
                name = SENT_EVENT if settled.status == "sent" else FAILED_EVENT
                event = result_event(
                    name, lane.config if lane else None, settled.message, settled.attempts, settled.at_ms, settled.error
                )
                await self._append(settled.workspace, event)
            await self.ledger.announced(settled.key)

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
        await self.ledger.close()

    # -- configuration ------------------------------------------------------------

    async def refresh_configs(self) -> bool:
        """Build the lanes of the workspaces' channels again where they changed."""
        bodies = await self.configs()
        if bodies == self._config_bodies:
            return False
        self._config_bodies = bodies
        wanted: dict[Lane, ChannelConfig] = {}
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
                self.lanes[pair] = ChannelLane(
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

    # -- delivering ------------------------------------------------------------

    async def take_new(self) -> int:
        return await self.ledger.take_new(self.clock())

    async def dispatch_due(self, now: int) -> int:
        """Start the deliveries that are due, as far as each channel has room."""
        started = 0
        refreshed = False
        for pair in sorted(await self.ledger.due_lanes(now)):
            lane = self.lanes.get(pair)
            if lane is None and not refreshed:
                # A channel configured a moment ago is not dead-lettered for it.
                await self.refresh_configs()
                refreshed = True
                lane = self.lanes.get(pair)
            room = (lane.config.concurrency * QUEUED_PER_SLOT - lane.inflight) if lane is not None else self.batch_size
            if room <= 0:
                continue
            for item in await self.ledger.claim(pair, now, room, self._inflight):
                if item.message is None:  # erased from the outbox: nothing to send, nothing to tell,
                    await self.ledger.forget(item.key)  # and no row naming the erased person
                    continue
                self._inflight.add(item.key)
                if lane is not None:
                    lane.inflight += 1
                task = asyncio.create_task(self._attempt(lane, item, item.message))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                started += 1
        return started

    async def _attempt(self, lane: ChannelLane | None, item: Due, message: OutboundMessage) -> None:
        try:
            if lane is None:
                result = DeliveryResult.failed(f"channel {item.channel} is not configured")
            else:
                async with lane.semaphore:
                    if not await self.ledger.start_attempt(item):
                        log.warning("message %s: the claim on it lapsed before it was sent; left to others", item.key)
                        return
                    try:
                        result = await lane.connector.deliver(message)
                    except Exception as error:  # a connector's bug must not stop the others
                        log.exception("channel %s failed on %s", lane.name, item.key)
                        result = DeliveryResult.retry(f"{type(error).__name__}: {error}")
            await self._finish(lane.config if lane is not None else None, item, message, result)
        except StoreUnavailable as error:  # the claim lapses and the delivery is tried again
            log.error("message %s: the ledger is unavailable: %s", item.key, error)
        finally:
            if lane is not None:
                lane.inflight -= 1
            self._inflight.discard(item.key)
            self._wake.set()

    async def _finish(
        self, config: ChannelConfig | None, item: Due, message: OutboundMessage, result: DeliveryResult
    ) -> None:
        outcome = settle(
            ok=result.ok,
            permanent=result.permanent,
            error=result.error,
            retry_after_s=result.retry_after_s,
            config=config,
            attempts=item.attempts + 1,
            now=self.clock(),
            uniform=self.rng.uniform,
        )
        recorded = await self._record(item, outcome)
        if outcome.next_attempt_ms is not None:
            self._next_check = min(self._next_check, outcome.next_attempt_ms)
            return
        if not recorded:
            return
        if outcome.status == "dead":
            log.warning("message %s dead-lettered after %d attempts: %s", item.key, outcome.attempts, outcome.error)
        name = SENT_EVENT if outcome.status == "sent" else FAILED_EVENT
        await self._append(
            item.workspace, result_event(name, config, message, outcome.attempts, outcome.at_ms, outcome.error)
        )
        await self.ledger.announced(item.key)

    async def _record(self, item: Due, outcome: Outcome) -> bool:
        """Settle ``item``, offering it again for ``record_for_s`` while the store is
        unavailable: a sent message not recorded as sent is sent again."""
        deadline = time.monotonic() + self.record_for_s
        while True:
            try:
                return await self.ledger.settle(item, outcome)
            except StoreUnavailable:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(RECORD_RETRY_S)

    async def _append(self, workspace: str, event: Event) -> None:
        try:
            await self.event_log.append(
                AppendBatch(workspace=workspace, source=INTERNAL_SOURCE, received_ms=self.clock(), events=[event])
            )
        except PolkuError as error:  # the delivery stands; only its event is missing
            log.error("could not write %s for %s: %s", event.event, workspace, error)

    # -- the loop ----------------------------------------------------------------

    def _poll_interval(self) -> float:
        return self.poll_s

    async def run(self, stop: asyncio.Event) -> None:
        refreshed = time.monotonic()
        while not stop.is_set():
            dirty = self._wake.is_set()
            self._wake.clear()
            if time.monotonic() - refreshed >= CONFIG_REFRESH_S:
                dirty = await self.refresh_configs() or dirty
                refreshed = time.monotonic()
                await self._close_retired()
            taken = await self.take_new()
            now = self.clock()
            if taken or dirty or now >= self._next_check:
                await self.dispatch_due(now)
                self._next_check = await self.ledger.next_due(now)
            if taken < self.batch_size and not self._wake.is_set():
                # A nudge or a delivery finishing sets _wake; the timeout is the
                # poll for when no nudge can come.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_interval())

    async def run_until_idle(self, timeout_s: float = 10.0) -> None:
        """Deliver until nothing is due and nothing is under way (tests, ``--once``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            taken = await self.take_new()
            await self.dispatch_due(self.clock())
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=deadline - time.monotonic())
                continue
            if not taken:
                return
        raise TimeoutError("the dispatcher did not become idle")
