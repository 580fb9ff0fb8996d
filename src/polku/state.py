"""The processor's state: what one batch changes, and the records the store keeps.

The processor (``polku.engine.processor``) folds a batch of log events into
``StateChanges`` and hands them to the state store, which commits them together
with the checkpoint in one transaction (DESIGN.md, invariants 2 and 4): after a
crash the batch is either wholly applied or not at all, and is then read again.
"""

from __future__ import annotations

from typing import Any

import msgspec

from polku.core.channels import OutboundMessage
from polku.core.erasure import ErasureScope
from polku.core.events import Event
from polku.core.identity import EventKey, LinkEvent
from polku.core.journey_state import InvitationRecord, JourneyState, TransitionRecord
from polku.core.profile import Profile


class FeedbackRow(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One feedback answer as the metrics read it: from a survey invitation (its
    ``key`` is the invitation id, so an edit replaces it) or imported from another
    tool (``key`` is ``m:<messageId>``)."""

    key: str
    customer_id: str
    ts_ms: int
    seq: int
    metric: str
    score: float
    channel: str
    survey: str | None = None
    invitation: str | None = None
    journey: str | None = None
    step: str | None = None
    comment: str | None = None
    answers: dict[str, Any] = {}
    segments: list[str] = []
    """The customer's segments when they answered (metrics by segment)."""
    revision: int = 1


class IdentifierRecord(msgspec.Struct, array_like=True):
    customer_id: str
    first_key: EventKey


class Account(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A B2B account: traits from ``group`` calls (newest write wins per trait)."""

    id: str
    traits: dict[str, tuple[Any, int, int]] = {}
    first_seen_ms: int = 0
    last_seen_ms: int = 0

    def trait_values(self) -> dict[str, Any]:
        return {name: value[0] for name, value in self.traits.items()}


class TimelineRow(msgspec.Struct, array_like=True, frozen=True, order=True):
    """One event of a customer's timeline; ``anchor`` is the identifier that named
    its customer, so a split can tell whose it is."""

    ts_ms: int
    seq: int
    anchor: str
    type: str
    name: str | None
    channel: str
    internal: bool = False


class RefusalRecord(msgspec.Struct, kw_only=True):
    seq: int
    ts_ms: int
    message_id: str
    target: str
    identifier: str
    reason: str
    target_customer: str | None = None
    other_customer: str | None = None


class MergeRecord(msgspec.Struct, kw_only=True):
    """The audit of one identity change: ``absorbed`` customers became ``survivor``
    (a merge), or ``survivor`` was split off (``kind='split'``), at log position ``seq``."""

    seq: int
    ts_ms: int
    kind: str
    survivor: str
    absorbed: list[str]
    reason: str


class StateChanges(msgspec.Struct, kw_only=True):
    """Everything one batch writes. Keys are ``(workspace, id)``."""

    checkpoint: int
    identifiers: dict[tuple[str, str], IdentifierRecord] = {}
    links: dict[tuple[str, str], LinkEvent] = {}
    profiles: dict[tuple[str, str], Profile | None] = {}
    """``None`` deletes."""
    accounts: dict[tuple[str, str], Account] = {}
    members_added: set[tuple[str, str, str]] = set()
    """(workspace, account, customer)"""
    members_removed: set[tuple[str, str, str]] = set()
    redirects: dict[tuple[str, str], str] = {}
    unredirected: set[tuple[str, str]] = set()
    """Ids that name a live customer again: their redirects go."""
    timeline: dict[tuple[str, str], list[TimelineRow]] = {}
    """New rows per (workspace, customer)."""
    timeline_replaced: dict[tuple[str, str], list[TimelineRow]] = {}
    """Customers whose whole timeline is written anew (merged or split)."""
    refusals_cleared: list[tuple[str, list[str]]] = []
    """(workspace, identifiers): their refusals are replaced by ``refusals`` (a recomputation)."""
    refusals: list[tuple[str, RefusalRecord]] = []
    merges: list[tuple[str, MergeRecord]] = []
    timers: dict[tuple[str, str], int | None] = {}
    failures: list[tuple[str, int, str]] = []
    """(workspace, seq, error) of events that failed alone and were skipped."""
    emitted: list[tuple[str, Event]] = []
    """Events for the log (segment changes, merges), appended after the commit."""
    journey_states: dict[tuple[str, str], JourneyState | None] = {}
    """(workspace, holder) → the holder's journey state (``None`` deletes)."""
    transitions: list[tuple[str, TransitionRecord]] = []
    journey_stats: dict[tuple[str, str, int, str], int] = {}
    """(workspace, journey, version, metric) → how much to add."""
    messages: list[OutboundMessage] = []
    """Messages for the dispatcher (the transactional outbox)."""
    invitations: list[InvitationRecord] = []
    """Survey invitations decided (sent or suppressed, with the reason)."""
    feedback: dict[tuple[str, str], FeedbackRow] = {}
    """(workspace, key) → a feedback answer (an edit replaces its invitation's)."""
    action_stats: dict[tuple[str, str, str], list[int]] = {}
    """(workspace, action, learning group) → [offers, acceptances, rejections] to add."""
    decision_stats: dict[tuple[str, str], list[int]] = {}
    consent: dict[tuple[str, str], bool] = {}
    """(workspace, customer) → whether they withdrew analytics consent (``True``:
    kept in ``consent_withdrawn``; ``False``: taken out)."""
    erasures: list[ErasureScope] = []
    """People erased (``polku.core.erasure``): their state goes with this commit, which
    holds nothing else of theirs (the processor commits before it erases)."""
    """(workspace, ``treatment`` | ``holdout``) → [decisions, conversions] to add."""
