"""Attribution: the Markov removal effects on a tiny hand-solved chain, and against
the ChannelAttribution package (which simulates; compared within a tolerance) on a
generated log."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from polku.adapters.duckdb import analytics_store
from polku.engine import analytics
from polku.engine.analytics_effects import attribution, markov_removal_effects
from tests.analytics.helpers import MINUTE, Store
from tests.engine.helpers import T0


def test_removal_effects_of_a_hand_solved_chain() -> None:
    # search > email converts; search alone does not; email alone converts.
    paths = Counter({(("search", "email"), True): 1, (("search",), False): 1, (("email",), True): 1})
    probability, effects = markov_removal_effects(paths)
    # start → search 2/3, email 1/3; search → email 1/2, null 1/2; email → conversion 1.
    assert probability == pytest.approx(2 / 3 * 1 / 2 + 1 / 3)
    assert effects["email"] == pytest.approx(1.0)  # nothing converts without email
    assert effects["search"] == pytest.approx(1 - (1 / 3) / (2 / 3))  # half the conversions go


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Store:
    rng = random.Random(11)
    store = Store(tmp_path_factory.mktemp("attribution"))
    weights = {"email": 0.35, "search": 0.2, "social": 0.05, "app": 0.25}
    for number in range(600):
        user, ts = f"u{number}", T0 + number * MINUTE
        chance = 0.05
        previous = None
        for _ in range(rng.randint(1, 5)):
            channel = rng.choice([c for c in weights if c != previous])
            previous = channel
            store.track(user, "Visit", channel, ts)
            chance += weights[channel]
            ts += 10 * MINUTE
        if rng.random() < min(chance, 0.95) / 1.6:
            store.track(user, "Order Completed", "web", ts)
    return store.process()


def test_markov_attribution_matches_channel_attribution(generated: Store) -> None:
    import pandas as pd
    from ChannelAttribution import markov_model

    with analytics_store.reader(generated.directory) as db:
        ours = attribution(db, analytics.Scope("default"), goal="Order Completed")
        from polku.engine.analytics_effects import journeys_to_goal

        paths = journeys_to_goal(db, analytics.Scope("default"), goal="Order Completed")
    rows: dict[str, list[int]] = {}
    for (path, converted), count in paths.items():
        entry = rows.setdefault(" > ".join(path), [0, 0])
        entry[0 if converted else 1] += count
    frame = pd.DataFrame(
        {"path": list(rows), "conversions": [v[0] for v in rows.values()], "nulls": [v[1] for v in rows.values()]}
    )
    theirs = markov_model(frame, "path", "conversions", var_null="nulls", sep=">", verbose=False, flg_pro=False, seed=1)
    credited = dict(zip(theirs["channel_name"], theirs["total_conversions"], strict=True))
    assert ours["conversions"] == pytest.approx(sum(credited.values()), abs=1)
    assert {row["channel"] for row in ours["channels"]} == set(credited)
    for row in ours["channels"]:
        assert row["markov"] == pytest.approx(credited[row["channel"]], rel=0.08, abs=3), row
    linear = sum(row["linear"] for row in ours["channels"])
    assert linear == pytest.approx(ours["conversions"], abs=0.1)  # rounded per channel


SPLIT = """
id: offer
entry: {event: Signed Up}
holdout: 0.3
goal: {event: Order Completed, within: 7d}
steps:
  - id: test
    split: [{name: a, share: 1}, {name: b, share: 1}]
  - id: note
    action: {channel: agent_note, body: hello}
"""


def test_journey_uplift_per_holdout_and_split_arm(tmp_path: object) -> None:
    import sqlite3
    from pathlib import Path

    from polku.engine.analytics_effects import journey_uplift

    store = Store(Path(str(tmp_path)), journeys=(SPLIT,))
    for number in range(60):
        store.track(f"u{number}", "Signed Up", "web", T0 + number * MINUTE)
        if number % 3 == 0:
            store.track(f"u{number}", "Order Completed", "web", T0 + number * MINUTE + 1)
    store.process()
    connection = sqlite3.connect(Path(str(tmp_path)) / "state.db")
    try:
        (found,) = journey_uplift(connection, "default")["journeys"]
        arms = {arm["arm"]: arm for arm in found["splits"]["test"]}
        expected = dict(
            connection.execute(
                "SELECT s.detail, count(*) FROM journey_transitions s WHERE s.kind = 'split' GROUP BY s.detail"
            ).fetchall()
        )
        converted = dict(
            connection.execute(
                "SELECT s.detail, count(*) FROM journey_transitions s JOIN journey_transitions g "
                "ON g.instance = s.instance AND g.kind = 'goal' WHERE s.kind = 'split' GROUP BY s.detail"
            ).fetchall()
        )
    finally:
        connection.close()
    assert {name: arm["entered"] for name, arm in arms.items()} == expected
    assert {name: arm["converted"] for name, arm in arms.items() if arm["converted"]} == converted
    assert "uplift_vs_a" in arms["b"]
    goal = found["goal"]
    assert goal["treatment"]["entered"] + goal["holdout"]["entered"] == 60
    assert goal["treatment"]["converted"] + goal["holdout"]["converted"] == 20
    assert goal["uplift"] is not None and len(goal["uplift"]["ci95"]) == 2
