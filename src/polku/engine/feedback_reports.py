"""Feedback metrics and survey reports, read from the processor's state (the API's
``GET /v1/feedback/metrics`` and ``/counts`` and ``polku feedback metrics`` and
``counts`` share them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from polku.adapters.sqlite import survey_store
from polku.core.errors import InvalidInput
from polku.core.feedback_metrics import GROUPINGS, Answer, breakdown, summarize
from polku.core.journey_state import InvitationRecord
from polku.core.profile import FEEDBACK_METRICS
from polku.ports import SqlReads
from polku.state import FeedbackRow

DAY_MS: Final = 86_400_000
DEFAULT_PERIOD_DAYS: Final = 90
DEFAULT_PERIOD_MS: Final = DEFAULT_PERIOD_DAYS * DAY_MS
MAX_COUNT_DAYS: Final = 3660
MOST_ANSWERED_ORDER: Final = ("nps", "csat", "ces")
"""``FEEDBACK_METRICS`` in the order ties go by."""


@dataclass(frozen=True)
class MetricQuery:
    metric: str
    by: str | None = None
    since_ms: int = 0
    until_ms: int = 0
    survey: str | None = None
    journey: str | None = None
    step: str | None = None
    channel: str | None = None
    segment: str | None = None
    confidence: float = 0.95

    def check(self) -> MetricQuery:
        if self.metric not in FEEDBACK_METRICS:
            raise InvalidInput(f"metric must be one of {', '.join(FEEDBACK_METRICS)}", field="metric")
        if self.by is not None and self.by not in GROUPINGS:
            raise InvalidInput(f"by must be one of {', '.join(GROUPINGS)}", field="by")
        if not 0.5 < self.confidence < 0.999:
            raise InvalidInput("confidence must be between 0.5 and 0.999 (e.g. 0.95)", field="confidence")
        if self.until_ms and self.since_ms >= self.until_ms:
            raise InvalidInput("since must be before until", field="since")
        return self


def _matches(query: MetricQuery, row: FeedbackRow | InvitationRecord, segments: Sequence[str]) -> bool:
    survey = row.survey
    journey = row.journey or None
    step = row.step or None
    channel = row.channel if isinstance(row, FeedbackRow) else (row.event_channel or row.channel)
    return (
        (query.survey is None or survey == query.survey)
        and (query.journey is None or journey == query.journey)
        and (query.step is None or step == query.step)
        and (query.channel is None or channel == query.channel)
        and (query.segment is None or query.segment in segments)
    )


@dataclass(frozen=True)
class PeriodRows:
    """A period's answers and sent invitations, read once for several
    ``feedback_metrics`` calls over the same period (a page of scores)."""

    since_ms: int
    until_ms: int
    feedback: list[FeedbackRow]
    invitations: list[InvitationRecord]

    @classmethod
    def read(cls, connection: SqlReads, workspace: str, since_ms: int, until_ms: int) -> PeriodRows:
        return cls(
            since_ms,
            until_ms,
            survey_store.feedback_rows(connection, workspace, since_ms, until_ms),
            survey_store.invitation_counts(connection, workspace, since_ms, until_ms),
        )


def feedback_metrics(
    connection: SqlReads, workspace: str, query: MetricQuery, now_ms: int, *, period: PeriodRows | None = None
) -> dict[str, Any]:
    """The metric overall or by a grouping, with intervals, and the response rate of
    the invitations of the period (answers to invitations / invitations sent).
    ``period``: the rows of exactly this query's period, already read."""
    query.check()
    until = query.until_ms or now_ms + 1
    since = query.since_ms or until - DEFAULT_PERIOD_MS
    if period is None or (period.since_ms, period.until_ms) != (since, until):
        period = PeriodRows.read(connection, workspace, since, until)
    rows = [row for row in period.feedback if row.metric == query.metric and _matches(query, row, row.segments)]
    answers = [
        Answer(
            metric=row.metric,
            score=row.score,
            ts_ms=row.ts_ms,
            channel=row.channel,
            survey=row.survey,
            journey=row.journey,
            step=row.step,
            segments=tuple(row.segments),
        )
        for row in rows
    ]
    invitations: dict[str | None, int] | None = None
    if query.segment is None and query.by != "segment":
        # Invitations keep no segments: a response rate by segment is not shown.
        invitations = {}
        for record in period.invitations:
            if record.metric == query.metric and _matches(query, record, ()):
                for key in _invitation_keys(record, query.by):
                    invitations[key] = invitations.get(key, 0) + 1
    groups = breakdown(answers, query.metric, query.by, invitations=invitations, confidence=query.confidence)
    if query.by is None and not groups:  # "no answers yet" is an answer too
        total = invitations.get(None, 0) if invitations is not None else None
        groups = [(None, summarize(query.metric, [], invitations=total, confidence=query.confidence))]
    return {
        "metric": query.metric,
        "by": query.by,
        "since": _iso(since),
        "until": _iso(until),
        "confidence": query.confidence,
        "filters": {
            name: value
            for name, value in (
                ("survey", query.survey),
                ("journey", query.journey),
                ("step", query.step),
                ("channel", query.channel),
                ("segment", query.segment),
            )
            if value is not None
        },
        "groups": [{"key": key, **summary.as_dict()} for key, summary in groups],
    }


