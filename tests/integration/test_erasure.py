"""Erasure through a real ``polku serve`` (with its writer, processor, dispatcher
and analytics feed) and a real SMTP server: a person who touched every feature —
two anonymous visits merged into one signed-in person, events in four channels, an
account, a refused message, an email journey, an in-app survey answered, a
decision — is erased; then the bytes of every file in the data directory (the
SQLite files and their WALs, the DuckDB file) hold none of their identifiers, and
another customer's profile, events and analyses are as they were."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.channels.receivers import smtp_server
from tests.conftest import ServerProcess
from tests.decisions.test_decide_server import CATALOGUE
from tests.journeys.test_journey_e2e import until
from tests.surveys.test_survey_server import IN_APP

YAML = {"content-type": "application/yaml"}
JOURNEY = """
id: thank-you
entry: {event: Order Completed}
steps:
  - id: thanks
    action: {channel: email, subject: Thank you, body: "Thanks {{ traits.first_name }} for order {{ trigger.properties.order }}"}
"""
ANN = {
    "user": "u-annika-7f3q",
    "anonymous": ["anon-annika-1x9", "anon-annika-2k4"],
    "email": "annika.korhonen@example.org",
    "name": "Annikakorhonen",
    "order": "ord-annika-99317",
    "phone_call": "call-annika-5521",
}


def _needles(customer_ids: list[str]) -> list[str]:
    return [ANN["user"], *ANN["anonymous"], ANN["email"], ANN["name"], ANN["order"], ANN["phone_call"], *customer_ids]


def _person_and_another(inbox_port: int) -> list[dict[str, Any]]:
    anonymous_1, anonymous_2 = ANN["anonymous"]
    return [
        {"type": "page", "anonymousId": anonymous_1, "name": "Home", "context": {"channel": "web"}},
        {"type": "page", "anonymousId": anonymous_2, "name": "Pricing", "context": {"channel": "app"}},
        {"type": "identify", "anonymousId": anonymous_1, "userId": ANN["user"],
         "traits": {"email": ANN["email"], "first_name": ANN["name"]}},
        {"type": "alias", "userId": ANN["user"], "previousId": anonymous_2},
        {"type": "group", "userId": ANN["user"], "groupId": "acme-oy", "traits": {"name": "Acme Oy"}},
        {"type": "track", "userId": ANN["user"], "event": "Call Started", "context": {"channel": "phone"},
         "properties": {"call": ANN["phone_call"]}},
        {"type": "track", "userId": ANN["user"], "event": "Order Completed", "context": {"channel": "app"},
         "properties": {"order": ANN["order"]}},
        {"type": "identify", "userId": "bob-keeps-3", "traits": {"email": "bob@example.com", "first_name": "Bob"}},
        {"type": "track", "userId": "bob-keeps-3", "event": "Product Viewed", "context": {"channel": "web"}},
    ]  # fmt: skip


def _scan(data_dir: Path, needles: list[str]) -> list[tuple[str, str]]:
    """(file, needle) for every needle found in any file's bytes, in any case."""
    found = []
    for path in sorted(data_dir.rglob("*")):
        if path.is_file():
            data = path.read_bytes().lower()
            found.extend((path.name, needle) for needle in needles if needle.lower().encode() in data)
    return found


