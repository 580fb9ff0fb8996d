"""Bad input against a real ``polku serve`` process.

A request refused as a whole gets its documented 4xx and ``{"code", "message"}`` and
stores nothing: neither events nor quarantine entries. A message refused inside a
request is quarantined with its reason, and can be corrected and re-submitted."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import ADMIN_TOKEN, WRITE_KEY, ServerProcess, free_port

from polku.core.limits import MAX_BATCH_EVENTS, MAX_EVENT_BYTES, MAX_REQUEST_BYTES

JsonObject = dict[str, Any]
Snapshot = tuple[list[JsonObject], list[JsonObject]]

BASIC = "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
TINY: JsonObject = {"type": "track", "userId": "u", "event": "E"}
VALID_TRACK = json.dumps({"userId": "u1", "event": "Viewed"}).encode()
VALID_BATCH = json.dumps({"batch": [TINY]}).encode()


def snapshot(server: ServerProcess) -> Snapshot:
    """Everything the workspace holds: its events and every quarantine entry."""
    with server.admin() as admin:
        response = admin.get("/v1/quarantine", params={"status": "all", "limit": 1000})
    assert response.status_code == 200, response.text
    return server.all_events(), response.json()["entries"]


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the whole-request refusals (each test compares the store before
    and after itself), seeded so that "unchanged" is not just "still empty"."""
    data_dir: Path = tmp_path_factory.mktemp("bad-input") / "data"
    server = ServerProcess(data_dir=data_dir, port=free_port())
    server.start()
    try:
        with server.writer() as writer:
            seeded = writer.post("/v1/batch", json={"batch": [TINY, {"type": "track", "userId": "u"}]})
        assert seeded.status_code == 200 and seeded.json()["accepted"] == 1, seeded.text
        events, quarantine = snapshot(server)
        assert len(events) == 1 and len(quarantine) == 1
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class BadRequest:
    name: str
    path: str
    content: bytes
    status: int
    code: str
    headers: dict[str, str] = field(default_factory=lambda: {"Authorization": BASIC})

    def send(self, client: httpx.Client) -> httpx.Response:
        headers = {"Content-Type": "application/json", **self.headers}
        return client.post(self.path, content=self.content, headers=headers)


def gzip_bomb() -> bytes:
    """A valid JSON message padded with 50 MB of one letter: ~50 KB on the wire."""
    head = b'{"batch": [{"type": "track", "userId": "u", "event": "E", "properties": {"pad": "'
    return gzip.compress(head + b"a" * 50_000_000 + b'"}}]}', 9)


def batch_of(count: int) -> bytes:
    return json.dumps({"batch": [TINY] * count}).encode()


def over_the_limit() -> bytes:
    """A well-formed batch of 600 KB: many small valid messages."""
    filler = {"type": "track", "userId": "u", "event": "E", "properties": {"pad": "x" * 525}}
    body = json.dumps({"batch": [filler] * 1000}).encode()
    assert 600_000 < len(body) < 700_000
    return body


BOMB = gzip_bomb()
GZIP_JSON = {"Authorization": BASIC, "Content-Encoding": "gzip"}

