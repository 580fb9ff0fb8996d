"""The Parquet analytics consumer against real NATS and PostgreSQL servers: events
of several days land in their day's folder and DuckDB counts them exactly, the
embedded analyses run over the files, identities are resolved when read, a consumer
SIGKILLed again and again while events stream in leaves every event in the files
exactly once, and bad options are refused before anything connects."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from tests.contract.conftest import NATS_URL, fresh_database
from tests.integration.scale_processes import api_log, fresh_deployment

from polku.adapters.nats import NatsEventLog
from polku.adapters.parquet import files, reader
from polku.core.events import Event, format_millis, time_millis
from polku.engine.analytics import Scope
from polku.engine.analytics_registry import ANALYSES, parse
from polku.engine.parquet_feed import ParquetFeed
from polku.engine.scale_worker import ScaleOut, Worker, migrate_all
from polku.ports import AppendBatch

pytestmark = pytest.mark.anyio
DAY_MS = 86_400_000
T0 = 1_790_035_200_000  # 2026-09-22T00:00:00Z
PARTITIONS = 4
_ids = itertools.count(1)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
async def deployment(database: str) -> AsyncIterator[ScaleOut]:
    async with fresh_deployment(database, PARTITIONS) as found:
        await migrate_all(found)
        yield found


def event(kind: str, ts: int, channel: str = "web", **fields: Any) -> Event:
    return Event(
        message_id=f"m{next(_ids)}",
        type=kind,
        channel=channel,
        source="default",
        timestamp=format_millis(ts),
        received_at=format_millis(ts),
        **fields,
    )


async def append_all(log: NatsEventLog, events: list[Event], size: int = 100, pause_s: float = 0.0) -> None:
    for start in range(0, len(events), size):
        await log.append(
            AppendBatch(workspace="default", source="default", received_ms=T0, events=events[start : start + size])
        )
        if pause_s:
            await asyncio.sleep(pause_s)


async def last_seq(deployment: ScaleOut) -> int:
    client = await nats.connect(NATS_URL)
    try:
        info = await client.jetstream().stream_info(deployment.stream)
        return int(info.state.last_seq)
    finally:
        await client.close()


async def written_through(
    out: Path, seq: int, *, timeout_s: float = 60.0, feed: asyncio.Task[Any] | None = None
) -> None:
    """Until the files hold every sequence up to ``seq`` (as their names say)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while files.written(files.scan(out)).high_water < seq:
        if feed is not None and feed.done():
            feed.result()
            raise AssertionError("the consumer stopped")
        assert asyncio.get_running_loop().time() < deadline, f"written to {files.written(files.scan(out))}, not {seq}"
        await asyncio.sleep(0.1)


async def test_events_of_several_days_land_in_their_folders_and_duckdb_counts_them(
    deployment: ScaleOut, tmp_path: Path
) -> None:
    # Three days, with events a millisecond either side of midnight; two channels.
    times = [T0 - 1, T0, T0 + 5000, T0 + DAY_MS - 1, T0 + DAY_MS, T0 + 2 * DAY_MS + 3_600_000]
    events = [
        event("track", ts + person, channel="app" if person % 3 else "phone", user_id=f"u{person}", event="Step")
        for person in range(40)
        for ts in times
    ]
    expected = Counter(files.day_of(time_millis(item.timestamp)) for item in events)
    log = api_log(deployment)
    await log.start()
    try:
        await append_all(log, events[:120])
        # Someone else's message on polku's subjects: skipped, as the workers skip it.
        client = await nats.connect(NATS_URL)
        try:
            await client.jetstream().publish(f"{deployment.subject_prefix}.0", b"not an event")
        finally:
            await client.close()
        await append_all(log, events[120:])
    finally:
        await log.close()
    out = tmp_path / "analytics"
    stop = asyncio.Event()
    feed = ParquetFeed(deployment, out, max_events=100, max_seconds=0.2)
    task = asyncio.create_task(feed.run(stop))
    try:
        await written_through(out, await last_seq(deployment), feed=task)
    finally:
        stop.set()
        await task
    assert (feed.written, feed.skipped) == (len(events), 1)
    assert sorted(path.name for path in out.iterdir() if path.is_dir()) == [f"day={day}" for day in sorted(expected)]
    with reader.connect(out) as db:
        counted = dict(db.execute("SELECT day::VARCHAR, count(*) FROM events GROUP BY ALL").fetchall())
        assert counted == dict(expected)
        # Each file holds its folder's day only.
        assert db.execute("SELECT count(*) FROM events WHERE strftime(ts, '%Y-%m-%d') != day::VARCHAR").fetchone() == (
            0,
        )
        ids = [row[0] for row in db.execute("SELECT message_id FROM events").fetchall()]
        assert sorted(ids) == sorted(item.message_id for item in events)
        # The embedded store's analyses run on the files as they are.
        analysis = ANALYSES["channel-mix"]
        scope, arguments = parse(analysis, "default", {"period": "day"})
        result = analysis.run(db, scope, **arguments)
    channels = {row["channel"]: (row["events"], row["people"]) for row in result["channels"]}
    phone_people = len([person for person in range(40) if person % 3 == 0])
    assert channels == {"phone": (phone_people * 6, phone_people), "app": ((40 - phone_people) * 6, 40 - phone_people)}


