"""One contract for every ``Catalog`` adapter: memory, SQLite and PostgreSQL (a fresh
schema per test in the session's fresh database, ``conftest.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from polku.adapters.memory import MemoryCatalog
from polku.adapters.postgres import PostgresCatalog
from polku.adapters.sqlite import SqliteCatalog
from polku.core.errors import NotFound
from polku.core.workspace import Credential, Source, WebhookMapping, Workspace, WorkspaceConfig
from polku.ports import Catalog, StoredAnswer

pytestmark = pytest.mark.anyio
ADAPTERS: dict[str, Callable[[pytest.FixtureRequest, Path], Catalog]] = {
    "memory": lambda request, path: MemoryCatalog(),
    "sqlite": lambda request, path: SqliteCatalog(path),
    # Fixtures asked for lazily: only the PostgreSQL cases need the server.
    "postgresql": lambda request, path: PostgresCatalog(
        request.getfixturevalue("postgres_url"), schema=request.getfixturevalue("postgres_schema")
    ),
}


@pytest.fixture(params=sorted(ADAPTERS))
async def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Catalog]:
    adapter = ADAPTERS[request.param](request, tmp_path)
    await adapter.start()
    yield adapter
    await adapter.close()


def credential(key_hash: str, kind: str = "write", workspace: str = "w") -> Credential:
    return Credential(
        key_hash=key_hash,
        kind=kind,  # type: ignore[arg-type]
        workspace=workspace,
        source="web" if kind == "write" else None,
        label="",
        created_at="2024-01-01T00:00:00.000Z",
    )


async def test_workspaces_are_created_once_and_configurable(catalog: Catalog) -> None:
    workspace = Workspace(id="w", name="W", created_at="2024-01-01T00:00:00.000Z")
    assert await catalog.create_workspace(workspace) is True
    assert await catalog.create_workspace(workspace) is False
    assert await catalog.workspace("w") == workspace
    config = WorkspaceConfig(webhooks={"zendesk": WebhookMapping(channel="phone", event="type", user_id="requester")})
    await catalog.set_config("w", config)
    assert (await catalog.workspace("w")).config == config
    assert [found.id for found in await catalog.workspaces()] == ["w"]
    with pytest.raises(NotFound):
        await catalog.workspace("missing")
    with pytest.raises(NotFound):
        await catalog.set_config("missing", config)


async def test_sources(catalog: Catalog) -> None:
    source = Source(workspace="w", name="app", default_channel="app", created_at="x")
    assert await catalog.create_source(source) is True
    assert await catalog.create_source(source) is False
    assert await catalog.source("w", "app") == source
    assert await catalog.sources("w") == [source]
    assert await catalog.sources("other") == []
    with pytest.raises(NotFound):
        await catalog.source("w", "web")


async def test_credentials_resolve_until_revoked(catalog: Catalog) -> None:
    assert await catalog.add_credential(credential("aaaa1111")) is True
    assert await catalog.add_credential(credential("aaaa1111")) is False
    await catalog.add_credential(credential("bbbb2222", kind="admin"))
    found = await catalog.credential("aaaa1111")
    assert found is not None and found.kind == "write" and found.source == "web"
    assert [c.key_hash for c in await catalog.credentials("w", "admin")] == ["bbbb2222"]
    revoked = await catalog.revoke_credential("w", "aaaa", "2024-02-01T00:00:00.000Z")
    assert revoked.revoked_at == "2024-02-01T00:00:00.000Z"
    assert await catalog.credential("aaaa1111") is None
    with pytest.raises(NotFound):
        await catalog.revoke_credential("w", "aaaa", "later")
    with pytest.raises(NotFound):
        await catalog.revoke_credential("other", "bbbb", "later")


async def test_when_a_key_was_last_used_is_recorded(catalog: Catalog) -> None:
    await catalog.add_credential(credential("cccc1111"))
    await catalog.add_credential(credential("dddd2222", kind="admin"))
    assert [c.last_used_at for c in await catalog.credentials("w")] == [None, None]
    await catalog.record_key_use({"cccc1111": "2024-03-01T10:00:00.000Z", "nope": "2024-03-01T10:00:00.000Z"})
    await catalog.record_key_use({"cccc1111": "2024-03-02T10:00:00.000Z"})
    found = await catalog.credential("cccc1111")
    assert found is not None and found.last_used_at == "2024-03-02T10:00:00.000Z"
    assert [c.last_used_at for c in await catalog.credentials("w")] == ["2024-03-02T10:00:00.000Z", None]


async def test_an_ambiguous_or_foreign_key_prefix_revokes_nothing(catalog: Catalog) -> None:
    await catalog.add_credential(credential("abcd1111"))
    await catalog.add_credential(credential("abcd2222"))
    await catalog.add_credential(credential("abcd3333", workspace="other"))
    with pytest.raises(NotFound):
        await catalog.revoke_credential("w", "abcd", "later")
    assert await catalog.credential("abcd1111") is not None and await catalog.credential("abcd2222") is not None
    assert (await catalog.revoke_credential("w", "abcd2", "later")).key_hash == "abcd2222"
    assert [c.key_hash for c in await catalog.credentials("w")] == ["abcd1111", "abcd2222"]
    assert [c.revoked_at for c in await catalog.credentials("w")] == [None, "later"]


async def test_lists_come_in_code_point_order(catalog: Catalog) -> None:
    for name in ["ab", "a_c", "a-b", "b", "a0"]:
        await catalog.create_workspace(Workspace(id=name, name=name.upper(), created_at="x"))
        await catalog.create_source(Source(workspace="w", name=name, default_channel="web", created_at="x"))
    expected = ["a-b", "a0", "a_c", "ab", "b"]
    assert [found.id for found in await catalog.workspaces()] == expected
    assert [found.name for found in await catalog.sources("w")] == expected


async def test_definitions_are_versioned_with_a_head(catalog: Catalog) -> None:
    assert await catalog.deploy_definition("journey", "w", "welcome", "v1", "t1") == (1, True)
    assert await catalog.deploy_definition("journey", "w", "welcome", "v1", "t2") == (1, False)
    assert await catalog.deploy_definition("journey", "w", "welcome", "v2", "t3") == (2, True)
    current = await catalog.definition("journey", "w", "welcome")
    assert (current.version, current.body, current.deployed_at, current.current) == (2, "v2", "t3", 2)
    assert (current.status, current.updated_at, current.versions) == ("active", "t3", (1, 2))
    first = await catalog.definition("journey", "w", "welcome", 1)
    assert (first.version, first.body, first.deployed_at, first.current, first.versions) == (1, "v1", "t1", 2, (1, 2))

    paused = await catalog.set_definition_status("journey", "w", "welcome", "paused", "t4")
    assert (paused.version, paused.status, paused.updated_at) == (2, "paused", "t4")
    # A new version keeps the status; redeploying an old body is a new version.
    assert await catalog.deploy_definition("journey", "w", "welcome", "v1", "t5") == (3, True)
    latest = await catalog.definition("journey", "w", "welcome")
    assert (latest.version, latest.body, latest.status, latest.updated_at) == (3, "v1", "paused", "t5")

    with pytest.raises(NotFound):
        await catalog.definition("journey", "w", "welcome", 4)
    with pytest.raises(NotFound):
        await catalog.definition("journey", "w", "missing")
    with pytest.raises(NotFound):
        await catalog.definition("journey", "other", "welcome")
    with pytest.raises(NotFound):
        await catalog.set_definition_status("journey", "w", "missing", "archived", "t6")


async def test_kinds_and_workspaces_keep_their_definitions_apart(catalog: Catalog) -> None:
    await catalog.deploy_journey("w", "b", "journey b", "t1")
    await catalog.deploy_journey("w", "a", "journey a", "t1")
    await catalog.deploy_definition("survey", "w", "a", "survey a", "t2")
    await catalog.deploy_definition("actions", "w", "actions", "catalogue", "t3")
    await catalog.deploy_journey("other", "c", "journey c", "t4")
    assert [(j.id, j.body) for j in await catalog.journeys("w")] == [("a", "journey a"), ("b", "journey b")]
    assert [(s.id, s.body) for s in await catalog.definitions("survey", "w")] == [("a", "survey a")]
    assert [(a.id, a.body) for a in await catalog.definitions("actions", "w")] == [("actions", "catalogue")]
    assert await catalog.definitions("survey", "other") == []
    archived = await catalog.set_journey_status("w", "a", "archived", "t5")
    assert archived.status == "archived"
    assert (await catalog.definition("survey", "w", "a")).status == "active"
    assert (await catalog.journey("w", "a")).status == "archived"


async def test_concurrent_deploys_get_consecutive_versions(catalog: Catalog) -> None:
    results = await asyncio.gather(
        *(catalog.deploy_definition("journey", "w", "busy", f"body {n}", f"t{n}") for n in range(12))
    )
    assert sorted(version for version, _ in results) == list(range(1, 13))
    assert all(created for _, created in results)
    stored = await catalog.definition("journey", "w", "busy")
    assert stored.versions == tuple(range(1, 13)) and stored.current == 12
    bodies = {(await catalog.definition("journey", "w", "busy", version)).body for version in stored.versions}
    assert bodies == {f"body {n}" for n in range(12)}


async def test_concurrent_first_deploys_of_one_body_store_it_once(catalog: Catalog) -> None:
    results = await asyncio.gather(*(catalog.deploy_definition("survey", "w", "nps", "same", "t") for _ in range(8)))
    assert sorted(results) == [(1, False)] * 7 + [(1, True)]
    assert (await catalog.definition("survey", "w", "nps")).versions == (1,)


async def test_concurrent_creations_succeed_once(catalog: Catalog) -> None:
    workspace = Workspace(id="w", name="W", created_at="x")
    source = Source(workspace="w", name="app", default_channel="app", created_at="x")
    assert sorted(await asyncio.gather(*(catalog.create_workspace(workspace) for _ in range(6)))) == [False] * 5 + [
        True
    ]
    assert sorted(await asyncio.gather(*(catalog.create_source(source) for _ in range(6)))) == [False] * 5 + [True]
    added = await asyncio.gather(*(catalog.add_credential(credential("cccc3333")) for _ in range(6)))
    assert sorted(added) == [False] * 5 + [True]


async def test_survey_answers_keep_the_latest_revision(catalog: Catalog) -> None:
    assert await catalog.survey_answer("w", "inv1") is None
    first = StoredAnswer(invitation="inv1", revision=1, first_ms=10, updated_ms=10, answer={"score": 3})
    await catalog.record_survey_answer("w", first)
    assert await catalog.survey_answer("w", "inv1") == first
    # Free text is stored as given, U+0000 and all.
    edited = StoredAnswer(
        invitation="inv1", revision=2, first_ms=10, updated_ms=20, answer={"score": 9, "comment": "ok\u0000 ✓"}
    )
    await catalog.record_survey_answer("w", edited)
    stale = StoredAnswer(invitation="inv1", revision=1, first_ms=10, updated_ms=30, answer={"score": 0})
    await catalog.record_survey_answer("w", stale)
    assert await catalog.survey_answer("w", "inv1") == edited
    assert await catalog.survey_answer("other", "inv1") is None


async def test_the_audit_log_keeps_each_workspaces_actions_in_order(catalog: Catalog) -> None:
    from polku.core.audit import AuditEntry

    def entry(workspace: str, action: str) -> AuditEntry:
        return AuditEntry(
            workspace=workspace,
            at="2026-11-24T08:00:00.000Z",
            actor="admin:0123456789ab (ops)",
            action=action,
            status=200,
            address="127.0.0.1",
            user_agent=None,
        )

    for number in range(5):
        await catalog.record_audit(entry("a", f"PUT /v1/journeys/j{number}"))
    await catalog.record_audit(entry("b", "DELETE /v1/keys/x"))
    mine = await catalog.audit_entries("a")
    assert [e.action for e in mine] == [f"PUT /v1/journeys/j{number}" for number in range(5)]
    assert len({e.id for e in mine}) == 5 and [e.id for e in mine] == sorted(e.id for e in mine)
    assert mine[0].actor == "admin:0123456789ab (ops)" and mine[0].address == "127.0.0.1" and mine[0].user_agent is None
    page = await catalog.audit_entries("a", after_id=mine[1].id, limit=2)
    assert [e.action for e in page] == ["PUT /v1/journeys/j2", "PUT /v1/journeys/j3"]
    assert [e.action for e in await catalog.audit_entries("b")] == ["DELETE /v1/keys/x"]  # and nothing of a
    assert await catalog.audit_entries("c") == []
