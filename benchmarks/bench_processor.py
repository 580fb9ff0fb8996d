"""Processor throughput: identity → profile → 20 computed attributes → 20 segments.

Target (identity/profile/segments issue): at least 20,000 events/s on one core with
1,000,000 customers in the store.

What it does, in one process (the processor is single-threaded, as in production):

1. A fresh data directory with the default workspace and ``CONFIG`` below: 20
   computed attributes (every kind; 9 windowed; 3 with ``where``) and 20 segments
   over attributes, traits, feedback and ``last_seen`` (3 read ``now``, so every
   customer gets a timer, as in production).
2. **Seeding**: one ``identify`` per customer (userId, anonymousId, email, name,
   plan, country; timestamps spread over the last 90 days) appended to the log
   through ``SqliteEventLog`` (the writer in a child process, so this process's RSS
   is the processor's), then ``Processor.run_until_idle`` over them, timed: the
   seeding rate is itself a throughput figure (the new-customer path: three
   identifier lookups that miss, a link, a founder, every segment evaluated).
3. **Measured phase**: ``--events`` events for customers drawn uniformly from the
   seeded ones (no hot set: the worst case for the processor's caches), appended
   first, then processed in ``--chunks`` timed chunks (each a run of ``step()`` until
   the checkpoint reaches the chunk's end). The mix: 70 % ``track`` with properties
   (Product Viewed, Product Added, Order Completed, Products Searched, Support
   Ticket Opened, Feedback Submitted; web 75 % / app 20 % / email 5 %), 15 %
   ``page`` (by anonymousId), 10 % ``identify`` with traits incl. email (1 in 10
   with a new e-mail address, which attaches), 5 % new anonymous visitors: a
   ``page`` under a new anonymousId, and a few hundred events later an
   ``identify`` with the customer's userId and that anonymousId (a merge).

The figure is events per second of ``step()`` (read the batch, decode, identity,
fold, evaluate, commit with synchronous=NORMAL, as ``polku process`` runs): the
median over the chunks. Segment and merge announcements go to the state's outbox
as in production; forwarding them to the log (``worker.forward_outbox``) and
processing them again is not counted (their number is printed). The outbox is
emptied between phases, outside the timings, so ``state.db``'s size is the state's.

It also prints RSS (peak ``ru_maxrss`` and current ``VmRSS``) and the size of
``state.db`` (+ WAL) at the end, and with ``--profile`` a cProfile of one more
chunk (top functions by own time).

Run (from the repository root, after ``scripts/install``)::

    .venv/bin/python benchmarks/bench_processor.py                       # 1,000,000 customers
    .venv/bin/python benchmarks/bench_processor.py --customers 20000 --events 20000 --json   # smoke
    .venv/bin/python benchmarks/bench_processor.py --data-dir /tmp/polku-1m --keep   # for bench_profile_lookup
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import pstats
import random
import resource
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ADMIN_TOKEN, WRITE_KEY, machine, median, wait_for_quiet
from polku.adapters.sqlite import SqliteCatalog, SqliteEventLog
from polku.adapters.sqlite.log_reader import SqliteLogReader
from polku.adapters.sqlite.state_store import STATE_FILE, SqliteStateStore
from polku.cli.main import tune_gc
from polku.core.events import Event, format_millis
from polku.core.workspace import parse_config
from polku.engine.processor import Processor
from polku.engine.setup import bootstrap
from polku.engine.worker import wall_clock_ms
from polku.ports import AppendBatch

DAY = 86_400_000
WORKSPACE = "default"
APPEND_CHUNK = 5_000

CONFIG = """
attributes:
  orders_total:       {kind: count, event: Order Completed}
  orders_30d:         {kind: count, event: Order Completed, window: 30d}
  revenue:            {kind: sum, event: Order Completed, property: revenue}
  revenue_30d:        {kind: sum, event: Order Completed, property: revenue, window: 30d}
  largest_order:      {kind: max, event: Order Completed, property: revenue}
  smallest_order:     {kind: min, event: Order Completed, property: revenue}
  eur_orders:         {kind: count, event: Order Completed, where: "properties.currency == 'EUR'"}
  big_orders_90d:     {kind: count, event: Order Completed, window: 90d, where: "properties.revenue >= 100"}
  first_order_sku:    {kind: first, event: Order Completed, property: sku}
  views_7d:           {kind: count, event: Product Viewed, window: 7d}
  last_viewed:        {kind: last, event: Product Viewed, property: category}
  top_category_7d:    {kind: most_frequent, event: Product Viewed, property: category, window: 7d}
  top_category:       {kind: most_frequent, event: Product Viewed, property: category}
  cart_adds_30d:      {kind: count, event: Product Added, window: 30d}
  cart_value:         {kind: sum, event: Product Added, property: price}
  searches_14d:       {kind: count, event: Products Searched, window: 14d}
  last_search:        {kind: last, event: Products Searched, property: query}
  tickets_90d:        {kind: count, event: Support Ticket Opened, window: 90d}
  pages_30d:          {kind: count, type: page, window: 30d}
  app_events:         {kind: count, channel: app, where: "type == 'track'"}
