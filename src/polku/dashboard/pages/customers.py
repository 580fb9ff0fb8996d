"""Customers: find anyone by any identifier, and the agent view of one customer —
the likely reason they are in touch, who they are, what they did across channels,
their consent and what the contact policy would decide, their journeys, messages,
notes, feedback and purchases. The same engine reads as ``GET /v1/profiles/…``
and ``polku profiles``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

import msgspec
from starlette.responses import RedirectResponse, Response

from polku.adapters.sqlite import survey_store
from polku.adapters.sqlite.deliveries import deliveries
from polku.core.errors import InvalidInput, NotFound
from polku.core.events import SYSTEM_CHANNEL, format_millis
from polku.core.journey_state import JourneyState, account_holder
from polku.core.policy import Verdict
from polku.core.profile import Profile, condition_view
from polku.dashboard.frame import View, page_route
from polku.engine.journey_reports import customer_journeys, customer_messages, journey_state
from polku.engine.profile_views import ProfileViews, parse_cursor
from polku.engine.runtime import WorkspaceRuntime
from polku.engine.worker import wall_clock_ms

MAX_QUERY: Final = 512
TIMELINE_PAGE: Final = 50
RECENT_CUSTOMERS: Final = 20
RECENT_SCAN: Final = 400
"""Log entries (newest first) read to find the recently active customers."""
SHOWN_PROPERTIES: Final = 8
SHOWN_VALUE: Final = 80
SHOWN_MESSAGES: Final = 10
BUILT_IN_CHANNELS: Final = ("in_app",)
"""Channels polku delivers itself that the contact policy checks (``agent_note`` is exempt)."""


def compact_properties(properties: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """An event's properties as short ``(name, value)`` texts."""
    shown = []
    for name, value in list((properties or {}).items())[:SHOWN_PROPERTIES]:
        text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
        shown.append((str(name), text if len(text) <= SHOWN_VALUE else text[: SHOWN_VALUE - 1] + "…"))
    return shown


def display_name(traits: Mapping[str, Any]) -> str | None:
    """The name the agent view shows (``name``, else first and last name)."""
    name = traits.get("name") or " ".join(str(traits[k]) for k in ("first_name", "last_name") if traits.get(k))
    return str(name) if name else None


# -- finding customers ------------------------------------------------------------


def recent_customers(views: ProfileViews, workspace: str, limit: int = RECENT_CUSTOMERS) -> list[dict[str, Any]]:
    """The customers behind the newest processed events of the log, newest first:
    a short list to start from (cheap: one backwards read of the log's tail)."""
    rows = views.log.connection.execute(
        "SELECT user_id, anonymous_id, ts_ms, channel, type, name FROM events "
        "WHERE seq <= ? AND workspace = ? ORDER BY seq DESC LIMIT ?",
        (views.state.checkpoint(), workspace, RECENT_SCAN),
    ).fetchall()
    seen: dict[str, dict[str, Any]] = {}
    looked_up: dict[str, str | None] = {}
    for user_id, anonymous_id, ts_ms, channel, kind, name in rows:
        if channel == SYSTEM_CHANNEL or not (user_id or anonymous_id):
            continue
        identifier = f"user_id:{user_id}" if user_id else f"anonymous_id:{anonymous_id}"
        if identifier not in looked_up:
            record = views.state.identifier(workspace, identifier)
            looked_up[identifier] = views.state.redirect(workspace, record.customer_id) if record else None
        customer_id = looked_up[identifier]
        if customer_id is None or customer_id in seen:
            continue
        seen[customer_id] = {"customer_id": customer_id, "event": name or kind, "channel": channel, "at": ts_ms}
        if len(seen) >= limit:
            break
    profiles = views.state.profiles(workspace, list(seen))
    found: list[dict[str, Any]] = []
    for customer_id, item in seen.items():
        profile = profiles.get(customer_id)
        if profile is None:
            continue
        traits = {name: value[0] for name, value in profile.traits.items()}
        identifiers = sorted(identifier.partition(":")[2] for identifier in profile.identifiers)
        found.append(
            {
                **item,
                "at": format_millis(item["at"]),
                "name": display_name(traits),
                "contact": next(
                    (i.partition(":")[2] for i in sorted(profile.identifiers) if i.startswith(("email:", "phone:"))),
                    identifiers[0] if identifiers else customer_id,
                ),
            }
        )
    return sorted(found, key=lambda item: item["at"], reverse=True)


def _kinds(runtime: WorkspaceRuntime) -> str:
    """The identifier types in words: ``user id, anonymous id, email or phone``."""
    kinds = [kind.replace("_", " ") for kind in runtime.rules.types()]
    return ", ".join(kinds[:-1]) + " or " + kinds[-1] if len(kinds) > 1 else kinds[0]


