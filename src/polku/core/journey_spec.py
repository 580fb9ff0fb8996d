"""Journey definitions: the YAML a user writes, validated and compiled (pure).

A journey is an entry rule, a list of steps and, optionally, a goal and exit
conditions (docs/journeys.md). Parsing reports errors with the file, the line and the
field (``welcome.yaml:14: steps[2].wait_for.within: '2 hours' is not a duration``);
compiling turns every condition into a closure of the one expression language
(``polku.core.expr``) and every template into a sandboxed Jinja template, once per
deployed version.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

import msgspec

from polku.core.attributes import parse_duration
from polku.core.errors import ConfigError
from polku.core.expr import Condition, Expression, compile_condition, compile_expression
from polku.core.segments import SEGMENT_ROOTS
from polku.core.templates import Template, compile_template

ID_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_\-]{0,62}")
STEP_KINDS: Final = ("wait", "wait_for", "branch", "split", "action", "survey", "update_profile", "exit")
END: Final = "end"
"""The name of the end of a journey, as a ``next``."""
JOURNEY_ROOTS: Final = SEGMENT_ROOTS | {"event", "trigger", "journey"}
"""What a journey condition reads: the profile's roots (docs/expressions.md), the
event being processed (``event``), the event that started the instance
(``trigger``), and the instance itself (``journey``: ``variant``, ``holdout``,
``entered``, ``step``)."""
BUILTIN_CHANNELS: Final = frozenset({"agent_note", "in_app"})
"""Channels polku delivers itself (into the customer's state); the others are
configured in the workspace's ``channels`` section."""
PURPOSES: Final = ("service", "marketing", "surveys", "transactional")
MAX_STEPS: Final = 200
MAX_HOLDOUT: Final = 0.9
TIME_OF_DAY: Final = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


class Schedule(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Enter every member of ``segment`` every ``every`` (at ``at``, UTC, when given)."""

    segment: str
    every: str = "1d"
    at: str | None = None


class Entry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    event: str | None = None
    segment: str | None = None
    schedule: Schedule | None = None
    when: str | None = None
    reentry: str = "never"
    """``never``, ``always``, or ``after 30d`` (a period after the last entry)."""
    cap: int | None = None
    """At most this many entries in all (per journey, across versions)."""
    per: Literal["customer", "account"] = "customer"


class WaitUntil(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    until: str
    """A time of day, ``"09:00"``, in the customer's time zone."""
    days: list[str] | None = None
    """Week days allowed (``mon`` … ``sun``); every day without it."""


class WaitFor(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    event: str
    within: str
    when: str | None = None
    on_event: str | None = None
    on_timeout: str | None = None


class Case(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    next: str
    when: str | None = None
    """No ``when``: the case that matches when no earlier case did (the last one)."""


class Arm(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    share: float
    next: str | None = None


class Action(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    channel: str
    purpose: str = "service"
    message: str | None = None
    """A name for the message in stats and deliveries (the step id without it)."""
    to: str | None = None
    """An expression for the recipient (the channel's default without it, e.g.
    ``traits.email``)."""
    subject: str | None = None
    body: str | None = None
    html: str | None = None
    payload: dict[str, Any] | None = None
    """A webhook's JSON body; every string in it is a template."""
    expires: str | None = None
    """How long an in-app message stays queued (``7d`` without it)."""


class SurveyStep(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Invite the customer to a survey (docs/surveys.md): fatigue control and the
    contact policy (purpose ``surveys``) decide whether the invitation goes."""

    id: str
    channel: str | None = None
    """The channel to ask in (the first of the survey's channels that reaches the
    customer without it)."""


class Exit(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    event: str | None = None
    when: str | None = None
    name: str | None = None


class Goal(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    event: str
    within: str = "30d"
    when: str | None = None
    exit: bool = True
    """Leave the journey once the goal is reached."""


class Step(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: str
    next: str | None = None
    wait: str | WaitUntil | None = None
    wait_for: WaitFor | None = None
    branch: list[Case] | None = None
    split: list[Arm] | None = None
    action: Action | None = None
    survey: str | SurveyStep | None = None
    update_profile: dict[str, str] | None = None
    """Trait name → expression; the value is written to the profile."""
    exit: bool | None = None


class Migration(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Move the running instances of an older version onto this one."""

    steps: dict[str, str]
    """Old step id → new step id; an instance at a step not named keeps its version."""
    from_versions: list[int] | None = None


class JourneySpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: str
    name: str = ""
    description: str = ""
    entry: Entry
    steps: list[Step]
    goal: Goal | None = None
    exit: list[Exit] = []
    holdout: float = 0.0
    """The share of entering customers who receive no action (the control group)."""
    max_lateness: str | None = None
    """A wait that ends later than this after its due time (the service was down)
    skips the actions it leads to (recorded as ``skipped:late``); without it, late
    waits act as soon as they fire."""
    migrate: Migration | None = None
    blocks_surveys: bool = False
    """While a customer is in this journey (an open complaint), no survey asks them."""


# --- compiled form --------------------------------------------------------------------


@dataclass(frozen=True)
class CompiledStep:
    id: str
    kind: str
    index: int
    next: str
    wait_ms: int = 0
    until: tuple[int, int] | None = None
    days: frozenset[int] | None = None
    event: str | None = None
    condition: Condition | None = None
    on_event: str = END
    on_timeout: str = END
    cases: tuple[tuple[Condition | None, str], ...] = ()
    arms: tuple[tuple[str, float, str], ...] = ()
    action: CompiledAction | None = None
    updates: tuple[tuple[str, Expression], ...] = ()
    survey: str | None = None
    survey_channel: str | None = None


@dataclass(frozen=True)
class CompiledAction:
    channel: str
    purpose: str
    message: str
    to: Expression | None
    subject: Template | None
    body: Template | None
    html: Template | None
    payload: Any
    """The payload with every string compiled to a ``Template``."""
    expires_ms: int


@dataclass(frozen=True)
class Journey:
    """One deployed version of a journey, ready for the engine."""

    id: str
    version: int
    spec: JourneySpec
    steps: Mapping[str, CompiledStep]
    first: str
    entry_event: str | None
    entry_segment: str | None
    entry_when: Condition | None
    reentry: Literal["never", "always", "after"]
    reentry_after_ms: int
    cap: int | None
    per_account: bool
    schedule_every_ms: int
    schedule_at_ms: int | None
    goal_event: str | None
    goal_within_ms: int
    goal_when: Condition | None
    goal_exits: bool
    exits: tuple[tuple[str | None, Condition | None, str], ...]
    holdout: float
    max_lateness_ms: int = 0
    migration: Mapping[str, str] = field(default_factory=dict)
    migrate_from: frozenset[int] | None = None
    uses_trigger: bool = True
    """Whether a condition or template reads ``trigger`` (else an instance need not
    keep its entry event's properties)."""
    exit_events: frozenset[str] = frozenset()
    exits_on_any_event: bool = False
    blocks_surveys: bool = False
    survey_rule: str = ""
    """For the journeys polku makes of a survey's triggers: the survey's id (the
    journey's id is ``survey:<survey>:<trigger>``)."""

    @property
    def events(self) -> frozenset[str]:
        """Event names this journey listens to while an instance is live."""
        names = {step.event for step in self.steps.values() if step.event}
        names.update(name for name, _, _ in self.exits if name)
        if self.goal_event:
            names.add(self.goal_event)
        return frozenset(names)


# --- parsing -------------------------------------------------------------------------


def parse_journey(text: str | bytes, *, filename: str = "<journey>") -> JourneySpec:
    """YAML (or JSON) → a validated ``JourneySpec``; a ``ConfigError`` names the file,
    the line and the field of the first problem."""
    from polku.core.yaml_source import load_with_lines, located

    data, lines = load_with_lines(text, filename)
    if not isinstance(data, dict):
        raise ConfigError(f"{filename}: a journey is a mapping with `id`, `entry` and `steps`", file=filename)
    try:
        spec = msgspec.convert(data, JourneySpec)
    except msgspec.ValidationError as error:
        message = str(error)
        path = _msgspec_path(message)
        raise located(filename, lines, path, message.replace("$.", "").replace(" - at `$`", "")) from None
    try:
        validate_journey(spec)
    except ConfigError as error:
        path = str(error.details.get("field", ""))
        raise located(filename, lines, path, error.message) from None
    return spec


def _msgspec_path(message: str) -> str:
    match = re.search(r"at `\$\.?([^`]*)`", message)
    return match[1] if match else ""


def _error(path: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}", field=path)


def validate_journey(
    spec: JourneySpec, *, channels: Mapping[str, str] | None = None, surveys: Collection[str] | None = None
) -> None:
    """Semantic checks (references, cycles, durations, conditions, templates); with
    ``channels`` (name → type), every action's channel must be configured; with
    ``surveys``, every survey step must name a deployed survey."""
    compile_journey(spec, version=1, channels=channels, surveys=surveys)


def compile_journey(
    spec: JourneySpec,
    *,
    version: int,
    channels: Mapping[str, str] | None = None,
    surveys: Collection[str] | None = None,
    rule_of: str = "",
) -> Journey:
    if not ID_PATTERN.fullmatch(spec.id) and not rule_of:
        raise _error("id", f"{spec.id!r} must be 1-63 lower-case letters, digits, '-' or '_'")
    entry = spec.entry
    kinds = [name for name in ("event", "segment", "schedule") if getattr(entry, name) is not None]
    if len(kinds) != 1:
        raise _error("entry", "name exactly one of `event`, `segment` or `schedule`")
    if entry.cap is not None and entry.cap < 1:
        raise _error("entry.cap", "must be at least 1")
    reentry, reentry_after = _reentry(entry.reentry)
    if not spec.steps:
        raise _error("steps", "a journey needs at least one step")
    if len(spec.steps) > MAX_STEPS:
        raise _error("steps", f"at most {MAX_STEPS} steps")
    if not 0 <= spec.holdout <= MAX_HOLDOUT:
        raise _error("holdout", f"must be a share between 0 and {MAX_HOLDOUT} (0.1 is 10 %)")
    ids = [step.id for step in spec.steps]
    for index, step in enumerate(spec.steps):
        if not ID_PATTERN.fullmatch(step.id) or step.id == END:
            raise _error(
                f"steps[{index}].id", f"{step.id!r} must be 1-63 lower-case letters, digits, '-' or '_' (not 'end')"
            )
        if step.id in ids[:index]:
            raise _error(f"steps[{index}].id", f"step id {step.id!r} is used twice")
    steps = {step.id: _compile_step(step, index, ids, channels, surveys) for index, step in enumerate(spec.steps)}
    _check_cycles(steps, ids)
    when = _condition(entry.when, "entry.when")
    exits = tuple(
        (item.event, _condition(item.when, f"exit[{index}].when"), item.name or item.event or f"exit-{index + 1}")
        for index, item in enumerate(spec.exit)
    )
    for index, item in enumerate(spec.exit):
        if item.event is None and item.when is None:
            raise _error(f"exit[{index}]", "name an `event`, a `when` condition, or both")
    goal = spec.goal
    migration: dict[str, str] = {}
    if spec.migrate is not None:
        for old, new in spec.migrate.steps.items():
            if new not in steps:
                raise _error(f"migrate.steps.{old}", f"step {new!r} is not a step of this version")
            migration[old] = new
    schedule = entry.schedule
    journey = Journey(
        id=spec.id,
        version=version,
        spec=spec,
        steps=steps,
        first=ids[0],
        entry_event=entry.event,
        entry_segment=entry.segment or (schedule.segment if schedule else None),
        entry_when=when,
        reentry=reentry,
        reentry_after_ms=reentry_after,
        cap=entry.cap,
        per_account=entry.per == "account",
        schedule_every_ms=parse_duration(schedule.every, "entry.schedule.every") if schedule else 0,
        schedule_at_ms=_time_of_day(schedule.at, "entry.schedule.at") if schedule and schedule.at else None,
        goal_event=goal.event if goal else None,
        goal_within_ms=parse_duration(goal.within, "goal.within") if goal else 0,
        goal_when=_condition(goal.when, "goal.when") if goal else None,
        goal_exits=goal.exit if goal else False,
        exits=exits,
        holdout=spec.holdout,
        max_lateness_ms=parse_duration(spec.max_lateness, "max_lateness") if spec.max_lateness else 0,
        migration=migration,
        migrate_from=frozenset(spec.migrate.from_versions)
        if spec.migrate and spec.migrate.from_versions is not None
        else None,
    )
    return replace(
        journey,
        uses_trigger=_reads_trigger(journey),
        exit_events=frozenset(name for name, _, _ in exits if name),
        exits_on_any_event=any(name is None for name, _, _ in exits),
        blocks_surveys=spec.blocks_surveys,
        survey_rule=rule_of,
    )


def _reads_trigger(journey: Journey) -> bool:
    conditions: list[Condition | Expression | None] = [journey.entry_when, journey.goal_when]
    conditions.extend(condition for _, condition, _ in journey.exits)
    texts: list[str] = []
    if any(step.kind == "survey" for step in journey.steps.values()):
        return True  # an invitation links its answer to the triggering event
    for step in journey.steps.values():
        conditions.append(step.condition)
        conditions.extend(condition for condition, _ in step.cases)
        conditions.extend(expression for _, expression in step.updates)
        action = step.action
        if action is not None:
            conditions.append(action.to)
            texts.extend(t.source for t in (action.subject, action.body, action.html) if t is not None)
            texts.append(repr(action.payload) if action.payload is not None else "")
    if any(c is not None and any(r == "trigger" or r.startswith("trigger.") for r in c.references) for c in conditions):
        return True
    return any("trigger" in text for text in texts)


def _reentry(text: str) -> tuple[Literal["never", "always", "after"], int]:
    if text == "never":
        return "never", 0
    if text == "always":
        return "always", 0
    if isinstance(text, str) and text.startswith("after "):
        return "after", parse_duration(text[6:].strip(), "entry.reentry")
    raise _error("entry.reentry", f"{text!r} must be 'never', 'always' or 'after <duration>' (e.g. 'after 30d')")


def _condition(source: str | None, where: str) -> Condition | None:
    if source is None:
        return None
    return compile_condition(source, roots=JOURNEY_ROOTS, where=where)


def _time_of_day(text: str, where: str) -> int:
    match = TIME_OF_DAY.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise _error(where, f"{text!r} is not a time of day; write HH:MM, e.g. '09:00'")
    return (int(match[1]) * 60 + int(match[2])) * 60_000


WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _compile_step(
    step: Step, index: int, ids: list[str], channels: Mapping[str, str] | None, surveys: Collection[str] | None
) -> CompiledStep:
    where = f"steps[{index}]"
    kinds = [kind for kind in STEP_KINDS if getattr(step, kind) is not None]
    if len(kinds) != 1:
        raise _error(
            where, f"step {step.id!r} must have exactly one of {', '.join(STEP_KINDS)} (has {kinds or 'none'})"
        )
    (kind,) = kinds
    following = ids[index + 1] if index + 1 < len(ids) else END

    def target(name: str | None, field_name: str) -> str:
        if name is None:
            return following
        if name != END and name not in ids:
            raise _error(f"{where}.{field_name}", f"unknown step {name!r} (steps: {', '.join(ids)}, or 'end')")
        return name

    next_step = target(step.next, "next")
    if kind == "wait":
        wait = step.wait
        if isinstance(wait, str):
            return CompiledStep(step.id, kind, index, next_step, wait_ms=parse_duration(wait, f"{where}.wait"))
        assert isinstance(wait, WaitUntil)
        days = None
        if wait.days is not None:
            unknown = [day for day in wait.days if day not in WEEKDAYS]
            if unknown or not wait.days:
                raise _error(f"{where}.wait.days", f"week days are {', '.join(WEEKDAYS)} (got {wait.days})")
            days = frozenset(WEEKDAYS.index(day) for day in wait.days)
        minutes = _time_of_day(wait.until, f"{where}.wait.until") // 60_000
        return CompiledStep(step.id, kind, index, next_step, until=(minutes // 60, minutes % 60), days=days)
    if kind == "wait_for":
        spec = step.wait_for
        assert spec is not None
        if not spec.event:
            raise _error(f"{where}.wait_for.event", "name the event to wait for")
        return CompiledStep(
            step.id,
            kind,
            index,
            next_step,
            wait_ms=parse_duration(spec.within, f"{where}.wait_for.within"),
            event=spec.event,
            condition=_condition(spec.when, f"{where}.wait_for.when"),
            on_event=target(spec.on_event, "wait_for.on_event") if spec.on_event else next_step,
            on_timeout=target(spec.on_timeout, "wait_for.on_timeout") if spec.on_timeout else next_step,
        )
    if kind == "branch":
        cases = step.branch or []
        if not cases:
            raise _error(f"{where}.branch", "a branch needs at least one case")
        compiled: list[tuple[Condition | None, str]] = []
        for number, case in enumerate(cases):
            if case.when is None and number != len(cases) - 1:
                raise _error(f"{where}.branch[{number}]", "only the last case may omit `when` (it is the otherwise)")
            compiled.append(
                (_condition(case.when, f"{where}.branch[{number}].when"), target(case.next, f"branch[{number}].next"))
            )
        if compiled[-1][0] is not None:
            compiled.append((None, next_step))
        return CompiledStep(step.id, kind, index, next_step, cases=tuple(compiled))
    if kind == "split":
        arms = step.split or []
        if len(arms) < 2:
            raise _error(f"{where}.split", "a split needs at least two arms")
        names = [arm.name for arm in arms]
        if len(set(names)) != len(names):
            raise _error(f"{where}.split", f"arm names must differ (got {names})")
        if any(arm.share <= 0 for arm in arms):
            raise _error(f"{where}.split", "every arm needs a positive share")
        total = sum(arm.share for arm in arms)
        return CompiledStep(
            step.id,
            kind,
            index,
            next_step,
            arms=tuple(
                (arm.name, arm.share / total, target(arm.next, f"split[{number}].next"))
                for number, arm in enumerate(arms)
            ),
        )
    if kind == "action":
        assert step.action is not None
        return CompiledStep(
            step.id, kind, index, next_step, action=_compile_action(step.action, step.id, f"{where}.action", channels)
        )
    if kind == "survey":
        survey = step.survey if isinstance(step.survey, SurveyStep) else SurveyStep(id=str(step.survey))
        if not ID_PATTERN.fullmatch(survey.id):
            raise _error(f"{where}.survey", f"{survey.id!r} is not a survey id")
        if surveys is not None and survey.id not in surveys:
            known = ", ".join(sorted(surveys)) or "none deployed"
            raise _error(f"{where}.survey", f"unknown survey {survey.id!r} (surveys: {known})")
        if survey.channel is not None and not ID_PATTERN.fullmatch(survey.channel):
            raise _error(f"{where}.survey.channel", f"{survey.channel!r} is not a channel name")
        return CompiledStep(step.id, kind, index, next_step, survey=survey.id, survey_channel=survey.channel)
    if kind == "update_profile":
        updates = step.update_profile or {}
        if not updates:
            raise _error(f"{where}.update_profile", "name at least one trait and its expression")
        return CompiledStep(
            step.id,
            kind,
            index,
            next_step,
            updates=tuple(
                (name, compile_expression(source, roots=JOURNEY_ROOTS, where=f"{where}.update_profile.{name}"))
                for name, source in updates.items()
            ),
        )
    return CompiledStep(step.id, "exit", index, END)


def _compile_action(action: Action, step_id: str, where: str, channels: Mapping[str, str] | None) -> CompiledAction:
    channel = action.channel
    if channel not in BUILTIN_CHANNELS and channels is not None and channel not in channels:
        known = sorted({*BUILTIN_CHANNELS, *channels})
        raise _error(f"{where}.channel", f"unknown channel {channel!r} (configured: {', '.join(known)})")
    if not ID_PATTERN.fullmatch(channel):
        raise _error(f"{where}.channel", f"{channel!r} is not a channel name")
    if action.purpose not in PURPOSES and not ID_PATTERN.fullmatch(action.purpose):
        raise _error(f"{where}.purpose", f"{action.purpose!r} is not a purpose name")
    kind = channel if channel in BUILTIN_CHANNELS else (channels or {}).get(channel)
    if kind in ("smtp", "email") and action.subject is None:
        raise _error(f"{where}.subject", "an email needs a subject")
    if kind in ("smtp", "email", "agent_note", "in_app") and action.body is None:
        raise _error(f"{where}.body", "this channel needs a body")
    return CompiledAction(
        channel=channel,
        purpose=action.purpose,
        message=action.message or step_id,
        to=compile_expression(action.to, roots=JOURNEY_ROOTS, where=f"{where}.to") if action.to else None,
        subject=compile_template(action.subject, f"{where}.subject") if action.subject is not None else None,
        body=compile_template(action.body, f"{where}.body") if action.body is not None else None,
        html=compile_template(action.html, f"{where}.html") if action.html is not None else None,
        payload=_compile_payload(action.payload, f"{where}.payload") if action.payload is not None else None,
        expires_ms=parse_duration(action.expires, f"{where}.expires") if action.expires else 7 * 86_400_000,
    )


def _compile_payload(value: Any, where: str) -> Any:
    if isinstance(value, str):
        return compile_template(value, where)
    if isinstance(value, dict):
        return {key: _compile_payload(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_compile_payload(item, f"{where}[{index}]") for index, item in enumerate(value)]
    return value


def _check_cycles(steps: Mapping[str, CompiledStep], ids: list[str]) -> None:
    """A loop must pass through a step that waits: otherwise one event would run
    the instance round it forever. (The engine also stops a run after ``MAX_STEPS``
    steps as a second guard.) A depth-first search over the steps that do not wait."""
    waiting = {"wait", "wait_for"}

    def successors(step: CompiledStep) -> list[str]:
        if step.kind == "exit" or step.kind in waiting:
            return []
        found = [step.next, *(target for _, target in step.cases), *(target for _, _, target in step.arms)]
        return [name for name in dict.fromkeys(found) if name != END and steps[name].kind not in waiting]

    done: set[str] = set()
    for start in ids:
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start}
        pending: list[list[str]] = [successors(steps[start])]
        while pending:
            if not pending[-1]:
                pending.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
                continue
            successor = pending[-1].pop()
            if successor in on_path:
                cycle = [*path[path.index(successor) :], successor]
                raise _error(
                    f"steps[{steps[successor].index}]",
                    f"the steps {' → '.join(cycle)} form a loop with no wait or wait_for in it",
                )
            if successor in done:
                continue
            path.append(successor)
            on_path.add(successor)
            pending.append(successors(steps[successor]))


def journey_schema() -> dict[str, Any]:
    """The JSON Schema of a journey document (published at ``/v1/journeys/schema``)."""
    schema: dict[str, Any] = msgspec.json.schema(JourneySpec)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "polku journey"
    return schema
