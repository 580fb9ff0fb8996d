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
