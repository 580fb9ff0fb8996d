"""Ingestion: from an authenticated request body (or file chunk, or webhook) to
events in the log and rejections in the quarantine.

The HTTP API, ``polku import`` and the webhook source all come through here, so
they share one validation, one quarantine and one deduplication.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from polku.core.errors import (
    Conflict,
    InvalidInput,
    LimitExceeded,
    MalformedBody,
    NotFound,
    RateLimited,
    Unauthorized,
)
from polku.core.events import (
    EMPTY_ENVELOPE,
    BatchEnvelope,
    Envelope,
    Event,
    Rejection,
    normalize_or_reject,
)
from polku.core.ids import uuid7
from polku.core.limits import MAX_BATCH_EVENTS
from polku.core.rate_limit import KeyRateLimiter
from polku.core.workspace import DEFAULT_SOURCE, Credential, Source, hash_key
from polku.ports import AppendBatch, AppendResult, Catalog, EventLog

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


class WriteKeyProbe(msgspec.Struct, rename="camel"):
    """Just the ``writeKey`` of a body; decoding it also proves the body is a JSON object."""

    write_key: str | None = None


_probe: Final = msgspec.json.Decoder(WriteKeyProbe)
_batch: Final = msgspec.json.Decoder(BatchEnvelope)


class RejectedItem(msgspec.Struct):
    index: int
    code: str
    reason: str


class IngestResult(msgspec.Struct, kw_only=True):
    """The 200 body: Segment's ``success`` plus what happened to each message."""

    success: bool = True
    accepted: int
    duplicates: int
    rejected: list[RejectedItem]


class WriteAccess(msgspec.Struct, frozen=True):
    credential: Credential
    source: Source


def probe_object(body: bytes) -> WriteKeyProbe:
    """Decode just enough to know the body is one JSON object (and find its key)."""
    try:
        return _probe.decode(body)
    except msgspec.ValidationError as error:
        raise InvalidInput(f"the body must be a JSON object ({error})", code="invalid_body") from None
    except msgspec.DecodeError as error:
        raise MalformedBody(f"the body is not valid JSON: {error}") from None
    except RecursionError:
        raise MalformedBody("the body is nested too deeply") from None


