"""Erasure in the processor (polku.core.erasure), on every state store: the request
in the log erases the person — every id merged into them, every identifier, their
journeys, invitations and feedback — from the state in a commit of its own, leaves
everyone else as they were, keeps their later events out when asked to, and hands
the log's side its scope once committed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec

from polku.core.erasure import ErasureScope
from polku.core.retention import Retention
from polku.core.workspace import WorkspaceConfig, parse_config
from polku.engine.erasure import request_event
from tests.engine.helpers import T0, World, event

CONFIG = """
identity:
  identifiers:
    email: {trait: email, normalize: email}
  merge_on: [user_id, anonymous_id, email]
segments:
  buyers: {condition: "attributes.orders >= 1"}
attributes:
  orders: {kind: count, event: Order Completed}
"""


class RecordingEraser:
    """The log's side, as the processor drives it (the SQLite eraser's own test is
    tests/integration/test_erasure.py): what it was asked to remove."""

    def __init__(self) -> None:
        self.scopes: list[ErasureScope] = []
        self.dropped: list[tuple[str, int, str | None]] = []
        self.expired: list[tuple[str, int]] = []

    def erase(self, scope: ErasureScope) -> dict[str, int]:
        self.scopes.append(scope)
        return {"events": len(scope.seqs) + 1}

    def drop(self, late: Sequence[tuple[str, int, str | None]]) -> None:
        self.dropped.extend(late)

    def analytics_follow(self) -> bool:
        return True

    def expire(self, workspace: str, retention: Retention, now_ms: int, processed_seq: int) -> dict[str, int]:
        self.expired.append((workspace, processed_seq))
        return {"events": 1}


def _world(tmp_path: Path, batch_size: int = 7) -> tuple[World, RecordingEraser]:
    world = World(tmp_path, CONFIG, batch_size=batch_size)
    eraser = RecordingEraser()
    world.processor.eraser = eraser
    return world, eraser


def _person(world: World) -> None:
    world.send(
        event("page", anonymous_id="a-ann-1", name="Home", ts=T0),
        event("identify", user_id="ann", anonymous_id="a-ann-1", traits={"email": "Ann@Example.com"}, ts=T0 + 1),
        event("page", anonymous_id="a-ann-2", name="Pricing", ts=T0 + 2),
        event("alias", user_id="ann", previous_id="a-ann-2", ts=T0 + 3),
        event("track", user_id="ann", event="Order Completed", properties={"total": 10}, ts=T0 + 4),
        event("group", user_id="ann", group_id="acme", traits={"name": "Acme"}, ts=T0 + 5),
        event("track", user_id="bob", event="Order Completed", ts=T0 + 6),
        event("identify", user_id="bob", traits={"email": "bob@example.com"}, ts=T0 + 7),
    )


def _erase(world: World, customer_id: str, *, suppress: bool = False, erasure: str = "er_1") -> None:
    world.log.add("default", request_event(erasure, customer_id, suppress=suppress, now_ms=T0 + 100))


def test_the_person_leaves_the_state_and_no_one_else_does(tmp_path: Path) -> None:
    world, eraser = _world(tmp_path)
    _person(world)
    world.run()
    ann, bob = world.customer("user_id:ann"), world.customer("user_id:bob")
    bob_before = msgspec.to_builtins(world.store.profile("default", bob))
    bob_timeline = world.store.timeline("default", bob)
    assert len(world.store.timeline("default", ann)) >= 6

    _erase(world, ann)
    world.run()

    for identifier in ("user_id:ann", "anonymous_id:a-ann-1", "anonymous_id:a-ann-2", "email:ann@example.com"):
        assert world.store.identifier("default", identifier) is None, identifier
    assert world.store.profile("default", ann) is None
    assert world.store.timeline("default", ann) == []
    assert ann not in world.store.account_members("default", "acme")
    assert world.store.account("default", "acme") is not None  # the company is no person
    assert msgspec.to_builtins(world.store.profile("default", bob)) == bob_before
    assert world.store.timeline("default", bob) == bob_timeline

    (scope,) = eraser.scopes
    assert scope.erasure == "er_1" and scope.customer_ids[0] == ann
    assert set(scope.identifiers) == {
        "user_id:ann",
        "anonymous_id:a-ann-1",
        "anonymous_id:a-ann-2",
        "email:ann@example.com",
    }
    assert len(scope.seqs) >= 6
    (receipt,) = world.store.erasure_receipts("default")
    assert receipt.id == "er_1" and receipt.status == "erasing"  # the analytics stage is the feeder's
    assert receipt.stages["state"] is not None and receipt.stages["log"] is not None
    assert receipt.removed["state.profiles"] >= 1 and receipt.removed["log.events"] == len(scope.seqs) + 1
    assert "ann" not in msgspec.json.encode(receipt).decode().lower()
    world.store.mark_erasure("default", "er_1", "analytics", {"events": 3}, T0 + 200)
    assert world.store.erasure_receipts("default", erasure="er_1")[0].status == "erased"
    assert world.store.pending_erasures("log") == [] and world.store.pending_erasures("analytics") == []


def test_events_before_the_request_in_the_same_batch_are_erased_with_the_person(tmp_path: Path) -> None:
    world, eraser = _world(tmp_path, batch_size=1000)
    world.send(event("track", user_id="cat", event="Signed Up", ts=T0))
    world.run()
    cat = world.customer("user_id:cat")
    world.send(
        event("track", user_id="cat", event="Viewed", ts=T0 + 1), event("track", user_id="dan", ts=T0 + 2, event="X")
    )
    _erase(world, cat)
    world.send(event("track", user_id="dan", event="Y", ts=T0 + 3))
    world.run()
    assert world.store.profile("default", cat) is None
    assert world.store.identifier("default", "user_id:cat") is None
    assert len(eraser.scopes[0].seqs) == 2  # both of cat's events, the second from the same batch
    assert len(world.store.timeline("default", world.customer("user_id:dan"))) == 2


def test_a_returning_person_is_new_unless_suppressed(tmp_path: Path) -> None:
    world, eraser = _world(tmp_path)
    world.send(event("track", user_id="eve", event="A", ts=T0), event("track", user_id="fay", event="A", ts=T0))
    world.run()
    eve, fay = world.customer("user_id:eve"), world.customer("user_id:fay")
    _erase(world, eve)
    _erase(world, fay, suppress=True, erasure="er_2")
    world.run()
    world.send(
        event("track", user_id="eve", event="B", ts=T0 + 10), event("track", user_id="fay", event="B", ts=T0 + 10)
    )
    world.run()
    again = world.store.profile("default", world.customer("user_id:eve"))
    assert again is not None and again.attributes is not None  # a new profile, from this event alone
    assert len(world.store.timeline("default", world.customer("user_id:eve"))) == 1
    assert world.store.identifier("default", "user_id:fay") is None
    assert {(w, c) for w, _, c in eraser.dropped} == {("default", None)}  # dropped before and after the commit
    (fay_receipt,) = world.store.erasure_receipts("default", erasure="er_2")
    assert fay_receipt.suppressed == 1


def test_a_delivery_result_after_the_erasure_leaves_the_log(tmp_path: Path) -> None:
    from polku.engine.runtime import internal_event

    world, eraser = _world(tmp_path)
    world.send(event("track", user_id="gus", event="A", ts=T0))
    world.run()
    gus = world.customer("user_id:gus")
    _erase(world, gus)
    world.run()
    world.log.add(
        "default", internal_event("Message Sent", gus, T0 + 500, "sent|1", {"key": "k1"}, T0 + 500, channel="email")
    )
    world.run()
    assert {(w, c) for w, _, c in eraser.dropped} == {("default", gus)}
    assert world.store.profile("default", gus) is None


def test_retention_takes_expired_events_off_the_timeline_hourly_and_when_the_rules_change(tmp_path: Path) -> None:
    day = 86_400_000
    world, eraser = _world(tmp_path)
    world.send(
        event("track", user_id="hal", event="Viewed", ts=T0 - 100 * day),
        event("track", user_id="hal", event="Viewed", ts=T0 - 2 * day),
        event("track", user_id="hal", event="Bought", ts=T0 - 100 * day),
    )
    world.run()
    world.clock.now = T0
    assert world.processor.expire() == {}  # no rules: nothing expires
    world.log.set_config("default", _with_retention("rules: [{event: Viewed, keep: 30d}]"))
    world.processor.refresh_configs()
    assert world.processor.expire()["timeline"] == 1
    hal = world.customer("user_id:hal")
    assert sorted((row.name, row.ts_ms) for row in world.store.timeline("default", hal)) == [
        ("Bought", T0 - 100 * day),
        ("Viewed", T0 - 2 * day),
    ]
    assert eraser.expired == [("default", world.processor.checkpoint)]
    world.clock.now = T0 + 10 * day  # the second Viewed is 12 days old now: kept
    assert world.processor.expire() == {"timeline": 0, "log.events": 1}  # an hour passed: it ran again
    assert world.processor.expire() == {}  # not again within the hour


def _with_retention(rules: str) -> WorkspaceConfig:
    return parse_config(CONFIG + f"retention: {{{rules}}}\n")


def test_an_event_from_before_the_erasure_met_after_it_is_dropped(tmp_path: Path) -> None:
    """The scale-out's workers read partitions in parallel: an event of the person's
    from before the request (a lower position) may reach another worker's processor
    after the erasure. It is theirs: dropped, not a new customer. A later event is a
    returning person's."""
    world, eraser = _world(tmp_path)
    world.send(event("track", user_id="ivy", event="A", ts=T0), event("track", user_id="ivy", event="B", ts=T0 + 1))
    world.run()
    ivy = world.customer("user_id:ivy")
    _erase(world, ivy)
    world.run()
    marker = eraser.scopes[0].marker_seq
    world.processor.process(marker - 1, "default", event("track", user_id="ivy", event="Late", ts=T0 + 2))
    world.processor.flush()
    assert world.store.identifier("default", "user_id:ivy") is None
    assert ("default", marker - 1, None) in eraser.dropped
    world.processor.process(marker + 100, "default", event("track", user_id="ivy", event="Back", ts=T0 + 3))
    world.processor.flush()
    assert world.store.identifier("default", "user_id:ivy") is not None
