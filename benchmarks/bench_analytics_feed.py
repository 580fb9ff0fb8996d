"""Analytics feed throughput: events per second from the log into the analytics store.

Target (analytics issue, 2-core machine): the analytics store's ingest keeps up with
at least 50,000 events/s; and the store's size on disk stated.

What it does, in one process:

1. **Setup** (not timed as the figure): a fresh data directory with the default
   workspace (default configuration: no attributes, segments or journeys, so the
   log holds only the events below), ``--events`` events of ``--customers``
   customers appended through ``SqliteEventLog`` (the writer in a child process)
   and processed by ``Processor.run_until_idle`` (identity and profiles, as
   ``polku process`` does; the state's checkpoint is what the feed follows). The
   events are what an SDK and the channel integrations would send, in time order
   over 90 days, with the step mix of ``bench_analytics_queries.py``: each
   customer's first event is an ``identify`` (userId, anonymousId, e-mail); then
   sessions on web, app, email, chat, phone and store, half the web pages under
   the anonymousId only; 10 % of customers in an account (``context.groupId``,
   and one ``group`` call); a phone or chat contact after 40 % of failed logins,
   resets and payments; ``Feedback Submitted`` answers (1 %, CSAT/NPS/CES on
   phone, app and e-mail); and 1 % of customers first seen as an anonymous
   visitor whom a later login merges into the customer (identity changes the
   feed applies).
2. **Measured**: ``AnalyticsFeeder(data_dir).step()`` until it returns 0 — the
   whole backlog, batch by batch (50,000 events), each batch a writer connection
   opened and closed as in production — ``--runs`` times, each on a fresh
   ``analytics.duckdb`` (deleted between runs) with a fresh feeder (cold caches).
   The figure is log events per second (the median and the range over the runs),
   with where the time went: reading the log, decoding and resolving the
   customers (``columns``), and the DuckDB part (opening the file, the identity
   changes, the Arrow insert and the commit, closing — the rest of ``step``).

It prints the figure, the rows stored, the size of ``analytics.duckdb`` (MB and
bytes per event) beside ``polku.db`` and ``state.db``, the machine, a note when
other processes kept the machine busy, and with ``--profile`` a cProfile of one
more run (top functions by own time).

Run (from the repository root, after ``scripts/install``)::

    .venv/bin/python benchmarks/bench_analytics_feed.py                                   # 500,000 events
    .venv/bin/python benchmarks/bench_analytics_feed.py --events 50000 --customers 5000   # smoke (< 60 s)
    .venv/bin/python benchmarks/bench_analytics_feed.py --profile --json
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_analytics_queries import ANSWERS, CHANNELS, CONTACTS, CRITICAL_SCORES, FAILURES, FEEDBACK, TROUBLE
from bench_processor import CONTEXT, append, hotspots, progress, state_size_mb
from harness import ADMIN_TOKEN, WRITE_KEY, CpuMeter, machine, median, wait_for_quiet
from polku.adapters.duckdb import analytics_store
from polku.adapters.sqlite import SqliteCatalog
from polku.adapters.sqlite.log_reader import SqliteLogReader
from polku.adapters.sqlite.state_store import SqliteStateStore
from polku.core.events import Event, format_millis
from polku.core.workspace import parse_config
from polku.engine.analytics_feed import AnalyticsFeeder
from polku.engine.processor import Processor
from polku.engine.setup import bootstrap
from polku.engine.worker import wall_clock_ms

DAY = 86_400_000
MINUTE = 60_000
WORKSPACE = "default"
Spec = tuple[int, int, str, str, dict[str, Any]]
"""(ts, customer, channel, kind, Event fields): an event before it is made."""


class Journeys:
    """Every customer's events (module docstring), as specs in time order."""

    def __init__(self, customers: int, events: int, seed: int, now: int) -> None:
        self.random = random.Random(seed)
        self.customers = customers
        self.start = now - 90 * DAY
        self.accounts = {
            customer: f"acct-{self.random.randrange(max(1, customers // 50))}"
            for customer in range(customers)
            if self.random.random() < 0.1
        }
        self.visitors = {customer for customer in range(customers) if self.random.random() < 0.01}
        self.answers = max(1, events // 100)
        self.events = events
        channels = list(CHANNELS)
        self.channel_weights = [CHANNELS[name][0] for name in channels]
        self.channels = channels
        self.steps = {name: [step for step in CHANNELS[name][2] if step[2] > 0] for name in channels}

    def specs(self) -> list[Spec]:
        r = self.random
        found: list[Spec] = []
        # Besides the sessions: an identify per customer, a group call per account holder,
        # a page and a login per visitor, and the answers.
        budget = self.events - self.answers - self.customers - len(self.accounts) - 2 * len(self.visitors)
        weights = [r.lognormvariate(0.0, 1.0) for _ in range(self.customers)]
        scale = max(0, budget - self.customers) / sum(weights)
        per_customer = [1 + int(weight * scale) for weight in weights]
        for customer in r.sample(range(self.customers), max(0, budget - sum(per_customer))):
            per_customer[customer] += 1
        sessions_after: list[tuple[int, int, bool]] = []  # (customer, end ts, troubled) for answers
        for customer, count in enumerate(per_customer):
            ts = self.start + r.randrange(30 * DAY)
            user = {"user_id": f"u{customer}"}
            traits = {"email": f"person{customer}@example.com", "first_name": f"P{customer}"}
            found.append((ts, customer, "web", "identify", {**user, "anonymous_id": f"a{customer}", "traits": traits}))
            if customer in self.visitors:
                # Seen later as a new anonymous visitor, then logs in: the two customers merge.
                seen = ts + r.randrange(DAY, 30 * DAY)
                visitor = {"anonymous_id": f"v{customer}"}
                found.append((seen, customer, "web", "page", {**visitor, "name": "Pricing"}))
                found.append((seen + 10 * MINUTE, customer, "web", "identify", {**user, **visitor}))
            if customer in self.accounts:
                found.append((ts + 1, customer, "web", "group", {"user_id": f"u{customer}", "traits": {"plan": "b2b"}}))
            left = count
            between = max(2 * MINUTE, 60 * DAY * 4 // (count + 4))  # sessions spread over about 60 days
            while left > 0:
                ts += r.randrange(MINUTE, between)
                channel = r.choices(self.channels, self.channel_weights)[0]
                steps = self.steps[channel]
                step = steps[0] if r.random() < 0.6 else r.choice(steps)
                troubled = False
                while left > 0:
                    kind, name, _, after = step
                    fields: dict[str, Any] = {"user_id": f"u{customer}"}
                    if kind == "page" and r.random() < 0.5:
                        fields = {"anonymous_id": f"a{customer}"}
                    if kind == "identify":
                        fields["traits"] = {"plan": r.choice(["free", "pro"])}
                    elif kind == "track":
                        fields["event"] = name
                        fields["properties"] = {"value": r.randrange(100)}
                    else:
                        fields["name"] = name
                    found.append((ts, customer, channel, kind, fields))
                    left -= 1
                    troubled = troubled or name in TROUBLE
                    if name in FAILURES and r.random() < 0.4 and left >= 3:
                        contact = "phone" if r.random() < 0.6 else "chat"
                        started, routine, escalated, ended = CONTACTS[contact]
                        at = ts + r.randrange(5 * MINUTE, 120 * MINUTE)
                        middle = escalated if r.random() < 0.3 else routine
                        for offset, contact_step in ((0, started), (3 * MINUTE, middle), (12 * MINUTE, ended)):
                            found.append(
                                (
                                    at + offset,
                                    customer,
                                    contact,
                                    "track",
                                    {"user_id": f"u{customer}", "event": contact_step},
                                )
                            )
                        sessions_after.append((customer, at + 12 * MINUTE, middle == escalated))
                        left -= 3
                    if r.random() < 0.25:
                        break
                    ts += int(r.expovariate(1 / MINUTE))
                    step = next((s for s in steps if s[1] == after), step) if r.random() < 0.5 else r.choice(steps)
                sessions_after.append((customer, ts, troubled))
        for _ in range(self.answers):
            customer, ended, troubled = r.choice(sessions_after)
            channel = r.choices(list(ANSWERS), [share for share, *_ in ANSWERS.values()])[0]
            _, metrics, critical_p, (low, high), survey = ANSWERS[channel]
            metric = r.choices(list(metrics), list(metrics.values()))[0]
            critical = r.random() < critical_p + (0.35 if troubled else 0.0)
            scores = CRITICAL_SCORES[metric][0 if critical else 1]
            properties = {"metric": metric, "score": r.randint(*scores), "survey": survey}
            fields = {"user_id": f"u{customer}", "event": FEEDBACK, "properties": properties}
            found.append((ended + r.randrange(low, high), customer, channel, "track", fields))
        found.sort(key=lambda spec: spec[0])
        return found

    def make(self, specs: list[Spec]) -> Iterator[Event]:
        for number, (ts, customer, channel, kind, fields) in enumerate(specs):
            stamp = format_millis(ts)
            account = self.accounts.get(customer)
            context = {**CONTEXT, "groupId": account} if account else CONTEXT
            if kind == "group":
                fields = {**fields, "group_id": account}
            yield Event(
                message_id=f"m{number}-{customer}",
                type=kind,
                channel=channel,
                source=CHANNELS[channel][1],
                timestamp=stamp,
                received_at=stamp,
                context=context,
                **fields,
            )


async def configure(data_dir: Path) -> None:
    catalog = SqliteCatalog(data_dir)
    await catalog.start()
    try:
        await bootstrap(catalog, write_key=WRITE_KEY, admin_token=ADMIN_TOKEN)
        await catalog.set_config(WORKSPACE, parse_config("{}"))
    finally:
        await catalog.close()


def build(data_dir: Path, customers: int, events: int, seed: int) -> dict[str, Any]:
    journeys = Journeys(customers, events, seed, wall_clock_ms())
    specs = journeys.specs()
    progress(f"setup: {len(specs):,} events of {customers:,} customers generated")
    asyncio.run(configure(data_dir))
    seconds = asyncio.run(append(data_dir, journeys.make(specs), len(specs), "log"))
    progress(f"setup: appended to polku.db in {seconds:.1f} s")
    store = SqliteStateStore(data_dir, synchronous="NORMAL")
    reader = SqliteLogReader(data_dir)
    try:
        started = time.perf_counter()
        done = Processor(store, reader, clock=wall_clock_ms).run_until_idle()
        processed = time.perf_counter() - started
        (merges,) = store.connection.execute("SELECT count(*) FROM identity_changes").fetchone()
        progress(f"setup: processed {done:,} events in {processed:.1f} s ({merges:,} identity changes)")
    finally:
        reader.close()
        store.close()
    return {"log_events": len(specs), "identity_changes": int(merges)}


def timed(total: list[float], function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            total[0] += time.perf_counter() - started

    return wrapper


def feed_once(data_dir: Path, profile: cProfile.Profile | None = None) -> dict[str, Any]:
    """Feed a fresh analytics.duckdb until the feeder is idle."""
    for leftover in (analytics_store.analytics_path(data_dir), Path(f"{analytics_store.analytics_path(data_dir)}.wal")):
        leftover.unlink(missing_ok=True)
    feeder = AnalyticsFeeder(data_dir)
    read, columns = [0.0], [0.0]
    feeder.log.read = timed(read, feeder.log.read)  # type: ignore[method-assign]
    feeder.columns = timed(columns, feeder.columns)  # type: ignore[method-assign]
    fed = batches = 0
    try:
        with CpuMeter() as meter:
            started = time.perf_counter()
            if profile:
                profile.enable()
            while done := feeder.step():
                fed += done
                batches += 1
            if profile:
                profile.disable()
            seconds = time.perf_counter() - started
    finally:
        feeder.close()
    return {
        "events": fed,
        "batches": batches,
        "seconds": seconds,
        "events_per_s": fed / seconds,
        "log_read_s": read[0],
        "columns_s": columns[0],
        "duckdb_s": seconds - read[0] - columns[0],
        "others_busy": meter.other,
        "own_cpus": meter.generator,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=500_000, help="events in the log (about)")
    parser.add_argument("--customers", type=int, default=50_000, help="customers they belong to")
    parser.add_argument("--runs", type=int, default=3, help="timed feeds of the whole log, each into a fresh file")
    parser.add_argument("--profile", action="store_true", help="cProfile one more feed (top functions by own time)")
    parser.add_argument("--data-dir", type=Path, help="build the data directory here (must not exist, unless --reuse)")
    parser.add_argument("--keep", action="store_true", help="keep --data-dir afterwards")
    parser.add_argument("--reuse", action="store_true", help="feed from the processed log already in --data-dir")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.customers < 1 or args.events < 3 * args.customers:
        parser.error("--events must be at least 3 x --customers")
    if args.reuse and not (args.data_dir and (args.data_dir / "state.db").exists()):
        parser.error("--reuse needs a --data-dir that holds a processed log")
    if not args.reuse and args.data_dir and args.data_dir.exists():
        parser.error(f"{args.data_dir} exists; give a new directory (or --reuse)")

    scratch = Path(tempfile.mkdtemp(prefix="polku-bench-analytics-feed-"))
    data_dir = args.data_dir or scratch / "data"
    result: dict[str, Any] = {"benchmark": "analytics-feed", "customers": args.customers, "runs": args.runs}
    try:
        if not args.reuse:
            result.update(build(data_dir, args.customers, args.events, args.seed))
        runs = []
        for number in range(args.runs):
            wait_for_quiet(max_wait=30)
            run = feed_once(data_dir)
            runs.append(run)
            noisy = f" (NOISY: other processes used {run['others_busy']:.0%})" if run["others_busy"] > 0.05 else ""
            progress(
                f"  run {number + 1}: {run['events']:,} events in {run['seconds']:.2f} s = "
                f"{run['events_per_s']:,.0f} events/s (log read {run['log_read_s']:.2f} s, columns "
                f"{run['columns_s']:.2f} s, DuckDB {run['duckdb_s']:.2f} s; {run['own_cpus']:.2f} CPUs){noisy}"
            )
        rates = [run["events_per_s"] for run in runs]
        middle = sorted(runs, key=lambda run: run["events_per_s"])[len(runs) // 2]
        path = analytics_store.analytics_path(data_dir)
        with analytics_store.reader(data_dir) as db:
            (rows,) = db.execute("SELECT count(*) FROM events").fetchone()
            (customers,) = db.execute("SELECT count(DISTINCT customer_id) FROM events").fetchone()
        state_mb, state_wal_mb = state_size_mb(data_dir)
        result.update(
            fed=middle["events"],
            batches=middle["batches"],
            runs_events_per_s=[round(rate) for rate in rates],
            events_per_s_median=round(median(rates)),
            events_per_s_min=round(min(rates)),
            events_per_s_max=round(max(rates)),
            median_run={
                key: round(value, 3) for key, value in middle.items() if key == "seconds" or key.endswith("_s")
            },
            others_busy=round(max(run["others_busy"] for run in runs), 2),
            rows=int(rows),
            customers_in_store=int(customers),
            file_mb=round(path.stat().st_size / 1e6, 1),
            bytes_per_event=round(path.stat().st_size / int(rows), 1),
            log_mb=round((data_dir / "polku.db").stat().st_size / 1e6, 1),
            state_mb=round(state_mb + state_wal_mb, 1),
        )
        if args.profile:
            profile = cProfile.Profile()
            run = feed_once(data_dir, profile)
            result["profile"] = {
                "events_per_s_under_cprofile": round(run["events_per_s"]),
                "top_own_time": hotspots(profile, top=15),
            }
        result["machine"] = machine()
    finally:
        if not (args.keep and args.data_dir) and not args.reuse:
            shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)

    if args.json:
        print(json.dumps(result, indent=2))
        return
    print_table(result)


def print_table(result: dict[str, Any]) -> None:
    split = result["median_run"]
    rows = [
        (
            "feed: log → analytics.duckdb",
            f"median {result['events_per_s_median']:,} events/s (runs: "
            f"{', '.join(f'{rate:,}' for rate in result['runs_events_per_s'])}; target >= 50,000)",
        ),
        (
            "where the median run's time went",
            f"log read {split['log_read_s']:.2f} s, decode + resolve (columns) {split['columns_s']:.2f} s, "
            f"DuckDB (open, insert, commit, close) {split['duckdb_s']:.2f} s of {split['seconds']:.2f} s",
        ),
        ("events fed / rows stored", f"{result['fed']:,} / {result['rows']:,} ({result['batches']} batches)"),
        ("customers in the store", f"{result['customers_in_store']:,}"),
        ("analytics.duckdb", f"{result['file_mb']:,} MB ({result['bytes_per_event']} bytes/event)"),
        ("polku.db / state.db", f"{result['log_mb']:,} MB / {result['state_mb']:,} MB"),
    ]
    if result["others_busy"] > 0.05:
        rows.append(("NOISY", f"other processes used up to {result['others_busy']:.0%} of the machine in a run"))
    width = max(len(name) for name, _ in rows)
    print(f"analytics feed: {result['fed']:,} log events of {result['customers']:,} customers, {result['runs']} runs")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if "profile" in result:
        profile = result["profile"]
        print(f"  cProfile of one more feed ({profile['events_per_s_under_cprofile']:,} events/s under it):")
        for entry in profile["top_own_time"]:
            print(f"    {entry['own_share']:6.1%}  {entry['calls']:>9,}  {entry['function']}")
    print(
        f"RESULT analytics feed ({result['fed']:,} events, {result['customers']:,} customers): median "
        f"{result['events_per_s_median']:,} events/s (min {result['events_per_s_min']:,}, max "
        f"{result['events_per_s_max']:,}; target >= 50,000); analytics.duckdb {result['file_mb']:,} MB "
        f"({result['bytes_per_event']} B/event) | {result['machine']}"
    )


if __name__ == "__main__":
    main()
