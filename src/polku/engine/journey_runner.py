"""The processor's journey stage: feeds events, segment entries and timers to the
pure engine (``polku.core.journey_engine``) and folds what it returns into the
batch's ``StateChanges`` — journey states, transitions, stats, outbox messages and
timers — so they commit with the checkpoint in one transaction.

A holder's timer (the ``timers`` table, one row per customer or ``account:<id>``)
is the earliest of its segment re-check (``Profile.timer_ms``) and its journey
state's next due moment; ``settle_timers`` writes it once per batch for every
holder whose either part moved.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Final

from polku.core.events import SYSTEM_CHANNEL
from polku.core.journey_engine import EMPTY_SCOPE, Occurrence, Run, Scope, merge_states, on_event, on_time, schedule
from polku.core.journey_spec import Entry, Journey, JourneySpec, Step, SurveyStep, compile_journey, parse_journey
from polku.core.journey_state import ACCOUNT_PREFIX, JourneyState, account_holder
from polku.core.profile import Profile
from polku.core.segments import ENTERED_EVENT
from polku.core.survey_fatigue import latest_answer
from polku.core.survey_spec import Survey, Trigger, compile_survey, parse_survey
from polku.engine.runtime import WorkspaceRuntime

if TYPE_CHECKING:
    from polku.engine.processor import Processor

log = logging.getLogger("polku.journeys")
SURVEY_JOURNEY_PREFIX: Final = "survey:"
DEFAULT_PUBLIC_URL: Final = "http://127.0.0.1:8000"
"""Where survey links point when neither the workspace (``surveys.base_url``) nor
the server (``POLKU_PUBLIC_URL``) says."""
MAX_CASCADE: Final = 1000
"""Segment entries one event may set off (a journey's profile update can enter a
segment, which can start a journey …): a guard against a runaway loop."""


class JourneyRunner:
    def __init__(self, processor: Processor) -> None:
        self.processor = processor
        self.scopes: dict[str, tuple[Scope, Scope]] = {}
        self._token: object = None
        self._compiled: dict[tuple[str, str, int, str], Journey] = {}
        self.entries: dict[tuple[str, str], int] = {}
        self.states: dict[tuple[str, str], JourneyState | None] = {}
        self.dirty: set[tuple[str, str]] = set()
        self.segment_entries: list[tuple[str, str, str, int]] = []
        """(workspace, customer, segment, seq) entered during this event."""
        self.surveys: dict[str, dict[str, Survey]] = {}
        """Workspace → its active surveys (current versions) by id."""
        self._compiled_surveys: dict[tuple[str, str, int, str], Survey] = {}
        self.survey_secret = processor.store.survey_secret()
        self.public_url = os.environ.get("POLKU_PUBLIC_URL") or DEFAULT_PUBLIC_URL

    # -- deployed journeys ---------------------------------------------------------------

    def refresh(self) -> None:
        """Compile the journeys again when a deployment or a status changed."""
        reader = self.processor.reader
        token = reader.journeys_token()
        if token == self._token:
            return
        rows = reader.journeys()
        heads: dict[tuple[str, str], int] = {}
        for workspace, journey_id, version, _, _ in rows:
            heads[(workspace, journey_id)] = max(version, heads.get((workspace, journey_id), 0))
        by_workspace: dict[str, list[tuple[Journey, str, bool]]] = {}
        compiled: dict[tuple[str, str, int, str], Journey] = {}
        for workspace, journey_id, version, status, body in rows:
            runtime = self.processor.runtime(workspace)
            cache_key = (workspace, journey_id, version, body)
            journey = self._compiled.get(cache_key) or _compile(body, journey_id, version, runtime)
            if journey is None:
                continue
            compiled[cache_key] = journey
            by_workspace.setdefault(workspace, []).append((journey, status, heads[(workspace, journey_id)] == version))
        self._compiled = compiled
        for workspace, items in self._survey_journeys().items():
            by_workspace.setdefault(workspace, []).extend(items)
        self.scopes = {
            workspace: (
                Scope.build(item for item in items if not item[0].per_account),
                Scope.build(item for item in items if item[0].per_account),
            )
            for workspace, items in by_workspace.items()
        }
        self._token = token

    def _survey_journeys(self) -> dict[str, list[tuple[Journey, str, bool]]]:
        """The deployed surveys, and a journey for each of their triggers: enter on
        the event (and condition), wait the delay, ask (``survey:<id>:<n>``). Their
        version stays 1 across the survey's versions, so a customer waiting for
        the delay is asked by the survey's version of the moment."""
        surveys: dict[str, dict[str, Survey]] = {}
        compiled: dict[tuple[str, str, int, str], Survey] = {}
        journeys: dict[str, list[tuple[Journey, str, bool]]] = {}
        for workspace, survey_id, version, status, body in self.processor.reader.surveys():
            runtime = self.processor.runtime(workspace)
            key = (workspace, survey_id, version, body)
            survey = self._compiled_surveys.get(key) or _compile_survey(body, survey_id, version, runtime)
            if survey is None:
                continue
            compiled[key] = survey
            if status == "active":
                surveys.setdefault(workspace, {})[survey_id] = survey
            for index, trigger in enumerate(survey.spec.triggers):
                journey = survey_trigger_journey(survey, index, trigger)
                journeys.setdefault(workspace, []).append((journey, status, True))
        self._compiled_surveys = compiled
        self.surveys = surveys
        return journeys

    def scopes_of(self, workspace: str) -> tuple[Scope, Scope]:
        return self.scopes.get(workspace, (EMPTY_SCOPE, EMPTY_SCOPE))

    # -- state through the batch ----------------------------------------------------------

    def reset(self) -> None:
        self.states.clear()
        self.entries.clear()
        self.dirty.clear()
        self.segment_entries.clear()

    def trim(self, capacity: int) -> None:
        if len(self.states) > capacity:
            for key in list(self.states)[: len(self.states) - capacity + capacity // 10]:
                del self.states[key]

    def state(self, workspace: str, holder: str) -> JourneyState | None:
        key = (workspace, holder)
        try:
            return self.states[key]
        except KeyError:
            found = self.processor.store.journey_state(workspace, holder)
            self.states[key] = found
            return found

    def put(self, workspace: str, holder: str, state: JourneyState) -> None:
        key = (workspace, holder)
        self.states[key] = state
        self.processor.changes.journey_states[key] = state
        self.dirty.add(key)

    def entry_count(self, workspace: str, journey_id: str) -> int:
        key = (workspace, journey_id)
        found = self.entries.get(key)
        if found is None:
            found = self.processor.store.journey_entries(workspace, journey_id)
            self.entries[key] = found
        return found

    # -- events --------------------------------------------------------------------------

    def after_event(self, workspace: str, runtime: WorkspaceRuntime, profile: Profile, occurrence: Occurrence) -> None:
        """The journeys of an event of ``profile``'s customer, then of the segments
        the event made it (or anyone) enter."""
        if not self.processor.emit:
            self.segment_entries.clear()
            return
        self._person_event(workspace, runtime, profile, occurrence)
        self.drain(workspace, runtime)

    def drain(self, workspace: str, runtime: WorkspaceRuntime) -> None:
        if not self.processor.emit:  # a rebuild: journeys keep their state and do not run
            self.segment_entries.clear()
            return
        for _ in range(MAX_CASCADE):
            if not self.segment_entries:
                return
            entry_workspace, customer_id, segment, seq = self.segment_entries.pop(0)
            try:
                profile = self.processor.profile(entry_workspace, customer_id)
            except LookupError:
                continue
            occurrence = Occurrence(
                ENTERED_EVENT, "track", SYSTEM_CHANNEL, {"segment": segment}, self.processor.now, seq, internal=True
            )
            self._person_event(entry_workspace, self.processor.runtime(entry_workspace), profile, occurrence)
        log.warning(
            "workspace %s: more than %d segment entries from one event; the rest ignored", workspace, MAX_CASCADE
        )
        self.segment_entries.clear()

    def _person_event(
        self, workspace: str, runtime: WorkspaceRuntime, profile: Profile, occurrence: Occurrence
    ) -> None:
        person_scope, account_scope = self.scopes_of(workspace)
        customer_id = profile.customer_id
        if person_scope is not EMPTY_SCOPE and (person_scope.may_care(occurrence) or person_scope.scheduled):
            state = self.state(workspace, customer_id)
            if person_scope.cares(occurrence, state) or _unscheduled(person_scope, state, profile):
                state = state if state is not None else JourneyState()
                run = self._run(workspace, runtime, customer_id, profile, state, occurrence.seq)
                on_event(person_scope, state, occurrence, run)
                self._finish(workspace, runtime, profile, customer_id, state, run)
        if account_scope is not EMPTY_SCOPE and account_scope.may_care(occurrence):
            for account_id in sorted(profile.accounts):
                holder = account_holder(account_id)
                state = self.state(workspace, holder)
                if account_scope.cares(occurrence, state):
                    state = state if state is not None else JourneyState()
                    run = self._run(workspace, runtime, holder, profile, state, occurrence.seq)
                    on_event(account_scope, state, occurrence, run)
                    self._finish(workspace, runtime, profile, holder, state, run)

    def fire(self, workspace: str, holder: str, profile: Profile | None) -> None:
        """The journey part of a holder's timer (the processor did the segment part)."""
        if not self.processor.emit:
            return
        state = self.state(workspace, holder)
        if state is None:
            return
        due = state.next_due()
        if not due or due > self.processor.now:
            self.dirty.add((workspace, holder))
            return
        runtime = self.processor.runtime(workspace)
        person_scope, account_scope = self.scopes_of(workspace)
        if holder.startswith(ACCOUNT_PREFIX):
            actor = next((i.actor for i in state.instances.values() if i.actor), "")
            try:
                profile = (
                    self.processor.profile(workspace, self.processor.redirect(workspace, actor)) if actor else None
                )
            except LookupError:
                profile = None
            scope = account_scope
        else:
            scope = person_scope
        run = self._run(workspace, runtime, holder, profile, state, 0)
        on_time(scope, state, run)
        self._finish(workspace, runtime, profile, holder, state, run, force=True)
        self.drain(workspace, runtime)

    def merge(self, workspace: str, absorbed: str, survivor: str) -> None:
        """Customer ``absorbed`` became ``survivor``: its journeys move over."""
        old = self.state(workspace, absorbed)
        if old is None:
            return
        runtime = self.processor.runtime(workspace)
        state = self.state(workspace, survivor) or JourneyState()
        run = self._run(workspace, runtime, survivor, None, state, 0)
        merge_states(self.scopes_of(workspace)[0], state, old, run)
        self._finish(workspace, runtime, None, survivor, state, run)
        self.states[(workspace, absorbed)] = None
        self.processor.changes.journey_states[(workspace, absorbed)] = None
        self.dirty.add((workspace, absorbed))

    # -- one run ---------------------------------------------------------------------------

    def _run(
        self,
        workspace: str,
        runtime: WorkspaceRuntime,
        holder: str,
        profile: Profile | None,
        state: JourneyState,
        seq: int,
    ) -> Run:
        processor = self.processor
        customer_id = profile.customer_id if profile is not None else holder
        person = state
        if holder != customer_id:
            person = self.state(workspace, customer_id) or JourneyState()
        cached: dict[str, Any] = {}

        def view() -> dict[str, Any]:
            if "view" not in cached:
                cached["view"] = processor.view(workspace, runtime, profile) if profile is not None else {}
            return cached["view"]  # type: ignore[no-any-return]

        account_sent: Mapping[str, Any] = {}
        if profile is not None and any(cap.account for cap in runtime.policy.caps):
            account_sent = {
                account_id: (self.state(workspace, account_holder(account_id)) or JourneyState()).sent
                for account_id in sorted(profile.accounts)
            }
        segments = profile.segments if profile is not None else {}
        scope = self.scopes_of(workspace)[0]

        def open_journeys() -> list[tuple[str, bool]]:
            found = []
            for journey_id, instance in person.instances.items():
                journey = scope.journey(journey_id, instance.version)
                found.append((journey_id, journey is not None and journey.blocks_surveys))
            return found

        account_surveys: Mapping[str, Any] = {}
        if profile is not None and runtime.fatigue.account_max is not None:
            account_surveys = {
                account_id: (self.state(workspace, account_holder(account_id)) or JourneyState()).surveys
                for account_id in sorted(profile.accounts)
            }
        base = (runtime.survey_base_url or self.public_url).rstrip("/")
        return Run(
            workspace=workspace,
            holder=holder,
            customer_id=customer_id,
            now=processor.now,
            seq=seq,
            view=view,
            policy=runtime.policy,
            channel_types=runtime.channel_types,
            person=person,
            account_sent=account_sent,
            notes_forward=runtime.notes_forward,
            notes_keep=runtime.notes_keep,
            entries=lambda journey_id: self.entry_count(workspace, journey_id),
            in_segments=lambda segment: segment in segments,
            surveys=self.surveys.get(workspace, {}),
            fatigue=runtime.fatigue,
            survey_secret=self.survey_secret,
            survey_url=f"{base}/s/",
            locale_trait=runtime.locale_trait,
            answered_ms=latest_answer(profile.feedback) if profile is not None else 0,
            account_surveys=account_surveys,
            open_journeys=open_journeys,
            channel_events=runtime.channel_events,
        )

    def _finish(
        self,
        workspace: str,
        runtime: WorkspaceRuntime,
        profile: Profile | None,
        holder: str,
        state: JourneyState,
        run: Run,
        *,
        force: bool = False,
    ) -> None:
        processor = self.processor
        changes = processor.changes
        before = state.schedule_due_ms
        if profile is not None:
            schedule(self.scopes_of(workspace)[1 if holder.startswith(ACCOUNT_PREFIX) else 0], state, run)
        if not (
            force or run.transitions or run.stats or run.messages or run.invitations or state.schedule_due_ms != before
        ):
            return
        self.put(workspace, holder, state)
        if run.person is not state:
            self.put(workspace, run.customer_id, run.person)
        changes.transitions.extend((workspace, record) for record in run.transitions)
        changes.messages.extend(run.messages)
        changes.invitations.extend(run.invitations)
        sent_surveys = [record for record in run.invitations if record.status == "sent"]
        if sent_surveys and profile is not None and runtime.fatigue.account_max is not None:
            for account_id in sorted(profile.accounts):
                account = account_holder(account_id)
                account_state = self.state(workspace, account) or JourneyState()
                for record in sent_surveys:
                    account_state.surveys.remember(record.survey, record.created_ms, runtime.fatigue.account_window_ms)
                self.put(workspace, account, account_state)
        for (journey_id, version, metric), delta in run.stats.items():
            key = (workspace, journey_id, version, metric)
            changes.journey_stats[key] = changes.journey_stats.get(key, 0) + delta
            if metric in ("entered", "entered:holdout"):
                self.entries[(workspace, journey_id)] = self.entry_count(workspace, journey_id) + delta
        if run.account_sends and profile is not None and any(cap.account for cap in runtime.policy.caps):
            for account_id in sorted(profile.accounts):
                account = account_holder(account_id)
                account_state = self.state(workspace, account) or JourneyState()
                account_state.sent = [*runtime.policy.prune(account_state.sent, run.now), *run.account_sends]
                self.put(workspace, account, account_state)
        if run.trait_updates and profile is not None:
            for name, value in run.trait_updates.items():
                profile.traits[name] = (value, processor.now, run.seq)
            processor.put_profile(workspace, profile)
            processor.evaluate(
                workspace, runtime, profile, {f"traits.{name}" for name in run.trait_updates}, f"{run.seq}:journey"
            )

    # -- timers ------------------------------------------------------------------------------

    def mark(self, workspace: str, holder: str) -> None:
        self.dirty.add((workspace, holder))

    def settle_timers(self) -> None:
        """Write the timer of every holder whose segment or journey due moved."""
        processor = self.processor
        for workspace, holder in sorted(self.dirty):
            dues = []
            state = self.state(workspace, holder)
            if state is not None and state.next_due():
                dues.append(state.next_due())
            if not holder.startswith(ACCOUNT_PREFIX):
                try:
                    profile = processor.profile(workspace, holder)
                except LookupError:
                    profile = None
                if profile is not None and profile.timer_ms:
                    dues.append(profile.timer_ms)
            processor.changes.timers[(workspace, holder)] = min(dues) if dues else None
        self.dirty.clear()


def _unscheduled(scope: Scope, state: JourneyState | None, profile: Profile) -> bool:
    """A member of a scheduled journey's segment without its next tick (the journey
    was deployed after they entered the segment): any event of theirs sets it."""
    if not scope.scheduled or (state is not None and state.schedule_due_ms):
        return False
    return any(journey.entry_segment in profile.segments for journey in scope.scheduled)


def survey_trigger_journey(survey: Survey, index: int, trigger: Trigger) -> Journey:
    steps = []
    if trigger.delay.strip() not in ("0", "0s", "0m", "0h", "0d"):
        steps.append(Step(id="delay", wait=trigger.delay))
    steps.append(Step(id="ask", survey=SurveyStep(id=survey.id, channel=trigger.channel)))
    spec = JourneySpec(
        id=f"survey-{survey.id}-{index}",
        name=f"survey {survey.id}: trigger {index + 1}",
        entry=Entry(event=trigger.event, when=trigger.when, reentry="always"),
        steps=steps,
    )
    journey = compile_journey(spec, version=1, rule_of=survey.id)
    return replace(journey, id=f"{SURVEY_JOURNEY_PREFIX}{survey.id}:{index}")


def _compile_survey(body: str, survey_id: str, version: int, runtime: WorkspaceRuntime) -> Survey | None:
    """A stored version (validated when deployed); like a journey, it runs without
    today's channel check rather than not at all."""
    try:
        spec = parse_survey(body, filename=f"{survey_id}.yaml")
        try:
            return compile_survey(spec, version=version, channels=runtime.channel_types)
        except Exception:
            return compile_survey(spec, version=version)
    except Exception:
        log.exception("survey %s version %d does not compile; it is not run", survey_id, version)
        return None


def _compile(body: str, journey_id: str, version: int, runtime: WorkspaceRuntime) -> Journey | None:
    """A stored version (validated when it was deployed). It may no longer compile
    against today's channels: then it runs without that check (its action fails
    with the reason, recorded) rather than abandoning its running instances."""
    try:
        spec = parse_journey(body, filename=f"{journey_id}.yaml")
        try:
            return compile_journey(spec, version=version, channels=runtime.channel_types)
        except Exception:
            return compile_journey(spec, version=version)
    except Exception:
        log.exception("journey %s version %d does not compile; it is not run", journey_id, version)
        return None
