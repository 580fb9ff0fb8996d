"""How long an erasure takes on the embedded store, stage by stage, in a store of
``--events`` events over ``--customers`` customers (``docs/privacy.md``).

The store is built the way ``polku serve`` fills it: the events appended to the
SQLite log (``polku.db``), the processor applies them (``state.db``), the analytics
feed copies them (``analytics.duckdb``). Then, ``--erasures`` times, one customer
(with ``events / customers`` events of their own) is erased: the request is
appended, and the figures are the processor's step that meets it (the state stage:
the scope found and deleted in one commit, the WAL emptied; then the log stage:
the person's events, the quarantine, the answers, the audit paths and the ledger)
and the analytics feed's stage (the rows deleted and the DuckDB file written anew).
Medians; one erasure at a time, as a data-protection officer asks for them.

Run (from the repository root, after ``scripts/install``)::

    .venv/bin/python benchmarks/bench_erasure.py
    .venv/bin/python benchmarks/bench_erasure.py --events 200000 --customers 2000 --erasures 5 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import machine, median
from polku.adapters.duckdb import analytics_store
from polku.adapters.sqlite.event_log import SqliteEventLog
from polku.adapters.sqlite.log_erasure import SqliteLogEraser
from polku.adapters.sqlite.log_reader import SqliteLogReader
from polku.adapters.sqlite.state_store import SqliteStateStore
from polku.core.events import Event, format_millis
from polku.engine.analytics_feed import AnalyticsFeeder
from polku.engine.erasure import request_event
from polku.engine.processor import Processor
from polku.engine.setup import bootstrap
from polku.ports import AppendBatch

T0 = 1_790_000_000_000
CHUNK = 5_000


def events(count: int, customers: int, seed: int = 7) -> list[Event]:
    draw = random.Random(seed)
    found = []
    for number in range(count):
        who = number % customers if number < customers else draw.randrange(customers)
        ts = T0 + number * 1000
        if number < customers:
            found.append(
                Event(
                    message_id=f"m{number}",
                    type="identify",
                    channel="web",
                    source="default",
                    timestamp=format_millis(ts),
                    received_at=format_millis(ts),
                    user_id=f"user-{who}",
                    anonymous_id=f"anon-{who}",
                    traits={"email": f"person{who}@example.com", "name": f"Person {who}"},
                )
            )
        else:
            found.append(
                Event(
                    message_id=f"m{number}",
                    type="track",
                    channel=draw.choice(["web", "app", "email", "phone"]),
                    source="default",
                    timestamp=format_millis(ts),
                    received_at=format_millis(ts),
                    user_id=f"user-{who}",
                    event=draw.choice(["Product Viewed", "Order Completed", "Page Viewed"]),
                    properties={"order": f"o-{number}", "total": draw.randrange(1, 500)},
                )
            )
    return found


async def append(data_dir: Path, batch: list[Event]) -> None:
    log = SqliteEventLog(data_dir)
    await log.start()
    try:
        for start in range(0, len(batch), CHUNK):
            chunk = batch[start : start + CHUNK]
            await log.append(AppendBatch(workspace="default", source="default", received_ms=T0, events=chunk))
    finally:
        await log.close()


async def make_store(data_dir: Path) -> None:
    from polku.adapters.sqlite.catalog import SqliteCatalog

    catalog = SqliteCatalog(data_dir)
    await catalog.start()
    try:
        await bootstrap(catalog, write_key=None, admin_token=None)
    finally:
        await catalog.close()


def run(event_count: int, customers: int, erasures: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="polku-bench-erasure-") as directory:
        data_dir = Path(directory)
        asyncio.run(make_store(data_dir))
        asyncio.run(append(data_dir, events(event_count, customers)))
        store = SqliteStateStore(data_dir, synchronous="NORMAL")
        reader = SqliteLogReader(data_dir)
        processor = Processor(store, reader, clock=lambda: T0, batch_size=1000, eraser=SqliteLogEraser(data_dir))
        started = time.perf_counter()
        processor.run_until_idle()
        processed_s = time.perf_counter() - started
        feeder = AnalyticsFeeder(data_dir)
        while feeder.step():
            pass
        state_ms: list[float] = []
        analytics_ms: list[float] = []
        removed: list[int] = []
        for number in range(erasures):
            record = store.identifier("default", f"user_id:user-{number * 7}")
            assert record is not None
            request = request_event(f"er_bench{number}", record.customer_id, suppress=False, now_ms=T0)
            asyncio.run(append(data_dir, [request]))
            started = time.perf_counter()
            processor.step()  # the request: state, then the log's stage
            state_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            feeder.apply_erasures()
            analytics_ms.append((time.perf_counter() - started) * 1000)
            (receipt,) = store.erasure_receipts("default", erasure=f"er_bench{number}")
            assert receipt.status == "erased", receipt
            removed.append(receipt.removed.get("log.events", 0))
        feeder.close()
        reader.close()
        store.close()
        return {
            "events": event_count,
            "customers": customers,
            "events_per_person": median([float(count) for count in removed]),
            "processed_events_per_s": round(event_count / processed_s),
            "state_and_log_ms": round(median(state_ms), 1),
            "analytics_ms": round(median(analytics_ms), 1),
            "analytics_file_mb": round(analytics_store.analytics_path(data_dir).stat().st_size / 1e6, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--erasures", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    result = run(options.events, options.customers, options.erasures) | {"machine": machine()}
    if options.json:
        print(json.dumps(result))
        return
    print(
        f"{result['events']:,} events, {result['customers']:,} customers "
        f"(~{result['events_per_person']:.0f} events each; {result['machine']})\n"
        f"  erasure, state + log stages (processor): {result['state_and_log_ms']} ms (median)\n"
        f"  erasure, analytics stage (delete + rewrite {result['analytics_file_mb']} MB): "
        f"{result['analytics_ms']} ms (median)"
    )


if __name__ == "__main__":
    main()
