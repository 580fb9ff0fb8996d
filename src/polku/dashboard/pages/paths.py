"""Paths: where customers go after (or came from before) a step, across channels — a
Sankey that re-opens itself on the clicked step, the most frequent whole paths with
example customers, and the variants (the most frequent complete paths).

The page renders its form at once; the analyses (DuckDB) are fragments: the Sankey
is ``GET /v1/analytics/paths``, the variants ``GET /v1/analytics/variants`` and the
steps suggested in the form ``GET /v1/analytics/steps``, with the same parameters.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode

from starlette.responses import Response

from polku.core.errors import InvalidInput, PolkuError
from polku.dashboard.frame import View, page_route
from polku.dashboard.reads import analyze, days_ago
from polku.engine import analytics, analytics_registry

PERIODS: Final = {"7": "last 7 days", "30": "last 30 days", "90": "last 90 days"}
DEFAULT_PERIOD: Final = "30"
GRANULARITIES: Final = {
    "channel:event": "Channel and event (web:Signed Up)",
    "event": "Event (Signed Up)",
    "channel": "Channel (web)",
}
DEFAULT_GRANULARITY: Final = "channel:event"
STEP_CHOICES: Final = tuple(str(count) for count in range(1, analytics.MAX_STEPS + 1))
DEFAULT_STEPS: Final = "3"
CUSTOMER_TYPES: Final = {"all": "All customers", "accounts": "Account holders", "consumers": "Consumers"}
STOPS: Final = ("(end)", "(start)")
MAX_SANKEY_LINKS: Final = 40
MIN_SANKEY_SHARE: Final = 0.01
"""Links taken by fewer of the customers than this, or beyond the most taken 40, make
a Sankey unreadable: they are left out of the chart (the table lists them)."""
MAX_TABLE_LINKS: Final = 25
TOP_VARIANTS: Final = 15
VARIANT_LENGTH: Final = 6
"""Whole months of steps are (nearly) all different: variants compare the first few."""
KNOWN_STEPS: Final = 300
STEPS_TTL_S: Final = 60.0
_steps_cache: dict[tuple[str, ...], tuple[float, list[tuple[str, int]]]] = {}
MAX_FIELD: Final = 300
"""Longer texts are not echoed back into the form (the analysis refuses them)."""
CHANNEL_COLOURS: Final = {
    "web": "#1d5bbf",
    "app": "#7b3fb5",
    "email": "#0f766e",
    "sms": "#a16207",
    "phone": "#b42318",
    "chat": "#c2410c",
    "store": "#17663a",
}
STOP_COLOUR: Final = "#9aa3ad"
OTHER_COLOUR: Final = "#545d69"


@dataclass(frozen=True)
class PathsQuery:
    """The form's choices, checked; ``analysis`` is what the API would be given."""

    start: str
    end: str
    granularity: str
    steps: str
    period: str
    customers: str
    segment: str

    @classmethod
    def read(cls, query: Mapping[str, str]) -> PathsQuery:
        """The choices in a query string; ``InvalidInput`` names what is wrong."""
        chosen = cls.echo(query)
        if chosen.granularity not in GRANULARITIES:
            raise InvalidInput(
                f"granularity must be one of {', '.join(GRANULARITIES)}, not {chosen.granularity[:40]!r}",
                field="granularity",
            )
        if chosen.period not in PERIODS:
            raise InvalidInput(f"period must be one of {', '.join(PERIODS)} (days)", field="period")
        if chosen.start and chosen.end:
            raise InvalidInput("give a step to start from or a step to lead to, not both", field="start")
        for name in ("start", "end", "segment", "steps", "customers"):
            if len(query.get(name, "")) > analytics_registry.MAX_TEXT:
                raise InvalidInput(
                    f"{name} is longer than {analytics_registry.MAX_TEXT} characters: no step is named like that",
                    field=name,
                )
        # What the API would say of the same parameters (steps, customers, lengths).
        analytics_registry.parse(analytics_registry.analysis_named("paths"), "check", chosen.analysis(""))
        if not 1 <= int(chosen.steps) <= analytics.MAX_STEPS:
            raise InvalidInput(f"steps must be 1-{analytics.MAX_STEPS}", field="steps")
        return chosen

    @classmethod
    def echo(cls, query: Mapping[str, str]) -> PathsQuery:
        """The choices as given, cut short, to show them back in the form."""

        def text(name: str, default: str = "") -> str:
            return (query.get(name) or default).strip()[:MAX_FIELD]

        return cls(
            start=text("start"),
            end=text("end"),
            granularity=text("granularity", DEFAULT_GRANULARITY),
            steps=text("steps", DEFAULT_STEPS),
            period=text("period", DEFAULT_PERIOD),
            customers=text("customers", "all"),
            segment=text("segment"),
        )

    @property
    def anchor(self) -> str:
        return self.start or self.end

    @property
    def forward(self) -> bool:
        return not self.end

    def scope(self, since: str) -> dict[str, str]:
        return {"since": since, "customers": self.customers, "segment": self.segment}

    def analysis(self, since: str) -> dict[str, str]:
        """The parameters of ``GET /v1/analytics/paths``."""
        found = {
            **self.scope(since),
            "start": self.start,
            "end": self.end,
            "granularity": self.granularity,
            "steps": self.steps,
        }
        return {name: value for name, value in found.items() if value}

    def form(self, **changes: str) -> dict[str, str]:
        """This page's own query string values, with ``changes``; empty ones left out."""
        found = {
            "start": self.start,
            "end": self.end,
            "granularity": self.granularity,
            "steps": self.steps,
            "period": self.period,
            "customers": self.customers,
            "segment": self.segment,
            **changes,
        }
        return {name: value for name, value in found.items() if value}

    def link(self, **changes: str) -> str:
        return "/ui/paths?" + urlencode(self.form(**changes))

    def follow(self) -> str:
        """The Sankey's click target: this page, the clicked step as the new anchor."""
        rest = urlencode(self.form(start="", end=""))
        return f"/ui/paths?{rest}{'&' if rest else ''}{'start' if self.forward else 'end'}={{value}}"


