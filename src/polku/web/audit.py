"""The audit log of admin actions over HTTP: the middleware that records each one
after its answer, and ``GET /v1/audit`` (docs/security.md, "Audit log").

``admin_access`` (and the dashboard's session check) leave the credential they
accepted in the request's scope; the middleware records the request once its
answer has gone out, with the status it had. A request no admin credential was
accepted for (ingestion with a write key, a refused token) is not an admin action."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from polku.core.audit import MAX_ACTION_CHARS, MAX_AGENT_CHARS, MAX_AUDIT_PAGE, AuditEntry, actor_of, is_audited
from polku.core.events import format_millis
from polku.core.workspace import Credential
from polku.web.admin_routes import _int_param
from polku.web.auth import CREDENTIAL_KEY, admin_access
from polku.web.responses import json_response
from polku.web.services import services

log = logging.getLogger("polku.audit")
AUDIT_ACTION_KEY = "polku.audit_action"
"""A handler may name its action itself (an erasure: not by the erased person's id)."""


class AuditTrail:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_audited(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            credential: Credential | None = scope.get(CREDENTIAL_KEY)
            if credential is not None:
                await record(scope, credential, status)


async def record(scope: Scope, credential: Credential, status: int) -> None:
    headers = dict(scope.get("headers") or [])
    agent = headers.get(b"user-agent", b"").decode("latin-1")[:MAX_AGENT_CHARS] or None
    client = scope.get("client")
    entry = AuditEntry(
        workspace=credential.workspace,
        at=format_millis(int(time.time() * 1000)),
        actor=actor_of(credential.key_hash, credential.label),
        action=(scope.get(AUDIT_ACTION_KEY) or f"{scope['method']} {scope['path']}")[:MAX_ACTION_CHARS],
        status=status,
        address=client[0] if client else None,
        user_agent=agent,
    )
    try:
        await scope["app"].state.services.catalog.record_audit(entry)
    except Exception:  # the action happened: say loudly that its record did not
        log.exception("the audit record of %s by %s was not written", entry.action, entry.actor)


async def list_audit(request: Request) -> Response:
    credential = await admin_access(request, services(request).catalog)
    after_id = _int_param(request, "cursor", 0, 0, 2**62)
    limit = _int_param(request, "limit", 100, 1, MAX_AUDIT_PAGE)
    entries = await services(request).catalog.audit_entries(credential.workspace, after_id=after_id, limit=limit + 1)
    more = len(entries) > limit
    entries = entries[:limit]
    body: dict[str, Any] = {
        "entries": [_entry_json(entry) for entry in entries],
        "next_cursor": entries[-1].id if more else None,
    }
    return json_response(body)


def _entry_json(entry: AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at,
        "actor": entry.actor,
        "action": entry.action,
        "status": entry.status,
        "address": entry.address,
        "user_agent": entry.user_agent,
    }


routes = [Route("/v1/audit", list_audit, methods=["GET"])]
