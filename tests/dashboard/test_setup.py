"""Surveys, channels and sources pages against a real server: keys made and
revoked through the forms work (and stop working) at the ingestion API, forms
without their CSRF token change nothing, the quarantine can be worked through,
and each page shows what the matching ``/v1`` route returns."""

from __future__ import annotations

import hashlib
import html
import re
import time
import uuid
from collections import Counter
from typing import Any

import httpx

from polku.dashboard.pages.setup import masked_url
from tests.conftest import ServerProcess
from tests.dashboard.conftest import csrf_of
from tests.dashboard.test_customers import now_iso, send, wait_for


def ingest(server: ServerProcess, key: str, marker: str) -> httpx.Response:
    event = {"type": "track", "event": "Key Tested", "userId": f"key-test-{marker}", "timestamp": now_iso()}
    return httpx.post(f"{server.url}/v1/batch", json={"batch": [event]}, auth=(key, ""), timeout=10)


def new_key_of(page: str) -> str:
    found = re.search(r'id="new-key-value" value="([^"]+)"', page)
    assert found, "the page does not show the new key"
    return html.unescape(found.group(1))


def test_a_write_key_made_in_the_form_is_shown_once_works_and_can_be_revoked(
    demo_server: ServerProcess, ui: httpx.Client
) -> None:
    marker = uuid.uuid4().hex[:8]
    csrf = csrf_of(ui.get("/ui/sources").text)
    created = ui.post("/ui/keys/create", data={"csrf": csrf, "kind": "write", "source": "default", "label": marker})
    assert created.status_code == 201, created.text[:500]
    key = new_key_of(created.text)
    assert "only this once" in created.text
    assert "location" not in created.headers
    key_id = hashlib.sha256(key.encode()).hexdigest()[:12]

    assert ingest(demo_server, key, marker).status_code == 200

    listed = ui.get("/ui/sources").text
    assert f'data-key="{key_id}"' in listed
    assert key not in listed
    with demo_server.admin() as admin:
        keys = {item["key_id"]: item for item in admin.get("/v1/keys").json()["keys"]}
    assert keys[key_id]["label"] == marker and keys[key_id]["revoked_at"] is None

    # Without the form's token nothing happens.
    refused = ui.post(f"/ui/keys/{key_id}/revoke", data={"csrf": "not-the-token"})
    assert refused.status_code == 403
    assert ingest(demo_server, key, marker).status_code == 200

    revoked = ui.post(f"/ui/keys/{key_id}/revoke", data={"csrf": csrf})
    assert revoked.status_code == 303
    assert "notice=" in revoked.headers["location"]
    assert ingest(demo_server, key, marker).status_code == 401
    with demo_server.admin() as admin:
        keys = {item["key_id"]: item for item in admin.get("/v1/keys").json()["keys"]}
    assert keys[key_id]["revoked_at"] is not None
    assert "revoked" in ui.get("/ui/sources").text.split(f'data-key="{key_id}"', 1)[1].split("</tr>", 1)[0]


def test_the_session_admin_token_is_not_revoked_from_the_dashboard(
    demo_server: ServerProcess, ui: httpx.Client
) -> None:
    with demo_server.admin() as admin:
        token = admin.headers["authorization"].removeprefix("Bearer ")
    own = hashlib.sha256(token.encode()).hexdigest()[:12]
    csrf = csrf_of(ui.get("/ui/sources").text)
    response = ui.post(f"/ui/keys/{own}/revoke", data={"csrf": csrf})
    assert response.status_code == 303
    assert "error=" in response.headers["location"]
    assert ui.get("/ui/sources").status_code == 200  # still logged in
    with demo_server.admin() as admin:
        keys = {item["key_id"]: item for item in admin.get("/v1/keys").json()["keys"]}
    assert keys[own]["revoked_at"] is None


