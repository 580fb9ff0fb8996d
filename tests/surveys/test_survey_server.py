"""Surveys through a real ``polku serve`` (processor and dispatcher children), a
real SMTP server (aiosmtpd) and a real browser (Debian's Chromium, driven by
Playwright): the invitation email's link is followed, the hosted page answered,
and the feedback event lands on the customer's timeline linked to the journey
step. Then the token rules: tampered, expired, reused and cross-customer tokens
are refused with a clear error and the answer store does not change."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from tests.channels.receivers import SmtpInbox, smtp_server
from tests.conftest import ServerProcess
from tests.journeys.test_journey_e2e import until

SURVEY = """
id: support-csat
name: Support satisfaction
metric: csat
question:
  en: "How satisfied were you with our support today?"
  fi: "Kuinka tyytyväinen olit tänään saamaasi tukeen?"
questions:
  - id: reason
    type: choice
    text: {en: "What mattered most?", fi: "Mikä oli tärkeintä?"}
    options:
      - {value: speed, text: {en: Speed, fi: Nopeus}}
      - {value: answer, text: {en: The answer, fi: Vastaus}}
channels: [email]
expires: EXPIRES
edit_window: EDIT
"""

JOURNEY = """
id: support-follow-up
entry: {event: Case Closed}
steps:
  - id: ask
    survey: support-csat
