"""The action catalogue: what the pull side may offer (docs/decisions.md), as the
YAML a user writes, validated and compiled (pure).

One document per workspace, versioned like journeys: the actions — where each may
appear (channels, placements), who is eligible (a condition), what it is worth
(value, business lever, weights by context), what it says (a treatment per
channel), its purpose for the contact policy, and when a customer's answers
suppress it — plus the global holdout, what the holdout gets, how learning groups
customers, and when a chat should go to a human.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from polku.core.attributes import parse_duration
from polku.core.errors import ConfigError
from polku.core.expr import Condition, compile_condition
from polku.core.segments import SEGMENT_ROOTS
from polku.core.templates import Template, compile_template

ACTION_ID: Final = re.compile(r"[a-z0-9][a-z0-9_\-]{0,62}")
MAX_ACTIONS: Final = 1000
DECISION_ROOTS: Final = SEGMENT_ROOTS | {"context", "channel", "placement"}
"""What an eligibility or hand-over condition reads: the profile's roots, the
request's ``context`` (``context.intent``, ``context.page``), its ``channel`` and
``placement``."""
ANY: Final = "*"


class Suppression(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``rejected`` answers within ``within`` → not offered for ``for_``."""

    rejected: int = 3
    within: str = "30d"
    for_: str = msgspec.field(default="14d", name="for")


class ActionSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    id: str
    name: str = ""
    channels: list[str]
    placements: list[str] = []
    """Where on the channel (``banner``, ``chat_answer``, ``agent_script``); any without it."""
    when: str | None = None
    """Eligibility, in the expression language."""
    value: float = 1.0
    lever: float = 1.0
    """A business lever: a multiplier the business turns (push a campaign, damp one)."""
    context: dict[str, dict[str, float]] = {}
    """Context key → value → weight (``{intent: {login_problem: 3}}``); ``"*"`` for
    any other value; a key the request does not give weighs 1."""
    purpose: str = "service"
    self_service: bool = False
    """An answer a customer can act on alone (chat mode lists these first)."""
    treatments: dict[str, Any]
    """Channel (or ``"*"``) → the content: a mapping whose strings are templates."""
    suppress: Suppression | None = None


