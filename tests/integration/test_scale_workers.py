"""Workers of the scale-out deployment against real NATS and PostgreSQL servers:
several workers share the partitions, identity merges span partitions while both
identifiers keep sending, and the result equals the embedded processor's on the
same input."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import psycopg
import pytest
from tests.contract.conftest import NATS_URL, fresh_database
from tests.integration.scale_processes import api_log, fresh_deployment

from polku.adapters.memory import MemoryLogReader
from polku.adapters.memory_state import MemoryStateStore
from polku.adapters.nats import NatsEventLog
from polku.adapters.nats.routing import partition
from polku.adapters.postgres.state_store import PostgresStateStore
from polku.core.events import Event, format_millis
from polku.core.workspace import parse_config
from polku.engine.processor import Processor
from polku.engine.scale_worker import ScaleOut, Worker, migrate_all
from polku.ports import AppendBatch

pytestmark = pytest.mark.anyio
T0 = 1_790_000_000_000
PARTITIONS = 8
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
async def deployment(database: str) -> AsyncIterator[ScaleOut]:
    async with fresh_deployment(database, PARTITIONS) as found:
        yield found


def event(kind: str, ts: int, **fields: Any) -> Event:
    return Event(
        message_id=f"m{next(_ids)}",
        type=kind,
        channel="web",
        source="default",
        timestamp=format_millis(ts),
        received_at=format_millis(ts),
        **fields,
    )


def people_sending_from_two_partitions(count: int) -> list[Event]:
    """Each person browses anonymously, then signs in (linking the anonymous id to
    the user id) while both ids keep sending: their events travel through two
    partitions (when the ids hash apart), applied by whichever workers hold them."""
    events: list[Event] = []
    ts = T0
    for round_ in range(6):
        for person in range(count):
            ts += 1000
            anonymous, user = f"anon-{person}", f"user-{person}"
            if round_ < 2:
                events.append(event("page", ts, anonymous_id=anonymous, name=f"Page {round_}"))
            elif round_ == 2:
                events.append(
                    event(
                        "identify", ts, anonymous_id=anonymous, user_id=user, traits={"email": f"p{person}@x.example"}
                    )
                )
            else:
                events.append(event("track", ts, anonymous_id=anonymous, event=f"Step {round_}"))
                events.append(event("track", ts + 1, user_id=user, event=f"Step {round_}", properties={"n": round_}))
    return events


async def append_all(log: NatsEventLog, events: list[Event], size: int = 50) -> None:
    for start in range(0, len(events), size):
        await log.append(
            AppendBatch(workspace="default", source="default", received_ms=T0, events=events[start : start + size])
        )


async def wait_applied(deployment: ScaleOut, tasks: list[asyncio.Task[None]], timeout_s: float = 90.0) -> None:
    """Until every partition's checkpoint reaches the stream's last message in it
    (a worker that stopped with an error fails the test at once)."""
    client = await nats.connect(NATS_URL)
    try:
        js = client.jetstream()
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            for task in tasks:
                if task.done():
                    task.result()
                    raise AssertionError("a worker stopped")
            lasts = {}
            for number in range(PARTITIONS):
                try:
                    message = await js.get_last_msg(deployment.stream, f"{deployment.subject_prefix}.{number}")
                    lasts[number] = message.seq
                except Exception:  # no message in that partition
                    continue
            async with await psycopg.AsyncConnection.connect(
                deployment.store_url, autocommit=True, options=f"-c search_path={deployment.schema}"
            ) as connection:
                cursor = await connection.execute(
                    "SELECT partition, seq FROM partition_checkpoints WHERE stream = %s", (deployment.stream,)
                )
                done = dict(await cursor.fetchall())
            if all(done.get(number, 0) >= last for number, last in lasts.items()):
                return
            assert asyncio.get_running_loop().time() < deadline, f"not applied in time: {done} of {lasts}"
            await asyncio.sleep(0.2)
    finally:
        await client.close()


async def shared_out(deployment: ScaleOut, expected: dict[str, int], timeout_s: float = 30.0) -> None:
    """Until the live leases are held as ``expected`` (owner → partitions)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with await psycopg.AsyncConnection.connect(
        deployment.store_url, autocommit=True, options=f"-c search_path={deployment.schema}"
    ) as connection:
        while True:
            cursor = await connection.execute(
                "SELECT owner, count(*) FROM partition_leases WHERE stream = %s AND expires_at > now() GROUP BY owner",
                (deployment.stream,),
            )
            held = dict(await cursor.fetchall())
            if held == expected:
                return
            assert asyncio.get_running_loop().time() < deadline, f"leases {held}, not {expected}"
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def workers(deployment: ScaleOut, count: int) -> AsyncIterator[tuple[list[Worker], list[asyncio.Task[None]]]]:
    await migrate_all(deployment)
    stop = asyncio.Event()
    running = [Worker(deployment, owner=f"w{number}", batch_size=64) for number in range(count)]
    tasks = [asyncio.create_task(worker.run(stop)) for worker in running]
    try:
        yield running, tasks
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def embedded(events: list[Event]) -> MemoryStateStore:
    store = MemoryStateStore()
    reader = MemoryLogReader({"default": parse_config("{}")})
    for item in events:
        reader.add("default", item)
    Processor(store, reader, clock=lambda: T0 + 10_000_000).run_until_idle()
    return store


