"""A person's consent and its history (docs/privacy.md, "Consent"): per purpose, what
they said (or the default that applies when they said nothing), and every event that
changed it — when, through which channel and source, and what it said. Consent is the
``traits.<consent trait>`` map of purpose → yes/no that any ``identify`` sets
(docs/contact-policy.md); the history is read from the person's own events, so it
holds whatever they said in every channel, merged identities included."""

from __future__ import annotations

from typing import Any, Final

from polku.engine.profile_views import MAX_TIMELINE_PAGE, ProfileViews, parse_cursor
from polku.engine.runtime import WorkspaceRuntime

MAX_SCANNED_EVENTS: Final = 100_000


def consent_view(views: ProfileViews, workspace: str, runtime: WorkspaceRuntime, customer_id: str) -> dict[str, Any]:
    policy = runtime.policy
    trait = policy.consent_trait
    profile = views.profile_json(workspace, runtime, customer_id, 0)
    given = profile["traits"].get(trait)
    said: dict[str, Any] = given if isinstance(given, dict) else {}
    purposes = sorted({*policy.consent_defaults, *(str(purpose) for purpose in said)})
    history, complete = _history(views, workspace, customer_id, trait)
    return {
        "customer_id": customer_id,
        "trait": trait,
        "purposes": {
            purpose: {"given": said.get(purpose), "default": policy.consent_defaults.get(purpose, False)}
            for purpose in purposes
        },
        "history": history,
        "history_complete": complete,
    }


def _history(views: ProfileViews, workspace: str, customer_id: str, trait: str) -> tuple[list[dict[str, Any]], bool]:
    """The events that set the consent trait, newest first, and whether the scan of
    the person's events was whole (at most ``MAX_SCANNED_EVENTS``)."""
    found: list[dict[str, Any]] = []
    scanned = 0
    before = None
    while scanned < MAX_SCANNED_EVENTS:
        page = views.timeline(workspace, customer_id, before=before, limit=MAX_TIMELINE_PAGE)
        scanned += len(page["events"])
        for item in page["events"]:
            said = (item.get("traits") or {}).get(trait)
            if isinstance(said, dict):
                found.append(
                    {
                        "at": item["timestamp"],
                        "channel": item["channel"],
                        "source": item.get("source"),
                        "message_id": item.get("message_id"),
                        "identifier": item.get("identifier"),
                        "consent": said,
                    }
                )
        if page["next_cursor"] is None:
            return found, True
        before = parse_cursor(page["next_cursor"])
    return found, False
