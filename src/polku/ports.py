"""The ports the engine drives. Each has an in-memory implementation
(``polku.adapters.memory``) beside the real ones (``polku.adapters.sqlite``; later
PostgreSQL and NATS JetStream), and one contract suite (``tests/contract``) runs
against all of them.

``EventLog`` is the durable, append-only record of everything ingested plus the
quarantine of what was refused. ``Catalog`` holds workspaces, sources, keys and
configuration. Both are async because the scale-out adapters (psycopg, nats-py) are.
``DeliveryLedger`` is the dispatcher's record of the outbox's messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Literal, Protocol

import msgspec

from polku.core.audit import AuditEntry
from polku.core.deliveries import Due, Lane, Outcome, Settled
from polku.core.erasure import ErasureScope
from polku.core.events import Event, Rejection
from polku.core.identity import LinkEvent
from polku.core.journey_state import JourneyState
from polku.core.profile import Profile
from polku.core.retention import Retention
from polku.core.workspace import Credential, KeyKind, Source, Workspace, WorkspaceConfig
from polku.state import Account, IdentifierRecord, StateChanges, TimelineRow

QuarantineStatus = Literal["open", "resubmitted", "discarded"]
JourneyStatus = Literal["active", "paused", "archived"]
DefinitionKind = Literal["journey", "survey", "actions"]
"""Versioned definitions the catalog stores alike (a ``StoredJourney`` each)."""


class AppendBatch(msgspec.Struct, kw_only=True):
    """What one request (or one chunk of a file import) adds to the log: its valid
    events and its rejections, written together or not at all."""

    workspace: str
    source: str
    received_ms: int
    events: list[Event]
    rejections: list[Rejection] = []


class AppendResult(msgspec.Struct, kw_only=True):
    accepted: int
    duplicates: int
    quarantined: int


class StoredEvent(msgspec.Struct, kw_only=True):
    seq: int
    workspace: str
    event: Event


class EventQuery(msgspec.Struct, kw_only=True):
    """A filter over one workspace's events; ``None`` means "any". ``after_seq`` is
    the paging cursor (events come in log order)."""

    workspace: str
    identifier: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    type: str | None = None
    name: str | None = None
    channel: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    after_seq: int = 0
    limit: int = 100
    include_internal: bool = False
    """Also polku's own events (channel ``system``); asking for that channel includes them."""


class EventPage(msgspec.Struct, kw_only=True):
    events: list[StoredEvent]
    next_cursor: int | None


class QuarantineEntry(msgspec.Struct, kw_only=True):
    id: int
    workspace: str
    source: str
    received_ms: int
    code: str
    reason: str
    body: bytes
    status: QuarantineStatus = "open"
    resolved_ms: int | None = None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> QuarantineEntry:
        """From the columns every store keeps: id, workspace, source, received_ms,
        code, reason, body, status, resolved_ms."""
        return cls(
            id=row[0],
            workspace=row[1],
            source=row[2],
            received_ms=row[3],
            code=row[4],
            reason=row[5],
            body=bytes(row[6]),
            status=row[7],
            resolved_ms=row[8],
        )


class StoredJourney(msgspec.Struct, kw_only=True, frozen=True):
    """One stored version of a journey definition, with its journey's head: the
    ``current`` version, the ``status`` and every stored version."""

    workspace: str
    id: str
    version: int
    body: str
    """The document as it was sent (YAML or JSON)."""
    deployed_at: str
    current: int
    status: JourneyStatus
    updated_at: str
    versions: tuple[int, ...] = ()


class StoredAnswer(msgspec.Struct, kw_only=True, frozen=True):
    """The answer store's record of one invitation's answer: its revision (1, then
    one more per edit), when it was first given and last changed, and the answer."""

    invitation: str
    revision: int
    first_ms: int
    updated_ms: int
    answer: dict[str, Any]