segments:
  frequent_buyers:    {condition: "attributes.orders_30d >= 2"}
  big_spenders:       {condition: "attributes.revenue >= 500"}
  recent_spenders:    {condition: "attributes.revenue_30d >= 200"}
  whales:             {condition: "attributes.largest_order >= 250"}
  euro_buyers:        {condition: "attributes.eur_orders >= 1"}
  big_order_people:   {condition: "attributes.big_orders_90d >= 1"}
  browsers:           {condition: "attributes.views_7d >= 3 and attributes.orders_30d == 0"}
  cart_abandoners:    {condition: "attributes.cart_adds_30d >= 1 and attributes.orders_30d == 0"}
  shoe_people:        {condition: "attributes.top_category_7d == 'shoes'"}
  searchers:          {condition: "attributes.searches_14d >= 2"}
  support_heavy:      {condition: "attributes.tickets_90d >= 2"}
  engaged_readers:    {condition: "attributes.pages_30d >= 5"}
  app_users:          {condition: "attributes.app_events >= 3"}
  pro:                {condition: "traits.plan == 'pro'"}
  enterprise:         {condition: "traits.plan == 'enterprise' and exists(traits.email)"}
  finns:              {condition: "traits.country == 'FI'"}
  unhappy:            {condition: "feedback.nps <= 6"}
  active_web_7d:      {condition: "last_seen.web > now - days(7)"}
  active_app_7d:      {condition: "last_seen.app > now - days(7)"}
  lapsed_buyers:      {condition: "attributes.orders_total >= 1 and last_seen.web < now - days(30)"}
