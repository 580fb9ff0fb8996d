"""Next-best-action latency: ``decide()`` alone, and ``POST /v1/decide`` over HTTP.

Targets (decisions issue), 2-core machine, 200 actions, 1,000,000 customers:
``/v1/decide`` p99 at most 10 ms at 1,000 decisions/s over HTTP, and the decision
function alone at most 1 ms p99.

Both parts use one generated catalogue (``catalogue_document``): 200 actions on the
channels web, app, chat, agent and email (1-3 each), most with placements; 62 %
(124) with an eligibility condition over traits, segments, attributes, accounts,
``last_seen`` and the request's context; a third with context weights by intent or
page; a treatment per channel whose strings are Jinja templates reading the profile;
a quarter with purpose ``marketing`` (consent, a weekly cap, quiet hours for e-mail);
a third with response suppression; a 5 % holdout, three learning segments and two
hand-over rules. The request mix (``RequestMaker``): web 45 %, app 25 %, chat 18 %
(2 % of chats ask for a human), agent 7 %, e-mail 5 %, with a placement and an intent
or page.

``--part function`` times ``polku.core.decisions.decide`` in this process (after
``tune_gc()``, as ``polku serve`` runs) over ``--calls`` calls per run for
``--customers-in-memory`` generated customers: traits (plan, country, consent,
time zone), 10 computed attributes, about 5 of 20 segments, 0-2 accounts, feedback,
recent sends, response memory with rejections, an in-app message for some, and
learned counters for every action in every learning group. Each call has a new
decision id (so a new Thompson draw) and a random request and customer. The figure
is the median over ``--runs`` of each run's p99.

``--part http`` needs a store. It builds one in the fastest honest way: the
workspace configuration (``bench_processor.CONFIG``'s 20 attributes and 20 segments,
plus a contact policy), one ``identify`` per customer (``u0`` … ``u{N-1}``; traits
incl. consent and time zone) and a history for ``--history`` customers (a
``group`` call for 30 %, 1-3 ``Decision Made`` events, acceptances and rejections,
so the learned counters cover every action and some customers have response
memory, caps and accounts), all appended through the real log and folded by the
real ``Processor``. ``--data-dir D --keep`` builds in ``D`` and keeps it; ``--data-dir
D --reuse`` measures a directory built so (seeding 1,000,000 customers takes several
minutes). Then, per run, a fresh ``polku serve --no-processor --no-dispatcher
--no-analytics`` (nothing changes the state while it is measured; ``--processor``
runs the processor too, which then folds the ``Decision Made`` events the decisions
write, as in production), the catalogue deployed with ``PUT /v1/actions`` (YAML),
one decision sent alone (it loads and compiles the catalogue, ~1 s at 200 actions;
its time is printed: concurrent first decisions would each compile it), then an
open-loop generator (``bench_track_latency``'s: asyncio, keep-alive connections,
latency from each request's *scheduled* time, so a slow answer cannot hide the ones
queued behind it) sending ``POST /v1/decide`` for random customers at ``--rate`` for
``--warmup`` + ``--seconds``. It reports p50/p90/p99/max overall and per request
kind, the rate sent and the rate answered (the server's capacity when it cannot keep
up), errors, the CPU of the server and of the generator. After the HTTP runs the
same kind of requests go, one at a time, through the real ``DecisionService`` in
this process (reads on this thread, no HTTP), which splits the HTTP latency into the
service's own time and the rest.

Run (from the repository root, after ``scripts/install``)::

    .venv/bin/python benchmarks/bench_decide.py --part function
    .venv/bin/python benchmarks/bench_decide.py --part http --data-dir /tmp/polku-decide-1m --keep
    .venv/bin/python benchmarks/bench_decide.py --part http --data-dir /tmp/polku-decide-1m --reuse
    .venv/bin/python benchmarks/bench_decide.py --part http --data-dir /tmp/polku-decide-1m --reuse --rate 400 \\
        --in-process-requests 0
    .venv/bin/python benchmarks/bench_decide.py --part function --calls 2000 --runs 2 --json          # smoke
    .venv/bin/python benchmarks/bench_decide.py --part http --customers 20000 --history 2000 --seconds 5 --runs 1
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import msgspec
import yaml

import bench_processor
from bench_processor import progress
from bench_profile_lookup import percentiles
from bench_track_latency import Connection
from harness import ADMIN_TOKEN, WRITE_KEY, CpuMeter, machine, median, server, wait_for_quiet
from polku.adapters.sqlite import SqliteCatalog, SqliteEventLog
from polku.adapters.sqlite.log_reader import SqliteLogReader, decode_config
from polku.adapters.sqlite.state_store import STATE_FILE, SqliteStateStore, open_state_reader
from polku.cli.main import tune_gc
from polku.core.action_spec import compile_catalogue, parse_catalogue
from polku.core.decisions import OVERALL, ActionMemory, Candidate, Request, decide
from polku.core.journey_state import Sent
from polku.core.workspace import parse_config
from polku.engine.decision_service import DecisionService, parse_request
from polku.engine.processor import Processor
from polku.engine.profile_views import ProfileViews
from polku.engine.runtime import WorkspaceRuntime
from polku.engine.setup import bootstrap
from polku.engine.worker import wall_clock_ms

WORKSPACE = bench_processor.WORKSPACE
DAY = 86_400_000
ACTIONS = 200
MARKER = "bench_decide.json"
"""Written into a data directory once it is built (what ``--reuse`` checks)."""

POLICY = """
policy:
  caps:
    - {name: marketing-weekly, max: 3, per: 7d, purposes: [marketing]}
  quiet_hours: {start: "22:00", end: "07:00", purposes: [marketing], channels: [email]}
  suppress:
    - {name: support-heavy, when: "'support_heavy' in segments", purposes: [marketing]}
