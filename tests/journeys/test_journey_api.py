"""Journeys through a real ``polku serve`` process: deploy, versions, lifecycle,
refusals that name the line and the field, stats, a customer's journeys, and the
CLI twins."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ServerProcess

CONFIG = """
channels:
  email: {type: smtp, sender: shop@example.com}
segments:
  buyers: {condition: "traits.plan == 'pro'"}
"""
WELCOME = """id: welcome
name: Welcome
entry:
  event: Signed Up
steps:
  - id: pause
    wait: 1d
  - id: hello
    action:
      channel: email
      subject: "Welcome, {{ traits.name }}"
      body: Hello!
goal:
  event: Order Completed
holdout: 0.1
"""
YAML = {"Content-Type": "application/yaml"}


@pytest.fixture
def catalog_server(start_server: Callable[..., ServerProcess]) -> ServerProcess:
    """A server without its processor: definitions only."""
    server = start_server(extra_args=["--no-processor"])
    with server.admin() as admin:
        assert admin.put("/v1/workspace/config", content=CONFIG).status_code == 200
    return server


def test_deploy_versions_and_lifecycle(catalog_server: ServerProcess) -> None:
    with catalog_server.admin() as admin:
        response = admin.put("/v1/journeys/welcome", content=WELCOME, headers=YAML)
        assert response.status_code == 201, response.text
        assert response.json() == {"id": "welcome", "version": 1, "created": True, "status": "active"}
        again = admin.put("/v1/journeys/welcome", content=WELCOME, headers=YAML)
        assert again.status_code == 200
        assert again.json() == {"id": "welcome", "version": 1, "created": False, "status": "active"}
        changed = WELCOME.replace("wait: 1d", "wait: 2d")
        assert admin.put("/v1/journeys/welcome", content=changed, headers=YAML).json()["version"] == 2

        shown = admin.get("/v1/journeys/welcome").json()
        assert (shown["version"], shown["versions"], shown["status"], shown["name"]) == (2, [1, 2], "active", "Welcome")
        assert shown["body"] == changed
        assert shown["spec"]["steps"][0] == {"id": "pause", "wait": "2d"} | {
            key: None for key in shown["spec"]["steps"][0] if key not in ("id", "wait")
        }
        first = admin.get("/v1/journeys/welcome/versions/1").json()
        assert (first["version"], first["current_version"], first["body"]) == (1, 2, WELCOME)
        assert admin.get("/v1/journeys/welcome/versions/3").status_code == 404
        assert admin.get("/v1/journeys/welcome/versions/x").status_code == 400
        assert admin.get("/v1/journeys/nope").status_code == 404

        assert admin.post("/v1/journeys/welcome/pause").json()["status"] == "paused"
        assert admin.post("/v1/journeys/welcome/archive").json()["status"] == "archived"
        assert admin.post("/v1/journeys/welcome/pause").status_code == 409
        # A new version of an archived journey stays archived until it is resumed.
        deployed = admin.put("/v1/journeys/welcome", content=WELCOME, headers=YAML).json()
        assert deployed == {"id": "welcome", "version": 3, "created": True, "status": "archived"}
        assert admin.post("/v1/journeys/welcome/resume").json() == {
            "id": "welcome",
            "version": 3,
            "status": "active",
            "updated_at": admin.get("/v1/journeys/welcome").json()["updated_at"],
        }

        listed = admin.get("/v1/journeys").json()["journeys"]
        assert [(j["id"], j["name"], j["version"], j["status"]) for j in listed] == [
            ("welcome", "Welcome", 3, "active")
        ]
        assert (listed[0]["entered"], listed[0]["active"], listed[0]["goal"]) == (0, 0, 0)


def test_yaml_and_json_bodies_and_dry_run(catalog_server: ServerProcess) -> None:
    document = {
        "id": "nudge",
        "entry": {"segment": "buyers", "reentry": "after 30d"},
        "steps": [{"id": "note", "action": {"channel": "agent_note", "body": "Offer help"}}],
    }
    with catalog_server.admin() as admin:
        dry = admin.put("/v1/journeys/nudge", params={"dry_run": "true"}, json=document)
        assert dry.status_code == 200, dry.text
        assert dry.json()["valid"] is True
        assert admin.get("/v1/journeys/nudge").status_code == 404  # a dry run stores nothing
        assert admin.put("/v1/journeys/nudge", json=document).status_code == 201
        assert admin.post("/v1/journeys/validate", content=WELCOME, headers={"Content-Type": "text/yaml"}).json() == {
            "valid": True,
            "id": "welcome",
        }
        refused = admin.put("/v1/journeys/nudge", content="id: nudge", headers={"Content-Type": "image/png"})
        assert refused.status_code == 400
        schema = admin.get("/v1/journeys/schema").json()
        assert schema["title"] == "polku journey"
        assert admin.get("/v1/journeys/schema", headers={"Authorization": "Bearer wrong"}).status_code == 401


INVALID = {
    "unknown step": (
        WELCOME.replace("    wait: 1d\n", "    wait: 1d\n    next: nowhere\n"),
        8,
        "steps[0].next",
        "unknown step 'nowhere'",
    ),
    "cycle without a wait": (
        """id: welcome
entry: {event: Signed Up}
steps:
  - id: check
    branch:
      - when: "traits.plan == 'pro'"
        next: tag
  - id: tag
    update_profile: {seen: "true"}
    next: check