def since_of(query: PathsQuery) -> str:
    return days_ago(int(query.period))


def known_steps(view: View, query: PathsQuery, since: str) -> list[tuple[str, int]]:
    """The steps customers took in the period at the chosen granularity, the most
    taken first: the form's suggestions (read from the analytics store; kept a
    minute, as suggestions need not be newer)."""
    key = (view.workspace, query.granularity, query.period, query.customers, query.segment)
    cached = _steps_cache.get(key)
    if cached is not None and time.monotonic() - cached[0] < STEPS_TTL_S:
        return cached[1]
    found = _read_steps(view, query, since)
    if found:  # an empty store may fill any moment
        if len(_steps_cache) >= 64:
            _steps_cache.clear()
        _steps_cache[key] = (time.monotonic(), found)
    return found


def _read_steps(view: View, query: PathsQuery, since: str) -> list[tuple[str, int]]:
    """``GET /v1/analytics/steps`` with the form's scope and granularity."""
    analysis = analytics_registry.analysis_named("steps")
    given = {**query.scope(since), "granularity": query.granularity, "top": str(KNOWN_STEPS)}
    scope, arguments = analytics_registry.parse(analysis, view.workspace, {k: v for k, v in given.items() if v})
    found = analytics_registry.run(analysis, view.services.settings.data_dir, scope, arguments)
    return [(row["step"], row["customers"]) for row in found["steps"]]


def channel_of(step: str, granularity: str) -> str | None:
    if granularity == "channel":
        return step
    if granularity == "channel:event":
        return step.partition(":")[0]
    return None


def colour(step: str, granularity: str, anchor: str) -> str:
    if step in STOPS:
        return STOP_COLOUR
    if step == anchor:
        return "#154a9e"
    return CHANNEL_COLOURS.get(channel_of(step, granularity) or "", OTHER_COLOUR)


def drawn_links(found: dict[str, Any]) -> list[dict[str, Any]]:
    """The links worth drawing (the most taken), in time order: for paths to a step
    the analysis links each step to the one before it; the Sankey reads left to right."""
    ranked = sorted(found["links"], key=lambda link: (-link["customers"], link["source"], link["target"]))
    least = found["customers"] * MIN_SANKEY_SHARE
    kept = [link for link in ranked[:MAX_SANKEY_LINKS] if link["customers"] >= least]
    # Only links that hang together from the anchor: none from a step whose own way in was left out.
    reached = {found["nodes"][0]["id"]}
    chosen = []
    for link in sorted(kept, key=lambda link: abs(int(link["target"].split(":", 1)[0]))):
        if link["source"] in reached:
            reached.add(link["target"])
            chosen.append(link)
    if found["direction"] == "after":
        return chosen
    return [{**link, "source": link["target"], "target": link["source"]} for link in chosen]


def drawn_nodes(found: dict[str, Any], links: list[dict[str, Any]]) -> list[dict[str, Any]]:
    used = {found["nodes"][0]["id"]} | {link["source"] for link in links} | {link["target"] for link in links}
    return [node for node in found["nodes"] if node["id"] in used]


