"""PRODUCT.md scenario 3 end to end through the HTTP API: a real ``polku serve``
(with its processor and dispatcher children) and a real SMTP server (aiosmtpd).

``Password Reset Failed`` in the app → if a ``Call Started`` arrives within the
wait, an agent note appears in the agent view; otherwise a help email reaches the
SMTP server when the wait ends. The wait is shortened to seconds (the real one is
2 h; the engine tests run the 2 h with a fake clock)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.channels.receivers import smtp_server
from tests.conftest import ServerProcess

WAIT_S = 3

JOURNEY = f"""
id: password-help
name: Help after a failed password reset
entry:
  event: Password Reset Failed
  when: event.channel == "app"
goal: {{event: Password Reset Succeeded, within: 1d}}
steps:
  - id: wait-for-call
    wait_for: {{event: Call Started, within: {WAIT_S}s, on_event: note, on_timeout: email}}
  - id: note
    action:
      channel: agent_note
      body: "Tried a password reset in the app; it failed with {{{{ trigger.properties.reason }}}}"
    next: end
  - id: email
    action:
      channel: email
      subject: Need help signing in?
      body: "Hi {{{{ traits.first_name }}}}, here is how to reset your password."
"""


def config(smtp_port: int) -> str:
    return f"channels:\n  email: {{type: smtp, host: 127.0.0.1, port: {smtp_port}, sender: help@polku.example}}\n"


def until(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def test_scenario_3_note_for_the_caller_email_for_the_other(server: ServerProcess) -> None:
    with smtp_server() as inbox, server.admin() as admin, server.writer() as writer:
        assert admin.put("/v1/workspace/config", content=config(inbox.port)).status_code == 200
        deployed = admin.put(
            "/v1/journeys/password-help", content=JOURNEY, headers={"content-type": "application/yaml"}
        )
        assert deployed.status_code == 201, deployed.text
        assert deployed.json()["version"] == 1
        time.sleep(1.2)  # the processor picks up configuration and journeys within a second
        batch: list[dict[str, Any]] = [
            {"type": "identify", "userId": "caller", "traits": {"email": "caller@example.com", "first_name": "Cai"}},
            {"type": "identify", "userId": "quiet", "traits": {"email": "quiet@example.com", "first_name": "Quinn"}},
        ]
        for user in ("caller", "quiet"):
            batch.append(
                {
                    "type": "track",
                    "userId": user,
                    "event": "Password Reset Failed",
                    "properties": {"reason": "expired_link"},
                    "context": {"channel": "app"},
                    "timestamp": now_iso(),
                }
            )
        assert writer.post("/v1/batch", json={"batch": batch}).status_code == 200
        call = {"userId": "caller", "event": "Call Started", "context": {"channel": "phone"}}
        assert writer.post("/v1/track", json=call).status_code == 200

        def note() -> list[dict[str, Any]]:
            response = admin.get("/v1/profiles/lookup", params={"user_id": "caller"})
            if response.status_code != 200:
                return []
            customer = response.json()["customer_id"]
            return list(admin.get(f"/v1/profiles/{customer}/context").json().get("notes") or [])

        (found,) = until(note, what="the agent note")
        assert found["text"] == "Tried a password reset in the app; it failed with expired_link"
        assert inbox.messages == []  # the quiet one's wait has not ended
        (email,) = until(lambda: list(inbox.messages), timeout=WAIT_S + 20, what="the help email")
        assert email["To"] == "quiet@example.com"
        assert email["Subject"] == "Need help signing in?"
        assert "Hi Quinn" in email.get_content()
        time.sleep(1.0)
        assert len(inbox.messages) == 1  # the caller got no email, nobody got two

        quiet = admin.get("/v1/profiles/lookup", params={"user_id": "quiet"}).json()["customer_id"]
        journeys = admin.get(f"/v1/profiles/{quiet}/journeys").json()
        kinds = [(t["kind"], t["step"]) for t in journeys["transitions"]]
        assert ("timeout", "wait-for-call") in kinds and ("action", "email") in kinds
        stats = until(
            lambda: (
                (s := admin.get("/v1/journeys/password-help/stats").json())["total"]["entered"]["treatment"] == 2 and s
            ),
            what="stats",
        )
        assert stats["total"]["actions"]["email"]["sent"] == 1
        assert stats["total"]["actions"]["note"]["sent"] == 1

        def sent_event() -> list[dict[str, Any]]:
            page = admin.get("/v1/events", params={"channel": "email"}).json()
            return [event for event in page.get("events", []) if event.get("event") == "Message Sent"]

        (result,) = until(sent_event, what="the Message Sent event")
        assert result["properties"]["journey"] == "password-help"
        deliveries = admin.get("/v1/deliveries", params={"status": "sent"}).json()
        assert [d["customer_id"] for d in deliveries["deliveries"]] == [quiet]


def test_an_invalid_journey_is_rejected_with_its_line_and_never_deployed(server: ServerProcess) -> None:
    with server.admin() as admin:
        bad = JOURNEY.replace("on_timeout: email", "on_timeout: emial")
        response = admin.put("/v1/journeys/password-help", content=bad, headers={"content-type": "application/yaml"})
        assert response.status_code == 400
        body = response.json()
        assert body["code"] == "invalid_config"
        assert body["line"] == 10 and "emial" in body["message"]
        assert admin.get("/v1/journeys/password-help").status_code == 404


def test_the_workspace_configuration_reads_back_for_editing(server: ServerProcess) -> None:
    with server.admin() as admin:
        assert admin.put("/v1/workspace/config", content=config(2525)).status_code == 200
        stored = admin.get("/v1/workspace/config")
        assert stored.status_code == 200
        channel = stored.json()["config"]["channels"]["email"]
        assert (channel["type"], channel["port"], channel["sender"]) == ("smtp", 2525, "help@polku.example")
        # What GET returns is what PUT accepts.
        assert admin.put("/v1/workspace/config", json=stored.json()["config"]).status_code == 200
