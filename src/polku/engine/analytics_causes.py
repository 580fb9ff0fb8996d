"""Analyses of where customers fail (docs/analytics.md): funnels across channels,
channel switching (failure demand), feedback root causes and the opportunities
they add up to. SQL over the analytics store; no event or channel name is known
here — the caller names the steps, the assisted channels and the metric.
"""

from __future__ import annotations

from typing import Any, Final

from polku.core.errors import InvalidInput
from polku.core.journey_stats import wilson_interval
from polku.engine.analytics import DAY_MS, Scope, _share, label_column

MAX_FUNNEL_STEPS: Final = 8
CRITICAL: Final = {"csat": ("<=", 2.0), "nps": ("<=", 6.0), "ces": (">=", 5.0)}
"""What a critical answer is, by default: CSAT 1-2, NPS detractors (0-6), CES 5-7."""
PATTERN_KINDS: Final = ("event", "transition", "sequence")


def _window(window_ms: int) -> int:
    if not 0 < window_ms <= 366 * DAY_MS:
        raise InvalidInput("window must be a duration up to 366d", field="window")
    return window_ms


# --- funnels -------------------------------------------------------------------------------------


def funnel(
    db: Any,
    scope: Scope,
    *,
    steps: list[str],
    granularity: str = "event",
    window_ms: int = 7 * DAY_MS,
    instead: int = 5,
) -> dict[str, Any]:
    """Customers through ``steps`` in order (each after the previous, all within
    ``window_ms`` of the first), across channels; for each drop-off, where those
    customers went instead (their next step, or nothing)."""
    if not 2 <= len(steps) <= MAX_FUNNEL_STEPS:
        raise InvalidInput(f"a funnel has 2-{MAX_FUNNEL_STEPS} steps", field="steps")
    label = label_column(granularity)
    _window(window_ms)
    events, parameters = scope.events_sql(interactions=True)
    reached = [f"s{index}" for index in range(len(steps))]
    # Each step's moment is (ts, seq): steps logged in the same millisecond keep their order.
    ctes = [
        f"ev AS ({events})",
        f"s0 AS (SELECT customer_id, min(ts) AS ts, arg_min(seq, (ts, seq)) AS seq, min(ts) AS start FROM ev "
        f"WHERE {label} = ? GROUP BY customer_id)",
    ]
    values: list[Any] = [*parameters, steps[0]]
    for index in range(1, len(steps)):
        ctes.append(
            f"s{index} AS (SELECT p.customer_id, min(e.ts) AS ts, arg_min(e.seq, (e.ts, e.seq)) AS seq, p.start "
            f"FROM s{index - 1} p JOIN ev e ON e.customer_id = p.customer_id AND e.{label} = ? "
            "AND (e.ts > p.ts OR (e.ts = p.ts AND e.seq > p.seq)) "
            "AND epoch_ms(e.ts) - epoch_ms(p.start) <= ? GROUP BY p.customer_id, p.start)"
        )
        values.extend([steps[index], window_ms])
    counts = db.execute(
        f"WITH {', '.join(ctes)} SELECT {', '.join(f'(SELECT count(*) FROM {name})' for name in reached)}", values
    ).fetchone()
    result_steps = []
    for index, step in enumerate(steps):
        count = int(counts[index])
        entry: dict[str, Any] = {
            "step": step,
            "customers": count,
            "of_first": _share(count, int(counts[0])),
            "of_previous": _share(count, int(counts[index - 1])) if index else 100.0 if count else None,
        }
        if index + 1 < len(steps):
            dropped = count - int(counts[index + 1])
            entry["dropped"] = dropped
            rows = db.execute(
                f"WITH {', '.join(ctes)}, lost AS (SELECT * FROM s{index} WHERE customer_id NOT IN "
                f"(SELECT customer_id FROM s{index + 1})), next_step AS ("
                f"  SELECT l.customer_id, arg_min(e.{label}, (e.ts, e.seq)) AS step FROM lost l LEFT JOIN ev e "
                "  ON e.customer_id = l.customer_id AND (e.ts > l.ts OR (e.ts = l.ts AND e.seq > l.seq))"
                "  AND epoch_ms(e.ts) - epoch_ms(l.start) <= ? "
                "  GROUP BY l.customer_id"
                ") SELECT coalesce(step, '(nothing)'), count(*) FROM next_step GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?",
                [*values, window_ms, instead],
            ).fetchall()
            entry["went_instead"] = [
                {"step": name, "customers": int(n), "share": _share(int(n), dropped)} for name, n in rows
            ]
        result_steps.append(entry)
    return {
        "scope": scope.describe(),
        "granularity": granularity,
        "window_ms": window_ms,
        "steps": result_steps,
        "conversion": _share(int(counts[-1]), int(counts[0])),
    }


