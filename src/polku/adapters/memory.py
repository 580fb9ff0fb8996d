"""In-memory ``EventLog`` and ``Catalog``: the reference semantics of the ports,
used by unit tests and the contract suite. Nothing here survives the process."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import msgspec

from polku.adapters.definitions import JourneyDefinitions
from polku.core.audit import MAX_AUDIT_PAGE, AuditEntry
from polku.core.errors import Conflict, NotFound
from polku.core.events import SYSTEM_CHANNEL, Event
from polku.core.workspace import Credential, KeyKind, Source, Workspace, WorkspaceConfig
from polku.ports import (
    AppendBatch,
    AppendResult,
    DefinitionKind,
    EventPage,
    EventQuery,
    JourneyStatus,
    QuarantineEntry,
    QuarantineStatus,
    StoredAnswer,
    StoredEvent,
    StoredJourney,
)


def _millis(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


class MemoryEventLog:
    def __init__(self) -> None:
        self.events: list[StoredEvent] = []
        self.quarantine: list[QuarantineEntry] = []
        self._message_ids: set[tuple[str, str]] = set()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def pending_events(self) -> int:
        return 0

    def _store(self, workspace: str, event: Event) -> bool:
        key = (workspace, event.message_id)
        if key in self._message_ids:
            return False
        self._message_ids.add(key)
        self.events.append(StoredEvent(seq=len(self.events) + 1, workspace=workspace, event=event))
        return True

    async def append(self, batch: AppendBatch) -> AppendResult:
        accepted = sum(self._store(batch.workspace, event) for event in batch.events)
        for rejection in batch.rejections:
            self.quarantine.append(
                QuarantineEntry(
                    id=len(self.quarantine) + 1,
                    workspace=batch.workspace,
                    source=batch.source,
                    received_ms=batch.received_ms,
                    code=rejection.code,
                    reason=rejection.reason,
                    body=rejection.body,
                )
            )
        return AppendResult(
            accepted=accepted, duplicates=len(batch.events) - accepted, quarantined=len(batch.rejections)
        )

    async def query(self, query: EventQuery) -> EventPage:
        def matches(stored: StoredEvent) -> bool:
            event = stored.event
            name = event.event if event.type == "track" else event.name
            return (
                stored.workspace == query.workspace
                and stored.seq > query.after_seq
                and (query.identifier is None or query.identifier in (event.user_id, event.anonymous_id))
                and (query.user_id is None or event.user_id == query.user_id)
                and (query.anonymous_id is None or event.anonymous_id == query.anonymous_id)
                and (query.type is None or event.type == query.type)
                and (query.name is None or name == query.name)
                and (query.channel is None or event.channel == query.channel)
                and (query.include_internal or query.channel is not None or event.channel != SYSTEM_CHANNEL)
                and (query.since_ms is None or _millis(event.timestamp) >= query.since_ms)
                and (query.until_ms is None or _millis(event.timestamp) < query.until_ms)
            )

        found = [stored for stored in self.events if matches(stored)][: query.limit + 1]
        more = len(found) > query.limit
        found = found[: query.limit]
        return EventPage(events=found, next_cursor=found[-1].seq if more and found else None)

    async def quarantined(
        self, workspace: str, *, status: QuarantineStatus | None, after_id: int, limit: int
    ) -> list[QuarantineEntry]:
        return [
            entry
            for entry in self.quarantine
            if entry.workspace == workspace and entry.id > after_id and (status is None or entry.status == status)
        ][:limit]

    async def quarantine_entry(self, workspace: str, entry_id: int) -> QuarantineEntry:
        for entry in self.quarantine:
            if entry.workspace == workspace and entry.id == entry_id:
                return entry
        raise NotFound(f"quarantine entry {entry_id} does not exist")

    async def resolve_quarantined(
        self, workspace: str, entry_id: int, *, event: Event | None, resolved_ms: int
    ) -> AppendResult:
        entry = await self.quarantine_entry(workspace, entry_id)
        if entry.status != "open":
            raise Conflict(f"quarantine entry {entry_id} is already {entry.status}")
        entry.status = "resubmitted" if event is not None else "discarded"
        entry.resolved_ms = resolved_ms
        if event is None:
            return AppendResult(accepted=0, duplicates=0, quarantined=0)
        stored = self._store(workspace, event)
        return AppendResult(accepted=int(stored), duplicates=int(not stored), quarantined=0)


class MemoryCatalog(JourneyDefinitions):
    def __init__(self) -> None:
        self._workspaces: dict[str, Workspace] = {}
        self._sources: dict[tuple[str, str], Source] = {}
        self._credentials: dict[str, Credential] = {}
        self._journeys: dict[tuple[str, str, str], list[tuple[str, str]]] = {}
        """(kind, workspace, id) → (body, deployed_at) per version, from version 1."""
        self._heads: dict[tuple[str, str, str], tuple[int, JourneyStatus, str]] = {}
        self._answers: dict[tuple[str, str], StoredAnswer] = {}
        self._audit: list[AuditEntry] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def create_workspace(self, workspace: Workspace) -> bool:
        if workspace.id in self._workspaces:
            return False
        self._workspaces[workspace.id] = workspace
        return True

    async def workspace(self, workspace_id: str) -> Workspace:
        try:
            return self._workspaces[workspace_id]
        except KeyError:
            raise NotFound(f"workspace {workspace_id!r} does not exist") from None

    async def workspaces(self) -> list[Workspace]:
        return sorted(self._workspaces.values(), key=lambda workspace: workspace.id)

    async def set_config(self, workspace_id: str, config: WorkspaceConfig) -> None:
        workspace = await self.workspace(workspace_id)
        self._workspaces[workspace_id] = msgspec.structs.replace(workspace, config=config)

    async def create_source(self, source: Source) -> bool:
        key = (source.workspace, source.name)
        if key in self._sources:
            return False
        self._sources[key] = source
        return True

    async def source(self, workspace_id: str, name: str) -> Source:
        try:
            return self._sources[(workspace_id, name)]
        except KeyError:
            raise NotFound(f"source {name!r} does not exist in workspace {workspace_id!r}") from None

    async def sources(self, workspace_id: str) -> list[Source]:
        return sorted((s for s in self._sources.values() if s.workspace == workspace_id), key=lambda s: s.name)

    async def add_credential(self, credential: Credential) -> bool:
        if credential.key_hash in self._credentials:
            return False
        self._credentials[credential.key_hash] = credential
        return True

    async def credential(self, key_hash: str) -> Credential | None:
        found = self._credentials.get(key_hash)
        return found if found is not None and found.revoked_at is None else None

    async def credentials(self, workspace_id: str, kind: KeyKind | None = None) -> list[Credential]:
        return [
            c for c in self._credentials.values() if c.workspace == workspace_id and (kind is None or c.kind == kind)
        ]

    async def record_key_use(self, used: dict[str, str]) -> None:
        for key_hash, at in used.items():
            if key_hash in self._credentials:
                self._credentials[key_hash] = msgspec.structs.replace(self._credentials[key_hash], last_used_at=at)

    async def revoke_credential(self, workspace_id: str, key_hash_prefix: str, revoked_at: str) -> Credential:
        found = [
            c
            for c in self._credentials.values()
            if c.workspace == workspace_id and c.key_hash.startswith(key_hash_prefix) and c.revoked_at is None
        ]
        if len(found) != 1 or not key_hash_prefix:
            raise NotFound(f"no single live key in {workspace_id!r} has an id starting {key_hash_prefix!r}")
        revoked = msgspec.structs.replace(found[0], revoked_at=revoked_at)
        self._credentials[revoked.key_hash] = revoked
        return revoked

    async def deploy_definition(
        self, kind: DefinitionKind, workspace: str, item_id: str, body: str, deployed_at: str
    ) -> tuple[int, bool]:
        key = (kind, workspace, item_id)
        versions = self._journeys.setdefault(key, [])
        head = self._heads.get(key)
        if head is not None and versions[head[0] - 1][0] == body:
            return head[0], False
        versions.append((body, deployed_at))
        self._heads[key] = (len(versions), head[1] if head is not None else "active", deployed_at)
        return len(versions), True

    async def definition(
        self, kind: DefinitionKind, workspace: str, item_id: str, version: int | None = None
    ) -> StoredJourney:
        key = (kind, workspace, item_id)
        head = self._heads.get(key)
        versions = self._journeys.get(key, [])
        number = head[0] if head is not None and version is None else (version or 0)
        if head is None or not 1 <= number <= len(versions):
            which = f"version {version} of {kind}" if version is not None else kind
            raise NotFound(f"{which} {item_id!r} does not exist in workspace {workspace!r}")
        body, deployed_at = versions[number - 1]
        return StoredJourney(
            workspace=workspace,
            id=item_id,
            version=number,
            body=body,
            deployed_at=deployed_at,
            current=head[0],
            status=head[1],
            updated_at=head[2],
            versions=tuple(range(1, len(versions) + 1)),
        )

    async def definitions(self, kind: DefinitionKind, workspace: str) -> list[StoredJourney]:
        return [
            await self.definition(kind, w, item_id)
            for k, w, item_id in sorted(self._heads)
            if (k, w) == (kind, workspace)
        ]

    async def set_definition_status(
        self, kind: DefinitionKind, workspace: str, item_id: str, status: JourneyStatus, updated_at: str
    ) -> StoredJourney:
        head = self._heads.get((kind, workspace, item_id))
        if head is None:
            raise NotFound(f"{kind} {item_id!r} does not exist in workspace {workspace!r}")
        self._heads[(kind, workspace, item_id)] = (head[0], status, updated_at)
        return await self.definition(kind, workspace, item_id)

    async def survey_answer(self, workspace: str, invitation: str) -> StoredAnswer | None:
        return self._answers.get((workspace, invitation))

    async def record_audit(self, entry: AuditEntry) -> None:
        self._audit.append(msgspec.structs.replace(entry, id=len(self._audit) + 1))

    async def audit_entries(self, workspace: str, *, after_id: int = 0, limit: int = 100) -> list[AuditEntry]:
        found = [entry for entry in self._audit if entry.workspace == workspace and entry.id > after_id]
        return found[: min(limit, MAX_AUDIT_PAGE)]

    async def record_survey_answer(self, workspace: str, answer: StoredAnswer) -> None:
        current = self._answers.get((workspace, answer.invitation))
        if current is None or answer.revision > current.revision:
            self._answers[(workspace, answer.invitation)] = answer


class MemoryLogReader:
    """``LogReader`` over a list: the processor's reference log in tests. ``add``
    appends an event (deduplicated by messageId, like the real log)."""

    def __init__(self, configs: dict[str, WorkspaceConfig] | None = None) -> None:
        self.rows: list[tuple[int, str, bytes]] = []
        self._message_ids: set[tuple[str, str]] = set()
        self._configs = {
            workspace: msgspec.json.encode(config)
            for workspace, config in (configs or {"default": WorkspaceConfig()}).items()
        }
        self._journeys: dict[tuple[str, str, int], str] = {}
        self._journey_status: dict[tuple[str, str], str] = {}
        self._journey_changes = 0
        self._surveys: dict[tuple[str, str], tuple[int, str, str]] = {}

    def add(self, workspace: str, event: Event) -> bool:
        if (workspace, event.message_id) in self._message_ids:
            return False
        self._message_ids.add((workspace, event.message_id))
        self.rows.append((len(self.rows) + 1, workspace, msgspec.json.encode(event)))
        return True

    def set_config(self, workspace: str, config: WorkspaceConfig) -> None:
        self._configs[workspace] = msgspec.json.encode(config)

    def read(self, after_seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        return self.rows[after_seq : after_seq + limit]

    def bodies(self, seqs: Sequence[int]) -> dict[int, bytes]:
        return {seq: self.rows[seq - 1][2] for seq in seqs if 0 < seq <= len(self.rows)}

    def last_seq(self) -> int:
        return len(self.rows)

    def configs(self) -> dict[str, bytes]:
        return dict(self._configs)

    def put_journey(self, workspace: str, journey_id: str, version: int, status: str, body: str) -> None:
        """Store a version of a journey (and set the journey's status)."""
        self._journeys[(workspace, journey_id, version)] = body
        self._journey_status[(workspace, journey_id)] = status
        self._journey_changes += 1

    def set_journey_status(self, workspace: str, journey_id: str, status: str) -> None:
        self._journey_status[(workspace, journey_id)] = status
        self._journey_changes += 1

    def journeys(self) -> list[tuple[str, str, int, str, str]]:
        return [
            (workspace, journey_id, version, self._journey_status[(workspace, journey_id)], body)
            for (workspace, journey_id, version), body in sorted(self._journeys.items())
        ]

    def journeys_token(self) -> tuple[object, ...]:
        return (self._journey_changes,)

    def put_survey(self, workspace: str, survey_id: str, version: int, status: str, body: str) -> None:
        """The current version of a survey (tests)."""
        self._surveys[(workspace, survey_id)] = (version, status, body)
        self._journey_changes += 1

    def surveys(self) -> list[tuple[str, str, int, str, str]]:
        return [(w, i, v, status, body) for (w, i), (v, status, body) in sorted(self._surveys.items())]

    def close(self) -> None:
        return None
