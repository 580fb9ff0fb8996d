"""The event log on NATS JetStream against real NATS and PostgreSQL servers: what the
contract suite cannot see — the duplicate window and the permanent deduplication
behind it, what lands on the stream, back-pressure and a server that is not there.
Crash tests come with the workers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import msgspec
import nats
import psycopg
import pytest
from tests.conftest import free_port
from tests.contract.conftest import NATS_URL, fresh_database, fresh_stream

from polku.adapters.nats import NatsEventLog
from polku.adapters.nats.routing import message_id, partition
from polku.core.errors import ConfigError, Unavailable
from polku.core.events import Event
from polku.ports import AppendBatch, EventQuery

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
def schema() -> str:
    return f"nats_{uuid.uuid4().hex[:12]}"


def event(message_id: str, user: str = "u1") -> Event:
    return Event(
        message_id=message_id,
        type="track",
        channel="web",
        source="default",
        timestamp="2024-01-01T00:00:00.000Z",
        received_at="2024-01-01T00:00:01.000Z",
        user_id=user,
        event="Clicked",
    )


def batch(*events: Event, workspace: str = "w") -> AppendBatch:
    return AppendBatch(workspace=workspace, source="default", received_ms=1_704_067_201_000, events=list(events))


Factory = Callable[..., NatsEventLog]


@pytest.fixture
async def make_log(database: str, schema: str) -> AsyncIterator[Factory]:
    """Makes ``NatsEventLog``s on one fresh stream and schema (keyword options as the
    constructor's); closes them after the test."""
    made: list[NatsEventLog] = []
    async with fresh_stream() as (stream, prefix):

        def make(**options: Any) -> NatsEventLog:
            log = NatsEventLog(NATS_URL, database, stream=stream, subject_prefix=prefix, schema=schema, **options)
            made.append(log)
            return log

        yield make
        for log in made:
            await log.close()


async def indexed_rows(database: str, schema: str) -> list[tuple[int, bytes]]:
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as connection:
        cursor = await connection.execute(
            psycopg.sql.SQL("SELECT seq, message_id FROM {}.events ORDER BY seq").format(psycopg.sql.Identifier(schema))
        )
        return [(int(seq), bytes(found)) for seq, found in await cursor.fetchall()]


async def test_a_resend_within_the_window_is_a_duplicate(make_log: Factory) -> None:
    log = make_log()
    await log.start()
    first = await log.append(batch(event("a"), event("b")))
    again = await log.append(batch(event("b"), event("a")))
    assert (first.accepted, first.duplicates) == (2, 0)
    assert (again.accepted, again.duplicates) == (0, 2)
    elsewhere = await log.append(batch(event("a"), workspace="other"))
    assert (elsewhere.accepted, elsewhere.duplicates) == (1, 0)


async def test_after_the_window_a_resend_is_acknowledged_and_indexed_once(
    make_log: Factory, database: str, schema: str
) -> None:
    log = make_log(duplicate_window_s=1.0)
    await log.start()
    assert (await log.append(batch(event("a")))).accepted == 1
    # The stream forgets the id once the window has passed (its purge runs on a timer).
    for _ in range(40):
        await asyncio.sleep(0.25)
        resent = await log.append(batch(event("a")))
        if resent.accepted:
            break
    assert (resent.accepted, resent.duplicates) == (1, 0)
    await log.settle(10)
    assert log._js is not None
    assert (await log._js.stream_info(log.stream)).state.messages >= 2
    rows = await indexed_rows(database, schema)
    assert [found for _, found in rows] == [b"a"]  # the first copy, once
    page = await log.query(EventQuery(workspace="w"))
    assert [stored.event.message_id for stored in page.events] == ["a"]


async def test_an_event_lands_on_its_partition_under_its_id(make_log: Factory) -> None:
    log = make_log(partitions=8)
    await log.start()
    await log.append(batch(event("a", user="alice")))
    client = await nats.connect(NATS_URL)
    try:
        stored = await client.jetstream().get_msg(log.stream, 1)
    finally:
        await client.close()
    assert stored.subject == f"{log.subject_prefix}.{partition('w', 'alice', 8)}"
    assert stored.headers is not None
    assert stored.headers["Nats-Msg-Id"] == message_id("w", "a") == "w:a"
    assert stored.headers["Polku-Workspace"] == "w"
    assert stored.data == msgspec.json.encode(event("a", user="alice"))  # the bytes the SQLite log stores


async def test_identifiers_a_header_cannot_carry_are_kept_exactly(make_log: Factory) -> None:
    log = make_log()
    await log.start()
    odd = ["line\r\nbreak", "nul\0byte", " padded ", "päivää"]
    first = await log.append(batch(*(event(found, user=found) for found in odd)))
    again = await log.append(batch(*(event(found, user=found) for found in odd)))
    assert (first.accepted, again.duplicates) == (4, 4)
    await log.settle(10)
    for found in odd:
        page = await log.query(EventQuery(workspace="w", identifier=found))
        assert [stored.event.message_id for stored in page.events] == [found]


async def test_over_max_pending_events_appends_are_refused(make_log: Factory) -> None:
    log = make_log(max_pending_events=1)
    await log.start()
    results = await asyncio.gather(log.append(batch(event("a"))), log.append(batch(event("b"))), return_exceptions=True)
    assert not isinstance(results[0], BaseException) and results[0].accepted == 1
    assert isinstance(results[1], Unavailable) and results[1].retry_after >= 1
    assert log.pending_events() == 0
    assert (await log.append(batch(event("b")))).accepted == 1


async def test_a_bus_that_is_not_there_is_a_config_error(database: str, schema: str) -> None:
    log = NatsEventLog(f"nats://127.0.0.1:{free_port()}", database, schema=schema, ack_timeout_s=1.0)
    with pytest.raises(ConfigError, match="cannot connect to NATS"):
        await log.start()
    await log.close()


async def test_the_partition_count_is_fixed_with_the_stream(make_log: Factory) -> None:
    await make_log(partitions=8).start()
    with pytest.raises(ConfigError, match="has 8 partitions, not 16"):
        await make_log(partitions=16).start()
