"""Building events and a processor over a real state store for tests: SQLite, the
in-memory reference, or PostgreSQL (``BACKEND``)."""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from polku.adapters.memory import MemoryLogReader
from polku.adapters.memory_state import MemoryStateStore
from polku.adapters.postgres import state_schema
from polku.adapters.postgres.state_schema import unescape
from polku.adapters.postgres.state_store import PostgresStateStore
from polku.adapters.sqlite.state_store import SqliteStateStore
from polku.core.events import Event, format_millis
from polku.core.workspace import WorkspaceConfig, parse_config
from polku.engine.processor import Processor

T0 = 1_790_000_000_000  # 2026-09-21
BACKEND = "sqlite"
"""The state store ``World`` uses; ``tests/engine/conftest.py`` runs every test on each."""
SCHEMAS: PostgresSchemas | None = None
"""Where ``World`` takes its PostgreSQL schema (``BACKEND == "postgresql"``): the
current test's, set by ``tests/engine/conftest.py``."""
_ids = itertools.count(1)


def event(
    kind: str = "track",
    *,
    ts: int = T0,
    channel: str = "web",
    message_id: str | None = None,
    **fields: Any,
) -> Event:
    return Event(
        message_id=message_id or f"m{next(_ids)}",
        type=kind,
        channel=channel,
        source="default",
        timestamp=format_millis(ts),
        received_at=format_millis(ts),
        **fields,
    )


class Clock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class PostgresSchemas:
    """The PostgreSQL schemas of one test, in the test session's database. Each
    ``World`` gets a store on an empty schema: a new one, or the store of an earlier
    ``World`` of the same test, emptied when it closed (its salt kept) — a property
    test makes hundreds of worlds, and emptying a schema costs a fraction of creating
    one and opening a pool. ``drop`` closes every store and drops every schema."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stores: dict[PostgresStateStore, str] = {}
        self.free: list[PostgresStateStore] = []
        self._admin: psycopg.Connection[Any] | None = None

    def admin(self) -> psycopg.Connection[Any]:
        if self._admin is None:
            self._admin = psycopg.connect(self.url, autocommit=True)
        return self._admin

    def store(self) -> PostgresStateStore:
        if self.free:
            return self.free.pop()
        schema = f"engine_{uuid.uuid4().hex[:12]}"
        store = PostgresStateStore(self.url, schema=schema)
        self.stores[store] = schema
        return store

    def release(self, store: PostgresStateStore) -> None:
        """Empty ``store``'s schema, but for its secrets, for the next ``World``."""
        if store in self.free:
            return
        schema = self.stores[store]
        tables = self.admin().execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = %s AND tablename NOT IN ('meta', %s)",
            (schema, state_schema.TRACK_TABLE),
        )
        statements = [sql.SQL("DELETE FROM {}").format(sql.Identifier(schema, table)) for (table,) in tables]
        self.admin().execute(sql.SQL("; ").join(statements))
        self.free.append(store)

    def drop(self) -> None:
        for store, schema in self.stores.items():
            store.close()
            self.admin().execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        self.stores.clear()
        self.free.clear()
        if self._admin is not None:
            self._admin.close()
            self._admin = None


class World:
    """A processor over ``MemoryLogReader`` and a real state store (``BACKEND``)."""

    def __init__(
        self, directory: Path, config: str | WorkspaceConfig = "{}", *, emit: bool = True, batch_size: int = 7
    ) -> None:
        parsed = parse_config(config) if isinstance(config, str) else config
        self.directory = directory
        self.log = MemoryLogReader({"default": parsed})
        self.store: Any = open_store(directory)
        self.clock = Clock()
        self.processor = Processor(self.store, self.log, clock=self.clock, batch_size=batch_size, emit=emit)

    def send(self, *events: Event) -> None:
        for item in events:
            self.log.add("default", item)

    def run(self) -> None:
        self.processor.run_until_idle()
        # What the worker's forwarder does: emitted events go into the log.
        for _entry_id, workspace, body in self.store.outbox(10_000):
            self.log.add(workspace, msgspec.json.decode(body, type=Event))
        self.store.delete_outbox([entry[0] for entry in self.store.outbox(10_000)])
        self.processor.run_until_idle()

    def customer(self, identifier: str) -> str:
        record = self.store.identifier("default", identifier)
        assert record is not None, identifier
        return record.customer_id

    def partition(self) -> set[frozenset[str]]:
        if isinstance(self.store, MemoryStateStore):
            return {frozenset(group) for group in self.store.partition("default").values()}
        groups: dict[str, set[str]] = {}
        for identifier, customer_id in self.query(
            "SELECT identifier, customer_id FROM identifiers WHERE workspace = 'default'"
        ):
            groups.setdefault(customer_id, set()).add(identifier)
        return {frozenset(group) for group in groups.values()}

    def query(self, statement: str) -> list[tuple[Any, ...]]:
        """The rows of a statement (with no parameters) over the SQL store's tables,
        which SQLite and PostgreSQL name alike."""
        if isinstance(self.store, PostgresStateStore):
            with self.store.pool.connection() as connection:
                rows = connection.execute(statement).fetchall()
            return [tuple(unescape(value) if isinstance(value, str) else value for value in row) for row in rows]
        return list(self.store.connection.execute(statement))

    def set_salt(self, salt: bytes) -> None:
        """Fix the salt customer ids derive from (before the processor is made)."""
        if isinstance(self.store, MemoryStateStore):
            self.store._salt = salt
        elif isinstance(self.store, PostgresStateStore):
            with self.store.pool.connection() as connection:
                connection.execute("UPDATE meta SET value = %s WHERE key = 'salt'", (salt,))
        else:
            self.store.writer.execute("UPDATE meta SET value = ? WHERE key = 'salt'", (salt,))

    def close(self) -> None:
        if isinstance(self.store, PostgresStateStore) and SCHEMAS is not None:
            SCHEMAS.release(self.store)
        else:
            self.store.close()


def open_store(directory: Path) -> Any:
    if BACKEND == "sqlite":
        return SqliteStateStore(directory)
    if BACKEND == "postgresql":
        assert SCHEMAS is not None, "tests/engine/conftest.py sets the schemas of a PostgreSQL test"
        return SCHEMAS.store()
    return MemoryStateStore()