def people(store: Any, identifiers: list[str]) -> dict[frozenset[str], tuple[int, int, int, dict[str, Any]]]:
    """Per person (their identifiers): events, first and last seen, trait values."""
    found = {}
    for identifier in identifiers:
        record = store.identifier("default", identifier)
        assert record is not None, identifier
        profile = store.profile("default", record.customer_id)
        assert profile is not None, identifier
        traits = {name: value[0] for name, value in profile.traits.items()}
        found[frozenset(profile.identifiers)] = (profile.events, profile.first_seen_ms, profile.last_seen_ms, traits)
    return found


async def test_two_workers_merge_across_partitions_while_both_ids_send(deployment: ScaleOut) -> None:
    count = 30
    events = people_sending_from_two_partitions(count)
    apart = sum(
        partition("default", f"anon-{n}", PARTITIONS) != partition("default", f"user-{n}", PARTITIONS)
        for n in range(count)
    )
    assert apart >= count // 2  # the ids of most people hash to different partitions
    log = api_log(deployment)
    await log.start()
    try:
        async with workers(deployment, 2) as (running, tasks):
            await shared_out(deployment, {"w0": PARTITIONS // 2, "w1": PARTITIONS // 2})
            await append_all(log, events)
            await wait_applied(deployment, tasks)
            # Both took part, and the partitions were shared out.
            assert all(worker.applied > 0 for worker in running)
    finally:
        await log.close()
    store = await asyncio.to_thread(PostgresStateStore, deployment.store_url, schema=deployment.schema)
    try:
        identifiers = [f"user_id:user-{n}" for n in range(count)]
        scaled = await asyncio.to_thread(people, store, identifiers)
    finally:
        store.close()
    reference = people(embedded(events), identifiers)
    assert scaled == reference
    assert all(len(group) == 3 for group in scaled)  # anonymous id, user id, email: one person each


def start_worker(deployment: ScaleOut, log_path: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "polku",
        "worker",
        "--store",
        deployment.store_url,
        "--bus",
        deployment.bus_url,
        "--schema",
        deployment.schema,
        "--stream",
        deployment.stream,
        "--subject-prefix",
        deployment.subject_prefix,
        "--partitions",
        str(deployment.partitions),
        "--batch-size",
        "100",
    ]
    with log_path.open("ab") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)


async def test_killed_workers_lose_and_double_nothing(deployment: ScaleOut, tmp_path: Path) -> None:
    """Three worker processes share the partitions; while events stream in, one is
    SIGKILLed, then another, and a new one starts. The others take the dead workers'
    partitions over when their leases expire, and every event is applied exactly
    once: every profile equals the embedded processor's on the same input."""
    count = 200
    events = people_sending_from_two_partitions(count)
    await migrate_all(deployment)
    log = api_log(deployment)
    log_path = tmp_path / "workers.log"
    processes = [start_worker(deployment, log_path) for _ in range(3)]
    await log.start()
    try:
        await leases_held_by(deployment, 3)
        sending = asyncio.create_task(append_slowly(log, events))
        await asyncio.sleep(1.0)
        processes[0].kill()
        await asyncio.sleep(1.0)
        processes[1].kill()
        processes.append(start_worker(deployment, log_path))
        await sending
        await wait_applied(deployment, [], timeout_s=120)
        # The dead workers' partitions went to the living: two workers hold them all.
        await leases_held_by(deployment, 2)
    finally:
        await log.close()
        for process in processes:
            process.kill()
            process.wait()
    assert [process.returncode for process in processes[:2]] == [-signal.SIGKILL] * 2
    store = await asyncio.to_thread(PostgresStateStore, deployment.store_url, schema=deployment.schema)
    try:
        identifiers = [f"user_id:user-{n}" for n in range(count)]
        scaled = await asyncio.to_thread(people, store, identifiers)
    finally:
        store.close()
    assert scaled == people(embedded(events), identifiers), log_path.read_text()[-3000:]


async def leases_held_by(deployment: ScaleOut, workers: int, timeout_s: float = 60.0) -> None:
    """Until every partition is leased, to exactly ``workers`` distinct workers."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    async with await psycopg.AsyncConnection.connect(
        deployment.store_url, autocommit=True, options=f"-c search_path={deployment.schema}"
    ) as connection:
        while True:
            cursor = await connection.execute(
                "SELECT count(DISTINCT owner), count(*) FROM partition_leases "
                "WHERE stream = %s AND owner IS NOT NULL AND expires_at > now()",
                (deployment.stream,),
            )
            found = await cursor.fetchone()
            if found == (workers, deployment.partitions):
                return
            assert asyncio.get_running_loop().time() < deadline, f"(owners, leased) = {found}"
            await asyncio.sleep(0.1)


async def append_slowly(log: NatsEventLog, events: list[Event], size: int = 10) -> None:
    for start in range(0, len(events), size):
        await log.append(
            AppendBatch(workspace="default", source="default", received_ms=T0, events=events[start : start + size])
        )
        await asyncio.sleep(0.02)


async def test_a_message_sent_again_after_the_duplicate_window_is_applied_once(deployment: ScaleOut) -> None:
    """The stream stores a resend older than its duplicate window a second time; the
    worker's index (``UNIQUE (workspace, messageId)``, in its commit) finds it, and
    the batch runs again without it. The events are in the ``events`` table once."""
    log = api_log(deployment, duplicate_window_s=0.5)
    first = event("track", T0, user_id="ada", event="Signed Up")
    later = event("track", T0 + 1000, user_id="ada", event="Upgraded")
    await log.start()
    try:
        await append_all(log, [first])
        await asyncio.sleep(1.0)  # out of the window: the stream takes it again
        await append_all(log, [first, later])
        async with workers(deployment, 1) as (_, tasks):
            await wait_applied(deployment, tasks)
    finally:
        await log.close()
    store = await asyncio.to_thread(PostgresStateStore, deployment.store_url, schema=deployment.schema)
    try:
        found = await asyncio.to_thread(people, store, ["user_id:ada"])
        ((events, _, _, _),) = found.values()
        assert events == 2
    finally:
        store.close()
    async with await psycopg.AsyncConnection.connect(
        deployment.store_url, autocommit=True, options=f"-c search_path={deployment.schema}"
    ) as connection:
        cursor = await connection.execute("SELECT seq FROM events ORDER BY seq")
        assert [seq for (seq,) in await cursor.fetchall()] == [1, 3]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--store", "nats://127.0.0.1:4222", "--bus", NATS_URL], "is not a PostgreSQL URL"),
        (["--store", "postgresql://postgres@127.0.0.1/x", "--bus", "http://x"], "is not a NATS URL"),
        (["--store", "postgresql://postgres@127.0.0.1/x", "--bus", NATS_URL, "--partitions", "0"], "partitions 0"),
        (["--store", "postgresql://postgres@127.0.0.1/x", "--bus", NATS_URL, "--batch-size", "0"], "batch size 0"),
    ],
)
def test_the_worker_refuses_bad_options_with_invalid_config(options: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "polku", "worker", *options], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "error invalid_config" in result.stderr and message in result.stderr