def test_a_source_made_in_the_form_gets_a_working_key(demo_server: ServerProcess, ui: httpx.Client) -> None:
    name = f"desk-{uuid.uuid4().hex[:6]}"
    csrf = csrf_of(ui.get("/ui/sources").text)
    created = ui.post("/ui/sources/create", data={"csrf": csrf, "name": name, "channel": "phone"})
    assert created.status_code == 201, created.text[:500]
    key = new_key_of(created.text)
    assert ingest(demo_server, key, name).status_code == 200
    with demo_server.admin() as admin:
        sources = {s["name"]: s for s in admin.get("/v1/workspace").json()["sources"]}
    assert sources[name]["default_channel"] == "phone"
    assert f'data-source="{name}"' in ui.get("/ui/sources").text

    again = ui.post("/ui/sources/create", data={"csrf": csrf, "name": name, "channel": "phone"})
    assert again.status_code == 303 and "error=" in again.headers["location"]
    invalid = ui.post("/ui/sources/create", data={"csrf": csrf, "name": "Not A Name", "channel": "phone"})
    assert invalid.status_code == 303 and "error=" in invalid.headers["location"]
    with demo_server.admin() as admin:
        names = {s["name"] for s in admin.get("/v1/workspace").json()["sources"]}
    assert "Not A Name" not in names


def test_forms_without_a_valid_csrf_token_change_nothing(demo_server: ServerProcess, ui: httpx.Client) -> None:
    with demo_server.admin() as admin:
        before = admin.get("/v1/keys").json()["keys"]
    for data in ({"kind": "write", "source": "default"}, {"csrf": "forged", "kind": "admin"}):
        response = ui.post("/ui/keys/create", data=data)
        assert response.status_code == 403
        assert "new-key-value" not in response.text
    assert ui.post("/ui/sources/create", data={"name": "forged", "channel": "web"}).status_code == 403
    with demo_server.admin() as admin:
        assert admin.get("/v1/keys").json()["keys"] == before
        assert "forged" not in {s["name"] for s in admin.get("/v1/workspace").json()["sources"]}


def quarantined(server: ServerProcess, marker: str) -> dict[str, Any]:
    """A message the server refuses (a track call without its event name), as the
    quarantine API lists it."""
    send_invalid = {"type": "track", "userId": f"q-{marker}", "timestamp": now_iso(), "properties": {"m": marker}}
    with server.writer() as writer:
        writer.post("/v1/batch", json={"batch": [send_invalid]})
    with server.admin() as admin:
        entries = admin.get("/v1/quarantine", params={"limit": 1000}).json()["entries"]
    return next(entry for entry in entries if marker in entry["body"])


def test_quarantine_entries_are_discarded_and_resubmitted_from_the_page(
    demo_server: ServerProcess, ui: httpx.Client
) -> None:
    first = quarantined(demo_server, uuid.uuid4().hex[:8])
    second = quarantined(demo_server, uuid.uuid4().hex[:8])
    page = ui.get("/ui/sources")
    assert 'id="quarantine"' in page.text
    csrf = csrf_of(page.text)

    assert ui.post(f"/ui/quarantine/{first['id']}/discard", data={"csrf": "forged"}).status_code == 403
    with demo_server.admin() as admin:
        assert admin.get(f"/v1/quarantine/{first['id']}").json()["status"] == "open"

    discarded = ui.post(f"/ui/quarantine/{first['id']}/discard", data={"csrf": csrf})
    assert discarded.status_code == 303 and "notice=" in discarded.headers["location"]

    fixed = first_body = second["body"]
    fixed = fixed.replace('"type":"track"', '"type":"track","event":"Fixed In The Dashboard"', 1)
    assert fixed != first_body
    resubmitted = ui.post(f"/ui/quarantine/{second['id']}/resubmit", data={"csrf": csrf, "body": fixed})
    assert resubmitted.status_code == 303 and "notice=" in resubmitted.headers["location"], resubmitted.headers
    with demo_server.admin() as admin:
        assert admin.get(f"/v1/quarantine/{first['id']}").json()["status"] == "discarded"
        assert admin.get(f"/v1/quarantine/{second['id']}").json()["status"] == "resubmitted"
    assert f'data-entry="{first["id"]}"' not in ui.get("/ui/sources").text


PING_JOURNEY = """
id: dashboard-delivery-check
name: Dashboard delivery check
entry: {event: Dashboard Delivery Check}
steps:
  - id: send
    action: {channel: email, subject: "Checking", body: "Hello"}
"""


