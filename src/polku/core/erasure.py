"""Erasure, the right to be forgotten (docs/privacy.md, "Erasing a person").

An erasure travels through the log as a request (an internal event naming the
customer), so it takes its place in the person's order: what they did before it is
erased with them, and the processor — the state's only writer — erases them from its
state and its caches in a commit of its own. The processor records the erasure's
**scope** (the person's customer ids, identifiers, log positions and survey
invitations) with that commit; the owners of the other stores (the log, the
analytics store) then remove what the scope names and mark their stage done. Once
every stage is done the scope is wiped, and only the **receipt** remains: when, how
many records each store removed, and whether the person's identifiers are
suppressed — no identifier, no customer id.

Pure: no clock, no store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from typing import Final, Literal
from urllib.parse import quote

import msgspec

ERASURE_EVENT: Final = "Erasure Requested"
"""The name of the request in the log (an internal event of source ``polku``)."""
Stage = Literal["state", "log", "analytics"]
STAGES: Final[tuple[Stage, ...]] = ("state", "log", "analytics")
"""In order: the processor's state (with the request's commit), the log (with the
quarantine, the survey answers, the audit log's paths and the delivery ledger),
then the analytics store (which must not copy again what the log still held)."""
MAX_ERASURE_ID: Final = 64


class ErasureRequest(msgspec.Struct, kw_only=True, frozen=True):
    erasure: str
    customer_id: str
    suppress: bool = False


class ErasureScope(msgspec.Struct, kw_only=True):
    """What one erasure removes, as the processor found it in its state. Personal
    data itself (identifiers), kept only until every stage is done."""

    erasure: str
    workspace: str
    requested_ms: int
    marker_seq: int
    """The request's own position in the log (the log stage removes it too)."""
    customer_ids: list[str]
    """The live id and every id merged into it."""
    identifiers: list[str]
    """``type:value``, as the identity graph holds them."""
    seqs: list[int]
    """The log positions of the person's events (their timeline)."""
    invitations: list[str] = []
    identity_changes: list[int] = []
    """Rows of ``identity_changes`` that name only ``customer_ids`` (deleted)."""
    shared_changes: list[int] = []
    """Rows that name someone else too (kept, with this person's ids replaced)."""
    outbox: list[int] = []
    """Rows of the log outbox about one of ``customer_ids``, not forwarded yet."""
    suppress: bool = False
    state_ms: int = 0
    """When the processor erased the state (set with its commit)."""


class ErasureReceipt(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What remains of an erasure: no personal data."""

    id: str
    workspace: str
    status: str
    """``erasing`` until every stage is done, then ``erased``."""
    requested_ms: int
    stages: dict[str, int | None]
    """Stage → when it was done (ms), ``None`` while pending."""
    removed: dict[str, int]
    """Records removed, per store and table (``state.profiles``, ``log.events`` …)."""
    customers: int = 0
    """How many customer ids the person had (merged ones count)."""
    suppressed: int = 0
    """Identifiers kept as hashes so that they are not taken in again."""


def erasure_request(body: dict[str, object] | None) -> ErasureRequest | None:
    """The request an internal event's properties carry, or ``None`` if malformed."""
    if not isinstance(body, dict):
        return None
    erasure = body.get("erasure")
    customer_id = body.get("customer_id")
    suppress = body.get("suppress", False)
    if not isinstance(erasure, str) or not 0 < len(erasure) <= MAX_ERASURE_ID:
        return None
    if not isinstance(customer_id, str) or not customer_id or not isinstance(suppress, bool):
        return None
    return ErasureRequest(erasure=erasure, customer_id=customer_id, suppress=suppress)


def identity_hash(workspace: str, value: str) -> str:
    """The hash an erased customer id, or a suppressed identifier, is remembered by:
    enough to recognise it when it comes again, not to read it back. (A hash of a
    known email address can be checked against the list — which is what a
    suppression list is for.)"""
    return hashlib.sha256(f"{workspace}\x00{value}".encode()).hexdigest()


FOREVER: Final = 1 << 62
"""``until_seq`` of what is kept out for good."""


def keep_out(scope: ErasureScope) -> list[tuple[str, str, int]]:
    """(hash, kind, until_seq) that keep an erased person out of the state: their
    customer ids for good (a delivery result that comes back later is theirs); their
    identifiers for good when suppressed, else only in events from before the
    request (on the scale-out another partition's worker may meet one of those after
    the erasure; later events are a returning person's)."""
    workspace = scope.workspace
    found = [(identity_hash(workspace, customer_id), "customer", FOREVER) for customer_id in scope.customer_ids]
    until = FOREVER if scope.suppress else scope.marker_seq
    kind = "suppressed" if scope.suppress else "identifier"
    found += [(identity_hash(workspace, identifier), kind, until) for identifier in scope.identifiers]
    return found


def identifier_values(identifiers: list[str]) -> list[str]:
    """The values of ``type:value`` identifiers, as events carry them (longest
    first; values shorter than 3 characters are left out: searching raw bodies for
    them would match unrelated text)."""
    values = {identifier.partition(":")[2] for identifier in identifiers}
    return sorted((value for value in values if len(value) >= 3), key=lambda value: (-len(value), value))


REDACTED: Final = "[erased]"


def quoted_forms(values: list[str]) -> list[str]:
    """How a value stands as a whole JSON string in a raw body, lower case (with its
    non-ASCII characters as they are, and escaped): what the quarantine is searched
    for, so that "ann" finds ``"userId": "ann"`` and not ``"channel"``."""
    found: dict[str, None] = {}
    for value in values:
        found[json.dumps(value, ensure_ascii=False).lower()] = None
        found[json.dumps(value).lower()] = None
    return list(found)


def redact_action(action: str, named: Collection[str]) -> str:
    """An audit record's ``METHOD /path`` with every path segment that is one of
    ``named`` (ids, identifier values, as sent or percent-encoded) made ``[erased]``;
    other segments — another person's, a route's — stay as they were."""
    method, _, path = action.partition(" ")
    segments = [REDACTED if segment in named else segment for segment in path.split("/")]
    return f"{method} {'/'.join(segments)}"


def path_forms(values: list[str]) -> list[str]:
    """How a value can stand in a request path: as it is and percent-encoded."""
    return list(dict.fromkeys(form for value in values for form in (value, quote(value, safe=""), quote(value))))


def receipt(
    *,
    erasure: str,
    workspace: str,
    requested_ms: int,
    stages: dict[str, int | None],
    removed: dict[str, int],
    customers: int,
    suppressed: int,
) -> ErasureReceipt:
    done = all(stages.get(stage) is not None for stage in STAGES)
    return ErasureReceipt(
        id=erasure,
        workspace=workspace,
        status="erased" if done else "erasing",
        requested_ms=requested_ms,
        stages={stage: stages.get(stage) for stage in STAGES},
        removed=dict(sorted(removed.items())),
        customers=customers,
        suppressed=suppressed,
    )
