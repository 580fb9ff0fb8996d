"""Crash test of the journey engine under load: events stream in and journey
timers come due while the whole server (with its processor and dispatcher
children) is killed with SIGKILL again and again and restarted. Afterwards every
journey reached the right end, and every due email reached the real SMTP server —
none missing, none that should not have gone, none twice.

"Twice" has one documented exception (docs/channels.md): the SMTP server accepted a
message and the dispatcher died before its ledger said so. The repeat carries the
same Message-ID, and a message never arrives more often than its ledger counted
attempts; the test checks both, and that a kill repeats at most the sends it cut
off: the channel's concurrency (four in flight by default)."""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from polku.core.channels import ChannelConfig
from tests.channels.receivers import smtp_server
from tests.conftest import WRITE_KEY, ServerProcess

USERS = 120
KILLS = 4
WAIT_S = 2

WELCOME = f"""
id: welcome
entry: {{event: Signed Up}}
steps:
  - id: pause
    wait: {WAIT_S}s
  - id: hello
    action: {{channel: email, subject: "Welcome", body: "Hello {{{{ traits.name }}}}"}}
"""
ORDER = f"""
id: order-watch
entry: {{event: Order Placed}}
exit:
  - {{event: Order Cancelled, name: cancelled}}
steps:
  - id: shipped
    wait_for: {{event: Order Shipped, within: {WAIT_S + 1}s, on_event: end, on_timeout: late}}
  - id: late
    action: {{channel: email, subject: "Where is your order?", body: "Sorry, {{{{ traits.name }}}}"}}
"""


def post_until_accepted(server: ServerProcess, batch: list[dict[str, Any]], deadline: float) -> None:
    """What a well-behaved client does: retry the same batch (same messageIds) until
    the server says 200; a repeat of an acknowledged event is deduplicated."""
    while time.monotonic() < deadline:
        try:
            response = httpx.post(f"{server.url}/v1/batch", json={"batch": batch}, auth=(WRITE_KEY, ""), timeout=5)
            if response.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the batch was never accepted")


@pytest.mark.slow
def test_killing_the_server_never_loses_or_doubles_a_journey_email(start_server: Any) -> None:
    rng = random.Random(7)
    users = [f"user-{number}" for number in range(USERS)]
    ordered = set(rng.sample(users, USERS // 2))
    shipped = set(rng.sample(sorted(ordered), len(ordered) // 2))
    cancelled = set(rng.sample(sorted(ordered - shipped), 5))
    expected = {(f"{user}@example.com", "Welcome") for user in users} | {
        (f"{user}@example.com", "Where is your order?") for user in ordered - shipped - cancelled
    }
    with smtp_server() as inbox:
        server: ServerProcess = start_server()
        config = f"channels:\n  email: {{type: smtp, port: {inbox.port}, sender: shop@example.com}}\n"
        with server.admin() as admin:
            assert admin.put("/v1/workspace/config", content=config).status_code == 200
            for body in (WELCOME, ORDER):
                journey_id = body.split("id: ", 1)[1].split()[0]
                response = admin.put(f"/v1/journeys/{journey_id}", content=body)
                assert response.status_code == 201, response.text
        time.sleep(1.2)

        batches: list[list[dict[str, Any]]] = []
        for start in range(0, USERS, 10):
            batch: list[dict[str, Any]] = []
            for user in users[start : start + 10]:
                batch.append(
                    {
                        "type": "identify",
                        "userId": user,
                        "messageId": f"i-{user}",
                        "traits": {"email": f"{user}@example.com", "name": user},
                    }
                )
                batch.append({"type": "track", "userId": user, "event": "Signed Up", "messageId": f"s-{user}"})
                if user in ordered:
                    batch.append({"type": "track", "userId": user, "event": "Order Placed", "messageId": f"o-{user}"})
                if user in shipped:  # in the same batch: it always comes before the wait ends
                    batch.append({"type": "track", "userId": user, "event": "Order Shipped", "messageId": f"x-{user}"})
                if user in cancelled:
                    batch.append(
                        {"type": "track", "userId": user, "event": "Order Cancelled", "messageId": f"c-{user}"}
                    )
            batches.append(batch)

        kills = 0
        stop = threading.Event()

        def killer() -> None:
            nonlocal kills
            while not stop.is_set() and kills < KILLS:
                time.sleep(rng.uniform(0.8, 2.0))
                server.kill()
                kills += 1
                server.start()

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        for number, batch in enumerate(batches):
            post_until_accepted(server, batch, deadline)
            time.sleep(0.5 if number % 2 else 0.2)
        thread.join()
        stop.set()

        wait_until = time.monotonic() + 60
        while time.monotonic() < wait_until:
            received = {(str(m["To"]), str(m["Subject"])) for m in inbox.messages}
            if received >= expected:
                break
            time.sleep(0.2)
        time.sleep(WAIT_S + 2)  # anything that should not go would have gone by now
        server.stop()

        received = {(str(m["To"]), str(m["Subject"])) for m in inbox.messages}
        assert not expected - received, f"missing: {sorted(expected - received)[:5]}"
        assert not received - expected, f"sent but not due: {sorted(received - expected)[:5]}"
        per_id = Counter(str(m["Message-ID"]) for m in inbox.messages)
        assert len(per_id) == len(expected)  # one Message-ID per email
        repeats = {message_id: count for message_id, count in per_id.items() if count > 1}
        ledger = sqlite3.connect(server.data_dir / "deliveries.db")
        attempts = dict(ledger.execute("SELECT key, attempts FROM deliveries"))
        statuses = Counter(status for (status,) in ledger.execute("SELECT status FROM deliveries"))
        ledger.close()
        assert statuses == {"sent": len(expected)}
        keys = {str(m["Message-ID"]): str(m["X-Polku-Key"]) for m in inbox.messages}
        for message_id, count in repeats.items():
            assert count <= attempts[keys[message_id]], (message_id, count)
        # A kill can cut off at most the sends in flight: one per concurrency slot.
        assert sum(count - 1 for count in repeats.values()) <= kills * ChannelConfig(type="smtp").concurrency, repeats

        state = sqlite3.connect(server.data_dir / "state.db")
        stats = dict(state.execute("SELECT metric || ':' || journey, sum(count) FROM journey_stats GROUP BY 1"))
        state.close()
        assert kills == KILLS
        assert stats["entered:welcome"] == USERS
        assert stats["ended:completed:welcome"] == USERS
        assert stats["entered:order-watch"] == len(ordered)
        assert stats["ended:exit:cancelled:order-watch"] == len(cancelled)
        assert stats["action:late:sent:order-watch"] == len(ordered - shipped - cancelled)
        assert stats["ended:completed:order-watch"] == len(ordered) - len(cancelled)