def test_the_channels_page_lists_what_the_deliveries_api_returns(demo_server: ServerProcess, ui: httpx.Client) -> None:
    # A journey that emails at once; the demo's inbox is gone, so deliveries wait and retry.
    with demo_server.admin() as admin:
        deployed = admin.put(
            "/v1/journeys/dashboard-delivery-check", content=PING_JOURNEY, headers={"content-type": "application/yaml"}
        )
        assert deployed.status_code in (200, 201), deployed.text
        user = f"delivery-{uuid.uuid4().hex[:8]}"

        def delivered() -> list[dict[str, Any]]:
            time.sleep(0.8)  # the processor picks up a new journey within a moment
            send(
                demo_server,
                {"type": "track", "event": "Dashboard Delivery Check", "userId": user, "timestamp": now_iso(),
                 "context": {"channel": "web"}},
            )  # fmt: skip
            return list(admin.get("/v1/deliveries", params={"limit": 50}).json()["deliveries"])

        wait_for(delivered, timeout=60)
        page = ui.get("/ui/channels")
        listed = admin.get("/v1/deliveries", params={"limit": 50}).json()["deliveries"]
        dead = admin.get("/v1/deliveries", params={"status": "dead", "limit": 50}).json()["deliveries"]
        pending = admin.get("/v1/deliveries", params={"status": "pending", "limit": 50}).json()["deliveries"]
    assert page.status_code == 200
    counts = Counter(row["status"] for row in listed)
    for status in ("pending", "sent", "dead"):
        assert re.search(rf'data-shown="{status}">{counts[status]}<', page.text), status
    rows = re.findall(r'data-delivery="([^"]+)" data-status="([^"]+)"', page.text)
    assert Counter(status for _, status in rows) == counts
    assert {key for key, _ in rows} == {row["key"] for row in listed}
    failed_section = page.text.split('id="failed"', 1)[1]
    assert set(re.findall(r'data-failed="([^"]+)"', failed_section)) == {row["key"] for row in dead}

    only_pending = ui.get("/ui/channels", params={"status": "pending"})
    shown = re.findall(r'data-delivery="([^"]+)" data-status="([^"]+)"', only_pending.text)
    assert {key for key, _ in shown} == {row["key"] for row in pending}
    assert all(status == "pending" for _, status in shown)
    assert "ConnectError" in only_pending.text or not pending  # the last error is shown


def test_the_surveys_pages_match_the_api_and_pause_and_resume(demo_server: ServerProcess, ui: httpx.Client) -> None:
    with demo_server.admin() as admin:
        surveys = admin.get("/v1/surveys").json()["surveys"]
    assert surveys, "the demo deploys surveys"
    page = ui.get("/ui/surveys")
    assert page.status_code == 200
    for survey in surveys:
        row = page.text.split(f'data-survey="{survey["id"]}"', 1)[1].split("</tr>", 1)[0]
        assert f"status-{survey['status']}" in row
        for name in ("sent", "suppressed", "answered"):
            assert re.search(rf'data-count="{name}">{survey["last_30_days"][name]}<', row), name

    survey_id = surveys[0]["id"]
    detail = ui.get(f"/ui/surveys/{survey_id}")
    assert detail.status_code == 200
    with demo_server.admin() as admin:
        invitations = admin.get(f"/v1/surveys/{survey_id}/invitations").json()
        spec = admin.get(f"/v1/surveys/{survey_id}").json()["spec"]
    for name in ("sent", "suppressed", "answered"):
        assert re.search(rf'data-count="{name}">{invitations["totals"][name]}<', detail.text), name
    for reason, count in invitations["totals"]["reasons"].items():
        assert re.search(rf'data-reason="{re.escape(reason)}">{count}<', detail.text)
    assert html.escape(spec["question"][spec["default_locale"]]) in detail.text

    csrf = csrf_of(detail.text)
    assert ui.post(f"/ui/surveys/{survey_id}/pause", data={"csrf": "forged"}).status_code == 403
    paused = ui.post(f"/ui/surveys/{survey_id}/pause", data={"csrf": csrf})
    assert paused.status_code == 303
    with demo_server.admin() as admin:
        assert admin.get(f"/v1/surveys/{survey_id}").json()["status"] == "paused"
        resumed = ui.post(f"/ui/surveys/{survey_id}/resume", data={"csrf": csrf})
        assert resumed.status_code == 303
        assert admin.get(f"/v1/surveys/{survey_id}").json()["status"] == "active"


def test_a_channel_address_is_shown_without_its_secrets() -> None:
    assert masked_url("https://user:pw@hooks.example.com:8443/in?token=abc&x=1") == (
        "https://•••@hooks.example.com:8443/in?token=•••&x=•••"
    )
    assert masked_url("http://127.0.0.1:9000/email") == "http://127.0.0.1:9000/email"
    assert masked_url(None) is None
