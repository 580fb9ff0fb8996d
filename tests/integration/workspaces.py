"""A second workspace with an admin token of its own, made through the API
(``POST /v1/workspaces``) by the server's first admin token."""

from __future__ import annotations

from tests.conftest import ServerProcess


def other_workspace_admin(server: ServerProcess, workspace: str = "other") -> str:
    with server.admin() as admin:
        made = admin.post("/v1/workspaces", json={"id": workspace, "name": workspace})
        assert made.status_code == 201, made.text
    (token,) = [key["key"] for key in made.json()["keys"] if key["kind"] == "admin"]
    return str(token)
