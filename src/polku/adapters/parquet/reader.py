"""Reading the Parquet files with DuckDB (docs/parquet.md).

``connect(out)`` opens an in-memory DuckDB connection with a view ``events`` over
``read_parquet('<out>/day=*/*.parquet', hive_partitioning = true)`` that has the
embedded analytics store's columns, so its analyses run unchanged over the files.

**Who an event belongs to is decided when it is read.** The files are immutable and
an identity merge can move a customer's whole history long after it was written, so
the files keep the identifier that named each event (``anchor``) and the view
resolves it through an ``identities`` table: ``load_identities`` fills it from the
PostgreSQL state (each identifier's owner, redirects followed, as the workers know
it now). Without it every identifier counts as its own customer (polku's own events
keep the customer they name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import psycopg

from polku.adapters.parquet.files import COLUMNS, scan
from polku.adapters.postgres.schema import check_schema
from polku.adapters.postgres.state_schema import unescape

GLOB: Final = "day=*/*.parquet"
IDENTITIES: Final = """
CREATE OR REPLACE TABLE identities (workspace VARCHAR, anchor VARCHAR, customer_id VARCHAR);
CREATE TABLE IF NOT EXISTS segment_members (
    workspace VARCHAR, customer_id VARCHAR, segment VARCHAR, since TIMESTAMP,
    PRIMARY KEY (workspace, customer_id, segment)
);
-- Who withdrew analytics consent (the analyses leave them out; docs/privacy.md):
-- from the state, with the identities.
CREATE OR REPLACE TABLE consent_withdrawn (workspace VARCHAR, customer_id VARCHAR);
"""
# Every identifier's live customer: follow redirects from an id that has no profile
# (an id with a profile is live, whatever redirect it once had), as
# PostgresStateStore.redirect does, 64 steps at most.
LIVE_IDENTITIES: Final = """
WITH RECURSIVE chain (workspace, start, id, depth) AS (
    SELECT r.workspace, r.old_id, r.new_id, 1 FROM redirects r
    WHERE NOT EXISTS (SELECT 1 FROM profiles p WHERE p.workspace = r.workspace AND p.customer_id = r.old_id)
    UNION ALL
    SELECT c.workspace, c.start, r.new_id, c.depth + 1 FROM chain c
    JOIN redirects r ON r.workspace = c.workspace AND r.old_id = c.id
    WHERE c.depth < 64
      AND NOT EXISTS (SELECT 1 FROM profiles p WHERE p.workspace = c.workspace AND p.customer_id = c.id)
), live AS (
    SELECT DISTINCT ON (workspace, start) workspace, start, id FROM chain ORDER BY workspace, start, depth DESC
)
SELECT i.workspace, i.identifier, coalesce(l.id, i.customer_id)
FROM identifiers i LEFT JOIN live l ON l.workspace = i.workspace AND l.start = i.customer_id
UNION ALL
SELECT workspace, 'customer:' || start, id FROM live
"""
CHUNK: Final = 100_000


def source(out: Path) -> str:
    """The ``read_parquet`` call over ``out``'s files."""
    pattern = str(out / GLOB).replace("'", "''")
    return f"read_parquet('{pattern}', hive_partitioning = true)"


def _view(out: Path) -> str:
    resolved = {"customer_id": "coalesce(i.customer_id, f.customer_id, f.anchor) AS customer_id"}
    columns = ", ".join(resolved.get(name, f"f.{name}") for name, _ in COLUMNS)
    if scan(out):
        files = f"{source(out)} f"
    else:  # read_parquet refuses a glob that matches nothing: an empty table of the same shape
        empty = ", ".join(f"NULL::{kind} AS {name}" for name, kind in COLUMNS)
        files = f"(SELECT {empty}, NULL::DATE AS day WHERE false) f"
    return (
        f"CREATE OR REPLACE VIEW events AS SELECT {columns}, f.day FROM {files} "
        "LEFT JOIN identities i ON i.workspace = f.workspace AND i.anchor = f.anchor"
    )


def connect(out: Path, *, threads: int = 2) -> Any:
    """An in-memory DuckDB connection with the view ``events`` over ``out``'s files
    (the files written when it was opened, and any written later into the day
    folders; a connection opened before the first file sees none: call
    ``refresh``). ``identities`` and ``consent_withdrawn`` are empty until
    ``load_identities``; ``segment_members`` is empty (segment scopes are not applied
    to the files yet)."""
    import duckdb

    connection = duckdb.connect(":memory:", config={"threads": threads})
    connection.execute(IDENTITIES)
    connection.execute(_view(out))
    return connection


def refresh(connection: Any, out: Path) -> None:
    """Define the view again (the first files appeared since ``connect``)."""
    connection.execute(_view(out))


def load_identities(connection: Any, store_url: str, *, schema: str = "polku") -> int:
    """Fill ``identities`` with every identifier's customer as the PostgreSQL state
    resolves it now (one query, streamed in chunks; how many rows), and
    ``consent_withdrawn`` with who withdrew analytics consent."""
    import pyarrow as pa

    check_schema(schema)
    connection.execute("DELETE FROM identities")
    loaded = 0
    # A named (server-side) cursor, in the connection's transaction: the rows come in chunks.
    with (
        psycopg.connect(store_url, options=f"-c search_path={schema}") as postgres,
        postgres.cursor(name="polku_identities") as cursor,
    ):
        cursor.execute(LIVE_IDENTITIES)
        while rows := cursor.fetchmany(CHUNK):
            chunk = pa.table(
                {
                    "workspace": [unescape(row[0]) for row in rows],
                    "anchor": [unescape(row[1]) for row in rows],
                    "customer_id": [unescape(row[2]) for row in rows],
                }
            )
            connection.register("identity_chunk", chunk)
            connection.execute("INSERT INTO identities SELECT * FROM identity_chunk")
            connection.unregister("identity_chunk")
            loaded += len(rows)
        withdrawn = postgres.execute("SELECT workspace, customer_id FROM consent_withdrawn").fetchall()
    connection.execute("DELETE FROM consent_withdrawn")
    if withdrawn:
        connection.executemany(
            "INSERT INTO consent_withdrawn VALUES (?, ?)", [(unescape(w), unescape(c)) for w, c in withdrawn]
        )
    return loaded
