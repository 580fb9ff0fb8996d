"""Journeys: every deployed journey with its entries, active instances, conversions
and uplift; and one journey drawn as a graph of its steps with live counts on every
step and move, treatment against holdout, pause / resume / archive, the YAML as
deployed, its versions, and a check (and deploy) of a new version with each error
shown at its line.

Every number is the one ``GET /v1/journeys``, ``GET /v1/journeys/{id}/stats`` and
``polku journeys stats`` give (``journey_totals``, ``summarize``); every change
is the engine call ``POST /v1/journeys/{id}/pause|resume|archive`` and
``PUT /v1/journeys/{id}`` make.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from starlette.responses import Response

from polku.core.errors import InvalidInput, LimitExceeded, PolkuError
from polku.core.events import format_millis
from polku.core.journey_spec import END, JourneySpec, parse_journey
from polku.core.journey_stats import summarize
from polku.dashboard import formatting
from polku.dashboard.frame import PageHandler, View, json_route, page_route
from polku.dashboard.journey_graph import ENTRY, Graph, flow, layout
from polku.engine.journey_admin import check_for_workspace, journey_name, journey_summary, set_status
from polku.engine.journey_reports import journey_totals, stats_rows
from polku.engine.worker import wall_clock_ms
from polku.ports import JourneyStatus, StoredJourney
from polku.web.journey_routes import MAX_JOURNEY_BYTES

LIVE_INTERVAL_MS: Final = 3000
MAX_FORM_BYTES: Final = 3 * MAX_JOURNEY_BYTES + 65_536
"""A form-encoded 1 MB document is at most three times as long (``%XX``)."""
KIND_COLOURS: Final = {
    "entry": "#545d69",
    "end": "#545d69",
    "wait": "#8a5300",
    "wait_for": "#8a5300",
    "branch": "#6941c6",
    "split": "#6941c6",
    "action": "#1d5bbf",
    "survey": "#17663a",
    "update_profile": "#0e7490",
    "exit": "#b42318",
}
"""A box's outline by kind: each at least 3:1 against white (WCAG, UI parts)."""
STATUS_CHANGES: Final[dict[str, tuple[JourneyStatus, str]]] = {
    "pause": ("paused", "Paused journey {id}: no new entries; running instances go on."),
    "resume": ("active", "Journey {id} is active again."),
    "archive": ("archived", "Archived journey {id}: its running instances end."),
}

Line = list[tuple[str, str | None]]
"""A line of a box: (text, the live key it shows, or None for fixed text)."""


# --- words for numbers ------------------------------------------------------------------


def points(value: float) -> str:
    """A difference of shares in percentage points: ``+2.3``, ``−0.4``."""
    return f"{value * 100:+.1f}".replace("-", "\u2212")


def uplift_words(uplift: dict[str, Any] | None) -> str:
    """``+2.3 pp (95 % interval −0.4 to +5.0 pp)``."""
    if uplift is None:
        return "not enough data yet"
    low, high = uplift["ci95"]
    return f"{points(uplift['absolute'])}\u00a0pp (95\u00a0% interval {points(low)} to {points(high)}\u00a0pp)"


def uplift_verdict(uplift: dict[str, Any] | None) -> str:
    if uplift is None:
        return "The uplift needs customers in both the treatment and the holdout group."
    low, high = uplift["ci95"]
    if low > 0:
        return "The journey raises conversion: the whole interval is above zero."
    if high < 0:
        return "The journey lowers conversion: the whole interval is below zero."
    return "Not yet told apart from no effect: the interval includes zero."


def _reasons(found: dict[str, int]) -> str:
    return ", ".join(f"{reason} {formatting.number(count)}" for reason, count in sorted(found.items())) or "none"


# --- the list ---------------------------------------------------------------------------