async def test_identities_are_resolved_when_read(deployment: ScaleOut, tmp_path: Path) -> None:
    """People browse anonymously and order signed in, then an identify call links the
    two ids: the workers merge the two customers. The files keep the identifier each event was sent with; the view
    resolves both to one customer once the identities are loaded."""
    count = 12
    events: list[Event] = []
    for person in range(count):
        events.append(event("page", T0 + person, anonymous_id=f"anon-{person}", name="Home"))
        events.append(event("track", T0 + 1000 + person, user_id=f"user-{person}", event="Ordered"))
        events.append(event("identify", T0 + 2000 + person, anonymous_id=f"anon-{person}", user_id=f"user-{person}"))
    # One person says no to analytics (their identify carries the consent trait).
    events[-1] = msgspec.structs.replace(events[-1], traits={"consent": {"analytics": False}})
    log = api_log(deployment)
    await log.start()
    try:
        await append_all(log, events)
    finally:
        await log.close()
    out = tmp_path / "analytics"
    stop = asyncio.Event()
    worker = Worker(deployment, owner="w0", batch_size=64)
    tasks = [
        asyncio.create_task(worker.run(stop)),
        asyncio.create_task(ParquetFeed(deployment, out, max_seconds=0.2).run(stop)),
    ]
    try:
        await written_through(out, await last_seq(deployment), feed=tasks[1])
        deadline = asyncio.get_running_loop().time() + 60
        while worker.applied < len(events):
            assert not tasks[0].done() and asyncio.get_running_loop().time() < deadline, worker.applied
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    with reader.connect(out) as db:
        unresolved = db.execute("SELECT count(DISTINCT customer_id) FROM events").fetchone()
        loaded = await asyncio.to_thread(reader.load_identities, db, deployment.store_url, schema=deployment.schema)
        resolved = db.execute(
            "SELECT count(DISTINCT customer_id), count(*) FILTER (WHERE customer_id LIKE '%:%') FROM events"
        ).fetchone()
        per_customer = db.execute("SELECT count(*) FROM events GROUP BY customer_id").fetchall()
        withdrawn = db.execute("SELECT customer_id FROM consent_withdrawn").fetchall()
        sql, parameters = Scope(workspace="default").events_sql()
        counted = db.execute(f"SELECT count(DISTINCT customer_id) FROM ({sql}) AS e", parameters).fetchone()
    assert unresolved == (2 * count,)  # the anonymous and the user id of each person
    assert loaded >= 2 * count  # every identifier, and the merged-away customers
    assert resolved == (count, 0)
    assert sorted(per_customer) == [(3,)] * count
    assert len(withdrawn) == 1 and counted == (count - 1,)  # the analyses leave the one who said no out


def start_consumer(deployment: ScaleOut, out: Path, log_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "polku",
        "analytics",
        "parquet",
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
        "--out",
        str(out),
        *extra,
    ]
    with log_path.open("ab") as output:
        return subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)


