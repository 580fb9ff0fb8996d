"""A second workspace with an admin token of its own, made straight in a running
server's catalog (the API makes no workspaces yet)."""

from __future__ import annotations

import asyncio

from tests.conftest import ServerProcess

from polku.adapters.sqlite import SqliteCatalog
from polku.core.workspace import Workspace
from polku.engine.setup import add_key


def other_workspace_admin(server: ServerProcess, workspace: str = "other") -> str:
    async def go() -> str:
        catalog = SqliteCatalog(server.data_dir)
        await catalog.start()
        try:
            await catalog.create_workspace(
                Workspace(id=workspace, name=workspace, created_at="2026-11-24T00:00:00.000Z")
            )
            made = await add_key(catalog, "admin", workspace, None, label=f"{workspace}-admin")
            assert made is not None
            return made.key
        finally:
            await catalog.close()

    return asyncio.run(go())
