"""Feeding the analytics store from the log (docs/analytics.md).

The feeder follows the processor: it copies the events the processor has applied
(up to the state's checkpoint) into DuckDB in Arrow batches, each with its customer
as the state resolves it now, and applies the identity changes the processor made
since its last batch by re-resolving the events of the customers involved — so a
merge after the fact moves the absorbed customer's whole history to the survivor,
and a split deals it out again by the identifier that named each event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Final

import msgspec

from polku.adapters.duckdb import analytics_store
from polku.adapters.sqlite.log_reader import SqliteLogReader, decode_config
from polku.adapters.sqlite.state_store import StateReads, mark_erasure_stage, open_state_reader
from polku.core.events import SYSTEM_CHANNEL, Event, time_millis
from polku.core.identity import event_identifiers
from polku.core.profile import FEEDBACK_SCALES
from polku.core.retention import Retention
from polku.core.segments import ENTERED_EVENT, EXITED_EVENT
from polku.core.workspace import WorkspaceConfig
from polku.engine.runtime import internal_customer, is_interaction
from polku.state import MergeRecord

log = logging.getLogger("polku.analytics")
_decode_event = msgspec.json.Decoder(Event).decode
_decode_change = msgspec.msgpack.Decoder(MergeRecord).decode
BATCH: Final = 50_000
RETENTION_CHECK_S: Final = 5.0
RETENTION_EVERY_S: Final = 3600.0
MAX_CACHE: Final = 500_000
NAMES: Final = tuple(name for name, _ in analytics_store.EVENT_COLUMNS)


class AnalyticsFeeder:
    def __init__(self, data_dir: Path, *, batch_size: int = BATCH) -> None:
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.log = SqliteLogReader(data_dir)
        self.state: StateReads = open_state_reader(data_dir)
        self.configs: dict[str, tuple[bytes, WorkspaceConfig]] = {}
        self.owners: dict[tuple[str, str], str | None] = {}
        self._expired: dict[str, tuple[float, bytes]] = {}
        self._retention_read = 0.0

    def close(self) -> None:
        self.log.close()
        self.state.connection.close()

    def config(self, workspace: str) -> WorkspaceConfig:
        found = self.configs.get(workspace)
        if found is None:
            self.configs = {w: (body, decode_config(body)) for w, body in self.log.configs().items()}
            found = self.configs.get(workspace) or (b"{}", decode_config(b"{}"))
        return found[1]

    def step(self) -> int:
        """Feed one batch and the identity changes made so far; how many events."""
        self.apply_erasures()
        self.expire()
        with analytics_store.writer(self.data_dir) as db:
            position, change_id, epoch = analytics_store.feed_position(db)
            state_epoch = self.state.identity_epoch()
            if state_epoch != epoch:
                # The state was rebuilt (or is new): its identity change ids started over.
                self.owners.clear()
                self.resolve_all(db)
                db.execute("UPDATE feed SET identity_change = 0, identity_epoch = ? WHERE id = 1", [state_epoch])
                change_id = 0
            change_id = self.apply_identity_changes(db, change_id)
            limit = self.state.checkpoint()
            rows = (
                [row for row in self.log.read(position, self.batch_size) if row[0] <= limit] if limit > position else []
            )
            if not rows:
                return 0
            columns, segments = self.columns(rows)
            analytics_store.append(db, columns, segments, rows[-1][0], self.consent(columns))
            return len(rows)

    def apply_erasures(self) -> int:
        """The analytics stage of the erasures whose log stage is done (before it,
        the feeder could copy again what the log still held): their rows go, the file
        is written anew without them, and the stage is marked in the state."""
        scopes = self.state.pending_erasures("analytics")
        if not scopes:
            return 0
        with analytics_store.writer(self.data_dir) as db:
            removed = [analytics_store.erase(db, scope) for scope in scopes]
        analytics_store.compact(self.data_dir)
        self.owners.clear()
        for scope, counts in zip(scopes, removed, strict=True):
            mark_erasure_stage(self.data_dir, scope, "analytics", counts)
        log.info("analytics: %d erasures applied", len(scopes))
        return len(scopes)

    def expire(self) -> int:
        """Retention (``polku.core.retention``): each workspace's expired events, hourly
        and soon after its rules change (configurations are read every few seconds)."""
        now = time.monotonic()
        if now - self._retention_read < RETENTION_CHECK_S:
            return 0
        self._retention_read = now
        wall = int(time.time() * 1000)
        due: list[tuple[str, Retention]] = []
        for workspace, body in self.log.configs().items():
            last = self._expired.get(workspace)
            if last is not None and last[1] == body and now - last[0] < RETENTION_EVERY_S:
                continue
            retention = Retention.compile(decode_config(body).retention)
            self._expired[workspace] = (now, body)
            if not retention.keeps_everything:
                due.append((workspace, retention))
        if not due:
            return 0
        with analytics_store.writer(self.data_dir) as db:
            removed = sum(analytics_store.expire(db, workspace, retention, wall) for workspace, retention in due)
        if removed:
            analytics_store.compact(self.data_dir)
            log.info("analytics: %d expired events removed", removed)
        return removed

    def consent(self, columns: dict[str, list[Any]]) -> list[tuple[str, list[str], list[str]]]:
        """Per workspace: the batch's customers, and those of them whose latest word on
        the workspace's analytics purpose is no (the analyses leave them out). A
        change of consent comes with an event of theirs, so it is looked at here."""
        touched: dict[str, set[str]] = {}
        for workspace, customer_id in zip(columns["workspace"], columns["customer_id"], strict=True):
            touched.setdefault(workspace, set()).add(customer_id)
        found = []
        for workspace, customers in touched.items():
            consent = self.config(workspace).policy.consent
            looked_at = sorted(customers)
            withdrawn: list[str] = []
            if consent.analytics is not None:
                for customer_id, profile in self.state.profiles(workspace, looked_at).items():
                    said = profile.traits.get(consent.trait)
                    if said is not None and isinstance(said[0], dict) and said[0].get(consent.analytics) is False:
                        withdrawn.append(customer_id)
            found.append((workspace, looked_at, sorted(withdrawn)))
        return found

    def columns(
        self, rows: list[tuple[int, str, bytes]]
    ) -> tuple[dict[str, list[Any]], list[tuple[str, str, str, int, bool]]]:
        columns: dict[str, list[Any]] = {name: [] for name in NAMES}
        segments: list[tuple[str, str, str, int, bool]] = []
        add = [columns[name].append for name in NAMES]
        for seq, workspace, body in rows:
            event = _decode_event(body)
            internal = internal_customer(event)
            ts = time_millis(event.timestamp)
            name = event.event if event.type == "track" else event.name
            if internal is not None:
                if event.channel == SYSTEM_CHANNEL:
                    if name in (ENTERED_EVENT, EXITED_EVENT):
                        segment = (event.properties or {}).get("segment")
                        if isinstance(segment, str):
                            customer = self.live(workspace, internal)
                            segments.append((workspace, customer, segment, ts, name == ENTERED_EVENT))
                    continue
                if not is_interaction(event):
                    continue  # what polku showed them (a decision), not a step of theirs
                anchor = "customer:" + internal
                customer = self.live(workspace, internal)
            elif event.source == "polku":
                continue
            else:
                config = self.config(workspace)
                identifiers = event_identifiers(event, config.identity)
                if not identifiers:
                    continue
                anchor = identifiers[0]
                found = self.owner(workspace, anchor)
                if found is None:
                    continue
                customer = found
            values = store_row(workspace, seq, ts, customer, anchor, event, name, self.config(workspace))
            for append, value in zip(add, values, strict=True):
                append(value)
        return columns, segments

    # -- who an event belongs to now -------------------------------------------------------

    def live(self, workspace: str, customer_id: str) -> str:
        return self.state.redirect(workspace, customer_id)

    def owner(self, workspace: str, identifier: str) -> str | None:
        key = (workspace, identifier)
        try:
            return self.owners[key]
        except KeyError:
            pass
        if len(self.owners) > MAX_CACHE:
            self.owners.clear()
        record = self.state.identifier(workspace, identifier)
        found = self.live(workspace, record.customer_id) if record is not None else None
        self.owners[key] = found
        return found

    def owner_of_anchor(self, workspace: str, anchor: str) -> str | None:
        if anchor.startswith("customer:"):
            return self.live(workspace, anchor[9:])
        return self.owner(workspace, anchor)

    def apply_identity_changes(self, db: Any, after_id: int) -> int:
        """Re-resolve the events of every customer an identity change involved."""
        changes = self.state.connection.execute(
            "SELECT id, workspace, body FROM identity_changes WHERE id > ? ORDER BY id LIMIT 10000", (after_id,)
        ).fetchall()
        if not changes:
            return after_id
        self.owners.clear()
        involved: dict[str, set[str]] = {}
        for _, workspace, body in changes:
            record = _decode_change(body)
            involved.setdefault(workspace, set()).update([record.survivor, *record.absorbed])
        for workspace, customers in involved.items():
            self.reassign(db, workspace, sorted(customers))
        last = int(changes[-1][0])
        db.execute("UPDATE feed SET identity_change = ? WHERE id = 1", [last])
        return last

    def reassign(self, db: Any, workspace: str, customers: list[str]) -> None:
        marks = ", ".join("?" * len(customers))
        anchors = db.execute(
            f"SELECT DISTINCT anchor, customer_id FROM events WHERE workspace = ? AND customer_id IN ({marks})",
            [workspace, *customers],
        ).fetchall()
        self._move(db, workspace, anchors)
        for customer in customers:
            live = self.live(workspace, customer)
            if live != customer:
                db.execute("DELETE FROM segment_members WHERE workspace = ? AND customer_id = ?", [workspace, customer])

    def resolve_all(self, db: Any) -> None:
        for (workspace,) in db.execute("SELECT DISTINCT workspace FROM events").fetchall():
            anchors = db.execute(
                "SELECT DISTINCT anchor, customer_id FROM events WHERE workspace = ?", [workspace]
            ).fetchall()
            self._move(db, workspace, anchors)

    def _move(self, db: Any, workspace: str, anchors: list[tuple[str, str]]) -> None:
        import pyarrow as pa

        moves: dict[str, list[str]] = {"anchor": [], "old": [], "new": []}
        for anchor, current in anchors:
            new = self.owner_of_anchor(workspace, anchor)
            if new is not None and new != current:
                moves["anchor"].append(anchor)
                moves["old"].append(current)
                moves["new"].append(new)
        if not moves["anchor"]:
            return
        db.register("moves", pa.table(moves))
        db.execute(
            "UPDATE events SET customer_id = moves.new FROM moves WHERE events.workspace = ? "
            "AND events.anchor = moves.anchor AND events.customer_id = moves.old",
            [workspace],
        )
        db.unregister("moves")


def store_row(
    workspace: str,
    seq: int,
    ts: int,
    customer: str | None,
    anchor: str,
    event: Event,
    name: str | None,
    config: WorkspaceConfig,
) -> tuple[Any, ...]:
    """An event's values in ``analytics_store.EVENT_COLUMNS`` order (the embedded
    store's rows, and the first columns of the scale-out's Parquet files)."""
    properties = event.properties or {}
    metric, score = _feedback(name, properties, config.feedback_event)
    account = event.group_id if event.type == "group" else (event.context or {}).get("groupId")
    return (
        workspace,
        seq,
        ts,
        customer,
        anchor,
        event.type,
        name,
        event.channel,
        str(account) if account not in (None, "") else None,
        metric,
        score,
        _text(properties.get("survey")) if metric else None,
        _text(properties.get("journey")),
        _text(properties.get("step")) if properties.get("journey") else None,
        event.source,
    )


def _feedback(name: str | None, properties: dict[str, Any], feedback_event: str) -> tuple[str | None, float | None]:
    if name != feedback_event:
        return None, None
    metric = properties.get("metric")
    score = properties.get("score")
    if not isinstance(metric, str) or isinstance(score, bool) or not isinstance(score, int | float):
        return None, None
    metric = metric.lower()
    scale = FEEDBACK_SCALES.get(metric)
    if scale is None or not scale[0] <= score <= scale[1]:
        return None, None
    return metric, float(score)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= 256 else None


IDLE_S: Final = 1.0
"""How often an idle feeder looks for new events (analytics is seconds behind, not
milliseconds: it is read by people)."""
YIELD_S: Final = 0.02
"""The pause between two batches of a backlog, in which readers open the store."""


async def run_analytics_feed(data_dir: Path, *, stop: asyncio.Event | None = None) -> None:
    """Feed the analytics store until ``stop`` is set."""
    from polku.engine.worker import exclusive_lock

    stop = stop or asyncio.Event()
    with exclusive_lock(data_dir, "analytics.lock", "analytics feed"):
        feeder = AnalyticsFeeder(data_dir)
        log.info("analytics feed started", extra={"data_dir": str(data_dir)})
        try:
            while not stop.is_set():
                try:
                    fed = await asyncio.to_thread(feeder.step)
                except Exception:
                    log.exception("analytics feed: a batch failed; trying again")
                    fed = 0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), YIELD_S if fed else IDLE_S)
        finally:
            feeder.close()
