"""``polku import`` and ``polku export``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from polku.cli.store import DATA_DIR_HELP, console, emit, open_store
from polku.connectors.files import CsvMapping, detect_format, file_size
from polku.core.errors import ConfigError, InvalidInput
from polku.core.events import parse_time
from polku.engine.importer import ImportReport, import_file
from polku.engine.setup import DEFAULT_WORKSPACE
from polku.ports import EventQuery

export_app = typer.Typer(help="Export data as JSONL.", no_args_is_help=True)
DataDir = Annotated[Path, typer.Option(envvar="POLKU_DATA_DIR", help=DATA_DIR_HELP)]


def import_files(
    files: Annotated[
        list[Path],
        typer.Argument(help="JSONL (Segment messages, one per line) or CSV files.", exists=True, dir_okay=False),
    ],
    data_dir: DataDir = Path("polku-data"),
    workspace: Annotated[str, typer.Option(help="Workspace to import into.")] = DEFAULT_WORKSPACE,
    source: Annotated[
        str, typer.Option(help="Source the events are attributed to (its default channel applies).")
    ] = "default",
    channel: Annotated[
        str | None, typer.Option(help="Channel for messages without context.channel (overrides the source's default).")
    ] = None,
    file_format: Annotated[str, typer.Option("--format", help="auto, jsonl or csv.")] = "auto",
    message_type: Annotated[str, typer.Option("--type", help="CSV: message type of every row.")] = "track",
    event: Annotated[str | None, typer.Option(help="CSV: constant event name for every row.")] = None,
    maps: Annotated[
        list[str] | None, typer.Option("--map", help="CSV: FIELD=COLUMN, e.g. userId=customer_id (repeatable).")
    ] = None,
    output_format: Annotated[str, typer.Option("--output", help="text or json summary.")] = "text",
) -> None:
    """Import files with the same validation, quarantine and deduplication as the API.

    Re-importing a file stores nothing twice: messages without a messageId get one
    derived from their content."""
    if file_format not in ("auto", "jsonl", "csv"):
        raise ConfigError(f"--format {file_format!r} must be auto, jsonl or csv", field="format")
    mapping = CsvMapping.parse(message_type, maps or [], event)
    if channel is not None:
        from polku.core.workspace import check_channel

        check_channel(channel, "--channel")
    report = asyncio.run(_import(files, data_dir, workspace, source, channel, file_format, mapping))
    summary = {
        "files": report.files,
        "messages": report.messages,
        "accepted": report.accepted,
        "duplicates": report.duplicates,
        "quarantined": report.quarantined,
    }
    if output_format == "json":
        emit(summary, "json")
    else:
        console.print(
            f"imported {report.files} file(s): {report.messages} messages, {report.accepted} stored, "
            f"{report.duplicates} already stored, {report.quarantined} quarantined"
            + (" (see `polku quarantine list`)" if report.quarantined else "")
        )


async def _import(
    files: list[Path],
    data_dir: Path,
    workspace: str,
    source_name: str,
    channel: str | None,
    file_format: str,
    mapping: CsvMapping,
) -> ImportReport:
    report = ImportReport()
    async with open_store(data_dir, create=True) as (_log, catalog, ingestor):
        await catalog.workspace(workspace)
        source = await catalog.source(workspace, source_name)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not console.is_terminal,
        ) as progress:
            for path in files:
                task = progress.add_task(path.name, total=file_size(path))

                def advance(advanced: int, task: TaskID = task) -> None:
                    progress.advance(task, advanced)

                kind = detect_format(path) if file_format == "auto" else file_format
                await import_file(
                    ingestor,
                    path,
                    source=source,
                    file_format=kind,
                    channel=channel,
                    mapping=mapping,
                    progress=advance,
                    report=report,
                )
    return report


def _millis(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return int(parse_time(value, name).timestamp() * 1000)
    except Exception:
        raise InvalidInput(f"--{name} must be an ISO 8601 time", field=name) from None


@export_app.command("events")
def export_events(
    data_dir: DataDir = Path("polku-data"),
    workspace: Annotated[str, typer.Option(help="Workspace to export.")] = DEFAULT_WORKSPACE,
    out: Annotated[Path | None, typer.Option(help="File to write (default: stdout).")] = None,
    identifier: Annotated[str | None, typer.Option(help="Only events of this userId or anonymousId.")] = None,
    message_type: Annotated[str | None, typer.Option("--type", help="Only this message type.")] = None,
    name: Annotated[str | None, typer.Option(help="Only this event / page name.")] = None,
    channel: Annotated[str | None, typer.Option(help="Only this channel.")] = None,
    since: Annotated[str | None, typer.Option(help="Earliest timestamp (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Latest timestamp, exclusive (ISO 8601).")] = None,
) -> None:
    """Write events as JSONL (Segment shape with messageId, channel and seq), in log order."""
    query = EventQuery(
        workspace=workspace,
        identifier=identifier,
        type=message_type,
        name=name,
        channel=channel,
        since_ms=_millis(since, "since"),
        until_ms=_millis(until, "until"),
        limit=5000,
    )
    count = asyncio.run(_export(data_dir, query, out))
    console.print(f"exported {count} events" + (f" to {out}" if out else ""))


async def _export(data_dir: Path, query: EventQuery, out: Path | None) -> int:
    encoder = msgspec.json.Encoder()
    count = 0
    async with open_store(data_dir) as (log, _catalog, _ingestor):
        handle = out.open("wb") if out is not None else sys.stdout.buffer
        try:
            while True:
                page = await log.query(query)
                lines = [encoder.encode({"seq": s.seq, **msgspec.to_builtins(s.event)}) for s in page.events]
                if lines:
                    handle.write(b"\n".join(lines) + b"\n")
                count += len(lines)
                if page.next_cursor is None:
                    break
                query = msgspec.structs.replace(query, after_seq=page.next_cursor)
        finally:
            if out is not None:
                handle.close()
            else:
                handle.flush()
    return count
