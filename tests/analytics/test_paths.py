"""Channel mix, variants, directly-follows and paths on a small hand-built log
with known answers."""

from __future__ import annotations

import pytest

from polku.adapters.duckdb import analytics_store
from polku.engine import analytics
from tests.analytics.helpers import DAY, HOUR, MINUTE, Store
from tests.engine.helpers import T0, event

# ann: web:Home → app:Reset Failed → phone:Call Started         (an account holder)
# bob: web:Home → app:Reset Failed → app:Reset Succeeded
# cid: web:Home → web:Pricing
# dan: app:Reset Failed (2 days later: phone:Call Started, outside a 1-day window)
LOG = [
    ("ann", "Home", "web", 0),
    ("ann", "Reset Failed", "app", 5 * MINUTE),
    ("ann", "Call Started", "phone", 20 * MINUTE),
    ("bob", "Home", "web", 0),
    ("bob", "Reset Failed", "app", 3 * MINUTE),
    ("bob", "Reset Succeeded", "app", 4 * MINUTE),
    ("cid", "Home", "web", HOUR),
    ("cid", "Pricing", "web", HOUR + MINUTE),
    ("dan", "Reset Failed", "app", 0),
    ("dan", "Call Started", "phone", 2 * DAY),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    found = Store(tmp_path_factory.mktemp("paths"))
    for user, name, channel, offset in LOG:
        found.track(user, name, channel, T0 + offset)
    found.add(event("group", user_id="ann", group_id="acme", traits={"name": "Acme"}, ts=T0, channel="web"))
    return found.process()


def run(store: Store, function: object, **parameters: object) -> dict[str, object]:
    with analytics_store.reader(store.directory) as db:
        return function(db, analytics.Scope("default"), **parameters)  # type: ignore[operator, no-any-return]


def test_channel_mix_splits_accounts_and_consumers(store: Store) -> None:
    mix = run(store, analytics.channel_mix)
    channels = {row["channel"]: (row["events"], row["people"]) for row in mix["channels"]}  # type: ignore[index, union-attr]
    assert channels == {"web": (5, 3), "app": (4, 3), "phone": (2, 2)}  # 4 pages and the group call
    assert mix["customer_types"]["accounts"]["people"] == 1  # type: ignore[index]
    assert mix["customer_types"]["consumers"]["people"] == 3  # type: ignore[index]


def test_variants_cover_every_customer_once(store: Store) -> None:
    found = run(store, analytics.variants, granularity="channel")
    assert found["customers"] == 4 and found["variants"] == 4
    paths = {tuple(row["path"]): row["customers"] for row in found["top"]}  # type: ignore[union-attr]
    assert paths == {("web", "app", "phone"): 1, ("web", "app", "app"): 1, ("web", "web"): 1, ("app", "phone"): 1}


def test_paths_after_a_step_within_the_window(store: Store) -> None:
    found = run(store, analytics.paths, start="app:Reset Failed", steps=2, window_ms=DAY)
    assert found["customers"] == 3
    links = {(link["source"], link["target"]): link["customers"] for link in found["links"]}  # type: ignore[union-attr]
    assert links == {
        ("0:app:Reset Failed", "1:phone:Call Started"): 1,
        ("0:app:Reset Failed", "1:app:Reset Succeeded"): 1,
        ("0:app:Reset Failed", "1:(end)"): 1,  # dan called two days later: outside the window
        ("1:phone:Call Started", "2:(end)"): 1,
        ("1:app:Reset Succeeded", "2:(end)"): 1,
    }


def test_paths_before_a_step(store: Store) -> None:
    found = run(store, analytics.paths, end="Call Started", steps=2, granularity="event", window_ms=3 * DAY)
    links = {(link["source"], link["target"]): link["customers"] for link in found["links"]}  # type: ignore[union-attr]
    assert links[("0:Call Started", "-1:Reset Failed")] == 2
    assert links[("-1:Reset Failed", "-2:Home")] == 1 and links[("-1:Reset Failed", "-2:(start)")] == 1
