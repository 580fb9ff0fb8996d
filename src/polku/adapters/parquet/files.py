"""The Parquet files of the analytics consumer: one folder per day, files named by
the stream sequences they cover (docs/parquet.md).

::

    <out>/day=2026-11-23/part-<first>-<last>-<k>of<n>.parquet

A batch of messages (stream sequences ``first`` … ``last``) is written as one file
per day its events fall on, ``n`` files in all, each written to a hidden temporary
file, flushed to disk (``fsync``), renamed into place, and its folder flushed. The
names alone say what is written: a batch is complete when its ``n`` files are all
there, and the consumer goes on after the highest ``last`` of the complete batches
(``high_water``). Batches are written one after another, so only the last one can be
incomplete (the process died between two of its renames); ``recover`` deletes it
and the consumer writes the batch again. Nothing is ever written twice, and no
manifest has to agree with the files.
"""

from __future__ import annotations

import functools
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from polku.adapters.duckdb.analytics_store import EVENT_COLUMNS
from polku.core.errors import ConfigError

COLUMNS: Final = (
    *EVENT_COLUMNS,
    ("message_id", "VARCHAR"),
    ("user_id", "VARCHAR"),
    ("anonymous_id", "VARCHAR"),
    ("received_at", "TIMESTAMP"),
)
"""The embedded analytics store's columns (so its queries run unchanged), then the
identifiers as sent and when polku received the event. ``customer_id`` is filled
for polku's own events only (they name their customer); the reader resolves the
others (``reader.py``). The day is the folder, not a column of the file."""
NAMES: Final = tuple(name for name, _ in COLUMNS)
_FILE: Final = re.compile(r"part-(\d{20})-(\d{20})-(\d+)of(\d+)\.parquet")
_DAY: Final = re.compile(r"day=(\d{4}-\d{2}-\d{2})")
TEMPORARY_PREFIX: Final = ".part-"
DAY_MS: Final = 86_400_000


@dataclass(frozen=True, order=True)
class PartFile:
    """One written file: its batch's sequence range and its place among the batch's files."""

    first: int
    last: int
    index: int
    count: int
    day: str

    @property
    def name(self) -> str:
        return file_name(self.first, self.last, self.index, self.count)

    def path(self, out: Path) -> Path:
        return out / f"day={self.day}" / self.name


def file_name(first: int, last: int, index: int, count: int) -> str:
    """``part-<first>-<last>-<index>of<count>.parquet``, the sequences zero-padded to
    20 digits (a 64-bit sequence) so that names sort as the sequences do."""
    return f"part-{first:020d}-{last:020d}-{index}of{count}.parquet"


def parse_name(day_folder: str, name: str) -> PartFile | None:
    """The ``PartFile`` a folder and file name describe; ``None`` for anything else."""
    day = _DAY.fullmatch(day_folder)
    found = _FILE.fullmatch(name)
    if day is None or found is None:
        return None
    first, last, index, count = (int(group) for group in found.groups())
    if not (1 <= first <= last and 1 <= index <= count):
        return None
    return PartFile(first, last, index, count, day.group(1))


