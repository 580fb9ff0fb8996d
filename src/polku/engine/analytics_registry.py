"""Every analysis by name, with its parameters: what ``GET /v1/analytics/{name}``
and ``polku analyze NAME`` share, so the two take the same parameters, check them
alike and answer the same (docs/analytics.md)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from polku.adapters.duckdb import analytics_store
from polku.core.attributes import parse_duration
from polku.core.errors import ConfigError, InvalidInput
from polku.core.events import parse_time
from polku.engine import analytics, analytics_causes, analytics_effects


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: str
    """``text``, ``int``, ``float``, ``duration``, ``bool`` or ``list`` (comma-separated)."""
    help: str
    default: Any = None
    required: bool = False


@dataclass(frozen=True)
class Analysis:
    name: str
    summary: str
    run: Callable[..., dict[str, Any]]
    parameters: tuple[Parameter, ...]
    table: tuple[str, tuple[str, ...]]
    """Which list of the answer a table shows, and its columns."""
    reads_state: bool = False
    """Reads the processor's state (journey stats) rather than the analytics store."""


SCOPE: Final = (
    Parameter("since", "time", "From this moment (ISO 8601), inclusive."),
    Parameter("until", "time", "Until this moment (ISO 8601), exclusive."),
    Parameter("channel", "text", "Only events on this channel."),
    Parameter("segment", "text", "Only customers in this segment now."),
    Parameter("customers", "text", "all, accounts (B2B: customers of an account) or consumers.", "all"),
)
GRANULARITY = Parameter("granularity", "text", "event, channel or channel:event.", "channel:event")


def _uplift(connection: sqlite3.Connection, scope: analytics.Scope, *, journey: str | None = None) -> dict[str, Any]:
    return analytics_effects.journey_uplift(connection, scope.workspace, journey)


