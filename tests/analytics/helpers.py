"""A real embedded store (log, processor state, analytics) built offline from
hand-written events, for the analyses' known-answer tests."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from polku.adapters.duckdb import analytics_store
from polku.adapters.sqlite import SqliteCatalog, SqliteEventLog
from polku.adapters.sqlite.log_reader import SqliteLogReader
from polku.adapters.sqlite.state_store import SqliteStateStore
from polku.core.events import Event
from polku.core.workspace import parse_config
from polku.engine.analytics_feed import AnalyticsFeeder
from polku.engine.processor import Processor
from polku.engine.setup import bootstrap
from polku.ports import AppendBatch
from tests.engine.helpers import T0, Clock, event

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR


class Store:
    """``add`` events, ``process`` them (processor, then the analytics feed)."""

    def __init__(self, directory: Path, config: str = "{}", journeys: tuple[str, ...] = ()) -> None:
        self.directory = directory
        self.clock = Clock(T0)

        async def setup() -> None:
            catalog = SqliteCatalog(directory)
            await catalog.start()
            await bootstrap(catalog, write_key=None, admin_token=None)
            await catalog.set_config("default", parse_config(config))
            for body in journeys:
                journey_id = body.split("id:", 1)[1].split()[0]
                await catalog.deploy_journey("default", journey_id, body, "2026-09-21T00:00:00Z")
            await catalog.close()

        asyncio.run(setup())
        self.pending: list[Event] = []

    def add(self, *events: Event) -> Store:
        self.pending.extend(events)
        return self

    def track(self, user: str, name: str, channel: str, ts: int, **fields: Any) -> Store:
        return self.add(event(user_id=user, event=name, channel=channel, ts=ts, **fields))

    def process(self) -> Store:
        async def write() -> None:
            log = SqliteEventLog(self.directory, writer="thread")
            await log.start()
            await log.append(AppendBatch(workspace="default", source="default", received_ms=T0, events=self.pending))
            await log.close()

        if self.pending:
            asyncio.run(write())
            self.pending = []
        self.clock.now = max(self.clock.now, T0 + 400 * DAY)
        store = SqliteStateStore(self.directory)
        reader = SqliteLogReader(self.directory)
        try:
            Processor(store, reader, clock=self.clock).run_until_idle()
        finally:
            reader.close()
            store.close()
        feeder = AnalyticsFeeder(self.directory)
        try:
            while feeder.step():
                pass
        finally:
            feeder.close()
        return self

    def rows(self, sql: str, *parameters: Any) -> list[tuple[Any, ...]]:
        with analytics_store.reader(self.directory) as db:
            return [tuple(row) for row in db.execute(sql, list(parameters)).fetchall()]