async def journeys_page(view: View) -> Response:
    workspace = view.workspace
    stored = await view.services.catalog.journeys(workspace)

    def read(views: Any) -> tuple[dict[str, dict[str, Any]], dict[str, list[tuple[int, str, int]]]]:
        connection = views.sql
        return journey_totals(connection, workspace), {j.id: stats_rows(connection, workspace, j.id) for j in stored}

    totals, rows = await view.profiles.run(read)
    items = []
    for journey in stored:
        counts = totals.get(journey.id, {"entered": 0, "active": 0, "goal": 0})
        total = summarize(rows[journey.id])["total"]
        spec = _spec(journey)
        holdout = spec.holdout if spec is not None else 0.0
        uplift = total["goal"]["uplift"]
        items.append(
            {
                **journey_summary(journey),
                "name": journey_name(journey),
                **counts,
                "uplift": uplift_words(uplift) if uplift or holdout else "no holdout group",
            }
        )
    return view.render("pages/journeys.html", title="Journeys", area="journeys", journeys=items)


# --- one journey ------------------------------------------------------------------------


@dataclass
class Check:
    """A document checked against the workspace, as the page shows it."""

    body: str
    valid: bool = False
    version: int = 0
    unchanged: bool = False
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def lines(self) -> list[str]:
        return self.body.split("\n")

    def at(self, line: int) -> list[dict[str, Any]]:
        return [error for error in self.errors if error["line"] == line]


def _spec(journey: StoredJourney) -> JourneySpec | None:
    try:
        return parse_journey(journey.body, filename=f"{journey.id}.yaml")
    except PolkuError:  # a stored document a later release no longer accepts
        return None


def _version(view: View) -> int | None:
    text = view.request.query_params.get("version", "")
    if not text:
        return None
    if not text.isdigit() or len(text) > 9:
        raise InvalidInput(f"version {text[:20]!r} is not a version number", field="version")
    return int(text)


async def _read(view: View, version: int | None) -> tuple[StoredJourney, StoredJourney, dict[str, Any]]:
    """The journey's head, the version shown, and its stats (all versions'
    ``total`` for the head, else the version's own)."""
    workspace = view.workspace
    journey_id = view.request.path_params["journey_id"]
    catalog = view.services.catalog
    head = await catalog.journey(workspace, journey_id)
    shown = (
        head if version is None or version == head.current else await catalog.journey(workspace, journey_id, version)
    )
    rows = await view.profiles.run(lambda views: stats_rows(views.sql, workspace, journey_id))
    summary = summarize(rows)
    if version is None:
        return head, shown, summary["total"]
    return head, shown, summary["versions"].get(str(version)) or summarize([])["total"]


def _steps(spec: JourneySpec | None, counts: dict[str, Any]) -> list[str]:
    """The steps shown: the version's, then any other with counts (older versions)."""
    ids = [step.id for step in spec.steps] if spec is not None else []
    return list(dict.fromkeys([*ids, *counts["steps"], *counts["actions"], *counts["surveys"]]))


def _edges(graph: Graph | None, counts: dict[str, Any]) -> list[dict[str, Any]]:
    """Every move: the graph's edges (with their labels), then moves the counters
    know that this version does not draw."""
    moved = {(edge["from"], edge["to"]): edge["count"] for edge in counts["edges"]}
    found: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for edge in graph.edges if graph is not None else ():
        seen.add((edge.source, edge.target))
        count = counts["entered"]["total"] if edge.source == ENTRY else moved.get((edge.source, edge.target), 0)
        found.append({"from": edge.source, "to": edge.target, "label": edge.label, "count": count, "drawn": True})
    for (source, target), count in moved.items():
        if (source, target) not in seen:
            found.append({"from": source, "to": target, "label": "", "count": count, "drawn": False})
    return found


def edge_key(source: str, target: str) -> str:
    return f"edge:{source}:{target}"


