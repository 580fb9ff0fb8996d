"""``polku import``: files through the same validation, quarantine and
deduplication as the HTTP API. Parsing the next chunk overlaps the commit of the
previous one (in the event log's writer process)."""

from __future__ import annotations

import asyncio
import gc
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


@contextmanager
def bulk_gc() -> Iterator[None]:
    """Garbage collection tuned for bulk parsing, undone on exit. A chunk's parsed
    messages (dicts of dicts) stay alive until the chunk is encoded, and with the
    default thresholds the collector traverses them again and again: about a
    quarter of the parse time (benchmarks/RESULTS.md). Frozen: what existed before
    the import; collected: every 100,000 allocations instead of every 700."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


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
    # Up to three chunks in flight: while the writer commits one, the next is
    # already queued for it, and this process parses the one after.
    in_flight: deque[tuple[asyncio.Task[IngestResult], int]] = deque()
    with bulk_gc():
        for chunk in chunks:
            events, rejections = prepare_chunk(
                chunk, source=source, channel=channel or source.default_channel, path=path, ingestor=ingestor
            )
            task = asyncio.create_task(ingestor.append(source, events, rejections, ingestor.clock()))
            in_flight.append((task, len(chunk.messages)))
            # Let the append reach the writer now, not when the next chunk is parsed.
            await asyncio.sleep(0)
            if len(in_flight) > 2:
                done, size = in_flight.popleft()
                report.add(await done, size)
            progress(chunk.bytes_read)
        while in_flight:
            done, size = in_flight.popleft()
            report.add(await done, size)
    report.files += 1
    return report
