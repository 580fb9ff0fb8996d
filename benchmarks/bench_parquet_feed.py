"""The Parquet analytics consumer's rate: events per second written from a stream
filled beforehand (issue 9, item 4; docs/parquet.md).

1. A fresh stream is filled with ``--events`` events through ``NatsEventLog`` (what
   the API does), 100 per append from 8 concurrent senders: ``track`` events of
   ``--customers`` people over 30 days, on four channels, with a few properties.
2. Each of ``--runs`` runs writes the whole stream into a fresh folder with one
   ``ParquetFeed`` (batches of ``--batch-events``), from the consumer's start until
   the files' names say every sequence is written: decode, rows, one zstd Parquet file
   per day per batch, ``fsync``, rename, acknowledgement.
3. Then DuckDB counts the events by name over the files of the last run.

Run (PostgreSQL and NATS up, e.g. ``scripts/services``)::

    .venv/bin/python benchmarks/bench_parquet_feed.py
    .venv/bin/python benchmarks/bench_parquet_feed.py --events 20000 --runs 1 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from polku.adapters.parquet import files, reader  # noqa: E402
from polku.core.events import Event, format_millis  # noqa: E402
from polku.engine.parquet_feed import ParquetFeed  # noqa: E402
from polku.engine.scale_worker import ScaleOut, migrate_all  # noqa: E402
from polku.ports import AppendBatch  # noqa: E402

T0 = 1_790_035_200_000
DAY_MS = 86_400_000
NAMES = ("Product Viewed", "Added to Cart", "Checkout Started", "Order Completed", "Password Reset Failed")
CHANNELS = ("web", "app", "email", "phone")


def make_events(customers: int, total: int, seed: int = 7) -> list[Event]:
    rng = random.Random(seed)
    events = []
    for number in range(total):
        ts = format_millis(T0 + rng.randrange(30 * DAY_MS))
        person = rng.randrange(customers)
        events.append(
            Event(
                message_id=f"b{number}",
                type="track",
                channel=rng.choice(CHANNELS),
                source="default",
                timestamp=ts,
                received_at=ts,
                user_id=f"u{person}",
                anonymous_id=f"a{person}",
                event=rng.choice(NAMES),
                properties={"sku": f"sku-{rng.randrange(500)}", "price": rng.randrange(100, 10_000) / 100},
                context={"ip": "203.0.113.9", "userAgent": "Mozilla/5.0 (bench)"},
            )
        )
    return events


async def fill(deployment: ScaleOut, events: list[Event], senders: int = 8) -> float:
    log = deployment.event_log(duplicate_window_s=600.0)  # as the API appends
    await log.start()
    started = time.perf_counter()
    chunks = [events[start : start + 100] for start in range(0, len(events), 100)]

    async def send(own: list[list[Event]]) -> None:
        for chunk in own:
            await log.append(AppendBatch(workspace="default", source="default", received_ms=T0, events=chunk))

    try:
        await asyncio.gather(*(send(chunks[number::senders]) for number in range(senders)))
    finally:
        await log.close()
    return len(events) / (time.perf_counter() - started)


def bytes_under(out: Path) -> int:
    return sum(path.stat().st_size for path in out.glob("day=*/*.parquet"))


async def one_run(deployment: ScaleOut, out: Path, last_seq: int, batch_events: int) -> dict[str, Any]:
    stop = asyncio.Event()
    feed = ParquetFeed(deployment, out, max_events=batch_events, max_seconds=1.0)
    started = time.perf_counter()
    task = asyncio.create_task(feed.run(stop))
    while feed.high_water < last_seq:
        if task.done():
            task.result()
            raise SystemExit("the consumer stopped")
        await asyncio.sleep(0.01)
    seconds = time.perf_counter() - started
    stop.set()
    await task
    size = await asyncio.to_thread(bytes_under, out)
    return {
        "seconds": round(seconds, 2),
        "events_per_s": round(feed.written / seconds),
        "files": len(files.scan(out)),
        "bytes": size,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--store", default=os.environ.get("POLKU_STORE", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--bus", default=os.environ.get("POLKU_BUS", "nats://127.0.0.1:4222"))
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--batch-events", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    arguments = parser.parse_args()
    token = uuid.uuid4().hex[:10]
    deployment = ScaleOut(
        store_url=arguments.store,
        bus_url=arguments.bus,
        schema=f"bench_parquet_{token}",
        stream=f"POLKU_BENCH_{token}",
        subject_prefix=f"polku_bench_{token}.ev",
        partitions=16,
    )
    await migrate_all(deployment)
    client = await nats.connect(deployment.bus_url)
    try:
        ingest = await fill(deployment, make_events(arguments.customers, arguments.events))
        last_seq = int((await client.jetstream().stream_info(deployment.stream)).state.last_seq)
        runs = []
        with tempfile.TemporaryDirectory(prefix="polku-bench-parquet-") as folder:
            for number in range(arguments.runs):
                runs.append(await one_run(deployment, Path(folder) / f"run{number}", last_seq, arguments.batch_events))
            with reader.connect(Path(folder) / f"run{arguments.runs - 1}") as db:
                started = time.perf_counter()
                by_name = db.execute("SELECT name, count(*) FROM events GROUP BY name").fetchall()
                query_ms = (time.perf_counter() - started) * 1000
        assert sum(count for _, count in by_name) == arguments.events
    finally:
        await client.jetstream().delete_stream(deployment.stream)
        await client.close()
        with psycopg.connect(deployment.store_url, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {deployment.schema} CASCADE")
    median = statistics.median(run["events_per_s"] for run in runs)
    figures = {
        "events": arguments.events,
        "batch_events": arguments.batch_events,
        "ingest_events_per_s": round(ingest),
        "runs": runs,
        "median_events_per_s": median,
        "count_by_name_ms": round(query_ms, 1),
        "machine": f"{os.cpu_count()} CPU, {platform.python_implementation()} {platform.python_version()}",
    }
    if arguments.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"filled the stream with {arguments.events:,} events at {ingest:,.0f} events/s")
    for number, run in enumerate(runs, start=1):
        print(
            f"run {number}: {run['events_per_s']:,} events/s ({run['seconds']} s, {run['files']} files, "
            f"{run['bytes'] / 1e6:.1f} MB)"
        )
    print(
        f"median of {len(runs)}: {median:,.0f} events/s written; DuckDB count by name over the files {query_ms:.0f} ms"
    )
    print(figures["machine"])


if __name__ == "__main__":
    asyncio.run(main())
