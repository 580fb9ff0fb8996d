"""``polku analyze NAME [--param value …]``: the analyses of docs/analytics.md on the
embedded store, with the same parameters as ``GET /v1/analytics/{name}``; and
``polku analytics feed``, the process that keeps the analytics store current."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from polku.cli.manage import DataDir, Format, Workspace
from polku.cli.parquet import parquet
from polku.cli.profiles import require_store, run_until_stopped
from polku.cli.store import console, emit
from polku.core.errors import InvalidInput
from polku.engine.analytics_registry import ANALYSES, SCOPE, analysis_named, parse, run
from polku.engine.setup import DEFAULT_WORKSPACE

analytics_app = typer.Typer(help="The analytics store: keep it current.", no_args_is_help=True)
analytics_app.command("parquet")(parquet)


def _help() -> str:
    lines = ["Run an analysis (`polku analyze paths --start 'app:Password Reset Failed'`).", ""]
    for analysis in ANALYSES.values():
        options = " ".join(f"--{p.name.replace('_', '-')}" + ("!" if p.required else "") for p in analysis.parameters)
        lines.append(f"{analysis.name}: {analysis.summary} [{options}]")
        lines.append("")
    lines.append(
        "Every analysis also takes " + ", ".join(f"--{p.name}" for p in SCOPE) + " (! marks a required option)."
    )
    return "\n".join(lines)


def analyze(
    context: typer.Context,
    name: Annotated[str, typer.Argument(help="The analysis: " + ", ".join(ANALYSES) + ".")],
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    output_format: Format = "table",
) -> None:
    analysis = analysis_named(name)
    raw = _options(context.args)
    require_store(data_dir)
    scope, arguments = parse(analysis, workspace, raw)
    result = run(analysis, data_dir, scope, arguments)
    if output_format == "json":
        emit(result, "json")
        return
    key, columns = analysis.table
    rows: list[dict[str, Any]] = result.get(key) or []
    if key == "top":
        rows = [{**row, "path": " → ".join(row["path"])} for row in rows]
    if key == "journeys":
        rows = [_uplift_row(row) for row in rows]
        columns = ("journey", "treatment", "holdout", "uplift")
    console.print(_headline(result))
    emit(rows, "table", columns=list(columns), title=analysis.summary)


analyze.__doc__ = _help()


def _options(args: list[str]) -> dict[str, str]:
    """``--start X --steps 3`` → ``{"start": "X", "steps": "3"}`` (a flag alone is true)."""
    found: dict[str, str] = {}
    index = 0
    while index < len(args):
        token = args[index]
        if not token.startswith("--"):
            raise InvalidInput(f"unexpected argument {token!r}: options are written --name value")
        key, sep, value = token[2:].partition("=")
        key = key.replace("-", "_")
        if not sep:
            if index + 1 < len(args) and not args[index + 1].startswith("--"):
                value = args[index + 1]
                index += 1
            else:
                value = "true"
        found[key] = value
        index += 1
    return found


def _headline(result: dict[str, Any]) -> str:
    parts = [
        f"{key} {result[key]}"
        for key in ("customers", "people", "events", "answers", "critical_answers", "conversions", "distinct_steps")
        if key in result
    ]
    return f"{result['analysis']}: " + ", ".join(parts) if parts else str(result["analysis"])


def _uplift_row(row: dict[str, Any]) -> dict[str, Any]:
    goal = row["goal"]
    uplift = goal.get("uplift")
    return {
        "journey": row["journey"],
        "treatment": f"{goal['treatment']['converted']}/{goal['treatment']['entered']}",
        "holdout": f"{goal['holdout']['converted']}/{goal['holdout']['entered']}",
        "uplift": ""
        if uplift is None
        else f"{uplift['absolute']:+.1%} ({uplift['ci95'][0]:+.1%} to {uplift['ci95'][1]:+.1%})",
    }


@analytics_app.command("feed")
def analytics_feed(
    data_dir: DataDir = Path("polku-data"),
    wait_for_lock: Annotated[
        bool, typer.Option("--wait-for-lock", help="Wait for a previous feed to exit instead of failing.")
    ] = False,
) -> None:
    """Copy the processor's events into the analytics store (DuckDB) until stopped.
    `polku serve` runs it for you; run it yourself with `serve --no-analytics`."""
    from polku.cli.main import tune_gc
    from polku.engine.analytics_feed import run_analytics_feed
    from polku.logs import configure

    configure("info")
    require_store(data_dir)
    tune_gc()
    run_until_stopped(run_analytics_feed, data_dir, wait_for_lock=wait_for_lock)
    sys.stdout.flush()