# --- channel switching -----------------------------------------------------------------------------


def switching(
    db: Any,
    scope: Scope,
    *,
    assisted: list[str],
    event: str | None = None,
    granularity: str = "channel:event",
    window_ms: int = DAY_MS,
    min_customers: int = 5,
    top: int = 20,
) -> dict[str, Any]:
    """Failure demand: of the customers who did a self-service step (on a channel
    not in ``assisted``), the share who contacted an assisted channel within
    ``window_ms`` after. For one ``event``: the rate, and by which step preceded it;
    without one: every self-service step, ranked by the contacts it is followed by."""
    if not assisted:
        raise InvalidInput("name the assisted channels, e.g. assisted=phone,chat", field="assisted")
    label = label_column(granularity)
    _window(window_ms)
    events, parameters = scope.events_sql(interactions=True, channel=False)
    marks = ", ".join("?" * len(assisted))
    base = (
        f"WITH ev AS ({events}), ordered AS ("
        f"  SELECT customer_id, ts, seq, channel, {label} AS step, metric IS NOT NULL AS is_feedback,"
        f"  lag({label}) OVER (PARTITION BY customer_id ORDER BY ts, seq) AS previous FROM ev"
        "), anchors AS ("
        f"  SELECT customer_id, step, arg_min(previous, (ts, seq)) AS previous, min(ts) AS ts,"
        "  arg_min(seq, (ts, seq)) AS seq FROM ordered"
        f"  WHERE channel NOT IN ({marks}) AND NOT is_feedback {{only}} GROUP BY customer_id, step"
        "), switched AS ("
        "  SELECT a.customer_id, a.step, a.previous, EXISTS (SELECT 1 FROM ev s WHERE s.customer_id = a.customer_id"
        f"   AND s.channel IN ({marks}) AND (s.ts > a.ts OR (s.ts = a.ts AND s.seq > a.seq))"
        "   AND epoch_ms(s.ts) - epoch_ms(a.ts) <= ?) AS switched"
        "  FROM anchors a"
        ")"
    )
    values: list[Any] = [*parameters, *assisted]
    if event is not None:
        sql = base.replace("{only}", "AND step = ?")
        values.append(event)
    else:
        sql = base.replace("{only}", "")
    values.extend([*assisted, window_ms])
    # One query, grouped; the totals are the groups' sums.
    group = "coalesce(previous, '(start)')" if event is not None else "step"
    rows = db.execute(
        f"{sql} SELECT {group}, count(*), count(*) FILTER (WHERE switched) FROM switched GROUP BY 1", values
    ).fetchall()
    customers = sum(int(n) for _, n, _ in rows)
    switched_total = sum(int(n) for _, _, n in rows)
    if event is not None:
        rows.sort(key=lambda row: (-int(row[2]), -int(row[1]), str(row[0])))
        rows = rows[:top]
        rate = _share(switched_total, customers)
        return {
            "scope": scope.describe(),
            "event": event,
            "assisted": assisted,
            "window_ms": window_ms,
            "customers": customers,
            "switched": switched_total,
            "rate": rate,
            "interval": _interval(switched_total, customers),
            "by_previous_step": [
                {
                    "previous": previous,
                    "customers": int(n),
                    "switched": int(s),
                    "rate": _share(int(s), int(n)),
                    "interval": _interval(int(s), int(n)),
                }
                for previous, n, s in rows
            ],
        }
    rows = [row for row in rows if int(row[1]) >= min_customers]
    base_rate = switched_total / customers if customers else 0.0
    # The steps followed by more contacts than the average self-service step, first.
    rows.sort(key=lambda row: (-(int(row[2]) - int(row[1]) * base_rate), row[0]))
    rows = rows[:top]
    return {
        "scope": scope.describe(),
        "assisted": assisted,
        "window_ms": window_ms,
        "customer_steps": customers,
        "switched": switched_total,
        "rate": _share(switched_total, customers),
        "steps": [
            {
                "step": step,
                "customers": int(n),
                "switched": int(s),
                "rate": _share(int(s), int(n)),
                "interval": _interval(int(s), int(n)),
                "lift": round((int(s) / int(n)) / base_rate, 2) if base_rate and int(n) else None,
                "excess_contacts": round(int(s) - int(n) * base_rate, 1),
            }
            for step, n, s in rows
        ],
    }


