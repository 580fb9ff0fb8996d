"""``polku surveys``: validate, deploy, list, show, pause / resume / archive, and
invitations (sent, and not sent with the reason); ``polku feedback metrics`` and
``counts`` (docs/surveys.md). On the embedded store directly, like ``polku journeys``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from polku.adapters.sqlite import SqliteCatalog, survey_store
from polku.cli.journeys import _now, _with_catalog, validate_documents
from polku.cli.manage import DataDir, Format, Workspace
from polku.cli.profiles import _with_views
from polku.cli.store import console, emit
from polku.core.errors import InvalidInput
from polku.core.events import parse_time
from polku.core.survey_spec import parse_survey
from polku.engine.feedback_reports import (
    DEFAULT_PERIOD_DAYS,
    MAX_COUNT_DAYS,
    MetricQuery,
    feedback_counts,
    feedback_metrics,
    invitation_view,
    survey_counts,
)
from polku.engine.profile_views import ProfileViews
from polku.engine.runtime import WorkspaceRuntime
from polku.engine.setup import DEFAULT_WORKSPACE
from polku.engine.survey_admin import check_survey_for_workspace, set_survey_status, survey_detail, survey_summary
from polku.engine.worker import wall_clock_ms
from polku.ports import JourneyStatus

surveys_app = typer.Typer(
    help="Surveys: validate, deploy, pause, and who was invited or not (and why).", no_args_is_help=True
)
feedback_app = typer.Typer(help="Feedback: NPS, CSAT and CES with confidence intervals.", no_args_is_help=True)
SurveyId = Annotated[str, typer.Argument(help="The survey's id.")]
DAY_MS = 86_400_000


@surveys_app.command("validate")
def surveys_validate(
    files: Annotated[list[Path], typer.Argument(help="Survey documents (YAML or JSON).")],
    data_dir: Annotated[
        Path | None, typer.Option(envvar="POLKU_DATA_DIR", help="Also check channels against this store's workspace.")
    ] = None,
    workspace: Workspace = DEFAULT_WORKSPACE,
) -> None:
    """Check survey documents (offline; with --data-dir also their channels).
    Prints `file:line: field: message` for each problem and exits 2 if there was one."""

    def check(text: bytes, filename: str) -> object:
        if data_dir is None:
            return parse_survey(text, filename=filename)
        _check_stored(data_dir, workspace, text, filename)
        return None

    validate_documents(files, check)


def _check_stored(data_dir: Path, workspace: str, text: bytes, filename: str) -> None:
    _with_catalog(
        data_dir,
        lambda catalog: check_survey_for_workspace(catalog, workspace, text, survey_id=None, filename=filename),
    )


@surveys_app.command("deploy")
def surveys_deploy(
    file: Annotated[Path, typer.Argument(help="The survey document (YAML or JSON).")],
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate only.")] = False,
) -> None:
    """Deploy a survey as its next version; its triggers start within a second."""
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInput(f"{file}: cannot read: {error}") from None

    async def deploy(catalog: SqliteCatalog) -> dict[str, Any]:
        survey, version = await check_survey_for_workspace(catalog, workspace, text, survey_id=None, filename=str(file))
        if dry_run:
            return {"id": survey.id, "valid": True, "dry_run": True, "version": version, "created": False}
        stored, created = await catalog.deploy_definition("survey", workspace, survey.id, text, _now())
        status = (await catalog.definition("survey", workspace, survey.id)).status
        return {"id": survey.id, "version": stored, "created": created, "status": status}

    emit(_with_catalog(data_dir, deploy), "json")


@surveys_app.command("list")
def surveys_list(
    data_dir: DataDir = Path("polku-data"), workspace: Workspace = DEFAULT_WORKSPACE, output_format: Format = "table"
) -> None:
    """Every survey: metric, channels, status, and invitations of the last 30 days."""

    async def read(catalog: SqliteCatalog) -> list[dict[str, Any]]:
        return [survey_summary(stored) for stored in await catalog.definitions("survey", workspace)]

    items = _with_catalog(data_dir, read)
    since = wall_clock_ms() - 30 * DAY_MS
    counts = _with_views(data_dir, workspace, lambda views, _: survey_counts(views.sql, workspace, None, since))
    rows = []
    for item in items:
        numbers = counts.get(item["id"], {"sent": 0, "suppressed": 0, "answered": 0})
        rows.append({**item, "channels": ", ".join(item.get("channels", [])), **numbers})
    emit(
        rows,
        output_format,
        columns=["id", "name", "metric", "version", "status", "channels", "sent", "suppressed", "answered"],
        title="surveys (invitations of the last 30 days)",
    )


@surveys_app.command("show")
def surveys_show(
    survey_id: SurveyId,
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    version: Annotated[int | None, typer.Option(min=1, help="This version (the current one without it).")] = None,
    output_format: Format = "table",
) -> None:
    """A survey's document as deployed, with its status and versions."""

    async def read(catalog: SqliteCatalog) -> dict[str, Any]:
        return survey_detail(await catalog.definition("survey", workspace, survey_id, version))

    detail = _with_catalog(data_dir, read)
    if output_format == "json":
        emit(detail, "json")
        return
    console.print(
        f"survey {detail['id']} version {detail['version']} (current {detail['current_version']}, "
        f"{detail['status']}; versions {', '.join(map(str, detail['versions']))})"
    )
    sys.stdout.write(detail["body"] if detail["body"].endswith("\n") else detail["body"] + "\n")


