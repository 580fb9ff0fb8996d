"""The SQLite event log's write path: two-level deduplication (``dedupe.py``) stays
exact across merge generations, restarts, rolled-back commits and a second writer
on the same file; the writer process and the writer thread behave alike."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from polku.adapters.sqlite import SqliteEventLog
from polku.adapters.sqlite.dedupe import Deduplicator
from polku.adapters.sqlite.schema import DATABASE_FILE, connect, open_database
from polku.adapters.sqlite.transaction import EVENT_COLUMNS, Append, Transaction
from polku.core.errors import Unavailable
from polku.core.events import Event
from polku.ports import AppendBatch, EventQuery


def append(workspace: str, ids: list[str]) -> Append:
    parameters: list[object] = []
    for message_id in ids:
        row = (workspace, message_id, "track", "E", "u", None, "web", 1, 1, b"{}")
        assert len(row) == EVENT_COLUMNS
        parameters.extend(row)
    return Append(workspace=workspace, message_ids=ids, parameters=parameters)


def stored_ids(path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(path / DATABASE_FILE) as connection:
        return [tuple(row) for row in connection.execute("SELECT workspace, message_id FROM events ORDER BY seq")]


class Writer:
    """A ``Transaction`` on its own connection, as one writer (process) uses it."""

    def __init__(self, path: Path, *, merge_at: int, step: int) -> None:
        self.connection = connect(path / DATABASE_FILE)
        self.dedupe = Deduplicator(merge_at=merge_at, step=step)
        self.dedupe.load(self.connection)
        self.transaction = Transaction(self.dedupe)

    def commit(self, *appends: Append) -> list[int]:
        return [outcome.accepted for outcome in self.transaction.commit(self.connection, list(appends))]


@pytest.fixture
def path(tmp_path: Path) -> Iterator[Path]:
    open_database(tmp_path).close()
    yield tmp_path


def test_duplicates_are_refused_across_merge_generations_and_restarts(path: Path) -> None:
    rng = random.Random(7)
    writer = Writer(path, merge_at=40, step=7)
    model: set[tuple[str, str]] = set()
    pool = [f"id-{n}" for n in range(400)]
    for round_ in range(120):
        appends = []
        for _ in range(rng.randint(1, 3)):
            workspace = rng.choice(["w1", "w2"])
            appends.append(append(workspace, [*rng.sample(pool, rng.randint(1, 12)), rng.choice(pool)]))
        expected = []
        for item in appends:
            new = 0
            for message_id in item.message_ids:
                if (item.workspace, message_id) not in model:
                    model.add((item.workspace, message_id))
                    new += 1
            expected.append(new)
        assert writer.commit(*appends) == expected
        if round_ % 37 == 36:  # a restart: memory is rebuilt from the file
            writer.connection.close()
            writer = Writer(path, merge_at=40, step=7)
    stored = stored_ids(path)
    assert len(stored) == len(set(stored)) == len(model)
    with sqlite3.connect(path / DATABASE_FILE) as connection:
        (merged,) = connection.execute("SELECT merged_seq FROM dedupe_state").fetchone()
        merged_ids = set(connection.execute("SELECT workspace, message_id FROM message_ids"))
        below = set(connection.execute("SELECT workspace, message_id FROM events WHERE seq <= ?", (merged,)))
    assert merged > 0, "the test should have completed merge generations"
    assert below <= merged_ids


def test_a_rolled_back_commit_takes_no_message_id(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = Writer(path, merge_at=3, step=2)
    assert writer.commit(append("w", ["a", "b", "c", "d"])) == [4]
    import polku.adapters.sqlite.transaction as transaction

    real = transaction.insert_events

    def failing(connection: sqlite3.Connection, parameters: list[object]) -> int | None:
        real(connection, parameters)
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(transaction, "insert_events", failing)
    with pytest.raises(Unavailable):
        writer.commit(append("w", ["e", "a"]))
    monkeypatch.setattr(transaction, "insert_events", real)
    # The failed commit stored nothing, so "e" is still new; the merge step that
    # was rolled back with it is redone.
    assert writer.commit(append("w", ["e", "a", "f"])) == [2]
    assert writer.commit(append("w", ["f", "g"])) == [1]
    assert [message_id for _, message_id in stored_ids(path)] == ["a", "b", "c", "d", "e", "f", "g"]


def test_two_writers_on_one_file_see_each_others_ids(path: Path) -> None:
    # `polku import` beside `polku serve`: two processes, one file.
    first = Writer(path, merge_at=5, step=3)
    second = Writer(path, merge_at=5, step=3)
    rng = random.Random(3)
    model: set[str] = set()
    for _ in range(80):
        writer = rng.choice([first, second])
        ids = [f"m{rng.randint(0, 150)}" for _ in range(rng.randint(1, 6))]
        expected = len({i for i in ids} - model)
        model |= set(ids)
        assert writer.commit(append("w", ids)) == [expected]
    stored = [message_id for _, message_id in stored_ids(path)]
    assert sorted(stored) == sorted(model)


def test_the_migration_moves_a_unique_index_store_to_two_levels(tmp_path: Path) -> None:
    from polku.adapters.sqlite.schema import MIGRATIONS, migrate

    connection = sqlite3.connect(tmp_path / DATABASE_FILE, isolation_level=None)
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip():
            connection.execute(statement)
    connection.execute("PRAGMA user_version = 1")
    for seq, message_id in ((5, "x"), (9, "y")):
        connection.execute(
            "INSERT INTO events (seq, workspace, message_id, type, channel, ts_ms, received_ms, body)"
            " VALUES (?, 'w', ?, 'track', 'web', 0, 0, x'7b7d')",
            (seq, message_id),
        )
    migrate(connection)
    connection.close()
    writer = Writer(tmp_path, merge_at=100, step=10)
    assert writer.commit(append("w", ["x", "z", "y"])) == [1]
    with sqlite3.connect(tmp_path / DATABASE_FILE) as check:
        seqs = [seq for (seq,) in check.execute("SELECT seq FROM events ORDER BY seq")]
        indexes = [name for (name,) in check.execute("SELECT name FROM sqlite_master WHERE type = 'index'")]
    assert seqs == [5, 9, 10]
    assert "events_message_id" not in indexes


def event(message_id: str) -> Event:
    return Event(
        message_id=message_id,
        type="track",
        channel="web",
        source="default",
        timestamp="2024-01-01T00:00:00.000Z",
        received_at="2024-01-01T00:00:01.000Z",
        user_id="u",
        event="E",
        properties={"n": 1},
    )


def batch(*ids: str) -> AppendBatch:
    return AppendBatch(workspace="w", source="default", received_ms=1, events=[event(message_id) for message_id in ids])


@pytest.mark.anyio
@pytest.mark.parametrize("writer", ["process", "thread"])
async def test_both_writers_deduplicate_and_survive_a_reopen(tmp_path: Path, writer: str) -> None:
    log = SqliteEventLog(tmp_path, writer=writer)  # type: ignore[arg-type]
    await log.start()
    try:
        first = await log.append(batch("a", "b", "a"))
        assert (first.accepted, first.duplicates) == (2, 1)
    finally:
        await log.close()
    log = SqliteEventLog(tmp_path, writer=writer)  # type: ignore[arg-type]
    await log.start()
    try:
        again = await log.append(batch("b", "c"))
        assert (again.accepted, again.duplicates) == (1, 1)
        page = await log.query(EventQuery(workspace="w"))
        assert [stored.event.message_id for stored in page.events] == ["a", "b", "c"]
    finally:
        await log.close()


@pytest.mark.anyio
async def test_a_dead_writer_process_fails_waiting_requests_and_is_restarted(tmp_path: Path) -> None:
    log = SqliteEventLog(tmp_path)
    await log.start()
    try:
        assert (await log.append(batch("a"))).accepted == 1
        process = log._writer._process  # type: ignore[union-attr]
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        await process.wait()
        for _ in range(100):  # the parent notices the closed socket
            try:
                result = await log.append(batch("a", "b"))
                break
            except Unavailable:
                continue
        else:
            pytest.fail("the writer was not restarted")
        assert (result.accepted, result.duplicates) == (1, 1)
    finally:
        await log.close()
