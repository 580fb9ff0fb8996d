"""Profile lookup and agent-view latency against a store of 1,000,000 customers.

Target (identity/profile/segments issue): p99 at most 5 ms for a profile lookup
with 1,000,000 customers.

Two figures, each measured two ways:

* ``GET /v1/profiles/lookup?user_id=…`` (identifier → customer → profile JSON with
  the 20 computed attributes of ``bench_processor.CONFIG`` evaluated now), and
* ``GET /v1/profiles/{customer_id}/context`` (the agent view: profile, the newest
  500 timeline rows, the bodies of up to ~125 of them from the event log),

over HTTP against a real ``polku serve --no-processor`` (sequential requests on one
keep-alive ``httpx`` connection: closed loop, so this is latency, not capacity), and
in-process by calling ``ProfileViews.find`` + ``profile_json`` / ``context`` on
read-only connections, which separates the store's cost from HTTP's. Customers are
drawn uniformly at random from the whole store (``user_id`` ``u0`` … ``u{N-1}``, as
``bench_processor`` seeds them), so most reads miss SQLite's page cache (the OS's
file cache is warm: the processor just wrote the file, as on a live server).

The agent view of a customer with one or two events is cheap; ``--heavy`` adds
customers with a few hundred events in the last 48 hours (processed in this
process before the server starts) and measures their agent view separately.

The data directory: ``--data-dir`` reuses one that ``bench_processor.py --data-dir D
--keep`` built (the default target: 1,000,000 customers); without it this script
builds one of ``--customers`` customers with ``bench_processor``'s seeding (one
identify each), in a temporary directory. The server runs without its processor, so
nothing changes the state while it is measured.

Run (from the repository root, after ``scripts/install``)::

    .venv/bin/python benchmarks/bench_processor.py --data-dir /tmp/polku-1m --keep
    .venv/bin/python benchmarks/bench_profile_lookup.py --data-dir /tmp/polku-1m
    .venv/bin/python benchmarks/bench_profile_lookup.py --customers 20000 --requests 500 --json   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx

import bench_processor
from harness import ADMIN_TOKEN, machine, server, wait_for_quiet
from polku.adapters.sqlite.log_reader import SqliteLogReader, decode_config
from polku.adapters.sqlite.state_store import STATE_FILE, open_state_reader
from polku.engine.profile_views import ProfileViews
from polku.engine.runtime import WorkspaceRuntime
from polku.engine.worker import wall_clock_ms

WORKSPACE = bench_processor.WORKSPACE
HEAVY_EVENTS = 300


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000, 3)

    return {"n": len(ordered), "p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99), "max_ms": at(1.0)}


def add_heavy(data_dir: Path, count: int, customers: int) -> list[str]:
    """``count`` customers (``heavy{k}-…``) with ``HEAVY_EVENTS`` events each over the
    last 48 hours; returns their user ids."""
    maker = bench_processor.Maker(11)
    now = wall_clock_ms()
    users = [f"heavy{number}-{maker.prefix}" for number in range(count)]

    def events() -> Any:
        for user in users:
            for number in range(HEAVY_EVENTS):
                ts = now - 48 * 3_600_000 + number * (48 * 3_600_000 // HEAVY_EVENTS)
                event = maker.track(customers + number, ts)
                event.user_id = user
                yield event

    total = count * HEAVY_EVENTS
    asyncio.run(bench_processor.append(data_dir, events(), total, "heavy"))
    bench_processor.process_log(data_dir)
    return users


def runtime_of(data_dir: Path) -> WorkspaceRuntime:
    reader = SqliteLogReader(data_dir)
    try:
        return WorkspaceRuntime.compile(decode_config(reader.configs()[WORKSPACE]))
    finally:
        reader.close()


def customer_ids(views: ProfileViews, runtime: WorkspaceRuntime, users: list[str]) -> list[str]:
    return [views.find(WORKSPACE, runtime, "user_id", user) for user in users]


def time_calls(calls: list[Callable[[], Any]]) -> list[float]:
    samples = []
    for call in calls:
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def in_process(data_dir: Path, users: list[str], heavy: list[str], warmup: int) -> dict[str, Any]:
    runtime = runtime_of(data_dir)
    views = ProfileViews(open_state_reader(data_dir), SqliteLogReader(data_dir))
    try:
        ids = customer_ids(views, runtime, users)
        heavy_ids = customer_ids(views, runtime, heavy)

        def lookup(user: str) -> Callable[[], Any]:
            return lambda: views.profile_json(
                WORKSPACE, runtime, views.find(WORKSPACE, runtime, "user_id", user), wall_clock_ms()
            )

        def context(customer_id: str) -> Callable[[], Any]:
            return lambda: views.context(
                WORKSPACE, runtime, views.find(WORKSPACE, runtime, "customer_id", customer_id), wall_clock_ms()
            )

        time_calls([lookup(user) for user in users[:warmup]])
        result = {
            "lookup": percentiles(time_calls([lookup(user) for user in users[warmup:]])),
            "context": percentiles(time_calls([context(customer_id) for customer_id in ids[warmup:]])),
        }
        if heavy_ids:
            result["context_heavy"] = percentiles(time_calls([context(customer_id) for customer_id in heavy_ids * 5]))
        return result
    finally:
        views.state.connection.close()
        views.log.close()


def over_http(data_dir: Path, users: list[str], heavy: list[str], warmup: int) -> dict[str, Any]:
    runtime = runtime_of(data_dir)
    views = ProfileViews(open_state_reader(data_dir), SqliteLogReader(data_dir))
    try:
        ids = customer_ids(views, runtime, users)
        heavy_ids = customer_ids(views, runtime, heavy)
    finally:
        views.state.connection.close()
        views.log.close()
    with server(data_dir, extra=["--no-processor"]) as running:
        base = f"http://127.0.0.1:{running.port}"
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=base, headers=headers, timeout=10) as client:

            def get(path: str, params: dict[str, str] | None = None) -> Callable[[], Any]:
                def call() -> None:
                    response = client.get(path, params=params)
                    if response.status_code != 200:
                        sys.exit(f"error: GET {path} {params}: {response.status_code} {response.text[:300]}")

                return call

            time_calls([get("/v1/profiles/lookup", {"user_id": user}) for user in users[:warmup]])
            wait_for_quiet(max_wait=20)
            result = {
                # What HTTP (httpx, uvicorn, routing) costs by itself: no auth, no store.
                "healthz": percentiles(time_calls([get("/healthz") for _ in users[warmup:]])),
                "lookup": percentiles(
                    time_calls([get("/v1/profiles/lookup", {"user_id": user}) for user in users[warmup:]])
                ),
                "context": percentiles(
                    time_calls([get(f"/v1/profiles/{customer_id}/context") for customer_id in ids[warmup:]])
                ),
            }
            if heavy_ids:
                result["context_heavy"] = percentiles(
                    time_calls([get(f"/v1/profiles/{customer_id}/context") for customer_id in heavy_ids * 5])
                )
            return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="a data directory bench_processor.py built (--keep)")
    parser.add_argument("--customers", type=int, default=1_000_000, help="without --data-dir: customers to seed")
    parser.add_argument("--requests", type=int, default=3000, help="measured requests of each kind")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--heavy", type=int, default=20, help=f"customers with {HEAVY_EVENTS} events to add (0: none)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="polku-bench-lookup-"))
    try:
        if args.data_dir is not None:
            data_dir = args.data_dir
            if not (data_dir / STATE_FILE).exists():
                parser.error(f"{data_dir} has no {STATE_FILE}; build it with bench_processor.py --data-dir D --keep")
        else:
            data_dir = scratch / "data"
            bench_processor.progress(f"building a data directory of {args.customers:,} customers")
            bench_processor.build(data_dir, args.customers)
        customers = bench_processor.customers_in(data_dir)
        heavy = add_heavy(data_dir, args.heavy, customers) if args.heavy else []
        picker = random.Random(args.seed)
        users = [f"u{picker.randrange(customers)}" for _ in range(args.warmup + args.requests)]
        state_mb = (data_dir / STATE_FILE).stat().st_size / 1e6
        wait_for_quiet(max_wait=20)
        local = in_process(data_dir, users, heavy, args.warmup)
        users = [f"u{picker.randrange(customers)}" for _ in range(args.warmup + args.requests)]
        remote = over_http(data_dir, users, heavy, args.warmup)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = {
        "benchmark": "profile_lookup",
        "customers": customers,
        "state_db_mb": round(state_mb, 1),
        "requests": args.requests,
        "heavy_customers": len(heavy),
        "http": remote,
        "in_process": local,
        "machine": machine(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"profile lookup: {customers:,} customers (state.db {state_mb:,.0f} MB), {args.requests:,} sequential "
        f"requests of each kind on one keep-alive connection, random customers"
    )
    print(f"  {'what':<44} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    labels = {
        "healthz": "/healthz (HTTP alone, for comparison)",
        "lookup": "lookup?user_id= (profile)",
        "context": "{id}/context (agent view)",
        "context_heavy": f"{{id}}/context, {HEAVY_EVENTS}-event customers",
    }
    for where, figures in (("HTTP", remote), ("in-process", local)):
        for key, label in labels.items():
            if key in figures:
                row = figures[key]
                print(
                    f"  {where + ' ' + label:<44} {row['p50_ms']:>8.2f} {row['p90_ms']:>8.2f} "
                    f"{row['p99_ms']:>8.2f} {row['max_ms']:>8.2f}"
                )
    print(
        f"RESULT profile lookup ({customers:,} customers, HTTP, closed loop): p99 {remote['lookup']['p99_ms']:.2f} ms "
        f"(p50 {remote['lookup']['p50_ms']:.2f}; target <= 5 ms); agent view p99 {remote['context']['p99_ms']:.2f} ms "
        f"| {result['machine']}"
    )


if __name__ == "__main__":
    main()