"""
CONFIG = bench_processor.CONFIG + POLICY

PLACEMENTS = {
    "web": ["banner", "hero", "sidebar", "checkout"],
    "app": ["home_card", "inbox", "push_prompt"],
    "chat": ["chat_answer"],
    "agent": ["agent_script"],
    "email": ["email_block"],
}
CHANNEL_SHARE = {"web": 0.40, "app": 0.30, "chat": 0.25, "agent": 0.15, "email": 0.15}
"""The chance that an action is offered on a channel (at least one each)."""
REQUEST_SHARE = [("web", 0.45), ("app", 0.25), ("chat", 0.18), ("agent", 0.07), ("email", 0.05)]
INTENTS = ["login_problem", "billing", "delivery", "returns", "upgrade", "cancel", "other"]
PAGES = ["home", "pricing", "product", "checkout", "account", "docs"]
PLANS = ["free", "free", "free", "pro", "enterprise"]
COUNTRIES = ["FI", "SE", "DE", "US", "FR", "NL"]
CATEGORIES = bench_processor.CATEGORIES
SEGMENTS = list(parse_config(CONFIG).segments)
LEARNING_SEGMENTS = ["pro", "enterprise", "big_spenders"]
THEMES = ["offer", "tip", "upsell", "guide", "reminder", "bundle", "survey", "help", "promo", "renewal"]


# -- the catalogue ------------------------------------------------------------------------


def _clause(r: random.Random, channels: list[str]) -> str:
    roll = r.random()
    if roll < 0.14:
        return f'traits.plan == "{r.choice(["free", "pro", "enterprise"])}"'
    if roll < 0.20:
        return 'traits.plan in ["pro", "enterprise"]'
    if roll < 0.26:
        return f'traits.country == "{r.choice(COUNTRIES)}"'
    if roll < 0.40:
        return f'"{r.choice(SEGMENTS)}" in segments'
    if roll < 0.45:
        return f'"{r.choice(SEGMENTS)}" not in segments'
    if roll < 0.52:
        return f"exists(attributes.orders_total) and attributes.orders_total >= {r.randint(1, 3)}"
    if roll < 0.57:
        return f"exists(attributes.revenue) and attributes.revenue >= {r.choice([50, 100, 250])}"
    if roll < 0.61:
        return f'attributes.top_category_7d == "{r.choice(CATEGORIES)}"'
    if roll < 0.64:
        return "attributes.cart_adds_30d >= 1 and attributes.orders_30d == 0"
    if roll < 0.67:
        return 'account.plan == "enterprise"'
    if roll < 0.70:
        return "len(accounts) >= 1"
    if roll < 0.75:
        return f"now - last_seen.web < days({r.choice([7, 30, 90])})"
    if roll < 0.78:
        return "exists(feedback.nps) and feedback.nps <= 6"
    if any(channel in ("chat", "agent") for channel in channels) and roll < 0.90:
        return f'context.intent in ["{r.choice(INTENTS)}", "{r.choice(INTENTS)}"]'
    return f'context.page == "{r.choice(PAGES)}"'


def _treatment(r: random.Random, channel: str, number: int, name: str) -> dict[str, Any]:
    slug = f"{name.lower().replace(' ', '-')}-{number}"
    if channel == "web":
        return {
            "title": f"{{{{ traits.name or 'Hello' }}}}, {name.lower()}",
            "body": f"Picked for you from {{{{ attributes.top_category or 'our range' }}}} ({name}).",
            "cta": r.choice(["Shop now", "Read more", "Try it", "Upgrade"]),
            "url": f"https://shop.example.com/{slug}?c={{{{ customer_id }}}}&p={{{{ placement }}}}",
            "image": f"https://cdn.example.com/{slug}.webp",
        }
    if channel == "app":
        return {
            "title": f"{name} for {{{{ traits.name or 'you' }}}}",
            "body": f"{{{{ traits.plan | default('free') | capitalize }}}} members: {name.lower()}.",
            "deep_link": f"app://offers/{slug}",
        }
    if channel == "chat":
        return {
            "text": f"Hi {{{{ traits.name or 'there' }}}}! {name}: see https://help.example.com/{slug}",
            "quick_replies": ["Yes, please", "No thanks"],
        }
    if channel == "agent":
        return {
            "script": f"Offer {name} to {{{{ traits.name }}}} ({{{{ traits.plan }}}} plan, {{{{ traits.country }}}}).",
            "talking_points": [f"{name} fits {{{{ context.intent or 'this request' }}}}", "Mention the free trial"],
        }
    return {
        "subject": f"{{{{ traits.name or 'Hello' }}}}, {name.lower()}",
        "preheader": f"{name} in {{{{ traits.country or 'your country' }}}}",
        "block": f"<p>{name} for {{{{ traits.email }}}}</p>",
    }


def catalogue_document(seed: int = 17) -> dict[str, Any]:
    """The catalogue as the YAML document's data (module docstring)."""
    r = random.Random(seed)
    actions: list[dict[str, Any]] = [
        {
            "id": "help-center",
            "name": "Help center",
            "channels": list(PLACEMENTS),
            "value": 0.2,
            "self_service": True,
            "treatments": {"*": {"text": "Our help center: https://help.example.com"}},
        }
    ]
    for number in range(1, ACTIONS):
        theme = THEMES[number % len(THEMES)]
        name = f"{theme.capitalize()} {number}"
        channels = [channel for channel, share in CHANNEL_SHARE.items() if r.random() < share]
        if not channels:
            channels = [r.choice(list(PLACEMENTS))]
        channels = channels[:3]
        action: dict[str, Any] = {"id": f"{theme}-{number:03d}", "name": name, "channels": channels}
        if r.random() < 0.75:
            offered = sorted({r.choice(PLACEMENTS[channel]) for channel in channels for _ in range(2)})
            action["placements"] = offered
        if r.random() < 0.65:
            clauses = [_clause(r, channels) for _ in range(r.choice([1, 1, 1, 2, 2, 3]))]
            joiner = " and " if r.random() < 0.8 else " or "
            action["when"] = joiner.join(f"({clause})" if " and " in clause else clause for clause in clauses)
        action["value"] = round(r.uniform(0.5, 20), 1)
        if r.random() < 0.15:
            action["lever"] = r.choice([0.5, 1.5, 2.0])
        if r.random() < 0.35:
            if any(channel in ("chat", "agent") for channel in channels):
                intent = r.choice(INTENTS)
                action["context"] = {"intent": {intent: 3, "*": r.choice([0, 0.5])}}
            else:
                action["context"] = {"page": {r.choice(PAGES): 2.5, "checkout": 0.5, "*": 1}}
        roll = r.random()
        action["purpose"] = "marketing" if roll < 0.25 else ("transactional" if roll < 0.30 else "service")
        if "chat" in channels and r.random() < 0.5:
            action["self_service"] = True
        if r.random() < 0.2 and len(channels) > 1:
            action["treatments"] = {
                channels[0]: _treatment(r, channels[0], number, name),
                "*": _treatment(r, "web", number, name),
            }
        else:
            action["treatments"] = {channel: _treatment(r, channel, number, name) for channel in channels}
        if r.random() < 0.33:
            action["suppress"] = {"rejected": r.choice([2, 3]), "within": "30d", "for": r.choice(["7d", "14d"])}
        actions.append(action)
    return {
        "holdout": 0.05,
        "default_action": "help-center",
        "learning": {"segments": LEARNING_SEGMENTS, "prior": [1, 1]},
        "handover": [
            {"name": "asked_for_human", "when": "context.ask_human == true"},
            {"name": "repeated_tickets", "when": "exists(attributes.tickets_90d) and attributes.tickets_90d >= 3"},
        ],
        "in_app_value": 10,
        "actions": actions,
    }