def _status_command(status: JourneyStatus, help_text: str) -> Callable[..., None]:
    def command(
        survey_id: SurveyId, data_dir: DataDir = Path("polku-data"), workspace: Workspace = DEFAULT_WORKSPACE
    ) -> None:
        updated = _with_catalog(
            data_dir, lambda catalog: set_survey_status(catalog, workspace, survey_id, status, _now())
        )
        emit(survey_summary(updated), "json")

    command.__doc__ = help_text
    return command


surveys_app.command("pause")(_status_command("paused", "Pause a survey: no new invitations; sent links still work."))
surveys_app.command("resume")(_status_command("active", "Make a paused or archived survey active again."))
surveys_app.command("archive")(_status_command("archived", "Archive a survey: its triggers stop."))


def _moment(text: str | None, name: str) -> int:
    if text is None:
        return 0
    try:
        return int(parse_time(text, name).timestamp() * 1000)
    except Exception:
        raise InvalidInput(f"--{name}: {text!r} is not an ISO 8601 time (e.g. 2026-11-01T00:00:00Z)") from None


@surveys_app.command("invitations")
def surveys_invitations(
    survey_id: SurveyId,
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    status: Annotated[str | None, typer.Option(help="Only `sent` or `suppressed` ones.")] = None,
    since: Annotated[str | None, typer.Option(help="Decided at or after (ISO 8601).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many, newest first.")] = 50,
    output_format: Format = "table",
) -> None:
    """Who was invited, and who was not and why (cooldown, consent, sampling …)."""
    if status not in (None, "sent", "suppressed"):
        raise InvalidInput("--status must be sent or suppressed")
    since_ms = _moment(since, "since")

    def read(views: ProfileViews, _: WorkspaceRuntime) -> dict[str, Any]:
        connection = views.sql
        rows = survey_store.invitations(
            connection, workspace, survey=survey_id, status=status, since_ms=since_ms, limit=limit
        )
        return {
            "survey": survey_id,
            "totals": survey_counts(connection, workspace, survey_id, since_ms).get(survey_id, {}),
            "invitations": [invitation_view(record, answered) for record, answered in rows],
        }

    report = _with_views(data_dir, workspace, read)
    if output_format == "json":
        emit(report, "json")
        return
    totals = report["totals"]
    console.print(
        f"survey {survey_id}: sent {totals.get('sent', 0)}, answered {totals.get('answered', 0)}, "
        f"not sent {totals.get('suppressed', 0)}"
    )
    for reason, count in totals.get("reasons", {}).items():
        console.print(f"  not sent, {reason}: {count}")
    emit(
        report["invitations"],
        "table",
        columns=["created", "customer_id", "status", "reason", "channel", "answered", "journey", "step"],
        title="invitations (newest first)",
    )


