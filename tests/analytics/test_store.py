"""The analytics store: every customer event with its customer as resolved now,
fed incrementally, exactly once, and following identity merges after the fact."""

from __future__ import annotations

from pathlib import Path

from tests.analytics.helpers import MINUTE, Store
from tests.engine.helpers import T0, event


def test_events_arrive_once_with_their_customer_channel_account_and_feedback(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.track("ann", "Order Completed", "web", T0)
    store.add(event("group", user_id="ann", group_id="acme", traits={"name": "Acme"}, ts=T0 + MINUTE, channel="web"))
    store.track("ann", "Feedback Submitted", "phone", T0 + 2 * MINUTE, properties={"metric": "CSAT", "score": 2})
    store.process()
    store.process()  # nothing new: nothing twice
    rows = store.rows("SELECT name, channel, account, metric, score, type FROM events ORDER BY seq")
    assert rows == [
        ("Order Completed", "web", None, None, None, "track"),
        (None, "web", "acme", None, None, "group"),
        ("Feedback Submitted", "phone", None, "csat", 2.0, "track"),
    ]
    (customers,) = store.rows("SELECT count(DISTINCT customer_id) FROM events")
    assert customers == (1,)


def test_a_merge_after_the_fact_moves_the_history_to_the_survivor(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.add(event(user_id="ann", event="Signed Up", channel="web", ts=T0))
    store.add(event(anonymous_id="phone-1", event="App Opened", channel="app", ts=T0 + MINUTE))
    store.process()
    assert store.rows("SELECT count(DISTINCT customer_id) FROM events") == [(2,)]
    store.add(event("identify", user_id="ann", anonymous_id="phone-1", ts=T0 + 2 * MINUTE, channel="app"))
    store.process()
    assert store.rows("SELECT count(DISTINCT customer_id) FROM events") == [(1,)]
    (names,) = store.rows("SELECT list(coalesce(name, type) ORDER BY seq) FROM events")
    assert names == (["Signed Up", "App Opened", "identify"],)


def test_paths_and_variants_follow_a_merged_customer(tmp_path: Path) -> None:
    from polku.adapters.duckdb import analytics_store
    from polku.engine import analytics

    store = Store(tmp_path)
    store.add(event(anonymous_id="device-9", event="Reset Failed", channel="app", ts=T0))
    store.add(event(user_id="ann", event="Call Started", channel="phone", ts=T0 + 10 * MINUTE))
    store.process()

    def found() -> tuple[dict[str, object], dict[str, object]]:
        with analytics_store.reader(tmp_path) as db:
            scope = analytics.Scope("default")
            return (
                analytics.variants(db, scope, granularity="channel"),
                analytics.paths(db, scope, start="app:Reset Failed", steps=1),
            )

    variants, paths = found()
    assert variants["customers"] == 2  # two people, as far as anyone knows
    assert {link["target"] for link in paths["links"]} == {"1:(end)"}  # type: ignore[union-attr]
    # Later the device logs in as ann: one person, who failed in the app and then called.
    store.add(event("identify", user_id="ann", anonymous_id="device-9", ts=T0 + 20 * MINUTE, channel="app"))
    store.process()
    variants, paths = found()
    assert variants["customers"] == 1
    assert [row["path"] for row in variants["top"]] == [["app", "phone"]]  # type: ignore[union-attr]
    assert {link["target"] for link in paths["links"]} == {"1:phone:Call Started"}  # type: ignore[union-attr]
