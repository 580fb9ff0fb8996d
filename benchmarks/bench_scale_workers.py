"""Scale-out throughput: events through NATS JetStream into N worker processes with
their state in PostgreSQL (issue 9: 1, 2 and 4 workers; target ≥ 5,000 events/s end
to end on the 2-core machine).

For each worker count, on a fresh PostgreSQL schema and a fresh stream:

1. ``N`` ``polku worker`` processes start and share the partitions (the run waits
   until every partition is leased).
2. The events are appended through ``NatsEventLog`` (what the API does), 100 per
   batch from 8 concurrent senders: **ingest** is events per second of these appends
   (each returns once JetStream acknowledged every event in it).
3. **End to end** is events per second from the first append until every
   partition's committed checkpoint reaches the stream's last message in it —
   identity, profile, timeline, commit with fencing and validation, acknowledgement.

The input: ``--customers`` people, each first an ``identify`` (userId, anonymousId,
email), then ``--events`` in total: 75 % ``track`` by userId, 15 % ``page`` by
anonymousId (the other partition: merges already made), 10 % ``identify``.
The workspace configuration is the default (no segments): the figure is the
scale-out machinery's, the processor's own cost per event is bench_processor.py's.

Run (PostgreSQL and NATS up, e.g. ``scripts/services``)::

    .venv/bin/python benchmarks/bench_scale_workers.py --workers 1,2,4
    .venv/bin/python benchmarks/bench_scale_workers.py --customers 2000 --events 10000 --workers 1,2 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from polku.core.events import Event, format_millis  # noqa: E402
from polku.engine.scale_worker import ScaleOut, migrate_all  # noqa: E402
from polku.ports import AppendBatch  # noqa: E402

T0 = 1_790_000_000_000


def make_events(customers: int, total: int, seed: int = 7) -> list[Event]:
    rng = random.Random(seed)
    events: list[Event] = []
    number = 0

    def add(kind: str, **fields: Any) -> None:
        nonlocal number
        number += 1
        ts = format_millis(T0 + number)
        events.append(
            Event(
                message_id=f"b{number}",
                type=kind,
                channel="web",
                source="default",
                timestamp=ts,
                received_at=ts,
                **fields,
            )
        )

    for person in range(customers):
        add("identify", user_id=f"u{person}", anonymous_id=f"a{person}", traits={"email": f"p{person}@x.example"})
    for _ in range(total):
        person = rng.randrange(customers)
        draw = rng.random()
        if draw < 0.75:
            add("track", user_id=f"u{person}", event="Product Viewed", properties={"sku": rng.randrange(500)})
        elif draw < 0.90:
            add("page", anonymous_id=f"a{person}", name="Home")
        else:
            add("identify", user_id=f"u{person}", traits={"plan": rng.choice(["free", "pro"])})
    return events


def start_worker(deployment: ScaleOut, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable, "-m", "polku", "worker",
        "--store", deployment.store_url, "--bus", deployment.bus_url, "--schema", deployment.schema,
        "--stream", deployment.stream, "--subject-prefix", deployment.subject_prefix,
        "--partitions", str(deployment.partitions), "--log-level", os.environ.get("BENCH_LOG_LEVEL", "warning"),
    ]  # fmt: skip
    with log.open("ab") as output:
        return subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}
        )


async def leased(connection: psycopg.AsyncConnection[Any], deployment: ScaleOut, workers: int) -> bool:
    cursor = await connection.execute(
        "SELECT count(DISTINCT owner), count(*) FROM partition_leases WHERE stream = %s AND expires_at > now()",
        (deployment.stream,),
    )
    row = await cursor.fetchone()
    return row is not None and row[0] == workers and row[1] == deployment.partitions


async def applied(connection: psycopg.AsyncConnection[Any], deployment: ScaleOut, lasts: dict[int, int]) -> bool:
    cursor = await connection.execute(
        "SELECT partition, seq FROM partition_checkpoints WHERE stream = %s", (deployment.stream,)
    )
    done = dict(await cursor.fetchall())
    return all(done.get(number, 0) >= last for number, last in lasts.items())


async def until(check: Callable[[], Awaitable[bool]], interval_s: float) -> None:
    """Poll ``check`` (a database or stream read: nothing to wait on) until it holds."""
    while True:
        if await check():
            return
        await asyncio.sleep(interval_s)


async def last_sequences(deployment: ScaleOut) -> dict[int, int]:
    client = await nats.connect(deployment.bus_url)
    try:
        js = client.jetstream()
        lasts = {}
        for number in range(deployment.partitions):
            try:
                lasts[number] = (await js.get_last_msg(deployment.stream, f"{deployment.subject_prefix}.{number}")).seq
            except nats.js.errors.NotFoundError:
                continue
        return lasts
    finally:
        await client.close()


async def run_once(args: argparse.Namespace, workers: int, events: list[Event], log: Path) -> dict[str, Any]:
    token = uuid.uuid4().hex[:10]
    deployment = ScaleOut(
        store_url=args.store,
        bus_url=args.bus,
        schema=f"bench_{token}",
        stream=f"POLKU_BENCH_{token}",
        subject_prefix=f"polku_bench_{token}.ev",
        partitions=args.partitions,
    )
    await migrate_all(deployment)
    event_log = deployment.event_log(duplicate_window_s=600.0, max_pending_events=100_000)  # as the API appends
    await event_log.start()
    processes = [start_worker(deployment, log) for _ in range(workers)]
    connection = await psycopg.AsyncConnection.connect(
        deployment.store_url, autocommit=True, options=f"-c search_path={deployment.schema}"
    )
    try:
        await until(lambda: leased(connection, deployment, workers), 0.2)
        batches = [events[start : start + 100] for start in range(0, len(events), 100)]
        queue: asyncio.Queue[list[Event]] = asyncio.Queue()
        for batch in batches:
            queue.put_nowait(batch)

        async def sender() -> None:
            while not queue.empty():
                batch = queue.get_nowait()
                await event_log.append(AppendBatch(workspace="default", source="default", received_ms=T0, events=batch))

        started = time.perf_counter()
        await asyncio.gather(*(sender() for _ in range(8)))
        ingest_s = time.perf_counter() - started
        lasts = await last_sequences(deployment)
        await until(lambda: applied(connection, deployment, lasts), 0.05)
        total_s = time.perf_counter() - started
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(timeout=30)
        await connection.close()
        await event_log.close()
        await drop(deployment)
    return {
        "workers": workers,
        "events": len(events),
        "ingest_events_per_s": round(len(events) / ingest_s),
        "end_to_end_events_per_s": round(len(events) / total_s),
        "seconds": round(total_s, 2),
    }


async def drop(deployment: ScaleOut) -> None:
    async with await psycopg.AsyncConnection.connect(deployment.store_url, autocommit=True) as connection:
        await connection.execute(f'DROP SCHEMA "{deployment.schema}" CASCADE')  # a name this script made
    client = await nats.connect(deployment.bus_url)
    try:
        await client.jetstream().delete_stream(deployment.stream)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--bus", default="nats://127.0.0.1:4222")
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=16)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--repeat", type=int, default=1, help="runs per worker count (the median is reported)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    events = make_events(args.customers, args.events)
    log = Path(os.environ.get("TMPDIR", "/tmp")) / "bench_scale_workers.log"
    results = []
    for workers in (int(part) for part in args.workers.split(",")):
        runs = [asyncio.run(run_once(args, workers, events, log)) for _ in range(args.repeat)]
        runs.sort(key=lambda run: run["end_to_end_events_per_s"])
        results.append(runs[len(runs) // 2])
        if not args.json:
            best = results[-1]
            print(
                f"{workers} worker(s): ingest {best['ingest_events_per_s']:,} ev/s, "
                f"end to end {best['end_to_end_events_per_s']:,} ev/s ({best['events']:,} events in {best['seconds']} s)"
            )
    if args.json:
        print(json.dumps({"customers": args.customers, "results": results}, indent=2))


if __name__ == "__main__":
    main()
