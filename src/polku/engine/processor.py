"""The processor: identity → profile → segments for every event of the log, per
customer, in log order, effectively once.

One ``step`` reads a batch of events after the checkpoint (and the timers that are
due), folds them into the state through the caches, and commits the changes with the
new checkpoint in one transaction (``SqliteStateStore.commit``). A crash anywhere
leaves either the whole batch applied or none of it; the batch is then read again.
The events the processor writes itself (segment changes, merges) go to an outbox in
the same transaction and are appended to the log afterwards with deterministic
messageIds, so a second append after a crash is a duplicate the log drops.

The processor is the only writer of the state, so its caches (bounded) are the
truth once a batch commits; a failed commit clears them.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import zlib
from collections.abc import Callable
from functools import partial
from typing import Any, Final

import msgspec

from polku.adapters.sqlite.log_reader import decode_config
from polku.adapters.sqlite.state_store import link_hash
from polku.core.erasure import ERASURE_EVENT, ErasureRequest, ErasureScope, erasure_request, identity_hash, keep_out
from polku.core.errors import StoreUnavailable
from polku.core.events import SYSTEM_CHANNEL, Event, time_millis
from polku.core.identity import (
    CustomerSummary,
    EventKey,
    LinkEvent,
    event_identifiers,
    identifier_type,
    link_live,
    order_sensitive,
)
from polku.core.journey_engine import Occurrence
from polku.core.journey_state import ACCOUNT_PREFIX
from polku.core.profile import Profile, apply_event, condition_view, facts_of, feedback_of
from polku.core.retention import Retention
from polku.core.segments import ENTERED_EVENT, EXITED_EVENT, Needs
from polku.engine.decision_feedback import EVENTS as DECISION_EVENTS
from polku.engine.decision_feedback import DecisionFeedback
from polku.engine.identity_change import IdentityChanger
from polku.engine.journey_runner import JourneyRunner
from polku.engine.runtime import (
    INTERNAL_SOURCE,
    SEGMENT_RECHECK_MS,
    WorkspaceRuntime,
    as_customer,
    feedback_row,
    internal_customer,
    internal_event,
    is_interaction,
    merged_consent,
    withdrew_analytics,
)
from polku.ports import LogEraser, LogReader, StateStore
from polku.state import Account, IdentifierRecord, StateChanges, TimelineRow

log = logging.getLogger("polku.processor")
_decode_event = msgspec.json.Decoder(Event).decode

TRANSIENT: Final = (sqlite3.Error, StoreUnavailable, MemoryError, OSError)
"""Failures of the machine or the store, not of an event: never a reason to skip one
(``StoreUnavailable``: what the PostgreSQL store raises for its server's and
connections' failures)."""
MAX_ACCOUNT_FANOUT: Final = 10_000
RETENTION_EVERY_MS: Final = 3_600_000
MAX_KNOWN_LINKS: Final = 1_000
"""Links a profile remembers having stored (beyond, it forgets them all and stores
repeats again: harmless, the store keeps the earliest)."""
"""Members whose segments are checked again when their account's traits change."""


def erasure_of(event: Event) -> ErasureRequest | None:
    """The erasure an event of the log requests (polku's own, ``ERASURE_EVENT``)."""
    if event.source != INTERNAL_SOURCE or event.event != ERASURE_EVENT:
        return None
    return erasure_request(event.properties)


class ErasedPeople:
    """What keeps erased people out (``polku.core.erasure.keep_out``): hash → the
    log position before which an event naming it is theirs, per workspace."""

    def __init__(self, hashes: dict[tuple[str, str], int]) -> None:
        self.hashes = hashes
        self.workspaces = {workspace for workspace, _ in hashes}

    def add(self, workspace: str, scope: ErasureScope) -> None:
        for found, _, until in keep_out(scope):
            key = (workspace, found)
            self.hashes[key] = max(self.hashes.get(key, 0), until)
        self.workspaces.add(workspace)

    def customer(self, workspace: str, customer_id: str) -> bool:
        return workspace in self.workspaces and (workspace, identity_hash(workspace, customer_id)) in self.hashes

    def names(self, workspace: str, identifiers: list[str], seq: int) -> bool:
        """Whether an event at ``seq`` naming ``identifiers`` is an erased person's:
        suppressed, or from before their erasure."""
        if workspace not in self.workspaces:
            return False
        return any(self.hashes.get((workspace, identity_hash(workspace, found)), 0) > seq for found in identifiers)


class Caches:
    """Bounded caches of the state the processor wrote (it is the only writer)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.owners: dict[tuple[str, str], IdentifierRecord | None] = {}
        self.profiles: dict[tuple[str, str], Profile] = {}
        self.accounts: dict[tuple[str, str], Account | None] = {}

    def clear(self) -> None:
        for cache in (self.owners, self.profiles, self.accounts):
            cache.clear()

    def trim(self) -> None:
        """Evict the oldest entries (insertion order) once over capacity: cheap, and
        the hot customers come straight back. Only between batches: what a batch
        changed is in its ``StateChanges`` until the commit."""
        _evict(self.owners, self.capacity * 3)
        _evict(self.profiles, self.capacity)
        _evict(self.accounts, self.capacity)


def _evict(cache: dict[Any, Any], limit: int) -> None:
    if len(cache) > limit:
        for key in list(cache)[: len(cache) - limit + limit // 10]:
            del cache[key]


class Processor:
    def __init__(
        self,
        store: StateStore,
        reader: LogReader,
        *,
        clock: Callable[[], int],
        batch_size: int = 1000,
        cache_size: int = 100_000,
        emit: bool = True,
        batch_seconds: float = 0.05,
        eraser: LogEraser | None = None,
    ) -> None:
        self.store = store
        self.reader = reader
        self.eraser = eraser
        """Removes erased people from the log (``None``: the log stage waits for a
        processor that has one — a rebuild has none)."""
        self.clock = clock
        self.batch_size = batch_size
        self.batch_seconds = batch_seconds
        self.emit = emit
        self.salt = store.salt()
        self.checkpoint = store.checkpoint()
        self.caches = Caches(cache_size)
        self.runtimes: dict[str, WorkspaceRuntime] = {}
        self._config_bodies: dict[str, bytes] = {}
        self.changes = StateChanges(checkpoint=self.checkpoint)
        self.identity = IdentityChanger(self)
        self.journeys = JourneyRunner(self)
        self.decisions = DecisionFeedback(self)
        self._recorded_links: list[tuple[str, EventKey]] = []
        self.now = 0
        self.seq = 0
        self.messages_committed = 0
        """Outbox messages committed so far (the worker nudges the dispatcher)."""
        self.erased = ErasedPeople(store.erased())
        self._expired: dict[str, tuple[int, Retention]] = {}
        self._after_commit: list[tuple[str, int, str | None]] = []
        self._erasures_due = False
        """When each workspace's retention last ran, under which rules."""
        self.late: list[tuple[str, int, str | None]] = []
        """(workspace, seq, customer id) of this batch's events of people erased
        before them: dropped from the log before the batch commits."""
        self.refresh_configs()
        self.finish_erasures()

    # -- configuration --------------------------------------------------------

    def refresh_configs(self) -> None:
        """Compile the configuration of any workspace whose stored config changed.
        A configuration that no longer compiles keeps the previous one (and logs)."""
        for workspace, body in self.reader.configs().items():
            if self._config_bodies.get(workspace) == body:
                continue
            try:
                self.runtimes[workspace] = WorkspaceRuntime.compile(decode_config(body))
            except Exception:
                log.exception("workspace %s: configuration not applied", workspace)
                if workspace not in self.runtimes:
                    raise
            self._config_bodies[workspace] = body
        self.journeys.refresh()

    def runtime(self, workspace: str) -> WorkspaceRuntime:
        runtime = self.runtimes.get(workspace)
        if runtime is None:
            self.refresh_configs()
            runtime = self.runtimes.get(workspace)
            if runtime is None:
                runtime = WorkspaceRuntime.compile(decode_config(b"{}"))
                self.runtimes[workspace] = runtime
        return runtime

    # -- the loop -------------------------------------------------------------

    def step(self) -> int:
        """Process one batch of events and due timers; returns how many. A batch
        ends early once it has run ``batch_seconds`` (the rest is read again next
        step): after a backlog, a large batch would hold every event in it until
        its commit, which is what the profile's freshness is measured by."""
        self.now = self.clock()
        if self._after_commit or self._erasures_due:
            self.after_commit()
        rows = self.reader.read(self.checkpoint, self.batch_size)
        timers = self.store.due_timers(self.now, self.batch_size)
        if not rows and not timers:
            return 0
        deadline = time.perf_counter() + self.batch_seconds
        try:
            self.prefetch(rows)
            for position, (seq, workspace, body) in enumerate(rows, start=1):
                event = _decode_event(body)
                erasure = erasure_of(event)
                if erasure is not None and position > 1:
                    # An erasure commits alone, over the committed state: the batch
                    # up to it first, then the erasure as the next step's first row.
                    rows, timers = rows[: position - 1], []
                    break
                self.process(seq, workspace, event)
                self.changes.checkpoint = seq
                if erasure is not None:
                    rows, timers = rows[:1], []
                    break
                if position % 64 == 0 and time.perf_counter() > deadline:
                    rows = rows[:position]
                    timers = timers[:64]
                    break
            for workspace, customer_id, due_ms in timers:
                self.fire_timer(workspace, customer_id, due_ms)
            self.flush()
        except TRANSIENT:
            self._reset()
            raise
        except Exception:
            self._reset()
            log.exception("a batch failed; processing it one event at a time")
            self.isolate(rows, timers)
        except BaseException:
            self._reset()
            raise
        self.caches.trim()
        self.journeys.trim(self.caches.capacity)
        return len(rows) + len(timers)

    def prefetch(self, rows: list[tuple[int, str, bytes]]) -> None:
        """Load what a batch will read, ahead (a remote store: one query, not one per
        event). The embedded store answers each read from its own file quickly."""

    def _reset(self) -> None:
        """Forget what the failed batch did: the caches may hold its changes."""
        self.caches.clear()
        self.journeys.reset()
        self.checkpoint = self.store.checkpoint()
        self.changes = StateChanges(checkpoint=self.checkpoint)
        self.late = []

    def isolate(self, rows: list[tuple[int, str, bytes]], timers: list[tuple[str, str, int]]) -> None:
        """Process a failed batch event by event (and timer by timer), each committed
        alone; one that fails by itself is recorded with its error and skipped, so a
        poison message cannot stop every customer's processing. Errors of the store
        itself (``TRANSIENT``) are not the event's fault: they stop the processor,
        which starts again from its checkpoint."""
        # Every row here is uncommitted (the batch failed before or at its commit).
        # No comparison with the checkpoint: a worker of the scale-out deployment
        # reads several partitions, whose sequences need not exceed its last commit.
        for seq, workspace, body in rows:
            self._alone(workspace, seq, partial(self.process_body, seq, workspace, body))
        for workspace, customer_id, due_ms in timers:
            self._alone(workspace, 0, partial(self.fire_timer, workspace, customer_id, due_ms), timer=customer_id)

    def process_body(self, seq: int, workspace: str, body: bytes) -> None:
        self.process(seq, workspace, _decode_event(body))

    def _alone(self, workspace: str, seq: int, work: Callable[[], None], timer: str | None = None) -> None:
        try:
            work()
            if seq:
                self.changes.checkpoint = seq
            self.flush()
        except TRANSIENT:
            self._reset()
            raise
        except Exception as error:
            self._reset()
            what = f"the timer of customer {timer}" if timer else f"event {seq}"
            log.exception("workspace %s: %s could not be processed; skipped", workspace, what)
            self.changes.failures.append((workspace, seq, f"{what}: {type(error).__name__}: {error}"[:2000]))
            if timer is not None:
                self.changes.timers[(workspace, timer)] = None
            else:
                self.changes.checkpoint = seq
            self.flush()

    def flush(self) -> None:
        """Commit what the batch changed so far, with the checkpoint of the last
        event applied."""
        self.journeys.settle_timers()
        changes = self.changes
        late, self.late = self.late, []
        if late and self.eraser is not None:
            # Before the commit moves the checkpoint past them: the analytics feed
            # follows the checkpoint and must never copy them.
            self.eraser.drop(late)
        self.store.commit(changes)
        self.messages_committed += len(changes.messages)
        self.checkpoint = changes.checkpoint
        self.changes = StateChanges(checkpoint=self.checkpoint)
        if changes.erasures:
            self.caches.clear()
            self.journeys.reset()
        # After the commit: a failure here must not send the committed batch through
        # again (``step``'s error paths would), so it is kept for the next step.
        self._after_commit.extend(late)
        self._erasures_due = self._erasures_due or bool(changes.erasures)
        self.after_commit()

    def after_commit(self) -> None:
        """The erasure work that follows a commit: late events dropped once more (a
        commit may index its batch's messages again: the scale-out's), the WAL
        emptied and the other stores' stages. Retried at the next step if it fails."""
        try:
            if self._after_commit and self.eraser is not None:
                self.eraser.drop(self._after_commit)
            self._after_commit = []
            if self._erasures_due:
                self.store.wipe_wal()
                self.finish_erasures()
                self._erasures_due = False
        except Exception:
            log.exception("erasure work after a commit failed; it is tried again at the next step")

    # -- erasure (polku.core.erasure) -------------------------------------------------

    def erase(self, seq: int, workspace: str, request: ErasureRequest, requested_ms: int) -> None:
        """Erase a person from the state with this commit (the batch before it is
        committed: ``step``). Their other stores follow once it commits."""
        live = self.redirect(workspace, request.customer_id)
        scope = self.store.erasure_scope(
            workspace,
            live,
            erasure=request.erasure,
            requested_ms=requested_ms,
            marker_seq=seq,
            suppress=request.suppress,
        )
        scope.state_ms = self.now
        self.changes.erasures.append(scope)
        self.erased.add(workspace, scope)
        log.info("workspace %s: erasure %s of %d customer ids", workspace, request.erasure, len(scope.customer_ids))

    def expire(self) -> dict[str, int]:
        """Retention (``polku.core.retention``): each workspace's expired events leave
        the timeline and the log — hourly, and soon after its rules change (a new
        configuration compiles a new ``Retention``). Only what the processor has had."""
        now = self.clock()
        removed: dict[str, int] = {}
        for workspace, runtime in list(self.runtimes.items()):
            retention = runtime.retention
            last = self._expired.get(workspace)
            if retention.keeps_everything or (last and last[1] is retention and now - last[0] < RETENTION_EVERY_MS):
                continue
            self._expired[workspace] = (now, retention)
            found = self.store.expire_timeline(workspace, retention, now)
            if self.eraser is not None:
                log_side = self.eraser.expire(workspace, retention, now, self.checkpoint)
                found |= {f"log.{table}": count for table, count in log_side.items()}
            for table, count in found.items():
                removed[table] = removed.get(table, 0) + count
            if any(found.values()):
                log.info("workspace %s: expired %s", workspace, found)
        return removed

    def finish_erasures(self) -> None:
        """The log stage of every erasure whose state is erased: its own, after
        its commit, and any a crash left unfinished."""
        if self.eraser is None:
            return
        for scope in self.store.pending_erasures("log"):
            removed = self.eraser.erase(scope)
            self.store.mark_erasure(scope.workspace, scope.erasure, "log", removed, self.clock())
            if not self.eraser.analytics_follow():
                self.store.mark_erasure(scope.workspace, scope.erasure, "analytics", {}, self.clock())

    def run_until_idle(self, max_steps: int | None = None) -> int:
        """Process until the log and the due timers are exhausted (tests, rebuild)."""
        total = 0
        steps = 0
        while max_steps is None or steps < max_steps:
            done = self.step()
            steps += 1
            if not done:
                break
            total += done
        return total

    # -- reads through the caches ----------------------------------------------

    def owner(self, workspace: str, identifier: str) -> IdentifierRecord | None:
        key = (workspace, identifier)
        try:
            return self.caches.owners[key]
        except KeyError:
            record = self.store.identifier(workspace, identifier)
            self.caches.owners[key] = record
            return record

    def set_owner(self, workspace: str, identifier: str, record: IdentifierRecord) -> None:
        self.caches.owners[(workspace, identifier)] = record
        self.changes.identifiers[(workspace, identifier)] = record

    def profile(self, workspace: str, customer_id: str) -> Profile:
        """Raises ``LookupError`` for an unknown or retired customer."""
        key = (workspace, customer_id)
        found = self.caches.profiles.get(key)
        if found is None:
            if key in self.changes.redirects:
                raise LookupError(f"customer {customer_id} was merged into {self.changes.redirects[key]}")
            found = self.store.profile(workspace, customer_id)
            if found is None:
                raise LookupError(f"customer {customer_id} has identifiers but no profile")
            self.caches.profiles[key] = found
        return found

    def put_profile(self, workspace: str, profile: Profile) -> None:
        key = (workspace, profile.customer_id)
        self.caches.profiles[key] = profile
        self.changes.profiles[key] = profile
        consent = self.runtime(workspace).analytics_consent
        if consent is not None and (withdrawn := withdrew_analytics(profile, consent)) is not None:
            # Kept in the state for the analyses that read it there (the Parquet files').
            self.changes.consent[key] = withdrawn

    def timeline_rows(self, workspace: str, customer_id: str) -> list[TimelineRow]:
        """A customer's whole timeline as this batch leaves it (store + pending)."""
        key = (workspace, customer_id)
        replaced = self.changes.timeline_replaced.get(key)
        rows = list(replaced) if replaced is not None else self.store.timeline(workspace, customer_id)
        rows.extend(self.changes.timeline.get(key, ()))
        return rows

    def revive(self, workspace: str, customer_id: str) -> None:
        """A new customer whose id was retired once (a split gave its founder a
        component again): its old redirect must go."""
        self.changes.redirects.pop((workspace, customer_id), None)
        self.changes.unredirected.add((workspace, customer_id))

    def redirect(self, workspace: str, customer_id: str) -> str:
        """The live id of a customer id, following merges one step at a time (this
        batch's too: a customer revived in it is live again)."""
        for _ in range(64):
            key = (workspace, customer_id)
            if key in self.caches.profiles or key in self.changes.unredirected:
                return customer_id
            pending = self.changes.redirects.get(key)
            if pending is None:
                pending = self.store.redirect_step(workspace, customer_id)
            if pending is None:
                return customer_id
            customer_id = pending
        return customer_id

    def drop_profile(self, workspace: str, customer_id: str) -> None:
        self.caches.profiles.pop((workspace, customer_id), None)
        self.changes.profiles[(workspace, customer_id)] = None
        self.journeys.mark(workspace, customer_id)

    def account(self, workspace: str, account_id: str) -> Account | None:
        key = (workspace, account_id)
        try:
            return self.caches.accounts[key]
        except KeyError:
            found = self.store.account(workspace, account_id)
            self.caches.accounts[key] = found
            return found

    def summary(self, workspace: str, customer_id: str) -> CustomerSummary:
        profile = self.profile(workspace, customer_id)
        counts: dict[str, int] = {}
        for identifier in profile.identifiers:
            kind = identifier_type(identifier)
            counts[kind] = counts.get(kind, 0) + 1
        return CustomerSummary(
            customer_id=customer_id,
            founder=profile.founder,
            counts=counts,
            size=len(profile.identifiers),
            conflicted=profile.conflicted,
        )

    # -- one event --------------------------------------------------------------

    def process(self, seq: int, workspace: str, event: Event) -> None:
        self.seq = seq
        runtime = self.runtime(workspace)
        internal = internal_customer(event)
        ts = time_millis(event.timestamp)
        request = erasure_of(event)
        if request is not None:
            self.erase(seq, workspace, request, ts)
            return
        if internal is not None and as_customer(event):
            # Written by polku for the customer (a survey answer): theirs by id.
            customer_id = self.redirect(workspace, internal)
            try:
                profile = self.profile(workspace, customer_id)
            except LookupError:
                self.drop_if_erased(workspace, seq, customer_id)
                return
            if not is_interaction(event):
                # What polku did for them (a decision shown): counters, not a step of theirs.
                row = TimelineRow(ts, seq, "customer:" + customer_id, event.type, event.event, event.channel, True)
                self.changes.timeline.setdefault((workspace, customer_id), []).append(row)
                if event.event in DECISION_EVENTS and self.emit:
                    self.decisions.after_event(
                        workspace, runtime, customer_id, event.event, event.channel, event.properties or {}, ts
                    )
                return
            event = merged_consent(event, profile)  # a consent change given through the API
            self._apply(seq, workspace, runtime, event, ts, profile, "customer:" + customer_id)
            return
        if internal is not None or event.source == "polku":
            if internal is not None:
                self.record_internal(workspace, seq, ts, event, internal)
            return
        identifiers = event_identifiers(event, runtime.rules)
        if not identifiers:
            return
        if self.erased.names(workspace, identifiers, seq):
            self.late.append((workspace, seq, None))
            return
        self._recorded_links.clear()
        customer_id = self.resolve(workspace, runtime, identifiers, (ts, event.message_id), seq)
        profile = self.profile(workspace, customer_id)
        self._apply(seq, workspace, runtime, event, ts, profile, identifiers[0])

    def _apply(
        self, seq: int, workspace: str, runtime: WorkspaceRuntime, event: Event, ts: int, profile: Profile, anchor: str
    ) -> None:
        """Fold an event of a known customer into their profile, timeline, segments,
        feedback and journeys."""
        customer_id = profile.customer_id
        for set_hash, link_key in self._recorded_links:
            if len(profile.links) >= MAX_KNOWN_LINKS:
                profile.links.clear()
            known = profile.links.get(set_hash)
            if known is None or link_key < tuple(known):
                profile.links[set_hash] = link_key
        facts = facts_of(seq, event, ts)
        group_id = event.group_id if event.type == "group" else None
        changed = apply_event(profile, facts, group_id, runtime.attributes, runtime.feedback_event)
        self.put_profile(workspace, profile)
        name = event.event if event.type == "track" else event.name
        self.changes.timeline.setdefault((workspace, customer_id), []).append(
            TimelineRow(ts, seq, anchor, event.type, name, event.channel)
        )
        answer = feedback_of(facts, runtime.feedback_event)
        if answer is not None:
            row = feedback_row(event, facts, answer, profile, seq)
            self.changes.feedback[(workspace, row.key)] = row
        if group_id is not None:
            self.apply_group(workspace, runtime, group_id, event, seq, ts, customer_id)
        self.evaluate(workspace, runtime, profile, changed, trigger=str(seq))
        self._recorded_links.clear()
        occurrence = Occurrence(name, event.type, event.channel, event.properties or event.traits or {}, ts, seq)
        self.journeys.after_event(workspace, runtime, profile, occurrence)
        if name in DECISION_EVENTS and self.emit:
            self.decisions.after_event(workspace, runtime, customer_id, name, event.channel, event.properties or {}, ts)

    def record_internal(self, workspace: str, seq: int, ts: int, event: Event, customer_id: str) -> None:
        live = self.redirect(workspace, customer_id)
        try:
            self.profile(workspace, live)
        except LookupError:
            self.drop_if_erased(workspace, seq, live)
            return
        row = TimelineRow(ts, seq, "customer:" + live, event.type, event.event, event.channel, internal=True)
        self.changes.timeline.setdefault((workspace, live), []).append(row)
        if event.channel != SYSTEM_CHANNEL:
            # A delivery result (``Message Sent`` on ``email`` …): journeys may wait
            # for it. Segment and identity announcements were handled when they happened.
            occurrence = Occurrence(
                event.event, event.type, event.channel, event.properties or {}, ts, seq, internal=True
            )
            self.journeys.after_event(workspace, self.runtime(workspace), self.profile(workspace, live), occurrence)

    def drop_if_erased(self, workspace: str, seq: int, customer_id: str) -> None:
        """An event about a customer with no profile: if they were erased (a delivery
        result that came back after), it leaves the log."""
        if self.erased.customer(workspace, customer_id):
            self.late.append((workspace, seq, customer_id))

    def resolve(
        self, workspace: str, runtime: WorkspaceRuntime, identifiers: list[str], key: EventKey, seq: int
    ) -> str:
        """The customer of an event, applying what its identifiers change."""
        owners: dict[str, IdentifierRecord | None] = {}
        held: list[str] = []
        for identifier in identifiers:
            if identifier in held:
                # Known to be the first identifier's customer's: no lookup needed.
                owners[identifier] = IdentifierRecord(owners[identifiers[0]].customer_id, key)  # type: ignore[union-attr]
                continue
            record = self.owner(workspace, identifier)
            owners[identifier] = record
            if record is not None and key < record.first_key:
                self.set_owner(workspace, identifier, IdentifierRecord(record.customer_id, key))
            if record is not None and not held and identifier == identifiers[0]:
                profile = self.profile(workspace, record.customer_id)
                # Newer than every event of the customer, so no identifier's
                # first-seen key can move: the others need no lookup.
                if key[0] > profile.last_seen_ms and not profile.conflicted:
                    held = profile.identifiers
        link: LinkEvent | None = None
        if len(identifiers) > 1:
            link = LinkEvent(key, tuple(identifiers))
        customers = {record.customer_id for record in owners.values() if record is not None}
        if len(customers) == 1 and all(owners.values()):
            (customer_id,) = customers
            if link is not None:
                known = self.profile(workspace, customer_id).links.get(link_hash(identifiers))
                if known is not None and tuple(known) <= key:
                    link = None  # seen before: nothing can change
            if link is None or not order_sensitive(self.summary(workspace, customer_id), runtime.rules):
                if link is not None:
                    self.record_link(workspace, link)
                return customer_id
            return self.identity.recompute(workspace, runtime, identifiers, key, seq, link)
        summaries = {
            identifier: self.summary(workspace, record.customer_id) if record is not None else None
            for identifier, record in owners.items()
        }
        plan = link_live(identifiers, summaries, key, runtime.rules, self.salt)
        if plan is None:
            return self.identity.recompute(workspace, runtime, identifiers, key, seq, link)
        if plan.absorb:
            survivor = self.identity.merge(workspace, runtime, plan, key, seq)
            if link is not None:
                self.record_link(workspace, link)
            return survivor
        if link is not None:
            self.record_link(workspace, link)
        if plan.founder is not None:
            profile = Profile(customer_id=plan.survivor, founder=plan.founder)
            self.revive(workspace, plan.survivor)
        else:
            profile = self.profile(workspace, plan.survivor)
        for identifier in plan.attach:
            profile.identifiers.append(identifier)
            self.set_owner(workspace, identifier, IdentifierRecord(plan.survivor, key))
        self.put_profile(workspace, profile)
        return plan.survivor

    def record_link(self, workspace: str, link: LinkEvent) -> None:
        """Store a link (the store keeps the earliest key of a set); the event's
        customer remembers it (``process``) so repeats cost no write."""
        set_hash = link_hash(link.identifiers)
        pending = self.changes.links.get((workspace, set_hash))
        if pending is None or link.key < pending.key:
            self.changes.links[(workspace, set_hash)] = link
        self._recorded_links.append((set_hash, link.key))

    # -- accounts -----------------------------------------------------------------

    def apply_group(
        self,
        workspace: str,
        runtime: WorkspaceRuntime,
        account_id: str,
        event: Event,
        seq: int,
        ts: int,
        customer_id: str,
    ) -> None:
        account = self.account(workspace, account_id) or Account(id=account_id, first_seen_ms=ts)
        traits_changed = False
        for name, value in (event.traits or {}).items():
            current = account.traits.get(name)
            if current is None or (current[1], current[2]) <= (ts, seq):
                if current is None or current[0] != value:
                    traits_changed = True
                account.traits[name] = (value, ts, seq)
        account.first_seen_ms = min(account.first_seen_ms or ts, ts)
        account.last_seen_ms = max(account.last_seen_ms, ts)
        self.caches.accounts[(workspace, account_id)] = account
        self.changes.accounts[(workspace, account_id)] = account
        self.changes.members_added.add((workspace, account_id, customer_id))
        self.changes.members_removed.discard((workspace, account_id, customer_id))
        if traits_changed and runtime.segments.affected({"account", "accounts"}):
            members = set(self.store.account_members(workspace, account_id, limit=MAX_ACCOUNT_FANOUT))
            changes = self.changes
            members.difference_update(c for w, a, c in changes.members_removed if w == workspace and a == account_id)
            members.update(c for w, a, c in changes.members_added if w == workspace and a == account_id)
            members.discard(customer_id)
            for member in sorted(members):
                try:
                    other = self.profile(workspace, member)
                except LookupError:
                    continue
                self.evaluate(workspace, runtime, other, {"account", "accounts"}, trigger=f"{seq}:{account_id}")
            self.evaluate(workspace, runtime, self.profile(workspace, customer_id), {"account", "accounts"}, str(seq))

    # -- segments and timers ------------------------------------------------------

    def view(
        self, workspace: str, runtime: WorkspaceRuntime, profile: Profile, needs: Needs | None = None
    ) -> dict[str, object]:
        """The condition roots ``needs`` asks for (all without it), computing only
        the attribute values the segments read."""
        roots = needs.roots if needs is not None else None
        names = needs.attributes if needs is not None else None
        attributes = runtime.attributes
        if roots is not None and "attributes" not in roots:
            values: dict[str, object] = {}
        elif names is None:
            values = attributes.values(profile.attributes, self.now)
        else:
            values = {
                name: attributes.value(name, profile.attributes, self.now) for name in names if name in attributes.names
            }
        account_traits = {}
        if roots is None or "account" in roots or "accounts" in roots:
            for account_id in profile.accounts:
                account = self.account(workspace, account_id)
                account_traits[account_id] = account.trait_values() if account is not None else None
        return condition_view(profile, values, account_traits, self.now, roots)

    def evaluate(
        self,
        workspace: str,
        runtime: WorkspaceRuntime,
        profile: Profile,
        changed: set[str] | None,
        trigger: str,
    ) -> None:
        """Check the segments whose inputs changed; record entering and leaving
        (in the profile, and as events in the log); set the customer's timer."""
        segments = runtime.segments.affected(changed)
        if changed is None:
            for name in [name for name in profile.segments if name not in runtime.segments.names]:
                self.leave(workspace, profile, name, trigger)
        if segments:
            view = self.view(workspace, runtime, profile, runtime.segments.needs(segments))
            entered, exited = runtime.segments.evaluate(segments, view, profile.segments)
            for name in entered:
                profile.segments[name] = self.now
                self.announce(workspace, profile.customer_id, ENTERED_EVENT, name, trigger)
                self.journeys.segment_entries.append((workspace, profile.customer_id, name, self.seq))
            for name in exited:
                self.leave(workspace, profile, name, trigger)
            if entered or exited:
                self.put_profile(workspace, profile)
        if changed is None or profile.timer_ms <= self.now or not runtime.time_paths.isdisjoint(changed):
            self.schedule(workspace, runtime, profile)

    def leave(self, workspace: str, profile: Profile, name: str, trigger: str) -> None:
        profile.segments.pop(name, None)
        self.announce(workspace, profile.customer_id, EXITED_EVENT, name, trigger)
        self.put_profile(workspace, profile)

    def announce(self, workspace: str, customer_id: str, event_name: str, segment: str, trigger: str) -> None:
        if not self.emit:
            return
        identity = f"{event_name}|{workspace}|{customer_id}|{segment}|{trigger}"
        event = internal_event(event_name, customer_id, self.now, identity, {"segment": segment}, self.now)
        self.changes.emitted.append((workspace, event))

    def announce_identity(
        self, workspace: str, event_name: str, customer_id: str, properties: dict[str, object], trigger: str
    ) -> None:
        if not self.emit:
            return
        identity = f"{event_name}|{workspace}|{customer_id}|{trigger}"
        event = internal_event(event_name, customer_id, self.now, identity, dict(properties), self.now)
        self.changes.emitted.append((workspace, event))

    def schedule(self, workspace: str, runtime: WorkspaceRuntime, profile: Profile) -> None:
        """Set the customer's durable timer to when a segment could change with no
        event: a windowed value leaving its window, or the hourly re-check of
        conditions that read ``now`` (at a fixed minute per customer, so the timer
        moves once an hour rather than on every event, and customers spread out)."""
        if not runtime.segments.time_dependent:
            return
        due = runtime.attributes.next_change_ms(profile.attributes, self.now)
        if runtime.reads_now:
            offset = zlib.crc32(profile.customer_id.encode()) % SEGMENT_RECHECK_MS
            recheck = self.now + SEGMENT_RECHECK_MS - (self.now - offset) % SEGMENT_RECHECK_MS
            due = recheck if due is None else min(due, recheck)
        if (due or 0) != profile.timer_ms:
            profile.timer_ms = due or 0
            self.journeys.mark(workspace, profile.customer_id)

    def fire_timer(self, workspace: str, customer_id: str, due_ms: int) -> None:
        """A holder's timer: its segment re-check if that is due, then its journeys'.
        (``customer_id`` is ``account:<id>`` for an account's journeys.)"""
        self.seq = 0
        self.journeys.mark(workspace, customer_id)
        if customer_id.startswith(ACCOUNT_PREFIX):
            self.journeys.fire(workspace, customer_id, None)
            return
        runtime = self.runtime(workspace)
        try:
            profile = self.profile(workspace, customer_id)
        except LookupError:
            self.journeys.fire(workspace, customer_id, None)
            return
        if profile.timer_ms and profile.timer_ms <= self.now:
            runtime.attributes.prune(profile.attributes, self.now)
            profile.timer_ms = 0
            self.put_profile(workspace, profile)
            self.evaluate(workspace, runtime, profile, set(runtime.time_paths), trigger=f"t{due_ms}")
            self.journeys.drain(workspace, runtime)
        self.journeys.fire(workspace, customer_id, profile)