"""

CONTEXT = {
    "library": {"name": "analytics.js", "version": "4.1.0"},
    "ip": "203.0.113.7",
    "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "locale": "fi-FI",
}
CATEGORIES = ["shoes", "shirts", "hats", "bags", "socks", "jackets", "toys", "books"]
PLANS = ["free", "free", "free", "pro", "enterprise"]
COUNTRIES = ["FI", "SE", "DE", "US", "FR", "NL"]
PAGES = ["Home", "Pricing", "Docs", "Blog", "Checkout", "Account"]


# -- events ---------------------------------------------------------------------------


class Maker:
    """Events as the ingest edge would have stored them (validated ``Event``s)."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.prefix = f"b{os.getpid():x}{time.time_ns() % 10**9:x}"
        self.number = 0

    def make(self, kind: str, ts: int, channel: str = "web", **fields: Any) -> Event:
        self.number += 1
        stamp = format_millis(ts)
        return Event(
            message_id=f"{self.random.getrandbits(64):016x}-{self.prefix}-{self.number}",
            type=kind,
            channel=channel,
            source="default",
            timestamp=stamp,
            received_at=stamp,
            context=CONTEXT,
            **fields,
        )

    def seed_identify(self, customer: int, ts: int) -> Event:
        r = self.random
        return self.make(
            "identify",
            ts,
            user_id=f"u{customer}",
            anonymous_id=f"a{customer}",
            traits={
                "email": f"person{customer}@example.com",
                "name": f"Person {customer}",
                "plan": r.choice(PLANS),
                "country": r.choice(COUNTRIES),
            },
        )

    def track(self, customer: int, ts: int) -> Event:
        r = self.random
        roll = r.random()
        channel = "web" if r.random() < 0.75 else ("app" if r.random() < 0.8 else "email")
        user = f"u{customer}"
        if roll < 0.40:
            category = r.choice(CATEGORIES)
            properties: dict[str, Any] = {"sku": f"sku-{r.randrange(5000)}", "category": category, "price": 19.9}
            return self.make("track", ts, channel, user_id=user, event="Product Viewed", properties=properties)
        if roll < 0.55:
            properties = {"sku": f"sku-{r.randrange(5000)}", "price": round(r.uniform(5, 200), 2), "quantity": 1}
            return self.make("track", ts, channel, user_id=user, event="Product Added", properties=properties)
        if roll < 0.75:
            revenue = round(r.uniform(5, 400), 2)
            properties = {
                "orderId": f"o-{self.number}",
                "revenue": revenue,
                "currency": "EUR" if r.random() < 0.6 else "USD",
                "sku": f"sku-{r.randrange(5000)}",
                "products": [{"sku": f"sku-{r.randrange(5000)}", "quantity": 1, "price": revenue}],
            }
            return self.make("track", ts, channel, user_id=user, event="Order Completed", properties=properties)
        if roll < 0.90:
            properties = {"query": r.choice(CATEGORIES) + " sale"}
            return self.make("track", ts, channel, user_id=user, event="Products Searched", properties=properties)
        if roll < 0.95:
            properties = {"topic": "delivery", "support_topic": "delivery"}
            return self.make("track", ts, channel, user_id=user, event="Support Ticket Opened", properties=properties)
        properties = {"metric": "nps", "score": r.randrange(11)}
        return self.make("track", ts, "email", user_id=user, event="Feedback Submitted", properties=properties)

    def page(self, anonymous_id: str, ts: int) -> Event:
        return self.make("page", ts, anonymous_id=anonymous_id, name=self.random.choice(PAGES))

    def identify(self, customer: int, ts: int) -> Event:
        r = self.random
        email = f"person{customer}@example.com" if r.random() < 0.9 else f"person{customer}.{self.number}@example.org"
        traits = {"email": email, "plan": r.choice(PLANS), "country": r.choice(COUNTRIES)}
        return self.make("identify", ts, user_id=f"u{customer}", traits=traits)

    def login(self, customer: int, anonymous_id: str, ts: int) -> Event:
        traits = {"email": f"person{customer}@example.com"}
        return self.make("identify", ts, user_id=f"u{customer}", anonymous_id=anonymous_id, traits=traits)


def seed_events(maker: Maker, customers: int, now: int) -> Iterator[Event]:
    for customer in range(customers):
        yield maker.seed_identify(customer, now - maker.random.randrange(90 * DAY))


def mixed_events(maker: Maker, customers: int, count: int, now: int) -> Iterator[Event]:
    """The measured phase's mix (module docstring); timestamps within the last minute."""
    r = maker.random
    pending: list[tuple[int, int, str]] = []  # (due position, customer, anonymous id)
    visitors = 0
    for position in range(count):
        ts = now - r.randrange(60_000)
        if pending and pending[0][0] <= position:
            _, customer, anonymous_id = pending.pop(0)
            yield maker.login(customer, anonymous_id, ts)
            continue
        roll = r.random()
        customer = r.randrange(customers)
        if roll < 0.70:
            yield maker.track(customer, ts)
        elif roll < 0.85:
            yield maker.page(f"a{customer}", ts)
        elif roll < 0.95:
            yield maker.identify(customer, ts)
        else:
            visitors += 1
            if visitors % 2:  # half of the 5 %: a new visitor's page; the login follows later
                anonymous_id = f"v{maker.prefix}-{position}"
                pending.append((position + r.randrange(100, 800), customer, anonymous_id))
                yield maker.page(anonymous_id, ts)
            else:
                yield maker.track(customer, ts)


# -- setup and the log ----------------------------------------------------------------


async def configure(data_dir: Path) -> None:
    catalog = SqliteCatalog(data_dir)
    await catalog.start()
    try:
        await bootstrap(catalog, write_key=WRITE_KEY, admin_token=ADMIN_TOKEN)
        await catalog.set_config(WORKSPACE, parse_config(CONFIG))
    finally:
        await catalog.close()


