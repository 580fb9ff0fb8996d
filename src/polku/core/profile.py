"""A customer's profile and the pure fold of events into it.

The profile is the smallest sufficient one (PRODUCT.md, scenario 9): identifiers,
traits from ``identify`` calls (last write wins, decided per trait by the event's
timestamp, so the order events arrive in does not matter), the states of the
computed attributes declared in the workspace configuration, when each channel was
last seen, the latest feedback score per metric, accounts and segments. Everything
here is derived from the customer's events: a merge or a rebuild recomputes it by
folding the merged history again (``rebuild``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any, Final

import msgspec

from polku.core.attributes import AttributeSet, EventFacts
from polku.core.events import Event, time_millis
from polku.core.identity import Founder, identifier_type

MAX_TRAITS: Final = 500
"""Distinct trait names kept per customer; later new names are ignored (and counted)."""
FEEDBACK_METRICS: Final = ("csat", "nps", "ces")
FEEDBACK_SCALES: Final = {"csat": (1, 5), "nps": (0, 10), "ces": (1, 7)}


class Profile(msgspec.Struct, kw_only=True, omit_defaults=True):
    customer_id: str
    founder: Founder
    identifiers: list[str] = []
    conflicted: bool = False
    traits: dict[str, tuple[Any, int, int]] = {}
    """name -> (value, timestamp ms, log seq): the newest write by (timestamp, seq) wins."""
    attributes: dict[str, Any] = {}
    """Computed attribute states (``AttributeSet``); read values with ``AttributeSet.values``."""
    segments: dict[str, int] = {}
    """Segments the customer is in -> when they entered (ms)."""
    accounts: dict[str, int] = {}
    """Account ids -> time of the latest ``group`` call that named them."""
    last_seen: dict[str, int] = {}
    """Channel -> latest event time (ms)."""
    feedback: dict[str, tuple[float, int, str, int]] = {}
    """Metric (csat, nps, ces) -> (score, time ms, channel, log seq) of the latest answer."""
    first_seen_ms: int = 0
    last_seen_ms: int = 0
    events: int = 0
    dropped_traits: int = 0
    links: dict[str, tuple[int, str]] = {}
    """Identity links (set hash -> earliest key) already stored: repeats cost nothing."""
    timer_ms: int = 0
    """When the customer's durable timer is due (0: none), so it is written only on change."""


def facts_of(seq: int, event: Event, ts_ms: int | None = None) -> EventFacts:
    return EventFacts(
        seq=seq,
        ts_ms=time_millis(event.timestamp) if ts_ms is None else ts_ms,
        type=event.type,
        name=event.event if event.type == "track" else event.name,
        channel=event.channel,
        properties=event.properties or {},
        context=event.context or {},
        traits=event.traits if event.type == "identify" else None,
    )


def feedback_of(facts: EventFacts, feedback_event: str) -> tuple[str, float] | None:
    """(metric, score) of a feedback event, or ``None``: a ``track`` named
    ``feedback_event`` with ``metric`` csat|nps|ces and a ``score`` on its scale."""
    if facts.type != "track" or facts.name != feedback_event:
        return None
    metric = facts.properties.get("metric")
    score = facts.properties.get("score")
    if not isinstance(metric, str) or isinstance(score, bool) or not isinstance(score, int | float):
        return None
    metric = metric.lower()
    scale = FEEDBACK_SCALES.get(metric)
    if scale is None or not scale[0] <= score <= scale[1]:
        return None
    return metric, score


