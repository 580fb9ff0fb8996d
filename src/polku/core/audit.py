"""The audit log of admin actions (docs/security.md, "Audit log"): who (which admin
token), what (method and path), when, from where (the client's address) and how it
ended (the HTTP status). Pure: what is recorded and how it reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

MAX_AUDIT_PAGE: Final = 1000
MAX_AGENT_CHARS: Final = 200
MAX_ACTION_CHARS: Final = 500


class AuditEntry(msgspec.Struct, kw_only=True, frozen=True):
    id: int = 0
    """Set by the catalog: ascending in record order."""
    workspace: str
    at: str
    """UTC, ISO 8601 (milliseconds)."""
    actor: str
    """The admin token: ``admin:<first 12 hex of its hash>`` and its label."""
    action: str
    """``METHOD /path`` (no query string: it may hold personal data)."""
    status: int
    address: str | None = None
    user_agent: str | None = None


def is_audited(method: str, path: str) -> bool:
    """Every change an admin token makes, and the reads that hand personal data out
    whole (the export)."""
    return method not in ("GET", "HEAD", "OPTIONS") or path.endswith("/export")


def actor_of(key_hash: str, label: str) -> str:
    return f"admin:{key_hash[:12]}" + (f" ({label})" if label else "")


AUDIT_COLUMNS: Final = "workspace, at, actor, action, status, address, user_agent"
"""The stored columns after ``id``, in this order (both catalogs' tables)."""


def audit_row(entry: AuditEntry) -> tuple[object, ...]:
    return (entry.workspace, entry.at, entry.actor, entry.action, entry.status, entry.address, entry.user_agent)


def audit_entry(row: Sequence[Any]) -> AuditEntry:
    entry_id, workspace, at, actor, action, status, address, user_agent = row
    return AuditEntry(
        id=int(entry_id),
        workspace=str(workspace),
        at=str(at),
        actor=str(actor),
        action=str(action),
        status=int(status),
        address=None if address is None else str(address),
        user_agent=None if user_agent is None else str(user_agent),
    )
