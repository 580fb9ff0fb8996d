"""Feedback: NPS, CSAT and CES now and week by week, by channel and by journey —
``GET /v1/feedback/metrics`` (``polku feedback metrics``) with the same query — the
root causes of critical answers and the fixes that would spare the most of them,
each as a sentence that leads to example customers (``root-causes`` and
``opportunities``).

The page renders its form at once; the rest are fragments: the scores are a dozen
passes over the period's answers (tens of thousands at 1,000,000 events), the
causes DuckDB analyses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode

from starlette.responses import Response

from polku.core.errors import InvalidInput, PolkuError
from polku.core.profile import FEEDBACK_METRICS
from polku.dashboard.frame import View, page_route
from polku.dashboard.reads import analyze, days_ago
from polku.engine.feedback_reports import MetricQuery, PeriodRows, answer_counts, feedback_metrics
from polku.engine.profile_views import ProfileViews
from polku.engine.worker import wall_clock_ms

DAY_MS: Final = 86_400_000
PERIODS: Final = {"7": "last 7 days", "30": "last 30 days", "90": "last 90 days"}
DEFAULT_PERIOD: Final = "90"
METRICS: Final = {"nps": "NPS", "csat": "CSAT", "ces": "CES"}
SCORE_MEANING: Final = {
    "nps": "% promoters − % detractors, −100 to 100",
    "csat": "% satisfied (4–5 of 5)",
    "ces": "mean effort, 1–7 (lower is better)",
}
AXIS_TITLES: Final = {"nps": "NPS (points)", "csat": "CSAT (% satisfied)", "ces": "CES (mean effort)"}
MAX_TEXT: Final = 256
TOP_CAUSES: Final = 10
TOP_OPPORTUNITIES: Final = 5
LINE_COLOURS: Final = ("#1d5bbf", "#b42318", "#17663a", "#7b3fb5", "#c2410c", "#0f766e", "#a16207", "#545d69")


@dataclass(frozen=True)
class FeedbackQuery:
    metric: str
    period: str
    channel: str

    @classmethod
    def read(cls, query: Mapping[str, str]) -> FeedbackQuery:
        chosen = cls.echo(query)
        if chosen.metric and chosen.metric not in METRICS:
            raise InvalidInput(
                f"metric must be one of {', '.join(METRICS)}, not {chosen.metric[:40]!r}", field="metric"
            )
        if chosen.period not in PERIODS:
            raise InvalidInput(f"period must be one of {', '.join(PERIODS)} (days)", field="period")
        if len(query.get("channel", "")) > MAX_TEXT:
            raise InvalidInput(f"channel is longer than {MAX_TEXT} characters", field="channel")
        return chosen

    @classmethod
    def echo(cls, query: Mapping[str, str]) -> FeedbackQuery:
        return cls(
            metric=(query.get("metric") or "").strip().lower()[:MAX_TEXT],
            period=(query.get("period") or DEFAULT_PERIOD).strip()[:MAX_TEXT],
            channel=(query.get("channel") or "").strip()[:MAX_TEXT],
        )

    @property
    def days(self) -> int:
        return int(self.period)

    def with_metric(self, metric: str) -> FeedbackQuery:
        return FeedbackQuery(metric=metric, period=self.period, channel=self.channel)

    def link(self, **changes: str) -> str:
        values = {"metric": self.metric, "period": self.period, "channel": self.channel, **changes}
        return "/ui/feedback?" + urlencode({name: value for name, value in values.items() if value})

    def analysis(self) -> dict[str, str]:
        """The parameters of ``GET /v1/analytics/root-causes`` (and ``opportunities``)."""
        found = {"metric": self.metric, "channel": self.channel, "since": days_ago(self.days)}
        return {name: value for name, value in found.items() if value}


def score_text(metric: str, value: float | None) -> str:
    """NPS in signed points, CSAT in % satisfied, CES as a mean."""
    if value is None:
        return "–"
    if metric == "nps":
        return f"{value:+.0f}".replace("-", "−")
    if metric == "csat":
        return f"{value:.1f}\u202f%"
    return f"{value:.2f}"


def interval_text(metric: str, interval: list[float] | None) -> str:
    if not interval:
        return "–"
    return f"{score_text(metric, interval[0])} to {score_text(metric, interval[1])}"


def share_text(value: float | None) -> str:
    """A percentage as people say it: ``38 %``, ``9.4 %``."""
    if value is None:
        return "–"
    return f"{value:.0f}\u202f%" if value >= 10 else f"{value:.1f}\u202f%"


def read_metrics(views: ProfileViews, workspace: str, query: FeedbackQuery, now: int) -> dict[str, Any]:
    """Every score the page shows, each from one ``feedback_metrics`` call (the API's)."""
    connection = views.sql
    since = now - query.days * DAY_MS
    channel = query.channel or None

    # One read of the period's answers and invitations for the dozen calls below.
    period = PeriodRows.read(connection, workspace, since, now + 1)

    def metrics(metric: str, by: str | None = None, **filters: Any) -> dict[str, Any]:
        found: dict[str, Any] = feedback_metrics(
            connection, workspace, MetricQuery(metric=metric, by=by, since_ms=since, **filters), now, period=period
        )
        return found

    answers = {metric: metrics(metric, channel=channel) for metric in FEEDBACK_METRICS}
    overall = {metric: found["groups"][0] for metric, found in answers.items()}
    # Without a choice: the metric most answered (NPS on a tie).
    metric = query.metric or max(METRICS, key=lambda name: overall[name]["answers"])
    by_channel = metrics(metric, "channel")["groups"]
    channels = [str(group["key"]) for group in by_channel if group["key"] is not None and group["answers"]]
    weekly: dict[str, list[dict[str, Any]]] = {}
    if channel is None and len(channels) != 1:
        weekly["All channels"] = metrics(metric, "week")["groups"]
    for name in [channel] if channel else channels:
        weekly[str(name)] = metrics(metric, "week", channel=name)["groups"]
    return {
        "metric": metric,
        "since": answers[metric]["since"],
        "until": answers[metric]["until"],
        "overall": overall,
        "by_channel": by_channel,
        "channels": channels,
        "weekly": weekly,
        "by_journey": metrics(metric, "journey", channel=channel)["groups"],
    }


def trend_chart(metric: str, weekly: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """One line per channel (and all channels, dashed), week by week."""
    traces = []
    for position, (name, groups) in enumerate(weekly.items()):
        shown = [group for group in groups if group["key"] is not None and group["score"] is not None]
        traces.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": name,
                "x": [group["key"] for group in shown],
                "y": [group["score"] for group in shown],
                "customdata": [group["answers"] for group in shown],
                "hovertemplate": f"{name}<br>%{{x}}: %{{y}} (n = %{{customdata}})<extra></extra>",
                "line": {
                    "color": LINE_COLOURS[position % len(LINE_COLOURS)] if name != "All channels" else "#1b1f24",
                    "dash": "dash" if name == "All channels" else "solid",
                },
            }
        )
    axis = {"nps": [-100, 100], "csat": [0, 100], "ces": [1, 7]}[metric]
    return {
        "data": traces,
        "layout": {
            "xaxis": {"type": "category", "title": {"text": "ISO week"}},
            "yaxis": {"title": {"text": AXIS_TITLES[metric]}, "range": axis},
            "legend": {"orientation": "h", "x": 0, "y": 1.12},
            "margin": {"l": 64, "r": 8, "t": 40, "b": 48},
        },
    }


