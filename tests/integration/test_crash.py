"""Crash test: clients send without pause while the server is killed with SIGKILL at
random moments and restarted. Every message that got a 200 must be in the store
exactly once; retries of unacknowledged requests must not store anything twice."""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest
from tests.conftest import WRITE_KEY, ServerProcess

SENDERS = 3
KILLS = 5
BATCH_SIZE = 20


@dataclass(frozen=True)
class Request:
    path: str
    body: dict[str, object]
    message_ids: tuple[str, ...]


def new_request(sender: int, serial: int, rng: random.Random) -> Request:
    """A /v1/batch of 20 or a single /v1/track, every message with a unique messageId."""
    count = 1 if rng.random() < 0.3 else BATCH_SIZE
    messages: list[dict[str, object]] = [
        {
            "type": "track",
            "messageId": f"s{sender}-r{serial}-m{index}",
            "userId": f"user-{rng.randrange(100)}",
            "event": "Crash Tested",
            "properties": {"serial": serial, "index": index},
            "timestamp": "2024-06-01T12:00:00.000Z",
        }
        for index in range(count)
    ]
    ids = tuple(str(message["messageId"]) for message in messages)
    if count == 1:
        return Request("/v1/track", messages[0], ids)
    return Request("/v1/batch", {"batch": messages}, ids)


@dataclass
class Sender:
    """One client thread: sends new requests back to back, and retries a request that
    got no 200 (same body, same messageIds) until it does, as the SDKs do."""

    number: int
    url: str
    generation: Callable[[], int]
    seed: int
    stop: threading.Event = field(default_factory=threading.Event)
    generated: list[str] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    acknowledged_by_generation: Counter[int] = field(default_factory=Counter)
    failed_attempts: int = 0
    duplicates_reported: int = 0
    errors: list[str] = field(default_factory=list)
    pending: Request | None = None

    def attempt(self, client: httpx.Client, request: Request) -> bool:
        """One POST; True when the server acknowledged the request."""
        try:
            response = client.post(request.path, json=request.body)
        except httpx.TransportError:
            return False
        if response.status_code in (429, 503):
            return False
        if response.status_code != 200:
            self.errors.append(f"{request.path} -> {response.status_code}: {response.text[:200]}")
            return False
        result = response.json()
        if result["rejected"] or result["accepted"] + result["duplicates"] != len(request.message_ids):
            self.errors.append(f"{request.path} -> unexpected result {result}")
        self.duplicates_reported += result["duplicates"]
        self.acknowledged += request.message_ids
        self.acknowledged_by_generation[self.generation()] += len(request.message_ids)
        return True

    def run(self) -> None:
        rng = random.Random(self.seed)
        serials = itertools.count()
        with httpx.Client(base_url=self.url, auth=(WRITE_KEY, ""), timeout=5) as client:
            while not self.stop.is_set():
                if self.pending is None:
                    self.pending = new_request(self.number, next(serials), rng)
                    self.generated += self.pending.message_ids
                if self.attempt(client, self.pending):
                    self.pending = None
                else:
                    self.failed_attempts += 1
                    time.sleep(0.02)

    def finish(self) -> None:
        """After the last restart: retry the request left without a 200."""
        with httpx.Client(base_url=self.url, auth=(WRITE_KEY, ""), timeout=5) as client:
            deadline = time.monotonic() + 10
            while self.pending is not None and time.monotonic() < deadline:
                if self.attempt(client, self.pending):
                    self.pending = None
                else:
                    time.sleep(0.05)


@pytest.mark.slow
def test_acknowledged_events_survive_sigkill_exactly_once(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    context = f"(seed {seed}; server log {server.log_path})"
    generation = 0
    senders = [Sender(number, server.url, lambda: generation, seed + number) for number in range(SENDERS)]
    threads = [threading.Thread(target=sender.run, name=f"sender-{sender.number}") for sender in senders]
    for thread in threads:
        thread.start()
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.3, 1.5))
            server.kill()
            generation += 1
            time.sleep(rng.uniform(0.0, 0.3))
            server.start()
        time.sleep(rng.uniform(0.3, 1.0))  # the last lifetime gets traffic too
    finally:
        for sender in senders:
            sender.stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), context
    for sender in senders:
        sender.finish()
        assert sender.pending is None, f"sender {sender.number} never got its last request acknowledged {context}"

    assert [error for sender in senders for error in sender.errors] == [], context
    acknowledged = Counter(message_id for sender in senders for message_id in sender.acknowledged)
    generated = {message_id for sender in senders for message_id in sender.generated}
    stored = Counter(str(event["messageId"]) for event in server.all_events())

    print(
        f"acknowledged {len(acknowledged)} messages over {KILLS + 1} server lifetimes, "
        f"{sum(s.failed_attempts for s in senders)} failed attempts retried, "
        f"{sum(s.duplicates_reported for s in senders)} duplicates reported on retry {context}"
    )
    duplicates = {message_id: count for message_id, count in stored.items() if count > 1}
    assert duplicates == {}, f"stored more than once: {sorted(duplicates)[:20]} {context}"
    lost = set(acknowledged) - set(stored)
    assert lost == set(), f"{len(lost)} acknowledged messages lost, e.g. {sorted(lost)[:20]} {context}"
    # Every request was retried until acknowledged, so everything generated is stored, and nothing else.
    assert set(stored) == generated == set(acknowledged), context

    # The test did what it claims: every server lifetime acknowledged traffic, and the
    # kills cut requests off (failed attempts that were then retried).
    by_generation = sum((sender.acknowledged_by_generation for sender in senders), Counter[int]())
    assert all(by_generation[lifetime] > 0 for lifetime in range(KILLS + 1)), f"{by_generation} {context}"
    assert sum(sender.failed_attempts for sender in senders) >= KILLS, context
