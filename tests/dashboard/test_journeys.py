"""The journeys pages on a real server: the list and each journey show the numbers
the API gives, the live JSON too; pause and resume go through CSRF-checked forms;
a new version is checked with each error at its line, and deployed."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ServerProcess
from tests.dashboard.conftest import csrf_of

USERS = [f"cust-{number:05d}" for number in range(1, 9)]


@pytest.fixture(scope="module")
def admin(demo_server: ServerProcess) -> Iterator[httpx.Client]:
    with demo_server.admin() as client:
        yield client


@pytest.fixture(scope="module")
def moving(demo_server: ServerProcess, admin: httpx.Client) -> ServerProcess:
    """Customers in the demo's journeys (its history is older than them): a failed
    payment (a note, then the end) and a failed password reset in the app (waiting
    for a call); until the processor is done with them."""
    with demo_server.writer() as writer:
        for user in USERS:
            for name, channel in (("Payment Failed", "web"), ("Password Reset Failed", "app")):
                response = writer.post(
                    "/v1/track",
                    json={
                        "userId": user,
                        "event": name,
                        "properties": {"reason": "test"},
                        "context": {"channel": channel},
                        "messageId": f"dashboard-journeys-{name}-{user}",
                    },
                )
                assert response.status_code == 200, response.text
    last: list[int] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = [
            admin.get(f"/v1/journeys/{journey}/stats").json()["total"]["entered"]["total"]
            for journey in ("payment-rescue", "password-help")
        ]
        if found == last and all(found):
            break
        last = found
        time.sleep(0.5)
    assert all(last), "the journeys did not pick the events up"
    return demo_server


def plain(text: str) -> str:
    """A shown number as digits: ``1 234`` → ``1234``."""
    return html.unescape(text).replace("\u202f", "").strip()


def live_values(page: str) -> dict[str, list[str]]:
    """Every ``data-live`` element's text, by key (the graph and the tables)."""
    found: dict[str, list[str]] = {}
    for key, text in re.findall(r'data-live="([^"]+)"[^>]*>([^<]*)<', page):
        found.setdefault(html.unescape(key), []).append(plain(text))
    return found


def test_the_list_shows_every_journey_the_api_lists_with_its_numbers(
    ui: httpx.Client, admin: httpx.Client, moving: ServerProcess
) -> None:
    page = ui.get("/ui/journeys")
    assert page.status_code == 200
    assert "app;dur=" in page.headers["server-timing"]
    listed = admin.get("/v1/journeys").json()["journeys"]
    assert {journey["id"] for journey in listed} >= {"cart-reminder", "password-help", "payment-rescue"}
    for journey in listed:
        row = re.search(rf'<tr data-journey="{re.escape(journey["id"])}">(.*?)</tr>', page.text, re.S)
        assert row, journey["id"]
        assert f'href="/ui/journeys/{journey["id"]}"' in row.group(1)
        numbers = [plain(cell) for cell in re.findall(r'<td class="num">([^<]*)</td>', row.group(1))]
        assert numbers == [str(journey[key]) for key in ("version", "entered", "active", "goal")]
        assert f"status-{journey['status']}" in row.group(1)
    # The holdout journeys say what their uplift is (or that there is not enough data).
    assert re.search(r"pp \(95\u00a0% interval|not enough data yet", page.text)


