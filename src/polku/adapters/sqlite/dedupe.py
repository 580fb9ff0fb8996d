"""Exact ``(workspace, messageId)`` deduplication without a random-order index on
the append path.

A unique index on ``events (workspace, message_id)`` costs about a page write per
event: SDKs send random UUIDs, so each new id lands on a different leaf of the
index, and every commit rewrites each leaf it touched (into the WAL, then again at
the checkpoint). It made an append 3-4x dearer, and more so as the table grows
(``benchmarks/RESULTS.md``). So the index is kept in two levels, like an LSM tree:

- ``message_ids`` (``WITHOUT ROWID``, key ``(workspace, message_id)``) holds the ids
  of every event up to ``dedupe_state.merged_seq``; the append path only reads it.
- The ids of later events are held in memory (``recent``), loaded from ``events``
  (``seq > merged_seq``) when the store opens. ``events.seq`` is ``AUTOINCREMENT``,
  so a seq is never reused, even after deletes.

An id is new when it is neither in ``recent`` (nor earlier in the same
transaction) nor in ``message_ids``. Once ``recent`` holds ``merge_at`` ids, a merge
*generation* takes a sorted snapshot of them (20 ms for 100,000) and inserts it
into ``message_ids`` over the next commits, ``step`` ids per commit or twice what
the commit appends, whichever is more (so that a bulk import cannot outrun the
merge): sorted, each step touches a narrow run of leaves, so a leaf write carries
many ids instead of one. Once a step is committed its ids leave ``recent`` (they are
found in ``message_ids`` now); the last step advances ``merged_seq``. A crash loses
nothing: whatever is above ``merged_seq`` is read again on start, and an
interrupted generation is redone (``INSERT OR IGNORE``).

Other processes writing the same file (``polku import`` beside ``polku serve``) are
noticed through ``PRAGMA data_version``: when another connection has committed,
the events it added are read before this writer decides anything. Two writers'
generations may overlap; each only ever raises ``merged_seq`` to a seq below which
it has merged everything.

All methods run on the writer thread inside its open transaction; changes to the
in-memory state become final in ``committed`` and are dropped by ``rolled_back``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Final

# A key is ``workspace + "\0" + messageId``: workspace names cannot hold NUL, so
# the first one separates the two. Strings, not tuples: they hash once and sort
# fast, and a generation sorts 100,000 of them (20 ms; tuples took 120 ms).
_SEP: Final = "\0"

_SIZES: Final = (4096, 1024, 256, 64, 16, 4, 1)
_INSERT_MERGED: Final = {
    size: "INSERT OR IGNORE INTO message_ids (workspace, message_id) VALUES " + ",".join(["(?,?)"] * size)
    for size in _SIZES
}
_PROBE: Final = {
    size: "SELECT message_id FROM message_ids WHERE workspace = ? AND message_id IN (" + ",".join("?" * size) + ")"
    for size in _SIZES
}


class Deduplicator:
    def __init__(self, *, merge_at: int = 100_000, step: int = 4096) -> None:
        self.merge_at = merge_at
        self.step = step
        self.recent: set[str] = set()
        self._staged: set[str] = set()
        self._last_seen = 0
        self._staged_last_seen = 0
        self._data_version = -1
        self._generation: list[str] | None = None
        self._generation_top = 0
        self._cursor = 0
        self._staged_cursor = 0

    # -- the transaction's life ---------------------------------------------

    def load(self, connection: sqlite3.Connection) -> None:
        """Read the ids above ``merged_seq`` (when the store opens)."""
        (merged,) = connection.execute("SELECT merged_seq FROM dedupe_state").fetchone()
        self.recent = set()
        self._last_seen = merged
        self._catch_up(connection)
        self._staged_last_seen = self._last_seen

    def begin(self, connection: sqlite3.Connection) -> None:
        """After ``BEGIN IMMEDIATE``: see other processes' commits; maybe start a merge."""
        (version,) = connection.execute("PRAGMA data_version").fetchone()
        if version != self._data_version:
            self._catch_up(connection)
            self._data_version = version
        self._staged.clear()
        self._staged_last_seen = self._last_seen
        self._staged_cursor = self._cursor
        if self._generation is None and len(self.recent) >= self.merge_at:
            self._generation = sorted(self.recent)
            self._generation_top = self._last_seen
            self._cursor = self._staged_cursor = 0

    def admit(self, workspace: str, message_ids: list[str]) -> tuple[list[bool], list[str]]:
        """First pass, in memory: ``False`` for an id taken by an event above
        ``merged_seq`` or earlier in this transaction; ``True`` for the others, which
        are taken now. Also the admitted ids, which ``stored`` must look up in
        ``message_ids``. (A Bloom filter in front of that look-up was measured: at a
        million merged ids it saved the look-up's ~1.5 µs for most ids but cost
        ~0.5 µs a check and ~0.8 µs an insertion in Python, and seconds at start.)"""
        recent = self.recent
        staged = self._staged
        prefix = workspace + _SEP
        admitted: list[bool] = []
        new: list[str] = []
        for message_id in message_ids:
            key = prefix + message_id
            if key in recent or key in staged:
                admitted.append(False)
            else:
                staged.add(key)
                admitted.append(True)
                new.append(message_id)
        return admitted, new

    def stored(self, connection: sqlite3.Connection, workspace: str, message_ids: list[str]) -> set[str]:
        """Which of ``message_ids`` the merged level holds."""
        found: set[str] = set()
        start = 0
        for size in _SIZES:
            while len(message_ids) - start >= size:
                parameters = [workspace, *message_ids[start : start + size]]
                found.update(row[0] for row in connection.execute(_PROBE[size], parameters))
                start += size
        return found

    def inserted(self, last_seq: int | None) -> None:
        """The events admitted so far are stored, the last one at ``last_seq``."""
        if last_seq is not None and last_seq > self._staged_last_seen:
            self._staged_last_seen = last_seq

    def before_commit(self, connection: sqlite3.Connection) -> None:
        """One merge step, if a generation is under way."""
        generation = self._generation
        if generation is None:
            return
        start = self._staged_cursor
        # At least twice what this commit adds, so that merging outpaces appending
        # and a generation ends (a bulk import appends 5,000+ per commit).
        end = min(len(generation), start + max(self.step, 2 * len(self._staged)))
        for size in _SIZES:
            while end - start >= size:
                parameters = [part for key in generation[start : start + size] for part in key.split(_SEP, 1)]
                connection.execute(_INSERT_MERGED[size], parameters)
                start += size
        if end == len(generation):
            connection.execute("UPDATE dedupe_state SET merged_seq = max(merged_seq, ?)", (self._generation_top,))
        self._staged_cursor = end

    def committed(self) -> None:
        self.recent |= self._staged
        self._staged.clear()
        self._last_seen = self._staged_last_seen
        if self._generation is not None and self._staged_cursor > self._cursor:
            # Merged ids are found in ``message_ids`` now; memory lets them go step
            # by step (a crash before ``merged_seq`` moves only reloads them).
            self.recent.difference_update(self._generation[self._cursor : self._staged_cursor])
        self._cursor = self._staged_cursor
        if self._generation is not None and self._cursor == len(self._generation):
            self._generation = None
            self._cursor = self._staged_cursor = 0

    def rolled_back(self) -> None:
        self._staged.clear()
        self._staged_last_seen = self._last_seen
        self._staged_cursor = self._cursor
        self._data_version = -1  # look at the file again before trusting memory

    # -- helpers ------------------------------------------------------------

    def _catch_up(self, connection: sqlite3.Connection) -> None:
        rows: Iterable[tuple[int, str, str]] = connection.execute(
            "SELECT seq, workspace, message_id FROM events WHERE seq > ? ORDER BY seq", (self._last_seen,)
        ).fetchall()
        for seq, workspace, message_id in rows:
            self.recent.add(workspace + _SEP + message_id)
            self._last_seen = seq
