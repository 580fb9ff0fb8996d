"""Rate limits per key through a real ``polku serve``: past its burst an admin token
(or a write key, when limited) is answered 429 with ``Retry-After``, other keys are
not, and the key may go on once the wait is over."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from tests.conftest import ADMIN_TOKEN, ServerProcess


def test_an_admin_token_past_its_rate_is_told_when_to_retry(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(["--admin-rate-limit", "2"])  # bursts of 20
    with server.admin() as admin:
        other = admin.post("/v1/keys", json={"kind": "admin", "scopes": ["read"]}).json()["key"]
        answers = [admin.get("/v1/journeys") for _ in range(25)]
    statuses = [answer.status_code for answer in answers]
    assert statuses.count(200) >= 18 and statuses[-1] == 429, statuses  # the first counted for the key above
    refused = answers[-1]
    assert refused.json()["code"] == "rate_limited" and 1 <= int(refused.headers["retry-after"]) <= 2
    # Another token has a bucket of its own.
    assert httpx.get(f"{server.url}/v1/journeys", headers={"Authorization": f"Bearer {other}"}).status_code == 200
    time.sleep(int(refused.headers["retry-after"]))
    with server.admin() as admin:
        assert admin.get("/v1/journeys").status_code == 200
    assert ADMIN_TOKEN not in refused.text


def test_a_limited_write_key_is_refused_past_its_burst(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(["--write-rate-limit", "1"])  # bursts of 10
    with server.writer() as writer:
        statuses = [
            writer.post("/v1/track", json={"userId": "u", "event": "E", "messageId": f"m{n}"}).status_code
            for n in range(12)
        ]
    assert statuses[:10] == [200] * 10 and statuses[10:] == [429, 429], statuses
    # The refused events were not taken: a client sends them again after the wait.
    accepted = {event["messageId"] for event in server.all_events()}
    assert accepted == {f"m{n}" for n in range(10)}
