"""Customers: find anyone by any identifier, and the agent view of one customer —
the likely reason they are in touch, who they are, what they did across channels,
their consent and what the contact policy would decide, their journeys, messages,
notes, feedback and purchases. The same engine reads as ``GET /v1/profiles/…``
and ``polku profiles``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final
from urllib.parse import quote

import msgspec
from starlette.responses import RedirectResponse, Response

from polku.adapters.sqlite import survey_store
from polku.adapters.sqlite.deliveries import deliveries
from polku.core.errors import InvalidInput, NotFound
from polku.core.events import format_millis
from polku.core.workspace import Credential
from polku.dashboard.frame import View, page_route
from polku.engine.erasure import DEFAULT_WAIT_S
from polku.engine.journey_reports import customer_journeys, customer_messages
from polku.engine.profile_views import ProfileViews, parse_cursor
from polku.engine.runtime import WorkspaceRuntime
from polku.engine.worker import wall_clock_ms
from polku.web.audit import AUDIT_ACTION_KEY
from polku.web.auth import CREDENTIAL_KEY

MAX_QUERY: Final = 512
TIMELINE_PAGE: Final = 50
RECENT_CUSTOMERS: Final = 20
SHOWN_PROPERTIES: Final = 8
SHOWN_VALUE: Final = 80
SHOWN_MESSAGES: Final = 10


def compact_properties(properties: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """An event's properties as short ``(name, value)`` texts."""
    shown = []
    for name, value in list((properties or {}).items())[:SHOWN_PROPERTIES]:
        text = value if isinstance(value, str) else msgspec.json.encode(value).decode()
        shown.append((str(name), text if len(text) <= SHOWN_VALUE else text[: SHOWN_VALUE - 1] + "…"))
    return shown


# -- finding customers ------------------------------------------------------------


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
    recent = await view.profiles.run(lambda views: views.recent(workspace, RECENT_CUSTOMERS))
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


def verdict_view(verdict: Mapping[str, Any]) -> dict[str, Any]:
    """An engine verdict (``policy_views.verdict_json``) in words, with its tone."""
    if verdict["kind"] == "send":
        return {**verdict, "text": "would go now", "tone": "good"}
    if verdict["kind"] == "hold":
        until = datetime.fromisoformat(verdict["until"] or format_millis(0)).strftime("%d %b %H:%M UTC")
        return {**verdict, "text": f"held until {until}", "tone": "warn"}
    return {**verdict, "text": f"not sent: {verdict['reason']}", "tone": "bad"}


def policy_view(policy: dict[str, Any]) -> dict[str, Any]:
    """``GET /v1/profiles/{id}/policy``'s answer with each verdict in words."""
    purposes = [{**row, "verdicts": [verdict_view(v) for v in row["verdicts"]]} for row in policy["purposes"]]
    return {**policy, "purposes": purposes}


def open_invitations(views: ProfileViews, workspace: str, customer_id: str, now_ms: int) -> list[dict[str, Any]]:
    """Survey invitations sent to the customer, not answered and not expired."""
    connection = views.sql
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
    connection = views.sql
    journeys = customer_journeys(connection, workspace, live, list(profile.accounts), limit=10)
    messages = customer_messages(connection, workspace, live, now_ms, limit=SHOWN_MESSAGES)
    return {
        "context": context,
        "timeline": timeline,
        "segments": {name: format_millis(ms) for name, ms in sorted(profile.segments.items())},
        "events": profile.events,
        "journeys": journeys,
        "messages": messages,
        "policy": policy_view(views.policy(workspace, runtime, live, now_ms)),
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
        can_erase=_holds(view, "privacy"),
    )


def _holds(view: View, scope: str) -> bool:
    credential: Credential | None = view.request.scope.get(CREDENTIAL_KEY)
    return credential is not None and scope in credential.scopes


async def erase_customer(view: View) -> Response:
    """``POST /ui/customers/{id}/erase``: the right to be forgotten from the agent
    view (the ``privacy`` scope): as ``DELETE /v1/profiles/{id}``, then back to the
    search with the receipt's id."""
    form = await view.form(scope="privacy")
    workspace = view.workspace
    runtime = await view.profiles.runtime(workspace)
    given = view.request.path_params["customer_id"]
    customer_id = await view.profiles.run(lambda views: views.find(workspace, runtime, "customer_id", given))
    suppress = form.get("suppress") == "1"
    erasure, receipt = await view.profiles.erase(
        view.services.log, workspace, customer_id, suppress=suppress, wait_s=DEFAULT_WAIT_S
    )
    view.request.scope[AUDIT_ACTION_KEY] = f"POST /ui/customers/[{erasure}]/erase"
    status = receipt.status if receipt is not None else "requested"
    return view.back(
        "/ui/customers",
        notice=f"Erasure {erasure}: {status}. The receipt: GET /v1/erasures/{erasure} or polku privacy erasures.",
    )


routes = [
    page_route("/ui/customers", customers_page),
    page_route("/ui/customers/{customer_id}", customer_page),
    page_route("/ui/customers/{customer_id}/erase", erase_customer, methods=("POST",)),
]
