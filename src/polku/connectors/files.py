"""File import: JSONL of Segment messages, and CSV with a column mapping.

Each file becomes chunks of message bytes for ``Ingestor.prepare``. A message
without a ``messageId`` gets one derived from its content, so importing the same
file twice stores nothing twice."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import msgspec

from polku.core.errors import ConfigError
from polku.core.events import MESSAGE_TYPES

CHUNK: Final = 5_000
_encode: Final = msgspec.json.Encoder().encode

SEGMENT_FIELDS: Final = frozenset(
    {"userId", "anonymousId", "event", "name", "timestamp", "messageId", "groupId", "previousId", "category"}
)


@dataclass(slots=True)
class Chunk:
    """Messages with their 1-based line (or row) numbers and content-derived ids."""

    messages: list[bytes] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    bytes_read: int = 0


def content_id(message: bytes) -> Callable[[], str]:
    """A messageId made from the message's bytes, computed only when needed."""
    return lambda: "imp-" + hashlib.sha256(message).hexdigest()[:32]


def jsonl_chunks(path: Path, size: int = CHUNK) -> Iterator[Chunk]:
    chunk = Chunk()
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            chunk.bytes_read += len(line)
            stripped = line.strip()
            if not stripped:
                continue
            chunk.messages.append(stripped)
            chunk.lines.append(number)
            if len(chunk.messages) >= size:
                yield chunk
                chunk = Chunk()
    if chunk.messages or chunk.bytes_read:
        yield chunk


@dataclass(frozen=True, slots=True)
class CsvMapping:
    """``columns`` maps a Segment field (``userId``, ``event``, ``timestamp``, …) to a
    CSV column; unmapped columns go to ``properties`` (``traits`` for identify and
    group). ``event`` may instead be a constant for the whole file."""

    message_type: str = "track"
    columns: dict[str, str] = field(default_factory=dict)
    event: str | None = None

    @classmethod
    def parse(cls, message_type: str, pairs: list[str], event: str | None) -> CsvMapping:
        if message_type not in MESSAGE_TYPES:
            raise ConfigError(f"--type {message_type!r} is not one of {sorted(MESSAGE_TYPES)}", field="type")
        columns: dict[str, str] = {}
        for pair in pairs:
            target, sep, column = pair.partition("=")
            if not sep or not column:
                raise ConfigError(f"--map {pair!r}: write FIELD=COLUMN, e.g. userId=customer_id", field="map")
            if target not in SEGMENT_FIELDS and not target.startswith(("properties.", "traits.", "context.")):
                raise ConfigError(
                    f"--map {pair!r}: {target!r} is not one of {sorted(SEGMENT_FIELDS)} "
                    "or properties.X / traits.X / context.X",
                    field="map",
                )
            columns[target] = column
        return cls(message_type=message_type, columns=columns, event=event)


def _row_message(row: dict[str, str], mapping: CsvMapping) -> dict[str, Any]:
    message: dict[str, Any] = {"type": mapping.message_type}
    if mapping.event is not None:
        message["event"] = mapping.event
    bag_name = "traits" if mapping.message_type in ("identify", "group") else "properties"
    used = set()
    for target, column in mapping.columns.items():
        used.add(column)
        value = row.get(column)
        if value in (None, ""):
            continue
        if "." in target:
            parent, _, key = target.partition(".")
            message.setdefault(parent, {})[key] = value
        else:
            message[target] = value
    extra = {k: v for k, v in row.items() if k not in used and k is not None and v not in (None, "")}
    if extra:
        message.setdefault(bag_name, {}).update(extra)
    return message


def csv_chunks(path: Path, mapping: CsvMapping, size: int = CHUNK) -> Iterator[Chunk]:
    counted = [0]

    def lines(handle: io.TextIOBase) -> Iterator[str]:
        for line in handle:
            counted[0] += len(line)  # characters: close enough to bytes for a progress bar
            yield line

    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(lines(handle))
        header = reader.fieldnames or []
        missing = [column for column in mapping.columns.values() if column not in header]
        if missing:
            raise ConfigError(
                f"{path}: no column named {', '.join(map(repr, missing))} (columns: {header})", file=str(path)
            )
        chunk = Chunk()
        reported = 0
        for row in reader:
            chunk.messages.append(_encode(_row_message(row, mapping)))
            chunk.lines.append(reader.line_num)
            if len(chunk.messages) >= size:
                chunk.bytes_read, reported = counted[0] - reported, counted[0]
                yield chunk
                chunk = Chunk()
        chunk.bytes_read = counted[0] - reported
        yield chunk


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    with path.open("rb") as handle:
        head = handle.read(1)
    return "jsonl" if head in (b"{", b"[") else "csv"


def file_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


__all__ = ["Chunk", "CsvMapping", "content_id", "csv_chunks", "detect_format", "file_size", "jsonl_chunks"]
