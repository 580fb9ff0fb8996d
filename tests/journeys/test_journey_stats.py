"""``summarize``: a journey's counters, summarised, with known numbers."""

from __future__ import annotations

import pytest

from polku.core.journey_stats import summarize, uplift_interval, wilson_interval


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        # Newcombe (1998), Statistics in Medicine 17:873-890, table II, method 10.
        ((56, 70, 48, 80), (0.2, 0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.6, 0.1705, 0.8090)),
        ((6, 7, 2, 7), (0.5714, 0.0582, 0.8062)),
        ((5, 56, 0, 29), (0.0893, -0.0381, 0.1926)),
    ],
)
def test_uplift_interval_matches_newcombes_table(
    counts: tuple[int, int, int, int], expected: tuple[float, float, float]
) -> None:
    found = uplift_interval(*counts)
    assert found is not None
    assert found == pytest.approx(expected, abs=5e-5)


def test_wilson_interval_of_no_successes_starts_at_zero() -> None:
    low, high = wilson_interval(0, 29)
    assert low == 0.0
    assert high == pytest.approx(0.1170, abs=5e-5)


def test_no_uplift_without_both_groups() -> None:
    assert uplift_interval(3, 10, 0, 0) is None
    assert uplift_interval(0, 0, 1, 10) is None


def test_summary_of_two_versions() -> None:
    rows = [
        (1, "entered", 70),
        (1, "entered:holdout", 80),
        (1, "reached:wait", 70),
        (1, "reached:email", 40),
        (1, "action:email:sent", 30),
        (1, "action:email:holdout", 35),
        (1, "action:email:held", 2),
        (1, "action:email:failed", 1),
        (1, "action:email:skipped:consent:marketing", 4),
        (1, "action:email:skipped:cap:weekly", 3),
        (1, "goal", 56),
        (1, "goal:holdout", 48),
        (1, "ended:completed", 100),
        (1, "ended:goal", 20),
        (1, "ended:migrated", 10),
        (1, "entry_capped", 5),
        (2, "migrated_in", 10),
        (2, "entered", 4),
        (2, "ended:exit:unsubscribed", 1),
    ]
    summary = summarize(rows)
    first = summary["versions"]["1"]
    assert first["entered"] == {"total": 150, "treatment": 70, "holdout": 80}
    assert first["active"] == 150 - 130
    assert first["ended"] == {"completed": 100, "goal": 20, "migrated": 10}
    assert first["entry_capped"] == 5
    # Counted before moves between steps were: every instance that reached a step looks as if it waits there.
    assert first["steps"] == {
        "wait": {"reached": 70, "waiting": 70, "left": {}},
        "email": {"reached": 40, "waiting": 40, "left": {}},
    }
    assert first["edges"] == []
    assert first["actions"]["email"] == {
        "sent": 30,
        "holdout": 35,
        "held": 2,
        "failed": 1,
        "skipped": {"consent:marketing": 4, "cap:weekly": 3},
        "skipped_total": 7,
    }
    goal = first["goal"]
    assert goal["treatment"] == {"entered": 70, "converted": 56, "rate": 0.8}
    assert goal["holdout"] == {"entered": 80, "converted": 48, "rate": 0.6}
    assert goal["uplift"]["absolute"] == pytest.approx(0.2)
    assert goal["uplift"]["ci95"] == pytest.approx([0.0524, 0.3339], abs=5e-5)

    second = summary["versions"]["2"]
    assert second["active"] == 10 + 4 - 1
    assert second["goal"]["uplift"] is None  # no holdout in version 2
    assert second["goal"]["holdout"]["rate"] is None

    total = summary["total"]
    assert total["entered"] == {"total": 154, "treatment": 74, "holdout": 80}
    # A migration moves an instance between versions: the total neither enters nor ends it.
    assert total["ended"] == {"completed": 100, "goal": 20, "exit:unsubscribed": 1}
    assert total["active"] == first["active"] + second["active"]
    assert total["goal"]["conversions"] == 104


def test_summary_of_nothing() -> None:
    summary = summarize([])
    assert summary["versions"] == {}
    assert summary["total"]["entered"]["total"] == 0
    assert summary["total"]["active"] == 0
    assert summary["total"]["goal"]["uplift"] is None
    assert summary["total"]["goal"]["treatment"]["rate"] is None


def test_more_conversions_than_entries_stay_a_proportion() -> None:
    found = uplift_interval(12, 10, 1, 10)
    assert found is not None
    assert -1.0 <= found[1] <= found[0] <= found[2] <= 1.0
