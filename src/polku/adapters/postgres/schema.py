"""The PostgreSQL schema and its migrations (docs/postgresql.md).

Migrations are numbered by their place in ``MIGRATIONS`` and recorded in
``polku_migrations (version, applied_at, name)`` inside polku's schema (``polku`` by
default). ``migrate`` applies each pending one in its own transaction, holding a
transaction-scoped advisory lock keyed by the schema name and reading the version
again under it, so that any number of processes starting at once apply each migration
exactly once. It refuses a database newer than the code, and a destructive migration
(one that drops, truncates or deletes) unless it is marked ``destructive`` and the
caller passed ``allow_destructive``.

Identifier columns are ``COLLATE "C"``: lists come back in code-point order whatever
the database's locale, as they do from the in-memory and SQLite adapters. Encoded
documents (a workspace's configuration, a survey answer) are ``bytea``: the bytes
msgspec wrote come back unchanged, as from SQLite, and a free-text answer holding
U+0000, which ``jsonb`` refuses, is stored like any other.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final, LiteralString

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from polku.core.errors import ConfigError, PolkuError

DEFAULT_SCHEMA: Final = "polku"
SCHEMA_PATTERN: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
URL_SCHEMES: Final = ("postgresql://", "postgres://")
_DESTRUCTIVE: Final = re.compile(r"\b(DROP|TRUNCATE|DELETE)\b", re.IGNORECASE)
_COMMENT: Final = re.compile(r"--[^\n]*")


@dataclass(frozen=True)
class Migration:
    """One numbered step. ``sql`` may hold several statements; it runs with polku's
    schema first on the ``search_path``, so it names tables without a schema."""

    name: str
    sql: LiteralString
    destructive: bool = False
    """Required on a step that drops, truncates or deletes: ``migrate`` applies it
    only with ``allow_destructive``."""

    def __post_init__(self) -> None:
        found = _DESTRUCTIVE.search(_COMMENT.sub("", self.sql))
        if found and not self.destructive:
            raise ValueError(f"migration {self.name!r} uses {found.group(1).upper()}: mark it destructive=True")


MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        "workspaces, sources and credentials",
        """
        CREATE TABLE workspaces (
            id TEXT COLLATE "C" PRIMARY KEY,
            name TEXT NOT NULL,
            created_at TEXT NOT NULL,
            config BYTEA NOT NULL
        );
        CREATE TABLE sources (
            workspace TEXT COLLATE "C" NOT NULL,
            name TEXT COLLATE "C" NOT NULL,
            default_channel TEXT NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (workspace, name)
        );
        -- `seq` keeps the order keys were added in among keys created in the same
        -- millisecond, as SQLite's rowid does.
        CREATE TABLE credentials (
            key_hash TEXT COLLATE "C" PRIMARY KEY,
            seq BIGINT GENERATED ALWAYS AS IDENTITY,
            kind TEXT NOT NULL CHECK (kind IN ('write', 'admin')),
            workspace TEXT COLLATE "C" NOT NULL,
            source TEXT,
            label TEXT NOT NULL,
            created_at TEXT NOT NULL,
            revoked_at TEXT
        );
        CREATE INDEX credentials_workspace ON credentials (workspace, created_at, seq);
        """,
    ),
    Migration(
        "versioned definitions and survey answers",
        """
        -- Journeys, surveys and action catalogues (docs/journeys.md, docs/surveys.md,
        -- docs/decisions.md): every deployed version as sent, and per definition its
        -- head (current version and status). Deploys lock the head row, so versions
        -- are consecutive however many processes deploy at once. `revision` counts
        -- every change of a head (the processor's cheap change token).
        CREATE TABLE definitions (
            kind TEXT COLLATE "C" NOT NULL,
            workspace TEXT COLLATE "C" NOT NULL,
            id TEXT COLLATE "C" NOT NULL,
            version INTEGER NOT NULL CHECK (version > 0),
            body TEXT NOT NULL,
            deployed_at TEXT NOT NULL,
            PRIMARY KEY (kind, workspace, id, version)
        );
        CREATE TABLE definition_heads (
            kind TEXT COLLATE "C" NOT NULL,
            workspace TEXT COLLATE "C" NOT NULL,
            id TEXT COLLATE "C" NOT NULL,
            version INTEGER NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('active', 'paused', 'archived')),
            updated_at TEXT NOT NULL,
            revision BIGINT NOT NULL DEFAULT 1,
            PRIMARY KEY (kind, workspace, id)
        );
        -- One row per survey invitation; `revision` counts edits, and a later
        -- revision replaces an earlier one, never the reverse.
        CREATE TABLE survey_answers (
            workspace TEXT COLLATE "C" NOT NULL,
            invitation TEXT COLLATE "C" NOT NULL,
            revision INTEGER NOT NULL,
            first_ms BIGINT NOT NULL,
            updated_ms BIGINT NOT NULL,
            body BYTEA NOT NULL,
            PRIMARY KEY (workspace, invitation)
        );
        """,
    ),
    Migration(
        "catalog: the audit log of admin actions",
        """
        CREATE TABLE audit_log (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            workspace TEXT COLLATE "C" NOT NULL,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            status INTEGER NOT NULL,
            address TEXT,
            user_agent TEXT
        );
        CREATE INDEX audit_log_workspace ON audit_log (workspace, id);
        """,
    ),
    Migration(
        "catalog: the scopes of admin tokens (existing tokens keep all)",
        """
        ALTER TABLE credentials ADD COLUMN scopes TEXT NOT NULL DEFAULT 'manage privacy read';
        """,
    ),
    Migration(
        "catalog: when each key was last used",
        """
        ALTER TABLE credentials ADD COLUMN last_used_at TEXT;
        """,
    ),
)


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    name: str
    applied_at: datetime


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database stands against the code's ``MIGRATIONS``."""

    schema: str
    version: int
    """The last migration applied (0: none)."""
    latest: int
    """The last migration the code knows."""
    applied: tuple[AppliedMigration, ...]
    pending: tuple[tuple[int, Migration], ...]

    @property
    def newer_than_code(self) -> bool:
        return self.version > self.latest


