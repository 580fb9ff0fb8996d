"""Workspaces made through the API and the CLI (a real ``polku serve``): the first
admin token of the installation makes one; the new workspace's own keys work there
and only there; a token without the ``workspaces`` scope cannot make one; no token
gives a key more than it has; an admin token with ``ingest`` sends events."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
from tests.conftest import ServerProcess
from tests.journeys.test_journey_e2e import until


def _client(server: ServerProcess, token: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def test_a_workspace_made_through_the_api_is_a_tenant_of_its_own(server: ServerProcess) -> None:
    with server.admin() as admin:
        made = admin.post("/v1/workspaces", json={"id": "acme", "name": "Acme Oy", "channel": "app"})
        assert made.status_code == 201, made.text
        assert made.json()["workspace"]["id"] == "acme"
        keys = {key["kind"]: key for key in made.json()["keys"]}
        assert keys["admin"]["scopes"] == ["manage", "privacy", "read"] and keys["write"]["source"] == "default"
        again = admin.post("/v1/workspaces", json={"id": "acme"})
        assert again.status_code == 409 and again.json()["code"] == "conflict"
        bad = admin.post("/v1/workspaces", json={"id": "Not OK"})
        assert bad.status_code == 400
        listed = [w["id"] for w in admin.get("/v1/workspaces").json()["workspaces"]]
        assert listed == ["acme", "default"]
        assert admin.get("/v1/profiles/lookup", params={"user_id": "wile"}).status_code == 404

    with httpx.Client(base_url=server.url, auth=(keys["write"]["key"], ""), timeout=30) as writer:
        assert writer.post("/v1/track", json={"userId": "wile", "event": "Ordered"}).status_code == 200
    with _client(server, keys["admin"]["key"]) as acme:
        found = until(
            lambda: (r := acme.get("/v1/profiles/lookup", params={"user_id": "wile"})).status_code == 200 and r.json(),
            what="the event in acme",
        )
        assert found["events"] == 1
        refused = acme.post("/v1/workspaces", json={"id": "beta"})
        assert refused.status_code == 403 and refused.json()["scope"] == "workspaces"
        assert acme.get("/v1/workspace").json()["id"] == "acme"
    with server.admin() as admin:  # the default workspace did not get it
        assert admin.get("/v1/profiles/lookup", params={"user_id": "wile"}).status_code == 404


def test_no_token_gives_more_than_it_has_and_ingest_sends_events(server: ServerProcess) -> None:
    with server.admin() as admin:
        manager = admin.post("/v1/keys", json={"kind": "admin", "scopes": ["manage", "read"]}).json()["key"]
        ingester = admin.post("/v1/keys", json={"kind": "admin", "scopes": ["ingest"]}).json()["key"]
    with _client(server, manager) as client:
        beyond = client.post("/v1/keys", json={"kind": "admin", "scopes": ["privacy"]})
        assert beyond.status_code == 403 and beyond.json()["scope"] == "privacy"
        default = client.post("/v1/keys", json={"kind": "admin"})
        assert default.status_code == 201 and default.json()["scopes"] == ["manage", "read"]
    with _client(server, ingester) as client:
        assert client.post("/v1/track", json={"userId": "ina", "event": "Signed Up"}).status_code == 200
        assert client.get("/v1/keys").status_code == 403  # it sends events, and reads nothing
    with _client(server, manager) as client:  # a token without `ingest` sends nothing
        assert client.post("/v1/track", json={"userId": "ina", "event": "X"}).status_code == 401
    with server.admin() as admin:
        until(
            lambda: admin.get("/v1/profiles/lookup", params={"user_id": "ina"}).status_code == 200,
            what="the event sent with the ingest token",
        )


def test_the_cli_makes_and_lists_workspaces(server: ServerProcess) -> None:
    base = [sys.executable, "-m", "polku", "workspace"]
    made = subprocess.run(
        [*base, "create", "cli-made", "--name", "From the CLI", "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    document = json.loads(made.stdout)
    assert document["workspace"]["id"] == "cli-made" and {k["kind"] for k in document["keys"]} == {"admin", "write"}
    listed = subprocess.run(
        [*base, "list", "--format", "json", "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert [w["id"] for w in json.loads(listed.stdout)] == ["cli-made", "default"]
    again = subprocess.run(
        [*base, "create", "cli-made", "--data-dir", str(server.data_dir)], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 2 and "exists" in again.stdout + again.stderr
    token = next(k["key"] for k in document["keys"] if k["kind"] == "admin")
    with _client(server, token) as client:
        assert client.get("/v1/workspace").json()["id"] == "cli-made"
