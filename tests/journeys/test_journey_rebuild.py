"""``polku identity rebuild`` keeps the journeys: their state is not derived from
the log alone (a wait starts when it was processed), so the rebuild leaves it,
runs with the journeys off, and gives every waiting instance its timer back. After
it, the wait ends on time and its message is decided once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from polku.adapters.sqlite import SqliteCatalog, SqliteEventLog
from polku.adapters.sqlite.log_reader import SqliteLogReader
from polku.adapters.sqlite.state_store import SqliteStateStore
from polku.core.workspace import parse_config
from polku.engine.processor import Processor
from polku.engine.setup import bootstrap
from polku.engine.worker import rebuild_state
from polku.ports import AppendBatch
from tests.engine.helpers import T0, Clock, event

JOURNEY = """
id: welcome
entry: {event: Signed Up}
steps:
  - id: pause
    wait: 1d
  - id: hello
    action: {channel: email, subject: Welcome, body: Hello}
"""
DAY = 86_400_000


def test_a_rebuild_keeps_waiting_instances_and_their_timers(tmp_path: Path) -> None:
    async def write() -> None:
        catalog = SqliteCatalog(tmp_path)
        await catalog.start()
        await bootstrap(catalog, write_key=None, admin_token=None)
        config = "channels: {email: {type: smtp, sender: a@example.com}}\nsegments: {named: {condition: 'exists(traits.email)'}}"
        await catalog.set_config("default", parse_config(config))
        await catalog.deploy_journey("default", "welcome", JOURNEY, "2026-09-21T00:00:00Z")
        await catalog.close()
        log = SqliteEventLog(tmp_path, writer="thread")
        await log.start()
        events = [
            event("identify", user_id="ada", traits={"email": "ada@example.com"}, ts=T0),
            event(user_id="ada", event="Signed Up", ts=T0),
        ]
        await log.append(AppendBatch(workspace="default", source="default", received_ms=T0, events=events))
        await log.close()

    asyncio.run(write())
    clock = Clock(T0)
    store = SqliteStateStore(tmp_path)
    reader = SqliteLogReader(tmp_path)
    Processor(store, reader, clock=clock).run_until_idle()
    (customer,) = [row[0] for row in store.connection.execute("SELECT holder FROM journey_states")]
    before = store.journey_state("default", customer)
    assert before is not None and before.instances["welcome"].due_ms == T0 + DAY
    reader.close()
    store.close()

    clock.now = T0 + 3_600_000
    rebuild_state(tmp_path, clock=clock)

    store = SqliteStateStore(tmp_path)
    reader = SqliteLogReader(tmp_path)
    assert store.journey_state("default", customer) == before
    assert store.connection.execute("SELECT customer_id, due_ms FROM timers").fetchall() == [(customer, T0 + DAY)]
    assert store.connection.execute("SELECT count(*) FROM journey_transitions").fetchone() == (1,)  # entered, once
    clock.now = T0 + DAY
    Processor(store, reader, clock=clock).run_until_idle()
    assert store.connection.execute("SELECT journey, channel FROM messages").fetchall() == [("welcome", "email")]
    reader.close()
    store.close()