BAD_REQUESTS = [
    BadRequest("malformed JSON, single", "/v1/track", b'{"userId": "u", "event": ', 400, "malformed_json"),
    BadRequest("malformed JSON, batch", "/v1/batch", b'{"batch": [{"type": "track",}]}', 400, "malformed_json"),
    BadRequest("empty body", "/v1/track", b"", 400, "malformed_json"),
    BadRequest(
        "invalid UTF-8 in a string, single",
        "/v1/track",
        b'{"userId": "u", "event": "Caf\xe9 Visited"}',  # Latin-1, not UTF-8
        400,
        "malformed_json",
    ),
    BadRequest(
        "invalid UTF-8 in a batch item",
        "/v1/batch",
        b'{"batch": [{"type": "track", "userId": "u", "event": "E"},'
        b' {"type": "track", "userId": "u", "event": "E", "properties": {"name": "\xed\xa0\x80"}}]}',
        400,
        "malformed_json",
    ),
    BadRequest(
        "invalid UTF-8 in an unknown field", "/v1/batch", b'{"batch": [], "\xff\xfe": 1}', 400, "malformed_json"
    ),
    BadRequest("JSON array body, batch", "/v1/batch", json.dumps([TINY]).encode(), 400, "invalid_body"),
    BadRequest("JSON array body, single", "/v1/identify", b'[{"userId": "u"}]', 400, "invalid_body"),
    BadRequest("JSON string body", "/v1/track", b'"track"', 400, "invalid_body"),
    BadRequest("JSON null body", "/v1/batch", b"null", 400, "invalid_body"),
    BadRequest("batch is a number", "/v1/batch", b'{"batch": 5}', 400, "invalid_body"),
    BadRequest("batch is an object", "/v1/batch", json.dumps({"batch": TINY}).encode(), 400, "invalid_body"),
    BadRequest("batch is missing", "/v1/batch", json.dumps(TINY).encode(), 400, "invalid_body"),
    BadRequest(
        "batch context is a string",
        "/v1/batch",
        json.dumps({"batch": [TINY], "context": "web"}).encode(),
        400,
        "invalid_body",
    ),
    BadRequest(
        "writeKey is a number", "/v1/track", b'{"userId": "u", "event": "E", "writeKey": 5}', 400, "invalid_body"
    ),
    BadRequest("600 KB body", "/v1/batch", over_the_limit(), 413, "limit_exceeded"),
    BadRequest(
        "600 KB single message",
        "/v1/track",
        b'{"userId": "u", "event": "' + b"E" * 600_000 + b'"}',
        413,
        "limit_exceeded",
    ),
    BadRequest("gzip bomb", "/v1/batch", BOMB, 413, "limit_exceeded", GZIP_JSON),
    BadRequest(
        "deflate bomb",
        "/v1/track",
        zlib.compress(b" " * 50_000_000, 9),
        413,
        "limit_exceeded",
        {"Authorization": BASIC, "Content-Encoding": "deflate"},
    ),
    BadRequest("batch of 2,501 messages", "/v1/batch", batch_of(MAX_BATCH_EVENTS + 1), 413, "limit_exceeded"),
    BadRequest("truncated gzip", "/v1/batch", gzip.compress(VALID_BATCH)[:-10], 400, "malformed_json", GZIP_JSON),
    BadRequest("gzip header on plain JSON", "/v1/batch", VALID_BATCH, 400, "malformed_json", GZIP_JSON),
    BadRequest(
        "unknown Content-Encoding",
        "/v1/batch",
        VALID_BATCH,
        415,
        "unsupported_encoding",
        {"Authorization": BASIC, "Content-Encoding": "br"},
    ),
    BadRequest(
        "nested 5,000 deep, single", "/v1/track", b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "malformed_json"
    ),
    BadRequest(
        "nested 5,000 deep, batch item",
        "/v1/batch",
        b'{"batch": [{"type": "track", "userId": "u", "event": "E", "properties": {"a": '
        + b"[" * 5000
        + b"]" * 5000
        + b"}}]}",
        400,
        "malformed_json",
    ),
    BadRequest(
        "a thousand gzip members",
        "/v1/batch",
        b"".join(gzip.compress(b" ") for _ in range(1000)) + gzip.compress(VALID_BATCH),
        400,
        "malformed_json",
        GZIP_JSON,
    ),
    BadRequest("no credentials, single", "/v1/track", VALID_TRACK, 401, "unauthorized", {}),
    BadRequest("no credentials, batch", "/v1/batch", VALID_BATCH, 401, "unauthorized", {}),
    BadRequest(
        "wrong write key",
        "/v1/batch",
        VALID_BATCH,
        401,
        "unauthorized",
        {"Authorization": "Basic " + base64.b64encode(b"not-the-key:").decode()},
    ),
    BadRequest(
        "wrong writeKey in the body",
        "/v1/batch",
        json.dumps({"batch": [TINY], "writeKey": "not-the-key"}).encode(),
        401,
        "unauthorized",
        {},
    ),
    BadRequest(
        "admin token as the write key",
        "/v1/track",
        VALID_TRACK,
        401,
        "unauthorized",
        {"Authorization": "Basic " + base64.b64encode(f"{ADMIN_TOKEN}:".encode()).decode()},
    ),
    BadRequest(
        "Basic header with garbage base64",
        "/v1/track",
        VALID_TRACK,
        401,
        "unauthorized",
        {"Authorization": "Basic !!not*base64"},
    ),
    BadRequest(
        "Basic header with base64 of non-UTF-8",
        "/v1/batch",
        VALID_BATCH,
        401,
        "unauthorized",
        {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:").decode()},
    ),
    BadRequest("empty Basic username", "/v1/track", VALID_TRACK, 401, "unauthorized", {"Authorization": "Basic Og=="}),
    BadRequest(
        "write key as a Bearer token",
        "/v1/track",
        VALID_TRACK,
        401,
        "unauthorized",
        {"Authorization": f"Bearer {WRITE_KEY}"},
    ),
]


@pytest.mark.parametrize("bad", BAD_REQUESTS, ids=[bad.name for bad in BAD_REQUESTS])
def test_request_refused_as_a_whole_gets_its_status_and_stores_nothing(
    shared_server: ServerProcess, bad: BadRequest
) -> None:
    before = snapshot(shared_server)
    with httpx.Client(base_url=shared_server.url, timeout=30) as client:
        response = bad.send(client)
    assert response.status_code == bad.status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert error["code"] == bad.code
    assert isinstance(error["message"], str) and error["message"]
    assert "quarantined" not in error
    if bad.status == 413:
        assert error["limit"] in (MAX_REQUEST_BYTES, MAX_BATCH_EVENTS)
    assert snapshot(shared_server) == before


def test_body_over_the_limit_without_content_length_is_refused(shared_server: ServerProcess) -> None:
    """Chunked transfer: the limit is enforced while reading, not from the header."""
    before = snapshot(shared_server)
    body = over_the_limit()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 16_384):
            yield body[start : start + 16_384]

    with shared_server.writer() as writer:
        response = writer.post("/v1/batch", content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "limit_exceeded"
    assert snapshot(shared_server) == before


def test_admin_endpoints_refuse_missing_and_wrong_credentials(shared_server: ServerProcess) -> None:
    attempts = [
        {},
        {"Authorization": "Bearer not-the-token"},
        {"Authorization": BASIC},  # a write key reads nothing
        {"Authorization": "Basic %%%"},
    ]
    with httpx.Client(base_url=shared_server.url) as client:
        for headers in attempts:
            for method, path in [
                ("GET", "/v1/events"),
                ("GET", "/v1/quarantine"),
                ("POST", "/v1/quarantine/1/resubmit"),
            ]:
                response = client.request(method, path, headers=headers)
                assert response.status_code == 401, (method, path, headers, response.text)
                assert response.json()["code"] == "unauthorized"


# --- per-message refusals: quarantine -------------------------------------------------------


def quarantine(server: ServerProcess, status: str = "open") -> list[JsonObject]:
    with server.admin() as admin:
        entries: list[JsonObject] = admin.get("/v1/quarantine", params={"status": status}).json()["entries"]
    return entries


def test_batch_stores_its_valid_messages_and_quarantines_the_others(server: ServerProcess) -> None:
    items: list[Any] = [
        {"type": "track", "userId": "u1", "event": "Signed Up", "messageId": "ok-1"},
        {"type": "track", "event": "No One"},
        {"type": "purchase", "userId": "u1"},
        {"type": "track", "userId": "u1"},
        {"type": "identify", "userId": "u1", "timestamp": "last tuesday"},
        {"type": "identify", "userId": ["u1"]},
        {"type": "track", "userId": "u1", "event": "Big", "properties": {"blob": "x" * MAX_EVENT_BYTES}},
        {"type": "page", "anonymousId": "a1", "name": "Home", "context": {"channel": "Web Site"}},
        "not a message",
        {"type": "identify", "anonymousId": "a1", "messageId": "ok-2", "traits": {"plan": "pro"}},
    ]
    with server.writer() as writer:
        response = writer.post("/v1/batch", json={"batch": items, "context": {"channel": "app"}})
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["success"], result["accepted"], result["duplicates"]) == (True, 2, 0)
    rejected = {item["index"]: item for item in result["rejected"]}
    assert {index: item["code"] for index, item in rejected.items()} == {
        1: "missing_identity",
        2: "invalid_type",
        3: "missing_field",
        4: "invalid_timestamp",
        5: "invalid_field",
        6: "limit_exceeded",
        7: "invalid_channel",
        8: "invalid_field",
    }
    assert all(item["reason"] for item in rejected.values())
    assert "event" in rejected[3]["reason"]

    events = server.all_events()
    assert [(e["messageId"], e["channel"]) for e in events] == [("ok-1", "app"), ("ok-2", "app")]

    entries = quarantine(server)
    assert [(e["code"], e["reason"]) for e in entries] == [(item["code"], item["reason"]) for item in rejected.values()]
    assert all(e["status"] == "open" and e["source"] == "default" for e in entries)
    # Each entry stands on its own: the batch context is merged into its body.
    no_one = json.loads(entries[0]["body"])
    assert no_one == {"type": "track", "event": "No One", "context": {"channel": "app"}}
    assert entries[7]["body"] == '"not a message"'