async def append(data_dir: Path, events: Iterator[Event], total: int, label: str) -> float:
    """Append through the real log (writer in a child process); returns seconds."""
    event_log = SqliteEventLog(data_dir, writer="process", synchronous="NORMAL", max_pending_events=400_000)
    await event_log.start()
    started = time.perf_counter()
    done = 0
    try:
        while True:
            chunk = [event for _, event in zip(range(APPEND_CHUNK), events, strict=False)]
            if not chunk:
                break
            result = await event_log.append(
                AppendBatch(workspace=WORKSPACE, source="default", received_ms=wall_clock_ms(), events=chunk)
            )
            if result.accepted != len(chunk):
                sys.exit(f"error: the log accepted {result.accepted} of {len(chunk)} events: {result}")
            done += len(chunk)
            if done % 200_000 < APPEND_CHUNK:
                progress(f"  {label}: {done:,}/{total:,} appended")
    finally:
        await event_log.close()
    return time.perf_counter() - started


# -- measuring --------------------------------------------------------------------------


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def rss_mb() -> tuple[float, float]:
    """(peak, current) resident set of this process, MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    current = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            current = int(line.split()[1]) / 1024
    return peak, current


def state_size_mb(data_dir: Path) -> tuple[float, float]:
    path = data_dir / STATE_FILE
    wal = Path(str(path) + "-wal")
    return path.stat().st_size / 1e6, (wal.stat().st_size / 1e6 if wal.exists() else 0.0)


def run_to(processor: Processor, target_seq: int) -> tuple[int, int]:
    """``step()`` until the checkpoint reaches ``target_seq``; (events, timers) done."""
    events = timers = 0
    while processor.checkpoint < target_seq:
        before = processor.checkpoint
        done = processor.step()
        if not done:
            sys.exit(f"error: the processor stopped at {processor.checkpoint}, expected {target_seq}")
        moved = processor.checkpoint - before
        events += moved
        timers += done - moved
    return events, timers


def clear_outbox(store: SqliteStateStore) -> int:
    (count,) = store.connection.execute("SELECT count(*) FROM log_outbox").fetchone()
    store.connection.execute("DELETE FROM log_outbox")
    store.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return int(count)


def hotspots(profile: cProfile.Profile, top: int = 10) -> list[dict[str, Any]]:
    stats = pstats.Stats(profile)
    total = sum(entry[2] for entry in stats.stats.values())  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)[:top]  # type: ignore[attr-defined]
    found = []
    for (filename, line, name), (_, calls, own, cumulative, _) in rows:
        where = filename.split("/src/", 1)[-1] if "/src/" in filename else Path(filename).name
        found.append(
            {
                "function": f"{where}:{line}({name})",
                "calls": calls,
                "own_s": round(own, 3),
                "own_share": round(own / total, 3),
                "cumulative_s": round(cumulative, 3),
            }
        )
    return found


def customers_in(data_dir: Path) -> int:
    """How many ``u{k}`` users the data directory was seeded with (k = 0 … n-1)."""
    connection = sqlite3.connect(f"file:{data_dir / STATE_FILE}?mode=ro", uri=True)
    try:
        (count,) = connection.execute(
            "SELECT count(*) FROM identifiers WHERE workspace = ? AND identifier >= 'user_id:u' "
            "AND identifier < 'user_id:v'",
            (WORKSPACE,),
        ).fetchone()
        return int(count)
    finally:
        connection.close()


def build(data_dir: Path, customers: int) -> None:
    maker = Maker(3)
    asyncio.run(configure(data_dir))
    now = wall_clock_ms()
    asyncio.run(append(data_dir, seed_events(maker, customers, now), customers, "seed"))
    process_log(data_dir)


def process_log(data_dir: Path) -> None:
    store = SqliteStateStore(data_dir, synchronous="NORMAL")
    reader = SqliteLogReader(data_dir)
    try:
        started = time.perf_counter()
        done = Processor(store, reader, clock=wall_clock_ms).run_until_idle()
        progress(f"  processed {done:,} events in {time.perf_counter() - started:.1f} s")
        clear_outbox(store)
    finally:
        reader.close()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers seeded (one identify each)")
    parser.add_argument("--events", type=int, default=200_000, help="events in the measured phase")
    parser.add_argument("--chunks", type=int, default=4, help="timed chunks of the measured phase (median)")
    parser.add_argument("--batch-size", type=int, default=1000, help="Processor batch_size (production: 1000)")
    parser.add_argument("--cache-size", type=int, default=100_000, help="Processor cache_size (production: 100000)")
    parser.add_argument("--data-dir", type=Path, help="build the data directory here (must not exist)")
    parser.add_argument("--keep", action="store_true", help="keep --data-dir afterwards (for bench_profile_lookup)")
    parser.add_argument("--profile", action="store_true", help="cProfile one more chunk of --events/--chunks events")
    parser.add_argument("--profile-out", type=Path, help="with --profile: also write the pstats file here")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.chunks < 1 or args.events < args.chunks * args.batch_size:
        parser.error("--events must be at least --chunks x --batch-size")

    scratch = Path(tempfile.mkdtemp(prefix="polku-bench-processor-"))
    data_dir = args.data_dir or scratch / "data"
    if data_dir.exists():
        parser.error(f"{data_dir} exists; give a new directory")
    maker = Maker(args.seed)
    result: dict[str, Any] = {
        "benchmark": "processor",
        "customers": args.customers,
        "events": args.events,
        "batch_size": args.batch_size,
        "cache_size": args.cache_size,
        "attributes": 20,
        "segments": 20,
    }
    try:
        asyncio.run(configure(data_dir))
        now = wall_clock_ms()
        seconds = asyncio.run(append(data_dir, seed_events(maker, args.customers, now), args.customers, "seed"))
        result["seed_append_events_per_s"] = round(args.customers / seconds)
        progress(f"seed: {args.customers:,} identify events appended in {seconds:.1f} s")
        profile_events = args.events // args.chunks if args.profile else 0
        total = args.events + profile_events
        seconds = asyncio.run(append(data_dir, mixed_events(maker, args.customers, total, now), total, "mixed"))
        progress(f"measured phase: {total:,} events appended in {seconds:.1f} s")

        gc.collect()
        tune_gc()  # as `polku process` does
        result["rss_before_mb"] = round(rss_mb()[1], 1)
        store = SqliteStateStore(data_dir, synchronous="NORMAL")
        reader = SqliteLogReader(data_dir)
        processor = Processor(
            store, reader, clock=wall_clock_ms, batch_size=args.batch_size, cache_size=args.cache_size
        )
        wait_for_quiet(max_wait=20)
        # Seeding: the first `customers` seqs of the log.
        seed_end = args.customers
        started = time.perf_counter()
        cpu0 = time.process_time()
        last_report = started
        done_events = done_timers = 0
        while processor.checkpoint < seed_end:
            target = min(seed_end, processor.checkpoint + 50 * args.batch_size)
            events, timers = run_to(processor, target)
            done_events += events
            done_timers += timers
            if time.perf_counter() - last_report > 15:
                last_report = time.perf_counter()
                rate = done_events / (last_report - started)
                progress(f"  seeding: {processor.checkpoint:,}/{seed_end:,} ({rate:,.0f} events/s so far)")
        seed_seconds = time.perf_counter() - started
        seed_cpu = time.process_time() - cpu0
        result["seed_seconds"] = round(seed_seconds, 1)
        result["seed_events_per_s"] = round(done_events / seed_seconds)
        result["seed_cpu_share"] = round(seed_cpu / seed_seconds, 2)
        result["seed_emitted"] = clear_outbox(store)
        result["customers_in_store"] = store.count_customers(WORKSPACE)
        result["seed_state_mb"] = round(sum(state_size_mb(data_dir)), 1)
        progress(
            f"seeding: {done_events:,} events in {seed_seconds:.1f} s = {done_events / seed_seconds:,.0f} events/s "
            f"({result['customers_in_store']:,} customers, {result['seed_emitted']:,} announcements emitted)"
        )

        # The measured phase, in timed chunks.
        wait_for_quiet(max_wait=20)
        chunk = args.events // args.chunks
        rates: list[float] = []
        timers_fired = 0
        for number in range(args.chunks):
            target = seed_end + (number + 1) * chunk if number < args.chunks - 1 else seed_end + args.events
            start_seq = processor.checkpoint
            started = time.perf_counter()
            cpu0 = time.process_time()
            events, timers = run_to(processor, target)
            seconds = time.perf_counter() - started
            cpu = time.process_time() - cpu0
            timers_fired += timers
            rates.append(events / seconds)
            progress(
                f"  chunk {number + 1}: {events:,} events (seq {start_seq + 1:,}-{target:,}) in {seconds:.2f} s = "
                f"{events / seconds:,.0f} events/s (CPU {cpu / seconds:.0%} of one core, {timers} timers)"
            )
        result["emitted"] = clear_outbox(store)
        result["chunk_events_per_s"] = [round(rate) for rate in rates]
        result["events_per_s_median"] = round(median(rates))
        result["events_per_s_min"] = round(min(rates))
        result["events_per_s_max"] = round(max(rates))
        result["timers_fired"] = timers_fired
        peak, current = rss_mb()
        result["rss_peak_mb"] = round(peak, 1)
        result["rss_current_mb"] = round(current, 1)
        main_mb, wal_mb = state_size_mb(data_dir)
        result["state_db_mb"] = round(main_mb, 1)
        result["state_wal_mb"] = round(wal_mb, 1)
        (merges,) = store.connection.execute("SELECT count(*) FROM identity_changes").fetchone()
        result["merges"] = merges
        result["customers_after"] = store.count_customers(WORKSPACE)

        if args.profile:
            profiler = cProfile.Profile()
            started = time.perf_counter()
            profiler.enable()
            events, _ = run_to(processor, seed_end + total)
            profiler.disable()
            seconds = time.perf_counter() - started
            if args.profile_out:
                profiler.dump_stats(args.profile_out)
            result["profile"] = {
                "events": events,
                "events_per_s_under_cprofile": round(events / seconds),
                "top_own_time": hotspots(profiler),
            }
        reader.close()
        store.close()
        result["machine"] = machine()
    finally:
        if not (args.keep and args.data_dir):
            shutil.rmtree(scratch, ignore_errors=True)
            if args.data_dir:
                shutil.rmtree(args.data_dir, ignore_errors=True)
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    if args.json:
        print(json.dumps(result, indent=2))
        return
    print_table(result)


def print_table(result: dict[str, Any]) -> None:
    rows = [
        ("customers in the store", f"{result['customers_in_store']:,} (after the run: {result['customers_after']:,})"),
        ("seed: log append (identify)", f"{result['seed_append_events_per_s']:,} events/s"),
        (
            "seed: processor, new customers",
            f"{result['seed_events_per_s']:,} events/s ({result['seed_seconds']} s, "
            f"{result['seed_cpu_share']:.0%} CPU)",
        ),
        (
            "measured: processor, mixed events",
            f"median {result['events_per_s_median']:,} events/s (chunks: "
            f"{', '.join(f'{rate:,}' for rate in result['chunk_events_per_s'])}; target >= 20,000)",
        ),
        (
            "merges / timers fired / announcements",
            f"{result['merges']:,} / {result['timers_fired']:,} / {result['emitted']:,}",
        ),
        (
            "RSS peak / current",
            f"{result['rss_peak_mb']:,} MB / {result['rss_current_mb']:,} MB "
            f"(before the processor: {result['rss_before_mb']} MB)",
        ),
        ("state.db (+ WAL)", f"{result['state_db_mb']:,} MB (+ {result['state_wal_mb']} MB)"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"processor: {result['customers']:,} customers, 20 attributes, 20 segments, batch {result['batch_size']}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if "profile" in result:
        profile = result["profile"]
        print(
            f"  cProfile of {profile['events']:,} more events ({profile['events_per_s_under_cprofile']:,}/s under it):"
        )
        for entry in profile["top_own_time"]:
            print(f"    {entry['own_share']:6.1%}  {entry['calls']:>9,}  {entry['function']}")
    print(
        f"RESULT processor ({result['customers']:,} customers, 20 attributes, 20 segments): median "
        f"{result['events_per_s_median']:,} events/s (min {result['events_per_s_min']:,}, "
        f"max {result['events_per_s_max']:,}; target >= 20,000); seeding {result['seed_events_per_s']:,} events/s | "
        f"{result['machine']}"
    )


if __name__ == "__main__":
    main()
