"""A PostgreSQL connection that runs the embedded reports' SQL: their statements are
written for SQLite with ``?`` placeholders, over tables the state schema names and
shapes the same (``state_schema``). Only for statements whose text holds no other
``?`` and no SQLite-only function; ``polku.engine.journey_reports`` is kept to that."""

from __future__ import annotations

from typing import Any

import psycopg

from polku.adapters.postgres.schema import check_schema, check_url


class QmarkConnection:
    def __init__(self, url: str, *, schema: str) -> None:
        self.connection: psycopg.Connection[Any] = psycopg.connect(
            check_url(url), autocommit=True, options=f"-c search_path={check_schema(schema)}"
        )

    def execute(self, sql: str, parameters: Any = (), /) -> psycopg.Cursor[Any]:
        return self.connection.execute(sql.replace("?", "%s"), parameters)

    def close(self) -> None:
        self.connection.close()