def test_refused_single_message_answers_400_and_is_quarantined(server: ServerProcess) -> None:
    with server.writer() as writer:
        response = writer.post("/v1/track", json={"userId": "u1", "properties": {"total": 10}})
    assert response.status_code == 400
    error = response.json()
    assert error["code"] == "missing_field"
    assert error["quarantined"] is True
    assert "event" in error["message"]
    assert server.all_events() == []
    [entry] = quarantine(server)
    assert entry["code"] == "missing_field"
    # The endpoint's type is part of the stored body, so it can be re-submitted as is.
    assert json.loads(entry["body"]) == {"type": "track", "userId": "u1", "properties": {"total": 10}}


def test_corrected_resubmission_is_stored_once_and_closes_the_entry(server: ServerProcess) -> None:
    with server.writer() as writer:
        refused = writer.post(
            "/v1/track", json={"userId": "u1", "messageId": "late-1", "timestamp": "2024-13-01T00:00:00Z"}
        )
    assert refused.status_code == 400 and refused.json()["quarantined"] is True
    [entry] = quarantine(server)
    corrected = json.loads(entry["body"])
    corrected.update(event="Order Completed", timestamp="2024-12-01T00:00:00Z")

    with server.admin() as admin:
        still_bad = admin.post(f"/v1/quarantine/{entry['id']}/resubmit", json={**corrected, "userId": None})
        assert still_bad.status_code == 400 and still_bad.json()["code"] == "missing_identity"
        assert quarantine(server)[0]["status"] == "open"

        stored = admin.post(f"/v1/quarantine/{entry['id']}/resubmit", json=corrected)
        assert stored.status_code == 200, stored.text
        assert (stored.json()["accepted"], stored.json()["rejected"]) == (1, [])

        [event] = server.all_events()
        assert (event["messageId"], event["event"], event["type"]) == ("late-1", "Order Completed", "track")
        assert event["timestamp"] == "2024-12-01T00:00:00.000Z"
        closed = admin.get(f"/v1/quarantine/{entry['id']}").json()
        assert closed["status"] == "resubmitted" and closed["resolved_at"]
        assert quarantine(server) == []

        # Twice is a conflict, whether with the corrected body or with none.
        again = admin.post(f"/v1/quarantine/{entry['id']}/resubmit", json=corrected)
        assert again.status_code == 409 and again.json()["code"] == "conflict"
        bare = admin.post(f"/v1/quarantine/{entry['id']}/resubmit")
        assert bare.status_code == 409 and bare.json()["code"] == "conflict"
    assert len(server.all_events()) == 1