def check_url(url: str) -> str:
    """The URL if it is a PostgreSQL connection URL libpq can parse; ``ConfigError``
    otherwise."""
    if not url.startswith(URL_SCHEMES):
        raise ConfigError(
            f"{redact(url)!r} is not a PostgreSQL URL: expected postgresql://[user[:password]@]host[:port]/database",
            field="store",
        )
    try:
        conninfo_to_dict(url)
    except psycopg.ProgrammingError as error:
        raise ConfigError(f"{redact(url)!r} is not a valid PostgreSQL URL: {error}", field="store") from None
    return url


def check_schema(schema: str) -> str:
    if not SCHEMA_PATTERN.fullmatch(schema):
        raise ConfigError(
            f"schema {schema!r} must be 1-63 lower-case letters, digits or '_', not starting with a digit",
            field="schema",
        )
    return schema


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"^([a-z]+://[^:/@]*):[^@/]*@", r"\1:***@", url)


async def connect(url: str) -> psycopg.AsyncConnection[TupleRow]:
    """An autocommit connection, or a ``ConfigError`` that says where it failed."""
    check_url(url)
    try:
        return await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as error:
        reason = " ".join(str(error).split())
        raise ConfigError(f"cannot connect to {redact(url)}: {reason}", field="store") from None


BOOKKEEPING_TABLE: Final = "polku_migrations"
"""Where a track of migrations records its steps; another track (the event log's)
passes its own table, numbered on its own, under the same lock."""


def lock_key(schema: str) -> int:
    """The advisory lock of ``schema``'s migrations: a stable signed 64-bit number."""
    digest = hashlib.sha256(f"polku migrations {schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def migrate(
    url: str,
    *,
    schema: str = DEFAULT_SCHEMA,
    migrations: tuple[Migration, ...] = MIGRATIONS,
    target: int | None = None,
    allow_destructive: bool = False,
    table: str = BOOKKEEPING_TABLE,
) -> list[int]:
    """Apply the pending migrations up to ``target`` (default: all), each in its own
    transaction; return the versions this call applied (empty when another process
    applied them, or nothing was pending)."""
    check_schema(schema)
    goal = len(migrations) if target is None else target
    if not 0 <= goal <= len(migrations):
        raise ConfigError(f"target {goal} is not between 0 and {len(migrations)}", field="target")
    applied: list[int] = []
    async with await connect(url) as connection:
        while True:
            async with connection.transaction():
                await connection.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(schema),))
                await _create_bookkeeping(connection, schema, table)
                version = await _version(connection, schema, table)
                _refuse_newer(schema, version, len(migrations))
                if version >= goal:
                    return applied
                if not allow_destructive:
                    _refuse_destructive(migrations, version, goal)
                migration = migrations[version]
                await connection.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
                try:
                    await connection.execute(migration.sql)
                except psycopg.DatabaseError as error:
                    raise PolkuError(
                        f"migration {version + 1} ({migration.name}) failed and was rolled back: {error}"
                    ) from error
                await connection.execute(
                    sql.SQL("INSERT INTO {} (version, name) VALUES (%s, %s)").format(sql.Identifier(schema, table)),
                    (version + 1, migration.name),
                )
            applied.append(version + 1)


