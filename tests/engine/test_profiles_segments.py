"""Traits, computed attributes, feedback and segments through the processor, with
a fake clock: windows decay with no new events, and segment changes become events."""

from __future__ import annotations

from pathlib import Path

import msgspec

from polku.core.events import Event
from polku.core.segments import ENTERED_EVENT, EXITED_EVENT
from tests.engine.helpers import T0, World, event

DAY = 86_400_000
CONFIG = """
attributes:
  orders_30d: {kind: count, event: Order Completed, window: 30d}
  revenue: {kind: sum, event: Order Completed, property: total}
  shopping_for: {kind: most_frequent, event: Product Viewed, property: category, window: 7d}
segments:
  frequent_buyers: {condition: "attributes.orders_30d >= 2"}
  pro: {condition: "traits.plan == 'pro'"}
  unhappy: {condition: "feedback.nps <= 6"}
  enterprise_people: {condition: "account.plan == 'enterprise'"}
"""


def emitted(world: World) -> list[tuple[str, str, str]]:
    found = []
    for _, _, body in world.log.rows:
        item = msgspec.json.decode(body, type=Event)
        if item.source == "polku" and item.event in (ENTERED_EVENT, EXITED_EVENT):
            assert item.properties is not None
            found.append((item.event, item.properties["segment"], item.properties["customer_id"]))
    return found


def test_window_decays_without_events_and_the_segment_is_left(tmp_path: Path) -> None:
    world = World(tmp_path, CONFIG)
    world.send(
        event("track", user_id="u1", event="Order Completed", properties={"total": 30}, ts=T0),
        event("track", user_id="u1", event="Order Completed", properties={"total": 12.5}, ts=T0 + DAY),
    )
    world.run()
    customer = world.customer("user_id:u1")
    runtime = world.processor.runtime("default")
    profile = world.store.profile("default", customer)
    assert profile is not None
    assert runtime.attributes.values(profile.attributes, T0 + DAY)["orders_30d"] == 2
    assert runtime.attributes.values(profile.attributes, T0 + DAY)["revenue"] == 42.5
    assert "frequent_buyers" in profile.segments
    assert (ENTERED_EVENT, "frequent_buyers", customer) in emitted(world)
    # 30 days after the first order only one is left in the window: a timer, not an event, notices.
    world.clock.now = T0 + 30 * DAY + 1
    world.run()
    profile = world.store.profile("default", customer)
    assert profile is not None
    assert runtime.attributes.values(profile.attributes, world.clock.now)["orders_30d"] == 1
    assert "frequent_buyers" not in profile.segments
    assert (EXITED_EVENT, "frequent_buyers", customer) in emitted(world)
    # Read 31 days after the last order, with no event since: zero.
    assert runtime.attributes.values(profile.attributes, T0 + 32 * DAY)["orders_30d"] == 0
    assert runtime.attributes.values(profile.attributes, T0 + 32 * DAY)["revenue"] == 42.5


def test_traits_are_last_write_wins_by_timestamp(tmp_path: Path) -> None:
    world = World(tmp_path, CONFIG)
    world.send(
        event("identify", user_id="u1", traits={"plan": "pro", "name": "Ann"}, ts=T0 + 10),
        event("identify", user_id="u1", traits={"plan": "free"}, ts=T0),  # older, arrives later
    )
    world.run()
    profile = world.store.profile("default", world.customer("user_id:u1"))
    assert profile is not None
    assert profile.traits["plan"][0] == "pro"
    assert "pro" in profile.segments


def test_feedback_and_account_traits_drive_segments(tmp_path: Path) -> None:
    world = World(tmp_path, CONFIG)
    world.send(
        event("group", user_id="u1", group_id="acme", traits={"plan": "basic"}, ts=T0),
        event("group", user_id="u2", group_id="acme", ts=T0 + 1),
        event(
            "track",
            user_id="u1",
            event="Feedback Submitted",
            properties={"metric": "nps", "score": 3},
            channel="email",
            ts=T0 + 2,
        ),
    )
    world.run()
    u1, u2 = world.customer("user_id:u1"), world.customer("user_id:u2")
    profile = world.store.profile("default", u1)
    assert profile is not None
    assert profile.feedback["nps"][0] == 3
    assert "unhappy" in profile.segments
    # One member's group call upgrades the account: every member is evaluated again.
    world.send(event("group", user_id="u1", group_id="acme", traits={"plan": "enterprise"}, ts=T0 + 3))
    world.run()
    for customer in (u1, u2):
        member = world.store.profile("default", customer)
        assert member is not None and "enterprise_people" in member.segments, customer


def test_merge_recomputes_attributes_and_segments(tmp_path: Path) -> None:
    world = World(tmp_path, CONFIG)
    world.send(
        event("track", anonymous_id="a1", event="Order Completed", properties={"total": 5}, ts=T0),
        event("track", user_id="u1", event="Order Completed", properties={"total": 7}, ts=T0 + 1),
    )
    world.run()
    assert world.customer("anonymous_id:a1") != world.customer("user_id:u1")
    world.send(event("identify", user_id="u1", anonymous_id="a1", ts=T0 + 2))
    world.run()
    customer = world.customer("user_id:u1")
    assert world.customer("anonymous_id:a1") == customer
    profile = world.store.profile("default", customer)
    assert profile is not None
    values = world.processor.runtime("default").attributes.values(profile.attributes, T0 + 3)
    assert values["orders_30d"] == 2 and values["revenue"] == 12
    assert "frequent_buyers" in profile.segments
    assert len([r for r in world.store.timeline("default", customer) if not r.internal]) == 3


def test_most_frequent_topic_is_what_they_shop_for_now(tmp_path: Path) -> None:
    world = World(tmp_path, CONFIG)
    categories = ["shoes", "tents", "tents", "shoes", "tents"]
    world.send(
        *(
            event("track", user_id="u1", event="Product Viewed", properties={"category": c}, ts=T0 + i)
            for i, c in enumerate(categories)
        )
    )
    world.run()
    profile = world.store.profile("default", world.customer("user_id:u1"))
    assert profile is not None
    attributes = world.processor.runtime("default").attributes
    assert attributes.values(profile.attributes, T0 + 10)["shopping_for"] == "tents"
    assert attributes.values(profile.attributes, T0 + 8 * DAY)["shopping_for"] is None
