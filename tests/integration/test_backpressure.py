"""Back-pressure: when commits cannot keep up, ingestion answers 503 + Retry-After
instead of queueing without bound, and what was acknowledged is still stored."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable

import httpx
from tests.conftest import WRITE_KEY, ServerProcess


def test_a_full_queue_answers_503_with_retry_after(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(extra_args=["--max-pending-events", "1000"])
    big = {"batch": [{"type": "track", "userId": "u", "event": "E", "messageId": f"big-{i}"} for i in range(1000)]}
    # Another process holding SQLite's write lock stalls the writer thread, as a slow
    # disk would: the first request waits in the queue, filling it.
    blocker = sqlite3.connect(server.data_dir / "polku.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    outcome: dict[str, httpx.Response] = {}

    def send_big() -> None:
        outcome["big"] = httpx.post(f"{server.url}/v1/batch", json=big, auth=(WRITE_KEY, ""), timeout=30)

    sender = threading.Thread(target=send_big)
    sender.start()
    try:
        with server.writer() as client:
            for _ in range(200):  # wait until the big batch is queued
                if client.get("/readyz").json()["pending_events"] >= 1000:
                    break
                threading.Event().wait(0.02)
            refused = client.post("/v1/track", json={"userId": "u", "event": "Late", "messageId": "late"})
        assert refused.status_code == 503, refused.text
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["code"] == "overloaded"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        sender.join(timeout=30)
    assert outcome["big"].status_code == 200, outcome["big"].text
    assert outcome["big"].json()["accepted"] == 1000
    stored = {str(event["messageId"]) for event in server.all_events()}
    assert len(stored) == 1000 and "late" not in stored
    with server.writer() as client:  # the queue drained: accepted again
        assert client.post("/v1/track", json={"userId": "u", "event": "Late", "messageId": "late"}).status_code == 200