""",
        4,
        "steps[0]",
        "loop with no wait",
    ),
    "bad condition": (
        WELCOME.replace("  event: Signed Up\n", '  event: Signed Up\n  when: "traits.plan =="\n'),
        5,
        "entry.when",
        "syntax error",
    ),
    "unknown channel": (WELCOME.replace("channel: email", "channel: sms"), 10, "steps[1].action.channel", "'sms'"),
    "unknown segment": (WELCOME.replace("  event: Signed Up\n", "  segment: vips\n"), 4, "entry.segment", "'vips'"),
    "another id": (WELCOME.replace("id: welcome", "id: other"), 1, "id", "'other'"),
    "bad duration": (WELCOME.replace("wait: 1d", "wait: soon"), 7, "steps[0].wait", "soon"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_journeys_are_refused_where_they_are_wrong(catalog_server: ServerProcess, case: str) -> None:
    document, line, field, words = INVALID[case]
    with catalog_server.admin() as admin:
        for response in (
            admin.put("/v1/journeys/welcome", content=document, headers=YAML),
            admin.put("/v1/journeys/welcome", params={"dry_run": "true"}, content=document, headers=YAML),
        ):
            assert response.status_code == 400, response.text
            error = response.json()
            assert error["code"] == "invalid_config"
            assert (error["line"], error["field"], error["file"]) == (line, field, "welcome.yaml")
            assert error["message"].startswith(f"welcome.yaml:{line}: {field}"), error["message"]
            assert words in error["message"]
        assert admin.get("/v1/journeys/welcome").status_code == 404  # never stored
        if case != "another id":
            assert admin.post("/v1/journeys/validate", content=document, headers=YAML).status_code == 400


def test_stats_of_a_journey_nobody_entered(catalog_server: ServerProcess) -> None:
    with catalog_server.admin() as admin:
        assert admin.get("/v1/journeys/welcome/stats").status_code == 404
        admin.put("/v1/journeys/welcome", content=WELCOME, headers=YAML)
        stats = admin.get("/v1/journeys/welcome/stats").json()
        assert (stats["id"], stats["version"], stats["status"]) == ("welcome", 1, "active")
        assert stats["versions"] == {}
        total = stats["total"]
        assert (total["entered"]["total"], total["active"], total["goal"]["uplift"]) == (0, 0, None)


def test_a_customers_journeys_messages_and_notes(server: ServerProcess) -> None:
    with server.writer() as writer:
        writer.post("/v1/identify", json={"userId": "u-1", "traits": {"name": "Ann"}}).raise_for_status()
    with server.admin() as admin:
        deadline = time.monotonic() + 20
        while admin.get("/v1/profiles/lookup", params={"user_id": "u-1"}).status_code != 200:
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        customer = admin.get("/v1/profiles/lookup", params={"user_id": "u-1"}).json()["customer_id"]
        journeys = admin.get(f"/v1/profiles/{customer}/journeys").json()
        assert journeys == {"customer_id": customer, "instances": [], "transitions": []}
        messages = admin.get(f"/v1/profiles/{customer}/messages", params={"journey": "welcome"}).json()
        assert messages == {"customer_id": customer, "inbox": [], "messages": []}
        assert admin.get(f"/v1/profiles/{customer}/context").json()["notes"] == []
        assert admin.get("/v1/profiles/c_nobody/journeys").status_code == 404


def polku(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "polku", *args], capture_output=True, text=True, timeout=60)


def test_cli_validate_prints_file_and_line(tmp_path: Path) -> None:
    good = tmp_path / "welcome.yaml"
    good.write_text(WELCOME)
    bad = tmp_path / "broken.yaml"
    bad.write_text(WELCOME.replace("wait: 1d", "wait: soon"))
    result = polku("journeys", "validate", str(good))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{good}: ok" in result.stdout
    result = polku("journeys", "validate", str(good), str(bad))
    assert result.returncode == 2
    assert f"{bad}:7: steps[0].wait:" in result.stdout


def test_cli_deploy_list_pause_stats_and_why(catalog_server: ServerProcess, tmp_path: Path) -> None:
    data_dir = str(catalog_server.data_dir)
    document = tmp_path / "welcome.yaml"
    document.write_text(WELCOME.replace("channel: email", "channel: sms"))
    result = polku("journeys", "validate", str(document), "--data-dir", data_dir)
    assert result.returncode == 2
    assert f"{document}:10: steps[1].action.channel: unknown channel 'sms'" in result.stdout
    assert polku("journeys", "deploy", str(document), "--data-dir", data_dir).returncode == 2

    document.write_text(WELCOME)
    result = polku("journeys", "deploy", str(document), "--data-dir", data_dir)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"id": "welcome", "version": 1, "created": True, "status": "active"}
    listed = json.loads(polku("journeys", "list", "--data-dir", data_dir, "--format", "json").stdout)
    assert [(j["id"], j["version"], j["status"], j["entered"]) for j in listed] == [("welcome", 1, "active", 0)]
    assert json.loads(polku("journeys", "pause", "welcome", "--data-dir", data_dir).stdout)["status"] == "paused"
    shown = polku("journeys", "show", "welcome", "--data-dir", data_dir)
    assert "id: welcome" in shown.stdout
    stats = json.loads(polku("journeys", "stats", "welcome", "--data-dir", data_dir, "--format", "json").stdout)
    assert stats["total"]["entered"]["total"] == 0
    with catalog_server.admin() as admin:
        assert admin.get("/v1/journeys/welcome").json()["status"] == "paused"
    missing = polku("journeys", "why", "nobody@example.com", "--data-dir", data_dir)
    assert missing.returncode == 2
    assert "not_found" in missing.stderr
