"""A poison event (one whose processing fails by itself) is recorded with its error
and skipped; the rest of its batch is applied exactly once."""

from __future__ import annotations

from pathlib import Path

from polku.core.events import Event
from polku.engine.processor import Processor
from tests.engine.helpers import T0, World, event


class FailsOnOneEvent(Processor):
    poison = "m-poison"

    def process(self, seq: int, workspace: str, event: Event) -> None:
        super().process(seq, workspace, event)
        if event.message_id == self.poison:
            raise ValueError("cannot process this one")


def test_poison_event_is_recorded_and_skipped(tmp_path: Path) -> None:
    world = World(tmp_path, "attributes: {seen: {kind: count}}")
    world.processor = FailsOnOneEvent(world.store, world.log, clock=world.clock, batch_size=10)
    world.send(
        *(event("track", user_id="u1", event="E", ts=T0 + i) for i in range(3)),
        event("track", user_id="u1", event="E", message_id="m-poison", ts=T0 + 3),
        *(event("track", user_id="u1", event="E", ts=T0 + 4 + i) for i in range(3)),
    )
    world.run()
    profile = world.store.profile("default", world.customer("user_id:u1"))
    assert profile is not None
    assert profile.events == 6 and profile.attributes["seen"] == 6
    assert world.store.checkpoint() == 7
    failures = world.store.failures("default")
    assert failures == [{"seq": 4, "error": "event 4: ValueError: cannot process this one"}]


def test_state_of_another_format_is_rebuilt_from_the_log(tmp_path: Path) -> None:
    from polku.adapters.memory import MemoryLogReader
    from polku.adapters.sqlite.state_store import SqliteStateStore
    from tests.engine.helpers import Clock

    log = MemoryLogReader()
    log.add("default", event("track", user_id="u1", event="E"))
    store = SqliteStateStore(tmp_path)
    Processor(store, log, clock=Clock()).run_until_idle()
    assert store.checkpoint() == 1
    store.connection.execute("UPDATE meta SET value = x'30' WHERE key = 'format'")
    store.close()
    reopened = SqliteStateStore(tmp_path)
    assert reopened.checkpoint() == 0 and reopened.identifier("default", "user_id:u1") is None
    Processor(reopened, log, clock=Clock()).run_until_idle()
    assert reopened.identifier("default", "user_id:u1") is not None
    reopened.close()


def test_a_batch_cut_short_by_its_time_budget_applies_every_event_once(tmp_path: Path) -> None:
    world = World(tmp_path, "attributes: {seen: {kind: count}}", batch_size=1000)
    world.processor.batch_seconds = 0.0  # every batch ends at its first check (64 events)
    world.send(*(event("track", user_id=f"u{i % 3}", event="E", ts=T0 + i) for i in range(200)))
    steps = 0
    while world.processor.step():
        steps += 1
    assert steps >= 4  # 200 events in batches of 64
    seen = [world.store.profile("default", world.customer(f"user_id:u{n}")).attributes["seen"] for n in range(3)]
    assert seen == [67, 67, 66]
    assert world.store.checkpoint() == 200


def test_the_checkpointer_empties_a_large_wal(tmp_path: Path) -> None:
    import time

    from polku.adapters.sqlite.state_schema import STATE_FILE, Checkpointer
    from polku.adapters.sqlite.state_store import SqliteStateStore

    store = SqliteStateStore(tmp_path)
    store.checkpointer.stop()
    store.writer.execute("CREATE TABLE filler (body BLOB)")
    for _ in range(20):
        store.writer.execute("INSERT INTO filler VALUES (zeroblob(65536))")
    wal = tmp_path / (STATE_FILE + "-wal")
    assert wal.stat().st_size > 1_000_000
    checkpointer = Checkpointer(tmp_path / STATE_FILE, interval=0.02, truncate_bytes=100_000)
    checkpointer.start()
    deadline = time.monotonic() + 5
    while wal.stat().st_size > 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    checkpointer.stop()
    assert wal.stat().st_size == 0
    store.close()