def _interval(part: int, whole: int) -> list[float] | None:
    if not whole:
        return None
    low, high = wilson_interval(part, whole)
    return [round(100 * low, 2), round(100 * high, 2)]


# --- feedback root causes ----------------------------------------------------------------------------


def _critical(metric: str, threshold: float | None) -> tuple[str, float]:
    if metric not in CRITICAL:
        raise InvalidInput(f"metric must be one of {', '.join(CRITICAL)}", field="metric")
    comparison, default = CRITICAL[metric]
    return comparison, default if threshold is None else threshold


def _patterns_sql(
    scope: Scope, metric: str, channel: str | None, critical: tuple[str, float], lookback_ms: int, kinds: list[str]
) -> tuple[str, list[Any]]:
    """A CTE list ending in ``patterns(answer, customer_id, critical, kind, pattern)``:
    one row per answer and distinct pattern in its lookback."""
    unknown = [kind for kind in kinds if kind not in PATTERN_KINDS]
    if unknown or not kinds:
        raise InvalidInput(f"patterns are some of {', '.join(PATTERN_KINDS)}", field="patterns")
    events, parameters = scope.events_sql(channel=False)
    comparison, threshold = critical
    clauses = ["metric = ?"]
    values: list[Any] = [*parameters, threshold, metric]
    if channel is not None:
        clauses.append("channel = ?")
        values.append(channel)
    values.append(lookback_ms)
    selects = []
    if "event" in kinds:
        selects.append(
            "SELECT DISTINCT answer, customer_id, critical, 'event' AS kind, label_both AS pattern FROM before"
        )
    if "transition" in kinds:
        selects.append(
            "SELECT DISTINCT answer, customer_id, critical, 'transition', previous_channel || ' → ' || channel "
            "FROM before WHERE previous_channel IS NOT NULL AND previous_channel <> channel"
        )
    if "sequence" in kinds:
        selects.append(
            "SELECT DISTINCT answer, customer_id, critical, 'sequence', previous_label || ' → ' || label_both "
            "FROM before WHERE previous_label IS NOT NULL"
        )
    sql = (
        f"ev AS ({events}), answers AS ("
        f"  SELECT seq AS answer, customer_id, ts, score {comparison} ? AS critical FROM ev WHERE {' AND '.join(clauses)}"
        "), before AS ("
        "  SELECT a.answer, a.customer_id, a.critical, e.channel, e.label_both,"
        "  lag(e.channel) OVER w AS previous_channel, lag(e.label_both) OVER w AS previous_label"
        "  FROM answers a JOIN ev e ON e.customer_id = a.customer_id"
        "  AND (e.ts < a.ts OR (e.ts = a.ts AND e.seq < a.answer))"
        "  AND epoch_ms(a.ts) - epoch_ms(e.ts) <= ? AND e.metric IS NULL"
        f"  AND e.type IN ('track', 'page', 'screen')"
        "  WINDOW w AS (PARTITION BY a.answer ORDER BY e.ts, e.seq)"
        f"), patterns AS ({' UNION ALL '.join(selects)})"
    )
    return sql, values