def apply_event(
    profile: Profile, facts: EventFacts, group_id: str | None, attributes: AttributeSet, feedback_event: str
) -> set[str]:
    """Fold one event into the profile; returns the changed paths (``traits.plan``,
    ``attributes.orders_30d``, ``last_seen.app``, ``feedback.nps``, ``accounts``)
    that decide which segments to evaluate again."""
    changed: set[str] = set()
    ts = facts.ts_ms
    profile.events += 1
    if profile.first_seen_ms == 0 or ts < profile.first_seen_ms:
        profile.first_seen_ms = ts
    if ts > profile.last_seen_ms:
        profile.last_seen_ms = ts
    if ts > profile.last_seen.get(facts.channel, -1):
        profile.last_seen[facts.channel] = ts
        changed.add("last_seen." + facts.channel)
    if facts.traits:
        traits = profile.traits
        for name, value in facts.traits.items():
            current = traits.get(name)
            if current is None:
                if len(traits) >= MAX_TRAITS:
                    profile.dropped_traits += 1
                    continue
            elif (current[1], current[2]) > (ts, facts.seq):
                continue
            traits[name] = (value, ts, facts.seq)
            changed.add("traits." + name)
    if group_id is not None and ts >= profile.accounts.get(group_id, -1):
        if group_id not in profile.accounts:
            changed.add("accounts")
        profile.accounts[group_id] = ts
    answer = feedback_of(facts, feedback_event)
    if answer is not None:
        metric, score = answer
        current_answer = profile.feedback.get(metric)
        if current_answer is None or (current_answer[1], current_answer[3]) <= (ts, facts.seq):
            profile.feedback[metric] = (score, ts, facts.channel, facts.seq)
            changed.add("feedback." + metric)
    for name in attributes.apply(profile.attributes, facts):
        changed.add("attributes." + name)
    return changed


def rebuild(
    profile: Profile,
    history: Iterable[tuple[EventFacts, str | None]],
    attributes: AttributeSet,
    feedback_event: str,
) -> Profile:
    """A fresh profile with the identity fields of ``profile`` and everything else
    folded again from ``history`` (facts, group id) — after a merge or a split.
    Segment memberships carry over; the caller evaluates them again."""
    fresh = Profile(
        customer_id=profile.customer_id,
        founder=profile.founder,
        identifiers=profile.identifiers,
        conflicted=profile.conflicted,
        segments=dict(profile.segments),
    )
    for facts, group_id in history:
        apply_event(fresh, facts, group_id, attributes, feedback_event)
    return fresh


def identifiers_by_type(identifiers: Iterable[str]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for identifier in identifiers:
        grouped.setdefault(identifier_type(identifier), []).append(identifier.partition(":")[2])
    return grouped


def account_entry(account_id: str, traits: Mapping[str, Any] | None) -> dict[str, Any]:
    return {**(traits or {}), "id": account_id}


def condition_view(
    profile: Profile,
    attribute_values: Mapping[str, Any],
    account_traits: Mapping[str, Mapping[str, Any] | None],
    now_ms: int,
    roots: Collection[str] | None = None,
) -> dict[str, Any]:
    """The roots a segment condition reads (docs/expressions.md): ``traits``,
    ``attributes``, ``segments``, ``accounts`` (a list), ``account`` (the one named
    most recently by a ``group`` call), ``last_seen``, ``feedback``, ``identifiers``,
    ``now``. With ``roots``, only those are built (the others are absent: a
    condition reading them was not asked)."""
    view: dict[str, Any] = {"now": now_ms, "attributes": attribute_values, "last_seen": profile.last_seen}
    if roots is None or "traits" in roots:
        view["traits"] = {name: value[0] for name, value in profile.traits.items()}
    if roots is None or "segments" in roots:
        view["segments"] = list(profile.segments)
    if roots is None or "account" in roots or "accounts" in roots:
        accounts = sorted(profile.accounts.items(), key=lambda item: (-item[1], item[0]))
        account_list = [account_entry(account_id, account_traits.get(account_id)) for account_id, _ in accounts]
        view["accounts"] = account_list
        view["account"] = account_list[0] if account_list else None
    if roots is None or "feedback" in roots:
        view["feedback"] = {metric: answer[0] for metric, answer in profile.feedback.items()}
    if roots is None or "identifiers" in roots:
        view["identifiers"] = identifiers_by_type(profile.identifiers)
    return view
