"""``journey_graph``: a journey's steps placed as a layered graph — every step once,
every edge between placed nodes, no two boxes of a layer overlapping, loops drawn
up the side; for the demo's journeys and for any journey hypothesis makes up."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from polku.core.journey_spec import END, JourneySpec, parse_journey
from polku.dashboard.journey_graph import ENTRY, Graph, flow, layout
from polku.demo.definitions import JOURNEYS

EVERY_KIND = """
id: every-kind
entry: {event: Order Completed}
exit: [{event: Unsubscribed}]
steps:
  - id: settle
    wait: 1h
  - id: segment
    branch:
      - {when: "traits.plan == 'pro'", next: pro-thanks}
      - {when: "traits.orders > 3", next: loyal}
  - id: basic
    split: [{name: a, share: 1, next: mail-a}, {name: b, share: 3}]
  - id: mail-b
    action: {channel: in_app, body: "B"}
    next: ask
  - id: mail-a
    action: {channel: email, subject: "Thanks", body: "A"}
    next: ask
  - id: pro-thanks
    action: {channel: agent_note, body: "Call them"}
    next: ask
  - id: loyal
    update_profile: {loyal: "true"}
  - id: ask
    survey: order-nps
  - id: wait-review
    wait_for: {event: Review Written, within: 3d, on_event: done, on_timeout: nudge}
  - id: nudge
    action: {channel: email, subject: "Review?", body: "Please"}
  - id: again
    wait: {until: "09:00", days: [mon, tue]}
    next: wait-review
  - id: done
    exit: true
"""


def check_layout(spec: JourneySpec) -> Graph:
    nodes = flow(spec)
    graph = layout(nodes)
    ids = [node.id for node in graph.nodes]
    # Every step placed once, with the entry and the end.
    assert sorted(ids) == sorted([ENTRY, *(step.id for step in spec.steps), END])
    assert len(set(ids)) == len(ids)
    placed = {node.id: node for node in graph.nodes}
    # Every edge of the flow is drawn, between placed nodes.
    wanted = {(node.id, target) for node in nodes for target, _ in node.targets}
    assert {(edge.source, edge.target) for edge in graph.edges} == wanted
    for edge in graph.edges:
        assert edge.source in placed and edge.target in placed
        assert edge.path.startswith("M")
        if not edge.loop:
            assert placed[edge.target].layer > placed[edge.source].layer
        else:
            assert placed[edge.target].layer <= placed[edge.source].layer
    # Inside the picture, and no two boxes of a layer overlap.
    for node in graph.nodes:
        assert node.x >= 0 and node.x + node.width <= graph.width
        assert node.y >= 0 and node.y + node.height <= graph.height
    for layer in {node.layer for node in graph.nodes}:
        row = sorted((node for node in graph.nodes if node.layer == layer), key=lambda node: node.x)
        for left, right in pairwise(row):
            assert left.x + left.width < right.x, (left.id, right.id)
        assert len({node.y for node in row}) == 1
    # Layers go down the picture; the entry is on top, the end at the bottom.
    assert placed[ENTRY].layer == 0
    assert placed[END].layer == max(node.layer for node in graph.nodes)
    return graph


def test_the_demo_journeys() -> None:
    for body in JOURNEYS:
        check_layout(parse_journey(body))


def test_the_password_help_journey_fans_out_from_its_wait() -> None:
    graph = check_layout(parse_journey(JOURNEYS[0]))
    edges = {(edge.source, edge.target): edge for edge in graph.edges}
    assert edges[("wait-for-call", "note")].label == "Call Started"
    assert edges[("wait-for-call", "help")].label == "timeout"
    assert edges[(ENTRY, "wait-for-call")].label == ""
    layers = {node.id: node.layer for node in graph.nodes}
    assert layers == {ENTRY: 0, "wait-for-call": 1, "note": 2, "help": 2, END: 3}


def test_every_kind_of_step_with_a_loop() -> None:
    spec = parse_journey(EVERY_KIND)
    graph = check_layout(spec)
    by_pair = {(edge.source, edge.target): edge for edge in graph.edges}
    # Branch cases, the otherwise added after a last case with a condition, and split arms.
    assert by_pair[("segment", "pro-thanks")].label == "traits.plan == 'pro'"
    assert by_pair[("segment", "basic")].label == "otherwise"
    assert by_pair[("basic", "mail-a")].label == "a 25%"
    assert by_pair[("basic", "mail-b")].label == "b 75%"
    # The loop back to the wait_for is the one edge drawn up the side.
    assert [(edge.source, edge.target) for edge in graph.edges if edge.loop] == [("again", "wait-review")]
    # An exit step leads nowhere; the survey, the update and the actions lead on.
    assert not [edge for edge in graph.edges if edge.source == "done"]
    kinds = {node.id: node.kind for node in graph.nodes}
    assert kinds["ask"] == "survey" and kinds["loyal"] == "update_profile" and kinds["done"] == "exit"


def test_two_ways_to_the_same_step_are_one_edge_with_both_labels() -> None:
    spec = parse_journey(
        """
