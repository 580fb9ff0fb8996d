"""A journey's steps as a layered graph, placed for an SVG picture (pure).

``flow(spec)`` lists the nodes of a journey (its entry, every step, its end) and
where each step leads: ``next``, a branch's cases, a split's arms, a wait_for's
event and its timeout, each edge with the case's or arm's label. Targets that are
not written follow the engine's rules (``journey_spec._compile_step``): the next
step in the list, or the end after the last one.

``layout(nodes)`` places them top to bottom in the manner of Sugiyama: the edges
that close a loop are set aside (they are drawn up the right-hand side), every
node goes to the layer after its longest path from the entry, an edge that spans
layers passes through a narrow slot in each layer between (so that it runs between
the boxes, never through one), a few barycentre sweeps reduce crossings, and each
layer is centred under its parents without two boxes overlapping. The result is
coordinates only; what the boxes say is the page's business.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Final

from polku.core.journey_spec import END, JourneySpec, Step, WaitUntil

ENTRY: Final = "(entry)"
"""The entry node's id: not a possible step id (``[a-z0-9][a-z0-9_-]*``)."""
NODE_WIDTH: Final = 216.0
STEP_HEIGHT: Final = 96.0
TERMINAL_HEIGHT: Final = 60.0
SLOT_WIDTH: Final = 96.0
"""The room an edge passing through a layer takes in it (its label sits there)."""
COLUMN_GAP: Final = 28.0
LAYER_GAP: Final = 60.0
MARGIN: Final = 16.0
LOOP_GAP: Final = 18.0
"""The distance between the lines of loops drawn up the right-hand side."""
LOOP_LABEL_ROOM: Final = 150.0
SWEEPS: Final = 4
MAX_LABEL: Final = 24


@dataclass(frozen=True)
class FlowNode:
    """A node before it is placed: an entry, a step or the end, and where it leads."""

    id: str
    kind: str
    """A step kind (``wait``, ``action``, …), ``entry`` or ``end``."""
    detail: str
    targets: tuple[tuple[str, str], ...] = ()
    """(target id, label); one per target (labels of the same target joined)."""


@dataclass(frozen=True)
class Node:
    id: str
    kind: str
    detail: str
    layer: int
    x: float
    y: float
    width: float
    height: float

    @property
    def centre(self) -> float:
        return self.x + self.width / 2

    @property
    def bottom(self) -> float:
        return self.y + self.height


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str
    short_label: str
    """The label cut to fit the picture (the table beside it has it whole)."""
    path: str
    """An SVG path (``d``) from the source's box to the target's."""
    label_x: float
    label_y: float
    loop: bool
    """Drawn up the right-hand side: it leads back to an earlier layer."""


@dataclass(frozen=True)
class Graph:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    width: float
    height: float


# --- from the spec ----------------------------------------------------------------------


def flow(spec: JourneySpec) -> list[FlowNode]:
    """The entry, every step in the document's order, and the end."""
    ids = [step.id for step in spec.steps]
    nodes = [FlowNode(ENTRY, "entry", _entry_detail(spec), ((ids[0], ""),) if ids else ((END, ""),))]
    for index, step in enumerate(spec.steps):
        following = ids[index + 1] if index + 1 < len(ids) else END
        kind, detail, targets = _step(step, step.next or following)
        merged: dict[str, list[str]] = {}
        for target, label in targets:
            labels = merged.setdefault(target, [])
            if label and label not in labels:
                labels.append(label)
        nodes.append(FlowNode(step.id, kind, detail, tuple((t, " / ".join(ls)) for t, ls in merged.items())))
    nodes.append(FlowNode(END, "end", "completed the journey"))
    return nodes


def _entry_detail(spec: JourneySpec) -> str:
    entry = spec.entry
    if entry.event is not None:
        return f"on {entry.event}"
    if entry.segment is not None:
        return f"on entering {entry.segment}"
    if entry.schedule is not None:
        return f"{entry.schedule.segment}, every {entry.schedule.every}"
    return ""


def _step(step: Step, next_step: str) -> tuple[str, str, list[tuple[str, str]]]:
    """(kind, a short description, [(target, label)]) of one step."""
    if step.wait is not None:
        if isinstance(step.wait, WaitUntil):
            days = f" ({', '.join(step.wait.days)})" if step.wait.days else ""
            return "wait", f"wait until {step.wait.until}{days}", [(next_step, "")]
        return "wait", f"wait {step.wait}", [(next_step, "")]
    if step.wait_for is not None:
        wait_for = step.wait_for
        return (
            "wait_for",
            f"wait for {wait_for.event}, {wait_for.within}",
            [(wait_for.on_event or next_step, wait_for.event), (wait_for.on_timeout or next_step, "timeout")],
        )
    if step.branch is not None:
        cases = [(case.next, case.when or "otherwise") for case in step.branch]
        if step.branch and step.branch[-1].when is not None:
            cases.append((next_step, "otherwise"))
        return "branch", f"branch, {len(cases)} cases", cases
    if step.split is not None:
        total = sum(arm.share for arm in step.split) or 1.0
        arms = [(arm.next or next_step, f"{arm.name} {arm.share / total:.0%}") for arm in step.split]
        return "split", f"split, {len(arms)} arms", arms
    if step.action is not None:
        return "action", f"{step.action.channel} · {step.action.purpose}", [(next_step, "")]
    if step.survey is not None:
        survey = step.survey if isinstance(step.survey, str) else step.survey.id
        return "survey", f"survey {survey}", [(next_step, "")]
    if step.update_profile is not None:
        return "update_profile", "update " + ", ".join(step.update_profile), [(next_step, "")]
    return "exit", "ends the journey", []


