"""``polku journeys``: validate, deploy, list, show, pause / resume / archive,
stats, and ``why`` (what the journeys did with one customer), on the embedded
store directly (docs/journeys.md)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from polku.adapters.sqlite import SqliteCatalog
from polku.cli.manage import DataDir, Format, Workspace
from polku.cli.profiles import _with_views
from polku.cli.store import console, emit, open_store
from polku.core.errors import ConfigError, InvalidInput
from polku.core.events import format_millis
from polku.core.journey_check import check_journey
from polku.core.journey_stats import summarize
from polku.engine.journey_admin import (
    check_for_workspace,
    journey_detail,
    journey_name,
    journey_summary,
    set_status,
)
from polku.engine.journey_reports import customer_journeys, customer_messages, journey_totals, stats_rows
from polku.engine.profile_views import ProfileViews
from polku.engine.runtime import WorkspaceRuntime
from polku.engine.setup import DEFAULT_WORKSPACE
from polku.engine.worker import wall_clock_ms
from polku.ports import JourneyStatus

T = TypeVar("T")
journeys_app = typer.Typer(
    help="Journeys: validate, deploy, pause, stats, and why a customer got a message.", no_args_is_help=True
)
JourneyId = Annotated[str, typer.Argument(help="The journey's id.")]


def _with_catalog(data_dir: Path, function: Callable[[SqliteCatalog], Awaitable[T]]) -> T:
    async def go() -> T:
        async with open_store(data_dir) as (_log, catalog, _ingestor):
            return await function(catalog)

    return asyncio.run(go())


def _now() -> str:
    return format_millis(wall_clock_ms())


@journeys_app.command("validate")
def journeys_validate(
    files: Annotated[list[Path], typer.Argument(help="Journey documents (YAML or JSON).")],
    data_dir: Annotated[
        Path | None,
        typer.Option(envvar="POLKU_DATA_DIR", help="Also check channels and segments against this store's workspace."),
    ] = None,
    workspace: Workspace = DEFAULT_WORKSPACE,
) -> None:
    """Check journey documents: parse and compile them (offline), and with
    --data-dir also their channels and segments. Prints `file:line: field: message`
    for each problem and exits 2 if there was one."""

    def check(text: bytes, filename: str) -> object:
        if data_dir is None:
            return check_journey(text, filename=filename)
        _check_stored(data_dir, workspace, text, filename)
        return None

    validate_documents(files, check)


def validate_documents(files: list[Path], check: Callable[[bytes, str], object]) -> None:
    """Check each file; print `file: ok` or `file:line: field: message`; exit 2 if
    any failed (``polku journeys validate``, ``polku surveys validate``)."""
    failed = False
    for path in files:
        try:
            text = path.read_bytes()
        except OSError as error:
            sys.stdout.write(f"{path}: cannot read: {error.strerror}\n")
            failed = True
            continue
        try:
            check(text, str(path))
        except ConfigError as error:
            sys.stdout.write(error.message + "\n")
            failed = True
            continue
        sys.stdout.write(f"{path}: ok\n")
    if failed:
        raise typer.Exit(code=2)


def _check_stored(data_dir: Path, workspace: str, text: bytes, filename: str) -> None:
    _with_catalog(
        data_dir, lambda catalog: check_for_workspace(catalog, workspace, text, journey_id=None, filename=filename)
    )


@journeys_app.command("deploy")
def journeys_deploy(
    file: Annotated[Path, typer.Argument(help="The journey document (YAML or JSON).")],
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate only.")] = False,
) -> None:
    """Deploy a journey as its next version (a document identical to the current
    version deploys nothing). The processor picks it up within a second."""
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput(f"{file}: cannot read: {error}") from None

    async def deploy(catalog: SqliteCatalog) -> dict[str, Any]:
        journey, version = await check_for_workspace(catalog, workspace, text, journey_id=None, filename=str(file))
        if dry_run:
            return {"id": journey.id, "valid": True, "dry_run": True, "version": version, "created": False}
        stored, created = await catalog.deploy_journey(workspace, journey.id, text, _now())
        status = (await catalog.journey(workspace, journey.id)).status
        return {"id": journey.id, "version": stored, "created": created, "status": status}

    emit(_with_catalog(data_dir, deploy), "json")


@journeys_app.command("list")
def journeys_list(
    data_dir: DataDir = Path("polku-data"), workspace: Workspace = DEFAULT_WORKSPACE, output_format: Format = "table"
) -> None:
    """Every journey: current version, status, and entered / active / goal counts."""

    async def read(catalog: SqliteCatalog) -> list[dict[str, Any]]:
        return [
            {**journey_summary(journey), "name": journey_name(journey)} for journey in await catalog.journeys(workspace)
        ]

    items = _with_catalog(data_dir, read)
    totals = _with_views(data_dir, workspace, lambda views, _: journey_totals(views.sql, workspace))
    rows = [{**item, **totals.get(item["id"], {"entered": 0, "active": 0, "goal": 0})} for item in items]
    emit(
        rows,
        output_format,
        columns=["id", "name", "version", "status", "entered", "active", "goal", "updated_at"],
        title="journeys",
    )


@journeys_app.command("show")
def journeys_show(
    journey_id: JourneyId,
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    version: Annotated[int | None, typer.Option(min=1, help="This version (the current one without it).")] = None,
    output_format: Format = "table",
) -> None:
    """A journey's document as deployed, with its status and versions."""
    detail = _with_catalog(data_dir, lambda catalog: _detail(catalog, workspace, journey_id, version))
    if output_format == "json":
        emit(detail, "json")
        return
    console.print(
        f"journey {detail['id']} version {detail['version']} (current {detail['current_version']}, "
        f"{detail['status']}; versions {', '.join(map(str, detail['versions']))})"
    )
    sys.stdout.write(detail["body"] if detail["body"].endswith("\n") else detail["body"] + "\n")


