"""``POST /v1/decide`` behind the HTTP edge (docs/decisions.md): find the customer,
read what the decision needs from the processor's state in one trip to a reader
thread (profile, accounts, journey state, open in-app surveys), run the pure
arbitration (``polku.core.decisions``), and log the decision as the customer's
``Decision Made`` event — not awaited: the answer does not wait for the log's
fsync; the event is written within milliseconds, and a crash in between loses an
impression count, never an acknowledged event.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from polku.adapters.sqlite import survey_store
from polku.core.action_spec import Catalogue, load_catalogue
from polku.core.decisions import ActionMemory, Candidate, Decision, Request, decide
from polku.core.errors import InvalidInput, NotFound
from polku.core.journey_state import JourneyState, account_holder
from polku.core.profile import condition_view
from polku.core.survey_tokens import make_token
from polku.engine.decision_feedback import DECISION_EVENT, HANDOVER_EVENT
from polku.engine.journey_reports import journey_state
from polku.engine.profile_views import ProfileViews
from polku.engine.runtime import WorkspaceRuntime, customer_event
from polku.ports import AppendBatch, Catalog, EventLog

log = logging.getLogger("polku.decisions")
CATALOGUE_ID: Final = "catalogue"
REFRESH_S: Final = 1.0
"""How stale the catalogue and the learned counters may be in a decision."""
MAX_LIMIT: Final = 20
MAX_CONTEXT_KEYS: Final = 32
IDENTIFIER_KINDS: Final = ("customer_id", "user_id", "anonymous_id", "email", "phone")


@dataclass(frozen=True)
class DecideRequest:
    workspace: str
    kind: str
    value: str
    request: Request


def parse_request(workspace: str, body: Any) -> DecideRequest:
    """``{identifier: {user_id: …}, channel, placement, context, limit}``; errors name the field."""
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object", field="body")
    identifier = body.get("identifier")
    if isinstance(identifier, dict) and len(identifier) == 1:
        ((kind, value),) = identifier.items()
    elif isinstance(body.get("customer_id"), str):
        kind, value = "customer_id", body["customer_id"]
    else:
        raise InvalidInput(
            'name the customer: "identifier": {"user_id": "…"} (or email, phone, anonymous_id, customer_id)',
            field="identifier",
        )
    if not isinstance(kind, str) or not isinstance(value, str) or not 0 < len(value) <= 256:
        raise InvalidInput("the identifier's value must be text of 1-256 characters", field="identifier")
    channel = body.get("channel")
    if not isinstance(channel, str) or not 0 < len(channel) <= 64:
        raise InvalidInput("channel is required: web, app, chat, agent, email …", field="channel")
    placement = body.get("placement")
    if placement is not None and (not isinstance(placement, str) or len(placement) > 64):
        raise InvalidInput("placement must be text (at most 64 characters)", field="placement")
    context = body.get("context") or {}
    if not isinstance(context, dict) or len(context) > MAX_CONTEXT_KEYS:
        raise InvalidInput(f"context must be an object of at most {MAX_CONTEXT_KEYS} keys", field="context")
    for key, item in context.items():
        if not isinstance(item, str | int | float | bool) or (isinstance(item, str) and len(item) > 256):
            raise InvalidInput(f"context.{key} must be a short text, number or boolean", field=f"context.{key}")
    limit = body.get("limit", 3)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit must be 1-{MAX_LIMIT}", field="limit")
    return DecideRequest(workspace, kind, value, Request(channel, placement, dict(context), limit))


class DecisionService:
    def __init__(
        self,
        catalog: Catalog,
        log_: EventLog,
        run: Callable[[Callable[[ProfileViews], Any]], Awaitable[Any]],
        clock: Callable[[], int],
    ) -> None:
        self.catalog = catalog
        self.log = log_
        self.run = run
        self.clock = clock
        self._catalogues: dict[str, tuple[float, Catalogue | None]] = {}
        self._loading: dict[str, asyncio.Lock] = {}
        self._stats: dict[str, tuple[float, dict[tuple[str, str], tuple[int, int]]]] = {}
        self._secret: bytes | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def catalogue(self, workspace: str) -> Catalogue | None:
        """The workspace's active catalogue, re-checked every second. One request
        loads it while the others wait for that load (after a deploy, a burst of
        first decisions must not compile it once each), in a thread (compiling 200
        actions takes most of a second, and the event loop serves meanwhile)."""
        cached = self._catalogues.get(workspace)
        if cached is not None and time.monotonic() - cached[0] < REFRESH_S:
            return cached[1]
        lock = self._loading.setdefault(workspace, asyncio.Lock())
        async with lock:
            cached = self._catalogues.get(workspace)
            now = time.monotonic()
            if cached is not None and now - cached[0] < REFRESH_S:
                return cached[1]
            try:
                stored = await self.catalog.definition("actions", workspace, CATALOGUE_ID)
            except NotFound:
                self._catalogues[workspace] = (now, None)
                return None
            current = cached[1] if cached is not None else None
            if stored.status != "active":
                current = None
            elif current is None or current.version != stored.version:
                current = await asyncio.to_thread(load_catalogue, stored.body, version=stored.version)
            self._catalogues[workspace] = (time.monotonic(), current)
            return current

    def forget(self, workspace: str) -> None:
        self._catalogues.pop(workspace, None)

    async def decide(self, runtime: WorkspaceRuntime, call: DecideRequest) -> dict[str, Any]:
        catalogue = await self.catalogue(call.workspace)
        if catalogue is None:
            raise NotFound("this workspace has no action catalogue; deploy one: PUT /v1/actions")
        decision_id = "d_" + os.urandom(10).hex()
        now = self.clock()
        stats = self._cached_stats(call.workspace)

        def work(
            views: ProfileViews,
        ) -> tuple[Decision, str, dict[str, Any] | None, dict[tuple[str, str], tuple[int, int]]]:
            nonlocal stats
            if stats is None:
                stats = {
                    key: (offers, accepts)
                    for key, (offers, accepts, _) in survey_store.action_stats(views.reports, call.workspace).items()
                }
            customer_id = views.find(call.workspace, runtime, call.kind, call.value)
            profile = views.state.profile(call.workspace, customer_id)
            if profile is None:
                raise NotFound(f"customer {call.value!r} does not exist")
            accounts = views.state.accounts(call.workspace, list(profile.accounts))
            view = condition_view(
                profile,
                runtime.attributes.values(profile.attributes, now),
                {account_id: account.trait_values() for account_id, account in accounts.items()},
                now,
            )
            state = journey_state(views.reports, call.workspace, customer_id) or JourneyState()
            account_sent = {
                account_id: (
                    journey_state(views.reports, call.workspace, account_holder(account_id)) or JourneyState()
                ).sent
                for account_id in sorted(profile.accounts)
            }
            competing = self._in_app(views, call.workspace, customer_id, state, catalogue, now)
            decision = decide(
                catalogue,
                workspace=call.workspace,
                customer_id=customer_id,
                decision_id=decision_id,
                request=call.request,
                view=view,
                policy=runtime.policy,
                sent=state.sent,
                account_sent=account_sent,
                memory={action: msgspec.convert(memory, ActionMemory) for action, memory in state.actions.items()},
                stats=stats,
                competing=competing,
                now_ms=now,
            )
            summary = views.context(call.workspace, runtime, customer_id, now) if decision.handover else None
            return decision, customer_id, summary, stats

        decision, customer_id, summary, stats = await self.run(work)
        self._stats.setdefault(call.workspace, (time.monotonic(), stats))
        request = call.request
        shown = decision.shown()
        purposes = {
            action: catalogue.by_id[action].spec.purpose
            for action in shown
            if catalogue.by_id[action].spec.purpose not in ("service", "transactional")
        }
        impression = {
            "decision": decision.id,
            "actions": shown,
            "group": decision.group,
            "holdout": decision.holdout,
            "placement": request.placement,
            "purposes": purposes,
            "catalogue_version": catalogue.version,
        }
        events = [
            customer_event(
                DECISION_EVENT,
                customer_id,
                now,
                f"decision|{decision.id}",
                impression,
                request.channel,
                interaction=False,
            )
        ]
        answer: dict[str, Any] = {
            "decision": decision.id,
            "customer_id": customer_id,
            "channel": request.channel,
            "placement": request.placement,
            "holdout": decision.holdout,
            "group": decision.group,
            "actions": [candidate.as_dict() for candidate in decision.ranked],
            "excluded": decision.excluded,
        }
        if request.channel == "chat":
            answer["self_service"] = [candidate.as_dict() for candidate in decision.self_service]
            answer["handover"] = {"required": bool(decision.handover), "reasons": decision.handover, "summary": summary}
            if decision.handover and summary is not None:
                text = handover_text(request.context.get("intent"), decision.handover, summary)
                answer["handover"]["note"] = text
                events.append(
                    customer_event(
                        HANDOVER_EVENT,
                        customer_id,
                        now,
                        f"handover|{decision.id}",
                        {"decision": decision.id, "reasons": decision.handover, "summary": text},
                        request.channel,
                        interaction=False,
                    )
                )
        task = asyncio.create_task(self._log(call.workspace, events, now))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return answer

    def _cached_stats(self, workspace: str) -> dict[tuple[str, str], tuple[int, int]] | None:
        cached = self._stats.get(workspace)
        if cached is None or time.monotonic() - cached[0] >= REFRESH_S:
            self._stats.pop(workspace, None)
            return None
        return cached[1]

    def _in_app(
        self, views: ProfileViews, workspace: str, customer_id: str, state: JourneyState, catalogue: Catalogue, now: int
    ) -> list[Candidate]:
        """Queued in-app journey messages and open in-app surveys, as candidates."""
        value = catalogue.spec.in_app_value
        found = [
            Candidate(
                id=f"message:{message.key}",
                kind="message",
                score=value,
                value=value,
                treatment={
                    "subject": message.subject,
                    "body": message.body,
                    "payload": message.payload,
                    "journey": message.journey,
                    "step": message.step,
                },
                reasons=(f"queued by journey {message.journey} step {message.step}", f"in-app value {value:g}"),
            )
            for message in state.inbox
            if message.expires_ms > now
        ]
        if self._secret is None:
            self._secret = views.state.survey_secret()
        for record, answered in survey_store.invitations(
            views.reports, workspace, customer_ids=[customer_id], status="sent", channel="in_app", limit=5
        ):
            if answered or record.expires_ms <= now:
                continue
            token = make_token(self._secret, record.id, record.expires_ms)
            found.append(
                Candidate(
                    id=f"survey:{record.id}",
                    kind="survey",
                    score=value,
                    value=value,
                    treatment={
                        "survey": record.survey,
                        "invitation": record.id,
                        "token": token,
                        "answer": f"/v1/invitations/{token}",
                    },
                    reasons=(f"open in-app survey {record.survey}", f"in-app value {value:g}"),
                )
            )
        return found

    async def _log(self, workspace: str, events: list[Any], now: int) -> None:
        try:
            await self.log.append(AppendBatch(workspace=workspace, source="decisions", received_ms=now, events=events))
        except Exception:
            log.exception("workspace %s: a decision's impression could not be logged", workspace)

    async def drain(self) -> None:
        """Wait for the impressions still being written (shutdown, tests)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)


def handover_text(intent: Any, reasons: list[str], summary: dict[str, Any]) -> str:
    """The agent's note: who, why the bot hands over, what they just tried."""
    who = (summary.get("who") or {}).get("name") or summary.get("customer_id")
    likely = summary.get("likely_reason") or {}
    recent = ", ".join(
        f"{item.get('name') or item.get('type')} ({item.get('channel')})"
        for item in (summary.get("recent_events") or [])[:5]
    )
    parts = [f"Chat hand-over for {who}: {', '.join(reasons)}."]
    if intent:
        parts.append(f"Intent: {intent}.")
    if likely:
        parts.append(f"Likely reason: {likely.get('event') or likely.get('name')} on {likely.get('channel')}.")
    if recent:
        parts.append(f"Recently: {recent}.")
    return " ".join(parts)
