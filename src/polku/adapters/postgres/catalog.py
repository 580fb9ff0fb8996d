"""Workspaces, sources, credentials and versioned definitions on PostgreSQL.

Many API processes share one catalog, so every write is safe against another
process doing the same thing at once: creations are ``INSERT … ON CONFLICT DO
NOTHING`` (exactly one caller sees ``True``), and a deploy locks its definition's head
row (``SELECT … FOR UPDATE``) before it numbers the new version. Pool connections are
in autocommit mode: a read is one statement (no BEGIN/COMMIT around it), and writes
that need several statements open a transaction themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, LiteralString

import msgspec
import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from polku.adapters.definitions import JourneyDefinitions
from polku.adapters.postgres.schema import DEFAULT_SCHEMA, check_current, check_schema, check_url, migrate
from polku.core.audit import AUDIT_COLUMNS, MAX_AUDIT_PAGE, AuditEntry, audit_entry, audit_row
from polku.core.errors import NotFound
from polku.core.workspace import CREDENTIAL_COLUMNS, Credential, KeyKind, Source, Workspace, WorkspaceConfig
from polku.ports import DefinitionKind, JourneyStatus, StoredAnswer, StoredJourney

_encode = msgspec.json.Encoder().encode
_decode_config = msgspec.json.Decoder(WorkspaceConfig).decode
SOURCE_COLUMNS = "workspace, name, default_channel, created_at"

# A head with the version it points at and every stored version, in one statement
# (one snapshot). The caller adds the WHERE clause; the version parameter comes first.
_STORED = """
    SELECT h.id, d.version, d.body, d.deployed_at, h.version, h.status, h.updated_at,
        ARRAY(SELECT v.version FROM definitions v
              WHERE v.kind = h.kind AND v.workspace = h.workspace AND v.id = h.id ORDER BY v.version)
    FROM definition_heads h
    JOIN definitions d ON d.kind = h.kind AND d.workspace = h.workspace AND d.id = h.id
        AND d.version = coalesce(%s::integer, h.version)