async def _detail(catalog: SqliteCatalog, workspace: str, journey_id: str, version: int | None) -> dict[str, Any]:
    return journey_detail(await catalog.journey(workspace, journey_id, version))


def _status_command(status: JourneyStatus, help_text: str) -> Callable[..., None]:
    def command(
        journey_id: JourneyId, data_dir: DataDir = Path("polku-data"), workspace: Workspace = DEFAULT_WORKSPACE
    ) -> None:
        updated = _with_catalog(data_dir, lambda catalog: set_status(catalog, workspace, journey_id, status, _now()))
        emit(journey_summary(updated), "json")

    command.__doc__ = help_text
    return command


journeys_app.command("pause")(_status_command("paused", "Pause a journey: no new entries; running instances go on."))
journeys_app.command("resume")(_status_command("active", "Make a paused or archived journey active again."))
journeys_app.command("archive")(_status_command("archived", "Archive a journey: its instances end."))


@journeys_app.command("stats")
def journeys_stats(
    journey_id: JourneyId,
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    output_format: Format = "table",
) -> None:
    """Entries, active instances, endings, steps, actions and goal uplift against the holdout."""
    journey = _with_catalog(data_dir, lambda catalog: catalog.journey(workspace, journey_id))
    rows = _with_views(data_dir, workspace, lambda views, _: stats_rows(views.sql, workspace, journey_id))
    summary = {**journey_summary(journey), **summarize(rows)}
    if output_format == "json":
        emit(summary, "json")
        return
    total = summary["total"]
    goal = total["goal"]
    uplift = goal["uplift"]
    console.print(
        f"journey {journey_id} (version {journey.current}, {journey.status}): entered {total['entered']['total']} "
        f"(holdout {total['entered']['holdout']}), active {total['active']}, goal {goal['conversions']}"
    )
    if uplift is not None:
        low, high = uplift["ci95"]
        console.print(f"uplift {uplift['absolute']:+.1%} (95 % CI {low:+.1%} to {high:+.1%})")
    table = [
        {
            "step": step,
            "reached": total["steps"].get(step, {}).get("reached", 0),
            "waiting": total["steps"].get(step, {}).get("waiting", 0),
            **{key: total["actions"].get(step, {}).get(key, "") for key in ("sent", "holdout", "held", "failed")},
            "skipped": ", ".join(f"{k} {v}" for k, v in total["actions"].get(step, {}).get("skipped", {}).items()),
        }
        for step in dict.fromkeys([*total["steps"], *total["actions"]])
    ]
    emit(
        table, "table", columns=["step", "reached", "waiting", "sent", "holdout", "held", "failed", "skipped"],
        title="steps",
    )  # fmt: skip
    if total["edges"]:
        emit(total["edges"], "table", columns=["from", "to", "count"], title="moves between steps")


@journeys_app.command("why")
def journeys_why(
    identifier: Annotated[str, typer.Argument(help="A customer id, `type:value` or a bare identifier value.")],
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    journey: Annotated[str | None, typer.Option(help="Only this journey.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Transitions and messages to show, newest first.")] = 50,
    output_format: Format = "table",
) -> None:
    """Why did (or didn't) this customer get a message: their live journey
    instances, every transition (entered, step, action sent / held / skipped and
    why, goal, exited) and the messages decided for them."""
    now = wall_clock_ms()

    def read(views: ProfileViews, runtime: WorkspaceRuntime) -> dict[str, Any]:
        customer_id = views.find_any(workspace, runtime, identifier)
        profile = views.state.profile(workspace, customer_id)
        accounts = list(profile.accounts) if profile is not None else []
        connection = views.sql
        found = customer_journeys(connection, workspace, customer_id, accounts, journey=journey, limit=limit)
        found.update(customer_messages(connection, workspace, customer_id, now, journey=journey, limit=limit))
        return found

    report = _with_views(data_dir, workspace, read)
    if output_format == "json":
        emit(report, "json")
        return
    console.print(f"customer {report['customer_id']}")
    emit(
        report["instances"],
        "table",
        columns=["journey", "version", "step", "entered_at", "due_at", "held"],
        title="live",
    )
    emit(
        report["transitions"],
        "table",
        columns=["timestamp", "journey", "version", "kind", "step", "detail"],
        title="transitions (newest first)",
    )
    emit(
        report["messages"],
        "table",
        columns=["created_at", "journey", "step", "channel", "purpose", "to", "subject"],
        title="messages",
    )