def catalogue_yaml(seed: int = 17) -> str:
    return yaml.safe_dump(catalogue_document(seed), sort_keys=False, allow_unicode=True, width=120)


# -- requests ---------------------------------------------------------------------------


class RequestMaker:
    """The request mix (module docstring): channel, placement, context, limit."""

    def __init__(self, r: random.Random) -> None:
        self.random = r
        self.channels = [channel for channel, _ in REQUEST_SHARE]
        self.weights = [share for _, share in REQUEST_SHARE]

    def make(self) -> tuple[str, dict[str, Any]]:
        """(kind, the request's fields but the identifier); kind is the channel, or
        ``chat-handover`` for a chat that asks for a human."""
        r = self.random
        channel = r.choices(self.channels, self.weights)[0]
        placement: str | None = r.choice(PLACEMENTS[channel])
        context: dict[str, Any] = {}
        limit = 3
        kind = channel
        if channel in ("web", "app"):
            context["page"] = r.choice(PAGES)
            if r.random() < 0.1:
                placement = None
            if r.random() < 0.2:
                context["campaign"] = "spring"
            if placement == "push_prompt":
                limit = 1
        elif channel in ("chat", "agent"):
            context["intent"] = r.choice(INTENTS)
            if channel == "chat" and r.random() < 0.2:
                placement = None
            if channel == "chat" and r.random() < 0.02:
                context["ask_human"] = True
                kind = "chat-handover"
            if channel == "agent":
                limit = 5
        else:
            limit = 1
        return kind, {"channel": channel, "placement": placement, "context": context, "limit": limit}


# -- part 1: the function alone -------------------------------------------------------------