def sankey(found: dict[str, Any], query: PathsQuery) -> dict[str, Any]:
    """A Plotly Sankey: one node per step and depth (a step taken again later is a
    node of its own), the clean step name as each node's ``customdata``."""
    links = drawn_links(found)
    nodes = drawn_nodes(found, links)
    index = {node["id"]: position for position, node in enumerate(nodes)}
    by_id = {node["id"]: node for node in nodes}
    anchor = str(found["anchor"])
    forward = found["direction"] == "after"
    return {
        "data": [
            {
                "type": "sankey",
                # Plotly reports no clicks on nodes that can be dragged.
                "arrangement": "fixed",
                "valueformat": ",d",
                "valuesuffix": " customers",
                "node": {
                    "label": [node["step"] for node in nodes],
                    # "" for where paths stop: not a step to follow (app.js skips it).
                    "customdata": ["" if node["step"] in STOPS else node["step"] for node in nodes],
                    "color": [colour(node["step"], query.granularity, anchor) for node in nodes],
                    # Paths that stop early end in their own column, not at the far side.
                    "align": "left" if forward else "right",
                    "pad": 14,
                    "thickness": 16,
                    "line": {"width": 0},
                    "hovertemplate": "%{label}<br>%{value} customers<extra></extra>",
                },
                "link": {
                    "source": [index[link["source"]] for link in links],
                    "target": [index[link["target"]] for link in links],
                    "value": [link["customers"] for link in links],
                    # A click on a link follows it onwards (backwards for paths to a step).
                    "customdata": [by_id[link["target"] if forward else link["source"]]["step"] for link in links],
                    "color": [
                        "rgba(154,163,173,0.35)"
                        if {by_id[link["source"]]["step"], by_id[link["target"]]["step"]} & set(STOPS)
                        else "rgba(29,91,191,0.22)"
                        for link in links
                    ],
                    "hovertemplate": "%{source.label} → %{target.label}<br>%{value} customers<extra></extra>",
                },
            }
        ],
        "layout": {"margin": {"l": 8, "r": 8, "t": 8, "b": 8}},
        "follow": query.follow(),
    }


def chart_height(found: dict[str, Any]) -> int:
    """Room for the busiest column of the drawn nodes."""
    per_depth: dict[int, int] = {}
    for node in drawn_nodes(found, drawn_links(found)):
        per_depth[node["depth"]] = per_depth.get(node["depth"], 0) + 1
    return max(320, min(720, 48 * max(per_depth.values(), default=1)))


def transitions(found: dict[str, Any]) -> list[dict[str, Any]]:
    """The links as the table shows them: the most taken first, in time order."""
    steps = {node["id"]: node["step"] for node in found["nodes"]}
    ranked = sorted(
        found["links"], key=lambda link: (-link["customers"], abs(int(link["target"].split(":", 1)[0])), link["target"])
    )
    rows = []
    for link in ranked[:MAX_TABLE_LINKS]:
        depth = abs(int(link["target"].split(":", 1)[0]))
        source, target = steps[link["source"]], steps[link["target"]]
        before, after = (source, target) if found["direction"] == "after" else (target, source)
        rows.append({"depth": depth, "from": before, "to": after, "customers": link["customers"]})
    return rows


async def paths_page(view: View) -> Response:
    params = view.request.query_params
    try:
        query = PathsQuery.read(params)
    except InvalidInput as error:
        return view.render(
            "pages/paths.html", status=400, title="Paths", area="paths", query=PathsQuery.echo(params),
            error=error, **choices(),
        )  # fmt: skip
    return view.render("pages/paths.html", title="Paths", area="paths", query=query, error=None, **choices())


def choices() -> dict[str, Any]:
    return {
        "periods": PERIODS,
        "granularities": GRANULARITIES,
        "step_choices": STEP_CHOICES,
        "customer_types": CUSTOMER_TYPES,
    }


async def paths_fragment(view: View) -> Response:
    try:
        query = PathsQuery.read(view.request.query_params)
    except InvalidInput as error:
        return view.render("fragments/paths_error.html", status=400, error=error)
    since = since_of(query)
    try:
        steps = await asyncio.to_thread(known_steps, view, query, since)
        found = await analyze(view, "paths", **query.analysis(since)) if query.anchor and steps else None
    except InvalidInput as error:
        return view.render("fragments/paths_error.html", status=400, error=error)
    except PolkuError as error:
        return view.render("fragments/unavailable.html", error=error)
    values: dict[str, Any] = {"query": query, "steps": steps, "found": found, "period": PERIODS[query.period]}
    if found is not None and found["customers"]:
        chart = sankey(found, query)
        values.update(
            sankey_chart=chart,
            drawn=len(chart["data"][0]["link"]["value"]),
            height=chart_height(found),
            transitions=transitions(found),
        )
    return view.render("fragments/paths_sankey.html", **values)


async def variants_fragment(view: View) -> Response:
    try:
        query = PathsQuery.read(view.request.query_params)
    except InvalidInput as error:
        return view.render("fragments/paths_error.html", status=400, error=error)
    parameters = {
        **{name: value for name, value in query.scope(since_of(query)).items() if value},
        "granularity": query.granularity,
        "top": str(TOP_VARIANTS),
        "max_length": str(VARIANT_LENGTH),
    }
    try:
        found = await analyze(view, "variants", **parameters)
    except InvalidInput as error:
        return view.render("fragments/paths_error.html", status=400, error=error)
    except PolkuError as error:
        return view.render("fragments/unavailable.html", error=error)
    return view.render(
        "fragments/paths_variants.html",
        found=found,
        query=query,
        period=PERIODS[query.period],
        max_length=VARIANT_LENGTH,
    )


routes = [
    page_route("/ui/paths", paths_page),
    page_route("/ui/fragments/paths", paths_fragment),
    page_route("/ui/fragments/paths-variants", variants_fragment),
]