def test_erasure_leaves_no_trace_in_any_file_and_others_are_untouched(server: ServerProcess) -> None:
    with smtp_server() as inbox, server.admin() as admin, server.writer() as writer:
        config = f"channels:\n  email: {{type: smtp, host: 127.0.0.1, port: {inbox.port}, sender: shop@example.com}}\n"
        assert admin.put("/v1/workspace/config", content=config).status_code == 200
        assert admin.put("/v1/journeys/thank-you", content=JOURNEY, headers=YAML).status_code == 201
        assert admin.put("/v1/surveys/checkout-ces", content=IN_APP, headers=YAML).status_code == 201
        assert admin.put("/v1/actions", content=CATALOGUE, headers=YAML).status_code == 201
        time.sleep(1.2)  # the processor picks up the configuration and definitions
        assert writer.post("/v1/batch", json={"batch": _person_and_another(inbox.port)}).status_code == 200
        refused = writer.post("/v1/track", json={"userId": ANN["user"], "properties": {"order": ANN["order"]}})
        assert refused.status_code == 400  # no event name: refused, and kept in quarantine with its body
        customer = until(
            lambda: (
                (r := admin.get("/v1/profiles/lookup", params={"user_id": ANN["user"]})).status_code == 200
                and r.json()["customer_id"]
            ),
            what="the person's profile",
        )
        until(lambda: any(ANN["name"] in message.as_string() for message in inbox.messages), what="the journey email")
        (invitation,) = until(lambda: admin.get(f"/v1/profiles/{customer}/surveys").json()["surveys"], what="survey")
        answered = admin.post(
            f"/v1/invitations/{invitation['token']}/answer", json={"score": 2, "customer_id": customer}
        )
        assert answered.status_code == 201, answered.text
        decided = admin.post("/v1/decide", json={"identifier": {"user_id": ANN["user"]}, "channel": "chat"})
        assert decided.status_code == 200, decided.text
        assert admin.get(f"/v1/profiles/{customer}/export").status_code == 200  # an audit record naming them
        bob = admin.get("/v1/profiles/lookup", params={"user_id": "bob-keeps-3"}).json()
        until(lambda: admin.get("/v1/analytics").json()["store"]["lag"] == 0, what="the analytics feed")
        exported = admin.get(f"/v1/profiles/{customer}/export").json()
        merged = exported["merged_customer_ids"]
        identifiers = sum(len(values) for values in exported["profile"]["identifiers"].values())
        needles = _needles([customer, *merged])
        assert {needle for _, needle in _scan(server.data_dir, needles)} >= {ANN["user"], ANN["email"], ANN["order"]}
        others_before = _analytics_rows(server.data_dir, [customer, *merged])

        erased = admin.delete(f"/v1/profiles/{customer}", params={"wait": 60, "suppress": "true"})
        assert erased.status_code == 200, erased.text
        receipt = erased.json()
        assert receipt["status"] == "erased" and receipt["id"].startswith("er_")
        assert all(receipt["stages"][stage] for stage in ("state", "log", "analytics"))
        removed = receipt["removed"]
        assert removed["log.events"] >= 7 and removed["log.quarantine"] == 1 and removed["log.survey_answers"] == 1
        assert removed["state.profiles"] >= 1 and removed["state.messages"] >= 1 and removed["log.deliveries"] >= 1
        assert removed["analytics.events"] >= 5 and removed["state.survey_invitations"] == 1
        assert receipt["suppressed"] == identifiers and receipt["customers"] == 1 + len(merged)
        assert not any(needle.lower() in erased.text.lower() for needle in needles)  # the receipt names no one

        # Late: a delivery result, and the person coming back while suppressed.
        again = writer.post("/v1/track", json={"userId": ANN["user"], "event": "Order Completed"})
        assert again.status_code == 200
        time.sleep(2.0)
        assert admin.get("/v1/profiles/lookup", params={"user_id": ANN["user"]}).status_code == 404
        assert admin.get(f"/v1/profiles/{customer}").status_code == 404
        assert admin.get("/v1/profiles/lookup", params={"user_id": "bob-keeps-3"}).json() == bob
        assert admin.get(f"/v1/erasures/{receipt['id']}").json() == receipt
        assert [found["id"] for found in admin.get("/v1/erasures").json()["erasures"]] == [receipt["id"]]
        audit = admin.get("/v1/audit", params={"limit": 1000}).json()["entries"]
        assert f"DELETE /v1/profiles/[{receipt['id']}]" in [entry["action"] for entry in audit]
        until(lambda: admin.get("/v1/analytics").json()["store"]["lag"] == 0, what="the analytics feed")

    server.stop()  # the files as they rest (a running server's WAL is wiped after each erasure, too)
    assert _scan(server.data_dir, needles) == []
    assert _analytics_rows(server.data_dir, []) == others_before  # everyone else's rows, as they were


def _analytics_rows(data_dir: Path, leave_out: list[str]) -> list[tuple[Any, ...]]:
    """The analytics store's customer events but for those of ``leave_out``."""
    from polku.adapters.duckdb import analytics_store

    with analytics_store.reader(data_dir) as db:
        rows = db.execute(
            "SELECT seq, customer_id, anchor, name, channel FROM events WHERE source != 'polku' ORDER BY seq"
        ).fetchall()
    return [row for row in rows if row[1] not in leave_out]


def test_erasing_someone_unknown_is_a_clear_not_found_and_the_scope_is_privacy(server: ServerProcess) -> None:
    with server.admin() as admin:
        missing = admin.delete("/v1/profiles/c_nobody")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"
        assert admin.get("/v1/erasures/er_nothing").status_code == 404
        reader = admin.post("/v1/keys", json={"kind": "admin", "scopes": ["read", "manage"], "label": "ops"})
        token = reader.json()["key"]
        refused = admin.delete("/v1/profiles/c_nobody", headers={"authorization": f"Bearer {token}"})
        assert refused.status_code == 403 and refused.json()["scope"] == "privacy"


def test_the_cli_erases_by_any_identifier(server: ServerProcess) -> None:
    with server.admin() as admin, server.writer() as writer:
        sent = writer.post(
            "/v1/identify", json={"userId": "cli-person-8", "traits": {"email": "cli.person@example.org"}}
        )
        assert sent.status_code == 200
        until(
            lambda: admin.get("/v1/profiles/lookup", params={"user_id": "cli-person-8"}).status_code == 200,
            what="the profile",
        )
    result = subprocess.run(
        [sys.executable, "-m", "polku", "privacy", "erase", "email:cli.person@example.org",
         "--data-dir", str(server.data_dir), "--wait", "60", "--format", "json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"status": "erased"' in result.stdout and "cli-person" not in result.stdout
    with server.admin() as admin:
        assert admin.get("/v1/profiles/lookup", params={"user_id": "cli-person-8"}).status_code == 404