def customer_view(r: random.Random, number: int, now: int) -> dict[str, Any]:
    """A condition view as ``polku.core.profile.condition_view`` builds it."""
    orders = r.choice([0, 0, 0, 1, 1, 2, 3, 5])
    revenue = round(orders * r.uniform(20, 150), 2)
    attributes: dict[str, Any] = {
        "orders_total": orders,
        "orders_30d": min(orders, r.choice([0, 0, 1, 2])),
        "revenue": revenue,
        "revenue_30d": round(revenue * r.random(), 2),
        "largest_order": round(revenue * 0.6, 2) if orders else None,
        "views_7d": r.choice([0, 0, 1, 3, 8, 20]),
        "top_category_7d": r.choice([None, *CATEGORIES]),
        "top_category": r.choice([None, *CATEGORIES]),
        "cart_adds_30d": r.choice([0, 0, 0, 1, 2]),
        "tickets_90d": r.choice([0, 0, 0, 0, 1, 2, 3]),
    }
    accounts = [
        {
            "id": f"acct{r.randrange(5000)}",
            "name": f"Company {index}",
            "plan": r.choice(["team", "pro", "enterprise"]),
            "seats": r.choice([5, 20, 200]),
        }
        for index in range(r.choice([0, 0, 0, 1, 1, 2]))
    ]
    traits: dict[str, Any] = {
        "email": f"person{number}@example.com",
        "name": f"Person {number}",
        "first_name": f"Person{number}",
        "plan": r.choice(PLANS),
        "country": r.choice(COUNTRIES),
        "timezone": r.choice(["Europe/Helsinki", "Europe/Berlin", "America/New_York"]),
        "language": r.choice(["fi", "sv", "en", "de"]),
    }
    if r.random() < 0.8:
        traits["consent"] = {"marketing": r.random() < 0.5}
    view: dict[str, Any] = {
        "now": now,
        "attributes": attributes,
        "last_seen": {
            "web": now - r.randrange(60 * DAY),
            **({"app": now - r.randrange(60 * DAY)} if r.random() < 0.4 else {}),
        },
        "traits": traits,
        "segments": sorted(r.sample(SEGMENTS, r.choice([3, 4, 5, 5, 6, 7]))),
        "accounts": accounts,
        "account": accounts[0] if accounts else None,
        "feedback": {"nps": r.randrange(11)} if r.random() < 0.2 else {},
        "identifiers": {"user_id": [f"u{number}"], "anonymous_id": [f"a{number}"], "email": [traits["email"]]},
    }
    return view


def customer_state(
    r: random.Random, action_ids: list[str], now: int
) -> tuple[list[Sent], dict[str, ActionMemory], list[Candidate]]:
    """Recent sends (caps), response memory (suppression), queued in-app items."""
    sent = [
        Sent(now - r.randrange(10 * DAY), r.choice(["email", "web", "app"]), "marketing")
        for _ in range(r.choice([0, 0, 1, 2, 3, 4]))
    ]
    memory: dict[str, ActionMemory] = {}
    if r.random() < 0.3:
        for action in r.sample(action_ids, r.randint(1, 5)):
            rejected = [now - r.randrange(40 * DAY) for _ in range(r.choice([0, 1, 2, 3]))]
            memory[action] = ActionMemory(offered_ms=now - r.randrange(DAY), rejected=sorted(rejected))
    competing = []
    if r.random() < 0.1:
        competing.append(
            Candidate(
                id="message:onboarding-2",
                kind="message",
                score=10.0,
                value=10.0,
                treatment={
                    "subject": "Welcome",
                    "body": "Finish setting up",
                    "payload": {},
                    "journey": "onboarding",
                    "step": "nudge",
                },
                reasons=("queued by journey onboarding step nudge", "in-app value 10"),
            )
        )
    return sent, memory, competing


def learned_stats(r: random.Random, action_ids: list[str]) -> dict[tuple[str, str], tuple[int, int]]:
    """(action, group) → (offers, acceptances) for every action, overall and (most)
    per learning segment."""
    stats: dict[tuple[str, str], tuple[int, int]] = {}
    for action in action_ids:
        rate = r.uniform(0.005, 0.2)
        for group in [OVERALL, *LEARNING_SEGMENTS]:
            if group != OVERALL and r.random() < 0.3:
                continue
            offers = int(10 ** r.uniform(1, 5))
            stats[(action, group)] = (offers, int(offers * rate * r.uniform(0.5, 1.5)))
    return stats


