"""The journey engine's transition function (pure).

``on_event(journeys, state, occurrence, run)`` and ``on_time(journeys, state, run)``
take a holder's ``JourneyState`` (a customer's, or an account's for per-account
journeys) and move it: instances enter, advance, wait, act and end. What the world
must see is appended to ``run`` as data — transitions to record, messages for the
outbox, stats deltas, trait updates, sends to count against account caps. Nothing
here opens a socket or a file, reads the clock (``run.now``) or draws a random
number: splits and holdouts hash the customer. Replaying the same log through the
same journeys therefore gives the same transitions and messages (the golden tests).

The state is changed in place: the processor hands in its cached copy and commits
it with the batch, so "``transition(state, event, now) -> (state, effects)``" of
DESIGN.md is this with the new state being the argument itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from polku.core.channels import FAILED_EVENT, OutboundMessage
from polku.core.expr import Condition
from polku.core.journey_spec import END, MAX_STEPS, CompiledAction, CompiledStep, Journey
from polku.core.journey_state import (
    History,
    InboxMessage,
    Instance,
    InvitationRecord,
    JourneyState,
    Note,
    Sent,
    TransitionRecord,
)
from polku.core.policy import Policy, Verdict, next_time_of_day
from polku.core.segments import ENTERED_EVENT
from polku.core.survey_fatigue import Fatigue, FatigueConfig, SurveyMemory
from polku.core.survey_spec import SURVEY_CHANNEL, Survey
from polku.core.survey_tokens import make_token
from polku.core.templates import TemplateError, render_payload

MAX_INBOX: Final = 50
LATE_NOTE_MS: Final = 60_000
"""A timer firing later than this after its due time says so in its transition
(the lateness policy: late timers fire on recovery; see ``max_lateness``)."""
MAX_TRIGGER_BYTES: Final = 4096
DEFAULT_ADDRESS: Final = {"smtp": "email", "webhook": "phone"}
"""The trait a channel type sends to when an action names no ``to``."""


@dataclass(frozen=True)
class Occurrence:
    """An event as the journeys see it."""

    name: str | None
    type: str
    channel: str
    properties: Mapping[str, Any]
    ts_ms: int
    seq: int
    internal: bool = False

    def as_view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "channel": self.channel,
            "properties": self.properties,
            "ts": self.ts_ms,
        }


@dataclass(frozen=True)
class Scope:
    """The journeys of one kind of holder (customers, or accounts)."""

    versions: Mapping[str, Mapping[int, Journey]]
    heads: Mapping[str, Journey]
    status: Mapping[str, str]
    by_event: Mapping[str, tuple[Journey, ...]]
    by_segment: Mapping[str, tuple[Journey, ...]]
    scheduled: tuple[Journey, ...]
    listened: frozenset[str]
    """Event names a live instance of any version may react to."""
    exits_on_any_event: bool
    """An exit condition with no event is checked on every event."""
    goal_events: frozenset[str]
    migrating: frozenset[str]
    unsettled: frozenset[str]
    """Journeys whose instances may have to move first: migrating or archived."""
    """Journeys whose head version moves older instances over (``migrate``): their
    instances are touched by any event, so they move on their customer's next one."""

    @classmethod
    def build(cls, journeys: Iterable[tuple[Journey, str, bool]]) -> Scope:
        """From (journey version, the journey's status, is it the head version)."""
        versions: dict[str, dict[int, Journey]] = {}
        heads: dict[str, Journey] = {}
        status: dict[str, str] = {}
        by_event: dict[str, list[Journey]] = {}
        by_segment: dict[str, list[Journey]] = {}
        scheduled: list[Journey] = []
        listened: set[str] = set()
        for journey, journey_status, head in journeys:
            versions.setdefault(journey.id, {})[journey.version] = journey
            listened.update(journey.events)
            if not head:
                continue
            heads[journey.id] = journey
            status[journey.id] = journey_status
            if journey_status != "active":
                continue
            if journey.schedule_every_ms:
                scheduled.append(journey)
            elif journey.entry_event:
                by_event.setdefault(journey.entry_event, []).append(journey)
            elif journey.entry_segment:
                by_segment.setdefault(journey.entry_segment, []).append(journey)
        return cls(
            versions=versions,
            heads=heads,
            status=status,
            by_event={name: tuple(sorted(found, key=lambda j: j.id)) for name, found in by_event.items()},
            by_segment={name: tuple(sorted(found, key=lambda j: j.id)) for name, found in by_segment.items()},
            scheduled=tuple(sorted(scheduled, key=lambda j: j.id)),
            listened=frozenset(listened),
            goal_events=frozenset(j.goal_event for found in versions.values() for j in found.values() if j.goal_event),
            migrating=frozenset(journey_id for journey_id, head in heads.items() if head.migration),
            unsettled=frozenset(
                journey_id
                for journey_id in versions
                if status.get(journey_id) == "archived" or (heads.get(journey_id) and heads[journey_id].migration)
            ),
            exits_on_any_event=any(j.exits_on_any_event for found in versions.values() for j in found.values()),
        )

    def journey(self, journey_id: str, version: int) -> Journey | None:
        return self.versions.get(journey_id, {}).get(version)

    def may_care(self, occurrence: Occurrence) -> bool:
        """``cares`` without the state: false means the holder's journey state need
        not even be read (most events of most customers)."""
        name = occurrence.name
        return bool(
            name in self.by_event
            or name in self.listened
            or self.exits_on_any_event
            or self.migrating
            or (name == ENTERED_EVENT and self.by_segment)
            or (name == FAILED_EVENT and occurrence.internal)
        )

    def cares(self, occurrence: Occurrence, state: JourneyState | None) -> bool:
        """Whether an event can change anything (cheap: most events of most
        customers do not, and their journey state need not even be read)."""
        name = occurrence.name
        if name in self.by_event:
            return True
        if name == ENTERED_EVENT and self.by_segment:
            return True
        if name == FAILED_EVENT and occurrence.internal:
            return True
        if state is None or not (state.instances or state.history):
            return False
        if name in self.listened or self.exits_on_any_event:
            return True
        if not self.migrating:
            return False
        return any(
            instance.journey in self.migrating and instance.version != self.heads[instance.journey].version
            for instance in state.instances.values()
        )


