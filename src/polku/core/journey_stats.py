"""A journey's counters, summarised (pure): entries, active instances, endings,
steps reached and the instances waiting at each, the moves between steps, what
each action and survey step did, and goal conversion of the treated customers
against the holdout, with the absolute uplift and its 95 % confidence interval.

The processor counts in ``journey_stats`` per (journey, version, metric); the
metrics are ``entered``, ``entered:holdout``, ``migrated_in``, ``reached:<step>``,
``moved:<step>:<next step or end>`` (an instance went from one step to the next,
or completed the journey), ``left:<step>:<reason>`` (an instance ended while at
the step: ``goal``, ``exit:<name>``, ``step_limit``, ``archived``, ``merged``,
``migrated``, ``version_gone``), ``action:<step>:<result>`` (``sent``,
``holdout``, ``held``, ``failed`` or ``skipped:<reason>``),
``survey:<step>:<result>`` (``sent``, ``held`` or the reason it was not sent),
``goal``, ``goal:holdout``, ``ended:<reason>`` and ``entry_capped``. Step ids
never hold ``:`` (``[a-z0-9][a-z0-9_-]*``), so the step is the part before the
next ``:``.

A step's ``waiting`` is how many instances are at it now: reached − moved on −
left (never below 0; counters from before ``moved`` and ``left`` existed make it
too high).

The interval is Newcombe's hybrid score interval for a difference of two
independent proportions (Newcombe 1998, method 10): the Wilson score intervals of
each rate, combined. Unlike the Wald interval it stays inside [-1, 1] and behaves
at rates near 0 or 1 and with small groups. It is ``None`` while either group is
empty.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Final

Z_95: Final = 1.959963984540054
"""The 97.5th percentile of the standard normal distribution."""
ACTION_RESULTS: Final = ("sent", "holdout", "held", "failed")
SURVEY_RESULTS: Final = ("sent", "held")


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of ``successes / trials`` (``trials`` > 0)."""
    p = successes / trials
    denominator = 2 * (trials + z * z)
    centre = 2 * trials * p + z * z
    spread = z * math.sqrt(z * z + 4 * trials * p * (1 - p))
    return max(0.0, (centre - spread) / denominator), min(1.0, (centre + spread) / denominator)


def uplift_interval(
    treated: int, treated_total: int, control: int, control_total: int, z: float = Z_95
) -> tuple[float, float, float] | None:
    """(difference, lower, upper) of ``treated/treated_total - control/control_total``
    with Newcombe's hybrid score interval; ``None`` when a group is empty."""
    if treated_total <= 0 or control_total <= 0:
        return None
    treated = min(max(treated, 0), treated_total)
    control = min(max(control, 0), control_total)
    p1, p2 = treated / treated_total, control / control_total
    l1, u1 = wilson_interval(treated, treated_total, z)
    l2, u2 = wilson_interval(control, control_total, z)
    difference = p1 - p2
    lower = difference - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    upper = difference + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return difference, lower, upper


def _empty() -> dict[str, Any]:
    return {
        "entered": {"total": 0, "treatment": 0, "holdout": 0},
        "migrated_in": 0,
        "active": 0,
        "ended": {},
        "entry_capped": 0,
        "steps": {},
        "edges": [],
        "actions": {},
        "surveys": {},
        "goal": {},
        "_moved": {},
    }


def _action(summary: dict[str, Any], step: str) -> dict[str, Any]:
    actions: dict[str, dict[str, Any]] = summary["actions"]
    if step not in actions:
        actions[step] = {**dict.fromkeys(ACTION_RESULTS, 0), "skipped": {}}
    return actions[step]


def _step(summary: dict[str, Any], step: str) -> dict[str, Any]:
    steps: dict[str, dict[str, Any]] = summary["steps"]
    if step not in steps:
        steps[step] = {"reached": 0, "waiting": 0, "left": {}}
    return steps[step]


def _survey(summary: dict[str, Any], step: str) -> dict[str, Any]:
    surveys: dict[str, dict[str, Any]] = summary["surveys"]
    if step not in surveys:
        surveys[step] = {**dict.fromkeys(SURVEY_RESULTS, 0), "skipped": {}}
    return surveys[step]