def function_part(args: argparse.Namespace) -> dict[str, Any]:
    catalogue = compile_catalogue(parse_catalogue(catalogue_yaml()), version=1)
    runtime = WorkspaceRuntime.compile(parse_config(CONFIG))
    r = random.Random(args.seed)
    now = wall_clock_ms()
    action_ids = [action.id for action in catalogue.actions]
    customers = [
        (f"c{number:07d}", customer_view(r, number, now), *customer_state(r, action_ids, now))
        for number in range(args.customers_in_memory)
    ]
    stats = learned_stats(r, action_ids)
    requests = RequestMaker(r)
    gc.collect()
    tune_gc()  # as `polku serve` runs

    def calls(count: int) -> Iterator[tuple[str, dict[str, Any], Request, str]]:
        for _ in range(count):
            kind, fields = requests.make()
            request = Request(fields["channel"], fields["placement"], fields["context"], fields["limit"])
            yield kind, customers[r.randrange(len(customers))], request, "d_" + os.urandom(10).hex()

    def one_run(count: int) -> tuple[list[float], dict[str, int]]:
        samples = []
        counts = {"ranked": 0, "excluded": 0, "holdout": 0}
        for _, (customer_id, view, sent, memory, competing), request, decision_id in list(calls(count)):
            started = time.perf_counter()
            decision = decide(
                catalogue,
                workspace=WORKSPACE,
                customer_id=customer_id,
                decision_id=decision_id,
                request=request,
                view=view,
                policy=runtime.policy,
                sent=sent,
                account_sent={},
                memory=memory,
                stats=stats,
                competing=competing,
                now_ms=now,
            )
            samples.append(time.perf_counter() - started)
            counts["ranked"] += len(decision.ranked)
            counts["excluded"] += len(decision.excluded)
            counts["holdout"] += decision.holdout
        return samples, counts

    one_run(min(2000, args.calls))  # warm-up: imports, Jinja's caches
    wait_for_quiet(max_wait=20)
    runs = []
    for number in range(1, args.runs + 1):
        samples, counts = one_run(args.calls)
        figures = percentiles(samples)
        figures["mean_ms"] = round(sum(samples) / len(samples) * 1000, 3)
        figures["excluded_per_call"] = round(counts["excluded"] / len(samples), 1)
        figures["ranked_per_call"] = round(counts["ranked"] / len(samples), 2)
        figures["holdout_share"] = round(counts["holdout"] / len(samples), 3)
        runs.append(figures)
        progress(
            f"  run {number}: p50 {figures['p50_ms']:.3f} ms, p90 {figures['p90_ms']:.3f}, p99 {figures['p99_ms']:.3f}, "
            f"max {figures['max_ms']:.2f} ({args.calls:,} calls; {figures['excluded_per_call']} excluded and "
            f"{figures['ranked_per_call']} ranked per call)"
        )
    eligible = sum(1 for action in catalogue.actions if action.condition is not None)
    return {
        "benchmark": "decide_function",
        "actions": len(catalogue.actions),
        "with_condition": eligible,
        "customers": len(customers),
        "calls_per_run": args.calls,
        "runs": runs,
        "p99_ms_median": median([run["p99_ms"] for run in runs]),
        "p99_ms_min": min(run["p99_ms"] for run in runs),
        "p99_ms_max": max(run["p99_ms"] for run in runs),
        "p50_ms_median": median([run["p50_ms"] for run in runs]),
        "max_ms_median": median([run["max_ms"] for run in runs]),
        "machine": machine(),
    }


# -- part 2: the store ------------------------------------------------------------------------


async def configure(data_dir: Path) -> None:
    catalog = SqliteCatalog(data_dir)
    await catalog.start()
    try:
        await bootstrap(catalog, write_key=WRITE_KEY, admin_token=ADMIN_TOKEN)
        await catalog.set_config(WORKSPACE, parse_config(CONFIG))
    finally:
        await catalog.close()


def seed_events(maker: bench_processor.Maker, customers: int, now: int) -> Iterator[Any]:
    """One identify per customer, as ``bench_processor`` seeds, with consent and a time zone."""
    r = maker.random
    for customer in range(customers):
        traits: dict[str, Any] = {
            "email": f"person{customer}@example.com",
            "name": f"Person {customer}",
            "plan": r.choice(PLANS),
            "country": r.choice(COUNTRIES),
            "timezone": r.choice(["Europe/Helsinki", "Europe/Berlin", "America/New_York"]),
        }
        if r.random() < 0.8:
            traits["consent"] = {"marketing": r.random() < 0.5}
        yield maker.make(
            "identify", now - r.randrange(90 * DAY), user_id=f"u{customer}", anonymous_id=f"a{customer}", traits=traits
        )


