"""A worker's view of the stream: the partitions it holds, as the processor's
``LogReader`` (docs/scale-out.md, "Workers: exactly-once effect").

Each partition has a durable pull consumer (``polku-work-<n>-<epoch>``,
acknowledge-all, filtered to the partition's subject). Taking a partition (``hold``)
deletes the previous holder's and creates its own to start right after the partition's committed checkpoint, so a new holder reads on
from where the last commit left off at once instead of waiting out the previous
holder's acknowledgement timeout. A task per partition fetches into the partition's
buffer (up to ``fetch`` messages ahead) while the processor works; ``read`` hands the processor the lowest sequences of all buffers (so the batch is in
stream order and its checkpoint is its last sequence). A message leaves its buffer
only once its batch committed (``committed``), and is acknowledged after that
(``acknowledge``): a crash in between redelivers what the checkpoint then skips.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from polku.adapters.nats.indexer import WORKSPACE_HEADER
from polku.adapters.nats.routing import subject
from polku.adapters.postgres.catalog_reads import CatalogReads

log = logging.getLogger("polku.worker")

CONSUMER_PREFIX: Final = "polku-work-"
ACK_WAIT_S: Final = 60.0
FETCH_WAIT_S: Final = 1.0
"""How long one fetch waits on an idle partition (its pump simply asks again)."""


@dataclass
class Held:
    partition: int
    epoch: int
    checkpoint: int
    """The last sequence whose effects are committed."""
    subscription: JetStreamContext.PullSubscription
    buffer: deque[tuple[int, str, bytes, Msg]] = field(default_factory=deque)
    highest: int = 0
    """The highest sequence buffered or committed: a redelivery at or below is dropped."""
    to_ack: Msg | None = None
    pump: asyncio.Task[None] | None = None


def _rows(partition: int, buffer: deque[tuple[int, str, bytes, Msg]]) -> Iterator[tuple[int, int, str, bytes]]:
    """A buffer's rows with their partition (a function, so each binds its own)."""
    for seq, workspace, body, _ in buffer:
        yield seq, partition, workspace, body


def consumer_name(partition: int, epoch: int) -> str:
    """Per lease epoch: a previous holder's subscription (a stalled worker whose pump
    still runs) then fetches from a consumer that no longer exists, instead of
    taking half of the new holder's messages."""
    return f"{CONSUMER_PREFIX}{partition}-{epoch}"


