"""The chaos test of the scale-out deployment: two API processes, three workers and
two dispatchers as real processes on PostgreSQL and a NATS server of the test's
own. Customers sign up and order through both APIs while a random worker or
dispatcher is SIGKILLed and restarted again and again, and NATS itself is
SIGKILLed and restarted once. Afterwards:

- every acknowledged event is in the log once and applied once: each person's
  profile equals the embedded processor's on the same input;
- every journey reached the same end as in the embedded processor's run;
- the SMTP server received every due email, none that was not due, and each once
  but for the window no sender can close (docs/channels.md): the dispatcher was
  killed after the server accepted a message and before its ledger said so; the
  repeat has the same Message-ID, and a kill repeats at most the sends it cut off."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import nats
import psycopg
import pytest
from tests.channels.receivers import smtp_server
from tests.conftest import WRITE_KEY, ServerProcess
from tests.contract.conftest import fresh_database
from tests.integration.scale_processes import Role, api_server, dispatcher, nats_server, worker

from polku.adapters.memory import MemoryLogReader
from polku.adapters.memory_state import MemoryStateStore
from polku.adapters.postgres.state_store import PostgresStateStore
from polku.core.channels import ChannelConfig
from polku.core.events import Event
from polku.core.journey_state import JourneyState
from polku.core.workspace import parse_config
from polku.engine.processor import Processor
from polku.engine.scale_worker import ScaleOut

USERS = 200
KILLS = 12
WAIT_S = 2
WITHIN_S = 25
"""Longer than a partition can stall (a killed worker's leases lapse after 10 s), so
that an Order Shipped sent with its order always comes before the wait ends, as
in the embedded run."""

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
    wait_for: {{event: Order Shipped, within: {WITHIN_S}s, on_event: end, on_timeout: late}}
  - id: late
    action: {{channel: email, subject: "Where is your order?", body: "Sorry, {{{{ traits.name }}}}"}}
"""


@pytest.fixture
def database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def post_until_accepted(api: list[ServerProcess], batch: list[dict[str, Any]], deadline: float) -> None:
    """What a well-behaved client does: retry the same batch (same messageIds),
    on either API process, until one says 200."""
    attempt = 0
    while time.monotonic() < deadline:
        server = api[attempt % len(api)]
        attempt += 1
        try:
            response = httpx.post(f"{server.url}/v1/batch", json={"batch": batch}, auth=(WRITE_KEY, ""), timeout=10)
            if response.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("the batch was never accepted")


def batches_of(
    users: list[str], ordered: set[str], shipped: set[str], cancelled: set[str]
) -> list[list[dict[str, Any]]]:
    batches = []
    for start in range(0, len(users), 10):
        batch: list[dict[str, Any]] = []
        for user in users[start : start + 10]:
            traits = {"email": f"{user}@example.com", "name": user}
            batch.append({"type": "identify", "userId": user, "messageId": f"i-{user}", "traits": traits})
            batch.append({"type": "track", "userId": user, "event": "Signed Up", "messageId": f"s-{user}"})
            if user in ordered:
                batch.append({"type": "track", "userId": user, "event": "Order Placed", "messageId": f"o-{user}"})
            if user in shipped:  # with its order: it always comes before the wait ends
                batch.append({"type": "track", "userId": user, "event": "Order Shipped", "messageId": f"x-{user}"})
            if user in cancelled:
                batch.append({"type": "track", "userId": user, "event": "Order Cancelled", "messageId": f"c-{user}"})
        batches.append(batch)
    return batches


def rows(deployment: ScaleOut, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(deployment.store_url, options=f"-c search_path={deployment.schema}") as connection:
        return connection.execute(query).fetchall()  # type: ignore[arg-type]


def stream_messages(url: str, stream: str) -> int:
    async def count() -> int:
        client = await nats.connect(url)
        try:
            return int((await client.jetstream().stream_info(stream)).state.messages)
        finally:
            await client.close()

    return asyncio.run(count())


def outcome(state: JourneyState | None) -> tuple[Any, ...]:
    """How a person's journeys ended, without the moments (which differ by run)."""
    state = state or JourneyState()
    return (
        sorted((journey, h.entries, h.converted, h.holdout) for journey, h in state.history.items()),
        sorted((i.journey, i.step) for i in state.instances.values()),
        sorted((sent.channel, sent.purpose) for sent in state.sent),
    )


def person(store: Any, user: str) -> tuple[Any, ...]:
    record = store.identifier("default", f"user_id:{user}")
    assert record is not None, user
    profile = store.profile("default", record.customer_id)
    assert profile is not None, user
    traits = {name: value[0] for name, value in profile.traits.items()}
    return profile.events, traits, outcome(store.journey_state("default", record.customer_id))


def embedded_run(deployment: ScaleOut, config: str) -> MemoryStateStore:
    """The embedded processor over the events the deployment logged (in the log's
    order) and the journeys it deployed; then every timer fires."""
    store = MemoryStateStore()
    reader = MemoryLogReader({"default": parse_config(config)})
    for workspace, journey_id, version, status, body in rows(
        deployment,
        "SELECT d.workspace, d.id, d.version, h.status, d.body FROM definitions d JOIN definition_heads h "
        "ON h.kind = d.kind AND h.workspace = d.workspace AND h.id = d.id WHERE d.kind = 'journey'",
    ):
        reader.put_journey(workspace, journey_id, version, status, body)
    decode = msgspec.json.Decoder(Event).decode
    for (body,) in rows(deployment, "SELECT body FROM events ORDER BY seq"):
        reader.add("default", decode(bytes(body)))
    clock = [int(time.time() * 1000)]
    processor = Processor(store, reader, clock=lambda: clock[0])
    processor.run_until_idle()
    clock[0] += 3_600_000
    processor.run_until_idle()
    return store


@pytest.mark.slow
def test_the_scale_out_deployment_survives_kills_and_a_nats_restart(database: str, tmp_path: Path) -> None:
    rng = random.Random(9)
    users = [f"user-{number}" for number in range(USERS)]
    ordered = set(rng.sample(users, USERS // 2))
    shipped = set(rng.sample(sorted(ordered), len(ordered) // 2))
    cancelled = set(rng.sample(sorted(ordered - shipped), 5))
    expected = {(f"{user}@example.com", "Welcome") for user in users} | {
        (f"{user}@example.com", "Where is your order?") for user in ordered - shipped - cancelled
    }
    batches = batches_of(users, ordered, shipped, cancelled)
    posted = {event["messageId"] for batch in batches for event in batch}

    with smtp_server() as inbox, nats_server(tmp_path) as bus:
        deployment = ScaleOut(
            store_url=database,
            bus_url=bus.url,
            schema=f"chaos_{uuid.uuid4().hex[:8]}",
            stream="POLKU_CHAOS",
            subject_prefix="chaos.ev",
            partitions=8,
        )
        api = [api_server(deployment, tmp_path / f"api-{n}") for n in range(2)]
        workers = [worker(deployment, tmp_path / f"worker-{n}.log", batch_size=50) for n in range(3)]
        dispatchers = [dispatcher(deployment, tmp_path / f"dispatcher-{n}.log") for n in range(2)]
        config = f"channels:\n  email: {{type: smtp, port: {inbox.port}, sender: shop@example.com}}\n"
        kills: Counter[str] = Counter()
        thread: threading.Thread | None = None
        try:
            for server in api:
                server.start(timeout=60)
            with api[0].admin() as admin:
                assert admin.put("/v1/workspace/config", content=config).status_code == 200
                for body in (WELCOME, ORDER):
                    journey_id = body.split("id: ", 1)[1].split()[0]
                    response = admin.put(f"/v1/journeys/{journey_id}", content=body)
                    assert response.status_code == 201, response.text
            for role in (*workers, *dispatchers):
                role.start()

            def killer() -> None:
                """SIGKILL and restart a random worker or dispatcher every second or
                so; NATS (SIGKILL, restarted a second later) once, among them."""
                for number in range(KILLS):
                    if stop.wait(rng.uniform(0.6, 1.2)):
                        return
                    if number == KILLS // 3:
                        bus.kill()
                        kills["nats"] += 1
                        time.sleep(1.0)
                        bus.start()
                        continue
                    kind, roles = rng.choice([("worker", workers), ("dispatcher", dispatchers)])
                    victim: Role = rng.choice(roles)
                    victim.kill()
                    kills[kind] += 1
                    victim.start()

            stop = threading.Event()
            thread = threading.Thread(target=killer, daemon=True)
            thread.start()
            deadline = time.monotonic() + 180
            for batch in batches:
                post_until_accepted(api, batch, deadline)
                time.sleep(rng.uniform(0.4, 0.8))
            thread.join()
            assert kills["nats"] == 1 and min(kills["worker"], kills["dispatcher"]) >= 3, kills

            until = time.monotonic() + WITHIN_S + 120
            while time.monotonic() < until:
                received = {(str(m["To"]), str(m["Subject"])) for m in inbox.messages}
                if received >= expected:
                    break
                time.sleep(0.5)
            time.sleep(WAIT_S + 3)  # anything that should not go would have gone by now
            with api[1].admin() as admin:  # the shared ledger, through the API
                listed = admin.get("/v1/deliveries", params={"status": "sent", "limit": 1000}).json()["deliveries"]
        finally:
            if thread is not None:  # no restart behind the stops below
                stop.set()
                thread.join()
            for role in (*dispatchers, *workers):
                role.stop()
            for server in api:
                server.stop()
        logs = "".join(role.log() for role in (*workers, *dispatchers)) + "".join(s.log() for s in api)

        received = {(str(m["To"]), str(m["Subject"])) for m in inbox.messages}
        assert not expected - received, f"missing: {sorted(expected - received)[:5]}\n{logs[-5000:]}"
        assert not received - expected, f"sent but not due: {sorted(received - expected)[:5]}"
        per_id = Counter(str(m["Message-ID"]) for m in inbox.messages)
        assert len(per_id) == len(expected)  # one Message-ID per email
        keys = {str(m["Message-ID"]): str(m["X-Polku-Key"]) for m in inbox.messages}
        ledger = {
            key: (status, attempts)
            for key, status, attempts in rows(deployment, "SELECT key, status, attempts FROM deliveries")
        }
        assert Counter(status for status, _ in ledger.values()) == {"sent": len(expected)}
        assert sorted(row["key"] for row in listed) == sorted(ledger)
        repeats = {message_id: count for message_id, count in per_id.items() if count > 1}
        for message_id, count in repeats.items():
            assert count <= ledger[keys[message_id]][1], (message_id, count)  # each send was a counted attempt
        cut_off = kills["dispatcher"] * ChannelConfig(type="smtp").concurrency
        assert sum(count - 1 for count in repeats.values()) <= cut_off, repeats

        # Every acknowledged event logged once (the index is unique by messageId) ...
        logged = Counter(
            bytes(message_id).decode() for (message_id,) in rows(deployment, "SELECT message_id FROM events")
        )
        ours = Counter(
            {message_id: count for message_id, count in logged.items() if not message_id.startswith("polku-")}
        )
        assert set(ours) == posted
        # Every message the stream holds (each stored once: the duplicate window) was
        # applied: the workers index in the commit that applies.
        assert stream_messages(bus.url, deployment.stream) == len(logged)
        # ... and applied once, to the same ends as the embedded processor's.
        reference = embedded_run(deployment, config)
        scaled = PostgresStateStore(deployment.store_url, schema=deployment.schema, migrate=False)
        try:
            mismatched = [user for user in users if person(scaled, user) != person(reference, user)]
        finally:
            scaled.close()
        assert not mismatched, [(user, person(reference, user)) for user in mismatched[:3]]
        print(f"kills: {dict(kills)}; {len(repeats)} emails repeated after a dispatcher kill")
