"""Processor throughput with journeys: identity → profile → 50 live journeys.

Target (journeys issue): with 100,000 customers, 50 live journeys and 1,000,000
pending timers (waiting instances), at least 10,000 events/s per core through
identity, profile and the journey stage.

What it does, in one process (the processor is single-threaded, as in production):

1. A fresh data directory with the default workspace and ``CONFIG`` below (an e-mail
   channel, a marketing cap, 4 computed attributes, 3 segments) and 50 journeys
   deployed into ``polku.db`` (``SqliteCatalog.deploy_journey``):

   - 10 **long-waiting** journeys (``Enrolled P0`` … ``Enrolled P9``) that every
     customer enters during setup: waits and wait_fors of 10–40 days, in-app and
     e-mail actions with templates, a split, a branch on the plan, goals
     (``Subscription Upgraded``, ``Order Completed`` without exit), an exit on
     ``Unsubscribed``, a 10 % holdout on some;
   - 38 journeys entered by events of the measured phase (19 entry events, two
     journeys each, a third with a ``when`` on the event, the plan or the channel;
     some ``reentry: always`` / ``after 1d``), in five shapes: wait_for with
     agent note / e-mail, in-app then wait then branch on traits and attributes,
     a split A/B of marketing e-mails then a wait_for, a branch on the trigger
     then a wait then an e-mail with an exit, a wait until 09:00 on weekdays in the
     customer's time zone;
   - 2 journeys entered by segments.

2. **Setup** (not timed as the figure): one ``identify`` per customer (userId,
   anonymousId, email, first_name, plan, timezone, marketing consent for 60 %) and one ``Enrolled P<k>`` event
   per customer per long-waiting journey, appended through ``SqliteEventLog`` and
   processed (``Processor.run_until_idle``). The engine keeps **one timer row per
   customer** (the earliest of its waits, docs/architecture.md "Journeys"), so
   1,000,000 waiting instances over 100,000 customers are 100,000 rows of
   ``timers``: both numbers are printed (live instances from ``journey_stats``:
   entered − ended).

3. **Measured phase**: ``--events`` events for customers drawn uniformly: 5 % entry
   events of the 38 event journeys, 2 % wait_for events (``Feature Used``, ``Email
   Clicked``, ``Call Started``, ``Message Opened``), 1 % goal/exit events
   (``Subscription Upgraded``, ``Unsubscribed``), the rest the ordinary mix of
   ``bench_processor`` (tracks with properties 78 % — of which ``Order Completed``,
   a goal, is a fifth — and pages 14 %). Processed in ``--chunks`` timed chunks of
   ``step()`` by a fresh ``Processor`` (cold caches, as after a restart). Then the
   state as it was before the measured phase is put back and the **same events**
   are processed with the journeys absent (a log reader that reports none), so the
   ratio of the two medians is the journey stage's cost, measured in the same run.

It prints the median events/s of both runs and their ratio, RSS, the size of
``state.db``, and with ``--profile`` a cProfile of one more chunk (journeys on; top
functions by own time and the journey stage's cumulative share).

Run (from the repository root, after ``scripts/install``)::

    .venv/bin/python benchmarks/bench_journeys.py                                     # 100,000 customers
    .venv/bin/python benchmarks/bench_journeys.py --customers 5000 --events 10000     # smoke (< 60 s)
    .venv/bin/python benchmarks/bench_journeys.py --profile --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import pstats
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_processor import (
    PLANS,
    Maker,
    append,
    clear_outbox,
    hotspots,
    progress,
    rss_mb,
    run_to,
    state_size_mb,
)
from harness import ADMIN_TOKEN, WRITE_KEY, machine, median, wait_for_quiet
from polku.adapters.sqlite import SqliteCatalog
from polku.adapters.sqlite.log_reader import SqliteLogReader
from polku.adapters.sqlite.state_store import STATE_FILE, SqliteStateStore
from polku.cli.main import tune_gc
from polku.core.events import Event
from polku.core.workspace import parse_config
from polku.engine.processor import Processor
from polku.engine.setup import bootstrap
from polku.engine.worker import wall_clock_ms

WORKSPACE = "default"
LONG_JOURNEYS = 10

CONFIG = """
channels:
  email: {type: smtp, sender: bench@example.com}
policy:
  caps:
    - {name: marketing-weekly, max: 3, per: 7d, purposes: [marketing]}