def display(spec: JourneySpec | None, graph: Graph | None, counts: dict[str, Any]) -> dict[str, str]:
    """Every number the page shows, by its ``data-live`` key (the poller swaps them)."""
    number = formatting.number
    goal = counts["goal"]
    shown = {
        "entered": number(counts["entered"]["total"]),
        "active": number(counts["active"]),
        "converted": number(goal["conversions"]),
        "completed": number(counts["ended"].get("completed", 0)),
        "uplift": uplift_words(goal["uplift"]),
        "uplift-verdict": uplift_verdict(goal["uplift"]),
    }
    for group in ("treatment", "holdout"):
        found = goal[group]
        shown[f"{group}-entered"] = number(found["entered"])
        shown[f"{group}-converted"] = number(found["converted"])
        shown[f"{group}-rate"] = formatting.percent(found["rate"])
    for step in _steps(spec, counts):
        reached = counts["steps"].get(step, {"reached": 0, "waiting": 0, "left": {}})
        shown[f"step:{step}:reached"] = number(reached["reached"])
        shown[f"step:{step}:waiting"] = number(reached["waiting"])
        shown[f"step:{step}:left"] = number(sum(reached["left"].values()))
        shown[f"step:{step}:left-reasons"] = _reasons(reached["left"])
        sending = counts["actions"].get(step) or counts["surveys"].get(step) or {}
        for result in ("sent", "holdout", "held", "failed"):
            shown[f"step:{step}:{result}"] = number(sending.get(result, 0))
        shown[f"step:{step}:suppressed"] = number(sending.get("skipped_total", 0))
        shown[f"step:{step}:suppressed-reasons"] = _reasons(sending.get("skipped", {}))
    for edge in _edges(graph, counts):
        shown[edge_key(edge["from"], edge["to"])] = number(edge["count"])
    return shown


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def node_lines(graph: Graph, spec: JourneySpec) -> dict[str, list[Line]]:
    """What each box says below its name and description."""
    lines: dict[str, list[Line]] = {}
    kinds = {step.id: step for step in spec.steps}
    for node in graph.nodes:
        if node.id == ENTRY:
            holdout: Line = [(" · holdout ", None), ("", "holdout-entered")] if spec.holdout else []
            lines[node.id] = [[("entered ", None), ("", "entered"), *holdout]]
            continue
        if node.id == END:
            lines[node.id] = [[("completed ", None), ("", "completed")]]
            continue
        key = f"step:{node.id}"
        found: list[Line] = [
            [("reached ", None), ("", f"{key}:reached"), (" · waiting ", None), ("", f"{key}:waiting")]
        ]
        step = kinds[node.id]
        if step.action is not None or step.survey is not None:
            found.append(
                [("sent ", None), ("", f"{key}:sent"), (" · held ", None), ("", f"{key}:held")]
                + ([(" · failed ", None), ("", f"{key}:failed")] if step.action is not None else [])
            )
            found.append(
                [("suppressed ", None), ("", f"{key}:suppressed")]
                + ([(" · holdout ", None), ("", f"{key}:holdout")] if step.action is not None else [])
            )
        else:
            found.append([("left ", None), ("", f"{key}:left")])
        lines[node.id] = found
    return lines


async def _detail(view: View, *, check: Check | None = None, status: int = 200) -> Response:
    version = _version(view)
    head, shown_version, counts = await _read(view, version)
    spec = _spec(shown_version)
    graph = layout(flow(spec)) if spec is not None else None
    shown = display(spec, graph, counts)
    live_url = f"/ui/api/journeys/{head.id}" + (f"?version={version}" if version is not None else "")
    return view.render(
        "pages/journey.html",
        status=status,
        title=f"Journey {head.id}",
        area="journeys",
        journey=head,
        version_shown=shown_version,
        name=journey_name(shown_version),
        spec=spec,
        graph=graph,
        lines=node_lines(graph, spec) if graph is not None and spec is not None else {},
        colours=KIND_COLOURS,
        counts=counts,
        steps=_steps(spec, counts),
        nodes={node.id: node for node in flow(spec)} if spec is not None else {},
        edges=_edges(graph, counts),
        shown=shown,
        short=_short,
        body_lines=shown_version.body.split("\n"),
        check=check or Check(body=shown_version.body),
        checked=check is not None,
        live_url=live_url,
        interval=LIVE_INTERVAL_MS,
        all_versions=version is None,
    )


async def journey_page(view: View) -> Response:
    return await _detail(view)


