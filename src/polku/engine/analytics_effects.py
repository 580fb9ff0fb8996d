"""What works (docs/analytics.md): channel attribution — a first-order Markov chain's
removal effects, with first, last and linear touch beside it — and journey uplift,
treatment against holdout and split arm against split arm, with intervals.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from itertools import pairwise
from typing import Any, Final

from polku.core.errors import InvalidInput
from polku.core.journey_stats import summarize, uplift_interval, wilson_interval
from polku.engine.analytics import DAY_MS, Scope, label_column
from polku.engine.journey_reports import stats_rows
from polku.engine.journey_runner import SURVEY_JOURNEY_PREFIX

START: Final = "(start)"
CONVERSION: Final = "(conversion)"
NULL: Final = "(null)"
MAX_CHANNELS: Final = 200


# --- attribution -------------------------------------------------------------------------------------


def journeys_to_goal(
    db: Any, scope: Scope, *, goal: str, granularity: str = "event", window_ms: int = 30 * DAY_MS, collapse: bool = True
) -> Counter[tuple[tuple[str, ...], bool]]:
    """(the channels a customer touched, converted?) → customers: every customer's
    interactions until their first ``goal`` (within ``window_ms`` of their first
    touch), or all of them when they never reached it."""
    label = label_column(granularity)
    if not 0 < window_ms <= 366 * DAY_MS:
        raise InvalidInput("window must be a duration up to 366d", field="window")
    events, parameters = scope.events_sql(interactions=True, channel=False)
    # Paths are built and counted in SQL: a few thousand distinct paths come back,
    # not a list per customer.
    repeat = "AND channel IS NOT DISTINCT FROM previous" if collapse else "AND false"
    rows = db.execute(
        f"WITH ev AS ({events}), firsts AS (SELECT customer_id, min(ts) AS first FROM ev GROUP BY customer_id), "
        f"goals AS (SELECT customer_id, min(ts) AS ts, arg_min(seq, (ts, seq)) AS seq FROM ev WHERE {label} = ? "
        "GROUP BY customer_id), touches AS ("
        "  SELECT e.customer_id, e.ts, e.seq, e.channel, g.ts AS goal_ts, f.first,"
        "  lag(e.channel) OVER (PARTITION BY e.customer_id ORDER BY e.ts, e.seq) AS previous"
        "  FROM ev e JOIN firsts f USING (customer_id) LEFT JOIN goals g USING (customer_id)"
        "  WHERE g.ts IS NULL OR e.ts < g.ts OR (e.ts = g.ts AND e.seq < g.seq)"
        "), paths AS ("
        f"  SELECT customer_id, list(channel ORDER BY ts, seq) FILTER (WHERE NOT (previous IS NOT NULL {repeat})) AS path,"
        "  bool_or(goal_ts IS NOT NULL AND epoch_ms(goal_ts) - epoch_ms(first) <= ?) AS converted"
        "  FROM touches GROUP BY customer_id"
        ") SELECT path, converted, count(*) FROM paths WHERE len(path) > 0 GROUP BY path, converted",
        [*parameters, goal, window_ms],
    ).fetchall()
    found: Counter[tuple[tuple[str, ...], bool]] = Counter()
    for path, converted, count in rows:
        found[(tuple(path), bool(converted))] += int(count)
    return found


def markov_removal_effects(paths: Counter[tuple[tuple[str, ...], bool]]) -> tuple[float, dict[str, float]]:
    """The conversion probability of a first-order Markov chain fitted to the
    paths, and each channel's removal effect: the share of conversions lost when
    the channel is removed (its visits lead nowhere). Exact: the absorbing chain's
    linear system, solved by elimination (a few dozen states)."""
    transitions: dict[str, Counter[str]] = {}
    for (path, converted), count in paths.items():
        states = [START, *path, CONVERSION if converted else NULL]
        for source, target in pairwise(states):
            transitions.setdefault(source, Counter())[target] += count
    channels = sorted({channel for (path, _), _ in paths.items() for channel in path})
    if len(channels) > MAX_CHANNELS:
        raise InvalidInput(f"at most {MAX_CHANNELS} channels", field="granularity")
    base = _conversion(transitions, channels, removed=None)
    effects = {
        channel: (1 - _conversion(transitions, channels, removed=channel) / base) if base else 0.0
        for channel in channels
    }
    return base, effects


def _conversion(transitions: dict[str, Counter[str]], channels: list[str], removed: str | None) -> float:
    states = [START, *channels]
    index = {state: position for position, state in enumerate(states)}
    size = len(states)
    # (I - Q) x = b: x = probability of conversion from each transient state.
    matrix = [[1.0 if row == column else 0.0 for column in range(size)] for row in range(size)]
    vector = [0.0] * size
    for source, targets in transitions.items():
        if source == removed or source not in index:
            continue
        total = sum(targets.values())
        row = index[source]
        for target, count in targets.items():
            probability = count / total
            if target == CONVERSION:
                vector[row] += probability
            elif target in index and target != removed:
                matrix[row][index[target]] -= probability
    if removed is not None:
        row = index[removed]
        matrix[row] = [1.0 if column == row else 0.0 for column in range(size)]
        vector[row] = 0.0
    return _solve(matrix, vector)[0]


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (the system is small)."""
    size = len(vector)
    rows = [[*row, value] for row, value in zip(matrix, vector, strict=True)]
    for column in range(size):
        pivot = max(range(column, size), key=lambda r: abs(rows[r][column]))
        if abs(rows[pivot][column]) < 1e-12:
            continue  # a state that is never left toward anything transient
        rows[column], rows[pivot] = rows[pivot], rows[column]
        for other in range(size):
            if other != column and rows[other][column]:
                factor = rows[other][column] / rows[column][column]
                rows[other] = [a - factor * b for a, b in zip(rows[other], rows[column], strict=True)]
    return [rows[r][size] / rows[r][r] if abs(rows[r][r]) > 1e-12 else 0.0 for r in range(size)]


