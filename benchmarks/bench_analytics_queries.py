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
    .venv/bin/python benchmarks/bench_analytics_queries.py --events 200000 --customers 20000  # smoke (< 1 min)
    .venv/bin/python benchmarks/bench_analytics_queries.py --data-dir /tmp/polku-a10m --keep  # keep the store
    .venv/bin/python benchmarks/bench_analytics_queries.py --data-dir /tmp/polku-a10m --reuse --only variants
"""

from __future__ import annotations

import argparse
import json
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
T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SPAN_MS = 90 * DAY_MS
BATCH = 50_000
"""Rows per transaction of the build: the feed's batch."""
FEEDBACK = "Feedback Submitted"
Step = tuple[str, str | None, float, str | None]
"""(type, name, weight, the usual next step's name); ``identify`` has no name."""
CHANNELS: dict[str, tuple[float, str, tuple[Step, ...]]] = {
    "web": (
        0.42,
        "default",
        (
            ("page", "Home", 10, "Products Searched"),
            ("page", "Pricing", 3, "Signed In"),
            ("page", "Help Center", 3, "Password Reset Requested"),
            ("track", "Products Searched", 8, "Product Viewed"),
            ("track", "Product Viewed", 14, "Product Added"),
            ("track", "Product Added", 5, "Checkout Started"),
            ("track", "Checkout Started", 3, "Order Completed"),
            ("track", "Order Completed", 2, "Home"),
            ("track", "Signed In", 6, "Invoice Viewed"),
            ("track", "Login Failed", 2, "Password Reset Requested"),
            ("track", "Password Reset Requested", 2, "Password Reset Failed"),
            ("track", "Password Reset Failed", 1, "Help Center"),
            ("track", "Invoice Viewed", 3, "Address Updated"),
            ("track", "Address Updated", 1, "Home"),
            ("identify", None, 1, "Home"),
        ),
    ),
    "app": (
        0.28,
        "default",
        (
            ("track", "App Opened", 10, "Home"),
            ("screen", "Home", 6, "Product Viewed"),
            ("screen", "Orders", 3, "Payment Failed"),
            ("track", "Product Viewed", 10, "Product Added"),
            ("track", "Product Added", 4, "Order Completed"),
            ("track", "Order Completed", 2, "Orders"),
            ("track", "Signed In", 4, "Home"),
            ("track", "Login Failed", 2, "Signed In"),
            ("track", "Payment Failed", 1, "Orders"),
            ("track", "Push Opened", 3, "Product Viewed"),
            ("identify", None, 1, "Home"),
            ("track", FEEDBACK, 0, None),
        ),
    ),
    "email": (
        0.12,
        "esp",
        (
            ("track", "Email Delivered", 10, "Email Opened"),
            ("track", "Email Opened", 6, "Email Clicked"),
            ("track", "Email Clicked", 3, "Email Delivered"),
            ("track", "Unsubscribed", 0.3, "Email Delivered"),
            ("track", FEEDBACK, 0, None),
        ),
    ),
    "chat": (
        0.07,
        "chat",
        (
            ("track", "Chat Started", 10, "Bot Answered"),
            ("track", "Bot Answered", 6, "Chat Ended"),
            ("track", "Chat Escalated", 2, "Chat Ended"),
            ("track", "Chat Ended", 6, "Chat Started"),
        ),
    ),
    "phone": (
        0.06,
        "contact-center",
        (
            ("track", "Call Started", 10, "IVR Menu Selected"),
            ("track", "IVR Menu Selected", 6, "Call Ended"),
            ("track", "Call Transferred", 2, "Call Ended"),
            ("track", "Call Ended", 6, "Call Started"),
            ("track", FEEDBACK, 0, None),
        ),
    ),
    "store": (
        0.05,
        "pos",
        (
            ("track", "Store Visited", 10, "Store Purchase"),
            ("track", "Store Purchase", 5, "Store Visited"),
            ("track", "Return Processed", 1, "Store Visited"),
        ),
    ),
}
FAILURES = ("Login Failed", "Password Reset Failed", "Payment Failed")
TROUBLE = (*FAILURES, "Call Transferred", "Chat Escalated")
CONTACTS = {
    "phone": ("Call Started", "IVR Menu Selected", "Call Transferred", "Call Ended"),
    "chat": ("Chat Started", "Bot Answered", "Chat Escalated", "Chat Ended"),
}
METRICS = ("csat", "nps", "ces")
CRITICAL_SCORES = {"csat": ((1, 2), (3, 5)), "nps": ((0, 6), (7, 10)), "ces": ((5, 7), (1, 4))}
"""metric → (critical scores, the other scores), inclusive."""
ANSWERS = {
    # channel: (share of the answers, metrics and their shares, P(critical), delay after the session, survey)
    "phone": (0.45, {"csat": 0.7, "ces": 0.3}, 0.22, (60_000, 300_000), "post-call"),
    "app": (0.30, {"ces": 0.5, "csat": 0.5}, 0.12, (10_000, 120_000), "in-app"),
    "email": (0.25, {"nps": 0.6, "csat": 0.4}, 0.08, (1_800_000, 5_400_000), "relationship"),
}
TROUBLE_EXTRA = 0.35
"""How much likelier an answer is critical after a failure, transfer or escalation."""
JOURNEYS = ("onboarding", "cart-recovery", "win-back")


