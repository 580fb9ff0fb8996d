"""Building events and a processor over a real SQLite state store for tests."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from polku.adapters.memory import MemoryLogReader
from polku.adapters.memory_state import MemoryStateStore
from polku.adapters.sqlite.state_store import SqliteStateStore
from polku.core.events import Event, format_millis
from polku.core.workspace import WorkspaceConfig, parse_config
from polku.engine.processor import Processor

T0 = 1_790_000_000_000  # 2026-09-21
BACKEND = "sqlite"
"""The state store ``World`` uses; ``tests/engine/conftest.py`` runs every test on each."""
_ids = itertools.count(1)


def event(
    kind: str = "track",
    *,
    ts: int = T0,
    channel: str = "web",
    message_id: str | None = None,
    **fields: Any,
) -> Event:
    return Event(
        message_id=message_id or f"m{next(_ids)}",
        type=kind,
        channel=channel,
        source="default",
        timestamp=format_millis(ts),
        received_at=format_millis(ts),
        **fields,
    )


class Clock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class World:
    """A processor over ``MemoryLogReader`` and a real ``SqliteStateStore``."""

    def __init__(
        self, directory: Path, config: str | WorkspaceConfig = "{}", *, emit: bool = True, batch_size: int = 7
    ) -> None:
        parsed = parse_config(config) if isinstance(config, str) else config
        self.directory = directory
        self.log = MemoryLogReader({"default": parsed})
        self.store: Any = SqliteStateStore(directory) if BACKEND == "sqlite" else MemoryStateStore()
        self.clock = Clock()
        self.processor = Processor(self.store, self.log, clock=self.clock, batch_size=batch_size, emit=emit)

    def send(self, *events: Event) -> None:
        for item in events:
            self.log.add("default", item)

    def run(self) -> None:
        self.processor.run_until_idle()
        # What the worker's forwarder does: emitted events go into the log.
        for _entry_id, workspace, body in self.store.outbox(10_000):
            import msgspec

            self.log.add(workspace, msgspec.json.decode(body, type=Event))
        self.store.delete_outbox([entry[0] for entry in self.store.outbox(10_000)])
        self.processor.run_until_idle()

    def customer(self, identifier: str) -> str:
        record = self.store.identifier("default", identifier)
        assert record is not None, identifier
        return record.customer_id

    def partition(self) -> set[frozenset[str]]:
        if isinstance(self.store, MemoryStateStore):
            return {frozenset(group) for group in self.store.partition("default").values()}
        groups: dict[str, set[str]] = {}
        for identifier, customer_id in self.store.connection.execute(
            "SELECT identifier, customer_id FROM identifiers WHERE workspace = 'default'"
        ):
            groups.setdefault(customer_id, set()).add(identifier)
        return {frozenset(group) for group in groups.values()}

    def close(self) -> None:
        self.store.close()
