"""Next-best-action arbitration (pure): "what now for this customer, here?"
(docs/decisions.md).

``decide`` ranks the catalogue's actions for one request — a channel, a placement,
a context — with the reasons: eligible (the action's condition), not suppressed by
the customer's own answers, allowed by the contact policy, then scored

    score = propensity × context weight × value × lever

where the propensity is a draw from the action's Beta posterior (Thompson
sampling: new actions get explored, poor ones fade). Queued in-app journey messages
and open in-app surveys compete in the same ranking. A global holdout gets the
default action. In a chat with an intent, the self-service answers for it come
first, and the hand-over rules say when a human should take over.

Nothing here reads the clock or a global random source: the caller passes ``now``
and a seed (the decision's id), so a decision can be replayed.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import msgspec

from polku.core.action_spec import ANY, Catalogue, CompiledAction
from polku.core.journey_state import Sent
from polku.core.policy import Policy
from polku.core.templates import TemplateError, render_payload

OVERALL: Final = "*"
"""The learning group of a customer in none of the catalogue's learning segments."""
MAX_REJECTIONS_KEPT: Final = 20
MAX_DECISIONS_KEPT: Final = 20
IN_APP_CHANNELS: Final = frozenset({"web", "app", "in_app"})


class ActionMemory(msgspec.Struct, kw_only=True, omit_defaults=True, array_like=True):
    """A customer's answers to one action (response-based suppression)."""

    offered_ms: int = 0
    rejected: list[int] = []
    accepted_ms: int = 0


class DecisionMemory(msgspec.Struct, kw_only=True, array_like=True):
    """A recent decision, so that its outcome counts for the group it was made in."""

    ts_ms: int
    group: str
    holdout: bool
    actions: list[str]
    converted: bool = False


@dataclass(frozen=True)
class Request:
    channel: str
    placement: str | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    limit: int = 3


@dataclass(frozen=True)
class Candidate:
    id: str
    kind: str
    """``action``, ``message`` (a queued in-app journey message) or ``survey``."""
    score: float
    treatment: Any
    reasons: tuple[str, ...]
    propensity: float = 1.0
    expected: float = 1.0
    """The posterior mean of the propensity."""
    context_weight: float = 1.0
    value: float = 1.0
    lever: float = 1.0
    self_service: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "score": round(self.score, 6),
            "propensity": round(self.propensity, 6),
            "expected_propensity": round(self.expected, 6),
            "context_weight": self.context_weight,
            "value": self.value,
            "lever": self.lever,
            "treatment": self.treatment,
            "reasons": list(self.reasons),
        }


@dataclass
class Decision:
    id: str
    group: str
    holdout: bool
    ranked: list[Candidate]
    excluded: list[dict[str, str]]
    handover: list[str]
    self_service: list[Candidate]

    def shown(self) -> list[str]:
        return [candidate.id for candidate in self.ranked if candidate.kind == "action"]


def share(text: str) -> float:
    """A stable number in [0, 1) for a string (holdout assignment)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2**64


def learning_group(catalogue: Catalogue, segments: Sequence[str]) -> str:
    for segment in catalogue.learning_segments:
        if segment in segments:
            return segment
    return OVERALL


def context_weight(action: CompiledAction, context: Mapping[str, Any]) -> tuple[float, list[str]]:
    """The product of the action's weights for the request's context values (a key
    the request does not give weighs 1; a value not listed takes ``"*"``, else 1)."""
    weight = 1.0
    reasons = []
    for key, weights in action.context.items():
        if key not in context:
            continue
        given = str(context[key])
        factor = weights.get(given, weights.get(ANY, 1.0))
        weight *= factor
        reasons.append(f"context {key}={given} ×{factor:g}")
    return weight, reasons


def suppressed(action: CompiledAction, memory: ActionMemory | None, now_ms: int) -> str | None:
    """Why the customer's own answers keep the action away now, if they do."""
    if memory is None or not action.suppress_rejected:
        return None
    recent = [ts for ts in memory.rejected if now_ms - ts <= action.suppress_within_ms]
    if len(recent) >= action.suppress_rejected and now_ms - max(recent) < action.suppress_for_ms:
        return f"suppressed: rejected {len(recent)} times within {action.suppress_within_ms // 86_400_000} d"
    return None


