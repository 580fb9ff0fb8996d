"""Timer lateness of a real ``polku process``: how late do journey waits end?

Target (journeys issue): timer lateness p99 <= 1 s with many customers waiting while
ordinary events flow.

What it does:

1. A fresh data directory with the default workspace (an e-mail channel, the
   attributes and segments of ``bench_journeys.CONFIG``) and one journey, ``timed``:
   entered on ``Timer Armed``, ``wait: <--wait>s``, then an ``in_app`` action. Its
   due moment is computable: lateness = the action transition's ``ts_ms`` − the
   entered transition's ``ts_ms`` − the wait.
2. **Setup** (offline, before the clock starts): one ``identify`` per customer, then
   one ``Timer Armed`` per customer, processed by a ``Processor`` whose clock is
   *simulated*: it advances ``1000 / --rate`` ms per event (batches of 50), so the
   entries are stamped over a window of ``customers / rate`` seconds that begins
   ``--lead`` seconds after setup began, minus the wait — the waits then end at
   about ``--rate`` timers/s (``--customers`` 100,000 at 1,667/s: a 60 s window).
   The engine keeps one ``timers`` row per customer.
3. **Live phase**: ``polku process --data-dir …`` (a subprocess, the real loop:
   ``worker.run_processor`` with the wall clock) while this process appends ordinary
   events (the ``bench_processor`` mix of tracks and pages, customers drawn
   uniformly) through ``SqliteEventLog`` at ``--events-rate`` per second. It stops
   (SIGTERM) once every wait has been acted on, or ``--grace`` seconds after the last
   due moment.
4. Lateness per fired timer from ``state.db``'s ``journey_transitions``: p50 / p99 /
   max, and how many. (``ts_ms`` is the processor's clock at the start of the batch
   that fired the timer; the commit follows within the batch's ~50 ms.) Also the
   lag of the ordinary events at the end (log head − checkpoint).

Run (from the repository root, after ``scripts/install``)::

    .venv/bin/python benchmarks/bench_timer_lateness.py                                   # 100,000 timers, ~60 s
    .venv/bin/python benchmarks/bench_timer_lateness.py --customers 5000 --rate 500 --json  # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_journeys import CONFIG, JourneyMaker, seed_events
from bench_processor import append, progress, run_to
from harness import ADMIN_TOKEN, WRITE_KEY, machine, polku_command
from polku.adapters.sqlite import SqliteCatalog, SqliteEventLog
from polku.adapters.sqlite.log_reader import SqliteLogReader
from polku.adapters.sqlite.state_store import STATE_FILE, SqliteStateStore
from polku.core.events import Event
from polku.core.workspace import parse_config
from polku.engine.processor import Processor
from polku.engine.setup import bootstrap
from polku.engine.worker import wall_clock_ms
from polku.ports import AppendBatch

WORKSPACE = "default"
JOURNEY = "timed"


def journey_body(wait_s: int) -> str:
    return (
        f"id: {JOURNEY}\nentry:\n  event: Timer Armed\n"
        "steps:\n"
        f"  - id: pause\n    wait: {wait_s}s\n"
        "  - id: ping\n    action: {channel: in_app, body: 'Time is up, {{ traits.first_name }}'}\n"
    )


async def configure(data_dir: Path, wait_s: int) -> None:
    catalog = SqliteCatalog(data_dir)
    await catalog.start()
    try:
        await bootstrap(catalog, write_key=WRITE_KEY, admin_token=ADMIN_TOKEN)
        await catalog.set_config(WORKSPACE, parse_config(CONFIG))
        deployed_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        await catalog.deploy_journey(WORKSPACE, JOURNEY, journey_body(wait_s), deployed_at)
    finally:
        await catalog.close()


def arm_events(maker: JourneyMaker, customers: int, now: int) -> Iterator[Event]:
    order = list(range(customers))
    maker.random.shuffle(order)
    for customer in order:
        yield maker.named(customer, now, "Timer Armed", {})


class SimulatedClock:
    """Advances ``per_event_ms`` times the batch size at every call (one per step)."""

    def __init__(self, start_ms: int, per_batch_ms: float) -> None:
        self.start_ms = start_ms
        self.per_batch_ms = per_batch_ms
        self.calls = 0

    def __call__(self) -> int:
        value = self.start_ms + round(self.calls * self.per_batch_ms)
        self.calls += 1
        return value


async def feed(data_dir: Path, maker: JourneyMaker, customers: int, rate: float, done: asyncio.Event) -> int:
    """Append ordinary events at ``rate`` per second (in ticks of 100 ms) until ``done``."""
    event_log = SqliteEventLog(data_dir, writer="process", synchronous="NORMAL")
    await event_log.start()
    sent = 0
    started = time.monotonic()
    r = maker.random
    try:
        while not done.is_set():
            due = int((time.monotonic() - started) * rate) - sent
            if due > 0:
                now = wall_clock_ms()
                events = [
                    maker.track(c, now) if r.random() < 0.8 else maker.page(f"a{c}", now)
                    for c in (r.randrange(customers) for _ in range(due))
                ]
                await event_log.append(
                    AppendBatch(workspace=WORKSPACE, source="default", received_ms=now, events=events)
                )
                sent += due
            await asyncio.sleep(0.1)
    finally:
        await event_log.close()
    return sent


def fired(data_dir: Path) -> int:
    connection = sqlite3.connect(f"file:{data_dir / STATE_FILE}?mode=ro", uri=True, timeout=5)
    try:
        (count,) = connection.execute(
            "SELECT count(*) FROM journey_transitions WHERE journey = ? AND kind = 'action'", (JOURNEY,)
        ).fetchone()
        return int(count)
    finally:
        connection.close()


def lateness(data_dir: Path, wait_ms: int) -> list[int]:
    connection = sqlite3.connect(f"file:{data_dir / STATE_FILE}?mode=ro", uri=True, timeout=5)
    try:
        rows = connection.execute(
            "SELECT a.ts_ms - e.ts_ms - ? FROM journey_transitions e JOIN journey_transitions a "
            "ON a.instance = e.instance AND a.kind = 'action' "
            "WHERE e.journey = ? AND e.kind = 'entered'",
            (wait_ms, JOURNEY),
        ).fetchall()
        return sorted(int(row[0]) for row in rows)
    finally:
        connection.close()


def lag(data_dir: Path) -> int:
    """Events in the log the processor has not committed yet."""
    store = sqlite3.connect(f"file:{data_dir / STATE_FILE}?mode=ro", uri=True, timeout=5)
    log_db = sqlite3.connect(f"file:{data_dir / 'polku.db'}?mode=ro", uri=True, timeout=5)
    try:
        (checkpoint,) = store.execute("SELECT seq FROM checkpoint WHERE id = 1").fetchone()
        (head,) = log_db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
        return int(head) - int(checkpoint)
    finally:
        store.close()
        log_db.close()


def percentile(values: list[int], share: float) -> int:
    return values[min(len(values) - 1, int(share * len(values)))]


def start_processor(data_dir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log_path = data_dir.parent / "process.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*polku_command(), "process", "--data-dir", str(data_dir)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return process, log_path


async def live(args: argparse.Namespace, data_dir: Path, maker: JourneyMaker, first_due: int, last_due: int) -> dict:
    process, log_path = start_processor(data_dir)
    done = asyncio.Event()
    feeder = asyncio.create_task(feed(data_dir, maker, args.customers, args.events_rate, done))
    started = time.monotonic()
    try:
        last_report = 0.0
        while True:
            await asyncio.sleep(1)
            if process.poll() is not None:
                sys.exit(f"error: polku process exited with {process.returncode}:\n{log_path.read_text()[-2000:]}")
            count = fired(data_dir)
            now = wall_clock_ms()
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                progress(
                    f"  live: {count:,}/{args.customers:,} fired; {(now - first_due) / 1000:+.0f} s after the first due"
                )
            if count >= args.customers or now > last_due + args.grace * 1000:
                break
    finally:
        done.set()
        sent = await feeder
        backlog = lag(data_dir)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    seconds = time.monotonic() - started
    return {"events_appended": sent, "events_per_s_appended": round(sent / seconds), "event_backlog_at_end": backlog}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000, help="customers, each with one wait")
    parser.add_argument("--rate", type=float, default=1_667, help="waits ending per second (the window's density)")
    parser.add_argument("--wait", type=int, default=60, help="the journey's wait, seconds")
    parser.add_argument("--lead", type=float, help="seconds from setup start to the first due (default: estimated)")
    parser.add_argument("--events-rate", type=float, default=1_000, help="ordinary events appended per second")
    parser.add_argument("--grace", type=float, default=60, help="stop this long after the last due moment at most")
    parser.add_argument("--data-dir", type=Path, help="build the data directory here (must not exist)")
    parser.add_argument("--keep", action="store_true", help="keep --data-dir afterwards")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="polku-bench-lateness-"))
    data_dir = args.data_dir or scratch / "data"
    if data_dir.exists():
        parser.error(f"{data_dir} exists; give a new directory")
    maker = JourneyMaker(args.seed)
    wait_ms = args.wait * 1000
    window_ms = args.customers / args.rate * 1000
    lead_s = args.lead if args.lead is not None else 30 + args.customers / 2_500
    result: dict[str, Any] = {
        "benchmark": "timer_lateness",
        "customers": args.customers,
        "wait_s": args.wait,
        "timers_per_s": args.rate,
        "window_s": round(window_ms / 1000, 1),
        "events_rate": args.events_rate,
    }
    try:
        setup_started = wall_clock_ms()
        first_due = setup_started + round(lead_s * 1000)
        asyncio.run(configure(data_dir, args.wait))
        now = wall_clock_ms()
        asyncio.run(append(data_dir, seed_events(maker, args.customers, now), args.customers, "seed"))
        store = SqliteStateStore(data_dir, synchronous="NORMAL")
        reader = SqliteLogReader(data_dir)
        processor = Processor(store, reader, clock=wall_clock_ms)
        run_to(processor, args.customers)
        # Appended only now, so that no batch of the seeding reads into them.
        asyncio.run(append(data_dir, arm_events(maker, args.customers, now), args.customers, "arm"))
        # The entries, on a simulated clock: batches of 50 events, 50 / rate s apart.
        batch = 50
        processor.batch_size = batch
        processor.clock = SimulatedClock(first_due - wait_ms, batch * 1000 / args.rate)
        run_to(processor, 2 * args.customers)
        (timer_rows,) = store.connection.execute("SELECT count(*) FROM timers").fetchone()
        (low, high) = store.connection.execute(
            "SELECT min(due_ms), max(due_ms) FROM timers WHERE due_ms > 0"
        ).fetchone()
        reader.close()
        store.close()
        setup_s = (wall_clock_ms() - setup_started) / 1000
        result["setup_seconds"] = round(setup_s, 1)
        result["timer_rows"] = timer_rows
        ahead = (low - wall_clock_ms()) / 1000
        progress(
            f"setup: {setup_s:.1f} s; {timer_rows:,} timer rows due over {(high - low) / 1000:.1f} s, "
            f"the first in {ahead:.1f} s"
        )
        if ahead < 2:
            sys.exit(f"error: setup ran past the first due moment ({ahead:.1f} s ahead); give a larger --lead")
        result.update(asyncio.run(live(args, data_dir, maker, low, high)))
        values = lateness(data_dir, wait_ms)
        if not values:
            sys.exit("error: no timer fired")
        result["timers_fired"] = len(values)
        result["lateness_ms_p50"] = percentile(values, 0.50)
        result["lateness_ms_p90"] = percentile(values, 0.90)
        result["lateness_ms_p99"] = percentile(values, 0.99)
        result["lateness_ms_max"] = values[-1]
        result["lateness_ms_min"] = values[0]
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
    print(
        f"timer lateness: {result['timers_fired']:,} of {args.customers:,} waits fired ({result['timer_rows']:,} timer "
        f"rows) at ~{args.rate:,.0f}/s over {result['window_s']} s, with {result['events_per_s_appended']:,} "
        f"ordinary events/s (backlog at the end: {result['event_backlog_at_end']:,})"
    )
    print(
        f"RESULT timer lateness: p50 {result['lateness_ms_p50']:,} ms, p99 {result['lateness_ms_p99']:,} ms, "
        f"max {result['lateness_ms_max']:,} ms (target p99 <= 1,000 ms) | {result['machine']}"
    )


if __name__ == "__main__":
    main()