def _add(summary: dict[str, Any], metric: str, count: int) -> None:
    kind, _, rest = metric.partition(":")
    entered = summary["entered"]
    if metric == "entered":
        entered["treatment"] += count
    elif metric == "entered:holdout":
        entered["holdout"] += count
    elif metric == "migrated_in":
        summary["migrated_in"] += count
    elif metric == "entry_capped":
        summary["entry_capped"] += count
    elif metric in ("goal", "goal:holdout"):
        group = "holdout" if metric == "goal:holdout" else "treatment"
        summary["_goal"][group] += count
    elif kind == "ended" and rest:
        summary["ended"][rest] = summary["ended"].get(rest, 0) + count
    elif kind == "reached" and rest:
        _step(summary, rest)["reached"] += count
    elif kind == "moved" and ":" in rest:
        moved: dict[tuple[str, str], int] = summary["_moved"]
        source, _, target = rest.partition(":")
        moved[(source, target)] = moved.get((source, target), 0) + count
    elif kind == "left" and ":" in rest:
        step, _, reason = rest.partition(":")
        left = _step(summary, step)["left"]
        left[reason] = left.get(reason, 0) + count
    elif kind == "survey" and ":" in rest:
        step, _, result = rest.partition(":")
        survey = _survey(summary, step)
        if result in SURVEY_RESULTS:
            survey[result] += count
        else:
            survey["skipped"][result] = survey["skipped"].get(result, 0) + count
    elif kind == "action" and ":" in rest:
        step, _, result = rest.partition(":")
        action = _action(summary, step)
        if result in ACTION_RESULTS:
            action[result] += count
        elif result.startswith("skipped:"):
            reason = result.removeprefix("skipped:")
            action["skipped"][reason] = action["skipped"].get(reason, 0) + count
        else:
            action.setdefault("other", {})[result] = action.get("other", {}).get(result, 0) + count
    else:
        summary.setdefault("other", {})[metric] = summary.get("other", {}).get(metric, 0) + count


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole > 0 else None


def _finish(summary: dict[str, Any]) -> dict[str, Any]:
    entered = summary["entered"]
    entered["total"] = entered["treatment"] + entered["holdout"]
    ended_total = sum(summary["ended"].values())
    summary["active"] = max(0, entered["total"] + summary["migrated_in"] - ended_total)
    converted = summary.pop("_goal")
    treated, control = converted["treatment"], converted["holdout"]
    uplift = uplift_interval(treated, entered["treatment"], control, entered["holdout"])
    summary["goal"] = {
        "conversions": treated + control,
        "treatment": {
            "entered": entered["treatment"],
            "converted": treated,
            "rate": _rate(treated, entered["treatment"]),
        },
        "holdout": {"entered": entered["holdout"], "converted": control, "rate": _rate(control, entered["holdout"])},
        "uplift": None
        if uplift is None
        else {"absolute": uplift[0], "ci95": [uplift[1], uplift[2]], "method": "newcombe-hybrid-score"},
    }
    for action in summary["actions"].values():
        action["skipped_total"] = sum(action["skipped"].values())
    for survey in summary["surveys"].values():
        survey["skipped_total"] = sum(survey["skipped"].values())
    moved: dict[tuple[str, str], int] = summary.pop("_moved")
    summary["edges"] = [
        {"from": source, "to": target, "count": count} for (source, target), count in sorted(moved.items())
    ]
    moved_out: dict[str, int] = {}
    for (source, _), count in moved.items():
        moved_out[source] = moved_out.get(source, 0) + count
    for name, step in summary["steps"].items():
        step["waiting"] = max(0, step["reached"] - moved_out.get(name, 0) - sum(step["left"].values()))
    return summary


def summarize(rows: Iterable[tuple[int, str, int]]) -> dict[str, Any]:
    """``(version, metric, count)`` rows → ``{"total": …, "versions": {"1": …}}``,
    each a summary of entries, active instances, endings, steps, actions and goal.
    The total adds the versions' counters (an instance migrated from version 1 to 2
    ends in 1 and enters 2 with ``migrated_in``; the total counts it once)."""
    total = {**_empty(), "_goal": {"treatment": 0, "holdout": 0}}
    versions: dict[int, dict[str, Any]] = {}
    for version, metric, count in rows:
        summary = versions.setdefault(version, {**_empty(), "_goal": {"treatment": 0, "holdout": 0}})
        _add(summary, metric, count)
        if metric == "migrated_in" or metric == "ended:migrated":
            continue  # a move between versions neither enters nor ends the journey
        _add(total, metric, count)
    return {
        "total": _finish(total),
        "versions": {str(version): _finish(versions[version]) for version in sorted(versions)},
    }
