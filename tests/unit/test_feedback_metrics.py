"""Feedback metrics: the definitions against hand-computed examples, the intervals
against published and hand-computed values, edge cases and breakdowns."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from polku.core.feedback_metrics import (
    Answer,
    Interval,
    breakdown,
    summarize,
    t_quantile,
    valid_score,
)

Z_95 = 1.959963984540054


def close(interval: Interval | None, low: float, high: float, tolerance: float = 0.01) -> bool:
    assert interval is not None
    return bool(
        interval.low == pytest.approx(low, abs=tolerance) and interval.high == pytest.approx(high, abs=tolerance)
    )


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp() * 1000)


def answer(score: float, *, channel: str = "email", at: int = 0, **fields: Any) -> Answer:
    return Answer(metric=fields.pop("metric", "nps"), score=score, ts_ms=at, channel=channel, **fields)


# --- definitions, by hand -------------------------------------------------------


def test_nps_counts_promoters_passives_and_detractors() -> None:
    # 10, 10, 9, 9, 9 promote; 8, 7 are passive; 6, 5, 3 detract: 50 % − 30 % = 20
    summary = summarize("nps", [10, 9, 9, 8, 7, 6, 5, 10, 3, 9])
    assert summary.answers == 10
    assert summary.score == pytest.approx(20.0)
    assert summary.shares == pytest.approx({"promoters": 50.0, "passives": 20.0, "detractors": 30.0})
    assert summary.mean == pytest.approx(7.6)  # 76 / 10


def test_nps_adjusted_wald_interval_by_hand() -> None:
    # z²/4 = 0.960365 pseudo-answers to promoters and detractors, n' = 10 + z²/2 = 11.920729
    # p' = 5.960365 / 11.920729 = 0.500000, d' = 3.960365 / 11.920729 = 0.332226, net 0.167774
    # var = (p' + d' − net²) / n' = (0.832226 − 0.028148) / 11.920729 = 0.067453
    # half width = 1.959964 × √0.067453 = 0.509038 → [−0.341264, 0.676812]
    summary = summarize("nps", [10, 9, 9, 8, 7, 6, 5, 10, 3, 9])
    assert close(summary.interval, -34.13, 67.68)


def test_csat_is_the_share_of_fours_and_fives() -> None:
    summary = summarize("csat", [5, 4, 3, 2, 5])
    assert summary.score == pytest.approx(60.0)  # 3 of 5
    assert summary.shares == {"satisfied": pytest.approx(60.0)}
    assert summary.mean == pytest.approx(3.8)  # 19 / 5
    # Wilson 3/5 at 95 %: [0.2307, 0.8824]
    assert close(summary.interval, 23.07, 88.24)
    assert summary.share_intervals["satisfied"] == summary.interval


def test_ces_is_the_mean_with_the_share_of_high_effort() -> None:
    summary = summarize("ces", [1, 7, 5, 6, 2])
    assert summary.score == pytest.approx(4.2)  # 21 / 5
    assert summary.mean == pytest.approx(4.2)
    assert summary.shares == {"high_effort": pytest.approx(60.0)}  # 7, 5, 6
    # s² = (3.2² + 2.8² + 0.8² + 1.8² + 2.2²) / 4 = 26.8 / 4 = 6.7, s/√5 = 1.157584,
    # t(0.975, 4) = 2.776445: 4.2 ± 3.213977 runs past both ends and is clipped to the 1–7 scale
    assert summary.interval == Interval(1.0, 7.0)
    assert summary.mean_interval == summary.interval


def test_wilson_interval_matches_the_published_value() -> None:
    # 8 of 10 at 95 %: Wilson score interval [0.490, 0.943] (Newcombe 1998, Brown, Cai & DasGupta 2001)
    summary = summarize("csat", [5, 5, 5, 5, 4, 4, 4, 4, 1, 2])
    assert summary.score == pytest.approx(80.0)
    assert close(summary.interval, 49.02, 94.33)


def test_t_interval_of_the_mean_by_hand() -> None:
    # NPS answers 10 9 9 8 7 6 5 10 3 9: mean 7.6, squared deviations sum to 48.4,
    # s² = 48.4 / 9, standard error √(48.4 / 90) = 0.733333, t(0.975, 9) = 2.262157,
    # 7.6 ± 1.658915 = [5.941085, 9.258915]
    summary = summarize("nps", [10, 9, 9, 8, 7, 6, 5, 10, 3, 9])
    assert close(summary.mean_interval, 5.941085, 9.258915, tolerance=1e-5)


@pytest.mark.parametrize(
    ("confidence", "df", "table"),
    [
        (0.95, 1, 12.7062),
        (0.95, 2, 4.3027),
        (0.95, 4, 2.7764),
        (0.95, 9, 2.2622),
        (0.99, 30, 2.7500),
        (0.90, 200, 1.6525),
        (0.90, 201, 1.6524),
        (0.95, 1000, 1.9623),
        (0.998, 1, 318.3088),
    ],
)
def test_t_quantile_matches_the_table(confidence: float, df: int, table: float) -> None:
    assert t_quantile(confidence, df) == pytest.approx(table, abs=1e-4)


def test_confidence_changes_the_width() -> None:
    scores = [10, 9, 9, 8, 7, 6, 5, 10, 3, 9]
    narrow, wide = summarize("nps", scores, confidence=0.8), summarize("nps", scores, confidence=0.99)
    assert narrow.interval is not None and wide.interval is not None
    assert wide.interval.low < narrow.interval.low and narrow.interval.high < wide.interval.high


# --- edge cases -------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["csat", "nps", "ces"])
def test_no_answers_give_none_not_zero(metric: str) -> None:
    summary = summarize(metric, [])
    assert summary.answers == 0
    assert summary.score is None and summary.interval is None
    assert summary.mean is None and summary.mean_interval is None
    assert summary.shares == {} and summary.share_intervals == {}
    assert summary.as_dict()["score"] is None


def test_one_answer_has_no_mean_interval_but_a_wilson_interval() -> None:
    summary = summarize("csat", [4])
    assert summary.mean == 4.0 and summary.mean_interval is None
    assert summary.score == 100.0
    # Wilson 1/1 at 95 %: [1 / (1 + z²), 1] = [0.2065, 1]
    assert close(summary.interval, 100 / (1 + Z_95**2), 100.0)


def test_all_detractors_score_minus_100_with_a_finite_interval() -> None:
    # p' = 0.960365 / 11.920729, d' = 10.960365 / 11.920729, net −0.838874,
    # var = (1 − 0.703710) / 11.920729 = 0.024855, half width 0.308999 → high −0.529875
    summary = summarize("nps", [0, 1, 2, 3, 4, 5, 6, 6, 5, 0])
    assert summary.score == -100.0
    assert close(summary.interval, -100.0, -52.99)


def test_all_promoters_score_100_inside_the_bounds() -> None:
    summary = summarize("nps", [9, 10] * 5)
    assert summary.score == 100.0
    assert close(summary.interval, 52.99, 100.0)
    single = summarize("nps", [10])
    assert single.interval is not None and -100 <= single.interval.low < single.interval.high == 100


def test_invalid_scores_are_not_counted() -> None:
    scores: list[Any] = [5, "5", None, True, math.nan, math.inf, 0, 6, -1, 4.5, 3]
    summary = summarize("csat", scores)
    assert summary.answers == 3  # 5, 4.5 and 3
    assert summary.score == pytest.approx(200 / 3)
    assert summary.mean == pytest.approx(12.5 / 3)


@pytest.mark.parametrize(
    ("metric", "score", "valid"),
    [
        ("nps", 0, True),
        ("nps", 10, True),
        ("nps", 11, False),
        ("ces", 7.0, True),
        ("ces", 0, False),
        ("csat", False, False),
        ("nsp", 5, False),
    ],
)
def test_valid_score(metric: str, score: object, valid: bool) -> None:
    assert valid_score(metric, score) is valid


def test_response_rate_with_a_wilson_interval() -> None:
    summary = summarize("csat", [5, 4, 3, 2, 5], invitations=20)
    assert summary.response_rate == pytest.approx(25.0)
    assert close(summary.response_interval, 11.19, 46.87)  # Wilson 5/20


def test_response_rate_without_invitations_is_none() -> None:
    for invitations in (None, 0):
        summary = summarize("csat", [5, 4], invitations=invitations)
        assert summary.response_rate is None and summary.response_interval is None


def test_more_answers_than_invitations_has_no_rate_interval() -> None:
    summary = summarize("csat", [5, 4, 3], invitations=2)
    assert summary.response_rate == pytest.approx(150.0)
    assert summary.response_interval is None


@pytest.mark.parametrize("confidence", [0.5, 0.999, 1.2, 0.0, math.nan])
def test_confidence_outside_the_range_is_refused(confidence: float) -> None:
    with pytest.raises(ValueError, match=r"confidence must be between 0\.5 and 0\.999"):
        summarize("nps", [10], confidence=confidence)
    with pytest.raises(ValueError, match="confidence"):
        breakdown([], "nps", None, confidence=confidence)


def test_unknown_metric_and_grouping_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown feedback metric"):
        summarize("nsp", [10])
    with pytest.raises(ValueError, match="cannot group by 'country'"):
        breakdown([], "nps", "country")
    with pytest.raises(ValueError, match="invitations"):
        summarize("nps", [10], invitations=-1)


def test_as_dict_is_json_ready_and_rounded() -> None:
    data = summarize("nps", [10, 9, 9, 8, 7, 6, 5, 10, 3, 9], invitations=30).as_dict()
    assert data["score"] == 20.0
    assert data["interval"] == [-34.13, 67.68]
    assert data["mean_interval"] == [5.94, 9.26]
    assert data["shares"] == {"promoters": 50.0, "passives": 20.0, "detractors": 30.0}
    assert data["share_intervals"]["promoters"] == [23.66, 76.34]  # Wilson 5/10
    assert data["response_rate"] == 33.33
    assert data["invitations"] == 30


@given(
    st.lists(st.integers(min_value=0, max_value=10), min_size=1, max_size=300),
    st.floats(min_value=0.501, max_value=0.998),
)
def test_nps_and_its_interval_stay_in_bounds(scores: list[int], confidence: float) -> None:
    summary = summarize("nps", scores, confidence=confidence)
    assert summary.score is not None and summary.interval is not None
    assert -100 <= summary.interval.low <= summary.score <= summary.interval.high <= 100
    assert summary.interval.low < summary.interval.high


# --- breakdowns -------------------------------------------------------------------


def test_breakdown_by_channel_sorted_with_invitations() -> None:
    answers = [answer(10, channel="sms"), answer(3, channel="email"), answer(9, channel="email")]
    answers.append(answer(5, channel="sms", metric="csat"))  # another metric: not counted
    groups = breakdown(answers, "nps", "channel", invitations={"email": 4, "push": 10})
    assert [key for key, _ in groups] == ["email", "push", "sms"]
    email, push, sms = (summary for _, summary in groups)
    assert (email.answers, email.score, email.response_rate) == (2, 0.0, 50.0)
    assert (push.answers, push.score, push.response_rate) == (0, None, 0.0)  # invited, nobody answered
    assert (sms.answers, sms.score, sms.invitations) == (1, 100.0, None)


def test_breakdown_overall_is_one_group_keyed_none() -> None:
    groups = breakdown([answer(10), answer(0), answer(8)], "nps", None, invitations={None: 6})
    assert len(groups) == 1
    key, summary = groups[0]
    assert key is None and summary.answers == 3 and summary.score == 0.0 and summary.response_rate == 50.0


def test_breakdown_by_segment_counts_an_answer_in_each_segment() -> None:
    answers = [
        answer(10, segments=("vip", "new")),
        answer(2, segments=("vip",)),
        answer(9),  # no segment: the None group
    ]
    groups = dict(breakdown(answers, "nps", "segment"))
    assert list(groups) == [None, "new", "vip"]
    assert groups["vip"].answers == 2 and groups["vip"].score == 0.0
    assert groups["new"].answers == 1 and groups["new"].score == 100.0
    assert groups[None].answers == 1


def test_breakdown_by_period_uses_utc_iso_dates() -> None:
    answers = [
        answer(10, at=ms(2026, 11, 23, 0, 30)),  # a Monday: ISO week 48
        answer(0, at=ms(2026, 11, 22, 23, 30)),  # Sunday: still week 47
        answer(9, at=ms(2027, 1, 1, 12)),  # Friday 1 January 2027 belongs to 2026-W53
    ]
    assert [key for key, _ in breakdown(answers, "nps", "week")] == ["2026-W47", "2026-W48", "2026-W53"]
    assert [key for key, _ in breakdown(answers, "nps", "day")] == ["2026-11-22", "2026-11-23", "2027-01-01"]
    months = breakdown(answers, "nps", "month")
    assert [(key, summary.answers) for key, summary in months] == [("2026-11", 2), ("2027-01", 1)]


def test_breakdown_by_survey_and_step_keeps_missing_keys_as_none() -> None:
    answers = [answer(10, survey="onboarding", step="welcome"), answer(4), answer(6, survey="onboarding")]
    surveys = breakdown(answers, "nps", "survey")
    assert [(key, summary.answers) for key, summary in surveys] == [(None, 1), ("onboarding", 2)]
    steps = breakdown(answers, "nps", "step")
    assert [(key, summary.answers) for key, summary in steps] == [(None, 2), ("welcome", 1)]


def test_breakdown_drops_invalid_scores_before_grouping() -> None:
    groups = breakdown([answer(11, channel="sms"), answer(7, channel="email")], "nps", "channel")
    assert [key for key, _ in groups] == ["email"]
