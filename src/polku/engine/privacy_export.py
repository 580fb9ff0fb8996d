"""The right of access (docs/privacy.md): everything polku holds about one person,
as one JSON document — what they sent and what polku derived from it (identity,
traits, computed attributes, segments, consent and the contact policy's verdicts,
accounts, journeys and their transitions, messages, survey invitations and answers,
decisions and actions offered, agent notes).

Reads only, through ``ProfileViews``, so it is the same on the embedded and the
scale-out deployments. Every event is included, newest first, up to
``MAX_EXPORT_EVENTS``; beyond that the export says it was cut (``events_complete``)
rather than answer with a document no client can hold."""

from __future__ import annotations

from typing import Any, Final

import msgspec

from polku.adapters.sqlite import survey_store
from polku.core.events import format_millis
from polku.core.journey_state import JourneyState
from polku.engine.consent_views import consent_view
from polku.engine.journey_reports import agent_notes, customer_journeys, customer_messages
from polku.engine.profile_views import MAX_TIMELINE_PAGE, ProfileViews, parse_cursor
from polku.engine.runtime import WorkspaceRuntime

EXPORT_FORMAT: Final = 1
MAX_EXPORT_EVENTS: Final = 100_000
MAX_EXPORT_ROWS: Final = 10_000
"""Per derived list (journey transitions, messages, invitations, answers)."""


def export_person(
    views: ProfileViews, workspace: str, runtime: WorkspaceRuntime, customer_id: str, now_ms: int
) -> dict[str, Any]:
    """The document for ``customer_id`` (the live id: resolve merged ones first)."""
    profile = views.profile_json(workspace, runtime, customer_id, now_ms)
    events, complete = _all_events(views, workspace, customer_id)
    reports = views.reports
    merged = survey_store.merged_ids(reports, workspace, customer_id)
    invitations = survey_store.invitations(reports, workspace, customer_ids=merged, limit=MAX_EXPORT_ROWS)
    state = views.state.journey_state(workspace, customer_id) or JourneyState()
    return {
        "format": EXPORT_FORMAT,
        "exported_at": format_millis(now_ms),
        "workspace": workspace,
        "customer_id": customer_id,
        "merged_customer_ids": merged[1:],
        "profile": profile,
        "consent_and_policy": views.policy(workspace, runtime, customer_id, now_ms),
        "consent_history": consent_view(views, workspace, runtime, customer_id)["history"],
        "events": events,
        "events_complete": complete,
        "journeys": customer_journeys(
            reports, workspace, customer_id, [a["id"] for a in profile["accounts"]], journey=None, limit=1000
        ),
        "messages": customer_messages(reports, workspace, customer_id, now_ms, journey=None, limit=1000)["messages"],
        "survey_invitations": [
            msgspec.to_builtins(record) | {"answered": answered} for record, answered in invitations
        ],
        "survey_answers": _answers(reports, workspace, merged),
        "decisions": msgspec.to_builtins(state.decisions),
        "actions": msgspec.to_builtins(state.actions),
        "in_app_inbox": msgspec.to_builtins(state.inbox),
        "notes": agent_notes(reports, workspace, customer_id),
    }


def _all_events(views: ProfileViews, workspace: str, customer_id: str) -> tuple[list[dict[str, Any]], bool]:
    """Every timeline entry with its event (newest first), and whether all fit."""
    found: list[dict[str, Any]] = []
    before = None
    while len(found) < MAX_EXPORT_EVENTS:
        page = views.timeline(workspace, customer_id, before=before, limit=MAX_TIMELINE_PAGE)
        found.extend(page["events"])
        if page["next_cursor"] is None:
            return found, True
        before = parse_cursor(page["next_cursor"])
    return found[:MAX_EXPORT_EVENTS], False


def _answers(reports: Any, workspace: str, customer_ids: list[str]) -> list[Any]:
    """The person's survey answers (feedback rows), newest first, under any of the ids
    they had when they answered."""
    if not customer_ids:
        return []
    marks = ", ".join("?" * len(customer_ids))
    rows = reports.execute(
        f"SELECT body FROM feedback WHERE workspace = ? AND customer_id IN ({marks}) ORDER BY ts_ms DESC LIMIT ?",
        [workspace, *customer_ids, MAX_EXPORT_ROWS],
    ).fetchall()
    return [msgspec.json.decode(bytes(body)) for (body,) in rows]
