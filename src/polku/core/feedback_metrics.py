"""Feedback metrics (pure): CSAT, NPS and CES with confidence intervals that stay
honest for the small samples a survey, a step or a week often has.

Definitions, on the scales of ``FEEDBACK_SCALES`` (csat 1–5, nps 0–10, ces 1–7):

- **NPS** = % promoters (9–10) − % detractors (0–6), in points from −100 to 100.
- **CSAT** = % satisfied (4–5), plus the mean score.
- **CES** = the mean score, plus % high effort (5–7).
- **Response rate** = answers / invitations sent, when the invitations are known.

Intervals, and why these:

- A share (satisfied, high effort, each NPS category, response rate) gets the Wilson
  score interval: unlike the textbook Wald interval it never leaves [0, 100] and does
  not collapse to a zero width at 0 % or 100 %, which small groups hit all the time.
- NPS gets the adjusted-Wald interval (Rocks 2016; Sauro & Lewis): z²/4 pseudo-answers
  are added to the promoters and to the detractors and z²/2 to n, then the variance of
  the difference of two shares of one multinomial sample is used. Rocks found it among
  the best-covering intervals for the NPS; the pseudo-answers keep it finite and
  non-degenerate at −100 and +100, and it contains the observed NPS (a property test
  checks that).
- A mean gets the Student-t interval; for a handful of answers the normal quantile
  would be far too narrow. The t quantile is computed exactly (no scipy), see
  ``t_quantile``.

Empty groups give ``None`` rather than 0 or NaN: "nobody answered" is not a score.
Scores that are not numbers or lie off the scale are not counted (``valid_score``).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from polku.core.journey_stats import wilson_interval
from polku.core.profile import FEEDBACK_SCALES

GROUPINGS: Final = ("survey", "channel", "journey", "step", "segment", "day", "week", "month")
PROMOTER_MIN: Final = 9
DETRACTOR_MAX: Final = 6
SATISFIED_MIN: Final = 4
HIGH_EFFORT_MIN: Final = 5
_EXACT_T_MAX_DF: Final = 200
"""Above this many degrees of freedom the Cornish-Fisher expansion is off by less than 1e-7."""
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float


@dataclass(frozen=True)
class MetricSummary:
    metric: str
    answers: int
    score: float | None
    """NPS points; CSAT % satisfied (0–100); CES mean."""
    interval: Interval | None
    """The interval of ``score``."""
    mean: float | None
    mean_interval: Interval | None
    shares: dict[str, float]
    """In %: nps promoters/passives/detractors; csat satisfied; ces high_effort."""
    share_intervals: dict[str, Interval]
    invitations: int | None
    response_rate: float | None
    """In %; above 100 when more answers than invitations were counted (then no interval)."""
    response_interval: Interval | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, numbers rounded to 2 decimals, intervals as ``[low, high]``."""
        return {
            "metric": self.metric,
            "answers": self.answers,
            "score": _round(self.score),
            "interval": _pair(self.interval),
            "mean": _round(self.mean),
            "mean_interval": _pair(self.mean_interval),
            "shares": {name: round(share, 2) for name, share in self.shares.items()},
            "share_intervals": {name: _pair(interval) for name, interval in self.share_intervals.items()},
            "invitations": self.invitations,
            "response_rate": _round(self.response_rate),
            "response_interval": _pair(self.response_interval),
        }


@dataclass(frozen=True)
class Answer:
    """One feedback answer as the metrics see it."""

    metric: str
    score: float
    ts_ms: int
    channel: str
    survey: str | None = None
    journey: str | None = None
    step: str | None = None
    segments: tuple[str, ...] = ()


def valid_score(metric: str, score: object) -> bool:
    """Whether ``score`` is a finite number on the metric's scale. Fractions inside the
    scale count, as ``profile.feedback_score`` accepts them; booleans do not."""
    scale = FEEDBACK_SCALES.get(metric)
    if scale is None or isinstance(score, bool) or not isinstance(score, int | float):
        return False
    return scale[0] <= score <= scale[1]  # NaN fails both comparisons


