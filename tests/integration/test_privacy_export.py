"""The right of access through a real ``polku serve``: a person browses anonymously,
signs in, shops in two channels and answers an in-app survey; their export holds
all of it — both identities, every event, the survey invitation and answer, consent
and policy — and nothing of another customer. The CLI writes the same document to
a file only its owner can read."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from typing import Any

from tests.conftest import ServerProcess
from tests.journeys.test_journey_e2e import until
from tests.surveys.test_survey_server import IN_APP


def test_the_export_holds_everything_about_the_person_and_nothing_of_others(server: ServerProcess) -> None:
    with server.admin() as admin, server.writer() as writer:
        deployed = admin.put("/v1/surveys/checkout-ces", content=IN_APP, headers={"content-type": "application/yaml"})
        assert deployed.status_code == 201, deployed.text
        time.sleep(1.2)  # the processor picks up the survey
        batch = [
            {"type": "page", "anonymousId": "anon-1", "name": "Home", "messageId": "p1"},
            {
                "type": "identify",
                "anonymousId": "anon-1",
                "userId": "ann",
                "messageId": "i1",
                "traits": {"email": "ann@example.com", "name": "Ann"},
            },
            {
                "type": "track",
                "userId": "ann",
                "event": "Product Viewed",
                "messageId": "t1",
                "context": {"channel": "web"},
            },
            {
                "type": "track",
                "userId": "ann",
                "event": "Order Completed",
                "messageId": "t2",
                "context": {"channel": "app"},
            },
            {"type": "identify", "userId": "bob", "messageId": "i2", "traits": {"email": "bob@example.com"}},
            {"type": "track", "userId": "bob", "event": "Product Viewed", "messageId": "t3"},
        ]
        assert writer.post("/v1/batch", json={"batch": batch}).status_code == 200
        customer = until(
            lambda: (
                (r := admin.get("/v1/profiles/lookup", params={"user_id": "ann"})).status_code == 200
                and r.json()["events"] == 4
                and r.json()["customer_id"]
            ),
            what="ann's profile",
        )
        (item,) = until(lambda: admin.get(f"/v1/profiles/{customer}/surveys").json()["surveys"], what="the survey")
        answered = admin.post(f"/v1/invitations/{item['token']}/answer", json={"score": 6, "customer_id": customer})
        assert answered.status_code == 201, answered.text

        def exported() -> Any:
            response = admin.get(f"/v1/profiles/{customer}/export")
            assert response.status_code == 200, response.text
            document = response.json()
            names = {event["name"] for event in document["events"]}
            return document["survey_answers"] and "Feedback Submitted" in names and (response, document)

        response, document = until(exported, what="the answer in the export")
    assert response.headers["content-disposition"] == f'attachment; filename="polku-export-{customer}.json"'
    assert response.headers["cache-control"] == "no-store"
    assert document["format"] == 1 and document["customer_id"] == customer
    identifiers = document["profile"]["identifiers"]
    assert identifiers["anonymous_id"] == ["anon-1"] and identifiers["user_id"] == ["ann"]
    assert identifiers["email"] == ["ann@example.com"]
    sent = {event["message_id"] for event in document["events"] if not event["internal"]}
    assert {"p1", "i1", "t1", "t2"} <= sent and document["events_complete"] is True
    assert "Feedback Submitted" in {event["name"] for event in document["events"]}  # the answer, as an event
    (invitation,) = document["survey_invitations"]
    assert invitation["survey"] == "checkout-ces" and invitation["answered"] is True
    assert [answer["score"] for answer in document["survey_answers"]] == [6]
    assert {row["purpose"] for row in document["consent_and_policy"]["purposes"]} >= {"marketing"}
    text = json.dumps(document)
    assert "bob" not in text and "t3" not in text  # nothing of another customer

    out = server.data_dir.parent / "export.json"
    result = export_cli(server, "user_id:ann", "--output", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    from_cli = json.loads(out.read_text())
    assert from_cli["customer_id"] == customer and len(from_cli["events"]) == len(document["events"])


def test_exporting_someone_unknown_is_a_clear_not_found(server: ServerProcess) -> None:
    with server.admin() as admin:
        missing = admin.get("/v1/profiles/c_nobody/export")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    result = export_cli(server, "email:nobody@example.com")
    assert result.returncode == 2 and "not_found" in result.stdout + result.stderr


def export_cli(server: ServerProcess, identifier: str, *options: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "polku", "privacy", "export", identifier, "--data-dir", str(server.data_dir)]
    return subprocess.run([*command, *options], capture_output=True, text=True, timeout=60)


def test_consent_and_its_history_across_channels(server: ServerProcess) -> None:
    with server.admin() as admin, server.writer() as writer:
        batch = [
            {"type": "identify", "userId": "cy", "messageId": "c1", "context": {"channel": "web"},
             "traits": {"consent": {"marketing": True, "surveys": True}}},
            {"type": "identify", "userId": "cy", "messageId": "c2", "traits": {"name": "Cy"}},
            {"type": "identify", "userId": "cy", "messageId": "c3", "context": {"channel": "app"},
             "traits": {"consent": {"marketing": False}}},
        ]  # fmt: skip
        assert writer.post("/v1/batch", json={"batch": batch}).status_code == 200
        customer = until(
            lambda: (
                (r := admin.get("/v1/profiles/lookup", params={"user_id": "cy"})).status_code == 200
                and r.json()["events"] == 3
                and r.json()["customer_id"]
            ),
            what="cy's profile",
        )
        consent = admin.get(f"/v1/profiles/{customer}/consent").json()
        document = admin.get(f"/v1/profiles/{customer}/export").json()
    assert consent["trait"] == "consent" and consent["history_complete"] is True
    # The trait map is replaced by each identify that sets it: the latest says no to marketing.
    assert consent["purposes"]["marketing"] == {"given": False, "default": False}
    assert consent["purposes"]["service"] == {"given": None, "default": True}
    history = [(entry["message_id"], entry["channel"], entry["consent"]) for entry in consent["history"]]
    assert history == [("c3", "app", {"marketing": False}), ("c1", "web", {"marketing": True, "surveys": True})]
    assert document["consent_history"] == consent["history"]
    result = export_cli(server, "user_id:cy")  # the CLI's export, on stdout
    assert result.returncode == 0 and json.loads(result.stdout)["consent_history"] == consent["history"]
    # A preference center sets one purpose through the API; the others keep what was said.
    with server.admin() as admin:
        put = admin.put(f"/v1/profiles/{customer}/consent", json={"purposes": {"surveys": False}, "channel": "web"})
        assert put.status_code == 202, put.text
        assert put.json()["purposes"] == {"surveys": False}
        bad = admin.put(f"/v1/profiles/{customer}/consent", json={"purposes": {}})
        assert bad.status_code == 400
        after = until(
            lambda: (
                (c := admin.get(f"/v1/profiles/{customer}/consent").json())["purposes"]["surveys"]["given"] is False
                and c
            ),
            what="the consent set through the API",
        )
    assert after["purposes"]["marketing"]["given"] is False
    # The history shows what this word said; the profile holds it merged with the rest.
    assert (after["history"][0]["channel"], after["history"][0]["consent"]) == ("web", {"surveys": False})
    shown = subprocess.run(
        [sys.executable, "-m", "polku", "privacy", "consent", "user_id:cy", "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0 and json.loads(shown.stdout)["history"] == after["history"]