class Steps:
    """Every (channel, step) as one flat table of small integers."""

    def __init__(self) -> None:
        self.channels = list(CHANNELS)
        self.types = ["track", "page", "screen", "identify"]
        rows = [(channel, *step) for channel, (_, _, steps) in CHANNELS.items() for step in steps]
        self.names = sorted({name for _, _, name, _, _ in rows if name is not None})
        index = {(channel, name): number for number, (channel, _, name, _, _) in enumerate(rows)}
        self.channel = np.array([self.channels.index(channel) for channel, *_ in rows], np.int8)
        self.type = np.array([self.types.index(kind) for _, kind, *_ in rows], np.int8)
        self.name = np.array([self.names.index(name) if name else -1 for _, _, name, _, _ in rows], np.int16)
        self.next = np.array(
            [index[(channel, after)] if after else number for number, (channel, *_, after) in enumerate(rows)],
            np.int16,
        )
        self.index = index
        self.weights = {
            number: np.array([weight for channel, _, _, weight, _ in rows if channel == name], float)
            for number, name in enumerate(self.channels)
        }
        self.ids = {
            number: np.array([i for i, (channel, *_) in enumerate(rows) if channel == name], np.int16)
            for number, name in enumerate(self.channels)
        }

    def of(self, names: tuple[str, ...]) -> np.ndarray:
        return np.array([i for (_, name), i in self.index.items() if name in names], np.int16)