# --- placing ----------------------------------------------------------------------------


def layout(nodes: Sequence[FlowNode]) -> Graph:
    """Coordinates for ``nodes`` (``flow``'s order: the entry first, the end last)."""
    order = {node.id: index for index, node in enumerate(nodes)}
    edges = [(node.id, target, label) for node in nodes for target, label in node.targets if target in order]
    loops = _loop_edges(nodes, order)
    forward = [(source, target) for source, target, _ in edges if (source, target) not in loops]
    layer_of = _layers(nodes, forward)

    # Every forward edge as a chain through one slot per layer it passes.
    layers: list[list[str]] = [[] for _ in range(max(layer_of.values()) + 1)]
    for node in nodes:
        layers[layer_of[node.id]].append(node.id)
    width_of = {node.id: NODE_WIDTH for node in nodes}
    chains: dict[tuple[str, str], list[str]] = {}
    ups: dict[str, list[str]] = {node.id: [] for node in nodes}
    downs: dict[str, list[str]] = {node.id: [] for node in nodes}
    for source, target in forward:
        chain = [source]
        for layer in range(layer_of[source] + 1, layer_of[target]):
            slot = f"{source}>{target}@{layer}"
            layers[layer].append(slot)
            width_of[slot] = SLOT_WIDTH
            ups[slot], downs[slot] = [], []
            chain.append(slot)
        chain.append(target)
        for upper, lower in pairwise(chain):
            downs[upper].append(lower)
            ups[lower].append(upper)
        chains[(source, target)] = chain

    _order(layers, ups, downs)
    centres = _centres(layers, ups, width_of)

    by_id = {node.id: node for node in nodes}
    heights = [max(_height(by_id[item].kind) for item in layer if item in by_id) for layer in layers]
    tops: list[float] = []
    top = MARGIN
    for height in heights:
        tops.append(top)
        top += height + LAYER_GAP
    placed = {
        node.id: Node(
            id=node.id,
            kind=node.kind,
            detail=node.detail,
            layer=layer_of[node.id],
            x=centres[node.id] - NODE_WIDTH / 2,
            y=tops[layer_of[node.id]],
            width=NODE_WIDTH,
            height=_height(node.kind),
        )
        for node in nodes
    }
    right = max(centre + width_of[item] / 2 for item, centre in centres.items())
    fanning = {source for source, _ in forward if sum(1 for other, _ in forward if other == source) > 1}
    drawn: list[Edge] = []
    loop_number = 0
    for source, target, label in edges:
        if (source, target) in loops:
            loop_number += 1
            drawn.append(_loop(placed[source], placed[target], label, right + LOOP_GAP * loop_number))
            continue
        points = [(placed[source].centre, placed[source].bottom)]
        for passed, slot in enumerate(chains[(source, target)][1:-1], start=1):
            layer = layer_of[source] + passed
            points += [(centres[slot], tops[layer]), (centres[slot], tops[layer] + heights[layer])]
        points.append((placed[target].centre, placed[target].y))
        drawn.append(_forward(source, target, label, points, fanning=source in fanning))
    width = right + (LOOP_GAP * loop_number + LOOP_LABEL_ROOM if loop_number else 0) + MARGIN
    return Graph(
        nodes=tuple(placed.values()), edges=tuple(drawn), width=round(width), height=round(top - LAYER_GAP + MARGIN)
    )


def _height(kind: str) -> float:
    return TERMINAL_HEIGHT if kind in ("entry", "end") else STEP_HEIGHT


def _loop_edges(nodes: Sequence[FlowNode], order: dict[str, int]) -> set[tuple[str, str]]:
    """The edges that close a loop: to a node on the depth-first path (from the
    entry first, then from any node not reached), in the document's order."""
    targets = {node.id: [target for target, _ in node.targets if target in order] for node in nodes}
    state: dict[str, int] = {}
    loops: set[tuple[str, str]] = set()
    for start in (node.id for node in nodes):
        if start in state:
            continue
        state[start] = 1
        stack = [(start, iter(targets[start]))]
        while stack:
            node, pending = stack[-1]
            following = next(pending, None)
            if following is None:
                state[node] = 2
                stack.pop()
            elif state.get(following) == 1:
                loops.add((node, following))
            elif following not in state:
                state[following] = 1
                stack.append((following, iter(targets[following])))
    return loops


