"""Paths and variants name a few example customers, so a chart leads to people: the
first ids in sort order of the customers who took that path."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from polku.adapters.duckdb import analytics_store
from polku.engine import analytics
from tests.analytics.helpers import DAY, MINUTE, Store
from tests.engine.helpers import T0

# ann, bob, eve, fay: app:Reset Failed → phone:Call Started
# cid:                app:Reset Failed → app:Reset Succeeded
# dan:                app:Reset Failed (and nothing after it)
LOG = [
    *((user, "Reset Failed", "app", 0) for user in ("ann", "bob", "cid", "dan", "eve", "fay")),
    *((user, "Call Started", "phone", 10 * MINUTE) for user in ("ann", "bob", "eve", "fay")),
    ("cid", "Reset Succeeded", "app", MINUTE),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    found = Store(tmp_path_factory.mktemp("examples"))
    for user, name, channel, offset in LOG:
        found.track(user, name, channel, T0 + offset)
    return found.process()


def customer_ids(store: Store, name: str) -> list[str]:
    """Who did ``name``, sorted: the analytics store's (live) customer ids."""
    rows = store.rows("SELECT DISTINCT customer_id FROM events WHERE name = ? ORDER BY 1", name)
    return [str(customer) for (customer,) in rows]


def run(store: Store, function: Callable[..., dict[str, Any]], **parameters: Any) -> dict[str, Any]:
    with analytics_store.reader(store.directory) as db:
        return function(db, analytics.Scope("default"), **parameters)


def test_paths_list_the_top_paths_with_example_customers(store: Store) -> None:
    found = run(store, analytics.paths, start="app:Reset Failed", steps=2, window_ms=DAY)
    top = found["top"]
    assert [(row["path"], row["customers"], row["share"]) for row in top] == [
        (["app:Reset Failed", "phone:Call Started", "(end)"], 4, 66.67),
        (["app:Reset Failed", "(end)"], 1, 16.67),  # dan: nothing after the reset
        (["app:Reset Failed", "app:Reset Succeeded", "(end)"], 1, 16.67),
    ]
    callers = customer_ids(store, "Call Started")
    assert top[0]["examples"] == callers[:3]
    succeeded = customer_ids(store, "Reset Succeeded")
    assert top[2]["examples"] == succeeded
    everyone = set(customer_ids(store, "Reset Failed"))
    assert top[1]["examples"] == sorted(everyone - set(callers) - set(succeeded))


def test_paths_before_a_step_read_in_time_order(store: Store) -> None:
    found = run(store, analytics.paths, end="phone:Call Started", steps=2, window_ms=DAY)
    top = found["top"][0]
    assert top["path"] == ["(start)", "app:Reset Failed", "phone:Call Started"]
    assert top["customers"] == 4 and top["examples"] == customer_ids(store, "Call Started")[:3]


def test_the_examples_leave_the_sankey_unchanged(store: Store) -> None:
    found = run(store, analytics.paths, start="app:Reset Failed", steps=2, window_ms=DAY)
    links = {(link["source"], link["target"]): link["customers"] for link in found["links"]}
    assert links == {
        ("0:app:Reset Failed", "1:phone:Call Started"): 4,
        ("0:app:Reset Failed", "1:app:Reset Succeeded"): 1,
        ("0:app:Reset Failed", "1:(end)"): 1,
        ("1:phone:Call Started", "2:(end)"): 4,
        ("1:app:Reset Succeeded", "2:(end)"): 1,
    }
    assert found["customers"] == 6


def test_variants_name_example_customers(store: Store) -> None:
    found = run(store, analytics.variants, granularity="channel:event")
    rows = {tuple(row["path"]): row for row in found["top"]}
    called = rows[("app:Reset Failed", "phone:Call Started")]
    assert called["customers"] == 4 and called["examples"] == customer_ids(store, "Call Started")[:3]
    assert rows[("app:Reset Failed",)]["examples"] == sorted(
        set(customer_ids(store, "Reset Failed")) - set(customer_ids(store, "Call Started"))
        - set(customer_ids(store, "Reset Succeeded"))
    )  # fmt: skip