async def customers_page(view: View) -> Response:
    """``/ui/customers``: the search form; ``?q=`` finds a customer by any identifier."""
    query = (view.request.query_params.get("q") or "").strip()
    workspace = view.workspace
    runtime = await view.profiles.runtime(workspace)
    problem: str | None = None
    if query:
        if len(query) > MAX_QUERY:
            problem = f"That is longer than {MAX_QUERY} characters; no identifier is that long."
        else:
            try:
                live = await view.profiles.run(lambda views: views.find_any(workspace, runtime, query))
            except NotFound as error:
                problem = (
                    f"No customer has “{query}” as their {_kinds(runtime)}."
                    if error.message.startswith("no customer has an identifier")
                    else error.message[:1].upper() + error.message[1:] + "."
                )
            except InvalidInput as error:
                problem = f"No customer has “{query}”: {error.message}."
            else:
                return RedirectResponse(f"/ui/customers/{quote(live, safe='')}", status_code=303)
    return await search_page(view, runtime, query=query, problem=problem)


async def search_page(
    view: View, runtime: WorkspaceRuntime, *, query: str = "", problem: str | None = None, missing_id: str | None = None
) -> Response:
    """The search form, what went wrong with the last search, and recent customers."""
    workspace = view.workspace
    recent = await view.profiles.run(lambda views: recent_customers(views, workspace))
    title = "Customer not found" if missing_id else f"No customer found: {query[:60]}" if problem else "Customers"
    return view.render(
        "pages/customers.html",
        status=404 if missing_id else 200,
        title=title,
        area="customers",
        query=query,
        problem=problem,
        missing_id=missing_id,
        kinds=runtime.rules.types(),
        phone_region=runtime.rules.phone_region,
        recent=recent,
    )


# -- one customer ---------------------------------------------------------------------


def verdict_view(verdict: Verdict) -> dict[str, Any]:
    if verdict.kind == "send":
        return {"kind": "send", "text": "would go now", "tone": "good"}
    if verdict.kind == "hold":
        until = datetime.fromtimestamp(verdict.until_ms / 1000, UTC).strftime("%d %b %H:%M UTC")
        return {"kind": "hold", "text": f"held until {until}", "tone": "warn"}
    return {"kind": "skip", "text": f"not sent: {verdict.reason}", "tone": "bad"}


def contact_policy(
    views: ProfileViews, workspace: str, runtime: WorkspaceRuntime, profile: Profile, now_ms: int
) -> dict[str, Any]:
    """Per purpose: the customer's consent (given, or the default) and what the
    contact policy would decide for a message on each channel now — the same
    ``Policy.check`` a journey's action makes."""
    policy = runtime.policy
    traits = {name: value[0] for name, value in profile.traits.items()}
    given = traits.get(policy.consent_trait)
    consent: dict[str, Any] = given if isinstance(given, dict) else {}
    config = policy.config
    named = [*(cap.purposes or [] for cap in config.caps), *(rule.purposes or [] for rule in config.suppress)]
    if config.quiet_hours is not None:
        named.append(config.quiet_hours.purposes or [])
    purposes = sorted({*policy.consent_defaults, *(str(p) for p in consent), *(p for group in named for p in group)})
    accounts = views.state.accounts(workspace, list(profile.accounts))
    account_traits = {a: (accounts[a].trait_values() if a in accounts else None) for a in profile.accounts}
    view = condition_view(profile, runtime.attributes.values(profile.attributes, now_ms), account_traits, now_ms)
    connection = views.state.connection
    sent = (journey_state(connection, workspace, profile.customer_id) or JourneyState()).sent
    account_sent = {}
    if any(cap.account for cap in policy.caps):
        account_sent = {
            account: (journey_state(connection, workspace, account_holder(account)) or JourneyState()).sent
            for account in sorted(profile.accounts)
        }
    channels = [*runtime.channel_types, *(c for c in BUILT_IN_CHANNELS if c not in runtime.channel_types)]
    rows = []
    for purpose in purposes:
        answer = consent.get(purpose)
        # Channels with the same answer are shown together (usually all of them).
        verdicts: dict[Verdict, list[str]] = {}
        for channel in channels:
            verdict = policy.check(
                channel=channel, purpose=purpose, view=view, sent=sent, account_sent=account_sent, now_ms=now_ms
            )
            verdicts.setdefault(verdict, []).append(channel)
        rows.append(
            {
                "purpose": purpose,
                "given": answer,
                "default": policy.consent_defaults.get(purpose, False),
                "verdicts": [
                    {**verdict_view(verdict), "channels": names, "every": len(verdicts) == 1}
                    for verdict, names in verdicts.items()
                ],
            }
        )
    return {"trait": policy.consent_trait, "channels": channels, "purposes": rows, "raw": given}