def decide(
    catalogue: Catalogue,
    *,
    workspace: str,
    customer_id: str,
    decision_id: str,
    request: Request,
    view: Mapping[str, Any],
    policy: Policy,
    sent: Sequence[Sent],
    account_sent: Mapping[str, Sequence[Sent]],
    memory: Mapping[str, ActionMemory],
    stats: Mapping[tuple[str, str], tuple[int, int]],
    competing: Sequence[Candidate] = (),
    now_ms: int,
) -> Decision:
    """Rank the catalogue's actions (and the ``competing`` in-app items) for one
    request. ``stats`` is (action, learning group) → (impressions, acceptances)."""
    rng = random.Random(decision_id)
    segments = list(view.get("segments") or [])
    group = learning_group(catalogue, segments)
    holdout = catalogue.spec.holdout > 0 and share(f"decisions|{workspace}|{customer_id}") < catalogue.spec.holdout
    condition_view = {
        **view,
        "context": dict(request.context),
        "channel": request.channel,
        "placement": request.placement,
    }
    template_view = {**condition_view, "customer_id": customer_id}
    alpha, beta = catalogue.prior
    ranked: list[Candidate] = []
    excluded: list[dict[str, str]] = []
    for action in catalogue.actions:
        if not action.offered_on(request.channel, request.placement):
            continue
        spec = action.spec
        if action.condition is not None and not action.condition(condition_view):
            excluded.append({"id": action.id, "reason": f"not eligible: {spec.when}"})
            continue
        why_not = suppressed(action, memory.get(action.id), now_ms)
        if why_not is not None:
            excluded.append({"id": action.id, "reason": why_not})
            continue
        verdict = policy.check(
            channel=request.channel,
            purpose=spec.purpose,
            view=condition_view,
            sent=sent,
            account_sent=account_sent,
            now_ms=now_ms,
        )
        if verdict.kind != "send":
            excluded.append({"id": action.id, "reason": f"contact policy: {verdict.reason}"})
            continue
        weight, context_reasons = context_weight(action, request.context)
        if weight <= 0:
            excluded.append({"id": action.id, "reason": "context: " + ", ".join(context_reasons)})
            continue
        impressions, accepts = stats.get((action.id, group), stats.get((action.id, OVERALL), (0, 0)))
        a = alpha + accepts
        b = beta + max(0, impressions - accepts)
        draw = rng.betavariate(a, b)
        score = draw * weight * spec.value * spec.lever
        reasons = (
            f"eligible: {spec.when}" if spec.when else "eligible: no condition",
            f"propensity {draw:.3f} drawn from Beta({a:g}, {b:g}) ({impressions} offers, {accepts} accepted, group {group})",
            *context_reasons,
            f"value {spec.value:g}",
            f"lever {spec.lever:g}",
            f"score = {draw:.3f} × {weight:g} × {spec.value:g} × {spec.lever:g} = {score:.4f}",
        )
        ranked.append(
            Candidate(
                id=action.id,
                kind="action",
                score=score,
                treatment=action.treatment(request.channel),
                reasons=reasons,
                propensity=draw,
                expected=a / (a + b),
                context_weight=weight,
                value=spec.value,
                lever=spec.lever,
                self_service=spec.self_service,
            )
        )
    if holdout:
        default = catalogue.spec.default_action
        kept = [candidate for candidate in ranked if candidate.id == default]
        for candidate in ranked:
            if candidate.id != default:
                excluded.append({"id": candidate.id, "reason": "global holdout: gets the default action"})
        ranked = [
            replace(candidate, reasons=(*candidate.reasons, "global holdout: the default action")) for candidate in kept
        ]
    elif request.channel in IN_APP_CHANNELS:
        ranked.extend(competing)
    ranked.sort(key=lambda candidate: (-candidate.score, candidate.id))
    # Only what is shown is rendered (rendering every eligible action's treatment was
    # most of a decision's time); one that fails to render gives way to the next.
    shown = _render(ranked, request.limit, template_view, excluded)
    self_service: list[Candidate] = []
    handover: list[str] = []
    if request.channel == "chat":
        if "intent" in request.context:
            self_service = _render([c for c in ranked if c.self_service], request.limit, template_view, excluded)
        handover = [name for name, condition in catalogue.handover if condition(condition_view)]
    return Decision(
        id=decision_id,
        group=group,
        holdout=holdout,
        ranked=shown,
        excluded=excluded,
        handover=handover,
        self_service=self_service,
    )


def _render(
    ranked: list[Candidate], limit: int, view: Mapping[str, Any], excluded: list[dict[str, str]]
) -> list[Candidate]:
    shown: list[Candidate] = []
    for candidate in ranked:
        if len(shown) == limit:
            break
        if candidate.kind != "action":
            shown.append(candidate)
            continue
        try:
            treatment = render_payload(candidate.treatment, view)
        except TemplateError as error:
            if not any(entry["id"] == candidate.id for entry in excluded):
                excluded.append({"id": candidate.id, "reason": f"treatment: {error.message}"})
            continue
        shown.append(replace(candidate, treatment=treatment))
    return shown


def remember_decision(
    decisions: dict[str, DecisionMemory], decision_id: str, entry: DecisionMemory
) -> dict[str, DecisionMemory]:
    """The customer's recent decisions, the newest ``MAX_DECISIONS_KEPT``."""
    kept = {**decisions, decision_id: entry}
    if len(kept) > MAX_DECISIONS_KEPT:
        for old in sorted(kept, key=lambda key: kept[key].ts_ms)[: len(kept) - MAX_DECISIONS_KEPT]:
            del kept[old]
    return kept
