"""PostgreSQL migrations on a real server: an older schema upgrades in place with its
data intact, each migration is applied once however many processes race, a newer
database and a destructive step are refused. Runs in its own fresh database."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from tests.contract.conftest import fresh_database

from polku.adapters.postgres import MIGRATIONS, Migration, PostgresCatalog, migrate, status
from polku.adapters.postgres.tracks import TRACKS
from polku.core.errors import ConfigError, PolkuError
from polku.core.workspace import Credential, Source, Workspace

pytestmark = pytest.mark.anyio

TABLES = (
    Migration("one", "CREATE TABLE one (id INTEGER PRIMARY KEY)"),
    Migration("slow two", "SELECT pg_sleep(0.2); CREATE TABLE two (id INTEGER PRIMARY KEY)"),
    Migration("three", "ALTER TABLE one ADD COLUMN note TEXT"),
)
"""Test-only steps; none is idempotent, so applying one twice fails."""


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


@pytest.fixture
def schema() -> str:
    return f"migrations_{uuid.uuid4().hex[:12]}"


def rows(url: str, query: sql.Composed) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as connection:
        return connection.execute(query).fetchall()


def applied_versions(url: str, schema: str) -> list[object]:
    found = rows(
        url, sql.SQL("SELECT version FROM {}.polku_migrations ORDER BY version").format(sql.Identifier(schema))
    )
    return [version for (version,) in found]


async def test_an_older_schema_upgrades_in_place_with_its_data(database: str, schema: str) -> None:
    assert await migrate(database, schema=schema, target=1) == [1]
    assert (await status(database, schema=schema)).version == 1
    with psycopg.connect(database, options=f"-c search_path={schema}") as connection:
        connection.execute(
            "INSERT INTO workspaces (id, name, created_at, config) VALUES ('w', 'W', 't0', %s)", (b"{}",)
        )
        connection.execute("INSERT INTO sources VALUES ('w', 'app', 'app', 't0')")
        connection.execute(
            "INSERT INTO credentials (key_hash, kind, workspace, source, label, created_at) "
            "VALUES ('aaaa1111', 'write', 'w', 'app', 'old key', 't0')"
        )

    catalog = PostgresCatalog(database, schema=schema)  # start() applies what is pending
    await catalog.start()
    try:
        assert applied_versions(database, schema) == list(range(1, len(MIGRATIONS) + 1))
        assert await catalog.workspace("w") == Workspace(id="w", name="W", created_at="t0")
        assert await catalog.sources("w") == [Source(workspace="w", name="app", default_channel="app", created_at="t0")]
        assert await catalog.credential("aaaa1111") == Credential(
            key_hash="aaaa1111", kind="write", workspace="w", source="app", label="old key", created_at="t0"
        )
        # The old data works with what the later migrations added.
        assert await catalog.add_credential(
            Credential(key_hash="bbbb2222", kind="admin", workspace="w", source=None, label="", created_at="t1")
        )
        assert [c.key_hash for c in await catalog.credentials("w")] == ["aaaa1111", "bbbb2222"]
        assert await catalog.deploy_journey("w", "welcome", "steps: []", "t2") == (1, True)
    finally:
        await catalog.close()


async def test_migrating_twice_applies_nothing(database: str, schema: str) -> None:
    assert await migrate(database, schema=schema) == list(range(1, len(MIGRATIONS) + 1))
    assert await migrate(database, schema=schema) == []
    found = await status(database, schema=schema)
    assert (found.version, found.latest, found.pending) == (len(MIGRATIONS), len(MIGRATIONS), ())
    assert [a.name for a in found.applied] == [m.name for m in MIGRATIONS]


async def test_concurrent_migrations_apply_each_step_once(database: str, schema: str) -> None:
    results = await asyncio.gather(*(migrate(database, schema=schema, migrations=TABLES) for _ in range(6)))
    assert sorted(version for applied in results for version in applied) == [1, 2, 3]
    assert applied_versions(database, schema) == [1, 2, 3]


def test_processes_starting_at_once_migrate_once(database: str, schema: str) -> None:
    command = [sys.executable, "-m", "polku", "db", "migrate", "--store", database, "--schema", schema]
    processes = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [process.communicate(timeout=60)[1] for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, outputs
    assert sum(output.count("applied migration") for output in outputs) == sum(len(t.migrations) for t in TRACKS)
    assert applied_versions(database, schema) == list(range(1, len(MIGRATIONS) + 1))
    status_output = subprocess.run(
        [sys.executable, "-m", "polku", "db", "status", "--store", database, "--schema", schema, "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = json.loads(status_output)
    assert found["pending"] == 0
    assert {t["track"]: t["version"] for t in found["tracks"]} == {t.name: len(t.migrations) for t in TRACKS}


async def test_a_database_newer_than_the_code_is_refused(database: str, schema: str) -> None:
    await migrate(database, schema=schema, migrations=TABLES)
    older_code = TABLES[:2]
    with pytest.raises(ConfigError, match="newer than this polku knows"):
        await migrate(database, schema=schema, migrations=older_code)
    assert (await status(database, schema=schema, migrations=older_code)).newer_than_code

    await migrate(database, schema=f"{schema}_x")
    with psycopg.connect(database) as connection:
        connection.execute(
            sql.SQL("INSERT INTO {}.polku_migrations (version, name) VALUES (99, 'from the future')").format(
                sql.Identifier(f"{schema}_x")
            )
        )
    for apply_migrations in (True, False):
        catalog = PostgresCatalog(database, schema=f"{schema}_x", apply_migrations=apply_migrations)
        with pytest.raises(ConfigError, match="version 99, newer"):
            await catalog.start()


async def test_a_destructive_migration_needs_the_flag(database: str, schema: str) -> None:
    with pytest.raises(ValueError, match="mark it destructive"):
        Migration("sneaky", "ALTER TABLE one DROP COLUMN note")
    Migration("commented", "-- never DROP anything here\nCREATE TABLE four (id INTEGER)")

    steps = (*TABLES, Migration("drop two", "DROP TABLE two", destructive=True))
    await migrate(database, schema=schema, migrations=steps, target=2)
    with pytest.raises(ConfigError, match="allow-destructive") as refused:
        await migrate(database, schema=schema, migrations=steps)
    assert "4 (drop two)" in refused.value.message
    # Refused before anything ran: not even the harmless step 3.
    assert applied_versions(database, schema) == [1, 2]
    assert await migrate(database, schema=schema, migrations=steps, allow_destructive=True) == [3, 4]
    assert rows(database, sql.SQL("SELECT to_regclass({})").format(sql.Literal(f"{schema}.two"))) == [(None,)]


async def test_a_failing_migration_rolls_back_alone(database: str, schema: str) -> None:
    steps = (TABLES[0], Migration("clash", "CREATE TABLE two (id INTEGER); CREATE TABLE one (id INTEGER)"))
    with pytest.raises(PolkuError, match=r"migration 2 \(clash\) failed and was rolled back"):
        await migrate(database, schema=schema, migrations=steps)
    assert applied_versions(database, schema) == [1]
    assert rows(database, sql.SQL("SELECT to_regclass({})").format(sql.Literal(f"{schema}.two"))) == [(None,)]


async def test_a_catalog_that_does_not_migrate_refuses_an_old_schema(database: str, schema: str) -> None:
    await migrate(database, schema=schema, target=1)
    catalog = PostgresCatalog(database, schema=schema, apply_migrations=False)
    with pytest.raises(ConfigError, match="polku db migrate"):
        await catalog.start()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///polku.db",
        "mysql://user:secret@host/db",
        "postgresql://user:secret@host/db?schema=x",
        "localhost:5432",
    ],
)
def test_only_postgresql_urls_are_accepted(url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        PostgresCatalog(url)
    assert "secret" not in refused.value.message
    assert refused.value.code == "invalid_config"


def test_the_cli_reports_a_bad_store_as_invalid_config() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "polku", "db", "status", "--store", "nats://127.0.0.1:4222"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "error invalid_config: 'nats://127.0.0.1:4222' is not a PostgreSQL URL" in result.stderr


def test_status_exits_1_while_any_track_is_pending(database: str, schema: str) -> None:
    command = [sys.executable, "-m", "polku", "db", "status", "--store", database, "--schema", schema]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 1
    total = sum(len(track.migrations) for track in TRACKS)
    output = result.stdout + result.stderr
    assert f"{total} pending: run `polku db migrate`" in output
    for track in TRACKS:
        assert track.name in output


async def test_the_coordination_track_upgrades_in_place_with_its_workers(database: str, schema: str) -> None:
    """Version 2 of the coordination track adds the workers' commit-log position: a
    deployment running version 1 keeps its workers, leases and commit log."""
    from polku.adapters.postgres import coordination_schema
    from polku.adapters.postgres import schema as runner

    first = coordination_schema.MIGRATIONS[:1]
    table = coordination_schema.TRACK_TABLE
    assert await runner.migrate(database, schema=schema, migrations=first, table=table) == [1]
    with psycopg.connect(database, options=f"-c search_path={schema}") as connection:
        connection.execute("INSERT INTO workers (id, role, host, pid) VALUES ('w1', 'worker', 'h', 1)")
        connection.execute("INSERT INTO partition_leases (stream, partition, owner, epoch) VALUES ('S', 0, 'w1', 4)")
        connection.execute("INSERT INTO state_commits (id, owner, keys) VALUES (7, 'w1', ARRAY['c|x'])")
    assert await coordination_schema.migrate(database, schema=schema) == [2]
    with psycopg.connect(database, options=f"-c search_path={schema}") as connection:
        assert connection.execute("SELECT id, role, commits_seen FROM workers").fetchall() == [("w1", "worker", None)]
        assert connection.execute("SELECT owner, epoch FROM partition_leases").fetchall() == [("w1", 4)]
        assert connection.execute("SELECT id, keys FROM state_commits").fetchall() == [(7, ["c|x"])]
