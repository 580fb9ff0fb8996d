"""What the event log's writer does inside one group commit.

Work reaches the writer as data, not callables (``Append``, ``Resolve``), so that
the same commit logic runs in a writer thread or in a writer process (see
``writer.py`` and ``writer_process.py``). A commit runs ``BEGIN IMMEDIATE``, one
``PRAGMA data_version``, one probe of the merged messageIds, the appends as a few
multi-row ``INSERT``s, the resolutions, maybe a merge step, and ``COMMIT`` — the
same handful of statements however many requests it carries. (Each statement
hands the GIL over and has to win it back, which cost more than SQLite's own work
when that was one ``executemany`` row or one savepoint per request.)

This module imports nothing beyond the standard library, msgspec and the store's
own modules: the writer process starts from it.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

import msgspec

from polku.adapters.sqlite.dedupe import Deduplicator
from polku.core.errors import Conflict, NotFound, PolkuError, Unavailable

INSERT_EVENTS: Final = (
    "INSERT INTO events (workspace, message_id, type, name, user_id, anonymous_id, channel, ts_ms, received_ms, body)"
    " VALUES "
)
EVENT_VALUES: Final = "(?,?,?,?,?,?,?,?,?,?)"
EVENT_COLUMNS: Final = 10
INSERT_QUARANTINE: Final = (
    "INSERT INTO quarantine (workspace, source, received_ms, code, reason, body) VALUES (?, ?, ?, ?, ?, ?)"
)

# Rows go in as multi-row INSERTs of these sizes (a few cached statements), not
# ``executemany``, which runs one statement per row. 1,024 rows x 10 columns stays
# under SQLite's limit of 32,766 parameters.
_INSERT_SIZES: Final = (1024, 256, 64, 16, 4, 1)
_INSERT_SQL: Final = {size: INSERT_EVENTS + ",".join([EVENT_VALUES] * size) for size in _INSERT_SIZES}


class Append(msgspec.Struct, tag=True):
    """One request's (or file chunk's) events, already encoded as table rows and
    flattened (``EVENT_COLUMNS`` values per event), with their messageIds and the
    quarantine rows of its rejections."""

    workspace: str
    message_ids: list[str]
    parameters: list[Any]
    rejected: list[tuple[str, str, int, str, str, bytes]] = []


class Resolve(msgspec.Struct, tag=True):
    """Mark a quarantine entry resubmitted (appending ``append``) or discarded."""

    workspace: str
    entry_id: int
    resolved_ms: int
    append: Append | None = None


Payload = Append | Resolve


class Outcome(msgspec.Struct, array_like=True):
    """What one payload did: events stored, duplicates and quarantined, or the
    error that refused it (``NotFound``/``Conflict`` for a resolution)."""

    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    error: str | None = None
    message: str | None = None


_ERRORS: Final[dict[str, type[PolkuError]]] = {"not_found": NotFound, "conflict": Conflict}


def raise_for(outcome: Outcome) -> None:
    """Raise the error an ``Outcome`` carries, if any."""
    if outcome.error is not None:
        raise _ERRORS[outcome.error](outcome.message or "")


def insert_events(connection: sqlite3.Connection, parameters: list[Any]) -> int | None:
    """Insert rows flattened into one parameter list; the seq of the last one."""
    rows = len(parameters) // EVENT_COLUMNS
    start = 0
    last: int | None = None
    for size in _INSERT_SIZES:
        while rows - start >= size:
            last = connection.execute(
                _INSERT_SQL[size], parameters[start * EVENT_COLUMNS : (start + size) * EVENT_COLUMNS]
            ).lastrowid
            start += size
    return last


class Transaction:
    """Deduplication and the payloads of one group commit, on the writer's connection."""

    def __init__(self, dedupe: Deduplicator) -> None:
        self.dedupe = dedupe

    def commit(self, connection: sqlite3.Connection, payloads: list[Payload]) -> list[Outcome]:
        """Run ``payloads`` in one transaction and commit it. A failure fails them
        all: the transaction is rolled back and ``Unavailable`` raised."""
        try:
            connection.execute("BEGIN IMMEDIATE")
            self.dedupe.begin(connection)
            outcomes = self.run(connection, payloads)
            self.dedupe.before_commit(connection)
            connection.execute("COMMIT")
        except BaseException as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            self.dedupe.rolled_back()
            raise Unavailable(f"the event log could not commit: {error}", retry_after=1) from error
        self.dedupe.committed()
        return outcomes

    def run(self, connection: sqlite3.Connection, payloads: list[Payload]) -> list[Outcome]:
        """Run the payloads in order: consecutive appends together."""
        outcomes: list[Outcome] = []
        index = 0
        while index < len(payloads):
            payload = payloads[index]
            if isinstance(payload, Resolve):
                outcomes.append(self._resolve(connection, payload))
                index += 1
                continue
            end = index
            while end < len(payloads) and isinstance(payloads[end], Append):
                end += 1
            appends = [p for p in payloads[index:end] if isinstance(p, Append)]
            for append, accepted in zip(appends, self._store(connection, appends), strict=True):
                if append.rejected:
                    connection.executemany(INSERT_QUARANTINE, append.rejected)
                outcomes.append(
                    Outcome(
                        accepted=accepted,
                        duplicates=len(append.message_ids) - accepted,
                        quarantined=len(append.rejected),
                    )
                )
            index = end
        return outcomes

    def _store(self, connection: sqlite3.Connection, appends: list[Append]) -> list[int]:
        """Insert the events of ``appends`` that are new; how many each one stored."""
        dedupe = self.dedupe
        admitted: list[list[bool]] = []
        candidates: dict[str, list[str]] = {}
        for append in appends:
            flags, maybe_stored = dedupe.admit(append.workspace, append.message_ids)
            admitted.append(flags)
            if maybe_stored:
                candidates.setdefault(append.workspace, []).extend(maybe_stored)
        stored = {workspace: dedupe.stored(connection, workspace, ids) for workspace, ids in candidates.items()}
        parameters: list[Any] = []
        counts: list[int] = []
        for append, flags in zip(appends, admitted, strict=True):
            found = stored.get(append.workspace)
            if found:
                flags = [new and m not in found for m, new in zip(append.message_ids, flags, strict=True)]
            count = sum(flags)
            if count == len(flags):
                parameters.extend(append.parameters)
            else:
                for index, new in enumerate(flags):
                    if new:
                        parameters.extend(append.parameters[index * EVENT_COLUMNS : (index + 1) * EVENT_COLUMNS])
            counts.append(count)
        if parameters:
            dedupe.inserted(insert_events(connection, parameters))
        return counts

    def _resolve(self, connection: sqlite3.Connection, resolve: Resolve) -> Outcome:
        found = connection.execute(
            "SELECT status FROM quarantine WHERE workspace = ? AND id = ?", (resolve.workspace, resolve.entry_id)
        ).fetchone()
        if found is None:
            return Outcome(error="not_found", message=f"quarantine entry {resolve.entry_id} does not exist")
        if found[0] != "open":
            return Outcome(error="conflict", message=f"quarantine entry {resolve.entry_id} is already {found[0]}")
        status = "resubmitted" if resolve.append is not None else "discarded"
        connection.execute(
            "UPDATE quarantine SET status = ?, resolved_ms = ? WHERE id = ?",
            (status, resolve.resolved_ms, resolve.entry_id),
        )
        if resolve.append is None:
            return Outcome()
        (accepted,) = self._store(connection, [resolve.append])
        return Outcome(accepted=accepted, duplicates=1 - accepted)
