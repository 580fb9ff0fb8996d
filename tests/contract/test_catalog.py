"""One contract for every ``Catalog`` adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from polku.adapters.memory import MemoryCatalog
from polku.adapters.sqlite import SqliteCatalog
from polku.core.errors import NotFound
from polku.core.workspace import Credential, Source, WebhookMapping, Workspace, WorkspaceConfig
from polku.ports import Catalog

pytestmark = pytest.mark.anyio
ADAPTERS: dict[str, Callable[[Path], Catalog]] = {
    "memory": lambda path: MemoryCatalog(),
    "sqlite": lambda path: SqliteCatalog(path),
}


@pytest.fixture(params=sorted(ADAPTERS))
async def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Catalog]:
    adapter = ADAPTERS[request.param](tmp_path)
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