def day_of(ts_ms: int) -> str:
    """The UTC day of a time in milliseconds: ``YYYY-MM-DD``."""
    return _day_name(ts_ms // DAY_MS)


@functools.lru_cache(maxsize=4096)
def _day_name(day_number: int) -> str:
    return datetime.fromtimestamp(day_number * 86_400, UTC).strftime("%Y-%m-%d")


def scan(out: Path) -> list[PartFile]:
    """Every part file under ``out``, in order."""
    found: list[PartFile] = []
    if not out.is_dir():
        return found
    for folder in out.iterdir():
        if not folder.is_dir() or not _DAY.fullmatch(folder.name):
            continue
        for entry in folder.iterdir():
            part = parse_name(folder.name, entry.name)
            if part is not None:
                found.append(part)
    return sorted(found)


@dataclass(frozen=True)
class Written:
    """What the files hold: the highest sequence of the complete batches, and the
    files of an incomplete last batch (to delete before going on)."""

    high_water: int
    incomplete: tuple[PartFile, ...]
    files: int


def written(parts: Iterable[PartFile]) -> Written:
    """Read the state of the files from their names. A batch is complete when all of
    its ``count`` files are there. Only the highest batch may be incomplete (batches
    are written in order); an incomplete batch below a complete one means files were
    removed by hand, and the consumer refuses to guess (``ConfigError``)."""
    batches: dict[tuple[int, int], list[PartFile]] = defaultdict(list)
    for part in parts:
        batches[(part.first, part.last)].append(part)
    high_water = 0
    incomplete: list[PartFile] = []
    files = 0
    for (first, last), members in sorted(batches.items()):
        counts = {member.count for member in members}
        complete = len(counts) == 1 and {member.index for member in members} == set(range(1, members[0].count + 1))
        if first <= high_water:
            raise ConfigError(
                f"part files overlap: sequences {first}-{last} start at or below {high_water}, already written",
                field="out",
            )
        if incomplete:
            raise ConfigError(
                f"the batch of sequences {incomplete[0].first}-{incomplete[0].last} lacks files but later batches "
                "are complete: files were removed by hand; restore them, or move the folder away to write anew",
                field="out",
            )
        if complete:
            high_water = last
            files += len(members)
        else:
            incomplete = members
    return Written(high_water, tuple(incomplete), files)


def recover(out: Path) -> Written:
    """Make ``out`` hold complete batches only: delete temporary files and the files
    of an incomplete last batch (a crash between renames). Returns what is written
    (its ``incomplete``: the files deleted)."""
    out.mkdir(parents=True, exist_ok=True)
    for folder in out.iterdir():
        if folder.is_dir() and _DAY.fullmatch(folder.name):
            for entry in folder.iterdir():
                if entry.name.startswith(TEMPORARY_PREFIX):
                    entry.unlink()
    state = written(scan(out))
    for part in state.incomplete:
        part.path(out).unlink()
    if state.incomplete:
        _sync_dirs({part.path(out).parent for part in state.incomplete})
    return state


def split_by_day(days: Sequence[str]) -> dict[str, list[int]]:
    """Row positions per day, days in order (one file each)."""
    found: dict[str, list[int]] = defaultdict(list)
    for position, day in enumerate(days):
        found[day].append(position)
    return dict(sorted(found.items()))


def write_batch(out: Path, first: int, last: int, columns: Mapping[str, Sequence[Any]], days: Sequence[str]) -> int:
    """Write the rows of messages ``first`` … ``last`` (``columns``, one list per name
    of ``NAMES``; ``days[i]`` the day of row ``i``) as one file per day, each durable
    before the next is renamed into place. No rows writes nothing. Returns the number
    of files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    by_day = split_by_day(days)
    if not by_day:
        return 0
    table = pa.table({name: pa.array(columns[name], type=_arrow_type(kind)) for name, kind in COLUMNS})
    count = len(by_day)
    for index, (day, positions) in enumerate(by_day.items(), start=1):
        folder = out / f"day={day}"
        if not folder.is_dir():
            folder.mkdir(parents=True, exist_ok=True)
            _sync_dirs({out})
        rows = table if count == 1 else table.take(pa.array(positions, type=pa.int64()))
        name = file_name(first, last, index, count)
        temporary = folder / f"{TEMPORARY_PREFIX}{name[len('part-') :]}.{os.getpid()}.tmp"
        pq.write_table(rows, temporary, compression="zstd")
        _sync_file(temporary)
        os.replace(temporary, folder / name)
        _sync_dirs({folder})
    return count


def erase_rows(out: Path, seqs: Iterable[int]) -> int:
    """Write anew, without the rows of ``seqs``, every file whose sequence range holds
    one of them (an erasure, ``polku.core.erasure``): temporary file, ``fsync``,
    rename, as a batch is written. A file left with no rows stays, empty: the files
    of a batch say it is complete. Returns the rows removed."""
    import bisect

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    wanted = sorted(set(seqs))
    removed = 0
    for part in scan(out):
        at = bisect.bisect_left(wanted, part.first)
        if at == len(wanted) or wanted[at] > part.last:
            continue
        path = part.path(out)
        table = pq.read_table(path)
        kept = table.filter(pc.invert(pc.is_in(table["seq"], value_set=pa.array(wanted, type=pa.int64()))))
        if kept.num_rows == table.num_rows:
            continue
        removed += table.num_rows - kept.num_rows
        _replace(path, part, kept)
    return removed


def expire_rows(out: Path, workspace: str, condition: str, parameters: Sequence[Any], before_day: str) -> int:
    """Retention (``polku.core.retention``): write anew, without the workspace's rows
    that ``condition`` (SQL over the columns, ``epoch_ms(ts)`` for the time) says
    expired, every file of a day before ``before_day`` (``YYYY-MM-DD``; later days
    hold nothing expired). Returns the rows removed."""
    import duckdb
    import pyarrow.parquet as pq

    removed = 0
    with duckdb.connect() as connection:
        for part in scan(out):
            if part.day >= before_day:
                continue
            path = part.path(out)
            table = pq.read_table(path)
            connection.register("part", table)
            kept: Any = connection.execute(
                f"SELECT * FROM part WHERE NOT coalesce(workspace = ? AND ({condition}), FALSE)",
                [workspace, *parameters],
            ).to_arrow_table()
            connection.unregister("part")
            if kept.num_rows == table.num_rows:
                continue
            removed += table.num_rows - kept.num_rows
            _replace(path, part, kept.cast(table.schema))
    return removed


def _replace(path: Path, part: PartFile, table: Any) -> None:
    """Put ``table`` in place of a part file: temporary file, ``fsync``, rename."""
    import pyarrow.parquet as pq

    temporary = path.with_name(f"{TEMPORARY_PREFIX}{part.name[len('part-') :]}.{os.getpid()}.rewrite.tmp")
    pq.write_table(table, temporary, compression="zstd")
    _sync_file(temporary)
    os.replace(temporary, path)
    _sync_dirs({path.parent})


def _sync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_dirs(folders: Iterable[Path]) -> None:
    """Flush directory entries (a rename or a new folder) to disk."""
    for folder in folders:
        descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _arrow_type(kind: str) -> Any:
    import pyarrow as pa

    return {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "DOUBLE": pa.float64(), "TIMESTAMP": pa.timestamp("ms")}[kind]
