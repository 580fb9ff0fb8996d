from __future__ import annotations

import json

import httpx
from tests.conftest import WRITE_KEY, ServerProcess

CONFIG = """
webhooks:
  callcenter:
    channel: phone
    records: calls
    event: "'Call Ended'"
    user_id: customer.id
    message_id: call_id
    timestamp: ended_at
    properties: "{reason: reason, minutes: minutes}"
"""


def test_webhook_payloads_become_events_through_the_workspace_mapping(server: ServerProcess) -> None:
    with server.admin() as admin:
        response = admin.put("/v1/workspace/config", content=CONFIG, headers={"Content-Type": "application/yaml"})
        assert response.status_code == 200, response.text
    payload = {
        "calls": [
            {
                "call_id": "c1",
                "customer": {"id": "u1"},
                "ended_at": "2024-03-01T10:00:00Z",
                "reason": "password",
                "minutes": 7,
            },
            {"call_id": "c2", "customer": {}, "ended_at": "2024-03-01T11:00:00Z", "reason": "billing", "minutes": 3},
        ]
    }
    with server.writer() as client:
        first = client.post("/v1/webhooks/callcenter", json=payload)
        retried = client.post("/v1/webhooks/callcenter", json=payload)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["accepted"] == 1
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [(1, "missing_identity")]
    assert retried.json()["accepted"] == 0 and retried.json()["duplicates"] == 1
    [event] = server.all_events()
    assert event["messageId"] == "c1"
    assert event["channel"] == "phone"
    assert event["event"] == "Call Ended"
    assert event["originalTimestamp"] == "2024-03-01T10:00:00.000Z"
    assert event["properties"] == {"reason": "password", "minutes": 7}
    with server.admin() as admin:
        entries = admin.get("/v1/quarantine").json()["entries"]
    assert [e["code"] for e in entries] == ["missing_identity", "missing_identity"]


def test_unknown_webhook_source_and_bad_config_are_clear_errors(server: ServerProcess) -> None:
    with server.writer() as client:
        response = client.post("/v1/webhooks/nothing", json={"a": 1})
    assert response.status_code == 404
    assert "no webhook mapping named 'nothing'" in response.json()["message"]
    with server.admin() as admin:
        response = admin.put(
            "/v1/workspace/config", content="webhooks:\n  x:\n    channel: phone\n    event: '[['\n    user_id: a\n"
        )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_config"
    assert "webhooks.x.event" in response.json()["message"]


def test_secrets_never_reach_stored_data_and_unmapped_payloads_are_kept(server: ServerProcess) -> None:
    with server.admin() as admin:
        assert admin.put("/v1/workspace/config", content=CONFIG).status_code == 200
    with httpx.Client(base_url=server.url) as client:
        body = {
            "writeKey": WRITE_KEY,
            "calls": [{"call_id": "c9", "customer": {"id": "u9"}, "ended_at": "2024-03-01T10:00:00Z"}],
        }
        assert client.post("/v1/webhooks/callcenter", json=body).status_code == 200
        unmapped = client.post("/v1/webhooks/helpdesk", json={"writeKey": WRITE_KEY, "ticket": 5})
        refused = client.post("/v1/batch", json={"writeKey": WRITE_KEY, "batch": [{"type": "track", "userId": "u"}]})
    assert unmapped.status_code == 404 and unmapped.json()["quarantined"] is True
    assert refused.json()["rejected"][0]["code"] == "missing_field"
    with server.admin() as admin:
        entries = admin.get("/v1/quarantine").json()["entries"]
    assert [e["code"] for e in entries] == ["no_mapping", "missing_field"]
    assert json.loads(entries[0]["body"]) == {"ticket": 5}
    stored = json.dumps([server.all_events(), entries])
    assert WRITE_KEY not in stored