def open_invitations(views: ProfileViews, workspace: str, customer_id: str, now_ms: int) -> list[dict[str, Any]]:
    """Survey invitations sent to the customer, not answered and not expired."""
    connection = views.state.connection
    rows = survey_store.invitations(
        connection,
        workspace,
        customer_ids=survey_store.merged_ids(connection, workspace, customer_id),
        status="sent",
        limit=50,
    )
    return [
        {
            "survey": record.survey,
            "channel": record.channel or None,
            "created": format_millis(record.created_ms),
            "expires": format_millis(record.expires_ms),
            "journey": record.journey or None,
        }
        for record, answered in rows
        if not answered and record.expires_ms > now_ms
    ]


def read_customer(
    views: ProfileViews,
    workspace: str,
    runtime: WorkspaceRuntime,
    customer_id: str,
    before: tuple[int, int] | None,
    now_ms: int,
) -> dict[str, Any]:
    """Everything the customer page shows, in one read on the profiles' thread."""
    live = views.find(workspace, runtime, "customer_id", customer_id)
    if live != customer_id:
        return {"redirect": live}
    context = views.context(workspace, runtime, live, now_ms)
    timeline = views.timeline(workspace, live, before=before, limit=TIMELINE_PAGE)
    profile = views.state.profile(workspace, live)
    assert profile is not None  # found above, and this thread reads one snapshot
    connection = views.state.connection
    journeys = customer_journeys(connection, workspace, live, list(profile.accounts), limit=10)
    messages = customer_messages(connection, workspace, live, now_ms, limit=SHOWN_MESSAGES)
    return {
        "context": context,
        "timeline": timeline,
        "segments": {name: format_millis(ms) for name, ms in sorted(profile.segments.items())},
        "events": profile.events,
        "journeys": journeys,
        "messages": messages,
        "policy": contact_policy(views, workspace, runtime, profile, now_ms),
        "invitations": open_invitations(views, workspace, live, now_ms),
    }


async def customer_page(view: View) -> Response:
    """``/ui/customers/{customer_id}``: the agent view."""
    customer_id = view.request.path_params["customer_id"]
    workspace = view.workspace
    before = parse_cursor(view.request.query_params.get("before"))
    runtime = await view.profiles.runtime(workspace)
    now = wall_clock_ms()
    try:
        found = await view.profiles.run(
            lambda views: read_customer(views, workspace, runtime, customer_id, before, now)
        )
    except NotFound:
        return await search_page(view, runtime, missing_id=customer_id)
    if "redirect" in found:
        return RedirectResponse(f"/ui/customers/{quote(found['redirect'], safe='')}", status_code=303)
    context = found["context"]
    sent_keys = {m["key"] for m in found["messages"]["messages"]}
    status_of = {}
    if sent_keys:
        data_dir = view.services.settings.data_dir
        ledger = await asyncio.to_thread(deliveries, data_dir, workspace, customer_id, None, 100)
        status_of = {row["key"]: row for row in ledger if row["key"] in sent_keys}
    who = context["who"]
    return view.render(
        "pages/customer.html",
        title=who["name"] or customer_id,
        area="customers",
        customer_id=customer_id,
        context=context,
        who=who,
        reason=context["likely_reason"],
        reason_properties=compact_properties((context["likely_reason"] or {}).get("properties")),
        lookback=runtime.agent_view.lookback,
        recent=[{**item, "shown": compact_properties(item.get("properties"))} for item in context["recent_events"]],
        timeline=[
            {**item, "shown": compact_properties(item.get("properties") or item.get("traits"))}
            for item in found["timeline"]["events"]
        ],
        next_cursor=found["timeline"]["next_cursor"],
        before=view.request.query_params.get("before"),
        segments=found["segments"],
        events=found["events"],
        journeys=found["journeys"],
        messages=found["messages"],
        deliveries=status_of,
        policy=found["policy"],
        invitations=found["invitations"],
        purchases=[
            {**item, "shown": compact_properties(item.get("properties"))} for item in context["recent_purchases"]
        ],
        traits=sorted((name, compact_properties({name: value})[0][1]) for name, value in who["traits"].items()),
    )


routes = [
    page_route("/ui/customers", customers_page),
    page_route("/ui/customers/{customer_id}", customer_page),
]
