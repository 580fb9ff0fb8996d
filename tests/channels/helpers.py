"""A data directory with a workspace's channels and messages in the outbox, as the
processor leaves it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from polku.adapters.sqlite import SqliteCatalog
from polku.adapters.sqlite.log_reader import SqliteLogReader
from polku.adapters.sqlite.state_store import SqliteStateStore
from polku.core.channels import OutboundMessage
from polku.core.workspace import parse_config
from polku.engine.setup import bootstrap
from polku.state import StateChanges

T0 = 1_700_000_000_000


class Clock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


async def configure(data_dir: Path, channels: dict[str, dict[str, Any]], admin_token: str | None = None) -> None:
    catalog = SqliteCatalog(data_dir)
    await catalog.start()
    await bootstrap(catalog, write_key=None, admin_token=admin_token)
    await catalog.set_config("default", parse_config(json.dumps({"channels": channels})))
    await catalog.close()


def message(key: str, channel: str, **fields: Any) -> OutboundMessage:
    values: dict[str, Any] = {
        "key": key,
        "workspace": "default",
        "customer_id": "c-" + key,
        "channel": channel,
        "purpose": "transactional",
        "journey": "welcome",
        "version": 1,
        "step": "hello",
        "message": "hello",
        "created_ms": T0,
        "to": f"{key}@example.com",
        "subject": "Welcome",
        "body": "Hello",
    }
    return OutboundMessage(**(values | fields))


def decide(data_dir: Path, *messages: OutboundMessage) -> None:
    """What the processor does: the messages commit with a state change."""
    store = SqliteStateStore(data_dir)
    try:
        store.commit(StateChanges(checkpoint=0, messages=list(messages)))
    finally:
        store.close()


def log_events(data_dir: Path) -> list[dict[str, Any]]:
    reader = SqliteLogReader(data_dir)
    try:
        return [msgspec.json.decode(body) for _, _, body in reader.read(0, 1000)]
    finally:
        reader.close()


def results(data_dir: Path) -> list[tuple[str, str]]:
    """(event name, message key) of the delivery results in the log."""
    return [
        (event["event"], event["properties"]["key"])
        for event in log_events(data_dir)
        if event.get("event") in ("Message Sent", "Message Failed")
    ]


async def until(condition: Callable[[], object], timeout_s: float = 10.0, poll_s: float = 0.002) -> float:
    """Wait for ``condition`` to hold; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if condition():
            return time.monotonic() - started
        await asyncio.sleep(poll_s)
    raise AssertionError(f"not true within {timeout_s}s")