attributes:
  orders_30d:   {kind: count, event: Order Completed, window: 30d}
  revenue:      {kind: sum, event: Order Completed, property: revenue}
  views_7d:     {kind: count, event: Product Viewed, window: 7d}
  last_viewed:  {kind: last, event: Product Viewed, property: category}
segments:
  buyers:       {condition: "attributes.orders_30d >= 1"}
  big_spenders: {condition: "attributes.revenue >= 500"}
  pro:          {condition: "traits.plan == 'pro'"}
"""

FIRST_NAMES = ["Aino", "Eero", "Liisa", "Mikko", "Sara", "Juha", "Emma", "Ville"]
TIMEZONES = ["Europe/Helsinki", "Europe/Stockholm", "Europe/Berlin", "America/New_York", "UTC"]
ENTRY_EVENTS = [
    "Cart Abandoned",
    "Trial Started",
    "Password Reset Failed",
    "Webinar Registered",
    "App Installed",
    "Subscription Cancelled",
    "Ticket Closed",
    "Invoice Overdue",
    "Plan Viewed",
    "Referral Sent",
    "Survey Completed",
    "Wishlist Added",
    "Coupon Viewed",
    "Account Locked",
    "Delivery Delayed",
    "Review Written",
    "Newsletter Subscribed",
    "Profile Completed",
    "Checkout Started",
]
WAIT_EVENTS = ["Feature Used", "Email Clicked", "Call Started", "Message Opened"]
GOAL_EVENTS = ["Subscription Upgraded", "Subscription Upgraded", "Unsubscribed"]
ENTRY_WHEN = ['traits.plan != "free"', "event.properties.value >= 50", 'event.channel == "app"']

# -- journeys --------------------------------------------------------------------------------


def long_journey(k: int) -> str:
    """Every customer enters these during setup; they stay live for weeks."""
    head = f"id: program-{k}\nname: Program {k}\nentry:\n  event: Enrolled P{k}\n"
    if k % 3 == 0:
        return head + (
            "steps:\n"
            "  - id: welcome\n"
            "    action: {channel: in_app, body: 'Welcome to program {{ trigger.properties.program }}, "
            "{{ traits.first_name }}!', expires: 14d}\n"
            f"  - id: wait_use\n    wait_for: {{event: Feature Used, within: {10 + k}d, on_event: thanks, "
            "on_timeout: nudge}\n"
            "  - id: thanks\n    action: {channel: agent_note, body: 'Used a feature after program enrolment'}\n"
            "  - id: cool_off\n    wait: 30d\n    next: end\n"
            "  - id: nudge\n    action:\n      channel: email\n      purpose: marketing\n"
            "      subject: '{{ traits.first_name }}, you have not tried it yet'\n"
            "      body: 'Hi {{ traits.first_name }}, your {{ traits.plan }} plan includes it.'\n"
            "goal: {event: Subscription Upgraded, within: 60d}\n"
            "exit:\n  - event: Unsubscribed\n"
        )
    if k % 3 == 1:
        return head + (
            "steps:\n"
            f"  - id: pause\n    wait: {14 + k}d\n"
            "  - id: by_plan\n    branch:\n"
            "      - {when: 'traits.plan == \"pro\"', next: pro_mail}\n"
            "      - {when: 'attributes.orders_30d >= 1', next: end}\n"
            "      - {next: generic_mail}\n"
            "  - id: pro_mail\n    action: {channel: email, subject: 'Pro tips, {{ traits.first_name }}', "
            "body: 'Your plan: {{ traits.plan }}'}\n    next: end\n"
            "  - id: generic_mail\n    action: {channel: email, purpose: marketing, subject: 'Ideas for you', "
            "body: 'Hello {{ traits.first_name or \"there\" }}'}\n"
            "goal: {event: Order Completed, within: 30d, exit: false}\n"
        )
    return head + (
        "steps:\n"
        "  - id: arm\n    split:\n"
        "      - {name: short, share: 1, next: wait_click}\n"
        "      - {name: long, share: 1, next: long_wait}\n"
        f"  - id: wait_click\n    wait_for: {{event: Email Clicked, within: {21 + k}d, on_timeout: end}}\n"
        "  - id: clicked\n    action: {channel: in_app, body: 'Thanks for reading, {{ traits.first_name }}'}\n"
        "    next: end\n"
        f"  - id: long_wait\n    wait: {30 + k}d\n"
        "  - id: mail\n    action: {channel: email, subject: 'Still with us?', body: 'Variant "
        "{{ journey.variant.arm }}'}\n"
        "goal: {event: Subscription Upgraded, within: 60d}\n"
        "holdout: 0.1\n"
        "exit:\n  - event: Unsubscribed\n"
    )


def event_journey(number: int, event: str, when: str | None) -> str:
    """Entered by events of the measured phase; five shapes."""
    entry = f"entry:\n  event: {event}\n"
    if when:
        entry += f"  when: '{when}'\n"
    if number % 4 == 1:
        entry += "  reentry: always\n"
    elif number % 4 == 2:
        entry += "  reentry: after 1d\n"
    head = f"id: journey-{number}\nname: Journey {number} on {event}\n" + entry
    wait_event = WAIT_EVENTS[number % len(WAIT_EVENTS)]
    shape = number % 5
    if shape == 0:
        return head + (
            "steps:\n"
            f"  - id: wait_signal\n    wait_for: {{event: {wait_event}, within: 3d, on_event: note, "
            "on_timeout: email_help}\n"
            "  - id: note\n    action: {channel: agent_note, body: '{{ trigger.name }} then "
            f"{wait_event} (value {{{{ trigger.properties.value }}}})'}}\n    next: end\n"
            "  - id: email_help\n    action: {channel: email, subject: 'Need help, {{ traits.first_name }}?', "
            "body: 'We noticed {{ trigger.name }}.'}\n"
            "goal: {event: Order Completed, within: 7d}\n" + ("holdout: 0.1\n" if number % 2 else "")
        )
    if shape == 1:
        return head + (
            "steps:\n"
            "  - id: hello\n    action: {channel: in_app, body: 'About {{ trigger.name }}, {{ traits.first_name }}'}\n"
            "  - id: pause\n    wait: 2d\n"
            "  - id: route\n    branch:\n"
            "      - {when: 'traits.plan == \"enterprise\"', next: note}\n"
            "      - {when: 'attributes.orders_30d >= 2', next: end}\n"
            "      - {next: mail}\n"
            "  - id: note\n    action: {channel: agent_note, body: 'Enterprise customer: {{ trigger.name }}'}\n"
            "    next: end\n"
            "  - id: mail\n    action: {channel: email, purpose: marketing, subject: 'A follow-up', "
            "body: 'Hi {{ traits.first_name }}, {{ attributes.views_7d or 0 }} views this week.'}\n"
            "exit:\n  - event: Unsubscribed\n"
        )
    if shape == 2:
        return head + (
            "steps:\n"
            "  - id: ab\n    split:\n"
            "      - {name: a, share: 2, next: mail_a}\n"
            "      - {name: b, share: 1, next: mail_b}\n"
            "  - id: mail_a\n    action: {channel: email, purpose: marketing, subject: 'Offer A', "
            "body: 'Hi {{ traits.first_name }}'}\n    next: wait_click\n"
            "  - id: mail_b\n    action: {channel: email, purpose: marketing, subject: 'Offer B for "
            "{{ traits.first_name }}', body: 'Plan {{ traits.plan }}'}\n"
            "  - id: wait_click\n    wait_for: {event: Email Clicked, within: 5d, on_event: end, on_timeout: end}\n"
            "goal: {event: Subscription Upgraded, within: 14d}\n"
        )
    if shape == 3:
        return head + (
            "steps:\n"
            "  - id: triage\n    branch:\n"
            "      - {when: 'event.properties.value >= 80', next: urgent}\n"
            "      - {next: pause}\n"
            "  - id: urgent\n    action: {channel: agent_note, body: 'High value {{ trigger.properties.value }}'}\n"
            "  - id: pause\n    wait: 1d\n"
            "  - id: mail\n    action: {channel: email, subject: 'About your {{ trigger.name | lower }}', "
            "body: 'Dear {{ traits.first_name }}'}\n"
            "exit:\n  - event: Unsubscribed\n  - {event: Order Completed, name: bought}\n"
        )
    return head + (
        "steps:\n"
        "  - id: morning\n    wait: {until: '09:00', days: [mon, tue, wed, thu, fri]}\n"
        "  - id: mail\n    action: {channel: email, purpose: marketing, subject: 'Good morning "
        "{{ traits.first_name }}', body: 'Something new since {{ trigger.name }}'}\n"
        + ("holdout: 0.2\n" if number % 2 else "")
    )


def segment_journey(number: int, segment: str) -> str:
    return (
        f"id: journey-{number}\nname: Segment {segment}\nentry:\n  segment: {segment}\n"
        "steps:\n"
        "  - id: congrats\n    action: {channel: in_app, body: 'You are one of our {{ segments | length }}-segment "
        "customers, {{ traits.first_name }}'}\n"
        "  - id: pause\n    wait: 7d\n"
        "  - id: mail\n    action: {channel: email, purpose: marketing, subject: 'Thanks', body: 'Thanks!'}\n"
        "goal: {event: Order Completed, within: 30d, exit: false}\n"
    )


def journeys() -> list[tuple[str, str]]:
    found = [(f"program-{k}", long_journey(k)) for k in range(LONG_JOURNEYS)]
    number = LONG_JOURNEYS
    for index in range(2 * len(ENTRY_EVENTS)):
        event = ENTRY_EVENTS[index % len(ENTRY_EVENTS)]
        when = ENTRY_WHEN[index % 3] if index % 3 == 0 or (index >= len(ENTRY_EVENTS) and index % 2) else None
        found.append((f"journey-{number}", event_journey(number, event, when)))
        number += 1
    found.append((f"journey-{number}", segment_journey(number, "buyers")))
    found.append((f"journey-{number + 1}", segment_journey(number + 1, "big_spenders")))
    return found


# -- events ------------------------------------------------------------------------------------


class JourneyMaker(Maker):
    def seed_identify(self, customer: int, ts: int) -> Event:
        r = self.random
        return self.make(
            "identify",
            ts,
            user_id=f"u{customer}",
            anonymous_id=f"a{customer}",
            traits={
                "email": f"person{customer}@example.com",
                "first_name": r.choice(FIRST_NAMES),
                "plan": r.choice(PLANS),
                "timezone": r.choice(TIMEZONES),
                "consent": {"marketing": r.random() < 0.6},
            },
        )

    def named(self, customer: int, ts: int, name: str, properties: dict[str, Any]) -> Event:
        channel = "app" if self.random.random() < 0.3 else "web"
        return self.make("track", ts, channel, user_id=f"u{customer}", event=name, properties=properties)


def seed_events(maker: JourneyMaker, customers: int, now: int) -> Iterator[Event]:
    for customer in range(customers):
        yield maker.seed_identify(customer, now - maker.random.randrange(90 * 86_400_000))


def enrol_events(maker: JourneyMaker, customers: int, now: int) -> Iterator[Event]:
    """One ``Enrolled P<k>`` per customer per long-waiting journey (customer-major)."""
    for customer in range(customers):
        for k in range(LONG_JOURNEYS):
            yield maker.named(customer, now - maker.random.randrange(60_000), f"Enrolled P{k}", {"program": k})


def measured_events(
    maker: JourneyMaker, customers: int, count: int, now: int, counts: dict[str, int]
) -> Iterator[Event]:
    r = maker.random
    for _ in range(count):
        ts = now - r.randrange(60_000)
        customer = r.randrange(customers)
        roll = r.random()
        if roll < 0.05:
            counts["entry"] += 1
            yield maker.named(customer, ts, r.choice(ENTRY_EVENTS), {"value": r.randrange(100)})
        elif roll < 0.07:
            counts["wait_for"] += 1
            yield maker.named(customer, ts, r.choice(WAIT_EVENTS), {"source": "bench"})
        elif roll < 0.08:
            counts["goal_exit"] += 1
            yield maker.named(customer, ts, r.choice(GOAL_EVENTS), {})
        elif roll < 0.86:
            event = maker.track(customer, ts)
            counts["order_completed" if event.event == "Order Completed" else "track"] += 1
            yield event
        else:
            counts["page"] += 1
            yield maker.page(f"a{customer}", ts)


# -- setup --------------------------------------------------------------------------------------


async def configure(data_dir: Path, with_any_event_exit: bool) -> int:
    catalog = SqliteCatalog(data_dir)
    await catalog.start()
    try:
        await bootstrap(catalog, write_key=WRITE_KEY, admin_token=ADMIN_TOKEN)
        await catalog.set_config(WORKSPACE, parse_config(CONFIG))
        deployed_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        bodies = journeys()
        for journey_id, body in bodies:
            if with_any_event_exit and journey_id == "program-0":
                body += "  - {when: 'traits.plan == \"churned\"', name: churned}\n"
            await catalog.deploy_journey(WORKSPACE, journey_id, body, deployed_at)
        return len(bodies)
    finally:
        await catalog.close()


def quiet() -> None:
    """``wait_for_quiet`` prints its note to stdout; keep stdout for the JSON."""
    with contextlib.redirect_stdout(sys.stderr):
        wait_for_quiet(max_wait=20)


class NoJourneysReader(SqliteLogReader):
    """The same log with no journeys deployed (the baseline run)."""

    def journeys(self) -> list[tuple[str, str, int, str, str]]:
        return []


def live_instances(store: SqliteStateStore) -> tuple[int, int]:
    """(live instances, of which in the long-waiting journeys) from journey_stats."""
    rows = store.connection.execute("SELECT journey, metric, sum(count) FROM journey_stats GROUP BY journey, metric")
    live = long_live = 0
    for journey, metric, count in rows:
        sign = 1 if metric in ("entered", "entered:holdout") else -1 if metric.startswith("ended:") else 0
        live += sign * count
        if journey.startswith("program-"):
            long_live += sign * count
    return live, long_live


def table_count(store: SqliteStateStore, table: str) -> int:
    (count,) = store.connection.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(count)


def snapshot(data_dir: Path, target: Path) -> None:
    connection = sqlite3.connect(data_dir / STATE_FILE)
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    shutil.copyfile(data_dir / STATE_FILE, target)


def restore(data_dir: Path, source: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(str(data_dir / STATE_FILE) + suffix).unlink(missing_ok=True)
    shutil.copyfile(source, data_dir / STATE_FILE)


def measure(processor: Processor, start: int, events: int, chunks: int, label: str) -> list[float]:
    size = events // chunks
    rates: list[float] = []
    for number in range(chunks):
        target = start + (number + 1) * size if number < chunks - 1 else start + events
        started = time.perf_counter()
        cpu0 = time.process_time()
        done, timers = run_to(processor, target)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        rates.append(done / seconds)
        progress(
            f"  {label} chunk {number + 1}: {done:,} events in {seconds:.2f} s = {done / seconds:,.0f} events/s "
            f"(CPU {cpu / seconds:.0%} of one core, {timers} timers)"
        )
    return rates


def journey_stage_share(profile: cProfile.Profile) -> float:
    stats = pstats.Stats(profile)
    total = sum(entry[2] for entry in stats.stats.values())  # type: ignore[attr-defined]
    stage = 0.0
    for (filename, _, name), (_, _, _, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if filename.endswith("journey_runner.py") and name in ("after_event", "settle_timers", "fire", "drain"):
            stage += cumulative
    return stage / total if total else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=100_000, help="customers seeded (one identify each)")
    parser.add_argument("--events", type=int, default=200_000, help="events in the measured phase")
    parser.add_argument("--chunks", type=int, default=4, help="timed chunks of the measured phase (median)")
    parser.add_argument("--batch-size", type=int, default=1000, help="Processor batch_size (production: 1000)")
    parser.add_argument("--cache-size", type=int, default=100_000, help="Processor cache_size (production: 100000)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run with the journeys absent")
    parser.add_argument(
        "--no-journeys", action="store_true", help="only the baseline: the measured phase with no journeys deployed"
    )
    parser.add_argument(
        "--any-event-exit",
        action="store_true",
        help="give one long-waiting journey an exit with a condition and no event (checked on every event)",
    )
    parser.add_argument("--data-dir", type=Path, help="build the data directory here (must not exist)")
    parser.add_argument("--keep", action="store_true", help="keep --data-dir afterwards")
    parser.add_argument("--profile", action="store_true", help="cProfile one more chunk of --events/--chunks events")
    parser.add_argument("--profile-out", type=Path, help="with --profile: also write the pstats file here")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.chunks < 1 or args.events < args.chunks * args.batch_size:
        parser.error("--events must be at least --chunks x --batch-size")

    scratch = Path(tempfile.mkdtemp(prefix="polku-bench-journeys-"))
    data_dir = args.data_dir or scratch / "data"
    if data_dir.exists():
        parser.error(f"{data_dir} exists; give a new directory")
    maker = JourneyMaker(args.seed)
    result: dict[str, Any] = {
        "benchmark": "journeys",
        "customers": args.customers,
        "events": args.events,
        "batch_size": args.batch_size,
        "cache_size": args.cache_size,
        "any_event_exit": args.any_event_exit,
    }
    try:
        started = time.perf_counter()
        result["journeys"] = asyncio.run(configure(data_dir, args.any_event_exit)) if not args.no_journeys else 0
        if args.no_journeys:
            asyncio.run(configure_plain(data_dir))
        now = wall_clock_ms()
        asyncio.run(append(data_dir, seed_events(maker, args.customers, now), args.customers, "seed"))
        enrolments = args.customers * LONG_JOURNEYS
        if not args.no_journeys:
            asyncio.run(append(data_dir, enrol_events(maker, args.customers, now), enrolments, "enrol"))
        setup_end = args.customers + (0 if args.no_journeys else enrolments)
        progress(f"appended {setup_end:,} setup events in {time.perf_counter() - started:.1f} s")

        gc.collect()
        tune_gc()
        store = SqliteStateStore(data_dir, synchronous="NORMAL")
        reader = SqliteLogReader(data_dir)
        processor = Processor(
            store, reader, clock=wall_clock_ms, batch_size=args.batch_size, cache_size=args.cache_size
        )
        started = time.perf_counter()
        last = started
        while processor.checkpoint < setup_end:
            run_to(processor, min(setup_end, processor.checkpoint + 50 * args.batch_size))
            if time.perf_counter() - last > 15:
                last = time.perf_counter()
                rate = processor.checkpoint / (last - started)
                progress(f"  setup: {processor.checkpoint:,}/{setup_end:,} ({rate:,.0f} events/s so far)")
        seconds = time.perf_counter() - started
        result["setup_seconds"] = round(seconds, 1)
        result["setup_events_per_s"] = round(setup_end / seconds)
        clear_outbox(store)
        live, long_live = live_instances(store)
        result["live_instances_before"] = live
        result["live_instances_long_journeys"] = long_live
        result["timer_rows_before"] = table_count(store, "timers")
        result["journey_states"] = table_count(store, "journey_states")
        result["messages_setup"] = table_count(store, "messages")
        progress(
            f"setup: {setup_end:,} events in {seconds:.1f} s; {live:,} live instances, "
            f"{result['timer_rows_before']:,} timer rows"
        )
        reader.close()
        store.close()
        del processor, store, reader
        gc.collect()

        # The measured events go to the log only now, so that no setup batch reads into them.
        counts = dict.fromkeys(("entry", "wait_for", "goal_exit", "order_completed", "track", "page"), 0)
        profile_events = args.events // args.chunks if args.profile and not args.no_journeys else 0
        total = args.events + profile_events
        asyncio.run(append(data_dir, measured_events(maker, args.customers, total, now, counts), total, "measured"))
        result["mix"] = {name: round(count / total, 4) for name, count in counts.items()}

        state_copy = scratch / "state-before-measured.db"
        if not args.no_baseline and not args.no_journeys:
            snapshot(data_dir, state_copy)

        # The measured phase, journeys on (or, with --no-journeys, none deployed).
        quiet()
        store = SqliteStateStore(data_dir, synchronous="NORMAL")
        reader = SqliteLogReader(data_dir)
        processor = Processor(
            store, reader, clock=wall_clock_ms, batch_size=args.batch_size, cache_size=args.cache_size
        )
        rates = measure(processor, setup_end, args.events, args.chunks, "journeys" if not args.no_journeys else "plain")
        result["chunk_events_per_s"] = [round(rate) for rate in rates]
        result["events_per_s_median"] = round(median(rates))
        result["emitted"] = clear_outbox(store)
        live, long_live = live_instances(store)
        result["live_instances_after"] = live
        result["timer_rows_after"] = table_count(store, "timers")
        result["messages_after"] = table_count(store, "messages")
        result["transitions_after"] = table_count(store, "journey_transitions")
        if args.profile and not args.no_journeys:
            profiler = cProfile.Profile()
            started = time.perf_counter()
            profiler.enable()
            done, _ = run_to(processor, setup_end + total)
            profiler.disable()
            seconds = time.perf_counter() - started
            if args.profile_out:
                profiler.dump_stats(args.profile_out)
            result["profile"] = {
                "events": done,
                "events_per_s_under_cprofile": round(done / seconds),
                "journey_stage_cumulative_share": round(journey_stage_share(profiler), 3),
                "top_own_time": hotspots(profiler, top=15),
            }
        peak, current = rss_mb()
        result["rss_peak_mb"] = round(peak, 1)
        result["rss_current_mb"] = round(current, 1)
        main_mb, wal_mb = state_size_mb(data_dir)
        result["state_db_mb"] = round(main_mb, 1)
        result["state_wal_mb"] = round(wal_mb, 1)
        reader.close()
        store.close()
        del processor, store, reader
        gc.collect()

        # The same events with the journeys absent, from the same state.
        if not args.no_baseline and not args.no_journeys:
            restore(data_dir, state_copy)
            quiet()
            store = SqliteStateStore(data_dir, synchronous="NORMAL")
            reader = NoJourneysReader(data_dir)
            processor = Processor(
                store, reader, clock=wall_clock_ms, batch_size=args.batch_size, cache_size=args.cache_size
            )
            base = measure(processor, setup_end, args.events, args.chunks, "no journeys")
            result["baseline_chunk_events_per_s"] = [round(rate) for rate in base]
            result["baseline_events_per_s_median"] = round(median(base))
            result["journeys_over_baseline"] = round(result["events_per_s_median"] / median(base), 3)
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


async def configure_plain(data_dir: Path) -> None:
    catalog = SqliteCatalog(data_dir)
    await catalog.start()
    try:
        await bootstrap(catalog, write_key=WRITE_KEY, admin_token=ADMIN_TOKEN)
        await catalog.set_config(WORKSPACE, parse_config(CONFIG))
    finally:
        await catalog.close()


def print_table(result: dict[str, Any]) -> None:
    rows = [
        ("journeys deployed", f"{result['journeys']}"),
        (
            "setup (seed + enrolments)",
            f"{result['setup_events_per_s']:,} events/s ({result['setup_seconds']} s)",
        ),
        (
            "live instances / timer rows",
            f"{result['live_instances_before']:,} / {result['timer_rows_before']:,} before; "
            f"{result['live_instances_after']:,} / {result['timer_rows_after']:,} after",
        ),
        (
            "measured: journeys on",
            f"median {result['events_per_s_median']:,} events/s (chunks: "
            f"{', '.join(f'{rate:,}' for rate in result['chunk_events_per_s'])}; target >= 10,000)",
        ),
    ]
    if "baseline_events_per_s_median" in result:
        rows.append(
            (
                "measured: journeys absent",
                f"median {result['baseline_events_per_s_median']:,} events/s (chunks: "
                f"{', '.join(f'{rate:,}' for rate in result['baseline_chunk_events_per_s'])}); "
                f"ratio {result['journeys_over_baseline']:.2f}",
            )
        )
    rows += [
        ("mix", ", ".join(f"{name} {share:.1%}" for name, share in result["mix"].items())),
        ("messages / transitions", f"{result['messages_after']:,} / {result['transitions_after']:,}"),
        ("RSS peak / current", f"{result['rss_peak_mb']:,} MB / {result['rss_current_mb']:,} MB"),
        ("state.db (+ WAL)", f"{result['state_db_mb']:,} MB (+ {result['state_wal_mb']} MB)"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"journeys: {result['customers']:,} customers, {result['journeys']} journeys, batch {result['batch_size']}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if "profile" in result:
        profile = result["profile"]
        print(
            f"  cProfile of {profile['events']:,} more events ({profile['events_per_s_under_cprofile']:,}/s under it; "
            f"journey stage {profile['journey_stage_cumulative_share']:.0%} cumulative):"
        )
        for entry in profile["top_own_time"]:
            print(f"    {entry['own_share']:6.1%}  {entry['calls']:>9,}  {entry['function']}")
    ratio = (
        f"; journeys absent {result['baseline_events_per_s_median']:,}" if "journeys_over_baseline" in result else ""
    )
    print(
        f"RESULT journeys ({result['customers']:,} customers, {result['journeys']} journeys, "
        f"{result['live_instances_before']:,} live instances, {result['timer_rows_before']:,} timer rows): median "
        f"{result['events_per_s_median']:,} events/s (target >= 10,000){ratio} | {result['machine']}"
    )


if __name__ == "__main__":
    main()
