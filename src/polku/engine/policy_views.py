"""What the contact policy would decide for a customer now: per purpose, their
consent (given, or the default) and the verdict for a message on each channel — the
same ``Policy.check`` a journey's action makes. ``GET /v1/profiles/{id}/policy``,
``polku profiles policy`` and the dashboard's agent view read it."""

from __future__ import annotations

from typing import Any, Final

from polku.adapters.postgres.state_store import PostgresStateStore
from polku.adapters.sqlite.state_store import StateReads
from polku.core.events import format_millis
from polku.core.journey_state import JourneyState, account_holder
from polku.core.policy import Verdict
from polku.core.profile import Profile, condition_view
from polku.engine.runtime import WorkspaceRuntime

BUILT_IN_CHANNELS: Final = ("in_app",)
"""Channels polku delivers itself that the contact policy checks (``agent_note`` is exempt)."""


def verdict_json(verdict: Verdict) -> dict[str, Any]:
    """``send``; ``hold`` until a moment (and why); ``skip`` and why."""
    return {
        "kind": verdict.kind,
        "reason": verdict.reason or None,
        "until": format_millis(verdict.until_ms) if verdict.kind == "hold" and verdict.until_ms else None,
    }


def contact_policy(
    state: StateReads | PostgresStateStore, workspace: str, runtime: WorkspaceRuntime, profile: Profile, now_ms: int
) -> dict[str, Any]:
    """Every purpose the consent defaults, the customer's consent trait and the
    policy's caps, suppression rules and quiet hours name, with the consent given
    (``None``: the default applies) and the verdicts now. Channels with the same
    verdict are listed together (``every``: it is the verdict on every channel)."""
    policy = runtime.policy
    traits = {name: value[0] for name, value in profile.traits.items()}
    given = traits.get(policy.consent_trait)
    consent: dict[str, Any] = given if isinstance(given, dict) else {}
    config = policy.config
    named = [*(cap.purposes or [] for cap in config.caps), *(rule.purposes or [] for rule in config.suppress)]
    if config.quiet_hours is not None:
        named.append(config.quiet_hours.purposes or [])
    purposes = sorted({*policy.consent_defaults, *(str(p) for p in consent), *(p for group in named for p in group)})
    accounts = state.accounts(workspace, list(profile.accounts))
    account_traits = {a: (accounts[a].trait_values() if a in accounts else None) for a in profile.accounts}
    view = condition_view(profile, runtime.attributes.values(profile.attributes, now_ms), account_traits, now_ms)
    sent = (state.journey_state(workspace, profile.customer_id) or JourneyState()).sent
    account_sent = {}
    if any(cap.account for cap in policy.caps):
        account_sent = {
            account: (state.journey_state(workspace, account_holder(account)) or JourneyState()).sent
            for account in sorted(profile.accounts)
        }
    channels = [*runtime.channel_types, *(c for c in BUILT_IN_CHANNELS if c not in runtime.channel_types)]
    rows = []
    for purpose in purposes:
        verdicts: dict[Verdict, list[str]] = {}
        for channel in channels:
            verdict = policy.check(
                channel=channel, purpose=purpose, view=view, sent=sent, account_sent=account_sent, now_ms=now_ms
            )
            verdicts.setdefault(verdict, []).append(channel)
        rows.append(
            {
                "purpose": purpose,
                "given": consent.get(purpose),
                "default": policy.consent_defaults.get(purpose, False),
                "verdicts": [
                    {**verdict_json(verdict), "channels": names, "every": len(verdicts) == 1}
                    for verdict, names in verdicts.items()
                ],
            }
        )
    return {"trait": policy.consent_trait, "consent": given, "channels": channels, "purposes": rows}