class PartitionFeed:
    def __init__(
        self,
        js: JetStreamContext,
        catalog: CatalogReads,
        bodies: Callable[[Sequence[int]], dict[int, bytes]],
        *,
        stream: str,
        subject_prefix: str,
        fetch: int = 1000,
    ) -> None:
        self.js = js
        self.catalog = catalog
        self._bodies = bodies
        self.stream = stream
        self.subject_prefix = subject_prefix
        self.fetch_size = fetch
        self.held: dict[int, Held] = {}
        self.handed: list[tuple[int, int]] = []
        """(sequence, partition) of the rows the last ``read`` returned."""
        self.skipped = 0
        """Messages dropped as redeliveries or as not polku's."""
        self.arrived = asyncio.Event()
        """Set when a pump added messages (the worker waits on it when idle)."""
        # The pumps append on the event loop while the processor's thread reads and
        # commits: the buffers change under this lock only.
        self.lock = threading.Lock()

    # -- partitions ------------------------------------------------------------

    async def hold(self, partition: int, epoch: int, checkpoint: int) -> None:
        """Start reading ``partition`` after ``checkpoint`` (its lease is ours at ``epoch``)."""
        await self.drop(partition)
        name = consumer_name(partition, epoch)
        for earlier in (consumer_name(partition, epoch - 1), name):
            try:
                await self.js.delete_consumer(self.stream, earlier)
            except NotFoundError:
                pass
        await self.js.add_consumer(
            self.stream,
            ConsumerConfig(
                durable_name=name,
                filter_subject=subject(self.subject_prefix, partition),
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=checkpoint + 1,
                ack_policy=AckPolicy.ALL,
                ack_wait=ACK_WAIT_S,
                max_ack_pending=20_000,
            ),
        )
        subscription = await self.js.pull_subscribe_bind(durable=name, stream=self.stream)
        held = Held(partition, epoch, checkpoint, subscription, highest=checkpoint)
        self.held[partition] = held
        held.pump = asyncio.create_task(self._pump(held), name=f"polku-feed-{partition}")

    async def drop(self, partition: int) -> None:
        """Stop reading ``partition``; what it had buffered is forgotten (uncommitted)."""
        with self.lock:
            held = self.held.pop(partition, None)
            if held is None:
                return
            self.handed = [(seq, p) for seq, p in self.handed if p != partition]
        if held.pump is not None:
            held.pump.cancel()
        try:
            await held.subscription.unsubscribe()
        except nats.errors.Error:
            pass

    def epochs(self) -> dict[int, int]:
        return {partition: held.epoch for partition, held in self.held.items()}

    # -- fetching --------------------------------------------------------------

    def buffered(self) -> int:
        return sum(len(held.buffer) for held in self.held.values())

    async def stop(self) -> None:
        """Stop reading every partition (the worker is stopping)."""
        for partition in list(self.held):
            await self.drop(partition)

    async def _pump(self, held: Held) -> None:
        """Keep ``held``'s buffer filled until the partition is dropped."""
        while self.held.get(held.partition) is held:
            room = self.fetch_size - len(held.buffer)
            if room <= 0:  # a full buffer waits for the processor to take from it
                await asyncio.sleep(0.05)
                continue
            try:
                messages = await held.subscription.fetch(room, timeout=FETCH_WAIT_S)
            except TimeoutError:  # nothing new (nats' TimeoutError is one too)
                continue
            except nats.errors.Error as error:  # reconnecting, or the consumer was re-created by a new holder
                log.warning("partition %d: fetch failed: %s", held.partition, error)
                await asyncio.sleep(0.5)
                continue
            if self._buffer(held, messages):
                self.arrived.set()

    def _buffer(self, held: Held, messages: list[Msg]) -> int:
        arrived = 0
        with self.lock:
            if self.held.get(held.partition) is not held:  # dropped while fetching
                return 0
            for message in messages:
                seq = message.metadata.sequence.stream
                workspace = (message.headers or {}).get(WORKSPACE_HEADER)
                if seq <= held.highest or workspace is None:
                    if workspace is None:
                        log.error(
                            "message %d of stream %s has no %s header: skipped", seq, self.stream, WORKSPACE_HEADER
                        )
                    self.skipped += 1
                    continue
                held.buffer.append((seq, workspace, message.data, message))
                held.highest = seq
                arrived += 1
        return arrived

    # -- the processor's LogReader -------------------------------------------------

    def read(self, after_seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        """The ``limit`` lowest sequences buffered (``after_seq`` is the processor's
        own checkpoint; the partitions' checkpoints are what count here)."""
        with self.lock:  # each buffer is in sequence order: merge their heads
            merged = heapq.merge(*(_rows(partition, held.buffer) for partition, held in self.held.items()))
            rows = list(itertools.islice(merged, limit))
        self.handed = [(seq, partition) for seq, partition, _, _ in rows]
        return [(seq, workspace, body) for seq, _, workspace, body in rows]

    def positions(self, checkpoint: int) -> Mapping[int, tuple[int, int, int]]:
        """partition → (last sequence, epoch, committed checkpoint) of the handed
        rows up to ``checkpoint`` not committed yet: what a commit at ``checkpoint``
        applies, and where it must find each partition."""
        found: dict[int, tuple[int, int, int]] = {}
        for seq, partition in self.handed:
            held = self.held.get(partition)
            if seq <= checkpoint and held is not None and seq > held.checkpoint:
                last = max(seq, found[partition][0]) if partition in found else seq
                found[partition] = (last, held.epoch, held.checkpoint)
        return found

    def applied(self, checkpoint: int) -> list[tuple[int, str, bytes]]:
        """The handed rows up to ``checkpoint`` not committed yet: what a commit at
        ``checkpoint`` applies, as (sequence, workspace, body)."""
        wanted = {(seq, partition) for seq, partition in self.handed if seq <= checkpoint}
        found = []
        with self.lock:
            for partition in {partition for _, partition in wanted}:
                held = self.held.get(partition)
                if held is None:
                    continue
                for seq, workspace, body, _ in held.buffer:
                    if seq > checkpoint:
                        break
                    if (seq, partition) in wanted and seq > held.checkpoint:
                        found.append((seq, workspace, body))
        return sorted(found)

    def skip(self, seqs: Sequence[int]) -> None:
        """Leave these messages out (repeats of an earlier messageId): they are
        acknowledged with the next commit of their partition."""
        unwanted = set(seqs)
        with self.lock:
            for held in self.held.values():
                kept = [row for row in held.buffer if row[0] not in unwanted]
                self.skipped += len(held.buffer) - len(kept)
                held.buffer = deque(kept)
            self.handed = [(seq, p) for seq, p in self.handed if seq not in unwanted]

    def committed(self, checkpoint: int) -> None:
        """The handed rows up to ``checkpoint`` are committed: out of the buffers, to acknowledge."""
        with self.lock:
            for seq, partition in self.handed:
                held = self.held.get(partition)
                if seq > checkpoint or held is None:
                    continue
                while held.buffer and held.buffer[0][0] <= seq:
                    done, _, _, message = held.buffer.popleft()
                    held.checkpoint = max(held.checkpoint, done)
                    held.to_ack = message
            self.handed = [(seq, p) for seq, p in self.handed if seq > checkpoint]

    async def acknowledge(self) -> None:
        """Acknowledge every partition up to its committed checkpoint (acknowledge-all)."""
        for held in self.held.values():
            message, held.to_ack = held.to_ack, None
            if message is not None:
                try:
                    await message.ack()
                except nats.errors.Error as error:  # the checkpoint skips the redelivery
                    log.warning("partition %d: acknowledgement failed: %s", held.partition, error)

    def bodies(self, seqs: Sequence[int]) -> dict[int, bytes]:
        """Earlier events by sequence, whichever partition (a merge folds a history again)."""
        return self._bodies(seqs)

    def last_seq(self) -> int:
        return max((held.highest for held in self.held.values()), default=0)

    def configs(self) -> dict[str, bytes]:
        return self.catalog.configs()

    def journeys(self) -> list[tuple[str, str, int, str, str]]:
        return self.catalog.journeys()

    def journeys_token(self) -> tuple[object, ...]:
        return self.catalog.journeys_token()

    def surveys(self) -> list[tuple[str, str, int, str, str]]:
        return self.catalog.surveys()

    def close(self) -> None:
        """Nothing to close here (``drop`` ends the subscriptions)."""
