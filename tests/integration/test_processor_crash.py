"""Crash test of the processor: events stream in while the processor child is
killed with SIGKILL (and once the whole server), then restarted. A third of the
batches come from anonymous visitors who then log in, so merges (which rewrite
timelines and fold histories again) are crashed through too. Afterwards every
acknowledged event is applied exactly once: each customer's count attribute and
timeline equal what was sent for them — none applied twice, none skipped."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable

import httpx
import pytest
from tests.conftest import WRITE_KEY, ServerProcess
from tests.integration.test_profiles_api import caught_up

CONFIG = "attributes:\n  seen: {kind: count}\n  total: {kind: sum, event: Order Completed, property: amount}\n"
USERS = 40
BATCHES = 120
BATCH = 25


def processor_pid(server: ServerProcess) -> int | None:
    try:
        text = (server.data_dir / "processor.lock").read_text().strip()
    except FileNotFoundError:
        return None
    if not text:
        return None
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


@pytest.mark.slow
def test_processor_killed_mid_stream_applies_each_event_once(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()
    with server.admin() as admin:
        assert admin.put("/v1/workspace/config", content=CONFIG).status_code == 200
    sent: Counter[str] = Counter()
    orders: Counter[str] = Counter()
    done = threading.Event()
    failures: list[str] = []

    def send() -> None:
        try:
            for number in range(BATCHES):
                batch: list[dict[str, object]] = []
                for index in range(BATCH):
                    user = f"user-{(number * BATCH + index) % USERS}"
                    message: dict[str, object] = {
                        "type": "track",
                        "messageId": f"b{number}-{index}",
                        "event": "Order Completed",
                        "properties": {"amount": 1},
                    }
                    if number % 3 == 0:  # an anonymous visit, then a login: a merge
                        anonymous = f"anon-{number}-{index}"
                        message["anonymousId"] = anonymous
                        login = {"type": "identify", "messageId": f"b{number}-{index}-login", "userId": user}
                        batch += [message, {**login, "anonymousId": anonymous}]
                    else:
                        message["userId"] = user
                        batch.append(message)
                while True:  # an SDK retries the same batch until it is acknowledged
                    try:
                        response = httpx.post(
                            f"{server.url}/v1/batch", json={"batch": batch}, auth=(WRITE_KEY, ""), timeout=5
                        )
                        if response.status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.05)
                for index in range(BATCH):
                    sent[f"user-{(number * BATCH + index) % USERS}"] += 2 if number % 3 == 0 else 1
                    orders[f"user-{(number * BATCH + index) % USERS}"] += 1
                time.sleep(0.01)
        except Exception as error:  # pragma: no cover - reported below
            failures.append(repr(error))
        finally:
            done.set()

    sender = threading.Thread(target=send)
    sender.start()
    kills = 0
    killed_server = False
    while not done.is_set():
        time.sleep(0.4)
        pid = processor_pid(server)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            kills += 1
        if kills == 3 and not killed_server:
            server.kill()  # the processor child dies with it
            killed_server = True
            server.start()
    sender.join()
    assert not failures, failures
    assert kills >= 3 and killed_server
    caught_up(server, timeout=60)
    assert sum(orders.values()) == BATCHES * BATCH
    with server.admin() as admin:
        for user, count in sorted(sent.items()):
            profile = admin.get("/v1/profiles/lookup", params={"user_id": user}).json()
            assert profile["attributes"] == {"seen": count, "total": orders[user]}, (user, profile["attributes"])
            assert profile["events"] == count
            customer = profile["customer_id"]
            timeline = admin.get(f"/v1/profiles/{customer}/timeline", params={"limit": 200}).json()["events"]
            assert len([e for e in timeline if not e["internal"]]) == count, user
