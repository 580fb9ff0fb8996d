"""The processor's reads of the catalog on PostgreSQL: the workspaces' stored
configurations and the deployed journeys and surveys (the ``LogReader`` methods
``SqliteLogReader`` answers from ``polku.db``). Synchronous, like the processor."""

from __future__ import annotations

from typing import Any, Final, LiteralString

import psycopg
from psycopg_pool import ConnectionPool

DEFINITIONS: Final = (
    "SELECT d.workspace, d.id, d.version, h.status, d.body FROM definitions d JOIN definition_heads h "
    "ON h.kind = d.kind AND h.workspace = d.workspace AND h.id = d.id WHERE d.kind = %s"
)


class CatalogReads:
    def __init__(self, pool: ConnectionPool[psycopg.Connection[Any]]) -> None:
        self.pool = pool

    def configs(self) -> dict[str, bytes]:
        with self.pool.connection() as connection:
            return {
                workspace: bytes(body) for workspace, body in connection.execute("SELECT id, config FROM workspaces")
            }

    def journeys(self) -> list[tuple[str, str, int, str, str]]:
        """(workspace, id, version, status of the journey, body) of every stored version."""
        return self._definitions(DEFINITIONS + " ORDER BY d.workspace, d.id, d.version", "journey")

    def surveys(self) -> list[tuple[str, str, int, str, str]]:
        """(workspace, id, version, status, body) of every survey's current version."""
        return self._definitions(DEFINITIONS + " AND h.version = d.version ORDER BY d.workspace, d.id", "survey")

    def journeys_token(self) -> tuple[object, ...]:
        """Changes whenever a definition is deployed or a head's status changes."""
        with self.pool.connection() as connection:
            row = connection.execute(
                "SELECT (SELECT count(*) FROM definitions), count(*), coalesce(sum(revision), 0) FROM definition_heads"
            ).fetchone()
        return tuple(row) if row else ()

    def _definitions(self, query: LiteralString, kind: str) -> list[tuple[str, str, int, str, str]]:
        with self.pool.connection() as connection:
            rows = connection.execute(query, (kind,)).fetchall()
        return [(str(w), str(i), int(v), str(status), str(body)) for w, i, v, status, body in rows]