def summarize(
    metric: str, scores: Sequence[float], *, invitations: int | None = None, confidence: float = 0.95
) -> MetricSummary:
    """The metric over ``scores``; invalid scores are dropped before anything is counted."""
    _check_metric(metric)
    z = _z(confidence)
    if invitations is not None and invitations < 0:
        raise ValueError(f"invitations must be 0 or more, not {invitations}")
    valid = [float(score) for score in scores if valid_score(metric, score)]
    answers = len(valid)
    mean = statistics.fmean(valid) if valid else None
    mean_interval = _mean_interval(metric, valid, confidence)
    shares, share_intervals = _shares(metric, valid, z)
    if metric == "nps":
        score = shares["promoters"] - shares["detractors"] if valid else None
        interval = _nps_interval(valid, z)
    elif metric == "csat":
        score, interval = shares.get("satisfied"), share_intervals.get("satisfied")
    else:
        score, interval = mean, mean_interval
    response_rate, response_interval = None, None
    if invitations:
        response_rate = 100 * answers / invitations
        if answers <= invitations:
            response_interval = _percent(wilson_interval(answers, invitations, z))
    return MetricSummary(
        metric=metric,
        answers=answers,
        score=score,
        interval=interval,
        mean=mean,
        mean_interval=mean_interval,
        shares=shares,
        share_intervals=share_intervals,
        invitations=invitations,
        response_rate=response_rate,
        response_interval=response_interval,
    )


def breakdown(
    answers: Iterable[Answer],
    metric: str,
    by: str | None,
    *,
    invitations: Mapping[str | None, int] | None = None,
    confidence: float = 0.95,
) -> list[tuple[str | None, MetricSummary]]:
    """``metric`` summarised per group of ``by`` (one group keyed ``None`` when ``by`` is
    ``None``), sorted by key with ``None`` first. An answer counts in each of its
    segments; one without segments, survey, journey or step falls in the ``None`` group.
    Periods are UTC: day ``2026-11-23``, ISO week ``2026-W48``, month ``2026-11``. A key
    of ``invitations`` without answers still gets a group: its response rate is 0 %."""
    _check_metric(metric)
    _z(confidence)
    if by is not None and by not in GROUPINGS:
        raise ValueError(f"cannot group by {by!r}; choose one of {', '.join(GROUPINGS)} or None")
    groups: defaultdict[str | None, list[float]] = defaultdict(list)
    for answer in answers:
        if answer.metric == metric and valid_score(metric, answer.score):
            for key in _group_keys(answer, by):
                groups[key].append(answer.score)
    invitations = invitations or {}
    keys = sorted(set(groups) | set(invitations), key=lambda key: (key is not None, key or ""))
    return [
        (key, summarize(metric, groups.get(key, []), invitations=invitations.get(key), confidence=confidence))
        for key in keys
    ]


def t_quantile(confidence: float, df: int) -> float:
    """The two-sided Student-t quantile: P(|T| < t) = ``confidence`` with ``df`` degrees
    of freedom. For integer ``df`` the t distribution function is a finite series in
    θ = atan(t / √df) (Abramowitz & Stegun 26.7.3–4), so up to ``_EXACT_T_MAX_DF`` it is
    inverted by bisection on θ ∈ [0, π/2), a bounded and monotone search; beyond, the
    Cornish-Fisher expansion around the normal quantile is off by less than 1e-7."""
    if df < 1:
        raise ValueError(f"a t quantile needs at least 1 degree of freedom, not {df}")
    if df > _EXACT_T_MAX_DF:
        z = statistics.NormalDist().inv_cdf((1 + confidence) / 2)
        return (
            z
            + (z**3 + z) / (4 * df)
            + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
        )
    low, high = 0.0, math.pi / 2
    for _ in range(64):
        middle = (low + high) / 2
        if _t_central_probability(middle, df) < confidence:
            low = middle
        else:
            high = middle
    return math.sqrt(df) * math.tan((low + high) / 2)