"""


def _credential(row: Any) -> Credential:
    return Credential.from_row(row)


def _workspace(row: TupleRow) -> Workspace:
    return Workspace(id=row[0], name=row[1], created_at=row[2], config=_decode_config(row[3]))


def _source(row: TupleRow) -> Source:
    return Source(workspace=row[0], name=row[1], default_channel=row[2], created_at=row[3])


def _stored(workspace: str, row: TupleRow) -> StoredJourney:
    return StoredJourney(
        workspace=workspace,
        id=row[0],
        version=row[1],
        body=row[2],
        deployed_at=row[3],
        current=row[4],
        status=row[5],
        updated_at=row[6],
        versions=tuple(row[7]),
    )


class PostgresCatalog(JourneyDefinitions):
    """``Catalog`` on PostgreSQL. ``start`` applies pending migrations (under the
    migration lock, so many processes may start at once) unless ``apply_migrations``
    is false, in which case it refuses a database that is not at the code's version."""

    def __init__(
        self,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        min_size: int = 1,
        max_size: int = 8,
        apply_migrations: bool = True,
    ) -> None:
        self.url = check_url(url)
        self.schema = check_schema(schema)
        self.min_size = min_size
        self.max_size = max_size
        self.apply_migrations = apply_migrations
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]] | None = None

    async def start(self) -> None:
        if self.apply_migrations:
            await migrate(self.url, schema=self.schema)
        else:
            await check_current(self.url, schema=self.schema)
        pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]] = AsyncConnectionPool(
            self.url,
            min_size=self.min_size,
            max_size=self.max_size,
            kwargs={"autocommit": True, "options": f"-c search_path={self.schema}"},
            name=f"polku-catalog-{self.schema}",
            # A connection is checked as it leaves the pool: after a restart or a
            # failover of PostgreSQL the dead ones are replaced instead of failing
            # one request each. The catalog is read rarely enough for the round trip.
            check=AsyncConnectionPool.check_connection,
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=30)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[TupleRow]]:
        assert self._pool is not None, "start() the catalog first"
        async with self._pool.connection() as connection:
            yield connection

    async def _fetchone(self, query: LiteralString, parameters: tuple[Any, ...]) -> TupleRow | None:
        async with self._connection() as connection:
            cursor = await connection.execute(query, parameters)
            return await cursor.fetchone()

    async def _fetchall(self, query: LiteralString, parameters: tuple[Any, ...] = ()) -> list[TupleRow]:
        async with self._connection() as connection:
            cursor = await connection.execute(query, parameters)
            return await cursor.fetchall()

    async def _rowcount(self, query: LiteralString, parameters: tuple[Any, ...]) -> int:
        async with self._connection() as connection:
            cursor = await connection.execute(query, parameters)
            return cursor.rowcount

    # -- workspaces, sources, credentials (docs/keys.md) -------------------------------

    async def create_workspace(self, workspace: Workspace) -> bool:
        created = await self._rowcount(
            "INSERT INTO workspaces (id, name, created_at, config) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (workspace.id, workspace.name, workspace.created_at, _encode(workspace.config)),
        )
        return created == 1

    async def workspace(self, workspace_id: str) -> Workspace:
        row = await self._fetchone("SELECT id, name, created_at, config FROM workspaces WHERE id = %s", (workspace_id,))
        if row is None:
            raise NotFound(f"workspace {workspace_id!r} does not exist")
        return _workspace(row)

    async def workspaces(self) -> list[Workspace]:
        rows = await self._fetchall("SELECT id, name, created_at, config FROM workspaces ORDER BY id")
        return [_workspace(row) for row in rows]

    async def set_config(self, workspace_id: str, config: WorkspaceConfig) -> None:
        changed = await self._rowcount(
            "UPDATE workspaces SET config = %s WHERE id = %s", (_encode(config), workspace_id)
        )
        if not changed:
            raise NotFound(f"workspace {workspace_id!r} does not exist")

    async def create_source(self, source: Source) -> bool:
        created = await self._rowcount(
            f"INSERT INTO sources ({SOURCE_COLUMNS}) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (source.workspace, source.name, source.default_channel, source.created_at),
        )
        return created == 1

    async def source(self, workspace_id: str, name: str) -> Source:
        row = await self._fetchone(
            f"SELECT {SOURCE_COLUMNS} FROM sources WHERE workspace = %s AND name = %s", (workspace_id, name)
        )
        if row is None:
            raise NotFound(f"source {name!r} does not exist in workspace {workspace_id!r}")
        return _source(row)

    async def sources(self, workspace_id: str) -> list[Source]:
        rows = await self._fetchall(
            f"SELECT {SOURCE_COLUMNS} FROM sources WHERE workspace = %s ORDER BY name", (workspace_id,)
        )
        return [_source(row) for row in rows]

    async def add_credential(self, credential: Credential) -> bool:
        created = await self._rowcount(
            f"INSERT INTO credentials ({CREDENTIAL_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            credential.row(),
        )
        return created == 1

    async def credential(self, key_hash: str) -> Credential | None:
        row = await self._fetchone(
            f"SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE key_hash = %s AND revoked_at IS NULL", (key_hash,)
        )
        return _credential(row) if row is not None else None

    async def credentials(self, workspace_id: str, kind: KeyKind | None = None) -> list[Credential]:
        rows = await self._fetchall(
            f"SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE workspace = %s AND (%s::text IS NULL OR kind = %s) "
            "ORDER BY created_at, seq",
            (workspace_id, kind, kind),
        )
        return [_credential(row) for row in rows]

    async def record_key_use(self, used: dict[str, str]) -> None:
        async with self._connection() as connection:
            await connection.execute(
                "UPDATE credentials SET last_used_at = u.at FROM unnest(%s::text[], %s::text[]) AS u(key, at) "
                "WHERE credentials.key_hash = u.key",
                (list(used), list(used.values())),
            )

    async def revoke_credential(self, workspace_id: str, key_hash_prefix: str, revoked_at: str) -> Credential:
        missing = NotFound(f"no single live key in {workspace_id!r} has an id starting {key_hash_prefix!r}")
        if not key_hash_prefix:
            raise missing
        async with self._connection() as connection, connection.transaction():
            # FOR UPDATE: of two revocations of one key, the second waits, then finds
            # it revoked (READ COMMITTED re-checks the row) and gets NotFound.
            cursor = await connection.execute(
                f"SELECT {CREDENTIAL_COLUMNS} FROM credentials "
                "WHERE workspace = %s AND starts_with(key_hash, %s) AND revoked_at IS NULL FOR UPDATE",
                (workspace_id, key_hash_prefix),
            )
            rows = await cursor.fetchall()
            if len(rows) != 1:
                raise missing
            await connection.execute(
                "UPDATE credentials SET revoked_at = %s WHERE key_hash = %s", (revoked_at, rows[0][0])
            )
        return msgspec.structs.replace(_credential(rows[0]), revoked_at=revoked_at)

    # -- journeys, surveys, action catalogues: versioned definitions -------------------

    async def deploy_definition(
        self, kind: DefinitionKind, workspace: str, item_id: str, body: str, deployed_at: str
    ) -> tuple[int, bool]:
        key = (kind, workspace, item_id)
        async with self._connection() as connection, connection.transaction():
            # A first deploy inserts a head at version 0 that no other transaction
            # sees before this one commits it at version 1; a concurrent first deploy
            # waits on that insert, then on the row lock below.
            await connection.execute(
                "INSERT INTO definition_heads (kind, workspace, id, version, status, updated_at, revision) "
                "VALUES (%s, %s, %s, 0, 'active', %s, 0) ON CONFLICT DO NOTHING",
                (*key, deployed_at),
            )
            cursor = await connection.execute(
                "SELECT h.version, d.body FROM definition_heads h LEFT JOIN definitions d "
                "ON d.kind = h.kind AND d.workspace = h.workspace AND d.id = h.id AND d.version = h.version "
                "WHERE h.kind = %s AND h.workspace = %s AND h.id = %s FOR UPDATE OF h",
                key,
            )
            head = await cursor.fetchone()
            assert head is not None
            if head[1] == body:
                return int(head[0]), False
            cursor = await connection.execute(
                "INSERT INTO definitions (kind, workspace, id, version, body, deployed_at) "
                "SELECT %s, %s, %s, coalesce(max(version), 0) + 1, %s, %s FROM definitions "
                "WHERE kind = %s AND workspace = %s AND id = %s RETURNING version",
                (*key, body, deployed_at, *key),
            )
            inserted = await cursor.fetchone()
            assert inserted is not None
            version = int(inserted[0])
            await connection.execute(
                "UPDATE definition_heads SET version = %s, updated_at = %s, revision = revision + 1 "
                "WHERE kind = %s AND workspace = %s AND id = %s",
                (version, deployed_at, *key),
            )
        return version, True

    async def definition(
        self, kind: DefinitionKind, workspace: str, item_id: str, version: int | None = None
    ) -> StoredJourney:
        row = await self._fetchone(
            _STORED + "WHERE h.kind = %s AND h.workspace = %s AND h.id = %s", (version, kind, workspace, item_id)
        )
        if row is None:
            which = f"version {version} of {kind}" if version is not None else kind
            raise NotFound(f"{which} {item_id!r} does not exist in workspace {workspace!r}")
        return _stored(workspace, row)

    async def definitions(self, kind: DefinitionKind, workspace: str) -> list[StoredJourney]:
        rows = await self._fetchall(
            _STORED + "WHERE h.kind = %s AND h.workspace = %s ORDER BY h.id", (None, kind, workspace)
        )
        return [_stored(workspace, row) for row in rows]

    async def set_definition_status(
        self, kind: DefinitionKind, workspace: str, item_id: str, status: JourneyStatus, updated_at: str
    ) -> StoredJourney:
        async with self._connection() as connection, connection.transaction():
            await connection.execute(
                "UPDATE definition_heads SET status = %s, updated_at = %s, revision = revision + 1 "
                "WHERE kind = %s AND workspace = %s AND id = %s",
                (status, updated_at, kind, workspace, item_id),
            )
            cursor = await connection.execute(
                _STORED + "WHERE h.kind = %s AND h.workspace = %s AND h.id = %s", (None, kind, workspace, item_id)
            )
            row = await cursor.fetchone()
        if row is None:
            raise NotFound(f"{kind} {item_id!r} does not exist in workspace {workspace!r}")
        return _stored(workspace, row)

    # -- survey answers (docs/surveys.md) ----------------------------------------------

    async def survey_answer(self, workspace: str, invitation: str) -> StoredAnswer | None:
        row = await self._fetchone(
            "SELECT revision, first_ms, updated_ms, body FROM survey_answers WHERE workspace = %s AND invitation = %s",
            (workspace, invitation),
        )
        if row is None:
            return None
        return StoredAnswer(
            invitation=invitation,
            revision=row[0],
            first_ms=row[1],
            updated_ms=row[2],
            answer=msgspec.json.decode(row[3]),
        )

    async def record_audit(self, entry: AuditEntry) -> None:
        await self._rowcount(
            "INSERT INTO audit_log (" + AUDIT_COLUMNS + ") VALUES (%s, %s, %s, %s, %s, %s, %s)", audit_row(entry)
        )

    async def audit_entries(self, workspace: str, *, after_id: int = 0, limit: int = 100) -> list[AuditEntry]:
        rows = await self._fetchall(
            "SELECT id, " + AUDIT_COLUMNS + " FROM audit_log WHERE workspace = %s AND id > %s ORDER BY id LIMIT %s",
            (workspace, after_id, min(limit, MAX_AUDIT_PAGE)),
        )
        return [audit_entry(row) for row in rows]

    async def record_survey_answer(self, workspace: str, answer: StoredAnswer) -> None:
        await self._rowcount(
            "INSERT INTO survey_answers (workspace, invitation, revision, first_ms, updated_ms, body) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (workspace, invitation) DO UPDATE SET "
            "revision = excluded.revision, updated_ms = excluded.updated_ms, body = excluded.body "
            "WHERE excluded.revision > survey_answers.revision",
            (
                workspace,
                answer.invitation,
                answer.revision,
                answer.first_ms,
                answer.updated_ms,
                msgspec.json.encode(answer.answer),
            ),
        )
