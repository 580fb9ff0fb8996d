"""Moves between steps and where instances wait: the engine counts ``moved`` and
``left`` with ``reached``, and ``summarize`` turns them into edges and each step's
``waiting`` — which always add up to the journey's active instances."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from polku.core.journey_stats import summarize
from polku.engine.journey_reports import stats_rows
from tests.engine.helpers import T0, event
from tests.engine.test_journeys import CONFIG, DAY, HOUR, PASSWORD_HELP, V1, V2, Journeys, identify, track


@pytest.fixture
def world(tmp_path: Path) -> Any:
    made = Journeys(tmp_path, CONFIG)
    yield made
    made.close()


def totals(world: Journeys, journey: str) -> dict[str, Any]:
    """The journey's summary; in it and in each version, the instances waiting at
    the steps are exactly the active ones."""
    summary = summarize(stats_rows(world.store.connection, "default", journey))
    for part in [summary["total"], *summary["versions"].values()]:
        assert sum(step["waiting"] for step in part["steps"].values()) == part["active"]
    total: dict[str, Any] = summary["total"]
    return total


def edges(total: dict[str, Any]) -> dict[tuple[str, str], int]:
    return {(edge["from"], edge["to"]): edge["count"] for edge in total["edges"]}


def test_moves_along_the_edges_and_waiting_at_a_step(world: Journeys) -> None:
    world.deploy(PASSWORD_HELP)
    for user in ("calls", "quiet", "slow"):
        world.send(identify(user, email=f"{user}@example.com"))
        world.send(track(user, "Password Reset Failed", channel="app", reason="expired_link"))
    world.run()
    total = totals(world, "password-help")
    assert total["steps"]["wait-for-call"] == {"reached": 3, "waiting": 3, "left": {}}
    assert edges(total) == {}

    world.advance(40 * 60_000)
    world.send(track("calls", "Call Started", at=world.clock.now, channel="phone"))
    world.run()
    total = totals(world, "password-help")
    assert edges(total) == {("wait-for-call", "note"): 1, ("note", "end"): 1}
    assert total["steps"]["wait-for-call"]["waiting"] == 2
    assert total["steps"]["note"] == {"reached": 1, "waiting": 0, "left": {}}

    world.advance(2 * HOUR)
    total = totals(world, "password-help")
    assert edges(total) == {
        ("wait-for-call", "note"): 1,
        ("note", "end"): 1,
        ("wait-for-call", "email"): 2,
        ("email", "end"): 2,
    }
    assert total["steps"]["wait-for-call"]["waiting"] == 0
    assert total["active"] == 0
    # A move to the end is what ``ended:completed`` counts.
    assert sum(count for (_, target), count in edges(total).items() if target == "end") == total["ended"]["completed"]


def test_goals_and_exits_leave_at_the_step_they_happen_at(world: Journeys) -> None:
    body = """
id: cart
entry: {event: Cart Abandoned}
goal: {event: Order Completed, within: 2d}
exit:
  - {event: Unsubscribed, name: unsubscribed}
steps:
  - id: wait
    wait: 1d
  - id: remind
    action: {channel: in_app, body: "Your cart"}
  - id: stop
    exit: true
"""
    world.deploy(body)
    world.send(track("buyer", "Cart Abandoned"), track("leaver", "Cart Abandoned"), track("idle", "Cart Abandoned"))
    world.send(track("buyer", "Order Completed", at=T0 + 10), track("leaver", "Unsubscribed", at=T0 + 10))
    world.run()
    total = totals(world, "cart")
    assert total["steps"]["wait"] == {"reached": 3, "waiting": 1, "left": {"goal": 1, "exit:unsubscribed": 1}}
    world.advance(DAY + 1)
    total = totals(world, "cart")
    assert edges(total) == {("wait", "remind"): 1, ("remind", "stop"): 1}
    assert total["steps"]["stop"] == {"reached": 1, "waiting": 0, "left": {"exit:stop": 1}}


def test_archiving_merging_and_migrating_leave_their_step(world: Journeys) -> None:
    world.deploy(V1)
    world.send(event(anonymous_id="anon-1", event="Signed Up"), track("known", "Signed Up"))
    world.run()
    world.send(event("identify", anonymous_id="anon-1", user_id="known", ts=T0 + 1000))
    world.run()
    assert totals(world, "onboarding")["steps"]["wait"] == {"reached": 2, "waiting": 1, "left": {"merged": 1}}

    world.deploy(V2, 2)
    world.send(track("moved", "Signed Up", at=world.clock.now))
    world.run()
    world.deploy(V2 + "migrate: {steps: {pause: tip2}}\n", 3)
    world.send(track("moved", "Page Viewed", at=world.clock.now))
    world.run()
    summary = summarize(stats_rows(world.store.connection, "default", "onboarding"))
    second, third = summary["versions"]["2"], summary["versions"]["3"]
    assert second["steps"]["pause"] == {"reached": 1, "waiting": 0, "left": {"migrated": 1}}
    assert third["steps"]["tip2"] == {"reached": 1, "waiting": 0, "left": {}}
    assert {(edge["from"], edge["to"]) for edge in third["edges"]} == {("tip2", "end")}
    totals(world, "onboarding")

    world.log.set_journey_status("default", "onboarding", "archived")
    world.processor.refresh_configs()
    world.advance(DAY + 1)
    total = totals(world, "onboarding")
    assert total["steps"]["wait"]["left"] == {"merged": 1, "archived": 1}
    assert total["active"] == 0


def test_summarize_reads_moves_departures_and_surveys() -> None:
    rows = [
        (1, "entered", 10),
        (1, "reached:ask", 10),
        (1, "moved:ask:wait", 9),
        (1, "left:ask:exit:unsubscribed", 1),
        (1, "survey:ask:sent", 6),
        (1, "survey:ask:held", 1),
        (1, "survey:ask:sampled_out", 2),
        (1, "survey:ask:cooldown:invitation", 1),
        (1, "reached:wait", 9),
        (1, "moved:wait:end", 4),
        (1, "left:wait:goal", 2),
        (1, "ended:completed", 4),
        (1, "ended:goal", 2),
        (1, "ended:exit:unsubscribed", 1),
        (2, "entered", 1),
        (2, "reached:ask", 1),
        (2, "moved:ask:wait", 1),
        (2, "reached:wait", 1),
        # Counted before ``moved`` existed: more moves than arrivals never waits below zero.
        (2, "moved:wait:end", 3),
    ]
    summary = summarize(rows)
    first = summary["versions"]["1"]
    assert first["edges"] == [{"from": "ask", "to": "wait", "count": 9}, {"from": "wait", "to": "end", "count": 4}]
    assert first["steps"] == {
        "ask": {"reached": 10, "waiting": 0, "left": {"exit:unsubscribed": 1}},
        "wait": {"reached": 9, "waiting": 3, "left": {"goal": 2}},
    }
    assert first["active"] == 3
    assert first["surveys"] == {
        "ask": {"sent": 6, "held": 1, "skipped": {"sampled_out": 2, "cooldown:invitation": 1}, "skipped_total": 3}
    }
    assert "other" not in first
    assert summary["versions"]["2"]["steps"]["wait"]["waiting"] == 0
    total = summary["total"]
    assert total["edges"] == [{"from": "ask", "to": "wait", "count": 10}, {"from": "wait", "to": "end", "count": 7}]
    assert total["steps"]["wait"] == {"reached": 10, "waiting": 1, "left": {"goal": 2}}
