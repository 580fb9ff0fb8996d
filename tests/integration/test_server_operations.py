"""The server as an operator meets it: first start, keys, health, metrics, OpenAPI."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from tests.conftest import ServerProcess, free_port


@contextmanager
def serving(port: int, data_dir: Path, log_path: Path) -> Iterator[str]:
    """``polku serve`` with no keys given; yields its log once it is ready."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "polku", "serve", "--port", str(port), "--data-dir", str(data_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        yield log_path.read_text()
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_first_start_creates_the_default_workspace_and_prints_its_keys_once(tmp_path: Path) -> None:
    port, data_dir = free_port(), tmp_path / "data"
    with serving(port, data_dir, tmp_path / "first.log") as first:
        write_key = re.search(r"write key \(workspace default, source default\): (pk_write_\S+)", first)
        admin_token = re.search(r"admin key \(workspace default\): (pk_admin_\S+)", first)
    assert write_key and admin_token, first
    with serving(port, data_dir, tmp_path / "second.log") as second:
        assert "pk_write_" not in second and "pk_admin_" not in second
        url = f"http://127.0.0.1:{port}"
        sent = httpx.post(f"{url}/v1/track", auth=(write_key.group(1), ""), json={"userId": "u", "event": "E"})
        assert sent.status_code == 200
        events = httpx.get(f"{url}/v1/events", headers={"Authorization": f"Bearer {admin_token.group(1)}"}).json()
        assert [e["event"] for e in events["events"]] == ["E"]


def test_health_readiness_metrics_and_openapi(server: ServerProcess) -> None:
    with server.writer() as client:
        client.post("/v1/batch", json={"batch": [{"type": "track", "userId": "u", "event": "A"}, {"type": "track"}]})
        client.post("/v1/track", content=b"{nope")
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready" and ready["pending_events"] == 0
        metrics = client.get("/metrics").text
        openapi = client.get("/openapi.json").json()
    assert re.search(r'^polku_events_accepted_total\{channel="web"\} 1\.0$', metrics, re.MULTILINE)
    assert re.search(r'^polku_events_rejected_total\{reason="missing_identity"\} 1\.0$', metrics, re.MULTILINE)
    assert re.search(r'^polku_requests_refused_total\{code="malformed_json"\} 1\.0$', metrics, re.MULTILINE)
    assert re.search(r"^polku_commit_seconds_count [1-9]", metrics, re.MULTILINE)
    assert "polku_ingest_queue_depth 0.0" in metrics
    assert openapi["openapi"].startswith("3.")
    assert {"/v1/track", "/v1/batch", "/v1/events", "/v1/quarantine"} <= set(openapi["paths"])


def test_sources_and_keys_over_the_api(server: ServerProcess) -> None:
    with server.admin() as admin:
        created = admin.post("/v1/sources", json={"name": "callcenter", "channel": "phone"})
        assert created.status_code == 201, created.text
        key = created.json()["write_key"]["key"]
        bad = admin.post("/v1/sources", json={"name": "Call Center", "channel": "phone"})
        assert bad.status_code == 400 and "source name" in bad.json()["message"]
    with httpx.Client(base_url=server.url, auth=(key, "")) as phone:
        assert phone.post("/v1/track", json={"userId": "u", "event": "Called"}).status_code == 200
    [event] = server.all_events()
    assert (event["channel"], event["source"]) == ("phone", "callcenter")
    with server.admin() as admin:
        key_id = next(k["key_id"] for k in admin.get("/v1/keys").json()["keys"] if k["source"] == "callcenter")
        assert admin.delete(f"/v1/keys/{key_id}").json()["revoked_at"]
    with httpx.Client(base_url=server.url, auth=(key, "")) as phone:
        refused = phone.post("/v1/track", json={"userId": "u", "event": "Called"})
    assert refused.status_code == 401
    with httpx.Client(base_url=server.url, headers={"Authorization": "Bearer wrong"}) as intruder:
        assert intruder.get("/v1/events").status_code == 401
    with server.writer() as writer:  # a write key is not an admin token
        assert writer.get("/v1/events").status_code == 401


def test_browsers_may_call_the_api_from_any_origin(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url) as client:
        preflight = client.options(
            "/v1/batch",
            headers={
                "Origin": "https://shop.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "*"
        sent = client.post(
            "/v1/track",
            headers={"Origin": "https://shop.example", "Content-Type": "text/plain"},
            content=b'{"writeKey": "test-write-key", "userId": "u", "event": "Viewed"}',
        )
    assert sent.status_code == 200
    assert sent.headers["access-control-allow-origin"] == "*"
