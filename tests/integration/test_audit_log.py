"""The audit log through a real ``polku serve``: every change an admin token makes and
every export is recorded with who, what, when, from where and how it ended; reads,
ingestion and refused tokens are not admin actions; another workspace's admin
sees none of it."""

from __future__ import annotations

import httpx
from tests.conftest import ADMIN_TOKEN, ServerProcess
from tests.integration.workspaces import other_workspace_admin


def test_admin_actions_are_recorded_with_who_what_when_where_and_the_outcome(server: ServerProcess) -> None:
    config = "channels:\n  email: {type: smtp, port: 2525, sender: shop@example.com}\n"
    with server.admin() as admin, server.writer() as writer:
        admin.headers["User-Agent"] = "audit-test/1"
        assert admin.put("/v1/workspace/config", content=config).status_code == 200
        made = admin.post("/v1/keys", json={"kind": "write", "source": "default", "label": "shop"})
        assert made.status_code == 201, made.text
        key_id = made.json()["key_id"]
        assert admin.delete(f"/v1/keys/{key_id}").status_code == 200
        assert admin.get("/v1/profiles/c_nobody/export").status_code == 404  # a read that hands data out
        bad = admin.put("/v1/journeys/x", content="id: x\nentry: {event: E}\nsteps: []\n")
        assert bad.status_code == 400
        # Not admin actions: reads, ingestion, a refused token.
        assert admin.get("/v1/journeys").status_code == 200
        assert writer.post("/v1/track", json={"userId": "u", "event": "E"}).status_code == 200
        refused = httpx.put(
            f"{server.url}/v1/workspace/config", content=config, headers={"Authorization": "Bearer wrong"}
        )
        assert refused.status_code == 401
        entries = admin.get("/v1/audit").json()["entries"]
    actions = [(entry["action"], entry["status"]) for entry in entries]
    assert actions == [
        ("PUT /v1/workspace/config", 200),
        ("POST /v1/keys", 201),
        (f"DELETE /v1/keys/{key_id}", 200),
        ("GET /v1/profiles/c_nobody/export", 404),
        ("PUT /v1/journeys/x", 400),
    ]
    first = entries[0]
    assert first["actor"].startswith("admin:") and first["address"] == "127.0.0.1"
    assert first["user_agent"] == "audit-test/1" and first["at"].endswith("Z")
    assert ADMIN_TOKEN not in str(entries)  # who, by the token's hash, never the token


def test_another_workspaces_admin_sees_none_of_it(server: ServerProcess) -> None:
    with server.admin() as admin:
        assert admin.put("/v1/workspace/config", content="{}").status_code == 200
        assert len(admin.get("/v1/audit").json()["entries"]) == 1

    token = other_workspace_admin(server)
    answer = httpx.get(f"{server.url}/v1/audit", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200 and answer.json()["entries"] == []
