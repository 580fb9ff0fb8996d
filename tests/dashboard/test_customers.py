"""The customers pages against a real server: look a customer up as an agent
would (a phone number typed with spaces) and read the same agent view the API
gives; an unknown identifier says so; a merged-away id leads to the live one."""

from __future__ import annotations

import html
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from tests.conftest import ServerProcess


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def wait_for(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """``check()``'s first truthy answer (the processor works beside the server)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, "the processor did not catch up in time"
        time.sleep(0.2)


def send(server: ServerProcess, *events: dict[str, Any]) -> None:
    with server.writer() as writer:
        response = writer.post("/v1/batch", json={"batch": list(events)})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == len(events), response.text


def customer_with_phone(admin: httpx.Client) -> tuple[str, str]:
    """(user id, phone) of a demo customer, as the API's event log has them."""
    page = admin.get("/v1/events", params={"type": "identify", "limit": 200}).json()
    for event in page["events"]:
        phone = (event.get("traits") or {}).get("phone")
        if phone and event.get("userId"):
            return event["userId"], phone
    raise AssertionError("no identify event with a phone number in the demo")


def spaced(phone: str) -> str:
    """``+358401234567`` as a person types it: ``+358 40 123 4567``."""
    digits = phone.removeprefix("+")
    return f"+{digits[:3]} {digits[3:5]} {digits[5:8]} {digits[8:]}"


def text_of(page: str, attribute: str) -> list[str]:
    """The texts of the elements marked with ``attribute`` (e.g. ``data-reason``)."""
    found = re.findall(rf"<(\w+)[^>]* {re.escape(attribute)}(?=[ >])[^>]*>(.*?)</\1>", page, re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", inner)).strip() for _, inner in found]


def test_a_phone_number_written_with_spaces_finds_the_agent_view(demo_server: ServerProcess, ui: httpx.Client) -> None:
    with demo_server.admin() as admin:
        user_id, phone = customer_with_phone(admin)
        customer_id = admin.get("/v1/profiles/lookup", params={"phone": phone}).json()["customer_id"]
        # Something to call about: a failed payment (a journey leaves the agent a
        # note) and a failed password reset in the app (a journey waits for a call).
        marker = uuid.uuid4().hex[:8]
        send(
            demo_server,
            {"type": "track", "event": "Payment Failed", "userId": user_id, "timestamp": now_iso(),
             "messageId": f"pay-{marker}", "context": {"channel": "web"}, "properties": {"reason": f"declined-{marker}"}},
            {"type": "track", "event": "Password Reset Failed", "userId": user_id, "timestamp": now_iso(),
             "messageId": f"reset-{marker}", "context": {"channel": "app"}, "properties": {"reason": "expired_link"}},
        )  # fmt: skip

        def caught_up() -> dict[str, Any] | None:
            context = admin.get(f"/v1/profiles/{customer_id}/context").json()
            journeys = admin.get(f"/v1/profiles/{customer_id}/journeys").json()
            waiting = any(i["journey"] == "password-help" for i in journeys["instances"])
            noted = any(marker in note["text"] for note in context["notes"])
            return {"context": context, "journeys": journeys} if waiting and noted else None

        found = wait_for(caught_up)
    context, journeys = found["context"], found["journeys"]

    response = ui.get("/ui/customers", params={"q": spaced(phone)})
    assert response.status_code == 303, response.text[:500]
    assert response.headers["location"] == f"/ui/customers/{customer_id}"
    page = ui.get(response.headers["location"])
    assert page.status_code == 200, page.text[:500]
    assert "app;dur=" in page.headers["server-timing"]
    text = html.unescape(re.sub(r"<[^>]+>", "", page.text))

    for kind, values in context["who"]["identifiers"].items():
        assert text_of(page.text, f'data-identifier="{kind}"') == [", ".join(values)]
    assert text_of(page.text, "data-reason") == [context["likely_reason"]["event"]]
    assert context["likely_reason"]["event"] == "Password Reset Failed"
    for note in context["notes"]:
        assert note["text"] in text
    for instance in journeys["instances"]:
        assert f'data-journey="{instance["journey"]}"' in page.text
        assert instance["step"] in text
    waiting = next(i for i in journeys["instances"] if i["journey"] == "password-help")
    assert "Waiting at step wait-for-call until" in text and waiting["due_at"]
    # The search form is on every customers page, with its label.
    assert 'for="q">Email, phone, user id or anonymous id</label>' in ui.get("/ui/customers").text


def test_an_unknown_identifier_says_no_customer_has_it(ui: httpx.Client) -> None:
    response = ui.get("/ui/customers", params={"q": "nobody-here@example.com"})
    assert response.status_code == 200
    assert "No customer has “nobody-here@example.com”" in html.unescape(response.text)
    assert "+358 40 123 4567" in response.text  # the tip about phone numbers

    typed = ui.get("/ui/customers", params={"q": "phone:12"})
    assert "No customer has “phone:12”: '12' is not a valid phone" in html.unescape(typed.text)

    missing = ui.get("/ui/customers/c_00000000000000000000")
    assert missing.status_code == 404
    assert "No customer has the id" in html.unescape(missing.text)
    assert 'href="/ui/customers"' in missing.text


def test_recently_active_customers_link_to_their_pages(ui: httpx.Client) -> None:
    page = ui.get("/ui/customers")
    links = re.findall(r'href="/ui/customers/(c_[0-9a-f]+)"', page.text)
    assert links, "the search page lists no recently active customers"
    assert ui.get(f"/ui/customers/{links[0]}").status_code == 200


def test_a_merged_away_id_leads_to_the_live_customer(demo_server: ServerProcess, ui: httpx.Client) -> None:
    marker = uuid.uuid4().hex[:10]
    anonymous, user = f"anon-merge-{marker}", f"user-merge-{marker}"
    send(
        demo_server,
        {"type": "track", "event": "Product Viewed", "anonymousId": anonymous, "timestamp": now_iso(),
         "messageId": f"a-{marker}", "context": {"channel": "web"}},
        {"type": "track", "event": "Call Started", "userId": user, "timestamp": now_iso(),
         "messageId": f"u-{marker}", "context": {"channel": "phone"}},
    )  # fmt: skip
    with demo_server.admin() as admin:

        def ids() -> tuple[str, str] | None:
            first = admin.get("/v1/profiles/lookup", params={"anonymous_id": anonymous})
            second = admin.get("/v1/profiles/lookup", params={"user_id": user})
            if first.status_code != 200 or second.status_code != 200:
                return None
            return first.json()["customer_id"], second.json()["customer_id"]

        before = wait_for(ids)
        assert before[0] != before[1]
        send(
            demo_server,
            {"type": "identify", "anonymousId": anonymous, "userId": user, "timestamp": now_iso(),
             "messageId": f"i-{marker}", "context": {"channel": "web"}},
        )  # fmt: skip
        after = wait_for(lambda: (found := ids()) and found[0] == found[1] and found)
    live = after[0]
    merged_away = next(customer for customer in before if customer != live)
    response = ui.get(f"/ui/customers/{merged_away}")
    assert response.status_code == 303
    assert response.headers["location"] == f"/ui/customers/{live}"
    page = ui.get(f"/ui/customers/{live}")
    assert anonymous in page.text and user in page.text


def test_the_timeline_pages_back_with_the_api_cursor(demo_server: ServerProcess, ui: httpx.Client) -> None:
    marker = uuid.uuid4().hex[:10]
    user = f"user-busy-{marker}"
    send(
        demo_server,
        *[{"type": "track", "event": f"Page {n}", "userId": user, "timestamp": now_iso(),
           "messageId": f"p-{marker}-{n}", "context": {"channel": "web"}} for n in range(60)],
    )  # fmt: skip
    with demo_server.admin() as admin:

        def timeline() -> dict[str, Any] | None:
            lookup = admin.get("/v1/profiles/lookup", params={"user_id": user})
            if lookup.status_code != 200:
                return None
            customer_id = lookup.json()["customer_id"]
            found = admin.get(f"/v1/profiles/{customer_id}/timeline", params={"limit": 50}).json()
            return found if len(found["events"]) == 50 and found["next_cursor"] else None

        first = wait_for(timeline)
        customer_id = first["customer_id"]
        older = admin.get(
            f"/v1/profiles/{customer_id}/timeline", params={"limit": 50, "cursor": first["next_cursor"]}
        ).json()
    page = ui.get(f"/ui/customers/{customer_id}")
    link = re.search(r'href="(/ui/customers/[^"?]+\?before=[^"#]+)#timeline">Older events', page.text)
    assert link, "no link to older events"
    second = ui.get(html.unescape(link.group(1)))
    assert second.status_code == 200
    timeline = second.text.split('id="timeline"', 1)[1]
    shown = [html.unescape(name) for name in re.findall(r"<strong>(Page \d+)</strong>", timeline)]
    assert shown == [event["name"] for event in older["events"] if event["name"].startswith("Page ")]


def test_a_privacy_token_erases_a_person_from_the_agent_view(server: ServerProcess) -> None:
    from tests.dashboard.conftest import csrf_of, log_in
    from tests.journeys.test_journey_e2e import until

    with server.admin() as admin, server.writer() as writer:
        assert writer.post("/v1/identify", json={"userId": "ella", "traits": {"name": "Ella E"}}).status_code == 200
        customer = until(
            lambda: (
                (r := admin.get("/v1/profiles/lookup", params={"user_id": "ella"})).status_code == 200
                and r.json()["customer_id"]
            ),
            what="ella",
        )
        manager = admin.post("/v1/keys", json={"kind": "admin", "scopes": ["read", "manage"]}).json()["key"]
    with httpx.Client(base_url=server.url, timeout=30) as ui:
        assert log_in(ui, manager).status_code == 303
        page = ui.get(f"/ui/customers/{customer}")
        assert page.status_code == 200 and "Erase this person" not in page.text  # no privacy scope: no button
        refused = ui.post(f"/ui/customers/{customer}/erase", data={"csrf": csrf_of(page.text)})
        assert refused.status_code == 403
    with httpx.Client(base_url=server.url, timeout=30) as ui:
        assert log_in(ui).status_code == 303  # the first admin token: every scope
        page = ui.get(f"/ui/customers/{customer}")
        assert "Erase this person" in page.text
        assert ui.post(f"/ui/customers/{customer}/erase", data={"csrf": "forged"}).status_code == 403
        erased = ui.post(f"/ui/customers/{customer}/erase", data={"csrf": csrf_of(page.text), "suppress": "1"})
        assert erased.status_code == 303 and "erased" in erased.headers["location"], erased.headers
    with server.admin() as admin:
        assert admin.get("/v1/profiles/lookup", params={"user_id": "ella"}).status_code == 404
        (receipt,) = admin.get("/v1/erasures").json()["erasures"]
        assert receipt["status"] == "erased" and receipt["suppressed"] == 1
        actions = [entry["action"] for entry in admin.get("/v1/audit").json()["entries"]]
        assert f"POST /ui/customers/[{receipt['id']}]/erase" in actions and not any(customer in a for a in actions)
