"""What the journey engine keeps per holder (a customer, or ``account:<id>`` for
per-account journeys), and what it records (pure data).

A holder's ``JourneyState`` is one record: its live instances (at most one per
journey), the history of its entries (re-entry policy, goal tracking), what was
sent to it recently (frequency caps), its agent notes and its in-app inbox.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from polku.core.survey_fatigue import SurveyMemory

ACCOUNT_PREFIX: Final = "account:"


def account_holder(account_id: str) -> str:
    return ACCOUNT_PREFIX + account_id


class Instance(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    journey: str
    version: int
    step: str
    entered_ms: int
    due_ms: int = 0
    """When the current step's wait ends (0: it waits for nothing in time)."""
    visits: int = 0
    """Steps run so far: part of each message's key, so a loop's second pass sends
    a second message and a repeat of the same pass does not."""
    holdout: bool = False
    variants: dict[str, str] = {}
    """Split step → the arm taken."""
    actor: str = ""
    """The customer whose event moved the instance last (the person of an account)."""
    trigger: dict[str, Any] = {}
    """The event that started the instance (``name``, ``type``, ``channel``,
    ``properties``, ``ts``) for conditions and templates of later steps."""
    held: str = ""
    """Why the current action waits (quiet hours), or empty."""


class History(msgspec.Struct, array_like=True):
    """A holder's entries into one journey, and the goal window of the latest."""

    entries: int = 0
    last_entered_ms: int = 0
    version: int = 0
    holdout: bool = False
    goal_by_ms: int = 0
    converted: bool = False
    last_tick_ms: int = 0
    """The schedule tick that entered it last (scheduled journeys)."""


class Sent(msgspec.Struct, array_like=True, frozen=True):
    ts_ms: int
    channel: str
    purpose: str


class Note(msgspec.Struct, kw_only=True, omit_defaults=True):
    key: str
    ts_ms: int
    text: str
    journey: str
    step: str


class InboxMessage(msgspec.Struct, kw_only=True, omit_defaults=True):
    key: str
    ts_ms: int
    expires_ms: int
    journey: str
    step: str
    message: str
    purpose: str
    subject: str | None = None
    body: str | None = None
    payload: Any = None


class JourneyState(msgspec.Struct, kw_only=True, omit_defaults=True):
    instances: dict[str, Instance] = {}
    history: dict[str, History] = {}
    sent: list[Sent] = []
    notes: list[Note] = []
    inbox: list[InboxMessage] = []
    schedule_due_ms: int = 0
    """The next tick of a scheduled journey this holder's segments qualify for."""
    surveys: SurveyMemory = msgspec.field(default_factory=SurveyMemory)
    """Survey invitations sent (fatigue control)."""
    actions: dict[str, Any] = {}
    """Action id → the customer's answers to it (``polku.core.decisions.ActionMemory``,
    kept as plain data here: decisions build on journeys, not the reverse)."""
    decisions: dict[str, Any] = {}
    """Recent decision id → ``DecisionMemory`` as plain data."""

    def next_due(self) -> int:
        """The earliest moment something happens without an event (0: never)."""
        dues = [instance.due_ms for instance in self.instances.values() if instance.due_ms]
        if self.schedule_due_ms:
            dues.append(self.schedule_due_ms)
        return min(dues, default=0)


class TransitionRecord(msgspec.Struct, kw_only=True, array_like=True):
    """One recorded move of an instance: ``kind`` is ``entered``, ``step`` (it
    reached ``step``), ``action`` (``detail`` says sent / holdout / held / skipped and
    why), ``goal``, ``exited`` (``detail`` says why) or ``migrated``."""

    holder: str
    customer_id: str
    journey: str
    version: int
    instance: str
    ts_ms: int
    seq: int
    kind: str
    step: str
    detail: str = ""


class InvitationRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One survey invitation decided: ``status`` ``sent``, or ``suppressed`` with the
    ``reason`` (every invitation not sent is recorded with why)."""

    id: str
    workspace: str
    customer_id: str
    survey: str
    version: int
    status: str
    created_ms: int
    reason: str = ""
    metric: str = ""
    channel: str = ""
    event_channel: str = ""
    """The channel the answer arrives on (the delivery channel's event channel)."""
    expires_ms: int = 0
    locale: str = ""
    journey: str = ""
    """The journey of the ``survey`` step (empty for a survey's own trigger)."""
    journey_version: int = 0
    step: str = ""
    instance: str = ""
    trigger: dict[str, Any] = {}
    """The event that started it: ``seq``, ``name``, ``channel``, ``ts``."""
    account: str = ""