def _layers(nodes: Sequence[FlowNode], forward: list[tuple[str, str]]) -> dict[str, int]:
    """Each node's layer: one more than its deepest parent; the end below all."""
    parents: dict[str, list[str]] = {node.id: [] for node in nodes}
    children: dict[str, list[str]] = {node.id: [] for node in nodes}
    for source, target in forward:
        parents[target].append(source)
        children[source].append(target)
    waiting = {node: len(found) for node, found in parents.items()}
    ready = [node.id for node in nodes if not waiting[node.id]]
    layer: dict[str, int] = {}
    while ready:
        node = ready.pop(0)
        layer[node] = max((layer[parent] + 1 for parent in parents[node]), default=0)
        for child in children[node]:
            waiting[child] -= 1
            if not waiting[child]:
                ready.append(child)
    if END in layer:
        layer[END] = max([value for node, value in layer.items() if node != END], default=0) + 1
    return layer


def _order(layers: list[list[str]], ups: dict[str, list[str]], downs: dict[str, list[str]]) -> None:
    """Barycentre sweeps, down then up: each item moves towards the mean position
    of its neighbours in the layer before (a stable sort keeps ties in place)."""

    def sweep(layer: list[str], neighbours: dict[str, list[str]], before: list[str]) -> None:
        position = {item: index for index, item in enumerate(before)}
        own = {item: index for index, item in enumerate(layer)}

        def centre(item: str) -> float:
            found = [position[other] for other in neighbours[item] if other in position]
            return sum(found) / len(found) * len(layer) / max(len(before), 1) if found else own[item]

        layer.sort(key=centre)

    for _ in range(SWEEPS):
        for index in range(1, len(layers)):
            sweep(layers[index], ups, layers[index - 1])
        for index in range(len(layers) - 2, -1, -1):
            sweep(layers[index], downs, layers[index + 1])


def _centres(layers: list[list[str]], ups: dict[str, list[str]], width_of: dict[str, float]) -> dict[str, float]:
    """Each item's horizontal centre: under the mean of its parents, pushed right
    past its left neighbour, and the layer shifted back to balance."""
    centre: dict[str, float] = {}
    for layer in layers:
        wanted = {item: sum(centre[up] for up in ups[item]) / len(ups[item]) for item in layer if ups[item]}
        lefts: list[float] = []
        edge: float | None = None
        for item in layer:
            left = wanted[item] - width_of[item] / 2 if item in wanted else (edge if edge is not None else 0.0)
            if edge is not None:
                left = max(left, edge)
            lefts.append(left)
            edge = left + width_of[item] + COLUMN_GAP
        pushed = [lefts[i] + width_of[item] / 2 - wanted[item] for i, item in enumerate(layer) if item in wanted]
        shift = sum(pushed) / len(pushed) if pushed else 0.0
        for left, item in zip(lefts, layer, strict=True):
            centre[item] = left + width_of[item] / 2 - shift
    least = min(centre[item] - width_of[item] / 2 for item in centre)
    return {item: value - least + MARGIN for item, value in centre.items()}


def _shorten(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"


def _forward(source: str, target: str, label: str, points: list[tuple[float, float]], *, fanning: bool) -> Edge:
    """A line down through ``points`` (S-curves between layers). The label sits in
    the slot of the first layer passed; else, when several edges leave the source,
    three quarters down the curve (where they are far apart); else halfway."""
    path = f"M{points[0][0]:.1f},{points[0][1]:.1f}"
    for (x1, y1), (x2, y2) in pairwise(points):
        if abs(x1 - x2) < 0.5:
            path += f" L{x2:.1f},{y2:.1f}"
        else:
            middle = (y1 + y2) / 2
            path += f" C{x1:.1f},{middle:.1f} {x2:.1f},{middle:.1f} {x2:.1f},{y2:.1f}"
    (x1, y1), (x2, y2) = points[0], points[1]
    if len(points) > 2:
        label_x, label_y = x2, (points[1][1] + points[2][1]) / 2
    else:
        along = 0.75 if fanning else 0.5
        # The S-curve's point at ``along``: x eases (3t² − 2t³), y is nearly linear.
        label_x = x1 + (x2 - x1) * (3 * along**2 - 2 * along**3)
        label_y = y1 + (y2 - y1) * along
    return Edge(
        source=source,
        target=target,
        label=label,
        short_label=_shorten(label),
        path=path,
        label_x=round(label_x, 1),
        label_y=round(label_y, 1),
        loop=False,
    )


def _loop(source: Node, target: Node, label: str, line: float) -> Edge:
    """Out of the source's right side, up (or down) the line, into the target's."""
    start_y = source.y + source.height / 2 + 8
    end_y = target.y + target.height / 2 - 8
    path = f"M{source.x + source.width:.1f},{start_y:.1f} H{line:.1f} V{end_y:.1f} H{target.x + target.width + 2:.1f}"
    return Edge(
        source=source.id,
        target=target.id,
        label=label,
        short_label=_shorten(label),
        path=path,
        label_x=round(line + 6, 1),
        label_y=round((start_y + end_y) / 2, 1),
        loop=True,
    )
