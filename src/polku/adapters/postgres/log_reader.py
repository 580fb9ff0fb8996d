"""``LogReader`` on the scale-out deployment: event bodies from the ``events`` index
that the workers fill in their commits (docs/scale-out.md), and the catalog's
configurations and definitions (``CatalogReads``). Synchronous, for the API's read
threads (``ProfileService``); sequences are the stream's, as in the state's
timeline rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from polku.adapters.postgres.catalog_reads import CatalogReads
from polku.adapters.postgres.schema import DEFAULT_SCHEMA, check_schema, check_url


class PostgresLogReader(CatalogReads):
    def __init__(self, url: str, *, schema: str = DEFAULT_SCHEMA, max_size: int = 2) -> None:
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            check_url(url),
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": True, "options": f"-c search_path={check_schema(schema)}"},
            name=f"polku-log-reader-{schema}",
            # After a restart of PostgreSQL, dead connections are replaced as they
            # leave the pool instead of failing one read each.
            check=ConnectionPool.check_connection,
            open=False,
        )
        try:
            pool.open(wait=True, timeout=30)
        except BaseException:
            pool.close()
            raise
        super().__init__(pool)

    def close(self) -> None:
        self.pool.close()

    def read(self, after_seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        with self.pool.connection() as connection:
            rows = connection.execute(
                "SELECT seq, workspace, body FROM events WHERE seq > %s ORDER BY seq LIMIT %s", (after_seq, limit)
            ).fetchall()
        return [(int(seq), str(workspace), bytes(body)) for seq, workspace, body in rows]

    def bodies(self, seqs: Sequence[int]) -> dict[int, bytes]:
        if not seqs:
            return {}
        with self.pool.connection() as connection:
            rows = connection.execute("SELECT seq, body FROM events WHERE seq = ANY(%s)", (list(seqs),)).fetchall()
        return {int(seq): bytes(body) for seq, body in rows}

    def last_seq(self) -> int:
        with self.pool.connection() as connection:
            row = connection.execute("SELECT max(seq) FROM events").fetchone()
        return int(row[0] or 0) if row else 0