EMPTY_SCOPE: Final = Scope.build(())


@dataclass
class Run:
    """One call's inputs beyond the state, and the effects it produces."""

    workspace: str
    holder: str
    customer_id: str
    """The person acting (the holder itself, or the member of an account)."""
    now: int
    seq: int
    view: Callable[[], dict[str, Any]]
    """The profile's condition view (built on first use)."""
    policy: Policy
    channel_types: Mapping[str, str]
    person: JourneyState
    """The person's own journey state (notes, inbox, sends): the holder's state for
    customer journeys."""
    account_sent: Mapping[str, list[Sent]] = field(default_factory=dict)
    notes_forward: str | None = None
    notes_keep: int = 50
    entries: Callable[[str], int] = lambda journey_id: 0
    """How many entries a journey has had in all (for entry caps)."""
    in_segments: Callable[[str], bool] = lambda segment: False
    transitions: list[TransitionRecord] = field(default_factory=list)
    messages: list[OutboundMessage] = field(default_factory=list)
    stats: dict[tuple[str, int, str], int] = field(default_factory=dict)
    trait_updates: dict[str, Any] = field(default_factory=dict)
    account_sends: list[Sent] = field(default_factory=list)
    late: bool = False
    """The instance being run woke up later than its journey's ``max_lateness``."""
    surveys: Mapping[str, Survey] = field(default_factory=dict)
    """The deployed, active surveys (head versions) by id."""
    fatigue: Fatigue = field(default_factory=lambda: Fatigue.compile(FatigueConfig()))
    survey_secret: bytes = b""
    survey_url: str = ""
    """The hosted survey page's base (``https://feedback.example.com/s/``)."""
    locale_trait: str = "locale"
    answered_ms: int = 0
    """The person's latest feedback answer (fatigue: ``cooldown:response``)."""
    account_surveys: Mapping[str, SurveyMemory] = field(default_factory=dict)
    open_journeys: Callable[[], list[tuple[str, bool]]] = lambda: []
    """(journey id, does it block surveys) of the person's live instances."""
    channel_events: Mapping[str, str] = field(default_factory=dict)
    """A configured channel → the event channel its results (and answers) arrive on."""
    invitations: list[InvitationRecord] = field(default_factory=list)

    def record(self, instance: Instance, kind: str, step: str, detail: str = "") -> None:
        self.transitions.append(
            TransitionRecord(
                holder=self.holder,
                customer_id=self.customer_id,
                journey=instance.journey,
                version=instance.version,
                instance=instance.id,
                ts_ms=self.now,
                seq=self.seq,
                kind=kind,
                step=step,
                detail=detail,
            )
        )

    def count(self, journey: str, version: int, metric: str) -> None:
        key = (journey, version, metric)
        self.stats[key] = self.stats.get(key, 0) + 1


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _share(text: str) -> float:
    """A stable number in [0, 1) for a string (splits, holdouts)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


def _trigger(occurrence: Occurrence) -> dict[str, Any]:
    import msgspec

    properties: Any = occurrence.properties
    if len(msgspec.json.encode(properties)) > MAX_TRIGGER_BYTES:
        properties = {}
    return {**occurrence.as_view(), "properties": properties, "seq": occurrence.seq}


# --- the entry points -------------------------------------------------------------------


def on_event(scope: Scope, state: JourneyState, occurrence: Occurrence, run: Run) -> None:
    """An event of the holder: goals, exits and waits of live instances first, then
    entries into journeys it starts."""
    event = occurrence.as_view()
    if occurrence.name == FAILED_EVENT and occurrence.internal:
        _count_failure(scope, occurrence, run)
    _check_goals(scope, state, occurrence, event, run)
    for journey_id in sorted(state.instances):
        instance = state.instances.get(journey_id)
        if instance is None:
            continue
        journey = scope.journey(journey_id, instance.version)
        if journey is not None and journey_id not in scope.unsettled and not _moves(journey, instance, occurrence):
            continue  # the common case: nothing to build for an instance this event cannot move
        journey = _journey_of(scope, state, instance, run)  # archived, gone or migrating first
        if journey is None or state.instances.get(journey_id) is not instance:
            continue
        if not _moves(journey, instance, occurrence):
            continue
        step = journey.steps[instance.step]
        context = _context(run, instance, event)
        exited = _exit_reason(journey, occurrence, context)
        if exited is not None:
            _end(state, instance, f"exit:{exited}", run)
            continue
        if step.kind == "wait_for" and occurrence.name == step.event and _holds(step.condition, context):
            instance.due_ms = 0
            run.record(instance, "event", step.id, occurrence.name or "")
            _move(scope, state, journey, instance, step.on_event, run, event)
    candidates: list[Journey] = list(scope.by_event.get(occurrence.name or "", ()))
    if occurrence.name == ENTERED_EVENT:
        segment = occurrence.properties.get("segment")
        if isinstance(segment, str):
            candidates.extend(scope.by_segment.get(segment, ()))
    for journey in candidates:
        _try_enter(scope, state, journey, occurrence, event, run)


def on_time(scope: Scope, state: JourneyState, run: Run) -> None:
    """The holder's timer fired: waits that ended, held actions whose quiet hours
    are over, and ticks of scheduled journeys."""
    for journey_id in sorted(state.instances):
        instance = state.instances.get(journey_id)
        if instance is None or not instance.due_ms or instance.due_ms > run.now:
            continue
        journey = _journey_of(scope, state, instance, run)
        if journey is None or state.instances.get(journey_id) is not instance:
            continue
        if not instance.due_ms or instance.due_ms > run.now:
            continue  # migrated onto a step that waits anew
        step = journey.steps[instance.step]
        lateness = run.now - instance.due_ms
        run.late = bool(journey.max_lateness_ms) and lateness > journey.max_lateness_ms
        late = f"late by {lateness // 1000} s" if lateness > LATE_NOTE_MS else ""
        instance.due_ms = 0
        if step.kind == "wait":
            if late:
                run.record(instance, "late", step.id, late)
            _move(scope, state, journey, instance, step.next, run, None)
        elif step.kind == "wait_for":
            run.record(instance, "timeout", step.id, late)
            _move(scope, state, journey, instance, step.on_timeout, run, None)
        else:
            # A held action: its quiet hours are over; try it again.
            _run_steps(scope, state, journey, instance, run, None)
        run.late = False
    if state.schedule_due_ms and state.schedule_due_ms <= run.now:
        for journey in scope.scheduled:
            tick = _last_tick(journey, run.now)
            history = state.history.get(journey.id)
            if (
                journey.entry_segment
                and run.in_segments(journey.entry_segment)
                and (history is None or history.last_tick_ms < tick)
            ):
                occurrence = Occurrence(
                    "Journey Scheduled", "track", "system", {"journey": journey.id}, run.now, run.seq, True
                )
                if _try_enter(scope, state, journey, occurrence, occurrence.as_view(), run):
                    state.history[journey.id].last_tick_ms = tick
    schedule(scope, state, run)


def schedule(scope: Scope, state: JourneyState, run: Run) -> None:
    """Set the holder's next scheduled tick: the earliest next tick of a scheduled
    journey whose segment it is in."""
    due = 0
    for journey in scope.scheduled:
        if journey.entry_segment and run.in_segments(journey.entry_segment):
            tick = _last_tick(journey, run.now) + journey.schedule_every_ms
            due = tick if not due else min(due, tick)
    state.schedule_due_ms = due


def _last_tick(journey: Journey, now: int) -> int:
    """The latest tick at or before ``now``: every ``every`` from the epoch, shifted
    to ``at`` (UTC) when given."""
    every = journey.schedule_every_ms
    offset = journey.schedule_at_ms or 0
    return now - (now - offset) % every


def merge_states(scope: Scope, survivor: JourneyState, absorbed: JourneyState, run: Run) -> None:
    """Two customers became one: the absorbed one's instances join the survivor's,
    except where the survivor is already in that journey (one instance per journey:
    the absorbed one ends, recorded as ``merged``)."""
    for journey_id, instance in sorted(absorbed.instances.items()):
        if journey_id in survivor.instances:
            run.record(instance, "exited", instance.step, "merged")
            run.count(instance.journey, instance.version, "ended:merged")
            run.count(instance.journey, instance.version, f"left:{instance.step}:merged")
        else:
            survivor.instances[journey_id] = instance
    for journey_id, history in absorbed.history.items():
        mine = survivor.history.get(journey_id)
        if mine is None:
            survivor.history[journey_id] = history
        else:
            mine.entries += history.entries
            mine.last_entered_ms = max(mine.last_entered_ms, history.last_entered_ms)
            mine.last_tick_ms = max(mine.last_tick_ms, history.last_tick_ms)
    survivor.sent = sorted([*survivor.sent, *absorbed.sent], key=lambda sent: sent.ts_ms)
    survivor.notes = sorted([*survivor.notes, *absorbed.notes], key=lambda note: note.ts_ms)[-run.notes_keep :]
    survivor.inbox = sorted([*survivor.inbox, *absorbed.inbox], key=lambda message: message.ts_ms)[-MAX_INBOX:]
    survivor.surveys = survivor.surveys.merged(absorbed.surveys)
    # Decisions' memory: the absorbed one's answers and recent decisions count too.
    survivor.actions = {**absorbed.actions, **survivor.actions}
    survivor.decisions = {**absorbed.decisions, **survivor.decisions}
    schedule(scope, survivor, run)


# --- instances ---------------------------------------------------------------------------


def _journey_of(scope: Scope, state: JourneyState, instance: Instance, run: Run) -> Journey | None:
    """The version an instance runs on — moved to the head version when the head's
    ``migrate`` maps its step; ended when its journey was archived or is gone."""
    if scope.status.get(instance.journey) == "archived" or instance.journey not in scope.versions:
        _end(state, instance, "archived", run)
        return None
    head = scope.heads.get(instance.journey)
    migrates = head is not None and head.version != instance.version and instance.step in head.migration
    if migrates and head is not None and (head.migrate_from is None or instance.version in head.migrate_from):
        old = (instance.version, instance.step)
        instance.version = head.version
        instance.step = head.migration[instance.step]
        instance.due_ms = 0
        instance.held = ""
        run.record(instance, "migrated", instance.step, f"from version {old[0]} step {old[1]}")
        run.count(instance.journey, old[0], "ended:migrated")
        run.count(instance.journey, old[0], f"left:{old[1]}:migrated")
        run.count(instance.journey, head.version, "migrated_in")
        _arrive(scope, state, head, instance, run, None)
        return head if instance.journey in state.instances else None
    journey = scope.journey(instance.journey, instance.version)
    if journey is None:
        _end(state, instance, "version_gone", run)
    return journey


def _try_enter(
    scope: Scope, state: JourneyState, journey: Journey, occurrence: Occurrence, event: dict[str, Any], run: Run
) -> bool:
    if journey.id in state.instances:
        if journey.survey_rule:
            _pending_survey(journey, occurrence, event, run)
        return False
    history = state.history.get(journey.id)
    if history is not None and history.entries:
        if journey.reentry == "never":
            return False
        if journey.reentry == "after" and run.now - history.last_entered_ms < journey.reentry_after_ms:
            return False
    trigger = _trigger(occurrence) if journey.uses_trigger else {}
    if journey.entry_when is not None:
        context = {**run.view(), "event": event, "trigger": trigger or event, "journey": {"id": journey.id}}
        if not journey.entry_when(context):
            return False
    if journey.cap is not None and run.entries(journey.id) >= journey.cap:
        run.count(journey.id, journey.version, "entry_capped")
        return False
    entries = (history.entries if history else 0) + 1
    holdout = journey.holdout > 0 and _share(f"holdout|{journey.id}|{run.holder}") < journey.holdout
    instance = Instance(
        id=_digest(f"{run.workspace}|{run.holder}|{journey.id}|{entries}"),
        journey=journey.id,
        version=journey.version,
        step=journey.first,
        entered_ms=run.now,
        holdout=holdout,
        actor=run.customer_id if run.holder != run.customer_id else "",
        trigger=trigger,
    )
    state.instances[journey.id] = instance
    state.history[journey.id] = History(
        entries=entries,
        last_entered_ms=run.now,
        version=journey.version,
        holdout=holdout,
        goal_by_ms=run.now + journey.goal_within_ms if journey.goal_event else 0,
        last_tick_ms=history.last_tick_ms if history else 0,
    )
    run.record(instance, "entered", journey.first, "holdout" if holdout else "")
    run.count(journey.id, journey.version, "entered:holdout" if holdout else "entered")
    _arrive(scope, state, journey, instance, run, event)
    return True


def _pending_survey(journey: Journey, occurrence: Occurrence, event: dict[str, Any], run: Run) -> None:
    """A survey's trigger fired again while its first firing still waits for its
    delay: not a second invitation, but recorded, as every invitation not sent is."""
    if journey.entry_when is not None:
        context = {**run.view(), "event": event, "trigger": event, "journey": {"id": journey.id}}
        if not journey.entry_when(context):
            return
    survey = run.surveys.get(journey.survey_rule)
    run.invitations.append(
        InvitationRecord(
            id=_digest(f"{run.workspace}|{run.holder}|{journey.id}|pending|{occurrence.seq}|{occurrence.ts_ms}"),
            workspace=run.workspace,
            customer_id=run.customer_id,
            survey=journey.survey_rule,
            version=survey.version if survey is not None else 0,
            metric=survey.metric if survey is not None else "",
            status="suppressed",
            created_ms=run.now,
            reason="pending",
            trigger={
                "seq": occurrence.seq,
                "name": occurrence.name,
                "channel": occurrence.channel,
                "ts": occurrence.ts_ms,
            },
        )
    )


def _end(state: JourneyState, instance: Instance, reason: str, run: Run) -> None:
    """The instance ends at its step: it ``completed`` the journey (a move to its
    end, ``moved:<step>:end``) or it left for ``reason`` (``left:<step>:<reason>``)."""
    state.instances.pop(instance.journey, None)
    run.record(instance, "exited", instance.step, reason)
    run.count(instance.journey, instance.version, f"ended:{reason}")
    if reason == "completed":
        run.count(instance.journey, instance.version, f"moved:{instance.step}:{END}")
    else:
        run.count(instance.journey, instance.version, f"left:{instance.step}:{reason}")


def _move(
    scope: Scope,
    state: JourneyState,
    journey: Journey,
    instance: Instance,
    target: str,
    run: Run,
    event: dict[str, Any] | None,
) -> None:
    if target == END:
        _end(state, instance, "completed", run)
        return
    run.count(journey.id, journey.version, f"moved:{instance.step}:{target}")
    instance.step = target
    instance.held = ""
    _arrive(scope, state, journey, instance, run, event)


def _arrive(
    scope: Scope, state: JourneyState, journey: Journey, instance: Instance, run: Run, event: dict[str, Any] | None
) -> None:
    run.count(journey.id, journey.version, f"reached:{instance.step}")
    _run_steps(scope, state, journey, instance, run, event)


def _run_steps(
    scope: Scope,
    state: JourneyState,
    journey: Journey,
    instance: Instance,
    run: Run,
    event: dict[str, Any] | None,
) -> None:
    """Run the instance from its current step until it waits or ends."""
    for _ in range(MAX_STEPS):
        step = journey.steps[instance.step]
        instance.visits += 1
        if step.kind == "wait":
            if step.until is not None:
                zone = run.policy.customer_zone(run.view().get("traits") or {})
                instance.due_ms = next_time_of_day(run.now, zone, step.until[0], step.until[1], step.days)
            else:
                instance.due_ms = run.now + step.wait_ms
            return
        if step.kind == "wait_for":
            instance.due_ms = run.now + step.wait_ms
            return
        context = _context(run, instance, event)
        if step.kind == "branch":
            target = next(nxt for condition, nxt in step.cases if condition is None or condition(context))
            run.record(instance, "branch", step.id, target)
        elif step.kind == "split":
            share = _share(f"split|{journey.id}|{step.id}|{run.holder}")
            arm, target = step.arms[-1][0], step.arms[-1][2]
            for name, weight, nxt in step.arms:
                if share < weight:
                    arm, target = name, nxt
                    break
                share -= weight
            instance.variants[step.id] = arm
            run.record(instance, "split", step.id, arm)
        elif step.kind == "action":
            assert step.action is not None
            if not _act(journey, instance, step, step.action, context, run):
                return  # held until the quiet hours end
            target = step.next
        elif step.kind == "survey":
            assert step.survey is not None
            if not _invite(journey, instance, step, context, run):
                return  # held until the quiet hours end
            target = step.next
        elif step.kind == "update_profile":
            for name, expression in step.updates:
                run.trait_updates[name] = expression(context)
            run.record(instance, "update_profile", step.id, ", ".join(name for name, _ in step.updates))
            target = step.next
        else:  # exit
            _end(state, instance, f"exit:{step.id}", run)
            return
        if target == END:
            _end(state, instance, "completed", run)
            return
        run.count(journey.id, journey.version, f"moved:{step.id}:{target}")
        instance.step = target
        run.count(journey.id, journey.version, f"reached:{target}")
    _end(state, instance, "step_limit", run)


def _act(
    journey: Journey, instance: Instance, step: CompiledStep, action: CompiledAction, context: dict[str, Any], run: Run
) -> bool:
    """Apply an action under the contact policy; ``False`` when it is held."""

    def outcome(result: str, detail: str = "") -> bool:
        run.record(instance, "action", step.id, f"{result}{': ' + detail if detail else ''}")
        run.count(journey.id, journey.version, f"action:{step.id}:{result}")
        return True

    if instance.holdout:
        return outcome("holdout")
    if run.late:
        return outcome("skipped:late")
    verdict = run.policy.check(
        channel=action.channel,
        purpose=action.purpose,
        view=context,
        sent=run.person.sent,
        account_sent=run.account_sent,
        now_ms=run.now,
    )
    if verdict.kind == "skip":
        return outcome(f"skipped:{verdict.reason}")
    if verdict.kind == "hold":
        return _hold(journey, instance, step, "action", verdict, run)
    instance.held = ""
    channel_type = (
        action.channel if action.channel in ("agent_note", "in_app") else run.channel_types.get(action.channel)
    )
    if channel_type is None:
        return outcome("failed", f"channel {action.channel!r} is not configured")
    to: str | None = None
    if action.to is not None:
        value = action.to(context)
        to = str(value) if value not in (None, "") else None
    elif channel_type in DEFAULT_ADDRESS:
        value = (context.get("traits") or {}).get(DEFAULT_ADDRESS[channel_type])
        to = str(value) if value not in (None, "") else None
    if to is None and channel_type == "smtp":
        return outcome("skipped:no_address")
    template_context = {**context, "customer_id": run.customer_id}
    try:
        subject = action.subject.render(template_context) if action.subject else None
        body = action.body.render(template_context) if action.body else None
        html = action.html.render(template_context) if action.html else None
        payload = render_payload(action.payload, template_context) if action.payload is not None else None
    except TemplateError as error:
        return outcome("skipped:template_error", error.message)
    key = _digest(f"{run.workspace}|{run.holder}|{instance.id}|{step.id}|{instance.visits}")
    account = run.holder.removeprefix("account:") if run.holder != run.customer_id else None
    if channel_type == "agent_note":
        note = Note(key=key, ts_ms=run.now, text=body or "", journey=journey.id, step=step.id)
        run.person.notes = [*run.person.notes, note][-run.notes_keep :]
        if run.notes_forward is not None:
            run.messages.append(
                _message(run, journey, step, action, key, run.notes_forward, to, subject, body, html, payload, account)
            )
    elif channel_type == "in_app":
        inbox = [message for message in run.person.inbox if message.expires_ms > run.now]
        inbox.append(
            InboxMessage(
                key=key,
                ts_ms=run.now,
                expires_ms=run.now + action.expires_ms,
                journey=journey.id,
                step=step.id,
                message=action.message,
                purpose=action.purpose,
                subject=subject,
                body=body,
                payload=payload,
            )
        )
        run.person.inbox = inbox[-MAX_INBOX:]
    else:
        run.messages.append(
            _message(run, journey, step, action, key, action.channel, to, subject, body, html, payload, account)
        )
    if channel_type != "agent_note":
        sent = Sent(run.now, action.channel, action.purpose)
        run.person.sent = [*run.policy.prune(run.person.sent, run.now), sent]
        run.account_sends.append(sent)
    return outcome("sent", key)


def _hold(journey: Journey, instance: Instance, step: CompiledStep, kind: str, verdict: Verdict, run: Run) -> bool:
    """Quiet hours: the instance waits at the step until they end (recorded once)."""
    instance.due_ms = verdict.until_ms
    if not instance.held:
        instance.held = verdict.reason
        run.record(instance, kind, step.id, f"held: {verdict.reason} until {verdict.until_ms}")
        run.count(journey.id, journey.version, f"{kind}:{step.id}:held")
    return False


def _invite(journey: Journey, instance: Instance, step: CompiledStep, context: dict[str, Any], run: Run) -> bool:
    """A ``survey`` step: invite the customer unless sampling, fatigue control or
    the contact policy (purpose ``surveys``) says no — every invitation not sent is
    recorded with its reason. ``False`` when the invitation waits for quiet hours."""
    survey_id = step.survey or ""
    survey = run.surveys.get(survey_id)
    key = _digest(f"{run.workspace}|{run.holder}|{instance.id}|{step.id}|{instance.visits}")
    traits = context.get("traits") or {}
    trigger = instance.trigger or {}
    record = InvitationRecord(
        id=key,
        workspace=run.workspace,
        customer_id=run.customer_id,
        survey=survey_id,
        version=survey.version if survey is not None else 0,
        metric=survey.metric if survey is not None else "",
        status="suppressed",
        created_ms=run.now,
        journey="" if journey.survey_rule else journey.id,
        journey_version=0 if journey.survey_rule else journey.version,
        step="" if journey.survey_rule else step.id,
        instance="" if journey.survey_rule else instance.id,
        trigger={name: trigger.get(name) for name in ("seq", "name", "channel", "ts") if name in trigger},
        account=run.holder.removeprefix("account:") if run.holder != run.customer_id else "",
    )

    def outcome(result: str, reason: str = "") -> bool:
        record.reason = reason
        if result == "sent":
            record.status = "sent"
        run.invitations.append(record)
        detail = f"{result}: {reason or key}" if result != "sent" else f"sent: {key}"
        run.record(instance, "survey", step.id, detail)
        run.count(journey.id, journey.version, f"survey:{step.id}:{result if result != 'skipped' else reason}")
        return True

    if survey is None:
        return outcome("skipped", "survey_unavailable")
    if instance.holdout:
        return outcome("skipped", "holdout")
    if run.late:
        return outcome("skipped", "late")
    if survey.sample < 1 and _share(f"sample|{survey.id}|{key}") >= survey.sample:
        return outcome("skipped", "sampled_out")
    channel, to = _survey_channel(survey, step.survey_channel, str(trigger.get("channel") or ""), traits, run)
    if channel is None:
        return outcome("skipped", "no_channel")
    record.channel = channel
    refusal = run.fatigue.refusal(
        survey=survey.id,
        recontact_ms=survey.recontact_ms,
        person=run.person.surveys,
        answered_ms=run.answered_ms,
        accounts=run.account_surveys,
        open_journeys=[item for item in run.open_journeys() if item[0] != journey.id],
        now_ms=run.now,
    )
    if refusal is not None:
        return outcome("skipped", refusal)
    verdict = run.policy.check(
        channel=channel,
        purpose="surveys",
        view=context,
        sent=run.person.sent,
        account_sent=run.account_sent,
        now_ms=run.now,
    )
    if verdict.kind == "skip":
        return outcome("skipped", verdict.reason)
    if verdict.kind == "hold":
        return _hold(journey, instance, step, "survey", verdict, run)
    instance.held = ""
    locale = survey.locale_for(traits.get(run.locale_trait))
    expires_ms = (run.now + survey.expires_ms) // 1000 * 1000
    token = make_token(run.survey_secret, key, expires_ms)
    link = run.survey_url + token
    record.locale = locale
    record.expires_ms = expires_ms
    record.event_channel = run.channel_events.get(channel, channel)
    survey_view = {
        "id": survey.id,
        "name": survey.spec.name,
        "metric": survey.metric,
        "question": survey.question_text(locale),
        "link": link,
        "token": token,
        "invitation": key,
        "locale": locale,
        "expires": expires_ms,
    }
    template_context = {**context, "customer_id": run.customer_id, "survey": survey_view}
    channel_type = SURVEY_CHANNEL if channel == SURVEY_CHANNEL else run.channel_types.get(channel, "")
    try:
        if channel_type == "smtp":
            subject: str | None = survey.subject[locale].render(template_context)
            body: str | None = survey.body[locale].render(template_context)
            html = survey.html[locale].render(template_context) if locale in survey.html else None
            payload: Any = None
        else:
            subject = html = None
            body = survey.text[locale].render(template_context)
            payload = {
                "to": to,
                "text": body,
                "survey": survey.id,
                "invitation": key,
                "link": link,
                "customer_id": run.customer_id,
                "locale": locale,
            }
    except TemplateError as error:
        return outcome("skipped", f"template_error: {error.message}")
    if channel_type != SURVEY_CHANNEL:
        run.messages.append(
            OutboundMessage(
                key=key,
                workspace=run.workspace,
                customer_id=run.customer_id,
                channel=channel,
                purpose="surveys",
                journey=journey.id,
                version=journey.version,
                step=step.id,
                message=f"survey:{survey.id}",
                created_ms=run.now,
                to=to,
                subject=subject,
                body=body,
                html=html,
                payload=payload,
                account=record.account or None,
            )
        )
    sent = Sent(run.now, channel, "surveys")
    run.person.sent = [*run.policy.prune(run.person.sent, run.now), sent]
    run.account_sends.append(sent)
    run.person.surveys.remember(survey.id, run.now, run.fatigue.account_window_ms)
    return outcome("sent")


IN_APP_EVENT_CHANNELS: Final = frozenset({"app", "web", "in_app"})
"""Where a customer is when an in-app survey is the channel they are in."""


def _survey_channel(
    survey: Survey, wanted: str | None, trigger_channel: str, traits: Mapping[str, Any], run: Run
) -> tuple[str | None, str | None]:
    """The channel to ask in and the address: the one named (the step's, or the
    trigger's); else the channel the customer is in (the survey channel whose event
    channel is the triggering event's; ``in_app`` for ``app`` and ``web``); else the
    first of the survey's channels that can reach the customer (an email address
    for smtp, a phone number for a webhook; in-app always)."""
    candidates = [wanted] if wanted else list(survey.channels)
    if not wanted and trigger_channel:
        here = [
            channel
            for channel in candidates
            if run.channel_events.get(channel, channel) == trigger_channel
            or (channel == SURVEY_CHANNEL and trigger_channel in IN_APP_EVENT_CHANNELS)
        ]
        candidates = here + [channel for channel in candidates if channel not in here]
    for channel in candidates:
        if channel == SURVEY_CHANNEL:
            return channel, None
        channel_type = run.channel_types.get(channel)
        if channel_type is None:
            continue
        address = traits.get(DEFAULT_ADDRESS.get(channel_type, ""))
        if address not in (None, ""):
            return channel, str(address)
    return None, None


def _message(
    run: Run,
    journey: Journey,
    step: CompiledStep,
    action: CompiledAction,
    key: str,
    channel: str,
    to: str | None,
    subject: str | None,
    body: str | None,
    html: str | None,
    payload: Any,
    account: str | None,
) -> OutboundMessage:
    return OutboundMessage(
        key=key,
        workspace=run.workspace,
        customer_id=run.customer_id,
        channel=channel,
        purpose=action.purpose,
        journey=journey.id,
        version=journey.version,
        step=step.id,
        message=action.message,
        created_ms=run.now,
        to=to,
        subject=subject,
        body=body,
        html=html,
        payload=payload,
        account=account,
    )


# --- goals, exits, conditions -----------------------------------------------------------------


def _context(run: Run, instance: Instance, event: dict[str, Any] | None) -> dict[str, Any]:
    return {
        **run.view(),
        "event": event,
        "trigger": instance.trigger,
        "journey": {
            "id": instance.journey,
            "version": instance.version,
            "step": instance.step,
            "variant": instance.variants,
            "holdout": instance.holdout,
            "entered": instance.entered_ms,
        },
    }


def _moves(journey: Journey, instance: Instance, occurrence: Occurrence) -> bool:
    """Whether an event can move an instance: it waits for it, or it may exit on it."""
    step = journey.steps[instance.step]
    waits = step.kind == "wait_for" and occurrence.name == step.event
    return waits or occurrence.name in journey.exit_events or journey.exits_on_any_event


def _holds(condition: Condition | None, context: Mapping[str, Any]) -> bool:
    return condition is None or condition(context)


def _exit_reason(journey: Journey, occurrence: Occurrence, context: Mapping[str, Any]) -> str | None:
    for event_name, condition, name in journey.exits:
        if (event_name is None or event_name == occurrence.name) and _holds(condition, context):
            return name
    return None


def _check_goals(scope: Scope, state: JourneyState, occurrence: Occurrence, event: dict[str, Any], run: Run) -> None:
    """A goal counts once per entry, within its window after the entry — also after
    the instance has ended, so treatment and holdout are measured alike."""
    if occurrence.name not in scope.goal_events:
        return
    for journey_id, history in sorted(state.history.items()):
        if history.converted or not history.goal_by_ms or history.goal_by_ms < run.now:
            continue
        journey = scope.journey(journey_id, history.version)
        if journey is None or journey.goal_event != occurrence.name:
            continue
        instance = state.instances.get(journey_id)
        probe = instance or Instance(
            id="", journey=journey_id, version=history.version, step="", entered_ms=history.last_entered_ms
        )
        if not _holds(journey.goal_when, _context(run, probe, event)):
            continue
        history.converted = True
        run.count(journey_id, history.version, "goal:holdout" if history.holdout else "goal")
        run.record(probe, "goal", probe.step, occurrence.name or "")
        if instance is not None and journey.goal_exits:
            _end(state, instance, "goal", run)


def _count_failure(scope: Scope, occurrence: Occurrence, run: Run) -> None:
    properties = occurrence.properties
    journey, version, step = properties.get("journey"), properties.get("version"), properties.get("step")
    known = isinstance(journey, str) and isinstance(version, int) and isinstance(step, str)
    if known and scope.journey(str(journey), int(str(version))) is not None:
        run.count(str(journey), int(str(version)), f"action:{step}:failed")
