"""Workspaces are isolated, tried on every admin operation of the OpenAPI document
against a real ``polku serve``: workspace A holds a customer, an account, a journey,
a survey, a key and a quarantined message; B's admin token, aimed at A's very ids on
every operation, reads none of it (no answer names any of A's ids) and changes none
of it (A's journey, survey, key, configuration and quarantine are as they were)."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
from tests.conftest import ServerProcess
from tests.integration.workspaces import other_workspace_admin
from tests.journeys.test_journey_e2e import until

JOURNEY = "id: welcome-a\nentry: {event: Signed Up}\nsteps:\n  - id: pause\n    wait: 1h\n"
SURVEY = """
id: csat-a
metric: csat
question: {en: "How was it, alice?"}
channels: [in_app]
triggers: [{event: Order Completed}]
"""
CONFIG = "channels:\n  email: {type: smtp, port: 2525, sender: a-only@example.com}\n"


def test_an_admin_of_another_workspace_reads_and_changes_nothing_of_it(server: ServerProcess) -> None:
    with server.admin() as admin, server.writer() as writer:
        assert admin.put("/v1/workspace/config", content=CONFIG).status_code == 200
        assert admin.put("/v1/journeys/welcome-a", content=JOURNEY).status_code == 201
        assert admin.put("/v1/surveys/csat-a", content=SURVEY).status_code == 201
        key = admin.post("/v1/keys", json={"kind": "write", "source": "default", "label": "a-key"}).json()
        time.sleep(1.2)  # the processor reads the journey and the survey
        batch = [
            {"type": "identify", "userId": "alice-a", "traits": {"email": "alice-a@example.com"}},
            {"type": "group", "userId": "alice-a", "groupId": "acct-a", "traits": {"name": "Acme A"}},
            {"type": "track", "userId": "alice-a", "event": "Signed Up"},
            {"type": "track", "userId": "alice-a", "event": "Order Completed"},
            {"type": "track", "userId": "zed-a", "event": "Signed Up"},
        ]
        assert writer.post("/v1/batch", json={"batch": batch}).status_code == 200
        assert writer.post("/v1/track", json={"userId": "alice-a"}).status_code == 400  # no event: quarantined
        customer = until(
            lambda: (
                (r := admin.get("/v1/profiles/lookup", params={"user_id": "alice-a"})).status_code == 200
                and r.json()["events"] == 4
                and r.json()["customer_id"]
            ),
            what="alice's profile",
        )
        zed = until(
            lambda: (
                (r := admin.get("/v1/profiles/lookup", params={"user_id": "zed-a"})).status_code == 200
                and r.json()["customer_id"]
            ),
            what="zed's profile",
        )
        erasure = admin.delete(f"/v1/profiles/{zed}", params={"wait": 60}).json()["id"]  # an erasure of A's
        (entry,) = admin.get("/v1/quarantine").json()["entries"]
        before = {
            path: admin.get(path).json() for path in ("/v1/journeys/welcome-a", "/v1/surveys/csat-a", "/v1/workspace")
        }
    ids = {
        "customer_id": customer,
        "journey_id": "welcome-a",
        "survey_id": "csat-a",
        "key_id": key["key_id"],
        "entry_id": str(entry["id"]),
        "account_id": "acct-a",
        "version": "1",
        "name": "channel-mix",
        "erasure_id": erasure,
    }
    secrets = [
        customer,
        "alice-a",
        "acct-a",
        "welcome-a",
        "csat-a",
        key["key_id"],
        "a-only@example.com",
        "Acme A",
        erasure,
    ]

    token = other_workspace_admin(server, "bee")
    document = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    leaks: list[Any] = []
    changed: list[Any] = []
    for template, operations in document["paths"].items():
        for method, operation in operations.items():
            if operation.get("security") != [{"adminToken": []}]:
                continue
            path = re.sub(r"\{([^}]+)\}", lambda found: ids[found[1]], template)
            query = {"user_id": "alice-a"} if template == "/v1/profiles/lookup" else {}
            answer = httpx.request(
                method.upper(),
                f"{server.url}{path}",
                params=query,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                content=b"{}" if method in ("post", "put") else None,
                timeout=30,
            )
            # A 404 may say which id it did not find: only what the request did not
            # name itself would be a leak.
            named = path + str(query)
            found = [secret for secret in secrets if secret in answer.text and secret not in named]
            if found:
                leaks.append((method.upper(), path, answer.status_code, found, answer.text[:200]))
            if answer.status_code >= 500:
                changed.append((method.upper(), path, answer.status_code, answer.text[:200]))
    assert not leaks, leaks[:5]
    assert not changed, changed[:5]

    with server.admin() as admin:
        after = {path: admin.get(path).json() for path in before}
        assert after == before  # A's journey, survey and configuration
        keys = {k["key_id"]: k["revoked_at"] for k in admin.get("/v1/keys").json()["keys"]}
        assert keys[key["key_id"]] is None
        assert [e["id"] for e in admin.get("/v1/quarantine").json()["entries"]] == [entry["id"]]
        assert admin.get(f"/v1/profiles/{customer}").status_code == 200  # B's DELETE erased no one of A
        assert [found["id"] for found in admin.get("/v1/erasures").json()["erasures"]] == [erasure]