def answer_counts(connection: SqlReads, workspace: str, since_ms: int, until_ms: int = 0) -> dict[str, int]:
    """Answers per metric from ``since_ms`` (until ``until_ms``, exclusive, when
    given); only the metrics answered (an index read)."""
    sql = "SELECT metric, count(*) FROM feedback WHERE workspace = ? AND ts_ms >= ?"
    parameters: list[Any] = [workspace, since_ms]
    if until_ms:
        sql += " AND ts_ms < ?"
        parameters.append(until_ms)
    rows = connection.execute(sql + " GROUP BY metric", parameters).fetchall()
    return {str(metric): int(count) for metric, count in rows}


def feedback_counts(connection: SqlReads, workspace: str, days: int, now_ms: int) -> dict[str, Any]:
    """Answers per metric in the last ``days`` days, every metric named, and the one
    most answered (NPS, then CSAT, on a tie): the metric the dashboard's feedback
    page shows first."""
    if not 1 <= days <= MAX_COUNT_DAYS:
        raise InvalidInput(f"days must be 1-{MAX_COUNT_DAYS}", field="days")
    since = now_ms - days * DAY_MS
    counts = answer_counts(connection, workspace, since, now_ms + 1)
    answers = {metric: counts.get(metric, 0) for metric in MOST_ANSWERED_ORDER}
    return {
        "since": _iso(since),
        "until": _iso(now_ms),
        "days": days,
        "answers": answers,
        "most_answered": max(MOST_ANSWERED_ORDER, key=lambda metric: answers[metric]),
    }


def _invitation_keys(record: InvitationRecord, by: str | None) -> list[str | None]:
    if by is None:
        return [None]
    if by == "survey":
        return [record.survey]
    if by == "channel":
        return [record.event_channel or record.channel]
    if by == "journey":
        return [record.journey or None]
    if by == "step":
        return [record.step or None]
    moment = datetime.fromtimestamp(record.created_ms / 1000, UTC)
    if by == "day":
        return [moment.strftime("%Y-%m-%d")]
    if by == "week":
        year, week, _ = moment.isocalendar()
        return [f"{year}-W{week:02d}"]
    return [moment.strftime("%Y-%m")]


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def invitation_view(record: InvitationRecord, answered: bool) -> dict[str, Any]:
    return {
        "id": record.id,
        "customer_id": record.customer_id,
        "survey": record.survey,
        "version": record.version,
        "status": record.status,
        "reason": record.reason or None,
        "channel": record.channel or None,
        "created": _iso(record.created_ms),
        "expires": _iso(record.expires_ms) if record.expires_ms else None,
        "answered": answered,
        "locale": record.locale or None,
        "journey": record.journey or None,
        "step": record.step or None,
        "trigger": record.trigger or None,
        "account": record.account or None,
    }


def survey_counts(connection: SqlReads, workspace: str, survey: str | None, since_ms: int) -> dict[str, Any]:
    """Invitations sent and not sent (by reason), per survey."""
    found: dict[str, dict[str, Any]] = {}
    for survey_id, status, reason, count in survey_store.reason_counts(connection, workspace, survey, since_ms):
        entry = found.setdefault(survey_id, {"sent": 0, "suppressed": 0, "reasons": {}})
        if status == "sent":
            entry["sent"] += count
        else:
            entry["suppressed"] += count
            entry["reasons"][reason] = entry["reasons"].get(reason, 0) + count
    for survey_id, entry in found.items():
        (answered,) = connection.execute(
            "SELECT count(*) FROM survey_invitations i JOIN feedback f ON f.workspace = i.workspace AND f.key = i.id "
            "WHERE i.workspace = ? AND i.survey = ? AND i.created_ms >= ?",
            (workspace, survey_id, since_ms),
        ).fetchone()
        entry["answered"] = int(answered)
        entry["response_rate"] = round(100 * int(answered) / entry["sent"], 2) if entry["sent"] else None
    return found
