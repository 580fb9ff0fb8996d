"""``polku serve`` runs the dispatcher as a child and shows its ledger over HTTP."""

from __future__ import annotations

import time
from collections.abc import Callable

from tests.channels.helpers import decide, message
from tests.channels.receivers import smtp_server
from tests.conftest import ServerProcess


def test_serve_delivers_and_lists_deliveries(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server(extra_args=["--no-processor"])
    with smtp_server() as inbox, server.admin() as admin:
        config = {"channels": {"email": {"type": "smtp", "port": inbox.port, "sender": "shop@example.com"}}}
        assert admin.put("/v1/workspace/config", json=config).status_code == 200
        decide(server.data_dir, message("a", "email"), message("b", "nowhere"))
        deadline = time.monotonic() + 10
        found: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            found = admin.get("/v1/deliveries").json()["deliveries"]
            if len(found) == 2 and all(row["status"] != "pending" for row in found):
                break
            time.sleep(0.05)
        assert {row["key"]: row["status"] for row in found} == {"a": "sent", "b": "dead"}
        assert [str(received["X-Polku-Key"]) for received in inbox.messages] == ["a"]
        dead = admin.get("/v1/deliveries", params={"status": "dead"}).json()["deliveries"]
        assert [row["last_error"] for row in dead] == ["channel nowhere is not configured"]
        mine = admin.get("/v1/deliveries", params={"customer_id": "c-a", "limit": 1}).json()["deliveries"]
        assert [row["key"] for row in mine] == ["a"]
        assert admin.get("/v1/deliveries", params={"status": "lost"}).status_code == 400
        assert admin.get("/v1/deliveries", params={"limit": 0}).status_code == 400
    # The dispatcher announces outcomes as events after it records them: wait for both.
    deadline = time.monotonic() + 10
    names = {event.get("event") for event in server.all_events()}
    while not {"Message Sent", "Message Failed"} <= names and time.monotonic() < deadline:
        time.sleep(0.05)
        names = {event.get("event") for event in server.all_events()}
    assert {"Message Sent", "Message Failed"} <= names
    with server.writer() as anonymous:
        assert anonymous.get("/v1/deliveries").status_code == 401
