"""Plain-JSON views of stored records, shared by the HTTP API and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from polku.core.events import format_time
from polku.core.workspace import Credential
from polku.ports import QuarantineEntry


def quarantine_json(entry: QuarantineEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "source": entry.source,
        "received_at": format_time(datetime.fromtimestamp(entry.received_ms / 1000, UTC)),
        "code": entry.code,
        "reason": entry.reason,
        "status": entry.status,
        "resolved_at": (
            format_time(datetime.fromtimestamp(entry.resolved_ms / 1000, UTC)) if entry.resolved_ms else None
        ),
        "body": entry.body.decode("utf-8", errors="replace"),
    }


def credential_json(credential: Credential) -> dict[str, Any]:
    return {
        "key_id": credential.key_hash[:12],
        "kind": credential.kind,
        "source": credential.source,
        "label": credential.label,
        "created_at": credential.created_at,
        "revoked_at": credential.revoked_at,
        "last_used_at": credential.last_used_at,
        "scopes": list(credential.scopes) if credential.kind == "admin" else [],
    }