ANALYSES: Final = {
    analysis.name: analysis
    for analysis in (
        Analysis(
            "channel-mix",
            "Events and people by channel over time, for account holders and consumers.",
            analytics.channel_mix,
            (Parameter("period", "text", "day, week or month.", "week"),),
            ("channels", ("channel", "events", "people", "share_of_events", "account_people", "consumer_people")),
        ),
        Analysis(
            "steps",
            "Every step customers took, the most taken first, with its customers and events.",
            analytics.steps,
            (GRANULARITY, Parameter("top", "int", "List this many steps (1-1000).", 100)),
            ("steps", ("step", "customers", "events")),
        ),
        Analysis(
            "paths",
            "From (start) or to (end) a step: the next or previous steps across channels (Sankey data).",
            analytics.paths,
            (
                Parameter("start", "text", "The step paths start from."),
                Parameter("end", "text", "The step paths lead to."),
                Parameter("steps", "int", "How many steps to follow (1-10).", 3),
                GRANULARITY,
                Parameter("window", "duration", "Only steps within this time of the anchor.", "1d"),
                Parameter("session", "bool", "Only steps in the anchor's session (no gap over 30 min).", False),
            ),
            ("links", ("source", "target", "customers")),
        ),
        Analysis(
            "variants",
            "Every distinct path with its count and share: 100 % of customers.",
            analytics.variants,
            (
                Parameter("granularity", "text", "event, channel or channel:event.", "event"),
                Parameter("max_length", "int", "Cut paths longer than this (marked …).", 20),
                Parameter("top", "int", "List this many variants (the rest are summed as other).", 50),
            ),
            ("top", ("customers", "share", "path")),
        ),
        Analysis(
            "flows",
            "How often each step directly follows another (the process map).",
            analytics.directly_follows,
            (GRANULARITY, Parameter("top", "int", "The most frequent this many edges.", 200)),
            ("edges", ("from", "to", "count")),
        ),
        Analysis(
            "funnel",
            "Customers through steps in order across channels, and where the dropped went instead.",
            analytics_causes.funnel,
            (
                Parameter("steps", "list", "The steps, comma-separated.", required=True),
                Parameter("granularity", "text", "event, channel or channel:event.", "event"),
                Parameter("window", "duration", "All steps within this of the first.", "7d"),
            ),
            ("steps", ("step", "customers", "of_first", "of_previous", "dropped")),
        ),
        Analysis(
            "switching",
            "Failure demand: the share of self-service steps followed by a contact on an assisted channel.",
            analytics_causes.switching,
            (
                Parameter(
                    "assisted", "list", "The assisted channels, comma-separated (e.g. phone,chat).", required=True
                ),
                Parameter("event", "text", "One self-service step (all of them, ranked, without it)."),
                GRANULARITY,
                Parameter("window", "duration", "A contact within this counts.", "1d"),
                Parameter("min_customers", "int", "Rank only steps taken by at least this many.", 5),
                Parameter("top", "int", "List this many.", 20),
            ),
            ("steps", ("step", "customers", "switched", "rate", "lift", "excess_contacts")),
        ),
        Analysis(
            "root-causes",
            "For critical feedback answers: the preceding patterns ranked by lift, as sentences.",
            analytics_causes.root_causes,
            (
                Parameter("metric", "text", "csat, nps or ces.", required=True),
                Parameter("channel", "text", "Only answers on this channel."),
                Parameter("threshold", "float", "Critical at or below (CSAT, NPS) / at or above (CES) this."),
                Parameter("lookback", "duration", "Patterns within this before the answer.", "2h"),
                Parameter("patterns", "list", "event, transition, sequence.", "event,transition,sequence"),
                Parameter(
                    "min_support",
                    "int",
                    "Only patterns before at least this many critical answers (1 % of them, at least 5, without it).",
                ),
                Parameter("top", "int", "List this many.", 20),
            ),
            ("findings", ("sentence", "lift", "lift_interval", "critical", "answers")),
        ),
        Analysis(
            "opportunities",
            "The ranked fixes: paths that, behaving like the baseline, would spare the most bad outcomes.",
            analytics_causes.opportunities,
            (
                Parameter("metric", "text", "csat, nps or ces (satisfaction)."),
                Parameter("channel", "text", "Only answers on this channel."),
                Parameter("threshold", "float", "Critical threshold (the metric's default without it)."),
                Parameter("lookback", "duration", "Patterns within this before an answer.", "2h"),
                Parameter("assisted", "list", "Assisted channels (failure demand), comma-separated."),
                Parameter("goal", "text", "A goal step (success): steps after which customers reach it less often."),
                GRANULARITY,
                Parameter("window", "duration", "A contact (or the goal) within this after the step counts.", "1d"),
                Parameter("min_support", "int", "Only paths with at least this many.", 5),
                Parameter("top", "int", "List this many.", 20),
            ),
            ("opportunities", ("sentence", "spared", "kind")),
        ),
        Analysis(
            "uplift",
            "Per journey: goal conversion of treatment vs holdout, and of each split arm, with intervals.",
            _uplift,
            (Parameter("journey", "text", "Only this journey."),),
            ("journeys", ("journey",)),
            reads_state=True,
        ),
        Analysis(
            "attribution",
            "Conversions credited to channels: Markov removal effects; first, last and linear touch beside.",
            analytics_effects.attribution,
            (
                Parameter("goal", "text", "The conversion step.", required=True),
                Parameter("granularity", "text", "How the goal is named: event, channel or channel:event.", "event"),
                Parameter("window", "duration", "Conversions within this of the first touch.", "30d"),
                Parameter("collapse", "bool", "Count repeated touches of one channel once.", True),
            ),
            ("channels", ("channel", "markov", "removal_effect", "first_touch", "last_touch", "linear")),
        ),
    )
}
ARGUMENT_NAMES: Final = {"window": "window_ms", "lookback": "lookback_ms"}
MAX_TEXT: Final = 256
MAX_LIST_TEXT: Final = 2000
LIST_PARAMETERS: Final = frozenset(p.name for a in ANALYSES.values() for p in a.parameters if p.kind == "list")


