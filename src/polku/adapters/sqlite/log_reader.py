"""The processor's side of the embedded event log: read in log order after a
checkpoint, and fetch bodies by position (a merge folds the merged history again).
Read-only: the processor appends its own events through ``SqliteEventLog``."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import msgspec

from polku.adapters.sqlite.schema import DATABASE_FILE, connect, open_database
from polku.core.workspace import WorkspaceConfig

_decode_config = msgspec.json.Decoder(WorkspaceConfig).decode


class SqliteLogReader:
    def __init__(self, data_dir: Path) -> None:
        path = data_dir / DATABASE_FILE
        if not path.exists():
            open_database(data_dir).close()
        self.connection: sqlite3.Connection = connect(path, readonly=True)

    def close(self) -> None:
        self.connection.close()

    def read(self, after_seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        return self.connection.execute(
            "SELECT seq, workspace, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
        ).fetchall()

    def bodies(self, seqs: Sequence[int]) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        for start in range(0, len(seqs), 500):
            chunk = seqs[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for seq, body in self.connection.execute(f"SELECT seq, body FROM events WHERE seq IN ({marks})", chunk):
                found[seq] = body
        return found

    def last_seq(self) -> int:
        row = self.connection.execute("SELECT max(seq) FROM events").fetchone()
        return int(row[0] or 0)

    def configs(self) -> dict[str, bytes]:
        """Each workspace's configuration as stored (JSON), to notice changes cheaply."""
        return {
            workspace: bytes(body) for workspace, body in self.connection.execute("SELECT id, config FROM workspaces")
        }

    def journeys(self) -> list[tuple[str, str, int, str, str]]:
        """(workspace, id, version, status of the journey, body) of every stored version."""
        try:
            rows = self.connection.execute(
                "SELECT j.workspace, j.id, j.version, h.status, j.body FROM journeys j JOIN journey_heads h "
                "ON h.workspace = j.workspace AND h.id = j.id ORDER BY j.workspace, j.id, j.version"
            ).fetchall()
        except sqlite3.OperationalError:  # a store the server has not migrated yet
            return []
        return [(str(w), str(i), int(v), str(status), str(body)) for w, i, v, status, body in rows]

    def journeys_token(self) -> tuple[object, ...]:
        """Changes whenever a journey or survey is deployed or its status changes (polled)."""
        token: list[object] = []
        for table, heads in (("journeys", "journey_heads"), ("surveys", "survey_heads")):
            try:
                deployed = self.connection.execute(f"SELECT coalesce(max(rowid), 0) FROM {table}").fetchone()
                counts = self.connection.execute(f"SELECT count(*), coalesce(sum(revision), 0) FROM {heads}").fetchone()
            except sqlite3.OperationalError:  # a store the server has not migrated yet
                token.extend((0, 0, 0))
                continue
            token.extend((int(deployed[0]), int(counts[0]), int(counts[1])))
        return tuple(token)

    def surveys(self) -> list[tuple[str, str, int, str, str]]:
        """(workspace, id, version, status, body) of every survey's current version."""
        try:
            rows = self.connection.execute(
                "SELECT s.workspace, s.id, s.version, h.status, s.body FROM surveys s JOIN survey_heads h "
                "ON h.workspace = s.workspace AND h.id = s.id AND h.version = s.version ORDER BY s.workspace, s.id"
            ).fetchall()
        except sqlite3.OperationalError:
            return []
        return [(str(w), str(i), int(v), str(status), str(body)) for w, i, v, status, body in rows]


def decode_config(body: bytes) -> WorkspaceConfig:
    return _decode_config(body)
