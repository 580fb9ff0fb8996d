"""One contract for every ``EventLog`` adapter: memory, SQLite, and NATS JetStream with
its index and quarantine in PostgreSQL (a fresh stream and schema per test).

The NATS log's queries read an index written behind the stream (docs/nats.md), so
the tests ``settle`` between appending and querying; for the other adapters that is
a no-op."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from polku.adapters.memory import MemoryEventLog
from polku.adapters.nats import NatsEventLog
from polku.adapters.sqlite import SqliteEventLog
from polku.core.errors import Conflict, NotFound
from polku.core.events import Event, Rejection
from polku.ports import AppendBatch, EventLog, EventQuery
from tests.contract.conftest import NATS_URL, fresh_stream

Factory = Callable[[Path], EventLog]
ADAPTERS: dict[str, Factory] = {
    "memory": lambda path: MemoryEventLog(),
    "sqlite": lambda path: SqliteEventLog(path),
    "sqlite-thread": lambda path: SqliteEventLog(path, writer="thread"),
}
ALL_ADAPTERS = [*ADAPTERS, "nats"]


def event(
    message_id: str,
    *,
    user: str = "u1",
    name: str = "Clicked",
    channel: str = "web",
    ts: str = "2024-01-01T00:00:00.000Z",
) -> Event:
    return Event(
        message_id=message_id,
        type="track",
        channel=channel,
        source="default",
        timestamp=ts,
        received_at="2024-01-01T00:00:01.000Z",
        user_id=user,
        event=name,
        properties={"n": message_id},
    )


def batch(*events: Event, rejections: list[Rejection] | None = None, workspace: str = "w") -> AppendBatch:
    return AppendBatch(
        workspace=workspace,
        source="default",
        received_ms=1_704_067_201_000,
        events=list(events),
        rejections=rejections or [],
    )


@pytest.fixture(params=sorted(ALL_ADAPTERS))
async def log(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventLog]:
    if request.param != "nats":
        adapter = ADAPTERS[request.param](tmp_path)
        await adapter.start()
        yield adapter
        await adapter.close()
        return
    postgres_url: str = request.getfixturevalue("postgres_url")
    schema: str = request.getfixturevalue("postgres_schema")
    async with fresh_stream() as (stream, prefix):
        nats_log = NatsEventLog(
            NATS_URL, postgres_url, stream=stream, subject_prefix=prefix, schema=schema, partitions=8
        )
        await nats_log.start()
        try:
            yield nats_log
        finally:
            await nats_log.close()


async def settle(log: EventLog) -> None:
    """Wait until what was appended can be queried (the NATS log's index)."""
    if isinstance(log, NatsEventLog):
        await log.settle(10)


pytestmark = pytest.mark.anyio


async def test_append_stores_events_in_order(log: EventLog) -> None:
    result = await log.append(batch(event("a"), event("b"), event("c")))
    assert (result.accepted, result.duplicates, result.quarantined) == (3, 0, 0)
    await settle(log)
    page = await log.query(EventQuery(workspace="w"))
    assert [stored.event.message_id for stored in page.events] == ["a", "b", "c"]
    assert [stored.seq for stored in page.events] == sorted(stored.seq for stored in page.events)
    assert page.events[0].event == event("a")
    assert page.next_cursor is None


async def test_duplicate_message_ids_are_stored_once_per_workspace(log: EventLog) -> None:
    await log.append(batch(event("a"), event("b")))
    again = await log.append(batch(event("b"), event("c"), event("c")))
    assert (again.accepted, again.duplicates) == (1, 2)
    other = await log.append(batch(event("a"), workspace="other"))
    assert other.accepted == 1
    await settle(log)
    page = await log.query(EventQuery(workspace="w"))
    assert [stored.event.message_id for stored in page.events] == ["a", "b", "c"]


async def test_concurrent_appends_all_land(log: EventLog) -> None:
    results = await asyncio.gather(*(log.append(batch(event(f"m{i}"))) for i in range(200)))
    assert sum(result.accepted for result in results) == 200
    await settle(log)
    page = await log.query(EventQuery(workspace="w", limit=1000))
    assert len(page.events) == 200


async def test_query_filters_and_pages(log: EventLog) -> None:
    await log.append(
        batch(
            event("a", user="u1", channel="web", ts="2024-01-01T00:00:00.000Z"),
            event("b", user="u2", channel="app", ts="2024-01-02T00:00:00.000Z"),
            event("c", user="u1", channel="app", name="Bought", ts="2024-01-03T00:00:00.000Z"),
        )
    )
    await settle(log)

    async def ids(**filters: object) -> list[str]:
        page = await log.query(EventQuery(workspace="w", **filters))  # type: ignore[arg-type]
        return [stored.event.message_id for stored in page.events]

    assert await ids(identifier="u1") == ["a", "c"]
    assert await ids(user_id="u2") == ["b"]
    assert await ids(channel="app") == ["b", "c"]
    assert await ids(name="Bought") == ["c"]
    assert await ids(type="identify") == []
    assert await ids(since_ms=1_704_153_600_000) == ["b", "c"]
    assert await ids(until_ms=1_704_153_600_000) == ["a"]
    first = await log.query(EventQuery(workspace="w", limit=2))
    assert [s.event.message_id for s in first.events] == ["a", "b"]
    assert first.next_cursor is not None
    rest = await log.query(EventQuery(workspace="w", limit=2, after_seq=first.next_cursor))
    assert [s.event.message_id for s in rest.events] == ["c"]
    assert rest.next_cursor is None


async def test_rejections_are_quarantined_with_the_batch(log: EventLog) -> None:
    rejection = Rejection(code="missing_identity", reason="needs userId", body=b'{"type":"track"}', index=1)
    result = await log.append(batch(event("a"), rejections=[rejection]))
    assert (result.accepted, result.quarantined) == (1, 1)
    [entry] = await log.quarantined("w", status="open", after_id=0, limit=10)
    assert (entry.code, entry.reason, entry.body, entry.source) == (
        "missing_identity",
        "needs userId",
        b'{"type":"track"}',
        "default",
    )
    assert await log.quarantined("other", status=None, after_id=0, limit=10) == []
    assert await log.quarantine_entry("w", entry.id) == entry


async def test_resolving_a_quarantine_entry_appends_once(log: EventLog) -> None:
    rejection = Rejection(code="missing_field", reason="no event", body=b"{}", index=0)
    await log.append(batch(rejections=[rejection, rejection]))
    first, second = await log.quarantined("w", status="open", after_id=0, limit=10)
    result = await log.resolve_quarantined("w", first.id, event=event("fixed"), resolved_ms=5)
    assert result.accepted == 1
    with pytest.raises(Conflict):
        await log.resolve_quarantined("w", first.id, event=event("fixed"), resolved_ms=6)
    await log.resolve_quarantined("w", second.id, event=None, resolved_ms=7)
    assert await log.quarantined("w", status="open", after_id=0, limit=10) == []
    statuses = [(e.status, e.resolved_ms) for e in await log.quarantined("w", status=None, after_id=0, limit=10)]
    assert statuses == [("resubmitted", 5), ("discarded", 7)]
    with pytest.raises(NotFound):
        await log.resolve_quarantined("w", 999, event=None, resolved_ms=8)
    await settle(log)
    page = await log.query(EventQuery(workspace="w"))
    assert [s.event.message_id for s in page.events] == ["fixed"]
