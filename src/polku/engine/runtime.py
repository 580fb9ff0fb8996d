"""A workspace's configuration compiled for the processor, and the events the
processor writes into the log itself (segment changes, identity changes)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from polku.core.attributes import AttributeSet, EventFacts, parse_duration
from polku.core.events import SYSTEM_CHANNEL, Event, format_millis
from polku.core.identity import IdentityRules
from polku.core.policy import Policy
from polku.core.profile import Profile
from polku.core.retention import Retention
from polku.core.segments import SegmentSet
from polku.core.survey_fatigue import Fatigue
from polku.core.workspace import AgentViewRules, InterestRules, WorkspaceConfig
from polku.state import FeedbackRow

INTERNAL_SOURCE: Final = "polku"
"""The source of events polku writes into the log itself."""
INTERNAL_CHANNEL: Final = SYSTEM_CHANNEL
SEGMENT_RECHECK_MS: Final = 3_600_000
"""How often segments whose condition reads ``now`` are checked again without events."""


@dataclass(frozen=True)
class WorkspaceRuntime:
    rules: IdentityRules
    attributes: AttributeSet
    segments: SegmentSet
    feedback_event: str
    agent_view: AgentViewRules
    time_paths: frozenset[str]
    """Paths that change by themselves as time passes (``now``, windowed attributes)."""
    reads_now: bool
    policy: Policy
    channel_types: dict[str, str]
    """Configured channel name → connector type (``smtp``, ``webhook``)."""
    notes_forward: str | None
    notes_keep: int
    fatigue: Fatigue
    survey_base_url: str | None
    locale_trait: str
    channel_events: dict[str, str]
    """A configured channel → the event channel of its results and answers."""
    interests: InterestRules
    retention: Retention
    analytics_consent: tuple[str, str] | None
    """(consent trait, purpose) whose explicit no keeps a person out of the analyses."""

    @classmethod
    def compile(cls, config: WorkspaceConfig) -> WorkspaceRuntime:
        attributes = AttributeSet.compile(config.attributes)
        segments = SegmentSet.compile(
            config.segments, windowed_attributes=attributes.windowed, attribute_names=attributes.names
        )
        return cls(
            rules=config.identity,
            attributes=attributes,
            segments=segments,
            feedback_event=config.feedback_event,
            agent_view=config.agent_view,
            time_paths=frozenset({"now", *("attributes." + name for name in attributes.windowed)}),
            reads_now=any(segment.reads_now for segment in segments.segments),
            policy=Policy(config.policy),
            channel_types={name: channel.type for name, channel in config.channels.items()},
            notes_forward=config.agent_notes.forward_to,
            notes_keep=config.agent_notes.keep,
            fatigue=Fatigue.compile(config.surveys.fatigue),
            survey_base_url=config.surveys.base_url,
            locale_trait=config.surveys.locale_trait,
            channel_events={name: channel.channel or name for name, channel in config.channels.items()},
            interests=config.interests,
            retention=Retention.compile(config.retention),
            analytics_consent=(
                (config.policy.consent.trait, config.policy.consent.analytics)
                if config.policy.consent.analytics is not None
                else None
            ),
        )

    @property
    def lookback_ms(self) -> int:
        return parse_duration(self.agent_view.lookback, "agent_view.lookback")


def internal_event(
    name: str,
    customer_id: str,
    ts_ms: int,
    identity: str,
    properties: dict[str, Any],
    received_ms: int,
    channel: str = INTERNAL_CHANNEL,
) -> Event:
    """An event polku itself writes into the log. ``identity`` makes its messageId
    deterministic, so writing it again after a crash is deduplicated."""
    message_id = "polku-" + hashlib.blake2b(identity.encode(), digest_size=16).hexdigest()
    return Event(
        message_id=message_id,
        type="track",
        channel=channel,
        source=INTERNAL_SOURCE,
        timestamp=format_millis(ts_ms),
        received_at=format_millis(received_ms),
        event=name,
        properties={"customer_id": customer_id, **properties},
        context={"polku": {"customer_id": customer_id}},
    )


def customer_event(
    name: str,
    customer_id: str,
    ts_ms: int,
    identity: str,
    properties: dict[str, Any],
    channel: str,
    *,
    interaction: bool = True,
) -> Event:
    """An event polku writes *for* a customer — a survey answer given on its page —
    that the processor applies as the customer's own (profile, segments, journeys),
    found by customer id rather than by identifiers. ``interaction=False`` marks one
    that records what polku did for them (a decision shown, a hand-over): it is on
    their timeline as polku's, feeds the decision counters, and is no step of theirs
    in the profile or the analytics."""
    event = internal_event(name, customer_id, ts_ms, identity, properties, ts_ms, channel)
    properties = dict(event.properties or {})
    properties.pop("customer_id", None)
    marker: dict[str, Any] = {"customer_id": customer_id, "as_customer": True}
    if not interaction:
        marker["interaction"] = False
    return msgspec.structs.replace(event, properties=properties, context={"polku": marker})


def consent_event(
    customer_id: str, trait: str, purposes: dict[str, bool], ts_ms: int, identity: str, channel: str
) -> Event:
    """A person's word on some purposes, given through the API or the survey page: an
    ``identify`` of theirs whose consent map the processor merges into the one they
    have when it applies it (``merged_consent``), so a change still on its way in the
    log is not undone; the history shows what this one said."""
    event = customer_event("Consent Set", customer_id, ts_ms, identity, {}, channel)
    context = dict(event.context or {})
    context["polku"] = {**context.get("polku", {}), "merge_trait": trait}
    return msgspec.structs.replace(
        event, type="identify", event=None, properties=None, traits={trait: purposes}, context=context
    )


def merged_consent(event: Event, profile: Profile) -> Event:
    """A ``consent_event`` with the person's consent map as it stands merged in (other
    events are as they are)."""
    polku = (event.context or {}).get("polku")
    trait = polku.get("merge_trait") if isinstance(polku, dict) else None
    if not isinstance(trait, str) or not event.traits or not isinstance(event.traits.get(trait), dict):
        return event
    current = profile.traits.get(trait)
    said = current[0] if current is not None and isinstance(current[0], dict) else {}
    return msgspec.structs.replace(event, traits={**event.traits, trait: {**said, **event.traits[trait]}})


def as_customer(event: Event) -> bool:
    """Whether an internal event is one the customer made (``customer_event``)."""
    polku = (event.context or {}).get("polku")
    return isinstance(polku, dict) and polku.get("as_customer") is True


def is_interaction(event: Event) -> bool:
    """Whether a ``customer_event`` is something the customer did (not only polku)."""
    polku = (event.context or {}).get("polku")
    return not (isinstance(polku, dict) and polku.get("interaction") is False)


def internal_customer(event: Event) -> str | None:
    """The customer an internal event is about, or ``None`` for an outside event."""
    if event.source != INTERNAL_SOURCE or not event.context:
        return None
    polku = event.context.get("polku")
    customer_id = polku.get("customer_id") if isinstance(polku, dict) else None
    return customer_id if isinstance(customer_id, str) else None


def feedback_row(event: Event, facts: EventFacts, answer: tuple[str, float], profile: Profile, seq: int) -> FeedbackRow:
    """The metrics' record of a feedback event: an answer to an invitation is keyed
    by the invitation (an edit replaces it); feedback imported from another tool by
    its messageId."""
    properties = facts.properties
    invitation = properties.get("invitation")
    invitation = invitation if isinstance(invitation, str) and 0 < len(invitation) <= 64 else None
    comment = properties.get("comment")
    answers = properties.get("answers")
    revision = properties.get("revision")
    return FeedbackRow(
        key=invitation or f"m:{event.message_id}",
        customer_id=profile.customer_id,
        ts_ms=facts.ts_ms,
        seq=seq,
        metric=answer[0],
        score=answer[1],
        channel=facts.channel,
        survey=_text(properties.get("survey")),
        invitation=invitation,
        journey=_text(properties.get("journey")),
        step=_text(properties.get("step")),
        comment=comment[:5000] if isinstance(comment, str) else None,
        answers=answers if isinstance(answers, dict) and len(answers) <= 20 else {},
        segments=sorted(profile.segments)[:100],
        revision=revision if isinstance(revision, int) and not isinstance(revision, bool) else 1,
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= 256 else None


def withdrew_analytics(profile: Profile, consent: tuple[str, str]) -> bool | None:
    """Whether the person's latest word on the analytics purpose is no; ``None`` when
    they have no consent trait at all (nothing to record)."""
    said = profile.traits.get(consent[0])
    if said is None:
        return None
    value = said[0]
    return isinstance(value, dict) and value.get(consent[1]) is False