def test_a_journeys_graph_and_tables_show_the_stats_of_the_api(
    ui: httpx.Client, admin: httpx.Client, moving: ServerProcess
) -> None:
    for journey in ("password-help", "payment-rescue", "cart-reminder"):
        page = ui.get(f"/ui/journeys/{journey}")
        assert page.status_code == 200, page.text[:500]
        total = admin.get(f"/v1/journeys/{journey}/stats").json()["total"]
        shown = live_values(page.text)
        assert '<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="Journey' in page.text
        assert shown["entered"] == [str(total["entered"]["total"])] * len(shown["entered"])
        assert shown["active"] == [str(total["active"])]
        for step, counts in total["steps"].items():
            # On its box in the graph and in the table below it.
            assert shown[f"step:{step}:reached"] == [str(counts["reached"])] * 2
            assert shown[f"step:{step}:waiting"] == [str(counts["waiting"])] * 2
        for step, action in total["actions"].items():
            for result in ("sent", "held", "failed", "holdout"):
                assert set(shown[f"step:{step}:{result}"]) == {str(action[result])}
            assert set(shown[f"step:{step}:suppressed"]) == {str(action["skipped_total"])}
        for edge in total["edges"]:
            # On its arrow and in the table of moves.
            assert shown[f"edge:{edge['from']}:{edge['to']}"] == [str(edge["count"])] * 2
    # Moves the test's customers made: into a note and out to the end.
    total = admin.get("/v1/journeys/payment-rescue/stats").json()["total"]
    assert {(edge["from"], edge["to"]) for edge in total["edges"]} == {("note", "end")}


def test_the_live_json_gives_the_pages_numbers(ui: httpx.Client, moving: ServerProcess) -> None:
    for journey in ("password-help", "payment-rescue"):
        page = ui.get(f"/ui/journeys/{journey}")
        live = ui.get(f"/ui/api/journeys/{journey}")
        assert live.status_code == 200
        display = live.json()["display"]
        for key, texts in live_values(page.text).items():
            assert key in display, key
            assert {plain(display[key])} == set(texts), key
        assert f'data-poll="/ui/api/journeys/{journey}"' in page.text


def test_pause_and_resume_through_the_forms(ui: httpx.Client, admin: httpx.Client) -> None:
    page = ui.get("/ui/journeys/password-help")
    assert 'action="/ui/journeys/password-help/pause"' in page.text
    try:
        response = ui.post("/ui/journeys/password-help/pause", data={"csrf": csrf_of(page.text)})
        assert response.status_code == 303
        assert response.headers["location"].startswith("/ui/journeys/password-help?notice=Paused")
        assert admin.get("/v1/journeys/password-help").json()["status"] == "paused"
        page = ui.get(response.headers["location"])
        assert "Paused journey password-help" in page.text
        assert 'action="/ui/journeys/password-help/resume"' in page.text
    finally:
        response = ui.post("/ui/journeys/password-help/resume", data={"csrf": csrf_of(page.text)})
    assert response.status_code == 303
    assert admin.get("/v1/journeys/password-help").json()["status"] == "active"


@pytest.mark.parametrize("data", [{}, {"csrf": "forged"}])
def test_a_form_without_its_token_changes_nothing(ui: httpx.Client, admin: httpx.Client, data: dict[str, str]) -> None:
    for action in ("pause", "archive"):
        response = ui.post(f"/ui/journeys/payment-rescue/{action}", data=data)
        assert response.status_code == 403
        assert admin.get("/v1/journeys/payment-rescue").json()["status"] == "active"
    before = admin.get("/v1/journeys/payment-rescue").json()["version"]
    body = admin.get("/v1/journeys/payment-rescue").json()["body"] + "# changed\n"
    assert ui.post("/ui/journeys/payment-rescue/deploy", data={**data, "body": body}).status_code == 403
    assert admin.get("/v1/journeys/payment-rescue").json()["version"] == before


def test_a_conflict_is_a_message_on_the_page(ui: httpx.Client, admin: httpx.Client) -> None:
    body = "id: dashboard-archived\nentry: {event: Never Sent}\nsteps:\n  - id: note\n    action: {channel: in_app, body: x}\n"
    response = admin.put("/v1/journeys/dashboard-archived", content=body, headers={"Content-Type": "application/yaml"})
    assert response.status_code in (200, 201), response.text
    csrf = csrf_of(ui.get("/ui/journeys/dashboard-archived").text)
    assert ui.post("/ui/journeys/dashboard-archived/archive", data={"csrf": csrf}).status_code == 303
    response = ui.post("/ui/journeys/dashboard-archived/pause", data={"csrf": csrf})
    assert response.status_code == 303
    assert "error=" in response.headers["location"]
    page = ui.get(response.headers["location"])
    assert 'class="flash error" role="alert"' in page.text
    assert "is archived; resume it first" in html.unescape(page.text)
    assert admin.get("/v1/journeys/dashboard-archived").json()["status"] == "archived"