class EventLog(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def append(self, batch: AppendBatch) -> AppendResult:
        """Store the batch durably; return only once it survives a crash. Events
        whose (workspace, messageId) is already stored count as duplicates and are
        not stored again. Raises ``Unavailable`` when the writer is saturated."""
        ...

    def pending_events(self) -> int:
        """Events submitted but not yet committed (the back-pressure gauge)."""
        ...

    async def query(self, query: EventQuery) -> EventPage: ...

    async def quarantined(
        self, workspace: str, *, status: QuarantineStatus | None, after_id: int, limit: int
    ) -> list[QuarantineEntry]: ...

    async def quarantine_entry(self, workspace: str, entry_id: int) -> QuarantineEntry:
        """Raises ``NotFound``."""
        ...

    async def resolve_quarantined(
        self, workspace: str, entry_id: int, *, event: Event | None, resolved_ms: int
    ) -> AppendResult:
        """Mark an open entry resubmitted (appending ``event`` in the same
        transaction) or discarded (``event`` is ``None``). Raises ``NotFound`` and
        ``Conflict`` (already resolved)."""
        ...


class Catalog(Protocol):
    async def start(self) -> None: ...

    async def record_audit(self, entry: AuditEntry) -> None:
        """Append an admin action to the audit log (``entry.id`` is assigned)."""
        ...

    async def audit_entries(self, workspace: str, *, after_id: int = 0, limit: int = 100) -> list[AuditEntry]:
        """The workspace's audit log after ``after_id``, oldest first."""
        ...

    async def close(self) -> None: ...

    async def create_workspace(self, workspace: Workspace) -> bool:
        """Create it unless it exists; ``True`` if created."""
        ...

    async def workspace(self, workspace_id: str) -> Workspace:
        """Raises ``NotFound``."""
        ...

    async def workspaces(self) -> list[Workspace]: ...

    async def set_config(self, workspace_id: str, config: WorkspaceConfig) -> None: ...

    async def create_source(self, source: Source) -> bool: ...

    async def source(self, workspace_id: str, name: str) -> Source:
        """Raises ``NotFound``."""
        ...

    async def sources(self, workspace_id: str) -> list[Source]: ...

    async def add_credential(self, credential: Credential) -> bool:
        """Store it unless a key with that hash exists; ``True`` if added."""
        ...

    async def credential(self, key_hash: str) -> Credential | None:
        """The live (not revoked) credential with this hash."""
        ...

    async def credentials(self, workspace_id: str, kind: KeyKind | None = None) -> list[Credential]: ...

    async def record_key_use(self, used: dict[str, str]) -> None:
        """Key hash → when it was last accepted (ISO time), for the keys given."""
        ...

    async def revoke_credential(self, workspace_id: str, key_hash_prefix: str, revoked_at: str) -> Credential:
        """Raises ``NotFound``."""
        ...

    async def deploy_journey(self, workspace: str, journey_id: str, body: str, deployed_at: str) -> tuple[int, bool]:
        """Store ``body`` as the next version and make it current: ``(version,
        True)``; a body identical to the current version's stores nothing and
        returns ``(current, False)``. The status stays (a new journey is active)."""
        ...

    async def journey(self, workspace: str, journey_id: str, version: int | None = None) -> StoredJourney:
        """The current version, or ``version``. Raises ``NotFound``."""
        ...

    async def journeys(self, workspace: str) -> list[StoredJourney]:
        """The current version of every journey, by id."""
        ...

    async def set_journey_status(
        self, workspace: str, journey_id: str, status: JourneyStatus, updated_at: str
    ) -> StoredJourney:
        """Raises ``NotFound``."""
        ...

    async def deploy_definition(
        self, kind: DefinitionKind, workspace: str, item_id: str, body: str, deployed_at: str
    ) -> tuple[int, bool]:
        """``deploy_journey`` for any kind of definition (surveys too)."""
        ...

    async def definition(
        self, kind: DefinitionKind, workspace: str, item_id: str, version: int | None = None
    ) -> StoredJourney: ...

    async def definitions(self, kind: DefinitionKind, workspace: str) -> list[StoredJourney]: ...

    async def survey_answer(self, workspace: str, invitation: str) -> StoredAnswer | None:
        """The answer given to an invitation (on the hosted page or the answers API)."""
        ...

    async def record_survey_answer(self, workspace: str, answer: StoredAnswer) -> None:
        """Store an answer (a later revision replaces an earlier one, never the reverse)."""
        ...

    async def set_definition_status(
        self, kind: DefinitionKind, workspace: str, item_id: str, status: JourneyStatus, updated_at: str
    ) -> StoredJourney: ...


class SqlReads(Protocol):
    """A connection the shared report SQL runs on: SQLite's own, or PostgreSQL's
    through ``polku.adapters.postgres.qmark`` (so that SQL stays portable: ``?``
    placeholders, nothing SQLite-only, tables named and shaped alike in both)."""

    def execute(self, sql: str, parameters: Any = (), /) -> Any: ...


class LogReader(Protocol):
    """The processor's side of the event log: read in order after a checkpoint,
    fetch bodies by position, and the workspaces' stored configurations."""

    def read(self, after_seq: int, limit: int) -> list[tuple[int, str, bytes]]: ...

    def bodies(self, seqs: Sequence[int]) -> dict[int, bytes]: ...

    def last_seq(self) -> int: ...

    def configs(self) -> dict[str, bytes]: ...

    def journeys(self) -> list[tuple[str, str, int, str, str]]:
        """(workspace, id, version, status of the journey, body) of every stored version."""
        ...

    def journeys_token(self) -> tuple[object, ...]:
        """A cheap value that changes whenever a journey or a survey is deployed or its
        status changes."""
        ...

    def surveys(self) -> list[tuple[str, str, int, str, str]]:
        """(workspace, id, version, status of the survey, body) of every survey's
        current version."""
        ...

    def close(self) -> None: ...


class LogEraser(Protocol):
    """Removes erased people from the log's side of a deployment (the log, the
    quarantine, survey answers, the audit log's paths, the delivery ledger):
    driven by the processor (``polku.core.erasure``)."""

    def erase(self, scope: ErasureScope) -> dict[str, int]:
        """Everything ``scope`` names; idempotent. Rows removed per table."""
        ...

    def drop(self, late: Sequence[tuple[str, int, str | None]]) -> None:
        """(workspace, seq, customer id) of events that came after their person was
        erased: they leave the log (and the customer's ledger rows, if named)."""
        ...

    def expire(self, workspace: str, retention: Retention, now_ms: int, processed_seq: int) -> dict[str, int]:
        """Retention: the workspace's expired events (those the processor has had:
        up to ``processed_seq``) and expired refused messages. Rows removed per table."""
        ...

    def analytics_follow(self) -> bool:
        """Whether an analytics store follows this log (its feeder then does the
        analytics stage); without one, the log stage marks it done."""
        ...


class StateStore(Protocol):
    """The processor's state (``polku.state``): what the processor reads while it
    folds a batch, and ``commit``, which writes a batch's ``StateChanges`` with the
    checkpoint atomically. The processor is its only writer."""

    def salt(self) -> bytes: ...

    def survey_secret(self) -> bytes:
        """The key that signs survey links."""
        ...

    def checkpoint(self) -> int: ...

    def identifier(self, workspace: str, identifier: str) -> IdentifierRecord | None: ...

    def profile(self, workspace: str, customer_id: str) -> Profile | None: ...

    def redirect(self, workspace: str, customer_id: str) -> str: ...

    def redirect_step(self, workspace: str, customer_id: str) -> str | None: ...

    def link_hashes(
        self, workspace: str, identifiers: Sequence[str], *, limit: int = 1 << 62
    ) -> dict[str, list[str]]: ...

    def links(self, workspace: str, set_hashes: Sequence[str]) -> dict[str, LinkEvent]: ...

    def account(self, workspace: str, account_id: str) -> Account | None: ...

    def account_members(self, workspace: str, account_id: str, *, limit: int = 10_000) -> list[str]: ...

    def timeline(
        self, workspace: str, customer_id: str, *, before: tuple[int, int] | None = None, limit: int | None = None
    ) -> list[TimelineRow]: ...

    def due_timers(self, now_ms: int, limit: int) -> list[tuple[str, str, int]]: ...

    def journey_state(self, workspace: str, holder: str) -> JourneyState | None: ...

    def journey_holders_due(self) -> list[tuple[str, str, int]]: ...

    def journey_entries(self, workspace: str, journey_id: str) -> int: ...

    def outbox(self, limit: int = 1000) -> list[tuple[int, str, bytes]]: ...

    def erased(self) -> dict[tuple[str, str], int]:
        """(workspace, hash) → the log position before which an event naming it is an
        erased person's (``polku.core.erasure.keep_out``)."""
        ...

    def erasure_scope(
        self, workspace: str, customer_id: str, *, erasure: str, requested_ms: int, marker_seq: int, suppress: bool
    ) -> ErasureScope:
        """What the committed state holds of a person (``polku.core.erasure``)."""
        ...

    def pending_erasures(self, stage: str, consumer: str | None = None) -> list[ErasureScope]: ...

    def mark_erasure(self, workspace: str, erasure: str, stage: str, removed: dict[str, int], now_ms: int) -> None: ...

    def wipe_wal(self) -> None:
        """Let no earlier copy of an erased record stay in the store's files."""
        ...

    def expire_timeline(self, workspace: str, retention: Retention, now_ms: int) -> dict[str, int]:
        """Retention: the timeline rows of expired events; rows removed per table."""
        ...

    def commit(self, changes: StateChanges) -> None: ...

    def delete_outbox(self, ids: Sequence[int]) -> None: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


class DeliveryLedger(Protocol):
    """The dispatcher's ledger over the processor's outbox (``polku.engine.dispatch_loop``):
    one delivery per message, keyed by its idempotency key. On SQLite one dispatcher
    owns it; on PostgreSQL several share it, and a delivery they claim is theirs
    until it is settled or the claim lapses (``polku.adapters.postgres.deliveries``)."""

    async def take_new(self, now_ms: int) -> int:
        """Record the outbox's new messages as pending deliveries, each once however
        many dispatchers run; the outbox rows read (a full batch: more may wait)."""
        ...

    async def due_lanes(self, now_ms: int) -> set[Lane]:
        """The lanes with deliveries due and free to claim."""
        ...

    async def claim(self, lane: Lane, now_ms: int, limit: int, skip: AbstractSet[str]) -> list[Due]:
        """Up to ``limit`` of the lane's due deliveries, the longest due first, but
        none in ``skip`` (this dispatcher's own under way)."""
        ...

    async def start_attempt(self, item: Due) -> bool:
        """Count the attempt before it is made (a crash during it leaves the count).
        ``False``: the claim lapsed and another dispatcher may hold it; do not send."""
        ...

    async def settle(self, item: Due, outcome: Outcome) -> bool:
        """Record an attempt's outcome; ``False`` when another dispatcher holds the
        delivery now and nothing was recorded. A ``sent`` is always recorded: the
        receiver has the message."""
        ...

    async def announced(self, key: str) -> None:
        """The result event of a settled delivery is in the log."""
        ...

    async def forget(self, key: str) -> None:
        """Delete a delivery whose message was erased (its person with it)."""
        ...

    async def unannounced(self, skip: AbstractSet[str]) -> list[Settled]:
        """Settled deliveries whose result event a dispatcher that died did not
        write, but none in ``skip``."""
        ...

    async def next_due(self, now_ms: int) -> int:
        """When to look for due deliveries again unless woken before."""
        ...

    async def close(self) -> None: ...