def root_causes(
    db: Any,
    scope: Scope,
    *,
    metric: str,
    channel: str | None = None,
    threshold: float | None = None,
    lookback_ms: int = 2 * 3_600_000,
    patterns: list[str] | None = None,
    min_support: int | None = None,
    top: int = 20,
    examples: int = 3,
) -> dict[str, Any]:
    """For critical answers of ``metric`` (on ``channel``), the patterns in the
    ``lookback_ms`` before them — events, channel transitions, two-step sequences —
    ranked by lift: how much likelier an answer is critical when the pattern came
    before it than overall, with support, customers and a 95 % interval."""
    critical = _critical(metric, threshold)
    _window(lookback_ms)
    kinds = patterns or list(PATTERN_KINDS)
    ctes, values = _patterns_sql(scope, metric, channel, critical, lookback_ms, kinds)
    total, critical_total = db.execute(
        f"WITH {ctes} SELECT count(*), count(*) FILTER (WHERE critical) FROM answers", values
    ).fetchone()
    total, critical_total = int(total or 0), int(critical_total or 0)
    base = critical_total / total if total else 0.0
    if min_support is None:
        # Among thousands of candidate patterns a handful of answers is chance: ask
        # for 1 % of the critical answers (at least 5).
        min_support = max(5, critical_total // 100)
    rows = db.execute(
        f"WITH {ctes} SELECT kind, pattern, count(*) AS answers, count(*) FILTER (WHERE critical) AS critical,"
        " count(DISTINCT customer_id) FILTER (WHERE critical) AS customers,"
        " list(DISTINCT customer_id) FILTER (WHERE critical) AS who"
        " FROM patterns GROUP BY kind, pattern HAVING count(*) FILTER (WHERE critical) >= ?",
        [*values, min_support],
    ).fetchall()
    findings = []
    for kind, pattern, answers, critical_answers, customers, who in rows:
        answers, critical_answers = int(answers), int(critical_answers)
        rate = critical_answers / answers
        low, high = wilson_interval(critical_answers, answers)
        lift = rate / base if base else None
        findings.append(
            {
                "kind": kind,
                "pattern": pattern,
                "answers": answers,
                "critical": critical_answers,
                "customers": int(customers),
                "coverage": _share(critical_answers, critical_total),
                "critical_rate": round(100 * rate, 2),
                "lift": round(lift, 2) if lift is not None else None,
                "lift_interval": [round(low / base, 2), round(high / base, 2)] if base else None,
                "examples": sorted(str(customer) for customer in (who or []))[:examples],
            }
        )
    # Only patterns after which a critical answer is likelier than overall.
    findings = [f for f in findings if f["lift"] is not None and f["lift"] > 1]
    for finding in findings:
        finding["significant"] = bool(finding["lift_interval"] and finding["lift_interval"][0] > 1)
    findings = _merge_twins(db, scope, findings)
    findings.sort(key=lambda f: (-(f["lift_interval"] or [0])[0], -f["customers"], f["pattern"]))
    findings = findings[:top]
    window = _duration_text(lookback_ms)
    subject = f"critical {channel + ' ' if channel else ''}{metric.upper()}"
    for finding in findings:
        where = _where(finding)
        finding["sentence"] = (
            f"{finding['coverage']:g} % of {subject} follows {where} within {window}; "
            f"lift {finding['lift']:g}, {finding['customers']} customers"
        )
        finding["timelines"] = [f"/v1/profiles/{customer}/timeline" for customer in finding["examples"]]
    return {
        "scope": scope.describe(),
        "metric": metric,
        "channel": channel,
        "critical": f"{critical[0]} {critical[1]:g}",
        "lookback_ms": lookback_ms,
        "answers": total,
        "critical_answers": critical_total,
        "critical_rate": _share(critical_total, total),
        "min_support": min_support,
        "findings": findings,
    }


KIND_ORDER: Final = {"event": 0, "sequence": 1, "transition": 2}


def _merge_twins(db: Any, scope: Scope, findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Patterns that always come together (an app opened, a reset requested, a
    reset failed) before the same answers are one finding: the most specific — an
    event before a sequence or a transition, the rarest event overall — named, the
    others listed with it (``together_with``)."""
    events, parameters = scope.events_sql(channel=False)
    counts = dict(
        db.execute(f"WITH ev AS ({events}) SELECT label_both, count(*) FROM ev GROUP BY 1", parameters).fetchall()
    )
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for finding in findings:
        key = (finding["answers"], finding["critical"], finding["customers"], tuple(finding["examples"]))
        groups.setdefault(key, []).append(finding)
    merged = []
    for twins in groups.values():
        twins.sort(
            key=lambda f: (
                KIND_ORDER[f["kind"]],
                counts.get(f["pattern"], 0) if f["kind"] == "event" else 0,
                f["pattern"],
            )
        )
        first = twins[0]
        first["together_with"] = [f["pattern"] for f in twins[1:]]
        merged.append(first)
    return merged


def _where(finding: dict[str, Any]) -> str:
    pattern = str(finding["pattern"])
    if finding["kind"] == "event":
        channel, _, name = pattern.partition(":")
        return f"`{name}` in the {channel}"
    if finding["kind"] == "transition":
        return f"a switch {pattern.replace(' → ', ' to ')}"
    return f"`{pattern}`"


def _duration_text(ms: int) -> str:
    for unit, size in (("d", DAY_MS), ("h", 3_600_000), ("min", 60_000)):
        if ms % size == 0:
            return f"{ms // size} {unit}"
    return f"{ms // 1000} s"


# --- opportunities --------------------------------------------------------------------------------


def opportunities(
    db: Any,
    scope: Scope,
    *,
    metric: str | None = None,
    channel: str | None = None,
    threshold: float | None = None,
    lookback_ms: int = 2 * 3_600_000,
    assisted: list[str] | None = None,
    goal: str | None = None,
    granularity: str = "channel:event",
    window_ms: int = DAY_MS,
    min_support: int = 5,
    top: int = 20,
) -> dict[str, Any]:
    """The fixes that matter most: for each path that goes wrong more often than
    the rest, how many bad outcomes there would be fewer if it behaved like the
    baseline — critical answers (with ``metric``), contacts on assisted channels
    after self-service (with ``assisted``), goals not reached after a step (with
    ``goal``) — ranked by the outcomes spared."""
    if metric is None and not assisted and goal is None:
        raise InvalidInput(
            "give a metric (satisfaction), assisted channels (failure demand) or a goal (success)", field="metric"
        )
    found: list[dict[str, Any]] = []
    if metric is not None:
        causes = root_causes(
            db,
            scope,
            metric=metric,
            channel=channel,
            threshold=threshold,
            lookback_ms=lookback_ms,
            patterns=["event", "sequence"],
            min_support=min_support,
            top=1000,
        )
        total, critical_total = causes["answers"], causes["critical_answers"]
        for finding in causes["findings"]:
            rest = total - finding["answers"]
            if rest < min_support:
                continue  # (nearly) every answer follows it: no baseline to compare with
            baseline = (critical_total - finding["critical"]) / rest
            spared = finding["critical"] - finding["answers"] * baseline
            if spared <= 0:
                continue
            found.append(
                {
                    "kind": "satisfaction",
                    "pattern": finding["pattern"],
                    "spared": round(spared, 1),
                    "rate": finding["critical_rate"],
                    "baseline": round(100 * baseline, 2),
                    "customers": finding["customers"],
                    "sentence": (
                        f"If {_where(finding)} went like the rest, about {round(spared):d} fewer critical "
                        f"{metric.upper()} answers ({finding['critical_rate']:g} % critical vs {100 * baseline:.1f} %)"
                    ),
                }
            )
    if assisted:
        demand = switching(db, scope, assisted=assisted, window_ms=window_ms, min_customers=min_support, top=1000)
        for step in demand["steps"]:
            rest = demand["customer_steps"] - step["customers"]
            if rest < min_support:
                continue
            baseline = (demand["switched"] - step["switched"]) / rest
            spared = step["switched"] - step["customers"] * baseline
            if spared <= 0:
                continue
            found.append(
                {
                    "kind": "failure_demand",
                    "pattern": step["step"],
                    "spared": round(spared, 1),
                    "rate": step["rate"],
                    "baseline": round(100 * baseline, 2),
                    "customers": step["customers"],
                    "sentence": (
                        f"If `{step['step']}` worked like other self-service, about {round(spared):d} fewer contacts "
                        f"on {', '.join(assisted)} ({step['rate']:g} % contact within {_duration_text(window_ms)} "
                        f"vs {100 * baseline:.1f} %)"
                    ),
                }
            )
    if goal is not None:
        found.extend(_success(db, scope, goal, granularity, window_ms, min_support))
    found.sort(key=lambda item: (-item["spared"], item["pattern"]))
    return {"scope": scope.describe(), "opportunities": found[:top]}


def _success(
    db: Any, scope: Scope, goal: str, granularity: str, window_ms: int, min_support: int
) -> list[dict[str, Any]]:
    """Steps that lead away from ``goal``: of the customers at a step P, those who
    went on to L reach the goal (within ``window_ms`` of P) less often than those
    at P who did anything else (or nothing). Comparing at the same point keeps
    customers who were never heading for the goal out of the baseline."""
    label = label_column(granularity)
    _window(window_ms)
    events, parameters = scope.events_sql(interactions=True)
    rows = db.execute(
        f"WITH ev AS ({events}), ordered AS ("
        f"  SELECT customer_id, ts, seq, {label} AS here, metric,"
        f"  lead({label}) OVER (PARTITION BY customer_id ORDER BY ts, seq) AS next FROM ev"
        "), anchors AS ("
        "  SELECT customer_id, here, arg_min(coalesce(next, '(end)'), (ts, seq)) AS next, min(ts) AS ts,"
        "  arg_min(seq, (ts, seq)) AS seq FROM ordered WHERE here <> ? AND metric IS NULL GROUP BY customer_id, here"
        "), reached AS ("
        f"  SELECT a.here, a.next, EXISTS (SELECT 1 FROM ev g WHERE g.customer_id = a.customer_id AND g.{label} = ?"
        "   AND (g.ts > a.ts OR (g.ts = a.ts AND g.seq > a.seq)) AND epoch_ms(g.ts) - epoch_ms(a.ts) <= ?) AS converted"
        "  FROM anchors a"
        ") SELECT here, next, count(*), count(*) FILTER (WHERE converted) FROM reached GROUP BY here, next",
        [*parameters, goal, goal, window_ms],
    ).fetchall()
    at: dict[str, list[int]] = {}
    for here, _, n, converted in rows:
        counts = at.setdefault(str(here), [0, 0])
        counts[0] += int(n)
        counts[1] += int(converted)
    steps: dict[str, dict[str, Any]] = {}
    for here, next_step, n, converted in rows:
        n, converted = int(n), int(converted)
        total, total_converted = at[str(here)]
        rest = total - n
        if next_step in (goal, "(end)") or n < min_support or rest < min_support:
            continue
        baseline = (total_converted - converted) / rest
        entry = steps.setdefault(str(next_step), {"customers": 0, "converted": 0, "expected": 0.0, "from": []})
        entry["customers"] += n
        entry["converted"] += converted
        entry["expected"] += n * baseline
        entry["from"].append(str(here))
    found = []
    for step, entry in steps.items():
        gained = entry["expected"] - entry["converted"]
        if gained <= 0:
            continue
        rate = 100 * entry["converted"] / entry["customers"]
        baseline = 100 * entry["expected"] / entry["customers"]
        found.append(
            {
                "kind": "success",
                "pattern": step,
                "after": entry["from"],
                "spared": round(gained, 1),
                "rate": round(rate, 2),
                "baseline": round(baseline, 2),
                "customers": entry["customers"],
                "sentence": (
                    f"If `{step}` led on like the alternatives, about {round(gained):d} more customers would reach "
                    f"`{goal}` ({rate:.1f} % within {_duration_text(window_ms)} vs {baseline:.1f} %)"
                ),
            }
        )
    return found
