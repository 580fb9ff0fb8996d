"""Getting into the dashboard, against a real ``polku serve``: the login, the session
cookie, CSRF, security headers, revoked tokens, and the static files."""

from __future__ import annotations

import re

import httpx

from tests.conftest import ADMIN_TOKEN, ServerProcess
from tests.dashboard.conftest import csrf_of, log_in


def _client(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=30)


def test_pages_ask_for_a_login_and_return_where_the_user_was_going(server: ServerProcess) -> None:
    with _client(server) as client:
        first = client.get("/ui/", params={"x": "1"})
        assert first.status_code == 303 and first.headers["location"] == "/ui/login?next=/ui/%3Fx%3D1"
        assert client.get("/ui/api/overview").status_code == 401
        assert client.get("/ui/fragments/channel-mix").status_code == 401
        assert client.get("/").headers["location"] == "/ui/"
        page = client.get("/ui/login", params={"next": "/ui/?x=1"})
        check = re.search(r'name="check" value="([^"]+)"', page.text)
        assert check is not None
        done = client.post("/ui/login", data={"token": ADMIN_TOKEN, "check": check.group(1), "next": "/ui/?x=1"})
        assert done.status_code == 303 and done.headers["location"] == "/ui/?x=1"
        cookie = done.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
        assert ADMIN_TOKEN not in done.headers["set-cookie"]
        assert client.get("/ui/").status_code == 200


def test_a_wrong_token_or_a_forged_login_form_is_refused(server: ServerProcess) -> None:
    with _client(server) as client:
        wrong = log_in(client, "not-the-token")
        assert wrong.status_code == 401 and "That admin token is not valid." in wrong.text
        assert "polku_session" not in wrong.headers.get("set-cookie", "")
        # A login posted from another page (no check cookie of ours): login CSRF.
        with _client(server) as other:
            forged = other.post("/ui/login", data={"token": ADMIN_TOKEN, "check": "guess"})
        assert forged.status_code == 403 and "polku_session" not in forged.headers.get("set-cookie", "")


def test_login_never_redirects_to_another_site(server: ServerProcess) -> None:
    for target in ("//evil.example/ui", "https://evil.example/", "/ui\\@evil", "/v1/keys"):
        with _client(server) as client:
            page = client.get("/ui/login")
            check = re.search(r'name="check" value="([^"]+)"', page.text)
            assert check is not None
            done = client.post("/ui/login", data={"token": ADMIN_TOKEN, "check": check.group(1), "next": target})
            assert done.status_code == 303 and done.headers["location"] == "/ui/", target


def test_pages_carry_the_security_headers_and_their_server_time(server: ServerProcess) -> None:
    with _client(server) as client:
        log_in(client)
        page = client.get("/ui/")
    headers = page.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    assert headers["cache-control"] == "no-store"
    assert re.fullmatch(r"app;dur=\d+(\.\d+)?", headers["server-timing"])
    assert "<script>" not in page.text and " onclick=" not in page.text  # no inline script


def test_a_tampered_cookie_or_a_revoked_token_ends_the_session(server: ServerProcess) -> None:
    with server.admin() as admin:
        second = admin.post("/v1/keys", json={"kind": "admin", "label": "for the dashboard"}).json()
    with _client(server) as client:
        assert log_in(client, second["key"]).status_code == 303
        assert client.get("/ui/").status_code == 200
        cookie = client.cookies.get("polku_session", path="/ui")
        assert cookie
        # A character inside the signature (the last one can carry unused padding bits).
        tampered = cookie[:-10] + ("A" if cookie[-10] != "A" else "B") + cookie[-9:]
        client.cookies.set("polku_session", tampered, path="/ui")
        assert client.get("/ui/").status_code == 303
        client.cookies.set("polku_session", cookie, path="/ui")
        assert client.get("/ui/").status_code == 200
        with server.admin() as admin:
            assert admin.delete(f"/v1/keys/{second['key_id']}").status_code == 200
        assert client.get("/ui/").status_code == 303
        assert client.get("/ui/api/overview").status_code == 401


def test_logout_needs_the_pages_token_and_ends_the_session(server: ServerProcess) -> None:
    with _client(server) as client:
        log_in(client)
        page = client.get("/ui/")
        assert client.post("/ui/logout", data={"csrf": "forged"}).status_code == 403
        assert client.get("/ui/").status_code == 200
        done = client.post("/ui/logout", data={"csrf": csrf_of(page.text)})
        assert done.status_code == 303 and done.headers["location"] == "/ui/login"
        assert client.get("/ui/").status_code == 303


def test_the_chart_library_is_served_locally_gzipped_and_cached(server: ServerProcess) -> None:
    with _client(server) as client:
        response = client.get("/ui/static/plotly.min.js", params={"v": "1"}, headers={"Accept-Encoding": "gzip"})
        assert response.status_code == 200 and response.headers["content-encoding"] == "gzip"
        assert "immutable" in response.headers["cache-control"]
        assert b"plotly.js" in response.content[:2000] and len(response.content) > 1_000_000  # httpx un-gzips
        etag = response.headers["etag"]
        assert client.get("/ui/static/plotly.min.js", headers={"If-None-Match": etag}).status_code == 304
        assert client.get("/ui/static/../app.py").status_code == 404
        assert client.get("/ui/static/secret.txt").status_code == 404


def test_the_overview_api_answers_what_the_first_page_shows(server: ServerProcess) -> None:
    with server.writer() as writer:
        batch = [
            {"type": "track", "event": "Viewed", "userId": f"u{i}", "context": {"channel": "app"}} for i in range(3)
        ]
        assert writer.post("/v1/batch", json={"batch": batch}).status_code == 200
    with server.admin() as admin:
        found = admin.get("/v1/overview").json()
    assert found["rate"]["by_channel"]["app"] == round(3 / 60, 2)
    assert set(found) == {"at", "rate", "processing", "quarantine", "deliveries", "people"}
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get("/v1/overview").status_code == 401