class Ingestor:
    """Authenticates write keys and turns bodies into appends."""

    def __init__(
        self,
        log: EventLog,
        catalog: Catalog,
        *,
        clock: Clock = system_clock,
        random_bytes: Callable[[int], bytes] = os.urandom,
        on_result: Callable[[str, IngestResult, Sequence[Rejection]], None] = lambda channel, result, rejections: None,
        limiter: KeyRateLimiter | None = None,
        on_used: Callable[[str], None] = lambda key_hash: None,
    ) -> None:
        self.log = log
        self.catalog = catalog
        self.clock = clock
        self.random_bytes = random_bytes
        self.on_result = on_result
        self.limiter = limiter
        self.on_used = on_used
        """Told each key accepted (``KeyUsage.note``)."""
        self._write_keys: dict[str, tuple[WriteAccess, float]] = {}

    def new_message_id(self) -> str:
        return uuid7(int(time.time() * 1000), self.random_bytes(10))

    def forget_keys(self) -> None:
        """Drop the key cache (after a key is revoked)."""
        self._write_keys.clear()

    async def write_access(self, key: str | None, *, count: bool = True) -> WriteAccess:
        """The key's access; ``count`` takes one request from its rate limit (once per
        request: a key checked before the body was read is not counted again)."""
        if not key:
            raise Unauthorized("a write key is required: HTTP Basic username, or `writeKey` in the body")
        key_hash = hash_key(key)
        if count and self.limiter is not None and (wait := self.limiter.admit(key_hash)):
            raise RateLimited(f"this write key sent more than its rate limit; retry in {wait} s", retry_after=wait)
        cached = self._write_keys.get(key_hash)
        # A short cache: revocation takes effect within 5 s on other processes.
        if cached is not None and cached[1] > time.monotonic():
            self.on_used(key_hash)
            return cached[0]
        credential = await self.catalog.credential(key_hash)
        if credential is not None and credential.kind == "admin":
            # An admin token with the `ingest` scope sends as its workspace's default source.
            ingests = "ingest" in credential.scopes
            credential = msgspec.structs.replace(credential, source=DEFAULT_SOURCE) if ingests else None
        if credential is None or credential.source is None:
            raise Unauthorized("the write key is not valid")
        try:
            source = await self.catalog.source(credential.workspace, credential.source)
        except NotFound:
            raise Unauthorized(
                f"this admin token ingests as source {credential.source!r}, which workspace "
                f"{credential.workspace!r} does not have: add it (`POST /v1/sources`)"
            ) from None
        access = WriteAccess(credential, source)
        self._write_keys[key_hash] = (access, time.monotonic() + 5.0)
        self.on_used(key_hash)
        return access

    async def ingest_body(self, body: bytes, *, message_type: str | None, basic_key: str | None) -> IngestResult:
        """One HTTP request: a single message (``message_type`` set) or a batch."""
        probe = probe_object(body)
        access = await self.write_access(basic_key or probe.write_key, count=basic_key is None)
        received_at = self.clock()
        if message_type is not None:
            return await self.ingest_items([body], access=access, received_at=received_at, message_type=message_type)
        try:
            envelope = _batch.decode(body)
        except msgspec.ValidationError as error:
            raise InvalidInput(
                f"a batch body needs a `batch` array of messages ({error})", code="invalid_body"
            ) from None
        except RecursionError:
            raise MalformedBody("the body is nested too deeply") from None
        if len(envelope.batch) > MAX_BATCH_EVENTS:
            raise LimitExceeded(
                f"batch holds {len(envelope.batch)} messages; the limit is {MAX_BATCH_EVENTS}", limit=MAX_BATCH_EVENTS
            )
        batch_fields = Envelope(context=envelope.context, integrations=envelope.integrations, sent_at=envelope.sent_at)
        return await self.ingest_items(
            envelope.batch,
            access=access,
            received_at=received_at,
            envelope=batch_fields if batch_fields != EMPTY_ENVELOPE else EMPTY_ENVELOPE,
        )

    def prepare(
        self,
        items: Sequence[bytes | msgspec.Raw],
        *,
        source: Source,
        received_at: datetime,
        message_type: str | None = None,
        envelope: Envelope = EMPTY_ENVELOPE,
        default_channel: str | None = None,
    ) -> tuple[list[Event], list[Rejection]]:
        events: list[Event] = []
        rejections: list[Rejection] = []
        channel = default_channel or source.default_channel
        for index, raw in enumerate(items):
            outcome = normalize_or_reject(
                raw,
                index=index,
                message_type=message_type,
                envelope=envelope,
                received_at=received_at,
                default_channel=channel,
                source=source.name,
                new_message_id=self.new_message_id,
            )
            if isinstance(outcome, Event):
                events.append(outcome)
            else:
                rejections.append(outcome)
        return events, rejections

    async def ingest_items(
        self,
        items: Sequence[bytes | msgspec.Raw],
        *,
        access: WriteAccess,
        received_at: datetime,
        message_type: str | None = None,
        envelope: Envelope = EMPTY_ENVELOPE,
        default_channel: str | None = None,
    ) -> IngestResult:
        events, rejections = self.prepare(
            items,
            source=access.source,
            received_at=received_at,
            message_type=message_type,
            envelope=envelope,
            default_channel=default_channel,
        )
        result = await self.append(access.source, events, rejections, received_at)
        self.on_result(default_channel or access.source.default_channel, result, rejections)
        return result

    async def append(
        self, source: Source, events: list[Event], rejections: list[Rejection], received_at: datetime
    ) -> IngestResult:
        appended: AppendResult = await self.log.append(
            AppendBatch(
                workspace=source.workspace,
                source=source.name,
                received_ms=int(received_at.timestamp() * 1000),
                events=events,
                rejections=rejections,
            )
        )
        return IngestResult(
            accepted=appended.accepted,
            duplicates=appended.duplicates,
            rejected=[RejectedItem(r.index, r.code, r.reason) for r in rejections],
        )

    async def resubmit(self, workspace: str, entry_id: int, corrected: bytes | None) -> IngestResult:
        """Run a quarantined message (or its corrected body) through validation again.
        Valid: appended and the entry marked resubmitted, in one transaction."""
        entry = await self.log.quarantine_entry(workspace, entry_id)
        if entry.status != "open":  # before validating: a resolved entry's stored body is moot
            raise Conflict(f"quarantine entry {entry_id} is already {entry.status}")
        try:
            source = await self.catalog.source(workspace, entry.source)
        except NotFound:
            source = Source(workspace=workspace, name=entry.source, default_channel="other", created_at="")
        received_at = datetime.fromtimestamp(entry.received_ms / 1000, UTC)
        body = corrected if corrected is not None else entry.body
        events, rejections = self.prepare([body], source=source, received_at=received_at)
        if rejections:
            raise InvalidInput(
                f"the message is still invalid: {rejections[0].reason}", code=rejections[0].code, entry=entry_id
            )
        appended = await self.log.resolve_quarantined(
            workspace, entry_id, event=events[0], resolved_ms=int(self.clock().timestamp() * 1000)
        )
        return IngestResult(accepted=appended.accepted, duplicates=appended.duplicates, rejected=[])

    async def discard(self, workspace: str, entry_id: int) -> None:
        await self.log.resolve_quarantined(
            workspace, entry_id, event=None, resolved_ms=int(self.clock().timestamp() * 1000)
        )


def rejected_single(result: IngestResult) -> dict[str, Any] | None:
    """For single-message endpoints: the error body when the message was refused."""
    if not result.rejected:
        return None
    item = result.rejected[0]
    return {"code": item.code, "message": item.reason, "quarantined": True}
