"""The processor when several workers share one state store (docs/scale-out.md,
"Workers: exactly-once effect").

The embedded processor is the only writer of its state, so its caches are the truth.
With N workers on one PostgreSQL database that is no longer so: an event in one
worker's partition can merge a customer whose events another worker applies. The
workers stay correct by optimistic concurrency over *state keys*:

- every record the processor reads or writes has a key: ``c|ws|customer`` (profile,
  timeline, journey state, timer, redirect), ``i|ws|identifier`` (its owner),
  ``a|ws|account`` (traits and members), ``l|ws|set`` (an identity link) and
  ``e|ws|journey`` (a journey's entry count, which caps read);
- a batch records the keys it read (``SharedStateProcessor`` for cache hits,
  ``TrackingStore`` for store reads); its commit records the keys it wrote in a
  commit log, in commit order (``polku.adapters.postgres.commit_guard``);
- before a batch, a worker evicts from its caches every key another worker committed
  since it last looked; at commit, under the commit lock, a key another worker
  committed meanwhile that this batch read or wrote is a ``StateConflict``: the
  batch rolls back, the caches are cleared and the batch runs again on fresh state.

So a batch commits only if it saw the latest committed version of everything it
touched — serializable for the processor's records — while the common case (workers
on disjoint customers) costs a set intersection.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import msgspec

from polku.core.erasure import ErasureRequest, ErasureScope
from polku.core.errors import StoreUnavailable
from polku.core.events import Event
from polku.core.identity import LinkEvent, event_identifiers
from polku.core.journey_engine import Run
from polku.core.journey_state import JourneyState
from polku.core.profile import Profile
from polku.engine.journey_runner import JourneyRunner
from polku.engine.processor import ErasedPeople, Processor
from polku.ports import StateStore
from polku.state import Account, IdentifierRecord, StateChanges, TimelineRow

_decode_event = msgspec.json.Decoder(Event).decode
CUSTOMER: Final = "c"
IDENTIFIER: Final = "i"
ACCOUNT: Final = "a"
LINK: Final = "l"
ENTRIES: Final = "e"
ERASURE: Final = "x"
UNSPEAKABLE: Final = "\ufffd"
"""What U+0000 becomes in a key: PostgreSQL text cannot hold it. Two ids that differ
only there share a key, which costs at most a needless retry; evicting by such a key
clears every cache (``evict``), since the id it came from cannot be recovered."""


class StateConflict(StoreUnavailable):
    """Another worker committed a record this batch read or wrote: run it again."""


class LeaseLost(StoreUnavailable):
    """A partition of this batch is no longer this worker's (its lease expired or was
    taken, so its epoch moved): the batch must not commit."""

    def __init__(self, partitions: Iterable[int]) -> None:
        self.partitions = sorted(partitions)
        super().__init__(f"partitions {self.partitions} are no longer held by this worker")


class StaleCheckpoint(StoreUnavailable):
    """A partition's committed checkpoint is not where this worker's batch started:
    its messages were applied already. The worker gives the partition back; whoever
    takes it next reads on from the committed checkpoint."""

    def __init__(self, partitions: Iterable[int]) -> None:
        self.partitions = sorted(partitions)
        super().__init__(f"partitions {self.partitions} were committed past where this worker stood")


class DuplicateMessages(StoreUnavailable):
    """Messages of the batch whose messageId an earlier message already had (sent
    again after the stream's duplicate window): run the batch again without them."""

    def __init__(self, seqs: Iterable[int]) -> None:
        self.seqs = sorted(seqs)
        super().__init__(f"{len(self.seqs)} messages repeat an earlier messageId (sequences {self.seqs[:5]} …)")


def key(kind: str, workspace: str, name: str) -> str:
    return f"{kind}|{workspace}|{name.replace(chr(0), UNSPEAKABLE)}"


def written_keys(changes: StateChanges) -> set[str]:
    """The keys a batch's changes write (increments that commute — journey,
    action and decision counters other than entries — are no conflict)."""
    keys: set[str] = set()
    add = keys.add
    for workspace, identifier in changes.identifiers:
        add(key(IDENTIFIER, workspace, identifier))
    for workspace, set_hash in changes.links:
        add(key(LINK, workspace, set_hash))
    for mapping in (
        changes.profiles,
        changes.redirects,
        changes.timeline,
        changes.timeline_replaced,
        changes.timers,
        changes.journey_states,
    ):
        for workspace, customer_id in mapping:
            add(key(CUSTOMER, workspace, customer_id))
    for workspace, customer_id in changes.unredirected:
        add(key(CUSTOMER, workspace, customer_id))
    for workspace, account_id in changes.accounts:
        add(key(ACCOUNT, workspace, account_id))
    for workspace, account_id, customer_id in (*changes.members_added, *changes.members_removed):
        add(key(ACCOUNT, workspace, account_id))
        add(key(CUSTOMER, workspace, customer_id))
    # 4: a stored link and a recomputation change what the identity closure of
    # every identifier in them reads (link_members, refusals).
    for (workspace, _), link in changes.links.items():
        for identifier in link.identifiers:
            add(key(IDENTIFIER, workspace, identifier))
    for workspace, identifiers in changes.refusals_cleared:
        for identifier in identifiers:
            add(key(IDENTIFIER, workspace, identifier))
    for workspace, refusal in changes.refusals:
        add(key(IDENTIFIER, workspace, refusal.identifier))
    # An erasure changes everything of the person, and who is kept out: the other
    # workers evict them and read the erased and suppressed again (``evict``).
    for scope in changes.erasures:
        add(key(ERASURE, scope.workspace, scope.erasure))
        for customer_id in scope.customer_ids:
            add(key(CUSTOMER, scope.workspace, customer_id))
        for identifier in scope.identifiers:
            add(key(IDENTIFIER, scope.workspace, identifier))
    return keys


def person_keys(scope: ErasureScope) -> tuple[list[str], str]:
    """The commit-log keys that name an erased person, and the key that takes their
    place there (``ScaleLogEraser``): it names no one, and makes every worker that
    meets it clear its caches and run its batch again (``evict``, ``clashes``), as
    the keys it replaced would have for that person."""
    workspace = scope.workspace
    named = [key(CUSTOMER, workspace, customer_id) for customer_id in scope.customer_ids]
    named += [key(IDENTIFIER, workspace, identifier) for identifier in scope.identifiers]
    return named, key(ERASURE, workspace, UNSPEAKABLE)


def clashes(foreign: set[str], mine: set[str]) -> set[str]:
    """What another worker committed meanwhile that this batch read or wrote: the
    same keys, or an erased person's keys replaced by ``person_keys``' stand-in."""
    found = foreign & mine
    found.update(item for item in foreign if item.startswith(ERASURE + "|") and item.endswith("|" + UNSPEAKABLE))
    return found


def cap_checks(reads: Iterable[str]) -> set[str]:
    """The entry counts a batch checked a cap against: it may have entered people
    under them, so they count as written too (``written_keys`` cannot tell from the
    counters alone which journeys have caps, and most have none)."""
    return {item for item in reads if item.startswith(ENTRIES + "|")}


class TrackingStore:
    """A ``StateStore`` that notes the key of every record read through it (into
    ``reads``) and tells ``after_commit`` when a commit went through."""

    def __init__(self, inner: Any, reads: set[str]) -> None:
        self.inner = inner
        self.reads = reads
        self.after_commit: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def identifier(self, workspace: str, identifier: str) -> IdentifierRecord | None:
        self.reads.add(key(IDENTIFIER, workspace, identifier))
        found: IdentifierRecord | None = self.inner.identifier(workspace, identifier)
        return found

    def profile(self, workspace: str, customer_id: str) -> Profile | None:
        self.reads.add(key(CUSTOMER, workspace, customer_id))
        found: Profile | None = self.inner.profile(workspace, customer_id)
        return found

    def redirect_step(self, workspace: str, customer_id: str) -> str | None:
        self.reads.add(key(CUSTOMER, workspace, customer_id))
        found: str | None = self.inner.redirect_step(workspace, customer_id)
        return found

    def link_hashes(self, workspace: str, identifiers: Sequence[str], *, limit: int = 1 << 62) -> dict[str, list[str]]:
        self.reads.update(key(IDENTIFIER, workspace, identifier) for identifier in identifiers)
        found: dict[str, list[str]] = self.inner.link_hashes(workspace, identifiers, limit=limit)
        return found

    def links(self, workspace: str, set_hashes: Sequence[str]) -> dict[str, LinkEvent]:
        self.reads.update(key(LINK, workspace, set_hash) for set_hash in set_hashes)
        found: dict[str, LinkEvent] = self.inner.links(workspace, set_hashes)
        return found

    def account(self, workspace: str, account_id: str) -> Account | None:
        self.reads.add(key(ACCOUNT, workspace, account_id))
        found: Account | None = self.inner.account(workspace, account_id)
        return found

    def account_members(self, workspace: str, account_id: str, *, limit: int = 10_000) -> list[str]:
        self.reads.add(key(ACCOUNT, workspace, account_id))
        found: list[str] = self.inner.account_members(workspace, account_id, limit=limit)
        return found

    def timeline(
        self, workspace: str, customer_id: str, *, before: tuple[int, int] | None = None, limit: int | None = None
    ) -> list[TimelineRow]:
        self.reads.add(key(CUSTOMER, workspace, customer_id))
        found: list[TimelineRow] = self.inner.timeline(workspace, customer_id, before=before, limit=limit)
        return found

    def journey_state(self, workspace: str, holder: str) -> JourneyState | None:
        self.reads.add(key(CUSTOMER, workspace, holder))
        found: JourneyState | None = self.inner.journey_state(workspace, holder)
        return found

    def journey_entries(self, workspace: str, journey_id: str) -> int:
        self.reads.add(key(ENTRIES, workspace, journey_id))
        return int(self.inner.journey_entries(workspace, journey_id))

    def commit(self, changes: StateChanges) -> None:
        self.inner.commit(changes)
        for callback in self.after_commit:
            callback(changes)


class _SharedJourneyRunner(JourneyRunner):
    """Notes the journey states it answers from its cache, and the entry counts a
    cap is checked against (only those: keeping the count for a journey without a
    cap reads it too, and would make every two workers entering people into one
    journey conflict)."""

    reads: set[str]

    def state(self, workspace: str, holder: str) -> JourneyState | None:
        self.reads.add(key(CUSTOMER, workspace, holder))
        return super().state(workspace, holder)

    def _run(self, workspace: str, *args: Any, **kwargs: Any) -> Run:
        run = super()._run(workspace, *args, **kwargs)
        count = run.entries

        def checked(journey_id: str) -> int:
            self.reads.add(key(ENTRIES, workspace, journey_id))
            return count(journey_id)

        run.entries = checked
        return run


class SharedStateProcessor(Processor):
    """The processor over a ``TrackingStore``: it also notes the records it answers
    from its caches, and can evict what another worker wrote."""

    store: TrackingStore

    def __init__(self, store: TrackingStore, *args: Any, **kwargs: Any) -> None:
        self.reads = store.reads
        super().__init__(store, *args, **kwargs)
        runner = _SharedJourneyRunner(self)
        runner.reads = self.reads
        self.journeys = runner
        self.journeys.refresh()

    def owner(self, workspace: str, identifier: str) -> IdentifierRecord | None:
        self.reads.add(key(IDENTIFIER, workspace, identifier))
        return super().owner(workspace, identifier)

    def profile(self, workspace: str, customer_id: str) -> Profile:
        self.reads.add(key(CUSTOMER, workspace, customer_id))
        return super().profile(workspace, customer_id)

    def account(self, workspace: str, account_id: str) -> Account | None:
        self.reads.add(key(ACCOUNT, workspace, account_id))
        return super().account(workspace, account_id)

    def prefetch(self, rows: list[tuple[int, str, bytes]]) -> None:
        """The owners of the batch's identifiers and their profiles, in two queries
        per workspace instead of one per lookup (a cold worker's cost is its misses)."""
        caches = self.caches
        wanted: dict[str, set[str]] = {}
        for _, workspace, body in rows:
            try:
                event = _decode_event(body)
            except msgspec.DecodeError:  # the event's own failure comes when it is processed
                continue
            named = event_identifiers(event, self.runtime(workspace).rules)
            wanted.setdefault(workspace, set()).update(i for i in named if (workspace, i) not in caches.owners)
        for workspace, identifiers in wanted.items():
            if not identifiers:
                continue
            found = self.store.inner.owners(workspace, sorted(identifiers))
            for identifier in identifiers:
                caches.owners[(workspace, identifier)] = found.get(identifier)
            customers = {r.customer_id for r in found.values() if (workspace, r.customer_id) not in caches.profiles}
            if customers:
                for customer_id, profile in self.store.inner.profiles(workspace, sorted(customers)).items():
                    caches.profiles.setdefault((workspace, customer_id), profile)

    def _reset(self) -> None:
        super()._reset()
        # A conflict may have brought us here, its keys (another worker's erasure
        # among them) consumed by the guard rather than evicted: read who is out again.
        self.erased = ErasedPeople(self.store.erased())

    def erase(self, seq: int, workspace: str, request: ErasureRequest, requested_ms: int) -> None:
        """As the processor does, noting what the scope read: another worker's commit
        to the person meanwhile makes the batch run again (``StateConflict``)."""
        super().erase(seq, workspace, request, requested_ms)
        scope = self.changes.erasures[-1]
        self.reads.update(key(CUSTOMER, workspace, customer_id) for customer_id in scope.customer_ids)
        self.reads.update(key(IDENTIFIER, workspace, identifier) for identifier in scope.identifiers)

    def evict(self, keys: Iterable[str]) -> None:
        """Forget the cached records of ``keys`` (another worker wrote them)."""
        caches, runner = self.caches, self.journeys
        for item in keys:
            kind, workspace, name = item.split("|", 2)
            if kind == ERASURE:
                self.erased = ErasedPeople(self.store.erased())
                if name != UNSPEAKABLE:
                    continue
            if UNSPEAKABLE in name:
                caches.clear()
                runner.states.clear()
                runner.entries.clear()
                return
            pair = (workspace, name)
            if kind == CUSTOMER:
                caches.profiles.pop(pair, None)
                runner.states.pop(pair, None)
            elif kind == IDENTIFIER:
                caches.owners.pop(pair, None)
            elif kind == ACCOUNT:
                caches.accounts.pop(pair, None)
            elif kind == ENTRIES:
                runner.entries.pop(pair, None)


def shared_processor(store: StateStore, **kwargs: Any) -> SharedStateProcessor:
    """A ``SharedStateProcessor`` over ``store`` wrapped in a ``TrackingStore``."""
    return SharedStateProcessor(TrackingStore(store, set()), **kwargs)
