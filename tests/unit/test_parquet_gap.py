"""The Parquet consumer's loop when a delivery is lost on the way: JetStream delivers
the lost messages again only after the acknowledgement wait, after later ones. The
loop must notice the hole in the consumer's delivery numbers and write nothing
past it — skipping the late ones as "written already" would lose them, since
acknowledging a later message acknowledges them too."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from polku.adapters.nats.indexer import WORKSPACE_HEADER
from polku.core.events import Event, format_millis
from polku.engine.parquet_feed import DeliveryGap, ParquetFeed
from polku.engine.scale_worker import ScaleOut

T0 = 1_790_000_000_000


def delivery(seq: int, number: int) -> Any:
    """Stream message ``seq`` as the consumer's ``number``-th delivery."""
    event = Event(
        message_id=f"m{seq}",
        type="track",
        channel="web",
        source="default",
        user_id="u",
        event="Step",
        timestamp=format_millis(T0),
        received_at=format_millis(T0),
    )

    async def ack() -> None:
        return None

    metadata = SimpleNamespace(sequence=SimpleNamespace(stream=seq, consumer=number))
    return SimpleNamespace(
        metadata=metadata, headers={WORKSPACE_HEADER: "default"}, data=msgspec.json.encode(event), ack=ack
    )


class Subscription:
    def __init__(self, fetches: list[list[Any]]) -> None:
        self.fetches = fetches

    async def fetch(self, batch: int, timeout: float) -> list[Any]:  # noqa: ASYNC109 (nats-py's signature)
        found = self.fetches.pop(0) if self.fetches else []
        if not found:  # nothing new: a real fetch waits out its timeout
            await asyncio.sleep(timeout)
            raise TimeoutError
        return found


def feed(tmp_path: Path) -> tuple[ParquetFeed, list[int]]:
    deployment = ScaleOut.checked(
        store_url="postgresql://x@127.0.0.1/x", bus_url="nats://127.0.0.1:4222", stream="S", subject_prefix="p.ev"
    )
    found = ParquetFeed(deployment, tmp_path, max_events=1000, max_seconds=0.2)
    found._configs_read = time.monotonic() + 1e9  # no PostgreSQL here: the defaults apply
    written: list[int] = []

    async def write(batch: Any) -> None:
        written.extend(row for row in range(batch.first, batch.last + 1))
        found.high_water = batch.last

    found._write = write  # type: ignore[method-assign]
    return found, written


async def run_loop(found: ParquetFeed, subscription: Subscription, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(found._loop(stop, subscription, None))  # type: ignore[arg-type]
    await asyncio.sleep(seconds)
    stop.set()
    await task


@pytest.mark.anyio
async def test_a_lost_delivery_stops_the_loop_before_anything_past_it_is_written(tmp_path: Path) -> None:
    found, written = feed(tmp_path)
    # Deliveries 1-2 arrive and are written; 3-4 (stream 3, 4) are lost; 5-6 arrive.
    subscription = Subscription([[delivery(1, 1), delivery(2, 2)], [], [], [delivery(5, 5), delivery(6, 6)]])
    with pytest.raises(DeliveryGap, match="deliveries 3-4"):
        await run_loop(found, subscription, 2.0)
    assert written == [1, 2] and found.high_water == 2  # 5 and 6 not written: read again after 2


@pytest.mark.anyio
async def test_redeliveries_in_order_are_no_gap(tmp_path: Path) -> None:
    found, written = feed(tmp_path)
    # Stream 1-2 delivered (1, 2), then delivered again after the wait (3, 4), then 3.
    subscription = Subscription([[delivery(1, 1), delivery(2, 2)], [delivery(1, 3), delivery(2, 4), delivery(3, 5)]])
    await run_loop(found, subscription, 1.0)
    assert sorted(set(written)) == [1, 2, 3]
