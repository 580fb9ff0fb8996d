"""Profiles, timelines, the agent view and accounts through a real ``polku serve``
process with its processor child, and the same through the CLI."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import httpx
from tests.conftest import ServerProcess

CONFIG = """
attributes:
  orders_30d: {kind: count, event: Order Completed, window: 30d}
  shopping_for: {kind: most_frequent, event: Product Viewed, property: category, window: 7d}
segments:
  buyers: {condition: "attributes.orders_30d >= 1"}
"""


def caught_up(server: ServerProcess, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    with server.admin() as client:
        while time.monotonic() < deadline:
            status = client.get("/v1/processor").json()
            if status["lag"] == 0 and status["log_end"] > 0:
                return
            time.sleep(0.05)
    raise AssertionError(f"the processor did not catch up: {status}\n{server.log()}")


def send(server: ServerProcess, *messages: dict[str, Any]) -> None:
    with server.writer() as client:
        response = client.post("/v1/batch", json={"batch": list(messages)})
        assert response.status_code == 200, response.text


def test_one_customer_across_channels_through_the_api(server: ServerProcess) -> None:
    with server.admin() as admin:
        assert admin.put("/v1/workspace/config", content=CONFIG).status_code == 200
    time.sleep(1.2)  # the processor picks up configuration changes within a second
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    send(
        server,
        {"type": "page", "anonymousId": "web-1", "name": "Tents", "timestamp": now, "context": {"channel": "web"}},
        {
            "type": "track",
            "anonymousId": "web-1",
            "event": "Product Viewed",
            "properties": {"category": "tents"},
            "timestamp": now,
        },
        {
            "type": "identify",
            "anonymousId": "web-1",
            "userId": "u-7",
            "traits": {"email": "Sam@Example.com", "phone": "+358 40 765 4321", "name": "Sam"},
            "timestamp": now,
        },
        {
            "type": "track",
            "userId": "u-7",
            "event": "Order Completed",
            "properties": {"total": 99},
            "context": {"channel": "web"},
            "timestamp": now,
        },
        {
            "type": "track",
            "anonymousId": "app-1",
            "event": "Password Reset Failed",
            "timestamp": now,
            "context": {"channel": "app", "traits": {"email": "sam@example.com"}},
        },
        {
            "type": "track",
            "anonymousId": "ivr-1",
            "event": "Call Started",
            "timestamp": now,
            "context": {"channel": "phone", "traits": {"phone": "+358407654321"}},
        },
        {"type": "group", "userId": "u-7", "groupId": "acme", "traits": {"name": "Acme Oy"}, "timestamp": now},
    )
    caught_up(server)
    with server.admin() as admin:
        by_email = admin.get("/v1/profiles/lookup", params={"email": "SAM@example.com"})
        assert by_email.status_code == 200, by_email.text
        profile = by_email.json()
        customer = profile["customer_id"]
        for kind, value in (("phone", "+358407654321"), ("user_id", "u-7"), ("anonymous_id", "app-1")):
            assert admin.get("/v1/profiles/lookup", params={kind: value}).json()["customer_id"] == customer
        assert profile["traits"]["name"] == "Sam"
        assert profile["attributes"] == {"orders_30d": 1, "shopping_for": "tents"}
        assert "buyers" in profile["segments"]
        assert profile["accounts"] == [{"id": "acme", "name": "Acme Oy"}]
        assert set(profile["last_seen"]) == {"web", "app", "phone"}

        timeline = admin.get(f"/v1/profiles/{customer}/timeline", params={"limit": 3}).json()
        assert len(timeline["events"]) == 3 and timeline["next_cursor"]
        rest = admin.get(f"/v1/profiles/{customer}/timeline", params={"cursor": timeline["next_cursor"]}).json()
        every = [e for e in timeline["events"] + rest["events"] if not e["internal"]]
        assert len(every) == 7
        assert {e["name"]: e["channel"] for e in every if e["name"]}["Call Started"] == "phone"

        context = admin.get(f"/v1/profiles/{customer}/context").json()
        assert context["likely_reason"]["event"] == "Password Reset Failed"
        assert context["likely_reason"]["channel"] == "app"
        assert "fail" in context["likely_reason"]["rule"]
        assert context["who"]["name"] == "Sam"
        assert context["recent_purchases"][0]["properties"] == {"total": 99}

        account = admin.get("/v1/accounts/acme").json()
        assert account["traits"] == {"name": "Acme Oy"}
        assert [person["customer_id"] for person in account["people"]] == [customer]

        assert admin.get("/v1/profiles/lookup", params={"email": "nobody@example.com"}).status_code == 404
        assert admin.get("/v1/profiles/lookup", params={"email": "not-an-email"}).status_code == 400
        assert admin.get("/v1/profiles/lookup", params={"shoe_size": "42"}).status_code == 400
        assert admin.get("/v1/profiles/lookup").status_code == 400
        assert admin.get("/v1/profiles/c_nope").status_code == 404
        assert admin.get(f"/v1/profiles/{customer}/timeline", params={"cursor": "x"}).status_code == 400
        assert admin.get("/v1/accounts/none").status_code == 404
    assert httpx.get(f"{server.url}/v1/profiles/{customer}").status_code == 401

    cli = [sys.executable, "-m", "polku"]
    shown = subprocess.run(
        [*cli, "profiles", "show", "sam@example.com", "--data-dir", str(server.data_dir), "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f'"customer_id": "{customer}"' in shown.stdout
    account_cli = subprocess.run(
        [*cli, "accounts", "show", "acme", "--data-dir", str(server.data_dir), "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert customer in account_cli.stdout
    # A rebuild refuses to run beside the live processor.
    refused = subprocess.run(
        [*cli, "identity", "rebuild", "--data-dir", str(server.data_dir)], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "processor is running" in refused.stderr


def test_refused_link_is_visible_through_the_api(server: ServerProcess) -> None:
    send(
        server,
        {"type": "identify", "userId": "alice", "traits": {"email": "home@example.com"}},
        {"type": "identify", "userId": "bob", "traits": {"email": "home@example.com"}},
    )
    caught_up(server)
    with server.admin() as admin:
        alice = admin.get("/v1/profiles/lookup", params={"user_id": "alice"}).json()
        bob = admin.get("/v1/profiles/lookup", params={"user_id": "bob"}).json()
        assert alice["customer_id"] != bob["customer_id"]
        assert bob["identity_conflict"] and bob["refused_links"]
        refusals = admin.get("/v1/identity/refusals").json()["refusals"]
        assert refusals[0]["refused_identifier"] in ("email:home@example.com", "user_id:bob")
        assert "limit" in refusals[0]["reason"]


def test_cli_after_the_server_stops_and_a_rebuild(server: ServerProcess) -> None:
    send(
        server,
        {"type": "identify", "userId": "alice", "anonymousId": "a-1", "traits": {"email": "home@example.com"}},
        {"type": "identify", "userId": "bob", "traits": {"email": "home@example.com"}},
        {"type": "track", "anonymousId": "a-1", "event": "Checkout Failed", "context": {"channel": "app"}},
    )
    caught_up(server)
    with server.admin() as admin:
        alice = admin.get("/v1/profiles/lookup", params={"user_id": "alice"}).json()["customer_id"]
    server.stop()
    cli = [sys.executable, "-m", "polku"]
    where = ["--data-dir", str(server.data_dir)]

    def run(*arguments: str) -> str:
        done = subprocess.run([*cli, *arguments, *where], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    assert "identity rebuilt" in run("identity", "rebuild")
    # The same customer ids after the replay, and the same refusal.
    assert f'"customer_id": "{alice}"' in run("profiles", "show", "user_id:alice", "--format", "json")
    assert "home@example.com" in run("identity", "refusals", "--format", "json")
    assert '"name": "Checkout Failed"' in run("profiles", "timeline", "a-1", "--format", "json")
    context = run("profiles", "context", alice)
    assert '"likely_reason"' in context and "Checkout Failed" in context
    missing = subprocess.run([*cli, "profiles", "show", "nobody", *where], capture_output=True, text=True)
    assert missing.returncode == 2 and "not_found" in missing.stderr