def _hex_ids(rng: np.random.Generator, count: int, prefix: str, digits: int) -> list[str]:
    """``count`` random ids of ``digits`` hex digits (like the processor's ``c_…``)."""
    raw = rng.bytes(count * digits // 2).hex()
    return [prefix + raw[start : start + digits] for start in range(0, count * digits, digits)]


def _dictionary(indices: np.ndarray, values: list[str]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(
        pa.array(indices.astype(np.int32), mask=indices < 0), pa.array(values, pa.string())
    )


def generate(events: int, customers: int, answers: int, *, seed: int) -> pa.Table:
    """The store's rows in log order (module docstring, step 1)."""
    rng = np.random.default_rng(seed)
    steps = Steps()
    contacts = events * 3 // 100 // 3
    base = events - answers - 3 * contacts

    # Who: a skewed number of events per customer, at least one each.
    weights = rng.lognormal(0.0, 1.0, customers)
    extra = rng.choice(customers, size=base - customers, p=weights / weights.sum())
    per_customer = 1 + np.bincount(extra, minlength=customers)
    customer = np.repeat(np.arange(customers, dtype=np.int32), per_customer)
    del extra

    # Sessions: contiguous runs of a customer's events, at random moments, in order.
    opens = rng.random(base) < 0.25
    opens[0] = True
    opens[np.cumsum(per_customer)[:-1]] = True
    session = np.cumsum(opens) - 1
    firsts = np.flatnonzero(opens)
    sessions = len(firsts)
    session_start = rng.integers(0, SPAN_MS, sessions, dtype=np.int64)
    session_start = session_start[np.lexsort((session_start, customer[firsts]))]
    shares = np.array([share for share, _, _ in CHANNELS.values()])
    session_channel = rng.choice(len(shares), size=sessions, p=shares / shares.sum()).astype(np.int8)
    gaps = rng.exponential(60_000, base).astype(np.int64)
    gaps[opens] = 0
    elapsed = np.cumsum(gaps)
    ts = T0_MS + session_start[session] + elapsed - elapsed[firsts][session]
    del gaps, elapsed

    # What: a walk over the channel's steps, half the time to the usual next one.
    channel = session_channel[session]
    step = np.empty(base, np.int16)
    for number, ids in steps.ids.items():
        where = channel == number
        step[where] = rng.choice(ids, size=int(where.sum()), p=steps.weights[number] / steps.weights[number].sum())
    position = np.arange(base) - firsts[session]
    openers = np.array([ids[0] for ids in steps.ids.values()], np.int16)
    step[firsts] = np.where(rng.random(sessions) < 0.6, openers[session_channel], step[firsts])
    follow = rng.random(base) < 0.5
    by_position = np.argsort(position, kind="stable")
    bounds = np.cumsum(np.bincount(position))
    for depth in range(1, len(bounds)):
        at = by_position[bounds[depth - 1] : bounds[depth]]
        step[at] = np.where(follow[at], steps.next[step[at - 1]], step[at])
    del follow, by_position, position

    # Failure demand: a call or chat 5-120 minutes after a failed login, reset or payment.
    failures = np.flatnonzero(np.isin(step, steps.of(FAILURES)))
    if len(failures) >= contacts:
        after = rng.choice(failures, contacts, replace=False)
    else:
        after = np.concatenate([failures, rng.choice(base, contacts - len(failures), replace=False)])
    on_phone = rng.random(contacts) < 0.6
    troubled = rng.random(contacts) < 0.3
    contact_steps = np.empty((contacts, 3), np.int16)
    for name, chosen in (("phone", on_phone), ("chat", ~on_phone)):
        started, routine, escalated, ended = (steps.index[(name, step_name)] for step_name in CONTACTS[name])
        contact_steps[chosen] = np.stack(
            [np.full(contacts, started), np.where(troubled, escalated, routine), np.full(contacts, ended)], axis=1
        )[chosen]
    contact_start = ts[after] + rng.integers(5 * 60_000, 120 * 60_000, contacts)
    contact_ts = np.stack(
        [
            contact_start,
            contact_start + rng.integers(60_000, 300_000, contacts),
            contact_start + rng.integers(360_000, 1_200_000, contacts),
        ],
        axis=1,
    )
    contact_customer = customer[after]

    # Feedback: answers after sessions, critical more often after trouble.
    lasts = np.r_[firsts[1:] - 1, base - 1]
    phone, app = steps.channels.index("phone"), steps.channels.index("app")
    session_trouble = np.bincount(session[np.isin(step, steps.of(TROUBLE))], minlength=sessions) > 0
    candidates = {
        "phone": (
            np.concatenate([customer[firsts][session_channel == phone], contact_customer[on_phone]]),
            np.concatenate([ts[lasts][session_channel == phone], contact_ts[on_phone, 2]]),
            np.concatenate(
                [
                    session_trouble[session_channel == phone],
                    troubled[on_phone] | (rng.random(int(on_phone.sum())) < 0.4),
                ]
            ),
        ),
        "app": (
            customer[firsts][session_channel == app],
            ts[lasts][session_channel == app],
            session_trouble[session_channel == app],
        ),
        "email": (customer[firsts], ts[lasts], session_trouble),
    }
    answer_parts: list[tuple[np.ndarray, ...]] = []
    for name, (share, metric_shares, critical_p, (low, high), _) in ANSWERS.items():
        count = round(answers * share) if name != "email" else answers - sum(len(part[0]) for part in answer_parts)
        who, ended, trouble = candidates[name]
        if not len(who):
            who, ended, trouble = candidates["email"]
        chosen = rng.choice(len(who), count, replace=count > len(who))
        metric = rng.choice([METRICS.index(m) for m in metric_shares], count, p=list(metric_shares.values()))
        critical = rng.random(count) < critical_p + TROUBLE_EXTRA * trouble[chosen]
        score = np.empty(count)
        for number, metric_name in enumerate(METRICS):
            (bad_low, bad_high), (good_low, good_high) = CRITICAL_SCORES[metric_name]
            bad = rng.integers(bad_low, bad_high + 1, count)
            good = rng.integers(good_low, good_high + 1, count)
            score = np.where(metric == number, np.where(critical, bad, good), score)
        answer_parts.append(
            (
                who[chosen],
                ended[chosen] + rng.integers(low, high, count),
                np.full(count, steps.index[(name, FEEDBACK)], np.int16),
                metric,
                score,
                np.full(count, list(ANSWERS).index(name)),
            )
        )

    # All rows, in log order.
    customer = np.concatenate([customer, contact_customer.repeat(3), *(part[0] for part in answer_parts)])
    ts = np.concatenate([ts, contact_ts.ravel(), *(part[1] for part in answer_parts)])
    step = np.concatenate([step, contact_steps.ravel(), *(part[2] for part in answer_parts)])
    plain = base + 3 * contacts
    metric = np.concatenate([np.full(plain, -1), *(part[3] for part in answer_parts)])
    score = np.concatenate([np.full(plain, np.nan), *(part[4] for part in answer_parts)])
    survey = np.concatenate([np.full(plain, -1), *(part[5] for part in answer_parts)])
    order = np.argsort(ts, kind="stable")
    customer, ts, step, metric, score, survey = (
        column[order] for column in (customer, ts, step, metric, score, survey)
    )
    total = len(ts)

    channel = steps.channel[step]
    kind = steps.type[step]
    anonymous = (kind == steps.types.index("page")) & (rng.random(total) < 0.5)
    accounts = np.where(rng.random(customers) < 0.1, rng.integers(0, max(1, customers // 50), customers), -1)
    journey = np.where(
        (channel == steps.channels.index("email")) & (rng.random(total) < 0.4), rng.integers(0, 3, total), -1
    )
    journey[metric >= 0] = -1
    sources = [source for _, source, _ in CHANNELS.values()]
    columns = {
        "workspace": _dictionary(np.zeros(total, np.int32), [WORKSPACE]),
        "seq": pa.array(np.arange(1, total + 1, dtype=np.int64)),
        "ts": pa.array(ts, pa.timestamp("ms")),
        "customer_id": _dictionary(customer, _hex_ids(rng, customers, "c_", 20)),
        "anchor": _dictionary(
            customer + anonymous * customers,
            [f"user_id:u{number}" for number in range(customers)]
            + ["anonymous_id:" + value for value in _hex_ids(rng, customers, "", 32)],
        ),
        "type": _dictionary(kind, steps.types),
        "name": _dictionary(steps.name[step], steps.names),
        "channel": _dictionary(channel, steps.channels),
        "account": _dictionary(accounts[customer], [f"acct-{number}" for number in range(max(1, customers // 50))]),
        "metric": _dictionary(metric, list(METRICS)),
        "score": pa.array(score, mask=np.isnan(score)),
        "survey": _dictionary(survey, [survey for *_, survey in ANSWERS.values()]),
        "journey": _dictionary(journey, list(JOURNEYS)),
        "step": _dictionary(np.where(journey >= 0, rng.integers(0, 3, total), -1), ["email-1", "email-2", "email-3"]),
        "source": _dictionary(channel, sources),
    }
    return pa.table(
        [columns[name] for name, _ in analytics_store.EVENT_COLUMNS],
        names=[n for n, _ in analytics_store.EVENT_COLUMNS],
    )


def load(data_dir: Path, table: pa.Table) -> float:
    """Write ``table`` into a fresh store in the feed's transactions; seconds."""
    started = time.perf_counter()
    with analytics_store.writer(data_dir) as db:
        for offset in range(0, table.num_rows, BATCH):
            chunk = table.slice(offset, BATCH)
            db.execute("BEGIN TRANSACTION")
            db.register("incoming", chunk)
            db.execute("INSERT INTO events SELECT * FROM incoming")
            db.unregister("incoming")
            db.execute("UPDATE feed SET seq = ? WHERE id = 1", [offset + chunk.num_rows])
            db.execute("COMMIT")
            if (offset // BATCH) % 40 == 39:
                print(f"  loaded {offset + chunk.num_rows:,}/{table.num_rows:,}", file=sys.stderr, flush=True)
    return time.perf_counter() - started


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
        "root_causes_all": (
            lambda db, scope: analytics_causes.root_causes(db, scope, metric="csat", lookback_ms=2 * HOUR_MS),
            10.0,
            "csat, every channel, lookback 2h",
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
    if name.startswith("root_causes"):
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
    if args.customers < 1 or args.events < args.customers + answers + args.events * 3 // 100:
        parser.error("--events must be at least --customers + --answers + 3 % contacts")

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
        spread = f"{entry['min_s']:.2f}-{entry['max_s']:.2f} s"
        print(
            f"  {name:<{width}}  {entry['median_s']:>6.2f} s  {spread:>15}"
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