async def status(
    url: str,
    *,
    schema: str = DEFAULT_SCHEMA,
    migrations: tuple[Migration, ...] = MIGRATIONS,
    table: str = BOOKKEEPING_TABLE,
) -> SchemaStatus:
    """What is applied and what is pending; reads only."""
    check_schema(schema)
    async with await connect(url) as connection:
        applied: tuple[AppliedMigration, ...] = ()
        exists = await connection.execute("SELECT to_regclass(%s)", (f'"{schema}".{table}',))
        row = await exists.fetchone()
        if row is not None and row[0] is not None:
            cursor = await connection.execute(
                sql.SQL("SELECT version, name, applied_at FROM {} ORDER BY version").format(
                    sql.Identifier(schema, table)
                )
            )
            applied = tuple(
                AppliedMigration(version=version, name=name, applied_at=applied_at)
                for version, name, applied_at in await cursor.fetchall()
            )
    version = max((found.version for found in applied), default=0)
    pending = tuple((number, migrations[number - 1]) for number in range(version + 1, len(migrations) + 1))
    return SchemaStatus(schema=schema, version=version, latest=len(migrations), applied=applied, pending=pending)


async def check_current(
    url: str, *, schema: str = DEFAULT_SCHEMA, migrations: tuple[Migration, ...] = MIGRATIONS
) -> None:
    """``ConfigError`` unless the database is at exactly the code's version."""
    found = await status(url, schema=schema, migrations=migrations)
    _refuse_newer(schema, found.version, found.latest)
    if found.pending:
        raise ConfigError(
            f"schema {schema!r} is at version {found.version} of {found.latest}: run `polku db migrate --store …`",
            field="store",
        )


async def _create_bookkeeping(connection: psycopg.AsyncConnection[TupleRow], schema: str, table: str) -> None:
    # Checked before created: CREATE ... IF NOT EXISTS needs the CREATE privilege even
    # when the object exists, and an application role may lack it once set up.
    cursor = await connection.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
    if await cursor.fetchone() is None:
        await connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    cursor = await connection.execute("SELECT to_regclass(%s)", (f'"{schema}".{table}',))
    row = await cursor.fetchone()
    if row is None or row[0] is None:
        await connection.execute(
            sql.SQL(
                "CREATE TABLE {} ("
                "version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), name TEXT NOT NULL)"
            ).format(sql.Identifier(schema, table))
        )


async def _version(connection: psycopg.AsyncConnection[TupleRow], schema: str, table: str) -> int:
    cursor = await connection.execute(
        sql.SQL("SELECT coalesce(max(version), 0) FROM {}").format(sql.Identifier(schema, table))
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


def _refuse_newer(schema: str, version: int, latest: int) -> None:
    if version > latest:
        raise ConfigError(
            f"schema {schema!r} is at version {version}, newer than this polku knows ({latest}): "
            "upgrade polku before using this database",
            field="store",
        )


def _refuse_destructive(migrations: tuple[Migration, ...], version: int, goal: int) -> None:
    destructive = [
        f"{number} ({migrations[number - 1].name})"
        for number in range(version + 1, goal + 1)
        if migrations[number - 1].destructive
    ]
    if destructive:
        raise ConfigError(
            f"migration {', '.join(destructive)} is destructive (it drops or deletes data) and was not applied: "
            "back up the database, then run `polku db migrate --allow-destructive` (migrate(..., allow_destructive=True))",
            field="store",
        )
