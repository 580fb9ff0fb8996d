"""The partition feed against a real NATS server: a stalled previous holder whose
pump still runs must not take messages from the partition's new holder."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from tests.contract.conftest import nats_reachable

from polku.adapters.nats.indexer import WORKSPACE_HEADER
from polku.adapters.nats.partition_feed import PartitionFeed

pytestmark = pytest.mark.anyio


@pytest.fixture
async def stream() -> AsyncIterator[tuple[JetStreamContext, str, str]]:
    client = await nats.connect(nats_reachable())
    js = client.jetstream()
    token = uuid.uuid4().hex[:10]
    name, prefix = f"POLKU_FEED_{token}", f"polku_feed_{token}.ev"
    await js.add_stream(StreamConfig(name=name, subjects=[f"{prefix}.*"], storage=StorageType.MEMORY))
    try:
        yield js, name, prefix
    finally:
        await js.delete_stream(name)
        await client.close()


def feed(js: JetStreamContext, name: str, prefix: str) -> PartitionFeed:
    return PartitionFeed(js, None, lambda seqs: {}, stream=name, subject_prefix=prefix, fetch=5)  # type: ignore[arg-type]


async def test_a_new_holder_gets_every_message_though_the_old_holder_still_fetches(
    stream: tuple[JetStreamContext, str, str],
) -> None:
    js, name, prefix = stream
    old, new = feed(js, name, prefix), feed(js, name, prefix)
    try:
        await old.hold(0, 1, 0)  # a worker held partition 0 at epoch 1 …
        await asyncio.sleep(0.2)
        await new.hold(0, 2, 0)  # … stalled past its lease, and another took it (epoch 2)
        for _ in range(30):
            await js.publish(f"{prefix}.0", b"{}", headers={WORKSPACE_HEADER: "default"})
            await asyncio.sleep(0.005)
        seen: list[int] = []
        for _ in range(200):  # take and commit in batches, as the worker does
            rows = new.read(0, 1000)
            if rows:
                seen += [seq for seq, _, _ in rows]
                new.committed(rows[-1][0])
                await new.acknowledge()
            if len(seen) >= 30:
                break
            await asyncio.sleep(0.02)
        assert seen == list(range(1, 31))
        assert not old.held[0].buffer  # the stale subscription got nothing
    finally:
        await old.stop()
        await new.stop()