def history_events(maker: bench_processor.Maker, customers: int, count: int, now: int) -> Iterator[Any]:
    """For ``count`` random customers: a ``group`` call (30 %), 1-3 decisions shown
    (``Decision Made``, as the API logs them) and answers to them."""
    r = maker.random
    document = catalogue_document()
    actions = [(action["id"], action["channels"], action.get("purpose", "service")) for action in document["actions"]]
    for position, customer in enumerate(r.sample(range(customers), count)):
        user = f"u{customer}"
        ts = now - r.randrange(20 * DAY)
        if r.random() < 0.3:
            account = f"acct{r.randrange(max(1, count // 10))}"
            traits = {"name": f"Company {account}", "plan": r.choice(["team", "pro", "enterprise"]), "seats": 20}
            yield maker.make("group", ts, user_id=user, group_id=account, traits=traits)
        rejected: str | None = None
        for number in range(r.choice([1, 1, 2, 3])):
            ts += r.randrange(DAY // 2)
            shown = r.sample(actions, 3)
            channel = r.choice(shown[0][1])
            decision = f"dh{position}-{number}"
            properties = {
                "decision": decision,
                "actions": [action for action, _, _ in shown],
                "group": r.choice([OVERALL, OVERALL, *LEARNING_SEGMENTS]),
                "holdout": False,
                "purposes": {action: purpose for action, _, purpose in shown if purpose == "marketing"},
            }
            yield maker.make("track", ts, channel, user_id=user, event="Decision Made", properties=properties)
            answer = r.random()
            if answer < 0.12:
                answered = {"action": shown[0][0], "decision": decision}
                yield maker.make(
                    "track", ts + 30_000, channel, user_id=user, event="Action Accepted", properties=answered
                )
            elif answer < 0.30:
                rejected = shown[r.randrange(3)][0]
                answered = {"action": rejected, "decision": decision}
                yield maker.make(
                    "track", ts + 30_000, channel, user_id=user, event="Action Rejected", properties=answered
                )
        if rejected is not None and r.random() < 0.3:  # rejected again: suppressed for a while
            for _ in range(2):
                ts += r.randrange(DAY)
                yield maker.make(
                    "track", ts, "web", user_id=user, event="Action Rejected", properties={"action": rejected}
                )


def process_all(data_dir: Path) -> None:
    """The real processor over the whole log, with progress."""
    store = SqliteStateStore(data_dir, synchronous="NORMAL")
    reader = SqliteLogReader(data_dir)
    try:
        processor = Processor(store, reader, clock=wall_clock_ms)
        started = last = time.perf_counter()
        done = 0
        while True:
            step = processor.step()
            if not step:
                break
            done += step
            if time.perf_counter() - last > 15:
                last = time.perf_counter()
                progress(f"  processed {done:,} ({done / (last - started):,.0f}/s so far)")
        progress(f"  processed {done:,} events in {time.perf_counter() - started:.1f} s")
        bench_processor.clear_outbox(store)
    finally:
        reader.close()
        store.close()


def build(data_dir: Path, customers: int, history: int, seed: int) -> None:
    started = time.perf_counter()
    asyncio.run(configure(data_dir))
    maker = bench_processor.Maker(seed)
    now = wall_clock_ms()
    asyncio.run(bench_processor.append(data_dir, seed_events(maker, customers, now), customers, "seed"))
    events = list(history_events(maker, customers, min(history, customers), now))
    asyncio.run(bench_processor.append(data_dir, iter(events), len(events), "history"))
    process_all(data_dir)
    (data_dir / MARKER).write_text(
        json.dumps({"customers": customers, "history": history, "history_events": len(events)})
    )
    progress(f"built {data_dir} in {time.perf_counter() - started:.0f} s")


# -- part 2: the load ------------------------------------------------------------------------------


def request_bodies(r: random.Random, customers: int, count: int) -> list[tuple[str, bytes]]:
    maker = RequestMaker(r)
    bodies = []
    for _ in range(count):
        kind, fields = maker.make()
        body = {"identifier": {"user_id": f"u{r.randrange(customers)}"}, **fields}
        bodies.append((kind, msgspec.json.encode(body)))
    return bodies


def http_request(port: int, body: bytes) -> bytes:
    return (
        f"POST /v1/decide HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def drive(
    port: int, bodies: list[tuple[str, bytes]], rate: float, warmup: float, pool_size: int
) -> dict[str, Any]:
    """Open loop (``bench_track_latency.drive``): request ``i`` leaves at ``start + i /
    rate``; latency from then to the end of the answer. The first ``warmup`` s are
    not measured."""
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(pool_size):
        idle.put_nowait(Connection(*await asyncio.open_connection("127.0.0.1", port)))
    latencies: dict[str, list[float]] = {}
    failures: list[str] = []
    answered = 0
    last_answer = 0.0
    first_measured = int(warmup * rate)

    async def one(index: int, scheduled: float) -> None:
        nonlocal answered, last_answer
        kind, body = bodies[index]
        connection = await idle.get()
        try:
            status, answer = await connection.post(http_request(port, body))
        except (OSError, asyncio.IncompleteReadError) as error:
            failures.append(repr(error))
            return
        finished = last_answer = time.perf_counter()
        idle.put_nowait(connection)
        if status != 200 or not answer.startswith(b'{"decision":"d_'):
            failures.append(f"{status} {answer[:200]!r}")
            return
        answered += 1
        if index >= first_measured:
            latencies.setdefault(kind, []).append(finished - scheduled)

    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter() + 0.05
    sent = 0
    total = len(bodies)
    while sent < total:
        now = time.perf_counter()
        while sent < total and start + sent / rate <= now:
            task = asyncio.create_task(one(sent, start + sent / rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
    sending = time.perf_counter() - start
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait().writer.close()
    return {
        "latencies": latencies,
        "failures": failures,
        "answered": answered,
        "achieved_rate": round(total / sending, 1),
        "served_rate": round(answered / max(1e-9, last_answer - start), 1),
    }


def deploy(port: int, document: str, first: bytes) -> tuple[int, float]:
    """``PUT /v1/actions``, then one decision (``first``) alone: it loads and compiles
    the catalogue, which the load must not meet (see ``DecisionService.catalogue``).
    Returns the version and that first decision's seconds."""
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=120) as client:
        deployed = client.put("/v1/actions", content=document, headers={"Content-Type": "application/yaml"})
        if deployed.status_code not in (200, 201):
            sys.exit(f"error: PUT /v1/actions: {deployed.status_code} {deployed.text[:500]}")
        version: int = deployed.json()["version"]
        started = time.perf_counter()
        answer = client.post("/v1/decide", content=first, headers={"Content-Type": "application/json"})
        seconds = time.perf_counter() - started
        if answer.status_code != 200:
            sys.exit(f"error: POST /v1/decide: {answer.status_code} {answer.text[:500]}")
        return version, seconds


def http_run(args: argparse.Namespace, data_dir: Path, customers: int, number: int, seed: int) -> dict[str, Any]:
    extra = ["--no-dispatcher", "--no-analytics"]
    if not args.processor:
        extra.append("--no-processor")
    bodies = request_bodies(random.Random(seed), customers, int((args.warmup + args.seconds) * args.rate))
    wait_for_quiet(max_wait=30)
    with server(data_dir, extra=extra) as running:
        version, first_s = deploy(running.port, catalogue_yaml(), bodies[0][1])
        with CpuMeter(running.pid) as cpu:
            outcome = asyncio.run(drive(running.port, bodies, args.rate, args.warmup, args.connections))
    if outcome["failures"]:
        sys.exit(f"error: {len(outcome['failures'])} requests failed, e.g. {outcome['failures'][:3]}")
    everything = [value for values in outcome["latencies"].values() for value in values]
    result = {
        "all": percentiles(everything),
        "by_kind": {kind: percentiles(values) for kind, values in sorted(outcome["latencies"].items())},
        "achieved_rate": outcome["achieved_rate"],
        "answered": outcome["answered"],
        "errors": len(outcome["failures"]),
        "catalogue_version": version,
        "first_decision_ms": round(first_s * 1000, 1),
        "served_rate": outcome["served_rate"],
        "cpu": cpu.summary(),
        "server_cpus": round(cpu.server, 2),
        "generator_cpus": round(cpu.generator, 2),
    }
    figures = result["all"]
    progress(
        f"  run {number}: p50 {figures['p50_ms']:.2f} ms, p90 {figures['p90_ms']:.2f}, p99 {figures['p99_ms']:.2f}, "
        f"max {figures['max_ms']:.1f} ({figures['n']:,} measured; sent {outcome['achieved_rate']:,.0f}/s, answered "
        f"{outcome['served_rate']:,.0f}/s, 0 errors; {cpu.summary()}; the first decision after the deploy "
        f"{first_s * 1000:,.0f} ms)"
    )
    return result


def in_process(data_dir: Path, customers: int, count: int, seed: int) -> dict[str, Any]:
    """The same requests through the real ``DecisionService`` in this process, one at
    a time (the reads on this thread, no HTTP, the impressions logged as usual)."""

    async def measure() -> dict[str, Any]:
        catalog = SqliteCatalog(data_dir)
        await catalog.start()
        event_log = SqliteEventLog(data_dir)
        await event_log.start()
        reader = SqliteLogReader(data_dir)
        runtime = WorkspaceRuntime.compile(decode_config(reader.configs()[WORKSPACE]))
        views = ProfileViews(open_state_reader(data_dir), reader)

        async def run(function: Any) -> Any:
            return function(views)

        service = DecisionService(catalog, event_log, run, wall_clock_ms)
        try:
            bodies = request_bodies(random.Random(seed), customers, count + 500)
            calls = [parse_request(WORKSPACE, msgspec.json.decode(body)) for _, body in bodies]
            for call in calls[:500]:
                await service.decide(runtime, call)
            samples: dict[str, list[float]] = {}
            for (kind, _), call in zip(bodies[500:], calls[500:], strict=True):
                started = time.perf_counter()
                await service.decide(runtime, call)
                samples.setdefault(kind, []).append(time.perf_counter() - started)
            await service.drain()
        finally:
            views.state.connection.close()
            reader.close()
            await event_log.close()
            await catalog.close()
        everything = [value for values in samples.values() for value in values]
        return {
            "all": percentiles(everything),
            "by_kind": {kind: percentiles(values) for kind, values in sorted(samples.items())},
        }

    return asyncio.run(measure())


def http_part(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    if args.reuse and (args.data_dir is None or not (args.data_dir / MARKER).exists()):
        parser.error("--reuse needs a --data-dir that bench_decide.py built (--data-dir D --keep)")
    if not args.reuse and args.data_dir is not None and args.data_dir.exists():
        parser.error(f"{args.data_dir} exists; give a new directory, or --reuse it")
    scratch = Path(tempfile.mkdtemp(prefix="polku-bench-decide-"))
    data_dir = args.data_dir or scratch / "data"
    try:
        if args.reuse:
            built = json.loads((data_dir / MARKER).read_text())
        else:
            progress(f"building a store of {args.customers:,} customers ({args.history:,} with a history)")
            build(data_dir, args.customers, args.history, args.seed)
            built = json.loads((data_dir / MARKER).read_text())
        customers = bench_processor.customers_in(data_dir)
        state_mb = (data_dir / STATE_FILE).stat().st_size / 1e6
        progress(
            f"decide over HTTP: {customers:,} customers (state.db {state_mb:,.0f} MB), {ACTIONS} actions, "
            f"{args.rate:,.0f}/s open loop, {args.runs} runs x {args.seconds:.0f} s (+ {args.warmup:.0f} s warm-up)"
        )
        runs = [http_run(args, data_dir, customers, number, args.seed + number) for number in range(1, args.runs + 1)]
        local = None
        if args.in_process_requests:
            progress(f"in-process DecisionService, {args.in_process_requests:,} sequential requests")
            wait_for_quiet(max_wait=20)
            local = in_process(data_dir, customers, args.in_process_requests, args.seed)
            progress(
                f"  in-process: p50 {local['all']['p50_ms']:.2f} ms, p99 {local['all']['p99_ms']:.2f}, "
                f"max {local['all']['max_ms']:.1f}"
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if args.data_dir is not None and not (args.keep or args.reuse):  # built by this run: remove
            shutil.rmtree(args.data_dir, ignore_errors=True)
    p99s = [run["all"]["p99_ms"] for run in runs]
    return {
        "benchmark": "decide_http",
        "customers": customers,
        "history_customers": built["history"],
        "state_db_mb": round(state_mb, 1),
        "actions": ACTIONS,
        "rate": args.rate,
        "seconds": args.seconds,
        "processor": args.processor,
        "runs": runs,
        "p99_ms_median": median(p99s),
        "p99_ms_min": min(p99s),
        "p99_ms_max": max(p99s),
        "p50_ms_median": median([run["all"]["p50_ms"] for run in runs]),
        "in_process": local,
        "machine": machine(),
    }


# -- main --------------------------------------------------------------------------------------


def print_function(result: dict[str, Any]) -> None:
    print(
        f"decide() alone: {result['actions']} actions ({result['with_condition']} with a condition), "
        f"{result['customers']:,} customers in memory, {result['calls_per_run']:,} calls per run"
    )
    print(f"  {'run':<6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'mean ms':>8}")
    for number, run in enumerate(result["runs"], start=1):
        print(
            f"  {number:<6} {run['p50_ms']:>8.3f} {run['p90_ms']:>8.3f} {run['p99_ms']:>8.3f} {run['max_ms']:>8.2f} "
            f"{run['mean_ms']:>8.3f}"
        )
    print(
        f"RESULT decide() alone ({result['actions']} actions): median p99 {result['p99_ms_median']:.3f} ms over "
        f"{len(result['runs'])} runs (min {result['p99_ms_min']:.3f}, max {result['p99_ms_max']:.3f}; p50 "
        f"{result['p50_ms_median']:.3f}; target <= 1 ms) | {result['machine']}"
    )


def print_http(result: dict[str, Any]) -> None:
    print(
        f"POST /v1/decide: {result['customers']:,} customers, {result['actions']} actions, {result['rate']:,.0f}/s "
        f"open loop, {result['seconds']:.0f} s per run, processor {'on' if result['processor'] else 'off'}"
    )
    print(f"  {'what':<34} {'n':>7} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")

    def row(label: str, figures: dict[str, float]) -> None:
        print(
            f"  {label:<34} {figures['n']:>7,} {figures['p50_ms']:>8.2f} {figures['p90_ms']:>8.2f} "
            f"{figures['p99_ms']:>8.2f} {figures['max_ms']:>8.2f}"
        )

    for number, run in enumerate(result["runs"], start=1):
        row(f"run {number}: all", run["all"])
        for kind, figures in run["by_kind"].items():
            row(f"  {kind}", figures)
        print(
            f"    sent {run['achieved_rate']:,.0f}/s, answered {run['served_rate']:,.0f}/s, {run['errors']} errors; "
            f"{run['cpu']}; first decision after the deploy {run['first_decision_ms']:,.0f} ms"
        )
    if result["in_process"] is not None:
        row("in-process DecisionService: all", result["in_process"]["all"])
        for kind, figures in result["in_process"]["by_kind"].items():
            row(f"  {kind}", figures)
    print(
        f"RESULT decide over HTTP ({result['customers']:,} customers, {result['actions']} actions, "
        f"{result['rate']:,.0f}/s open loop): median p99 {result['p99_ms_median']:.2f} ms over {len(result['runs'])} "
        f"runs (min {result['p99_ms_min']:.2f}, max {result['p99_ms_max']:.2f}; p50 {result['p50_ms_median']:.2f}; "
        f"target <= 10 ms) | {result['machine']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["function", "http"], required=True)
    parser.add_argument("--runs", type=int, default=None, help="repetitions (function: 5, http: 3)")
    parser.add_argument("--calls", type=int, default=20_000, help="function: decide() calls per run")
    parser.add_argument("--customers-in-memory", type=int, default=5_000, help="function: generated customers")
    parser.add_argument("--customers", type=int, default=1_000_000, help="http: customers to seed")
    parser.add_argument("--history", type=int, default=50_000, help="http: customers given decisions and answers")
    parser.add_argument("--data-dir", type=Path, help="http: build the store here (must not exist), or --reuse it")
    parser.add_argument("--keep", action="store_true", help="http: keep --data-dir afterwards")
    parser.add_argument("--reuse", action="store_true", help="http: measure a --data-dir built before (--keep)")
    parser.add_argument("--rate", type=float, default=1000.0, help="http: decisions per second (open loop)")
    parser.add_argument("--seconds", type=float, default=30.0, help="http: measured seconds per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="http: seconds sent before measuring")
    parser.add_argument("--connections", type=int, default=64, help="http: keep-alive connections in the pool")
    parser.add_argument("--processor", action="store_true", help="http: run the processor beside the server")
    parser.add_argument(
        "--in-process-requests", type=int, default=5000, help="http: requests through the service (0: none)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.part == "function":
        args.runs = args.runs or 5
        result = function_part(args)
    else:
        args.runs = args.runs or 3
        result = http_part(args, parser)
    if args.json:
        print(json.dumps(result, indent=2))
    elif args.part == "function":
        print_function(result)
    else:
        print_http(result)


if __name__ == "__main__":
    main()
