"""``polku import``: files through the same validation, quarantine and
deduplication as the HTTP API. Parsing the next chunk overlaps the commit of the
previous one (SQLite releases the GIL while it writes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from polku.connectors.files import Chunk, CsvMapping, content_id, csv_chunks, jsonl_chunks
from polku.core.events import Event, Rejection, normalize_or_reject
from polku.core.workspace import Source
from polku.engine.ingest import Ingestor, IngestResult


@dataclass
class ImportReport:
    files: int = 0
    messages: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0

    def add(self, result: IngestResult, messages: int) -> None:
        self.messages += messages
        self.accepted += result.accepted
        self.duplicates += result.duplicates
        self.quarantined += len(result.rejected)


def prepare_chunk(
    chunk: Chunk, *, source: Source, channel: str, path: Path, ingestor: Ingestor
) -> tuple[list[Event], list[Rejection]]:
    received_at = ingestor.clock()
    events: list[Event] = []
    rejections: list[Rejection] = []
    for message, line in zip(chunk.messages, chunk.lines, strict=True):
        outcome = normalize_or_reject(
            message,
            index=line,
            received_at=received_at,
            default_channel=channel,
            source=source.name,
            new_message_id=content_id(message),
        )
        if isinstance(outcome, Event):
            events.append(outcome)
        else:
            rejections.append(msgspec.structs.replace(outcome, reason=f"{path.name} line {line}: {outcome.reason}"))
    return events, rejections


async def import_file(
    ingestor: Ingestor,
    path: Path,
    *,
    source: Source,
    file_format: str,
    channel: str | None = None,
    mapping: CsvMapping | None = None,
    progress: Callable[[int], None] = lambda advanced: None,
    report: ImportReport | None = None,
) -> ImportReport:
    report = report or ImportReport()
    chunks: Iterator[Chunk] = (
        jsonl_chunks(path) if file_format == "jsonl" else csv_chunks(path, mapping or CsvMapping())
    )
    in_flight: asyncio.Task[IngestResult] | None = None
    in_flight_size = 0
    for chunk in chunks:
        events, rejections = prepare_chunk(
            chunk, source=source, channel=channel or source.default_channel, path=path, ingestor=ingestor
        )
        if in_flight is not None:
            report.add(await in_flight, in_flight_size)
        in_flight = asyncio.create_task(ingestor.append(source, events, rejections, ingestor.clock()))
        in_flight_size = len(chunk.messages)
        # Let the append reach the writer's queue now, so that the commit overlaps
        # the parsing of the next chunk instead of following it.
        await asyncio.sleep(0)
        progress(chunk.bytes_read)
    if in_flight is not None:
        report.add(await in_flight, in_flight_size)
    report.files += 1
    return report