def attribution(
    db: Any, scope: Scope, *, goal: str, granularity: str = "event", window_ms: int = 30 * DAY_MS, collapse: bool = True
) -> dict[str, Any]:
    """Conversions credited to channels: Markov removal effects (normalised to the
    conversions), and first-, last- and linear-touch for comparison."""
    paths = journeys_to_goal(db, scope, goal=goal, granularity=granularity, window_ms=window_ms, collapse=collapse)
    conversions = sum(count for (_, converted), count in paths.items() if converted)
    customers = sum(paths.values())
    probability, effects = markov_removal_effects(paths)
    total_effect = sum(effects.values())
    first: Counter[str] = Counter()
    last: Counter[str] = Counter()
    linear: dict[str, float] = {}
    for (path, converted), count in paths.items():
        if not converted:
            continue
        first[path[0]] += count
        last[path[-1]] += count
        for channel in path:
            linear[channel] = linear.get(channel, 0.0) + count / len(path)
    channels = sorted(effects, key=lambda channel: (-effects[channel], channel))
    return {
        "scope": scope.describe(),
        "goal": goal,
        "customers": customers,
        "conversions": conversions,
        "conversion_probability": round(probability, 4),
        "channels": [
            {
                "channel": channel,
                "removal_effect": round(effects[channel], 4),
                "markov": round(conversions * effects[channel] / total_effect, 2) if total_effect else 0.0,
                "first_touch": first[channel],
                "last_touch": last[channel],
                "linear": round(linear.get(channel, 0.0), 2),
            }
            for channel in channels
        ],
    }


# --- journey uplift ------------------------------------------------------------------------------------


def journey_uplift(connection: sqlite3.Connection, workspace: str, journey: str | None = None) -> dict[str, Any]:
    """Per journey: goal conversion of treatment against holdout with Newcombe's
    interval; per split step, each arm's conversion against the first arm's."""
    clauses, values = ["workspace = ?"], [workspace]
    if journey is not None:
        clauses.append("journey = ?")
        values.append(journey)
    names = [
        str(name)
        for (name,) in connection.execute(
            f"SELECT DISTINCT journey FROM journey_stats WHERE {' AND '.join(clauses)} ORDER BY journey", values
        )
        if not str(name).startswith(SURVEY_JOURNEY_PREFIX)  # a survey trigger's own journey
    ]
    found = []
    for name in names:
        goal = summarize(stats_rows(connection, workspace, name))["total"]["goal"]
        arms = connection.execute(
            "SELECT s.step, s.detail, count(DISTINCT s.instance), count(DISTINCT g.instance) "
            "FROM journey_transitions s LEFT JOIN journey_transitions g ON g.workspace = s.workspace "
            "AND g.instance = s.instance AND g.kind = 'goal' "
            "WHERE s.workspace = ? AND s.journey = ? AND s.kind = 'split' GROUP BY s.step, s.detail "
            "ORDER BY s.step, s.detail",
            (workspace, name),
        ).fetchall()
        splits: dict[str, list[dict[str, Any]]] = {}
        for step, arm, entered, converted in arms:
            splits.setdefault(str(step), []).append({"arm": arm, "entered": int(entered), "converted": int(converted)})
        for arms_of_step in splits.values():
            reference = arms_of_step[0]
            for arm in arms_of_step:
                low, high = wilson_interval(arm["converted"], arm["entered"]) if arm["entered"] else (0.0, 0.0)
                arm["rate"] = round(arm["converted"] / arm["entered"], 4) if arm["entered"] else None
                arm["interval"] = [round(low, 4), round(high, 4)] if arm["entered"] else None
                if arm is reference:
                    continue
                against = uplift_interval(
                    arm["converted"], arm["entered"], reference["converted"], reference["entered"]
                )
                arm["uplift_vs_" + str(reference["arm"])] = (
                    None
                    if against is None
                    else {"absolute": round(against[0], 4), "ci95": [round(against[1], 4), round(against[2], 4)]}
                )
        found.append({"journey": name, "goal": goal, "splits": splits})
    return {"journeys": found}
