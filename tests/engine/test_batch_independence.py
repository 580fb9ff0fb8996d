"""The batch size is invisible: the same events processed one per batch or many per
batch leave the same state. Within a batch the processor reads the store through the
batch's pending changes (merges, splits, refusals, accounts, timelines), so this is
the property that keeps that overlay honest."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polku.core.events import Event
from tests.engine.helpers import T0, World, event

HOUR = 3_600_000
CONFIG = """
identity: {limits: {user_id: 1, anonymous_id: 2}}
attributes:
  orders: {kind: count, event: Order Completed, window: 30d}
  revenue: {kind: sum, event: Order Completed, property: total}
segments:
  buyers: {condition: "attributes.orders >= 2"}
  pro: {condition: "traits.plan == 'pro'"}
  enterprise: {condition: "account.plan == 'enterprise'"}
  both: {condition: "'pro' in segments and 'buyers' in segments"}
"""


@st.composite
def events(draw: st.DrawFn) -> list[Event]:
    found = []
    for number in range(draw(st.integers(1, 30))):
        kind = draw(st.sampled_from(["identify", "identify", "track", "group"]))
        user = draw(st.sampled_from([None, "u1", "u2", "u3"]))
        anonymous = draw(st.sampled_from([None, "a1", "a2", "a3"])) or (None if user else "ax")
        fields: dict[str, Any] = {"user_id": user, "anonymous_id": anonymous}
        if kind == "identify":
            fields["traits"] = {
                k: v
                for k, v in (
                    ("email", draw(st.sampled_from([None, "e1@x.io", "e2@x.io"]))),
                    ("plan", draw(st.sampled_from([None, "pro", "free"]))),
                )
                if v
            }
        elif kind == "track":
            fields["event"] = draw(st.sampled_from(["Order Completed", "Viewed"]))
            fields["properties"] = {"total": draw(st.integers(1, 40))}
        else:
            fields["group_id"] = draw(st.sampled_from(["g1", "g2"]))
            fields["traits"] = {"plan": draw(st.sampled_from(["enterprise", "free"]))}
        ts = T0 + draw(st.integers(0, 48)) * HOUR
        found.append(event(kind, ts=ts, message_id=f"m{number}", **fields))
    return found


def state_after(items: list[Event], batch_size: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory:
        world = World(Path(directory), CONFIG, batch_size=batch_size)
        world.clock.now = T0 + 50 * HOUR
        try:
            world.send(*items)
            world.run()
            store = world.store
            people: dict[str, frozenset[str]] = {}
            for group in world.partition():
                people[world.customer(next(iter(group)))] = group
            runtime = world.processor.runtime("default")
            profiles = {}
            for customer, group in people.items():
                profile = store.profile("default", customer)
                assert profile is not None
                profiles[group] = (
                    sorted(profile.segments),
                    {name: value[0] for name, value in profile.traits.items()},
                    runtime.attributes.values(profile.attributes, world.clock.now),
                    sorted(profile.accounts),
                    sorted(row.seq for row in store.timeline("default", customer) if not row.internal),
                )
            members = {
                account: sorted(tuple(sorted(people[c])) for c in store.account_members("default", account))
                for account in ("g1", "g2")
            }
            refusals = sorted((r.message_id, r.identifier) for _, r in store.refusals("default", limit=1000))
            return {"profiles": profiles, "members": members, "refusals": refusals}
        finally:
            world.close()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(events())
def test_one_event_per_batch_and_many_per_batch_agree(items: list[Event]) -> None:
    assert state_after(items, 1) == state_after(items, 50)
