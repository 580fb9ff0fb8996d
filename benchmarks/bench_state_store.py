"""Processor throughput on each state store: SQLite (``state.db``) and PostgreSQL.

The same events through ``Processor.run_until_idle`` over an in-memory log, so the
figure is the processor and its state store alone: ``--customers`` customers, each
first seen in an ``identify`` (userId, anonymousId, e-mail: three identifiers that
miss, a link, a new profile), then ``track`` events for customers drawn at random
(70 % ``Product Viewed``, 30 % ``Order Completed``; two computed attributes and two
segments, so profiles change and segment announcements go to the outbox), in log
order, ``--events`` in all. Batches of ``--batch-size`` (production: 1000). SQLite
commits with ``synchronous=NORMAL``, as ``polku process`` runs; PostgreSQL with the
server's settings, in a schema made for the run and dropped after it.

Each store gets ``--repeat`` fresh runs; the figure is the median events per second.

Run (from the repository root, after ``scripts/install``; PostgreSQL from
``scripts/services``)::

    .venv/bin/python benchmarks/bench_state_store.py
    .venv/bin/python benchmarks/bench_state_store.py --events 100000 --customers 10000 --json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import machine, median
from polku.adapters.memory import MemoryLogReader
from polku.adapters.postgres.state_store import PostgresStateStore
from polku.adapters.sqlite.state_store import SqliteStateStore
from polku.core.events import Event, format_millis
from polku.core.workspace import parse_config
from polku.engine.processor import Processor
from polku.ports import StateStore

T0 = 1_790_000_000_000
CONFIG = """
attributes:
  orders: {kind: count, event: Order Completed}
  views_7d: {kind: count, event: Product Viewed, window: 7d}
segments:
  buyers: {condition: "attributes.orders >= 1"}
  browsers: {condition: "attributes.views_7d >= 3 and attributes.orders == 0"}
"""


def events(customers: int, count: int, seed: int) -> list[Event]:
    """Each customer's ``identify`` before their first ``track``; tracks at random."""
    chooser = random.Random(seed)
    found: list[Event] = []
    seen = 0
    for number in range(count):
        ts = T0 + number
        stamp = format_millis(ts)
        common: dict[str, Any] = {
            "message_id": f"b{seed}-{number}",
            "channel": "web",
            "source": "default",
            "timestamp": stamp,
            "received_at": stamp,
        }
        if seen < customers and (chooser.random() < customers / count * 1.2 or seen == 0):
            traits = {"email": f"person{seen}@example.com", "plan": chooser.choice(["free", "pro"])}
            found.append(Event(type="identify", user_id=f"u{seen}", anonymous_id=f"a{seen}", traits=traits, **common))
            seen += 1
            continue
        name = "Product Viewed" if chooser.random() < 0.7 else "Order Completed"
        who = f"u{chooser.randrange(seen)}"
        found.append(Event(type="track", user_id=who, event=name, properties={"price": 19.9}, **common))
    return found


@contextmanager
def sqlite_store() -> Iterator[StateStore]:
    with tempfile.TemporaryDirectory(prefix="polku-bench-state-") as directory:
        store = SqliteStateStore(Path(directory), synchronous="NORMAL")
        try:
            yield store
        finally:
            store.close()


def postgres_store(url: str) -> Callable[[], Any]:
    @contextmanager
    def made() -> Iterator[StateStore]:
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        store = PostgresStateStore(url, schema=schema)
        try:
            yield store
        finally:
            store.close()
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

    return made


def measure(make_store: Callable[[], Any], items: list[Event], batch_size: int) -> float:
    """Events per second of one fresh run."""
    log = MemoryLogReader({"default": parse_config(CONFIG)})
    for item in items:
        log.add("default", item)
    with make_store() as store:
        processor = Processor(store, log, clock=lambda: T0 + len(items), batch_size=batch_size)
        started = time.perf_counter()
        done = processor.run_until_idle()
        seconds = time.perf_counter() - started
    if done < len(items):
        sys.exit(f"error: the processor applied {done} of {len(items)} events")
    return len(items) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events in all (identify + track)")
    parser.add_argument("--customers", type=int, default=2_000, help="customers (one identify each)")
    parser.add_argument("--batch-size", type=int, default=1000, help="Processor batch_size (production: 1000)")
    parser.add_argument("--repeat", type=int, default=3, help="fresh runs per store (the median is reported)")
    parser.add_argument(
        "--postgres-url",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="a database where the run may create (and drops) a schema",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.customers > args.events:
        parser.error("--customers must not exceed --events")

    items = events(args.customers, args.events, args.seed)
    stores = {"sqlite": sqlite_store, "postgresql": postgres_store(args.postgres_url)}
    rates: dict[str, list[float]] = {}
    for name, make_store in stores.items():
        rates[name] = [measure(make_store, items, args.batch_size) for _ in range(args.repeat)]
        print(f"  {name}: {', '.join(f'{rate:,.0f}' for rate in rates[name])} events/s", file=sys.stderr)
    result = {
        "benchmark": "state_store",
        "events": args.events,
        "customers": args.customers,
        "batch_size": args.batch_size,
        "events_per_s": {name: round(median(found)) for name, found in rates.items()},
        "runs": {name: [round(rate) for rate in found] for name, found in rates.items()},
        "machine": machine(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    figures = result["events_per_s"]
    print(
        f"RESULT state store ({args.events:,} identify + track events, {args.customers:,} customers, batch "
        f"{args.batch_size}): SQLite {figures['sqlite']:,} events/s, PostgreSQL {figures['postgresql']:,} events/s "
        f"(median of {args.repeat}) | {result['machine']}"
    )


if __name__ == "__main__":
    main()
