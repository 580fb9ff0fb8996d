"""Variants and directly-follows counts checked against pm4py (an independent
process-mining implementation) on a generated log."""

from __future__ import annotations

import random

import pytest

from polku.adapters.duckdb import analytics_store
from polku.engine import analytics
from tests.analytics.helpers import MINUTE, Store
from tests.engine.helpers import T0

STEPS = ("Home", "Search", "Product", "Cart", "Checkout", "Help", "Call Started")
CHANNELS = ("web", "app", "phone")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, list[tuple[str, str, int]]]:
    rng = random.Random(7)
    store = Store(tmp_path_factory.mktemp("oracle"))
    rows: list[tuple[str, str, int]] = []
    for number in range(150):
        user = f"u{number}"
        ts = T0 + rng.randrange(0, 1000) * MINUTE
        for _ in range(rng.randint(1, 7)):
            name = rng.choice(STEPS)
            channel = rng.choice(CHANNELS)
            store.track(user, name, channel, ts)
            rows.append((user, f"{channel}:{name}", ts))
            ts += rng.randint(1, 90) * MINUTE
    return store.process(), rows


def test_variants_match_pm4py(generated: tuple[Store, list[tuple[str, str, int]]]) -> None:
    import pandas as pd
    import pm4py

    store, rows = generated
    frame = pd.DataFrame(
        {
            "case:concept:name": [user for user, _, _ in rows],
            "concept:name": [label for _, label, _ in rows],
            "time:timestamp": pd.to_datetime([ts for _, _, ts in rows], unit="ms", utc=True),
        }
    )
    expected = {tuple(variant): int(count) for variant, count in pm4py.get_variants(frame).items()}
    with analytics_store.reader(store.directory) as db:
        found = analytics.variants(
            db, analytics.Scope("default"), granularity="channel:event", max_length=200, top=1000
        )
    assert {tuple(row["path"]): row["customers"] for row in found["top"]} == expected
    assert found["customers"] == 150 and found["other"]["customers"] == 0


def test_directly_follows_match_pm4py(generated: tuple[Store, list[tuple[str, str, int]]]) -> None:
    import pandas as pd
    import pm4py

    store, rows = generated
    frame = pd.DataFrame(
        {
            "case:concept:name": [user for user, _, _ in rows],
            "concept:name": [label for _, label, _ in rows],
            "time:timestamp": pd.to_datetime([ts for _, _, ts in rows], unit="ms", utc=True),
        }
    )
    dfg, starts, ends = pm4py.discover_dfg(frame)
    with analytics_store.reader(store.directory) as db:
        found = analytics.directly_follows(db, analytics.Scope("default"), granularity="channel:event", top=10_000)
    assert {(edge["from"], edge["to"]): edge["count"] for edge in found["edges"]} == dict(dfg)
    assert {row["step"]: row["count"] for row in found["starts"]} == dict(starts)
    assert {row["step"]: row["count"] for row in found["ends"]} == dict(ends)