@feedback_app.command("metrics")
def feedback_metrics_command(
    metric: Annotated[str, typer.Option(help="nps, csat or ces.")] = "nps",
    by: Annotated[str | None, typer.Option(help="survey, channel, journey, step, segment, day, week or month.")] = None,
    since: Annotated[str | None, typer.Option(help="From (ISO 8601); 90 days back without it.")] = None,
    until: Annotated[str | None, typer.Option(help="Until (ISO 8601, exclusive); now without it.")] = None,
    survey: Annotated[str | None, typer.Option(help="Only this survey.")] = None,
    journey: Annotated[str | None, typer.Option(help="Only this journey's survey steps.")] = None,
    channel: Annotated[str | None, typer.Option(help="Only answers on this channel.")] = None,
    segment: Annotated[str | None, typer.Option(help="Only customers in this segment when they answered.")] = None,
    confidence: Annotated[float, typer.Option(help="Of the intervals.")] = 0.95,
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    output_format: Format = "table",
) -> None:
    """NPS (% promoters − % detractors), CSAT (% 4–5, and the mean) or CES (the
    mean, and % 5–7), with confidence intervals and the response rate."""
    query = MetricQuery(
        metric=metric.lower(),
        by=by,
        since_ms=_moment(since, "since"),
        until_ms=_moment(until, "until"),
        survey=survey,
        journey=journey,
        channel=channel,
        segment=segment,
        confidence=confidence,
    ).check()
    now = wall_clock_ms()
    report = _with_views(data_dir, workspace, lambda views, _: feedback_metrics(views.sql, workspace, query, now))
    if output_format == "json":
        emit(report, "json")
        return
    rows = []
    for group in report["groups"]:
        interval = group.get("interval")
        rate = group.get("response_rate")
        rows.append(
            {
                "group": group["key"] if group["key"] is not None else "all",
                "answers": group["answers"],
                "score": group["score"],
                "interval": f"{interval[0]} to {interval[1]}" if interval else "",
                "mean": group["mean"],
                "invitations": group.get("invitations"),
                "response_rate": f"{rate} %" if rate is not None else "",
            }
        )
    emit(
        rows,
        "table",
        columns=["group", "answers", "score", "interval", "mean", "invitations", "response_rate"],
        title=f"{report['metric'].upper()} {report['since'][:10]} to {report['until'][:10]}"
        f" ({round(report['confidence'] * 100)} % intervals)",
    )


@feedback_app.command("counts")
def feedback_counts_command(
    days: Annotated[
        int, typer.Option(min=1, max=MAX_COUNT_DAYS, help="The period, in days up to now.")
    ] = DEFAULT_PERIOD_DAYS,
    data_dir: DataDir = Path("polku-data"),
    workspace: Workspace = DEFAULT_WORKSPACE,
    output_format: Format = "table",
) -> None:
    """Answers per metric (NPS, CSAT, CES) in the period, and the metric most answered."""
    now = wall_clock_ms()
    report = _with_views(data_dir, workspace, lambda views, _: feedback_counts(views.sql, workspace, days, now))
    if output_format == "json":
        emit(report, "json")
        return
    rows = [
        {"metric": metric, "answers": count, "most_answered": "yes" if metric == report["most_answered"] else ""}
        for metric, count in report["answers"].items()
    ]
    emit(
        rows,
        "table",
        columns=["metric", "answers", "most_answered"],
        title=f"answers {report['since'][:10]} to {report['until'][:10]}",
    )
