"""Workspaces, sources and credentials on SQLite. Catalog writes are rare (setup,
key rotation), so they use their own connection and wait on SQLite's busy timeout
instead of the event writer's queue."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from polku.adapters.definitions import JourneyDefinitions
from polku.adapters.sqlite.schema import Synchronous, open_database
from polku.core.audit import AUDIT_COLUMNS, MAX_AUDIT_PAGE, AuditEntry, audit_entry, audit_row
from polku.core.errors import NotFound
from polku.core.workspace import CREDENTIAL_COLUMNS, Credential, KeyKind, Source, Workspace, WorkspaceConfig
from polku.ports import DefinitionKind, JourneyStatus, StoredAnswer, StoredJourney

T = TypeVar("T")
_encode = msgspec.json.Encoder().encode
_decode_config = msgspec.json.Decoder(WorkspaceConfig).decode


def _credential(row: Any) -> Credential:
    return Credential.from_row(row)


def _workspace(row: tuple[Any, ...]) -> Workspace:
    return Workspace(id=row[0], name=row[1], created_at=row[2], config=_decode_config(row[3]))


class SqliteCatalog(JourneyDefinitions):
    def __init__(self, data_dir: Path, *, synchronous: Synchronous = "FULL") -> None:
        self.data_dir = data_dir
        self.synchronous: Synchronous = synchronous
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    async def start(self) -> None:
        self._connection = await asyncio.to_thread(open_database, self.data_dir, synchronous=self.synchronous)

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def _run(self, function: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        connection = self._connection
        assert connection is not None, "start() the catalog first"

        def call() -> T:
            with self._lock:
                if not write:
                    return function(connection)
                connection.execute("BEGIN IMMEDIATE")
                try:
                    result = function(connection)
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")
                return result

        return await asyncio.to_thread(call)

    async def create_workspace(self, workspace: Workspace) -> bool:
        return await self._run(
            lambda c: (
                c.execute(
                    "INSERT OR IGNORE INTO workspaces (id, name, created_at, config) VALUES (?, ?, ?, ?)",
                    (workspace.id, workspace.name, workspace.created_at, _encode(workspace.config)),
                ).rowcount
                == 1
            ),
            write=True,
        )

    async def workspace(self, workspace_id: str) -> Workspace:
        row = await self._run(
            lambda c: c.execute(
                "SELECT id, name, created_at, config FROM workspaces WHERE id = ?", (workspace_id,)
            ).fetchone()
        )
        if row is None:
            raise NotFound(f"workspace {workspace_id!r} does not exist")
        return _workspace(row)

    async def workspaces(self) -> list[Workspace]:
        rows = await self._run(
            lambda c: c.execute("SELECT id, name, created_at, config FROM workspaces ORDER BY id").fetchall()
        )
        return [_workspace(row) for row in rows]

    async def set_config(self, workspace_id: str, config: WorkspaceConfig) -> None:
        changed = await self._run(
            lambda c: (
                c.execute("UPDATE workspaces SET config = ? WHERE id = ?", (_encode(config), workspace_id)).rowcount
            ),
            write=True,
        )
        if not changed:
            raise NotFound(f"workspace {workspace_id!r} does not exist")

    async def create_source(self, source: Source) -> bool:
        return await self._run(
            lambda c: (
                c.execute(
                    "INSERT OR IGNORE INTO sources (workspace, name, default_channel, created_at) VALUES (?, ?, ?, ?)",
                    (source.workspace, source.name, source.default_channel, source.created_at),
                ).rowcount
                == 1
            ),
            write=True,
        )

    async def source(self, workspace_id: str, name: str) -> Source:
        row = await self._run(
            lambda c: c.execute(
                "SELECT workspace, name, default_channel, created_at FROM sources WHERE workspace = ? AND name = ?",
                (workspace_id, name),
            ).fetchone()
        )
        if row is None:
            raise NotFound(f"source {name!r} does not exist in workspace {workspace_id!r}")
        return Source(workspace=row[0], name=row[1], default_channel=row[2], created_at=row[3])

    async def sources(self, workspace_id: str) -> list[Source]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT workspace, name, default_channel, created_at FROM sources WHERE workspace = ? ORDER BY name",
                (workspace_id,),
            ).fetchall()
        )
        return [Source(workspace=r[0], name=r[1], default_channel=r[2], created_at=r[3]) for r in rows]

    async def add_credential(self, credential: Credential) -> bool:
        return await self._run(
            lambda c: (
                c.execute(
                    f"INSERT OR IGNORE INTO credentials ({CREDENTIAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    credential.row(),
                ).rowcount
                == 1
            ),
            write=True,
        )

    async def credential(self, key_hash: str) -> Credential | None:
        row = await self._run(
            lambda c: c.execute(
                f"SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,)
            ).fetchone()
        )
        return _credential(row) if row is not None else None

    async def credentials(self, workspace_id: str, kind: KeyKind | None = None) -> list[Credential]:
        sql = f"SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE workspace = ?"
        parameters: list[Any] = [workspace_id]
        if kind is not None:
            sql += " AND kind = ?"
            parameters.append(kind)
        rows = await self._run(lambda c: c.execute(sql + " ORDER BY created_at", parameters).fetchall())
        return [_credential(row) for row in rows]

    async def record_key_use(self, used: dict[str, str]) -> None:
        def record(connection: sqlite3.Connection) -> None:
            connection.executemany(
                "UPDATE credentials SET last_used_at = ? WHERE key_hash = ?", [(at, key) for key, at in used.items()]
            )

        await self._run(record, write=True)

    async def revoke_credential(self, workspace_id: str, key_hash_prefix: str, revoked_at: str) -> Credential:
        def revoke(connection: sqlite3.Connection) -> Credential:
            rows = connection.execute(
                f"SELECT {CREDENTIAL_COLUMNS} FROM credentials WHERE workspace = ? AND key_hash LIKE ? AND revoked_at IS NULL",
                (workspace_id, key_hash_prefix.replace("%", "").replace("_", "") + "%"),
            ).fetchall()
            if len(rows) != 1:
                raise NotFound(f"no single live key in {workspace_id!r} has an id starting {key_hash_prefix!r}")
            connection.execute("UPDATE credentials SET revoked_at = ? WHERE key_hash = ?", (revoked_at, rows[0][0]))
            return msgspec.structs.replace(_credential(rows[0]), revoked_at=revoked_at)

        return await self._run(revoke, write=True)

    # -- journeys (docs/journeys.md) and surveys (docs/surveys.md) -------------------
    # Both are versioned definitions with a head (current version and status), in
    # twin tables: ``journeys``/``journey_heads`` and ``surveys``/``survey_heads``.

    async def deploy_definition(
        self, kind: DefinitionKind, workspace: str, item_id: str, body: str, deployed_at: str
    ) -> tuple[int, bool]:
        table, heads = _TABLES[kind]

        def deploy(connection: sqlite3.Connection) -> tuple[int, bool]:
            head = connection.execute(
                f"SELECT h.version, j.body FROM {heads} h JOIN {table} j "
                "ON j.workspace = h.workspace AND j.id = h.id AND j.version = h.version "
                "WHERE h.workspace = ? AND h.id = ?",
                (workspace, item_id),
            ).fetchone()
            if head is not None and head[1] == body:
                return int(head[0]), False
            (latest,) = connection.execute(
                f"SELECT coalesce(max(version), 0) FROM {table} WHERE workspace = ? AND id = ?",
                (workspace, item_id),
            ).fetchone()
            version = int(latest) + 1
            connection.execute(
                f"INSERT INTO {table} (workspace, id, version, body, deployed_at) VALUES (?, ?, ?, ?, ?)",
                (workspace, item_id, version, body, deployed_at),
            )
            connection.execute(
                f"INSERT INTO {heads} (workspace, id, version, status, updated_at) VALUES (?, ?, ?, 'active', ?) "
                "ON CONFLICT (workspace, id) DO UPDATE SET version = excluded.version, "
                "updated_at = excluded.updated_at, revision = revision + 1",
                (workspace, item_id, version, deployed_at),
            )
            return version, True

        return await self._run(deploy, write=True)

    async def definition(
        self, kind: DefinitionKind, workspace: str, item_id: str, version: int | None = None
    ) -> StoredJourney:
        def read(connection: sqlite3.Connection) -> StoredJourney | None:
            return _stored_journey(connection, workspace, item_id, version, kind)

        found = await self._run(read)
        if found is None:
            which = f"version {version} of {kind}" if version is not None else kind
            raise NotFound(f"{which} {item_id!r} does not exist in workspace {workspace!r}")
        return found

    async def definitions(self, kind: DefinitionKind, workspace: str) -> list[StoredJourney]:
        heads = _TABLES[kind][1]

        def read(connection: sqlite3.Connection) -> list[StoredJourney]:
            ids = [
                row[0]
                for row in connection.execute(f"SELECT id FROM {heads} WHERE workspace = ? ORDER BY id", (workspace,))
            ]
            found = [_stored_journey(connection, workspace, item_id, None, kind) for item_id in ids]
            return [item for item in found if item is not None]

        return await self._run(read)

    async def set_definition_status(
        self, kind: DefinitionKind, workspace: str, item_id: str, status: JourneyStatus, updated_at: str
    ) -> StoredJourney:
        heads = _TABLES[kind][1]

        def update(connection: sqlite3.Connection) -> StoredJourney | None:
            connection.execute(
                f"UPDATE {heads} SET status = ?, updated_at = ?, revision = revision + 1 WHERE workspace = ? AND id = ?",
                (status, updated_at, workspace, item_id),
            )
            return _stored_journey(connection, workspace, item_id, None, kind)

        found = await self._run(update, write=True)
        if found is None:
            raise NotFound(f"{kind} {item_id!r} does not exist in workspace {workspace!r}")
        return found

    # -- survey answers (docs/surveys.md) ---------------------------------------------

    async def survey_answer(self, workspace: str, invitation: str) -> StoredAnswer | None:
        def read(connection: sqlite3.Connection) -> StoredAnswer | None:
            row = connection.execute(
                "SELECT revision, first_ms, updated_ms, body FROM survey_answers WHERE workspace = ? AND invitation = ?",
                (workspace, invitation),
            ).fetchone()
            if row is None:
                return None
            return StoredAnswer(
                invitation=invitation,
                revision=int(row[0]),
                first_ms=int(row[1]),
                updated_ms=int(row[2]),
                answer=msgspec.json.decode(row[3]),
            )

        return await self._run(read)

    async def record_survey_answer(self, workspace: str, answer: StoredAnswer) -> None:
        def write(connection: sqlite3.Connection) -> None:
            connection.execute(
                "INSERT INTO survey_answers (workspace, invitation, revision, first_ms, updated_ms, body) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (workspace, invitation) DO UPDATE SET "
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

        await self._run(write, write=True)

    async def record_audit(self, entry: AuditEntry) -> None:
        def write(connection: sqlite3.Connection) -> None:
            connection.execute(
                f"INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", audit_row(entry)
            )

        await self._run(write, write=True)

    async def audit_entries(self, workspace: str, *, after_id: int = 0, limit: int = 100) -> list[AuditEntry]:
        def read(connection: sqlite3.Connection) -> list[AuditEntry]:
            rows = connection.execute(
                f"SELECT id, {AUDIT_COLUMNS} FROM audit_log WHERE workspace = ? AND id > ? ORDER BY id LIMIT ?",
                (workspace, after_id, min(limit, MAX_AUDIT_PAGE)),
            ).fetchall()
            return [audit_entry(row) for row in rows]

        return await self._run(read)


_TABLES: dict[str, tuple[str, str]] = {
    "journey": ("journeys", "journey_heads"),
    "survey": ("surveys", "survey_heads"),
    "actions": ("action_catalogues", "action_catalogue_heads"),
}


def _stored_journey(
    connection: sqlite3.Connection, workspace: str, journey_id: str, version: int | None, kind: str = "journey"
) -> StoredJourney | None:
    table, heads = _TABLES[kind]
    head = connection.execute(
        f"SELECT version, status, updated_at FROM {heads} WHERE workspace = ? AND id = ?", (workspace, journey_id)
    ).fetchone()
    if head is None:
        return None
    row = connection.execute(
        f"SELECT version, body, deployed_at FROM {table} WHERE workspace = ? AND id = ? AND version = ?",
        (workspace, journey_id, head[0] if version is None else version),
    ).fetchone()
    if row is None:
        return None
    versions = tuple(
        int(found)
        for (found,) in connection.execute(
            f"SELECT version FROM {table} WHERE workspace = ? AND id = ? ORDER BY version", (workspace, journey_id)
        )
    )
    return StoredJourney(
        workspace=workspace,
        id=journey_id,
        version=int(row[0]),
        body=str(row[1]),
        deployed_at=str(row[2]),
        current=int(head[0]),
        status=head[1],
        updated_at=str(head[2]),
        versions=versions,
    )