async def journey_json(view: View) -> dict[str, Any]:
    _, shown_version, counts = await _read(view, _version(view))
    spec = _spec(shown_version)
    graph = layout(flow(spec)) if spec is not None else None
    return {"display": display(spec, graph, counts)}


# --- changes ----------------------------------------------------------------------------


async def _form(view: View) -> dict[str, str]:
    """A form with a document: up to 1 MB of YAML."""
    length = view.request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_FORM_BYTES:
        raise LimitExceeded(f"a journey document is at most {MAX_JOURNEY_BYTES} bytes (1 MB)", limit=MAX_JOURNEY_BYTES)
    return await view.form(max_part_size=MAX_FORM_BYTES)


def _status_route(action: str) -> PageHandler:
    status, notice = STATUS_CHANGES[action]

    async def change(view: View) -> Response:
        await view.form()
        journey_id = view.request.path_params["journey_id"]
        target = f"/ui/journeys/{journey_id}"
        try:
            await set_status(view.services.catalog, view.workspace, journey_id, status, format_millis(wall_clock_ms()))
        except PolkuError as error:
            return view.back(target, error=error.message)
        return view.back(target, notice=notice.format(id=journey_id))

    return change


async def _check(view: View, body: str) -> tuple[Check, bool]:
    """The document checked as the journey's next version; and whether it is
    identical to the current version (deploying it would change nothing)."""
    journey_id = view.request.path_params["journey_id"]
    check = Check(body=body)
    if len(body.encode()) > MAX_JOURNEY_BYTES:
        check.errors.append(
            {"message": f"a journey document is at most {MAX_JOURNEY_BYTES} bytes (1 MB)", "line": None}
        )
        return check, False
    if not body.strip():
        check.errors.append({"message": "the document is empty; paste the journey's YAML", "line": None})
        return check, False
    filename = f"{journey_id}.yaml"
    try:
        _, version = await check_for_workspace(
            view.services.catalog, view.workspace, body, journey_id=journey_id, filename=filename
        )
    except PolkuError as error:
        line = error.details.get("line")
        message = error.message
        for prefix in (f"{filename}:{line}: ", f"{filename}: "):
            message = message.removeprefix(prefix)
        check.errors.append(
            {"message": message, "line": line if isinstance(line, int) else None, "field": error.details.get("field")}
        )
        return check, False
    head = await view.services.catalog.journey(view.workspace, journey_id)
    check.valid = True
    check.unchanged = head.body == body
    check.version = head.current if check.unchanged else version
    return check, check.unchanged


def _body(values: dict[str, str]) -> str:
    # Browsers send a textarea's line breaks as CRLF; the stored document has LF.
    return values.get("body", "").replace("\r\n", "\n")


async def check_page(view: View) -> Response:
    values = await _form(view)
    check, _ = await _check(view, _body(values))
    return await _detail(view, check=check)


async def deploy_page(view: View) -> Response:
    values = await _form(view)
    journey_id = view.request.path_params["journey_id"]
    check, unchanged = await _check(view, _body(values))
    if not check.valid:
        return await _detail(view, check=check, status=400)
    target = f"/ui/journeys/{journey_id}"
    if unchanged:
        return view.back(target, notice=f"Nothing to deploy: the document is version {check.version} as it is.")
    stored, _ = await view.services.catalog.deploy_journey(
        view.workspace, journey_id, check.body, format_millis(wall_clock_ms())
    )
    return view.back(target, notice=f"Deployed version {stored} of journey {journey_id}.")


routes = [
    page_route("/ui/journeys", journeys_page),
    page_route("/ui/journeys/{journey_id}", journey_page),
    json_route("/ui/api/journeys/{journey_id}", journey_json),
    page_route("/ui/journeys/{journey_id}/check", check_page, methods=("POST",)),
    page_route("/ui/journeys/{journey_id}/deploy", deploy_page, methods=("POST",)),
    *(
        page_route(f"/ui/journeys/{{journey_id}}/{action}", _status_route(action), methods=("POST",))
        for action in STATUS_CHANGES
    ),
]
