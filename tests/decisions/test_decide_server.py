"""``POST /v1/decide`` through a real ``polku serve``: the chatbot scenario (PRODUCT.md
10), outcomes flowing back through ingestion into the learned counters and the
response-based suppression, and the catalogue's API."""

from __future__ import annotations

import time
from typing import Any

from tests.conftest import ServerProcess
from tests.journeys.test_journey_e2e import until

CONFIG = """
attributes:
  reset_failures_1d: {kind: count, event: Password Reset Failed, window: 1d}
agent_view: {lookback: 48h}
"""
CATALOGUE = """
default_action: help-center
actions:
  - id: reset-self-service
    name: Reset your password yourself
    channels: [chat, web, app]
    self_service: true
    value: 5
    context: {intent: {login_problem: 3, "*": 0}}
    treatments:
      chat: {text: "Here is a new reset link: https://example.com/reset"}
      "*": {title: Reset your password}
    suppress: {rejected: 2, within: 30d, for: 14d}
  - id: help-center
    channels: [chat, web, app]
    value: 0.001  # far below the reset's 5 × 3: the order does not hang on two random draws
    treatments: {"*": {text: "Our help center: https://example.com/help"}}
handover:
  - {name: repeated_failure, when: "attributes.reset_failures_1d >= 2"}
  - {name: asked_for_human, when: "context.ask_human == true"}
"""
YAML = {"content-type": "application/yaml"}


def decide(admin: Any, **body: Any) -> dict[str, Any]:
    answer = admin.post("/v1/decide", json={"identifier": {"user_id": "ann"}, **body})
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def failures(admin: Any) -> int:
    found = admin.get("/v1/profiles/lookup", params={"user_id": "ann"})
    if found.status_code != 200:
        return -1
    return int(found.json()["attributes"].get("reset_failures_1d") or 0)


def test_the_chatbot_offers_self_service_then_hands_over_after_a_second_failure(server: ServerProcess) -> None:
    with server.admin() as admin, server.writer() as writer:
        assert admin.put("/v1/workspace/config", content=CONFIG).status_code == 200
        deployed = admin.put("/v1/actions", content=CATALOGUE, headers=YAML)
        assert deployed.status_code == 201, deployed.text
        failed = {"userId": "ann", "event": "Password Reset Failed", "context": {"channel": "app"}}
        identify = {"userId": "ann", "traits": {"first_name": "Ann", "email": "ann@example.com"}}
        assert writer.post("/v1/identify", json=identify).status_code == 200
        assert writer.post("/v1/track", json=failed).status_code == 200
        until(lambda: failures(admin) == 1, what="the first failure in the profile")

        first = decide(admin, channel="chat", context={"intent": "login_problem"})
        assert first["actions"][0]["id"] == "reset-self-service"
        assert first["self_service"][0]["treatment"] == {"text": "Here is a new reset link: https://example.com/reset"}
        assert first["handover"] == {"required": False, "reasons": [], "summary": None}
        assert any(reason.startswith("score = ") for reason in first["actions"][0]["reasons"])

        assert writer.post("/v1/track", json=failed).status_code == 200
        until(lambda: failures(admin) == 2, what="the second failure")
        second = decide(admin, channel="chat", context={"intent": "login_problem"})
        handover = second["handover"]
        assert handover["required"] is True and handover["reasons"] == ["repeated_failure"]
        assert handover["summary"]["likely_reason"]["event"] == "Password Reset Failed"
        assert "Password Reset Failed" in handover["note"] and "Intent: login_problem" in handover["note"]
        customer = second["customer_id"]

        def noted() -> list[dict[str, Any]]:
            notes = admin.get(f"/v1/profiles/{customer}/context").json()["notes"]
            return [note for note in notes if "Chat hand-over" in note["text"]]

        (note,) = until(noted, what="the hand-over note in the agent view")
        assert "repeated_failure" in note["text"]


def test_outcomes_teach_the_model_and_rejections_suppress(server: ServerProcess) -> None:
    with server.admin() as admin, server.writer() as writer:
        assert admin.put("/v1/workspace/config", content=CONFIG).status_code == 200
        assert admin.put("/v1/actions", content=CATALOGUE, headers=YAML).status_code == 201
        assert writer.post("/v1/identify", json={"userId": "ann", "traits": {"first_name": "Ann"}}).status_code == 200
        until(lambda: failures(admin) == 0, what="ann")
        decisions = []
        for _ in range(2):
            found = decide(admin, channel="chat", context={"intent": "login_problem"})
            assert found["actions"][0]["id"] == "reset-self-service"
            decisions.append(found["decision"])
            rejected = {
                "userId": "ann",
                "event": "Action Rejected",
                "properties": {"action": "reset-self-service", "decision": found["decision"]},
                "context": {"channel": "chat"},
            }
            assert writer.post("/v1/track", json=rejected).status_code == 200

        def learned() -> dict[str, Any] | None:
            stats = admin.get("/v1/actions/stats").json()
            (group,) = stats["actions"]["reset-self-service"]["groups"]
            return stats if group["offers"] == 2 and group["rejected"] == 2 else None

        stats = until(learned, what="the offers and rejections in the model")
        assert stats["holdout"]["treatment"]["decisions"] == 2
        time.sleep(0.2)
        after = decide(admin, channel="chat", context={"intent": "login_problem"})
        assert after["actions"][0]["id"] == "help-center"
        assert {"id": "reset-self-service", "reason": "suppressed: rejected 2 times within 30 d"} in after["excluded"]


def test_decide_refuses_bad_requests_clearly(server: ServerProcess) -> None:
    with server.admin() as admin:
        assert admin.post("/v1/decide", json={"channel": "web"}).status_code in (400, 404)
        missing = admin.post("/v1/decide", json={"identifier": {"user_id": "nobody"}, "channel": "web"})
        assert missing.status_code == 404  # no catalogue (or no such customer): says which
        assert "catalogue" in missing.json()["message"] or "nobody" in missing.json()["message"]
        assert admin.put("/v1/actions", content=CATALOGUE, headers=YAML).status_code == 201
        unknown = admin.post("/v1/decide", json={"identifier": {"user_id": "nobody"}, "channel": "web"})
        assert unknown.status_code == 404 and "nobody" in unknown.json()["message"]
        bad = admin.post("/v1/decide", json={"identifier": {"user_id": "ann"}, "channel": "web", "limit": 99})
        assert bad.status_code == 400 and bad.json()["field"] == "limit"
        invalid = admin.put("/v1/actions", content=CATALOGUE.replace("value: 5", "value: -5"), headers=YAML)
        assert invalid.status_code == 400 and "actions[0]" in invalid.json()["message"]
        assert admin.get("/v1/actions").json()["version"] == 1