def week_rows(weekly: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The chart as a table: one row per week, a (score, n) per line."""
    weeks = sorted({str(group["key"]) for groups in weekly.values() for group in groups if group["key"] is not None})
    found = {name: {group["key"]: group for group in groups} for name, groups in weekly.items()}
    return [{"week": week, "cells": [found[name].get(week) for name in weekly]} for week in weeks]


async def feedback_page(view: View) -> Response:
    params = view.request.query_params
    try:
        query = FeedbackQuery.read(params)
    except InvalidInput as error:
        return view.render(
            "pages/feedback.html", status=400, title="Feedback", area="feedback", query=FeedbackQuery.echo(params),
            error=error, counts={}, period=PERIODS.get(params.get("period", ""), ""), **choices(),
        )  # fmt: skip
    workspace, since = view.workspace, wall_clock_ms() - query.days * DAY_MS
    counts = await view.profiles.run(lambda views: answer_counts(views.sql, workspace, since))
    if not query.metric:
        # The metric most answered (NPS on a tie) until one is chosen.
        query = query.with_metric(max(METRICS, key=lambda name: counts.get(name, 0)))
    return view.render(
        "pages/feedback.html",
        title="Feedback",
        area="feedback",
        query=query,
        error=None,
        counts=counts,
        period=PERIODS[query.period],
        **choices(),
    )


async def metrics_fragment(view: View) -> Response:
    """The scores now and week by week, by channel and by journey: a dozen
    ``feedback_metrics`` calls, each a pass over the period's answers."""
    try:
        query = FeedbackQuery.read(view.request.query_params)
    except InvalidInput as error:
        return view.render("fragments/feedback_error.html", status=400, error=error)
    workspace, now = view.workspace, wall_clock_ms()
    found = await view.profiles.run(lambda views: read_metrics(views, workspace, query, now))
    query = query.with_metric(found["metric"])
    return view.render(
        "fragments/feedback_metrics.html",
        query=query,
        found=found,
        trend=trend_chart(query.metric, found["weekly"]),
        weeks=week_rows(found["weekly"]),
        period=PERIODS[query.period],
        **choices(),
    )


def choices() -> dict[str, Any]:
    return {
        "periods": PERIODS,
        "metrics": METRICS,
        "meaning": SCORE_MEANING,
        "score_text": score_text,
        "interval_text": interval_text,
    }


# --- root causes and opportunities (DuckDB: fragments) -------------------------------------------


def step_text(label: str) -> str:
    """``app:Password Reset Failed`` as ``app: Password Reset Failed``."""
    channel, separator, name = label.partition(":")
    return f"{channel}: {name}" if separator and name else label


def label_text(pattern: str) -> str:
    """Any pattern (a step, ``a → b``), its steps as ``step_text`` writes them."""
    return " → ".join(step_text(part) for part in pattern.split(" → "))


def pattern_text(kind: str, pattern: str) -> tuple[str, str]:
    """(what customers did, the pattern named) for a finding's sentence."""
    if kind == "transition":
        before, _, after = pattern.partition(" → ")
        return "switched", f"from {before} to {after}"
    if kind == "sequence":
        return "had", " then ".join(step_text(part) for part in pattern.split(" → "))
    return "had", step_text(pattern)


def window_text(ms: int) -> str:
    for unit, size in (("days", DAY_MS), ("h", 3_600_000), ("min", 60_000)):
        if ms % size == 0:
            count = ms // size
            return f"{count} {'day' if unit == 'days' and count == 1 else unit}"
    return f"{ms // 1000} s"


def cause_sentences(found: dict[str, Any]) -> list[dict[str, Any]]:
    """Each finding as a sentence (in parts, for the template to mark up): "Customers
    who had *app: Password Reset Failed* within 2 h before answering gave a critical
    CSAT 4.2× as often (38 % vs 9 %, 57 customers; significant)."""
    metric = str(found["metric"]).upper()
    subject = f"a critical {found['channel'] + ' ' if found.get('channel') else ''}{metric}"
    window = window_text(int(found["lookback_ms"]))
    sentences = []
    for finding in found["findings"][:TOP_CAUSES]:
        did, named = pattern_text(finding["kind"], finding["pattern"])
        lift = finding["lift"]
        sentences.append(
            {
                "lead": f"Customers who {did}",
                "pattern": named,
                "rest": (
                    f"within {window} before answering gave {subject} {lift:.1f}× as often "
                    f"({share_text(finding['critical_rate'])} vs {share_text(found['critical_rate'])}, "
                    f"{finding['customers']} {'customer' if finding['customers'] == 1 else 'customers'}; "
                    f"{'significant' if finding['significant'] else 'could still be chance'})."
                ),
                "finding": finding,
                "together": [label_text(label) for label in finding.get("together_with", [])],
            }
        )
    return sentences


def critical_text(found: dict[str, Any]) -> str:
    """``≤ 2`` from the analysis' ``<= 2``."""
    return str(found["critical"]).replace("<=", "≤").replace(">=", "≥")


async def causes_fragment(view: View) -> Response:
    try:
        query = FeedbackQuery.read(view.request.query_params)
        found = await analyze(view, "root-causes", **query.analysis(), top=str(TOP_CAUSES))
    except InvalidInput as error:
        return view.render("fragments/feedback_error.html", status=400, error=error)
    except PolkuError as error:
        return view.render("fragments/unavailable.html", error=error)
    return view.render(
        "fragments/feedback_causes.html",
        found=found,
        sentences=cause_sentences(found),
        critical=critical_text(found),
        window=window_text(int(found["lookback_ms"])),
        metric_name=METRICS[query.metric],
        period=PERIODS[query.period],
        query=query,
    )


async def opportunities_fragment(view: View) -> Response:
    try:
        query = FeedbackQuery.read(view.request.query_params)
        found = await analyze(view, "opportunities", **query.analysis(), top=str(TOP_OPPORTUNITIES))
    except InvalidInput as error:
        return view.render("fragments/feedback_error.html", status=400, error=error)
    except PolkuError as error:
        return view.render("fragments/unavailable.html", error=error)
    fixes = [{**item, "named": label_text(item["pattern"])} for item in found["opportunities"]]
    return view.render(
        "fragments/feedback_opportunities.html",
        fixes=fixes,
        metric_name=METRICS[query.metric],
        period=PERIODS[query.period],
        share_text=share_text,
    )


routes = [
    page_route("/ui/feedback", feedback_page),
    page_route("/ui/fragments/feedback-metrics", metrics_fragment),
    page_route("/ui/fragments/feedback-causes", causes_fragment),
    page_route("/ui/fragments/feedback-opportunities", opportunities_fragment),
]
