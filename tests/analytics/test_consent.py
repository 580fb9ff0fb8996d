"""Consent in the analyses: a person whose latest word on the analytics purpose is
no is left out of every analysis, comes back when they say yes again, and is counted
when the workspace turns the rule off (``policy.consent.analytics: null``)."""

from __future__ import annotations

from pathlib import Path

from polku.engine import analytics_registry
from tests.analytics.helpers import MINUTE, Store
from tests.engine.helpers import T0, event


def steps(store: Store) -> dict[str, tuple[int, int]]:
    analysis = analytics_registry.analysis_named("steps")
    scope, arguments = analytics_registry.parse(analysis, "default", {})
    found = analytics_registry.run(analysis, store.directory, scope, arguments)
    return {row["step"]: (row["customers"], row["events"]) for row in found["steps"]}  # type: ignore[attr-defined]


def consent(user: str, analytics: bool, ts: int) -> object:
    return event("identify", user_id=user, ts=ts, traits={"consent": {"analytics": analytics}})


def shop(store: Store, offset: int) -> None:
    for user in ("ann", "bob"):
        store.track(user, "Home", "web", T0 + offset)
        store.track(user, "Checkout", "web", T0 + offset + MINUTE)


def test_a_withdrawn_consent_leaves_a_person_out_until_given_again(tmp_path: Path) -> None:
    store = Store(tmp_path)
    shop(store, 0)
    store.add(consent("bob", False, T0 + 2 * MINUTE)).process()
    assert steps(store) == {"web:Home": (1, 1), "web:Checkout": (1, 1)}  # ann only
    with_ids = store.rows("SELECT customer_id FROM consent_withdrawn")
    assert len(with_ids) == 1
    store.add(consent("bob", True, T0 + 10 * MINUTE)).process()
    assert steps(store) == {"web:Home": (2, 2), "web:Checkout": (2, 2)}
    assert store.rows("SELECT customer_id FROM consent_withdrawn") == []


def test_the_rule_can_be_turned_off(tmp_path: Path) -> None:
    store = Store(tmp_path, config="policy:\n  consent:\n    analytics: null\n")
    shop(store, 0)
    store.add(consent("bob", False, T0 + 2 * MINUTE)).process()
    assert steps(store) == {"web:Home": (2, 2), "web:Checkout": (2, 2)}


def test_saying_nothing_is_no_withdrawal(tmp_path: Path) -> None:
    store = Store(tmp_path)
    shop(store, 0)
    store.add(event("identify", user_id="bob", ts=T0 + 3 * MINUTE, traits={"consent": {"marketing": False}}))
    store.process()
    assert steps(store) == {"web:Home": (2, 2), "web:Checkout": (2, 2)}


def test_a_store_from_before_the_consent_table_gets_it_when_read(tmp_path: Path) -> None:
    from polku.adapters.duckdb import analytics_store

    store = Store(tmp_path)
    shop(store, 0)
    store.process()
    with analytics_store.writer(tmp_path) as db:
        db.execute("DROP TABLE consent_withdrawn")
    analytics_store._CURRENT.clear()  # a new process: it has not looked at this store yet
    assert steps(store) == {"web:Home": (2, 2), "web:Checkout": (2, 2)}
