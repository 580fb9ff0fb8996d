"""Scopes of admin tokens against a real ``polku serve``, over every admin operation
of the OpenAPI document: a token with the scope an operation needs gets past the
check, one without it is refused with 403 saying which scope, a write key is no
admin token at all. The dashboard follows: no login without ``read``, no change
without ``manage``."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from tests.conftest import WRITE_KEY, ServerProcess

from polku.web.auth import required_scope

SCOPES = ("read", "manage", "privacy", "workspaces")
"""The scopes admin operations need; ``ingest`` opens none of them (it sends events)."""


def admin_operations(server: ServerProcess) -> list[tuple[str, str]]:
    document = httpx.get(f"{server.url}/openapi.json", timeout=10).json()
    found = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if operation.get("security") == [{"adminToken": []}]:
                found.append((method.upper(), re.sub(r"\{[^}]+\}", "x", path)))
    return found


def token_with(admin: httpx.Client, *scopes: str) -> str:
    made = admin.post("/v1/keys", json={"kind": "admin", "label": "+".join(scopes), "scopes": list(scopes)})
    assert made.status_code == 201, made.text
    assert made.json()["scopes"] == sorted(scopes)
    return str(made.json()["key"])


def call(server: ServerProcess, token: str, method: str, path: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = b"{}" if method in ("POST", "PUT") else None
    return httpx.request(method, f"{server.url}{path}", headers=headers, content=body, timeout=30)


def test_every_admin_operation_needs_its_scope_and_nothing_more(server: ServerProcess) -> None:
    with server.admin() as admin:
        tokens = {scope: token_with(admin, scope) for scope in (*SCOPES, "ingest")}
    operations = admin_operations(server)
    assert len(operations) > 50  # the whole admin API
    needed = {required_scope(method, path) for method, path in operations}
    assert needed == set(SCOPES)  # every scope guards something
    assert required_scope("GET", "/v1/profiles/c_1/export") == "privacy"
    assert required_scope("GET", "/v1/audit") == "privacy"
    assert required_scope("PUT", "/v1/workspace/config") == "manage"
    assert required_scope("DELETE", "/v1/keys/abcdef12") == "manage"
    assert required_scope("GET", "/v1/profiles/c_1") == "read"
    assert required_scope("POST", "/v1/decide") == "read"
    assert required_scope("DELETE", "/v1/profiles/c_1") == "privacy"
    assert required_scope("POST", "/v1/workspaces") == "workspaces"
    wrong: list[Any] = []
    for method, path in operations:
        scope = required_scope(method, path)
        for held, token in tokens.items():
            answer = call(server, token, method, path)
            if held == scope:
                if answer.status_code in (401, 403):
                    wrong.append((method, path, held, answer.status_code, answer.text[:200]))
            elif answer.status_code != 403 or answer.json().get("scope") != scope:
                wrong.append((method, path, held, answer.status_code, answer.text[:200]))
        # A write key is no admin token, whatever the operation.
        if call(server, WRITE_KEY, method, path).status_code != 401:
            wrong.append((method, path, "write key", "not 401"))
    assert not wrong, wrong[:10]


def test_a_token_made_without_scopes_has_all_and_bad_scopes_are_refused(server: ServerProcess) -> None:
    with server.admin() as admin:
        made = admin.post("/v1/keys", json={"kind": "admin"})
        assert made.status_code == 201 and made.json()["scopes"] == ["manage", "privacy", "read"]
        listed = {key["key_id"]: key["scopes"] for key in admin.get("/v1/keys").json()["keys"]}
        assert listed[made.json()["key_id"]] == ["manage", "privacy", "read"]
        for body, message in (
            ({"kind": "admin", "scopes": []}, "one or more"),
            ({"kind": "admin", "scopes": ["root"]}, "'root'"),
            ({"kind": "write", "source": "default", "scopes": ["read"]}, "admin tokens"),
        ):
            refused = admin.post("/v1/keys", json=body)
            assert refused.status_code == 400 and message in refused.json()["message"], refused.text
            assert refused.json()["field"] == "scopes"


@pytest.mark.parametrize(("scopes", "login", "change"), [(["read"], 303, 403), (["manage"], 403, None)])
def test_the_dashboard_needs_read_to_enter_and_manage_to_change(
    server: ServerProcess, scopes: list[str], login: int, change: int | None
) -> None:
    with server.admin() as admin:
        token = token_with(admin, *scopes)
    with httpx.Client(base_url=server.url, timeout=10, follow_redirects=False) as browser:
        form = browser.get("/ui/login")
        csrf = re.search(r'name="check" value="([^"]+)"', form.text)
        fields = {"token": token, **({"check": csrf[1]} if csrf else {})}
        answer = browser.post("/ui/login", data=fields)
        assert answer.status_code == login, answer.text[:300]
        if change is None:
            return
        page = browser.get("/ui/journeys")
        assert page.status_code == 200
        page_csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert page_csrf is not None
        refused = browser.post("/ui/journeys/welcome/pause", data={"csrf": page_csrf[1]})
        assert refused.status_code == change, refused.text[:300]