async def test_a_killed_consumer_leaves_every_event_exactly_once(deployment: ScaleOut, tmp_path: Path) -> None:
    """While events stream in, the consumer process is SIGKILLed five times (small
    batches over several days: a kill often lands between the renames of a batch)
    and started again. In the end the files hold every messageId exactly once."""
    events = [
        event("track", T0 + (number % 4) * DAY_MS + number, user_id=f"u{number % 97}", event="Step")
        for number in range(6000)
    ]
    out = tmp_path / "analytics"
    log_path = tmp_path / "consumer.log"
    options = ("--batch-events", "150", "--batch-seconds", "0.1")
    log = api_log(deployment)
    await log.start()
    process = start_consumer(deployment, out, log_path, *options)
    killed: list[int | None] = []
    baseline = 0
    try:
        sending = asyncio.create_task(append_all(log, events, size=20, pause_s=0.03))
        for delay in (1.8, 1.2, 1.6, 1.0, 1.4):
            await asyncio.sleep(delay)
            process.kill()
            killed.append(process.wait())
            # A process killed while it started never said so: count from here.
            baseline = starts(log_path)
            process = start_consumer(deployment, out, log_path, *options)
        assert not sending.done(), "the events were all sent before the last kill: send more slowly"
        await sending
        await written_through(out, await last_seq(deployment), timeout_s=90)
        await started(log_path, baseline + 1)  # SIGTERM once the last one listens for it
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log_path.read_text()[-3000:]
    finally:
        await log.close()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert killed == [-signal.SIGKILL] * 5
    with reader.connect(out) as db:
        ids = Counter(row[0] for row in db.execute("SELECT message_id FROM events").fetchall())
        days = db.execute("SELECT count(DISTINCT day) FROM events").fetchone()
    assert ids == Counter(item.message_id for item in events), log_path.read_text()[-3000:]
    assert days == (4,)
    assert not list(out.glob("day=*/.part-*")), "a temporary file was left behind"


def starts(log_path: Path) -> int:
    return log_path.read_text().count("parquet consumer started")


async def started(log_path: Path, times: int, timeout_s: float = 30.0) -> None:
    """Until the consumers' log says ``times`` of them started (and listen for SIGTERM)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while starts(log_path) < times:
        assert asyncio.get_running_loop().time() < deadline, f"{starts(log_path)} started, not {times}"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--store", "nats://127.0.0.1:4222", "--bus", NATS_URL], "is not a PostgreSQL URL"),
        (["--store", "postgresql://postgres@127.0.0.1/x", "--bus", "http://x"], "is not a NATS URL"),
        (["--store", "postgresql://postgres@127.0.0.1/x", "--bus", NATS_URL, "--partitions", "0"], "partitions 0"),
        (["--store", "postgresql://postgres@127.0.0.1/x", "--bus", NATS_URL, "--batch-events", "0"], "batch events 0"),
        (["--store", "postgresql://postgres@127.0.0.1/x", "--bus", NATS_URL, "--batch-seconds", "0"], "batch seconds"),
        (["--store", "postgresql://postgres@127.0.0.1/x", "--bus", NATS_URL, "--durable", "a.b"], "consumer name"),
        (["--store", "postgresql://postgres@127.0.0.1/x", "--bus", NATS_URL, "--schema", "A-b"], "schema 'A-b'"),
        (["--store", "postgresql://postgres@127.0.0.1/x", "--bus", NATS_URL, "--stream", "a.b"], "stream name"),
    ],
)
def test_bad_options_are_refused_with_invalid_config(options: list[str], message: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "polku", "analytics", "parquet", "--out", str(tmp_path), *options],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "error invalid_config" in result.stderr and message in result.stderr, result.stderr


def test_an_out_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "polku",
            "analytics",
            "parquet",
            "--store",
            "postgresql://postgres@127.0.0.1/x",
            "--bus",
            NATS_URL,
            "--out",
            str(tmp_path / "taken"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "not a folder" in result.stderr, result.stderr