"""


def configure(admin: Any, server: ServerProcess, inbox: SmtpInbox, *, expires: str = "7d", edit: str = "1h") -> None:
    config = (
        f"channels:\n  email: {{type: smtp, host: 127.0.0.1, port: {inbox.port}, sender: feedback@polku.example}}\n"
        f"surveys:\n  base_url: {server.url}\n  fatigue: {{after_invitation: 0s, after_response: 0s}}\n"
    )
    assert admin.put("/v1/workspace/config", content=config).status_code == 200
    body = SURVEY.replace("EXPIRES", expires).replace("EDIT", edit)
    deployed = admin.put("/v1/surveys/support-csat", content=body, headers={"content-type": "application/yaml"})
    assert deployed.status_code == 201, deployed.text
    deployed = admin.put(
        "/v1/journeys/support-follow-up", content=JOURNEY, headers={"content-type": "application/yaml"}
    )
    assert deployed.status_code == 201, deployed.text
    time.sleep(1.2)  # the processor picks up the configuration, surveys and journeys within a second


def invite(writer: Any, inbox: SmtpInbox, user: str, locale: str = "en") -> str:
    """A closed case for ``user``; returns the link of the invitation email."""
    count = len(inbox.messages)
    batch = [
        {"type": "identify", "userId": user, "traits": {"email": f"{user}@example.com", "locale": locale}},
        {"type": "track", "userId": user, "event": "Case Closed", "context": {"channel": "phone"}},
    ]
    assert writer.post("/v1/batch", json={"batch": batch}).status_code == 200
    messages = until(lambda: inbox.messages[count:], what=f"the invitation of {user}")
    (message,) = [m for m in messages if m["To"] == f"{user}@example.com"]
    link = re.search(r"https?://\S+/s/\S+", message.get_content())
    assert link is not None, message.get_content()
    return link[0]


@contextmanager
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def test_email_link_answered_in_a_real_browser_lands_on_the_timeline(server: ServerProcess) -> None:
    with smtp_server() as inbox, server.admin() as admin, server.writer() as writer:
        configure(admin, server, inbox)
        link = invite(writer, inbox, "ann", locale="fi")
        with browser() as chromium:
            page = chromium.new_page(viewport={"width": 360, "height": 740})  # a phone
            response = page.goto(link)
            assert response is not None and response.status == 200
            assert page.locator("html").get_attribute("lang") == "fi"
            assert "Kuinka tyytyväinen" in page.content()
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll
            page.locator("input[name=score][value='2']").check()
            page.locator("input[name=q_reason][value='speed']").check()
            page.locator("form.form [type=submit]").click()
            page.wait_for_load_state()
            assert "Kiitos" in page.content()
        customer = admin.get("/v1/profiles/lookup", params={"user_id": "ann"}).json()["customer_id"]

        def answered() -> list[dict[str, Any]]:
            rows = admin.get(f"/v1/profiles/{customer}/timeline").json().get("events", [])
            return [row for row in rows if row.get("name") == "Feedback Submitted"]

        (row,) = until(answered, what="the feedback event on the timeline")
        assert row["channel"] == "email"
        events = admin.get("/v1/events", params={"name": "Feedback Submitted"}).json()["events"]
        (feedback,) = events
        properties = feedback["properties"]
        assert properties["journey"] == "support-follow-up" and properties["step"] == "ask"
        assert properties["metric"] == "csat" and properties["score"] == 2
        assert properties["answers"] == {"reason": "speed"} and properties["survey"] == "support-csat"
        assert properties["trigger"]["name"] == "Case Closed"
        metrics = until(
            lambda: (m := admin.get("/v1/feedback/metrics", params={"metric": "csat"}).json())["groups"] and m,
            what="the metric",
        )
        (overall,) = metrics["groups"]
        assert overall["answers"] == 1 and overall["invitations"] == 1


def _answer(server: ServerProcess, token: str, body: dict[str, Any]) -> Any:
    import httpx

    return httpx.post(f"{server.url}/v1/invitations/{token}/answer", json=body, timeout=10)


def _stored(server: ServerProcess, token: str) -> Any:
    import httpx

    return httpx.get(f"{server.url}/v1/invitations/{token}", timeout=10).json()


def test_tampered_reused_and_cross_customer_tokens_are_refused(server: ServerProcess) -> None:
    with smtp_server() as inbox, server.admin() as admin, server.writer() as writer:
        configure(admin, server, inbox, edit="0s")
        token = invite(writer, inbox, "ann").rsplit("/", 1)[1]
        invite(writer, inbox, "bob")
        bob = admin.get("/v1/profiles/lookup", params={"user_id": "bob"}).json()["customer_id"]
        # Tampered: any changed character breaks the signature.
        first_changed = ("y" if token[0] == "x" else "x") + token[1:]  # never the token itself
        for forged in (token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), first_changed, token + "x", "nonsense"):
            refused = _answer(server, forged, {"score": 5})
            assert refused.status_code == 403, forged
            assert refused.json()["code"] == "forbidden" and "not valid" in refused.json()["message"]
        # Cross-customer: a front end that knows who answers cannot use ann's link for bob.
        refused = _answer(server, token, {"score": 5, "customer_id": bob})
        assert refused.status_code == 403 and "another customer" in refused.json()["message"]
        assert _stored(server, token)["answered"] is False
        # The real answer, then a reuse: the edit window is 0, so it is refused.
        first = _answer(server, token, {"score": 4})
        assert first.status_code == 201, first.text
        again = _answer(server, token, {"score": 1})
        assert again.status_code == 409 and again.json()["code"] == "conflict"
        same = _answer(server, token, {"score": 4})  # a replay of the same answer changes nothing
        assert same.status_code == 200 and same.json()["changed"] is False
        assert _stored(server, token)["answer"]["score"] == 4
        # Invalid answers: off the scale, an unknown option.
        assert _answer(server, token, {"score": 9}).status_code in (400, 409)
        # The hosted page says it in words, with the status.
        import httpx

        last_changed = token[:-1] + ("Y" if token[-1] == "X" else "X")
        page = httpx.get(f"{server.url}/s/{last_changed}", timeout=10)
        assert (page.status_code == 403 and "not valid" in page.text.lower()) or "ei ole" in page.text.lower()
        closed = httpx.post(f"{server.url}/s/{token}", content="score=1", timeout=10)
        assert closed.status_code == 409
        customer = admin.get("/v1/profiles/lookup", params={"user_id": "ann"}).json()["customer_id"]

        def answers() -> list[dict[str, Any]]:
            rows = admin.get(f"/v1/profiles/{customer}/timeline").json().get("events", [])
            return [row for row in rows if row.get("name") == "Feedback Submitted"]

        until(answers, what="the answer on the timeline")
        time.sleep(0.5)
        assert len(answers()) == 1  # only the one accepted answer reached the log


def test_an_expired_link_is_gone_and_an_edit_within_the_window_is_a_new_revision(server: ServerProcess) -> None:
    with smtp_server() as inbox, server.admin() as admin, server.writer() as writer:
        configure(admin, server, inbox, expires="3s", edit="1h")
        token = invite(writer, inbox, "ann").rsplit("/", 1)[1]
        assert _answer(server, token, {"score": 2}).status_code == 201
        import httpx

        wrong = httpx.post(
            f"{server.url}/s/{token}", content="score=99", headers={"content-type": "application/x-www-form-urlencoded"}
        )
        assert wrong.status_code == 422 and "Choose a number from 1 to 5." in wrong.text  # in the page's words
        edited = _answer(server, token, {"score": 5, "answers": {"reason": "answer"}})
        assert edited.status_code == 200 and edited.json()["revision"] == 2
        time.sleep(3.5)
        gone = _answer(server, token, {"score": 3})
        assert gone.status_code == 410 and "expired" in gone.json()["message"]
        assert admin.get("/v1/feedback/metrics", params={"metric": "csat"}).status_code == 200

        def rows() -> Any:
            found = admin.get("/v1/feedback/metrics", params={"metric": "csat"}).json()["groups"]
            return found and found[0]["answers"] == 1 and found[0]

        overall = until(rows, what="the edited answer in the metrics")
        assert overall["score"] == 100.0  # the edit (5) replaced the first answer (2)


@pytest.mark.parametrize("path", ["/v1/surveys", "/v1/feedback/metrics"])
def test_admin_survey_reads_need_the_admin_token(server: ServerProcess, path: str) -> None:
    import httpx

    assert httpx.get(f"{server.url}{path}", timeout=10).status_code == 401


IN_APP = """
id: checkout-ces
metric: ces
question: {en: "How easy was it to check out?", fi: "Kuinka helppoa maksaminen oli?"}
channels: [in_app]
triggers: [{event: Order Completed}]
"""


def test_in_app_surveys_are_listed_for_the_app_and_answered_through_the_api(server: ServerProcess) -> None:
    import httpx

    with server.admin() as admin, server.writer() as writer:
        assert (
            admin.put(
                "/v1/surveys/checkout-ces", content=IN_APP, headers={"content-type": "application/yaml"}
            ).status_code
            == 201
        )
        time.sleep(1.2)
        batch = [
            {"type": "identify", "userId": "ann", "traits": {"locale": "fi"}},
            {"type": "track", "userId": "ann", "event": "Order Completed", "context": {"channel": "app"}},
        ]
        assert writer.post("/v1/batch", json={"batch": batch}).status_code == 200
        customer = until(
            lambda: (
                (r := admin.get("/v1/profiles/lookup", params={"user_id": "ann"})).status_code == 200
                and r.json()["customer_id"]
            ),
            what="the customer",
        )
        pending = until(
            lambda: admin.get(f"/v1/profiles/{customer}/surveys").json()["surveys"], what="the in-app survey"
        )
        (item,) = pending
        assert item["survey"]["question"] == "Kuinka helppoa maksaminen oli?" and item["survey"]["scale"] == [1, 7]
        answered = httpx.post(
            f"{server.url}/v1/invitations/{item['token']}/answer",
            json={"score": 6, "customer_id": customer},
            timeout=10,
        )
        assert answered.status_code == 201, answered.text
        assert admin.get(f"/v1/profiles/{customer}/surveys").json()["surveys"] == []
        everything = admin.get(f"/v1/profiles/{customer}/surveys", params={"all": "true"}).json()["invitations"]
        assert [(i["survey"], i["status"], i["channel"]) for i in everything] == [("checkout-ces", "sent", "in_app")]
        metrics = until(
            lambda: (
                (m := admin.get("/v1/feedback/metrics", params={"metric": "ces", "by": "channel"}).json())["groups"]
                and m["groups"][0]["answers"] == 1
                and m
            ),
            what="the CES metric",
        )
        (group,) = metrics["groups"]
        assert group["key"] == "in_app" and group["mean"] == 6 and group["shares"]["high_effort"] == 100.0
        listed = admin.get("/v1/surveys").json()["surveys"]
        assert listed[0]["id"] == "checkout-ces" and listed[0]["last_30_days"]["answered"] == 1


def test_dont_ask_me_again_on_the_page_withdraws_survey_consent(server: ServerProcess) -> None:
    import httpx

    with server.admin() as admin, server.writer() as writer:
        deployed = admin.put("/v1/surveys/checkout-ces", content=IN_APP, headers={"content-type": "application/yaml"})
        assert deployed.status_code == 201
        time.sleep(1.2)
        batch = [
            {"type": "identify", "userId": "oona", "traits": {"consent": {"marketing": True}}},
            {"type": "track", "userId": "oona", "event": "Order Completed", "context": {"channel": "app"}},
        ]
        assert writer.post("/v1/batch", json={"batch": batch}).status_code == 200
        customer = until(
            lambda: (
                (r := admin.get("/v1/profiles/lookup", params={"user_id": "oona"})).status_code == 200
                and r.json()["customer_id"]
            ),
            what="the customer",
        )
        (item,) = until(lambda: admin.get(f"/v1/profiles/{customer}/surveys").json()["surveys"], what="the survey")
        page = httpx.get(f"{server.url}/s/{item['token']}", timeout=10)
        assert page.status_code == 200 and f'action="/s/{item["token"]}/opt-out"' in page.text
        assert "Don&#39;t ask me for feedback again" in page.text or "Don't ask me for feedback again" in page.text
        done = httpx.post(f"{server.url}/s/{item['token']}/opt-out", timeout=10)
        assert done.status_code == 200 and "ask again" in done.text
        assert httpx.post(f"{server.url}/s/not-a-token/opt-out", timeout=10).status_code == 403
        consent = until(
            lambda: (
                (c := admin.get(f"/v1/profiles/{customer}/consent").json())["purposes"]["surveys"]["given"] is False
                and c
            ),
            what="the withdrawn consent",
        )
        assert consent["purposes"]["marketing"]["given"] is True  # what they said before stays
        assert consent["history"][0]["channel"] == "in_app"
        # The contact policy now refuses surveys to them on every channel.
        policy = admin.get(f"/v1/profiles/{customer}/policy").json()
    (surveys,) = [row for row in policy["purposes"] if row["purpose"] == "surveys"]
    assert surveys["given"] is False
    assert [(v["kind"], v["reason"]) for v in surveys["verdicts"]] == [("skip", "consent:surveys")], surveys