id: same
entry: {event: A}
steps:
  - id: wait
    wait_for: {event: B, within: 1h}
  - id: mail
    action: {channel: in_app, body: x}
"""
    )
    graph = check_layout(spec)
    (edge,) = [edge for edge in graph.edges if edge.source == "wait"]
    assert (edge.target, edge.label) == ("mail", "B / timeout")


def test_a_long_label_is_cut_for_the_picture_only() -> None:
    condition = "traits.lifetime_value > 1000 and traits.country == 'FI'"
    spec = parse_journey(
        f"""
id: long
entry: {{event: A}}
steps:
  - id: pick
    branch: [{{when: "{condition}", next: end}}]
  - id: mail
    action: {{channel: in_app, body: x}}
"""
    )
    edge = next(edge for edge in check_layout(spec).edges if edge.source == "pick" and edge.target == END)
    assert edge.label == condition
    assert len(edge.short_label) <= 24 and edge.short_label.endswith("…")


# --- any journey ------------------------------------------------------------------------


@st.composite
def journeys(draw: st.DrawFn) -> JourneySpec:
    """Any shape of steps (the layout does not need a journey to be valid)."""
    count = draw(st.integers(1, 14))
    ids = [f"s{index}" for index in range(count)]
    target = st.sampled_from([*ids, END])
    maybe = st.one_of(st.none(), target)
    steps: list[dict[str, Any]] = []
    for step_id in ids:
        kind = draw(st.sampled_from(["wait", "wait_for", "branch", "split", "action", "exit"]))
        step: dict[str, Any] = {"id": step_id, "next": draw(maybe)}
        if kind == "wait":
            step["wait"] = "1h"
        elif kind == "wait_for":
            step["wait_for"] = {"event": "E", "within": "1h", "on_event": draw(maybe), "on_timeout": draw(maybe)}
        elif kind == "branch":
            cases = draw(st.lists(target, min_size=1, max_size=4))
            step["branch"] = [{"when": f"x == {index}", "next": name} for index, name in enumerate(cases)]
        elif kind == "split":
            arms = draw(st.lists(maybe, min_size=2, max_size=4))
            step["split"] = [{"name": f"arm{index}", "share": 1, "next": name} for index, name in enumerate(arms)]
        elif kind == "action":
            step["action"] = {"channel": "in_app", "body": "x"}
        else:
            step = {"id": step_id, "exit": True}
        steps.append(step)
    return msgspec.convert({"id": "any", "entry": {"event": "A"}, "steps": steps}, JourneySpec)


@settings(max_examples=300, deadline=None)
@given(journeys())
def test_any_journey_is_laid_out_without_overlaps(spec: JourneySpec) -> None:
    check_layout(spec)