def test_discarded_entry_cannot_be_resubmitted(server: ServerProcess) -> None:
    with server.writer() as writer:
        writer.post("/v1/batch", json={"batch": [{"type": "alias", "userId": "u1"}]})
    [entry] = quarantine(server)
    with server.admin() as admin:
        assert admin.post(f"/v1/quarantine/{entry['id']}/discard").json()["status"] == "discarded"
        fixed = {"type": "alias", "userId": "u1", "previousId": "a1"}
        response = admin.post(f"/v1/quarantine/{entry['id']}/resubmit", json=fixed)
        assert response.status_code == 409
        assert admin.post("/v1/quarantine/999999/resubmit", json=fixed).status_code == 404
    assert server.all_events() == []
    assert [e["status"] for e in quarantine(server, "all")] == ["discarded"]


def test_gzip_under_a_form_content_type_is_accepted(server: ServerProcess) -> None:
    body = gzip.compress(json.dumps({"batch": [{**TINY, "messageId": "gz-1"}]}).encode())
    with server.writer() as writer:
        response = writer.post(
            "/v1/batch",
            content=body,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == 1
    assert [e["messageId"] for e in server.all_events()] == ["gz-1"]


def test_batch_of_exactly_the_limit_is_accepted(server: ServerProcess) -> None:
    body = json.dumps({"batch": [{**TINY, "messageId": f"m-{n}"} for n in range(MAX_BATCH_EVENTS)]}).encode()
    assert len(body) < MAX_REQUEST_BYTES
    with server.writer() as writer:
        response = writer.post("/v1/batch", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["accepted"] == MAX_BATCH_EVENTS
    assert len(server.all_events()) == MAX_BATCH_EVENTS


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/decide"),
        ("POST", "/v1/invitations/x/answer"),
        ("PUT", "/v1/workspace/config"),
        ("PUT", "/v1/journeys/deep"),
        ("PUT", "/v1/surveys/deep"),
        ("PUT", "/v1/actions"),
        ("POST", "/v1/batch"),
    ],
)
def test_deeply_nested_bodies_are_refused_not_crashed_on(server: ServerProcess, method: str, path: str) -> None:
    """A JSON or YAML body nested thousands deep would exhaust a parser's recursion:
    each endpoint answers 400 (or 404 for an unknown token) with what is wrong."""
    body = "[" * 2_000 + "]" * 2_000  # small enough for every size limit
    answer = httpx.request(
        method,
        f"{server.url}{path}",
        content=body,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"},
        auth=(WRITE_KEY, "") if path == "/v1/batch" else None,
        timeout=30,
    )
    assert answer.status_code in (400, 404), (answer.status_code, answer.text[:300])
    assert answer.json()["code"] in ("malformed_json", "invalid_config", "invalid_body", "invalid_input", "not_found")
