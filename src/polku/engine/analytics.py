"""The analyses of the analytics store (docs/analytics.md): SQL over DuckDB, and the
little arithmetic around it. Each takes a read-only connection, the common
``Scope`` (workspace, period, channel, segment, customer type) and its own
parameters, and returns plain data (the API's JSON, the CLI's tables).

Nothing here knows any event or channel name: what is a "self-service event" or
an "assisted channel" is the caller's parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from polku.core.errors import InvalidInput

Granularity = Literal["event", "channel", "channel:event"]
GRANULARITIES: Final = ("event", "channel", "channel:event")
CUSTOMER_TYPES: Final = ("all", "accounts", "consumers")
INTERACTIONS: Final = ("track", "page", "screen")
"""What a path is made of: what customers did, not identify/group/alias calls."""
PERIODS: Final = ("day", "week", "month")
MAX_STEPS: Final = 10
SESSION_GAP_MS: Final = 30 * 60_000
DAY_MS: Final = 86_400_000
EXAMPLES: Final = 3
"""Customer ids listed with a path or a variant, so that a chart leads to people."""
TOP_PATHS: Final = 10


@dataclass(frozen=True)
class Scope:
    """The filters every analysis takes."""

    workspace: str
    since_ms: int = 0
    until_ms: int = 0
    channel: str | None = None
    segment: str | None = None
    customers: str = "all"

    def check(self) -> Scope:
        if self.customers not in CUSTOMER_TYPES:
            raise InvalidInput(f"customers must be one of {', '.join(CUSTOMER_TYPES)}", field="customers")
        if self.until_ms and self.since_ms >= self.until_ms:
            raise InvalidInput("since must be before until", field="since")
        return self

    def events_sql(self, *, interactions: bool = False, channel: bool = True) -> tuple[str, list[Any]]:
        """A CTE body: the workspace's events in scope, with ``b2b`` (the customer
        holds an account) and ``label_*`` columns."""
        # People who withdrew analytics consent are left out of every analysis.
        clauses = [
            "e.workspace = ?",
            "e.customer_id NOT IN (SELECT customer_id FROM consent_withdrawn WHERE workspace = ?)",
        ]
        parameters: list[Any] = [self.workspace, self.workspace, self.workspace]
        if self.since_ms:
            clauses.append("e.ts >= make_timestamp(? * 1000)")
            parameters.append(self.since_ms)
        if self.until_ms:
            clauses.append("e.ts < make_timestamp(? * 1000)")
            parameters.append(self.until_ms)
        if channel and self.channel is not None:
            clauses.append("e.channel = ?")
            parameters.append(self.channel)
        if interactions:
            clauses.append(f"e.type IN ({', '.join(repr(kind) for kind in INTERACTIONS)})")
        if self.segment is not None:
            clauses.append(
                "e.customer_id IN (SELECT customer_id FROM segment_members WHERE workspace = ? AND segment = ?)"
            )
            parameters.extend([self.workspace, self.segment])
        if self.customers == "accounts":
            clauses.append("a.account IS NOT NULL")
        elif self.customers == "consumers":
            clauses.append("a.account IS NULL")
        sql = (
            "SELECT e.*, a.account IS NOT NULL AS b2b, coalesce(e.name, e.type) AS label_event, "
            "e.channel AS label_channel, e.channel || ':' || coalesce(e.name, e.type) AS label_both "
            "FROM events e LEFT JOIN (SELECT customer_id, min(account) AS account FROM events "
            "WHERE workspace = ? AND account IS NOT NULL GROUP BY customer_id) a ON a.customer_id = e.customer_id "
            f"WHERE {' AND '.join(clauses)}"
        )
        return sql, parameters

    def describe(self) -> dict[str, Any]:
        return {
            "since": _iso(self.since_ms) if self.since_ms else None,
            "until": _iso(self.until_ms) if self.until_ms else None,
            "channel": self.channel,
            "segment": self.segment,
            "customers": self.customers,
        }


def label_column(granularity: str) -> str:
    if granularity not in GRANULARITIES:
        raise InvalidInput(f"granularity must be one of {', '.join(GRANULARITIES)}", field="granularity")
    return {"event": "label_event", "channel": "label_channel", "channel:event": "label_both"}[granularity]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _share(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 2) if whole else None


# --- channel mix ---------------------------------------------------------------------------


def channel_mix(db: Any, scope: Scope, *, period: str = "week") -> dict[str, Any]:
    """Volumes and people by channel, over time, for account holders and consumers:
    the "we thought 80/20, it is 20/80" view."""
    if period not in PERIODS:
        raise InvalidInput(f"period must be one of {', '.join(PERIODS)}", field="period")
    events, parameters = scope.events_sql()
    totals = db.execute(
        f"WITH ev AS ({events}) SELECT channel, count(*) AS events, count(DISTINCT customer_id) AS people, "
        "count(*) FILTER (WHERE b2b) AS account_events, count(DISTINCT customer_id) FILTER (WHERE b2b) AS account_people "
        "FROM ev GROUP BY channel ORDER BY events DESC, channel",
        parameters,
    ).fetchall()
    overall = db.execute(
        f"WITH ev AS ({events}) SELECT count(*), count(DISTINCT customer_id), count(*) FILTER (WHERE b2b), "
        "count(DISTINCT customer_id) FILTER (WHERE b2b) FROM ev",
        parameters,
    ).fetchone()
    series = db.execute(
        f"WITH ev AS ({events}) SELECT strftime(date_trunc('{period}', ts), '%Y-%m-%d') AS period, channel, "
        "count(*) AS events, count(DISTINCT customer_id) AS people FROM ev GROUP BY 1, 2 ORDER BY 1, 2",
        parameters,
    ).fetchall()
    all_events, all_people, account_events, account_people = (int(value or 0) for value in overall)
    return {
        "scope": scope.describe(),
        "events": all_events,
        "people": all_people,
        "customer_types": {
            "accounts": {
                "events": account_events,
                "people": account_people,
                "share_of_events": _share(account_events, all_events),
                "share_of_people": _share(account_people, all_people),
            },
            "consumers": {
                "events": all_events - account_events,
                "people": all_people - account_people,
                "share_of_events": _share(all_events - account_events, all_events),
                "share_of_people": _share(all_people - account_people, all_people),
            },
        },
        "channels": [
            {
                "channel": channel,
                "events": int(count),
                "people": int(people),
                "share_of_events": _share(int(count), all_events),
                "account_events": int(b2b_events),
                "consumer_events": int(count) - int(b2b_events),
                "account_people": int(b2b_people),
                "consumer_people": int(people) - int(b2b_people),
            }
            for channel, count, people, b2b_events, b2b_people in totals
        ],
        "period": period,
        "series": [
            {"period": when, "channel": channel, "events": int(count), "people": int(people)}
            for when, channel, count, people in series
        ],
    }


# --- steps -----------------------------------------------------------------------------------


def steps(db: Any, scope: Scope, *, granularity: str = "channel:event", top: int = 100) -> dict[str, Any]:
    """The steps customers took in scope at a granularity, the most taken first: each
    with its customers (who took it at least once) and events; ``distinct_steps``
    counts them all. What to start a path from, or end one at."""
    label = label_column(granularity)
    if not 1 <= top <= 1000:
        raise InvalidInput("top must be 1-1000", field="top")
    events, parameters = scope.events_sql(interactions=True)
    rows = db.execute(
        f"WITH ev AS ({events}) SELECT {label}, count(DISTINCT customer_id), count(*), count(*) OVER () FROM ev "
        "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT ?",
        [*parameters, top],
    ).fetchall()
    return {
        "scope": scope.describe(),
        "granularity": granularity,
        "distinct_steps": int(rows[0][3]) if rows else 0,
        "steps": [
            {"step": str(step), "customers": int(customers), "events": int(count)} for step, customers, count, _ in rows
        ],
    }


# --- variants and directly-follows ----------------------------------------------------------


def variants(
    db: Any, scope: Scope, *, granularity: str = "event", max_length: int = 20, top: int = 50
) -> dict[str, Any]:
    """Every distinct path (each customer's interactions in the period, in order) with
    its count, share and a few ``examples`` (the first customer ids in sort order).
    Every customer in scope is counted once, those who never reach any goal too;
    paths longer than ``max_length`` are cut (and marked)."""
    label = label_column(granularity)
    if not 1 <= max_length <= 200:
        raise InvalidInput("max_length must be 1-200", field="max_length")
    if not 1 <= top <= 1000:
        raise InvalidInput("top must be 1-1000", field="top")
    events, parameters = scope.events_sql(interactions=True)
    # One pass: the totals ride along on every row as window aggregates over the
    # grouped paths (building 1,000,000 traces twice was half the time).
    found = db.execute(
        f"WITH ev AS ({events}), traces AS ("
        f"  SELECT customer_id, list({label} ORDER BY ts, seq) AS trace FROM ev GROUP BY customer_id"
        "), counted AS ("
        "  SELECT CASE WHEN len(trace) > ? THEN list_append(trace[1:?], '…') ELSE trace END AS path,"
        "  count(*) AS customers, min(customer_id, ?) AS examples FROM traces GROUP BY path"
        ") SELECT path, customers, sum(customers) OVER (), count(*) OVER (), examples FROM counted "
        "ORDER BY customers DESC, path LIMIT ?",
        [*parameters, max_length, max_length, EXAMPLES, top],
    ).fetchall()
    rows = [(path, count, examples) for path, count, _, _, examples in found]
    customers, distinct = (found[0][2], found[0][3]) if found else (0, 0)
    customers = int(customers or 0)
    listed = sum(int(count) for _, count, _ in rows)
    return {
        "scope": scope.describe(),
        "granularity": granularity,
        "customers": customers,
        "variants": int(distinct or 0),
        "top": [
            {
                "path": list(path),
                "customers": int(count),
                "share": _share(int(count), customers),
                "examples": [str(customer) for customer in examples or []],
            }
            for path, count, examples in rows
        ],
        "other": {
            "variants": int(distinct or 0) - len(rows),
            "customers": customers - listed,
            "share": _share(customers - listed, customers),
        },
    }


def directly_follows(db: Any, scope: Scope, *, granularity: str = "event", top: int = 200) -> dict[str, Any]:
    """How often one step directly follows another in a customer's path (the
    process map), with the start and end of every path."""
    label = label_column(granularity)
    events, parameters = scope.events_sql(interactions=True)
    rows = db.execute(
        f"WITH ev AS ({events}), ordered AS ("
        f"  SELECT customer_id, {label} AS step, lead({label}) OVER (PARTITION BY customer_id ORDER BY ts, seq) AS next,"
        f"  row_number() OVER (PARTITION BY customer_id ORDER BY ts, seq) AS position FROM ev"
        ") SELECT step, next, count(*) FROM ordered WHERE next IS NOT NULL GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT ?",
        [*parameters, top],
    ).fetchall()
    starts = db.execute(
        f"WITH ev AS ({events}), firsts AS (SELECT arg_min({label}, (ts, seq)) AS step FROM ev GROUP BY customer_id) "
        "SELECT step, count(*) FROM firsts GROUP BY 1 ORDER BY 2 DESC, 1",
        parameters,
    ).fetchall()
    ends = db.execute(
        f"WITH ev AS ({events}), lasts AS (SELECT arg_max({label}, (ts, seq)) AS step FROM ev GROUP BY customer_id) "
        "SELECT step, count(*) FROM lasts GROUP BY 1 ORDER BY 2 DESC, 1",
        parameters,
    ).fetchall()
    return {
        "scope": scope.describe(),
        "granularity": granularity,
        "edges": [{"from": a, "to": b, "count": int(count)} for a, b, count in rows],
        "starts": [{"step": step, "count": int(count)} for step, count in starts],
        "ends": [{"step": step, "count": int(count)} for step, count in ends],
    }


# --- paths from or to an event ----------------------------------------------------------------


def paths(
    db: Any,
    scope: Scope,
    *,
    start: str | None = None,
    end: str | None = None,
    steps: int = 3,
    granularity: str = "channel:event",
    window_ms: int = DAY_MS,
    session: bool = False,
) -> dict[str, Any]:
    """From (``start``) or to (``end``) a step, the next or previous ``steps`` steps
    of every customer who took it — their first time in the period — within
    ``window_ms`` of it (or within its session: no gap over 30 minutes). Nodes and
    links for a Sankey; a path that stops early ends in ``(end)``/``(start)``.
    ``top`` lists the most frequent whole paths, in time order, with a few example
    customers. ``start``/``end`` are matched at the chosen granularity (``Signed Up``,
    ``web``, ``web:Signed Up``)."""
    if (start is None) == (end is None):
        raise InvalidInput("give exactly one of start or end", field="start")
    if not 1 <= steps <= MAX_STEPS:
        raise InvalidInput(f"steps must be 1-{MAX_STEPS}", field="steps")
    if not 0 < window_ms <= 366 * DAY_MS:
        raise InvalidInput("window must be a duration up to 366d", field="window")
    label = label_column(granularity)
    anchor = start if start is not None else end
    forward = start is not None
    events, parameters = scope.events_sql(interactions=True)
    direction = "1" if forward else "-1"
    rows = db.execute(
        f"WITH ev AS ({events}), lagged AS ("
        f"  SELECT customer_id, ts, {label} AS step, row_number() OVER w AS position,"
        "   epoch_ms(ts) - epoch_ms(lag(ts) OVER w) AS gap"
        "  FROM ev WINDOW w AS (PARTITION BY customer_id ORDER BY ts, seq)"
        "), numbered AS ("
        "  SELECT customer_id, ts, step, position,"
        "   sum(CASE WHEN gap > ? THEN 1 ELSE 0 END) OVER (PARTITION BY customer_id ORDER BY position) AS session"
        "  FROM lagged"
        "), anchors AS ("
        "  SELECT customer_id, min(position) AS position FROM numbered WHERE step = ? GROUP BY customer_id"
        "), around AS ("
        f"  SELECT n.customer_id, (n.position - a.position) * {direction} AS depth, n.step"
        "  FROM anchors a JOIN numbered x ON x.customer_id = a.customer_id AND x.position = a.position"
        "  JOIN numbered n ON n.customer_id = a.customer_id"
        f"   AND (n.position - a.position) * {direction} BETWEEN 1 AND ?"
        "   AND abs(epoch_ms(n.ts) - epoch_ms(x.ts)) <= ?"
        "   AND (NOT ? OR n.session = x.session)"
        # Every anchored customer, those with no step after (before) it too: they are examples of "(end)".
        ") SELECT a.customer_id, list(r.step ORDER BY r.depth) FILTER (WHERE r.step IS NOT NULL)"
        " FROM anchors a LEFT JOIN around r ON r.customer_id = a.customer_id GROUP BY a.customer_id",
        [*parameters, SESSION_GAP_MS, anchor, steps, window_ms, session],
    ).fetchall()
    (anchored,) = db.execute(
        f"WITH ev AS ({events}) SELECT count(DISTINCT customer_id) FROM ev WHERE {label} = ?", [*parameters, anchor]
    ).fetchone()
    anchored = int(anchored or 0)
    stop = "(end)" if forward else "(start)"
    counts: dict[tuple[int, str], int] = {(0, str(anchor)): anchored}
    links: dict[tuple[int, str, str], int] = {}
    followed = {customer: list(trail or []) for customer, trail in rows}
    for trail in [*followed.values(), *([[]] * (anchored - len(followed)))]:
        previous = str(anchor)
        for depth in range(1, steps + 1):
            step = trail[depth - 1] if depth <= len(trail) else stop
            counts[(depth, step)] = counts.get((depth, step), 0) + 1
            key = (depth, previous, step)
            links[key] = links.get(key, 0) + 1
            if step == stop:
                break
            previous = step
    sign = 1 if forward else -1
    return {
        "scope": scope.describe(),
        "granularity": granularity,
        "direction": "after" if forward else "before",
        "anchor": anchor,
        "customers": anchored,
        "window_ms": window_ms,
        "session": session,
        "nodes": [
            {"id": f"{depth * sign}:{step}", "depth": depth * sign, "step": step, "customers": count}
            for (depth, step), count in sorted(counts.items(), key=lambda item: (item[0][0], -item[1], item[0][1]))
        ],
        "links": [
            {
                "source": f"{(depth - 1) * sign}:{source}",
                "target": f"{depth * sign}:{target}",
                "customers": count,
            }
            for (depth, source, target), count in sorted(
                links.items(), key=lambda item: (item[0][0], -item[1], item[0])
            )
        ],
        "top": _top_paths(followed, str(anchor), anchored, steps, forward),
    }


def _top_paths(
    followed: dict[str, list[str]], anchor: str, anchored: int, steps: int, forward: bool
) -> list[dict[str, Any]]:
    """The most frequent whole paths from (to) the anchor, in time order, with their
    customers, share and a few example customer ids (the first in sort order)."""
    stop = "(end)" if forward else "(start)"
    who: dict[tuple[str, ...], list[str]] = {}
    for customer, trail in followed.items():
        path = (anchor, *trail[:steps], *([stop] if len(trail) < steps else []))
        who.setdefault(path if forward else path[::-1], []).append(str(customer))
    ranked = sorted(who.items(), key=lambda item: (-len(item[1]), item[0]))[:TOP_PATHS]
    return [
        {
            "path": list(path),
            "customers": len(customers),
            "share": _share(len(customers), anchored),
            "examples": sorted(customers)[:EXAMPLES],
        }
        for path, customers in ranked
    ]