class HandoverRule(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    when: str


class Learning(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    segments: list[str] = []
    """Learn propensities separately for the members of these segments (the first
    one a customer is in); everyone else shares the overall estimate."""
    prior: list[float] = msgspec.field(default_factory=lambda: [1.0, 1.0])
    """Beta(α, β) before any outcome: [1, 1] is uniform."""


class CatalogueSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    actions: list[ActionSpec]
    holdout: float = 0.0
    """The share of customers who get ``default_action`` whatever the model says."""
    default_action: str | None = None
    learning: Learning = msgspec.field(default_factory=Learning)
    handover: list[HandoverRule] = []
    """When a chat goes to a human (any rule that holds)."""
    in_app_value: float = 10.0
    """The value of a queued in-app journey message or open in-app survey, which
    compete with the actions for the same placements."""


@dataclass(frozen=True)
class CompiledAction:
    id: str
    spec: ActionSpec
    channels: frozenset[str]
    placements: frozenset[str] | None
    condition: Condition | None
    context: Mapping[str, Mapping[str, float]]
    treatments: Mapping[str, Any]
    """Channel → content with every string compiled to a ``Template``."""
    suppress_rejected: int
    suppress_within_ms: int
    suppress_for_ms: int

    def offered_on(self, channel: str, placement: str | None) -> bool:
        return channel in self.channels and (
            placement is None or self.placements is None or placement in self.placements
        )

    def treatment(self, channel: str) -> Any:
        return self.treatments.get(channel, self.treatments.get(ANY))


@dataclass(frozen=True)
class Catalogue:
    version: int
    spec: CatalogueSpec
    actions: tuple[CompiledAction, ...]
    by_id: Mapping[str, CompiledAction]
    handover: tuple[tuple[str, Condition], ...]
    learning_segments: tuple[str, ...]
    prior: tuple[float, float]


def _error(path: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {message}", field=path)


def parse_catalogue(text: str | bytes, *, filename: str = "actions.yaml") -> CatalogueSpec:
    """YAML (or JSON) → a validated ``CatalogueSpec``; errors name file, line, field."""
    return load_catalogue(text, version=1, filename=filename).spec


def load_catalogue(text: str | bytes, *, version: int, filename: str = "actions.yaml") -> Catalogue:
    """YAML (or JSON) → the compiled catalogue, compiled once (200 actions' conditions
    and templates are most of a second)."""
    from polku.core.yaml_source import load_with_lines, located

    data, lines = load_with_lines(text, filename)
    if not isinstance(data, dict):
        raise ConfigError(f"{filename}: an action catalogue is a mapping with `actions`", file=filename)
    try:
        spec = msgspec.convert(data, CatalogueSpec)
    except msgspec.ValidationError as error:
        message = str(error)
        match = re.search(r"at `\$\.?([^`]*)`", message)
        raise located(
            filename, lines, match[1] if match else "", message.replace("$.", "").replace(" - at `$`", "")
        ) from None
    try:
        return compile_catalogue(spec, version=version)
    except ConfigError as error:
        raise located(filename, lines, str(error.details.get("field", "")), error.message) from None


def compile_catalogue(spec: CatalogueSpec, *, version: int, segments: Any = None) -> Catalogue:
    """Checks and compiles; with ``segments`` (the workspace's names), learning's
    segments must exist."""
    if not spec.actions:
        raise _error("actions", "a catalogue needs at least one action")
    if len(spec.actions) > MAX_ACTIONS:
        raise _error("actions", f"at most {MAX_ACTIONS} actions")
    if not 0 <= spec.holdout <= 0.5:
        raise _error("holdout", "must be a share between 0 and 0.5 (0.05 is 5 %)")
    compiled: list[CompiledAction] = []
    seen: set[str] = set()
    for index, action in enumerate(spec.actions):
        where = f"actions[{index}]"
        if not ACTION_ID.fullmatch(action.id):
            raise _error(f"{where}.id", f"{action.id!r} must be 1-63 lower-case letters, digits, '-' or '_'")
        if action.id in seen:
            raise _error(f"{where}.id", f"action id {action.id!r} is used twice")
        seen.add(action.id)
        if not action.channels:
            raise _error(f"{where}.channels", "name at least one channel (web, app, chat, agent, email …)")
        if action.value < 0 or action.lever < 0:
            raise _error(f"{where}.value", "value and lever must be 0 or more")
        for key, weights in action.context.items():
            for value, weight in weights.items():
                if weight < 0:
                    raise _error(f"{where}.context.{key}.{value}", "a weight must be 0 or more")
        if not action.treatments:
            raise _error(f"{where}.treatments", "give the content for at least one channel (or '*')")
        missing = [c for c in action.channels if c not in action.treatments and ANY not in action.treatments]
        if missing:
            raise _error(f"{where}.treatments", f"no treatment for channel {missing[0]!r} (add it, or '*')")
        suppress = action.suppress
        if suppress is not None and suppress.rejected < 1:
            raise _error(f"{where}.suppress.rejected", "must be at least 1")
        compiled.append(
            CompiledAction(
                id=action.id,
                spec=action,
                channels=frozenset(action.channels),
                placements=frozenset(action.placements) if action.placements else None,
                condition=compile_condition(action.when, roots=DECISION_ROOTS, where=f"{where}.when")
                if action.when
                else None,
                context=action.context,
                treatments={
                    channel: _templates(content, f"{where}.treatments.{channel}")
                    for channel, content in action.treatments.items()
                },
                suppress_rejected=suppress.rejected if suppress else 0,
                suppress_within_ms=parse_duration(suppress.within, f"{where}.suppress.within") if suppress else 0,
                suppress_for_ms=parse_duration(suppress.for_, f"{where}.suppress.for") if suppress else 0,
            )
        )
    if spec.default_action is not None and spec.default_action not in seen:
        raise _error("default_action", f"{spec.default_action!r} is not an action of the catalogue")
    if segments is not None:
        for index, segment in enumerate(spec.learning.segments):
            if segment not in segments:
                raise _error(f"learning.segments[{index}]", f"unknown segment {segment!r}")
    if len(spec.learning.prior) != 2:
        raise _error("learning.prior", "give the Beta prior as [alpha, beta], e.g. [1, 1]")
    alpha, beta = spec.learning.prior
    if alpha <= 0 or beta <= 0:
        raise _error("learning.prior", "both parameters of the Beta prior must be above 0")
    handover = tuple(
        (rule.name, compile_condition(rule.when, roots=DECISION_ROOTS, where=f"handover[{index}].when"))
        for index, rule in enumerate(spec.handover)
    )
    return Catalogue(
        version=version,
        spec=spec,
        actions=tuple(compiled),
        by_id={action.id: action for action in compiled},
        handover=handover,
        learning_segments=tuple(spec.learning.segments),
        prior=(alpha, beta),
    )


def _templates(value: Any, where: str) -> Any:
    if isinstance(value, str):
        return compile_template(value, where)
    if isinstance(value, dict):
        return {key: _templates(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [_templates(item, f"{where}[{index}]") for index, item in enumerate(value)]
    return value


def catalogue_schema() -> dict[str, Any]:
    schema: dict[str, Any] = msgspec.json.schema(CatalogueSpec)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "polku action catalogue"
    return schema


__all__ = ["Catalogue", "CatalogueSpec", "CompiledAction", "Template", "compile_catalogue", "parse_catalogue"]
