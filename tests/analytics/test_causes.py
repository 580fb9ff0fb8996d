"""Funnels, channel switching, feedback root causes and opportunities on a
hand-built log whose answers are counted by hand in the comments."""

from __future__ import annotations

import pytest

from polku.adapters.duckdb import analytics_store
from polku.engine import analytics, analytics_causes
from tests.analytics.helpers import DAY, HOUR, MINUTE, Store
from tests.engine.helpers import T0


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    found = Store(tmp_path_factory.mktemp("causes"))
    # r0-r9: a failed reset in the app, a call 30 min later, a phone CSAT: 8 critical.
    for n in range(10):
        user, ts = f"r{n}", T0 + n * HOUR
        found.track(user, "Password Reset Failed", "app", ts)
        found.track(user, "Call Started", "phone", ts + 30 * MINUTE)
        found.track(
            user,
            "Feedback Submitted",
            "phone",
            ts + 40 * MINUTE,
            properties={"metric": "csat", "score": 1 if n < 8 else 4},
        )
    # w0-w9: browsing, a call, a phone CSAT: 1 critical.
    for n in range(10):
        user, ts = f"w{n}", T0 + n * HOUR
        found.track(user, "Home", "web", ts)
        found.track(user, "Call Started", "phone", ts + 30 * MINUTE)
        found.track(
            user,
            "Feedback Submitted",
            "phone",
            ts + 40 * MINUTE,
            properties={"metric": "csat", "score": 2 if n == 0 else 5},
        )
    # q0-q4: a failed reset, and no call.
    for n in range(5):
        found.track(f"q{n}", "Password Reset Failed", "app", T0 + n * HOUR)
    # Funnel: f0-f5 Home → Product → Checkout; f0-f2 check out; f3, f4 go to Help; f5 stops.
    for n in range(6):
        user, ts = f"f{n}", T0 + 2 * DAY + n * HOUR
        found.track(user, "Home", "web", ts)
        found.track(user, "Product", "web", ts + MINUTE)
        if n < 3:
            found.track(user, "Checkout", "web", ts + 2 * MINUTE)
        elif n < 5:
            found.track(user, "Help", "web", ts + 2 * MINUTE)
    return found.process()


def run(store: Store, function: object, **parameters: object) -> dict[str, object]:
    with analytics_store.reader(store.directory) as db:
        return function(db, analytics.Scope("default"), **parameters)  # type: ignore[operator, no-any-return]


def test_a_funnel_and_where_the_dropped_went(store: Store) -> None:
    found = run(store, analytics_causes.funnel, steps=["Home", "Product", "Checkout"], window_ms=DAY)
    steps = found["steps"]  # type: ignore[index]
    assert [step["customers"] for step in steps] == [16, 6, 3]  # w0-w9 and f0-f5 saw Home
    assert steps[1]["went_instead"] == [
        {"step": "Help", "customers": 2, "share": 66.67},
        {"step": "(nothing)", "customers": 1, "share": 33.33},
    ]
    assert found["conversion"] == 18.75


def test_channel_switching_after_one_self_service_step(store: Store) -> None:
    found = run(store, analytics_causes.switching, assisted=["phone"], event="app:Password Reset Failed")
    assert (found["customers"], found["switched"], found["rate"]) == (15, 10, 66.67)
    (previous,) = found["by_previous_step"]  # type: ignore[misc]
    assert previous["previous"] == "(start)" and previous["switched"] == 10


def test_self_service_steps_ranked_by_the_contacts_they_cause(store: Store) -> None:
    found = run(store, analytics_causes.switching, assisted=["phone"], min_customers=5)
    ranked = [(step["step"], step["customers"], step["switched"]) for step in found["steps"]]  # type: ignore[union-attr]
    assert ranked[:2] == [("app:Password Reset Failed", 15, 10), ("web:Home", 16, 10)]


def test_root_causes_rank_the_failed_reset_first_with_its_lift(store: Store) -> None:
    found = run(store, analytics_causes.root_causes, metric="csat", channel="phone", min_support=5)
    assert (found["answers"], found["critical_answers"]) == (20, 9)
    first = found["findings"][0]  # type: ignore[index]
    assert first["kind"] in ("event", "transition", "sequence")
    by_pattern = {f["pattern"]: f for f in found["findings"]}  # type: ignore[union-attr]
    reset = by_pattern["app:Password Reset Failed"]
    # 8 of the 10 answers after a failed reset are critical: 0.8 against 9/20 = 0.45 overall.
    assert (reset["answers"], reset["critical"], reset["customers"]) == (10, 8, 8)
    assert reset["lift"] == 1.78 and reset["coverage"] == 88.89
    assert reset["sentence"] == (
        "88.89 % of critical phone CSAT follows `Password Reset Failed` in the app within 2 h; lift 1.78, 8 customers"
    )
    # The switch to the phone and the two-step sequence always come with it: one finding.
    assert set(reset["together_with"]) == {"app → phone", "app:Password Reset Failed → phone:Call Started"}
    assert "web:Home" not in by_pattern  # one critical answer: below the support
    assert all(link.startswith("/v1/profiles/") for link in reset["timelines"])


def test_opportunities_rank_the_fix_that_spares_most(store: Store) -> None:
    found = run(store, analytics_causes.opportunities, metric="csat", channel="phone", assisted=["phone"])
    first = found["opportunities"][0]  # type: ignore[index]
    # Without the failed reset's pattern: 1 critical in 10 answers (10 %); with it 8 in 10: about 7 spared.
    assert first["kind"] == "satisfaction" and first["spared"] == 7.0
    assert any(item["kind"] == "failure_demand" for item in found["opportunities"])  # type: ignore[union-attr]


def test_success_opportunities_name_the_step_that_leads_away_from_the_goal(store: Store) -> None:
    # f0-f2 check out after Product; f3, f4 go to Help and stop; f5 stops.
    found = run(store, analytics_causes.opportunities, goal="web:Checkout", min_support=2)
    success = [item for item in found["opportunities"] if item["kind"] == "success"]  # type: ignore[union-attr]
    # At Product, those who went to Help never checked out; the others (to Checkout, or
    # nowhere) did 3 times in 4.
    by_step = {item["pattern"]: item for item in success}
    help_page = by_step["web:Help"]
    assert help_page["after"] == ["web:Product"]
    assert help_page["rate"] == 0.0 and help_page["baseline"] == 75.0 and help_page["spared"] == 1.5
    assert "more customers would reach `web:Checkout`" in help_page["sentence"]
    # At Home, the callers never checked out; the shoppers did half the time.
    assert by_step["phone:Call Started"]["spared"] == 5.0