def test_an_invalid_version_shows_its_error_at_its_line(ui: httpx.Client, admin: httpx.Client) -> None:
    page = ui.get("/ui/journeys/password-help")
    body = admin.get("/v1/journeys/password-help").json()["body"]
    lines = body.split("\n")
    number = next(index for index, line in enumerate(lines, start=1) if "within: 2h" in line)
    broken = body.replace("within: 2h", "within: soon")
    response = ui.post("/ui/journeys/password-help/check", data={"csrf": csrf_of(page.text), "body": broken})
    assert response.status_code == 200
    text = html.unescape(response.text)
    # In the summary, linked to the line; and at the line itself.
    assert f'<a href="#check-line-{number}">Line {number}</a>: steps[0].wait_for.within' in text
    line = re.search(rf'<li id="check-line-{number}"[^>]*>(.*?)</li>', text, re.S)
    assert line, f"no line {number}"
    assert "within: soon" in line.group(1)
    assert "'soon' is not a duration" in line.group(1)
    assert "Deploy as version" not in text
    # The textarea keeps what was sent.
    assert "within: soon" in re.search(r"<textarea[^>]*>(.*?)</textarea>", text, re.S).group(1)  # type: ignore[union-attr]


def test_a_yaml_syntax_error_and_an_oversized_document(ui: httpx.Client) -> None:
    csrf = csrf_of(ui.get("/ui/journeys/password-help").text)
    response = ui.post(
        "/ui/journeys/password-help/check", data={"csrf": csrf, "body": "id: password-help\nsteps: [\n  - x: :\n"}
    )
    text = html.unescape(response.text)
    assert re.search(r'<a href="#check-line-(\d+)">Line \1</a>: not valid YAML', text)
    response = ui.post("/ui/journeys/password-help/check", data={"csrf": csrf, "body": "#" * (1024 * 1024 + 1)})
    assert response.status_code == 200
    assert "a journey document is at most 1048576 bytes (1 MB)" in response.text


def test_a_valid_version_is_checked_then_deployed(ui: httpx.Client, admin: httpx.Client) -> None:
    current = admin.get("/v1/journeys/payment-rescue").json()
    csrf = csrf_of(ui.get("/ui/journeys/payment-rescue").text)
    same = ui.post("/ui/journeys/payment-rescue/check", data={"csrf": csrf, "body": current["body"]})
    assert f"identical to version {current['version']}" in same.text
    body = current["body"].replace("\n", "\r\n") + "# checked on the dashboard\r\n"  # as a browser sends it
    checked = ui.post("/ui/journeys/payment-rescue/check", data={"csrf": csrf, "body": body})
    following = current["version"] + 1
    assert f"Valid: would deploy as version {following}." in checked.text
    assert 'formaction="/ui/journeys/payment-rescue/deploy"' in checked.text
    deployed = ui.post("/ui/journeys/payment-rescue/deploy", data={"csrf": csrf, "body": body})
    assert deployed.status_code == 303
    assert f"Deployed version {following}" in html.unescape(deployed.headers["location"].replace("%20", " "))
    found = admin.get("/v1/journeys/payment-rescue").json()
    assert found["version"] == following
    assert found["body"] == current["body"] + "# checked on the dashboard\n"
    # Every version is listed and shows its own YAML.
    page = ui.get("/ui/journeys/payment-rescue?version=1")
    assert f'href="/ui/journeys/payment-rescue?version={following}"' in page.text
    assert "# checked on the dashboard" not in page.text
    assert "# checked on the dashboard" in ui.get(f"/ui/journeys/payment-rescue?version={following}").text


def test_unknown_journeys_and_versions(ui: httpx.Client) -> None:
    assert ui.get("/ui/journeys/no-such-journey").status_code == 404
    assert ui.get("/ui/journeys/password-help?version=999").status_code == 404
    assert ui.get("/ui/journeys/password-help?version=x").status_code == 400
    assert ui.get("/ui/api/journeys/no-such-journey").status_code == 404
