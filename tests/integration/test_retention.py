"""Retention through a real ``polku serve``: once a workspace's rules say so, events
older than their age limit leave the log, the customer's timeline and the analytics
store, and those the rules keep stay; refused messages older than the quarantine's
limit leave the quarantine."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.conftest import ServerProcess
from tests.journeys.test_journey_e2e import until

from polku.adapters.duckdb import analytics_store
from polku.adapters.sqlite.event_log import SqliteEventLog
from polku.adapters.sqlite.log_erasure import SqliteLogEraser
from polku.core.events import Rejection
from polku.core.retention import Retention, RetentionConfig
from polku.ports import AppendBatch

DAY = 86_400_000
RULES = "retention: {events: 730d, rules: [{event: Page Viewed, keep: 90d}, {channel: web, type: page, keep: 30d}]}\n"


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ms / 1000))


def _analytics(data_dir: Path) -> list[tuple[str, str]]:
    with analytics_store.reader(data_dir) as db:
        rows = db.execute("SELECT coalesce(name, ''), channel FROM events WHERE source != 'polku' ORDER BY seq")
        return [tuple(row) for row in rows.fetchall()]


def test_expired_events_leave_the_log_the_timeline_and_the_analytics(server: ServerProcess) -> None:
    now = int(time.time() * 1000)
    batch = [
        {"type": "track", "userId": "rita", "event": "Page Viewed", "timestamp": _iso(now - 100 * DAY)},  # 90d: gone
        {"type": "track", "userId": "rita", "event": "Page Viewed", "timestamp": _iso(now - 10 * DAY)},  # kept
        {"type": "page", "userId": "rita", "name": "Home", "context": {"channel": "web"},
         "timestamp": _iso(now - 40 * DAY)},  # web pages, 30d: gone
        {"type": "page", "userId": "rita", "name": "Home", "context": {"channel": "app"},
         "timestamp": _iso(now - 40 * DAY)},  # an app page: the default, kept
        {"type": "track", "userId": "rita", "event": "Order Completed", "timestamp": _iso(now - 800 * DAY)},  # gone
        {"type": "track", "userId": "rita", "event": "Order Completed", "timestamp": _iso(now - 700 * DAY)},  # kept
    ]  # fmt: skip
    with server.admin() as admin, server.writer() as writer:
        assert writer.post("/v1/batch", json={"batch": batch}).status_code == 200
        customer = until(
            lambda: (
                (r := admin.get("/v1/profiles/lookup", params={"user_id": "rita"})).status_code == 200
                and r.json()["events"] == 6
                and r.json()["customer_id"]
            ),
            what="rita's events",
        )
        until(lambda: admin.get("/v1/analytics").json()["store"]["lag"] == 0, what="the analytics feed")
        assert len(_analytics(server.data_dir)) == 6

        assert admin.put("/v1/workspace/config", content=RULES).status_code == 200

        def timeline() -> list[tuple[str, str]]:
            events = admin.get(f"/v1/profiles/{customer}/timeline").json()["events"]
            return sorted((event["name"], event["channel"]) for event in events if not event["internal"])

        kept = [("Home", "app"), ("Order Completed", "web"), ("Page Viewed", "web")]
        until(lambda: timeline() == kept, timeout=30, what="the expired events off the timeline")
        logged = admin.get("/v1/events", params={"user_id": "rita", "limit": 100}).json()["events"]
        assert sorted((e.get("event") or e.get("name"), e["channel"]) for e in logged) == kept
        until(lambda: sorted(_analytics(server.data_dir)) == kept, timeout=30, what="the analytics store")


def test_refused_messages_leave_the_quarantine_after_its_limit(tmp_path: Path) -> None:
    now = int(time.time() * 1000)

    async def refuse() -> None:
        log = SqliteEventLog(tmp_path)
        await log.start()
        try:
            for age in (40, 10):
                rejection = Rejection(code="invalid", reason="no event name", body=f'{{"age": {age}}}'.encode())
                batch = AppendBatch(
                    workspace="default", source="s", received_ms=now - age * DAY, events=[], rejections=[rejection]
                )
                await log.append(batch)
        finally:
            await log.close()

    asyncio.run(refuse())
    retention = Retention.compile(RetentionConfig(quarantine="30d"))
    removed = SqliteLogEraser(tmp_path).expire("default", retention, now, processed_seq=0)
    assert removed == {"events": 0, "quarantine": 1}

    async def left() -> list[bytes]:
        log = SqliteEventLog(tmp_path)
        await log.start()
        try:
            return [entry.body for entry in await log.quarantined("default", status=None, after_id=0, limit=10)]
        finally:
            await log.close()

    assert asyncio.run(left()) == [b'{"age": 10}']