def analysis_named(name: str) -> Analysis:
    found = ANALYSES.get(name)
    if found is None:
        raise InvalidInput(f"unknown analysis {name!r} (analyses: {', '.join(ANALYSES)})", field="name")
    return found


def parse(analysis: Analysis, workspace: str, raw: Mapping[str, str]) -> tuple[analytics.Scope, dict[str, Any]]:
    """The scope and the arguments of a call, from text parameters (a query string,
    CLI options); errors name the parameter."""
    known = {parameter.name: parameter for parameter in (*SCOPE, *analysis.parameters)}
    unknown = [name for name in raw if name not in known]
    if unknown:
        raise InvalidInput(
            f"unknown parameter {unknown[0]!r} for {analysis.name} (parameters: {', '.join(known)})", field=unknown[0]
        )
    values: dict[str, Any] = {}
    for parameter in known.values():
        text = raw.get(parameter.name)
        if text is None or text == "":
            if parameter.required:
                raise InvalidInput(
                    f"{analysis.name} needs the parameter {parameter.name!r}: {parameter.help}", field=parameter.name
                )
            value = parameter.default
            if isinstance(value, str) and parameter.kind in ("duration", "list", "int"):
                value = _convert(parameter, value)
            values[parameter.name] = value
            continue
        limit = MAX_LIST_TEXT if parameter.kind == "list" else MAX_TEXT
        if len(text) > limit:
            raise InvalidInput(f"parameter {parameter.name!r} is longer than {limit} characters", field=parameter.name)
        values[parameter.name] = _convert(parameter, text)
    own = {parameter.name for parameter in analysis.parameters}
    # An analysis that has a parameter of a scope's name (root causes' `channel`, the
    # answers' channel) keeps it; its scope then covers every channel.
    scope = analytics.Scope(
        workspace=workspace,
        since_ms=values.pop("since") or 0,
        until_ms=values.pop("until") or 0,
        channel=None if "channel" in own else values.pop("channel"),
        segment=values.pop("segment"),
        customers=values.pop("customers") or "all",
    ).check()
    arguments = {ARGUMENT_NAMES.get(name, name): value for name, value in values.items() if value is not None}
    return scope, arguments


def _convert(parameter: Parameter, text: str) -> Any:
    name = parameter.name
    try:
        if parameter.kind == "int":
            return int(text)
        if parameter.kind == "float":
            return float(text)
        if parameter.kind == "bool":
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if parameter.kind == "duration":
            return parse_duration(text, name)
        if parameter.kind == "time":
            return int(parse_time(text, name).timestamp() * 1000)
        if parameter.kind == "list":
            items = [item.strip() for item in text.split(",") if item.strip()]
            if len(items) > 50:
                raise ValueError("too many items")
            return items
        return text
    except ConfigError as error:
        raise InvalidInput(error.message, field=name) from None
    except Exception:
        raise InvalidInput(
            f"parameter {name!r}: {text[:64]!r} is not a valid {parameter.kind}: {parameter.help}", field=name
        ) from None


def run(analysis: Analysis, data_dir: Path, scope: analytics.Scope, arguments: dict[str, Any]) -> dict[str, Any]:
    """Run it on the store (a read-only connection for the call)."""
    if analysis.reads_state:
        from polku.adapters.sqlite.state_store import open_state_reader

        state = open_state_reader(data_dir)
        try:
            return {"analysis": analysis.name, **analysis.run(state.connection, scope, **arguments)}
        finally:
            state.connection.close()
    with analytics_store.reader(data_dir) as db:
        return {"analysis": analysis.name, **analysis.run(db, scope, **arguments)}


def describe() -> list[dict[str, Any]]:
    return [
        {
            "name": analysis.name,
            "summary": analysis.summary,
            "parameters": [
                {"name": p.name, "kind": p.kind, "help": p.help, "default": p.default, "required": p.required}
                for p in (*analysis.parameters, *SCOPE)
            ],
        }
        for analysis in ANALYSES.values()
    ]
