"""Analytics queries on a large store: channel mix, variants, paths, flows, root
causes, switching and attribution over 10,000,000 events of 1,000,000 customers.

Targets (analytics issue, 2-core machine): with 10,000,000 events and 1,000,000
customers, channel mix, paths and variants in at most 5 s each; feedback root
causes over 100,000 answers in at most 10 s; and the store's size on disk stated.

What it does, in one process:

1. **Builds a synthetic store** (not timed as a figure): a fresh
   ``analytics.duckdb`` with the production schema (``analytics_store.writer``),
   filled straight from Arrow tables generated with numpy — no log, no processor
   (``bench_analytics_feed.py`` measures that path). The rows are what the feed
   would have written, in log order (``seq`` follows ``ts``), in transactions of
   50,000 rows (the feed's batch) that also move the feed position:

   - customers with a skewed number of events (lognormal weights, at least one
     each), ids like the processor's (``c_`` + 20 hex digits); 10 % hold an
     account (about 5 customers per account), carried by all their events;
   - sessions (a new one with probability 1/4 per event) at random moments over 90
     days, in increasing order per customer, events a minute or so apart; each
     session on one channel (web 42 %, app 28 %, email 12 %, chat 7 %, phone 6 %,
     store 5 %) and its steps a walk over the channel's ~5-15 steps (half the
     time the usual next step, e.g. Product Viewed → Product Added), 34 event
     names and pages/screens in all, a few ``identify`` calls;
   - 3 % of the events are contacts (phone or chat: started, IVR/bot or
     transferred/escalated, ended) 5-120 minutes after a failed login, password
     reset or payment (failure demand);
   - ``--answers`` (default 1 % of the events: 100,000) ``Feedback Submitted``
     answers: phone 45 % (CSAT 70 %, CES 30 %, after a call), app 30 % (CES, CSAT,
     after an app session), email 25 % (NPS 60 %, CSAT 40 %, 30-90 minutes after
     any session); critical more often on the phone than in the app or by e-mail,
     and much more often after a failure, a transfer or an escalation (so root
     causes has something to find).

2. **Times the analyses**, each ``--runs`` times on a fresh read-only connection
   (``analytics_store.reader``, 2 DuckDB threads, as the API opens one per call;
   the connection's opening is inside the timing): channel mix (by week),
   variants (``channel:event``, max length 20, top 50), paths (from
   ``--path-start``, 3 steps, window 1 d), flows (directly-follows, top 200),
   root causes (CSAT on the phone, lookback 2 h), switching (assisted
   phone,chat, every self-service step ranked) and attribution (goal
   ``Order Completed``, window 30 d). The OS page cache is warm after the first
   run (the store was just written); the median and the range are printed.

It prints a table, the size of ``analytics.duckdb`` (MB and bytes per event),
the load rate of the build (DuckDB Arrow inserts only; the feed's rate is
``bench_analytics_feed.py``'s figure) and the machine, with a note when other
processes kept the machine busy during a run.

Run (from the repository root, after ``scripts/install``)::

    .venv/bin/python benchmarks/bench_analytics_queries.py                                    # 10M events
    .venv/bin/python benchmarks/bench_analytics_queries.py --events 200000 --customers 20000  # smoke (< 30 s)
    .venv/bin/python benchmarks/bench_analytics_queries.py --data-dir /tmp/polku-a10m --keep  # keep the store
    .venv/bin/python benchmarks/bench_analytics_queries.py --data-dir /tmp/polku-a10m --reuse --only variants
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import CpuMeter, machine, median, wait_for_quiet
from polku.adapters.duckdb import analytics_store
from polku.engine import analytics, analytics_causes, analytics_effects

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
WORKSPACE = "default"

Query = Callable[[Any, analytics.Scope], dict[str, Any]]


def queries(path_start: str) -> dict[str, tuple[Query, float | None, str]]:
    """name → (the call, its target in seconds or None, what it was asked)."""
    return {
        "channel_mix": (lambda db, scope: analytics.channel_mix(db, scope), 5.0, "period week"),
        "variants": (
            lambda db, scope: analytics.variants(db, scope, granularity="channel:event"),
            5.0,
            "channel:event, max_length 20, top 50",
        ),
        "paths": (
            lambda db, scope: analytics.paths(db, scope, start=path_start, steps=3, window_ms=DAY_MS),
            5.0,
            f"start {path_start}, 3 steps, window 1d",
        ),
        "flows": (
            lambda db, scope: analytics.directly_follows(db, scope, granularity="channel:event"),
            None,
            "directly-follows, channel:event, top 200",
        ),
        "root_causes": (
            lambda db, scope: analytics_causes.root_causes(
                db, scope, metric="csat", channel="phone", lookback_ms=2 * HOUR_MS
            ),
            10.0,
            "csat, channel phone, lookback 2h",
        ),
        "switching": (
            lambda db, scope: analytics_causes.switching(db, scope, assisted=["phone", "chat"]),
            None,
            "assisted phone,chat, ranked",
        ),
        "attribution": (
            lambda db, scope: analytics_effects.attribution(db, scope, goal="Order Completed"),
            None,
            "goal Order Completed, window 30d",
        ),
    }


def summary(name: str, answer: dict[str, Any]) -> str:
    """One line that shows the answer is about the data (and not empty)."""
    if name == "channel_mix":
        channels = ", ".join(f"{c['channel']} {c['share_of_events']:g} %" for c in answer["channels"])
        return f"{answer['events']:,} events, {answer['people']:,} people; {channels}"
    if name == "variants":
        return f"{answer['customers']:,} customers, {answer['variants']:,} variants; top 50 cover " + (
            f"{100 - (answer['other']['share'] or 0):.1f} %"
        )
    if name == "paths":
        return f"{answer['customers']:,} customers took it; {len(answer['nodes'])} nodes, {len(answer['links'])} links"
    if name == "flows":
        return f"{len(answer['edges'])} edges, {len(answer['starts'])} starts, {len(answer['ends'])} ends"
    if name == "root_causes":
        top = answer["findings"][0]["sentence"] if answer["findings"] else "no findings"
        return f"{answer['answers']:,} answers, {answer['critical_rate']} % critical; first: {top}"
    if name == "switching":
        top = answer["steps"][0] if answer["steps"] else None
        first = f"; first: {top['step']} {top['rate']} % (lift {top['lift']})" if top else ""
        return f"{answer['customer_steps']:,} customer-steps, {answer['rate']} % followed by a contact{first}"
    if name == "attribution":
        channels = ", ".join(f"{c['channel']} {c['markov']:,.0f}" for c in answer["channels"])
        return f"{answer['customers']:,} customers, {answer['conversions']:,} conversions; markov: {channels}"
    return ""


def measure(data_dir: Path, names: list[str], runs: int, path_start: str) -> dict[str, Any]:
    scope = analytics.Scope(WORKSPACE)
    found: dict[str, Any] = {}
    for name in names:
        call, target, asked = queries(path_start)[name]
        wait_for_quiet(max_wait=30)
        times: list[float] = []
        others: list[float] = []
        answer: dict[str, Any] = {}
        for _ in range(runs):
            with CpuMeter() as meter:
                started = time.perf_counter()
                with analytics_store.reader(data_dir) as db:
                    answer = call(db, scope)
                times.append(time.perf_counter() - started)
            others.append(meter.other)
        found[name] = {
            "asked": asked,
            "seconds": [round(value, 3) for value in times],
            "median_s": round(median(times), 3),
            "min_s": round(min(times), 3),
            "max_s": round(max(times), 3),
            "target_s": target,
            "others_busy": round(max(others), 2),
            "answer": summary(name, answer),
        }
        note = f" (NOISY: other processes used up to {max(others):.0%} of the machine)" if max(others) > 0.05 else ""
        print(
            f"  {name}: median {median(times):.2f} s ({', '.join(f'{value:.2f}' for value in times)}){note}",
            file=sys.stderr,
            flush=True,
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="events in the store")
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers they belong to")
    parser.add_argument("--answers", type=int, help="Feedback Submitted answers among them (default: 1 %% of events)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each analysis (median, range)")
    parser.add_argument("--path-start", default="web:Product Viewed", help="the step paths start from")
    parser.add_argument("--only", help="comma-separated analyses to time (default: all)")
    parser.add_argument("--data-dir", type=Path, help="build the store here (must not exist, unless --reuse)")
    parser.add_argument("--keep", action="store_true", help="keep --data-dir afterwards")
    parser.add_argument("--reuse", action="store_true", help="time the store already in --data-dir")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    answers = args.answers if args.answers is not None else args.events // 100
    names = list(queries(args.path_start))
    if args.only:
        names = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in names if name not in queries(args.path_start)]
        if unknown:
            parser.error(f"unknown analyses {unknown}; known: {', '.join(queries(args.path_start))}")
    if args.reuse and not (args.data_dir and analytics_store.analytics_path(args.data_dir).exists()):
        parser.error("--reuse needs a --data-dir that holds analytics.duckdb")
    if not args.reuse and args.data_dir and args.data_dir.exists():
        parser.error(f"{args.data_dir} exists; give a new directory (or --reuse)")
    if args.customers < 1 or args.events < 10 * args.customers // 10 + answers:
        parser.error("--events must be at least --customers + --answers")

    scratch = Path(tempfile.mkdtemp(prefix="polku-bench-analytics-"))
    data_dir = args.data_dir or scratch / "data"
    result: dict[str, Any] = {"benchmark": "analytics-queries", "runs": args.runs}
    try:
        if args.reuse:
            with analytics_store.reader(data_dir) as db:
                (events,) = db.execute("SELECT count(*) FROM events").fetchone()
                (customers,) = db.execute("SELECT count(DISTINCT customer_id) FROM events").fetchone()
                (stored_answers,) = db.execute("SELECT count(*) FROM events WHERE metric IS NOT NULL").fetchone()
            result.update(events=int(events), customers=int(customers), answers=int(stored_answers))
        else:
            data_dir.mkdir(parents=True)
            started = time.perf_counter()
            table = generate(args.events, args.customers, answers, seed=args.seed)
            generated = time.perf_counter() - started
            print(f"generated {table.num_rows:,} events in {generated:.1f} s", file=sys.stderr, flush=True)
            seconds = load(data_dir, table)
            result.update(
                events=args.events,
                customers=args.customers,
                answers=answers,
                generate_s=round(generated, 1),
                load_s=round(seconds, 1),
                load_events_per_s=round(args.events / seconds),
            )
            print(
                f"loaded into analytics.duckdb in {seconds:.1f} s ({args.events / seconds:,.0f} events/s)",
                file=sys.stderr,
                flush=True,
            )
            del table
        size = analytics_store.analytics_path(data_dir).stat().st_size
        wal = Path(str(analytics_store.analytics_path(data_dir)) + ".wal")
        result["file_mb"] = round(size / 1e6, 1)
        result["wal_mb"] = round(wal.stat().st_size / 1e6, 1) if wal.exists() else 0.0
        result["bytes_per_event"] = round(size / result["events"], 1)
        result["queries"] = measure(data_dir, names, args.runs, args.path_start)
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
    print(
        f"analytics queries: {result['events']:,} events, {result['customers']:,} customers, "
        f"{result['answers']:,} feedback answers; {result['runs']} runs each, fresh read-only connection"
    )
    width = max(len(name) for name in result["queries"])
    print(f"  {'analysis':<{width}}  {'median':>8}  {'range':>15}  {'target':>7}  asked")
    for name, entry in result["queries"].items():
        target = f"<= {entry['target_s']:g} s" if entry["target_s"] else "-"
        verdict = "" if not entry["target_s"] else ("  ok" if entry["median_s"] <= entry["target_s"] else "  MISSED")
        noisy = "  (noisy)" if entry["others_busy"] > 0.05 else ""
        print(
            f"  {name:<{width}}  {entry['median_s']:>6.2f} s  {entry['min_s']:>6.2f}-{entry['max_s']:<6.2f} s"
            f"  {target:>7}  {entry['asked']}{verdict}{noisy}"
        )
    for name, entry in result["queries"].items():
        print(f"    {name}: {entry['answer']}")
    size = f"{result['file_mb']:,} MB ({result['bytes_per_event']} bytes/event"
    size += f", WAL {result['wal_mb']} MB)" if result["wal_mb"] else ")"
    print(f"  analytics.duckdb: {size}")
    if "load_events_per_s" in result:
        print(
            f"  build: generated in {result['generate_s']} s, loaded in {result['load_s']} s "
            f"({result['load_events_per_s']:,} events/s through DuckDB Arrow inserts of 50,000 rows)"
        )
    medians = ", ".join(f"{name} {entry['median_s']:.2f} s" for name, entry in result["queries"].items())
    print(
        f"RESULT analytics queries ({result['events']:,} events, {result['customers']:,} customers): {medians}; "
        f"analytics.duckdb {result['file_mb']:,} MB ({result['bytes_per_event']} B/event) | {result['machine']}"
    )


if __name__ == "__main__":
    main()