def _t_central_probability(theta: float, df: int) -> float:
    """P(|T| < √df · tan θ) for the t distribution with ``df`` degrees of freedom."""
    sine, cosine = math.sin(theta), math.cos(theta)
    cosine_squared = cosine * cosine
    term = total = 1.0
    if df % 2 == 0:
        for k in range(1, df // 2):
            term *= (2 * k - 1) / (2 * k) * cosine_squared
            total += term
        return sine * total
    if df == 1:
        return 2 * theta / math.pi
    for k in range(1, (df - 1) // 2):
        term *= (2 * k) / (2 * k + 1) * cosine_squared
        total += term
    return 2 / math.pi * (theta + sine * cosine * total)


def _check_metric(metric: str) -> None:
    if metric not in FEEDBACK_SCALES:
        raise ValueError(f"unknown feedback metric {metric!r}; choose one of {', '.join(FEEDBACK_SCALES)}")


def _z(confidence: float) -> float:
    if not 0.5 < confidence < 0.999:
        raise ValueError(f"confidence must be between 0.5 and 0.999 (exclusive), not {confidence}")
    return statistics.NormalDist().inv_cdf((1 + confidence) / 2)


def _shares(metric: str, scores: list[float], z: float) -> tuple[dict[str, float], dict[str, Interval]]:
    """The metric's category shares in % with their Wilson intervals; empty without answers."""
    if not scores:
        return {}, {}
    if metric == "nps":
        promoters = sum(score >= PROMOTER_MIN for score in scores)
        detractors = sum(score <= DETRACTOR_MAX for score in scores)
        counts = {"promoters": promoters, "passives": len(scores) - promoters - detractors, "detractors": detractors}
    elif metric == "csat":
        counts = {"satisfied": sum(score >= SATISFIED_MIN for score in scores)}
    else:
        counts = {"high_effort": sum(score >= HIGH_EFFORT_MIN for score in scores)}
    shares = {name: 100 * count / len(scores) for name, count in counts.items()}
    intervals = {name: _percent(wilson_interval(count, len(scores), z)) for name, count in counts.items()}
    return shares, intervals


def _nps_interval(scores: list[float], z: float) -> Interval | None:
    """The adjusted-Wald interval of the NPS, in points, clipped to [−100, 100]."""
    if not scores:
        return None
    pseudo = z * z / 4
    adjusted_n = len(scores) + 2 * pseudo
    promoters = (sum(score >= PROMOTER_MIN for score in scores) + pseudo) / adjusted_n
    detractors = (sum(score <= DETRACTOR_MAX for score in scores) + pseudo) / adjusted_n
    net = promoters - detractors
    # Var(p̂ − d̂) for one multinomial sample: (p + d − (p − d)²) / n
    half_width = z * math.sqrt((promoters + detractors - net * net) / adjusted_n)
    return Interval(max(-100.0, 100 * (net - half_width)), min(100.0, 100 * (net + half_width)))


def _mean_interval(metric: str, scores: list[float], confidence: float) -> Interval | None:
    """The Student-t interval of the mean, clipped to the scale; ``None`` below two answers."""
    if len(scores) < 2:
        return None
    low, high = FEEDBACK_SCALES[metric]
    mean = statistics.fmean(scores)
    half_width = t_quantile(confidence, len(scores) - 1) * statistics.stdev(scores) / math.sqrt(len(scores))
    return Interval(max(float(low), mean - half_width), min(float(high), mean + half_width))


def _group_keys(answer: Answer, by: str | None) -> Sequence[str | None]:
    if by is None:
        return (None,)
    if by == "segment":
        return answer.segments or (None,)
    if by in ("day", "week", "month"):
        moment = _EPOCH + timedelta(milliseconds=answer.ts_ms)
        if by == "day":
            return (moment.strftime("%Y-%m-%d"),)
        if by == "month":
            return (moment.strftime("%Y-%m"),)
        year, week, _ = moment.isocalendar()
        return (f"{year}-W{week:02d}",)
    key: str | None = getattr(answer, by)
    return (key,)


def _percent(bounds: tuple[float, float]) -> Interval:
    return Interval(100 * bounds[0], 100 * bounds[1])


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _pair(interval: Interval | None) -> list[float] | None:
    return None if interval is None else [round(interval.low, 2), round(interval.high, 2)]
