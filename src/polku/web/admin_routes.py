"""Reading and managing a workspace (admin token): events, quarantine, config, keys."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from polku.core.errors import Conflict, Forbidden, InvalidInput
from polku.core.events import MESSAGE_TYPES, format_time, parse_time
from polku.core.workspace import ADMIN_SCOPES, KeyKind, check_scopes, grantable, parse_config
from polku.engine.setup import add_key, ensure_source, make_workspace
from polku.engine.views import credential_json, quarantine_json
from polku.ports import EventQuery
from polku.web.auth import admin_access
from polku.web.ingest_routes import read_body
from polku.web.responses import json_response
from polku.web.services import services

MAX_PAGE = 1000


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"query parameter `{name}` must be an integer", field=name) from None
    if not low <= value <= high:
        raise InvalidInput(f"query parameter `{name}` must be between {low} and {high}", field=name)
    return value


def _time_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return int(parse_time(raw, name).timestamp() * 1000)
    except Exception:
        raise InvalidInput(f"query parameter `{name}` must be an ISO 8601 time", field=name) from None


def _text_param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is not None and len(value) > 256:
        raise InvalidInput(f"query parameter `{name}` is longer than 256 characters", field=name)
    return value or None


async def list_events(request: Request) -> Response:
    credential = await admin_access(request, services(request).catalog)
    message_type = _text_param(request, "type")
    if message_type is not None and message_type not in MESSAGE_TYPES:
        raise InvalidInput(f"query parameter `type` must be one of {sorted(MESSAGE_TYPES)}", field="type")
    query = EventQuery(
        workspace=credential.workspace,
        identifier=_text_param(request, "identifier"),
        user_id=_text_param(request, "user_id"),
        anonymous_id=_text_param(request, "anonymous_id"),
        type=message_type,
        name=_text_param(request, "name"),
        channel=_text_param(request, "channel"),
        since_ms=_time_param(request, "since"),
        until_ms=_time_param(request, "until"),
        after_seq=_int_param(request, "cursor", 0, 0, 2**62),
        limit=_int_param(request, "limit", 100, 1, MAX_PAGE),
    )
    page = await services(request).log.query(query)
    return json_response(
        {
            "events": [{"seq": stored.seq, **msgspec.to_builtins(stored.event)} for stored in page.events],
            "next_cursor": page.next_cursor,
        }
    )


async def list_quarantine(request: Request) -> Response:
    credential = await admin_access(request, services(request).catalog)
    status = request.query_params.get("status", "open")
    if status not in ("open", "resubmitted", "discarded", "all"):
        raise InvalidInput("query parameter `status` must be open, resubmitted, discarded or all", field="status")
    after_id = _int_param(request, "cursor", 0, 0, 2**62)
    limit = _int_param(request, "limit", 100, 1, MAX_PAGE)
    entries = await services(request).log.quarantined(
        credential.workspace,
        status=None if status == "all" else status,  # type: ignore[arg-type]
        after_id=after_id,
        limit=limit + 1,
    )
    more = len(entries) > limit
    entries = entries[:limit]
    return json_response(
        {"entries": [quarantine_json(e) for e in entries], "next_cursor": entries[-1].id if more else None}
    )


def _entry_id(request: Request) -> int:
    raw = request.path_params["entry_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise InvalidInput("the quarantine entry id must be a positive integer", field="entry_id")
    return int(raw)


async def get_quarantined(request: Request) -> Response:
    credential = await admin_access(request, services(request).catalog)
    entry = await services(request).log.quarantine_entry(credential.workspace, _entry_id(request))
    return json_response(quarantine_json(entry))


async def resubmit_quarantined(request: Request) -> Response:
    """Body empty: re-validate the stored message (after a config change); a JSON
    message: validate and store that corrected version instead."""
    credential = await admin_access(request, services(request).catalog)
    body = await read_body(request)
    result = await services(request).ingestor.resubmit(
        credential.workspace, _entry_id(request), body if body.strip() else None
    )
    return json_response(result)


async def discard_quarantined(request: Request) -> Response:
    credential = await admin_access(request, services(request).catalog)
    entry_id = _entry_id(request)
    await services(request).ingestor.discard(credential.workspace, entry_id)
    return json_response({"id": entry_id, "status": "discarded"})


async def get_workspace(request: Request) -> Response:
    credential = await admin_access(request, services(request).catalog)
    workspace = await services(request).catalog.workspace(credential.workspace)
    sources = await services(request).catalog.sources(credential.workspace)
    return json_response(
        {
            "id": workspace.id,
            "name": workspace.name,
            "created_at": workspace.created_at,
            "config": workspace.config,
            "sources": [{"name": s.name, "default_channel": s.default_channel} for s in sources],
        }
    )


async def workspace_config(request: Request) -> Response:
    """GET: the stored configuration (to edit and PUT back); PUT: replace it."""
    credential = await admin_access(request, services(request).catalog)
    if request.method == "GET":
        workspace = await services(request).catalog.workspace(credential.workspace)
        return json_response({"config": workspace.config})
    body = await read_body(request)
    # A lost body must not wipe the webhook mappings: clearing them takes an explicit {}.
    config = parse_config(body, filename="request body", allow_empty=False)
    await services(request).catalog.set_config(credential.workspace, config)
    profiles = getattr(request.app.state, "profiles", None)
    if profiles is not None:
        profiles.forget(credential.workspace)
    return json_response({"config": config})


class SourceRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    channel: str


class KeyRequest(msgspec.Struct, forbid_unknown_fields=True):
    kind: Literal["write", "admin"]
    source: str | None = None
    label: str = ""
    scopes: list[str] | None = None
    """Admin tokens: some of read, manage, privacy (default all)."""


def _decode(body: bytes, kind: type[Any]) -> Any:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as error:
        raise InvalidInput(str(error)) from None
    except msgspec.DecodeError as error:
        raise InvalidInput(f"the body is not valid JSON: {error}", code="malformed_json") from None


async def create_source(request: Request) -> Response:
    credential = await admin_access(request, services(request).catalog)
    wanted: SourceRequest = _decode(await read_body(request), SourceRequest)
    catalog = services(request).catalog
    if not await ensure_source(catalog, credential.workspace, wanted.name, wanted.channel):
        raise Conflict(f"source {wanted.name!r} exists; create another key for it with POST /v1/keys")
    key = await add_key(catalog, "write", credential.workspace, wanted.name, label=f"source {wanted.name}")
    return json_response({"created": True, "write_key": key}, status=201)


async def list_keys(request: Request) -> Response:
    credential = await admin_access(request, services(request).catalog)
    kind = request.query_params.get("kind")
    if kind not in (None, "write", "admin"):
        raise InvalidInput("query parameter `kind` must be write or admin", field="kind")
    found = await services(request).catalog.credentials(credential.workspace, kind)  # type: ignore[arg-type]
    return json_response({"keys": [credential_json(c) for c in found]})


async def create_key(request: Request) -> Response:
    credential = await admin_access(request, services(request).catalog)
    wanted: KeyRequest = _decode(await read_body(request), KeyRequest)
    catalog = services(request).catalog
    kind: KeyKind = wanted.kind
    if kind == "write":
        if wanted.source is None:
            raise InvalidInput("a write key needs a `source`", field="source")
        await catalog.source(credential.workspace, wanted.source)
    held = set(credential.scopes)
    scopes: tuple[str, ...]
    if wanted.scopes is None:
        scopes = tuple(scope for scope in ADMIN_SCOPES if scope in held)
    else:
        scopes = check_scopes(wanted.scopes, kind)
        beyond = sorted(set(scopes) - grantable(held))
        if beyond and kind == "admin":
            # No token makes one that can do more than itself.
            raise Forbidden(
                f"this admin token cannot give scopes it does not have: {', '.join(beyond)}", scope=beyond[0]
            )
    key = await add_key(
        catalog,
        kind,
        credential.workspace,
        wanted.source if kind == "write" else None,
        label=wanted.label,
        scopes=scopes,
    )
    return json_response(key, status=201)


class WorkspaceRequest(msgspec.Struct, forbid_unknown_fields=True):
    id: str
    name: str | None = None
    channel: str = "web"
    """The default channel of its ``default`` source."""


async def create_workspace(request: Request) -> Response:
    """A new workspace, with its first admin token and write key (shown once); needs
    the ``workspaces`` scope (docs/security.md, "Workspaces")."""
    await admin_access(request, services(request).catalog)
    wanted: WorkspaceRequest = _decode(await read_body(request), WorkspaceRequest)
    workspace, keys = await make_workspace(services(request).catalog, wanted.id, wanted.name, channel=wanted.channel)
    return json_response(
        {"workspace": {"id": workspace.id, "name": workspace.name, "created_at": workspace.created_at}, "keys": keys},
        status=201,
    )


async def list_workspaces(request: Request) -> Response:
    """Every workspace's id, name and creation time (not their configuration)."""
    await admin_access(request, services(request).catalog)
    found = await services(request).catalog.workspaces()
    return json_response({"workspaces": [{"id": w.id, "name": w.name, "created_at": w.created_at} for w in found]})


async def workspaces_resource(request: Request) -> Response:
    return await (create_workspace(request) if request.method == "POST" else list_workspaces(request))


async def revoke_key(request: Request) -> Response:
    credential = await admin_access(request, services(request).catalog)
    key_id = request.path_params["key_id"]
    if len(key_id) < 8 or not all(c in "0123456789abcdef" for c in key_id):
        raise InvalidInput("a key id is 8-64 lower-case hex characters", field="key_id")
    revoked = await services(request).catalog.revoke_credential(
        credential.workspace, key_id, format_time(datetime.now(UTC))
    )
    services(request).ingestor.forget_keys()
    return json_response(credential_json(revoked))


async def keys(request: Request) -> Response:
    """GET lists, POST creates: one route, so that a 405 names both in `Allow`."""
    return await (create_key if request.method == "POST" else list_keys)(request)


routes = [
    Route("/v1/events", list_events, methods=["GET"]),
    Route("/v1/quarantine", list_quarantine, methods=["GET"]),
    Route("/v1/quarantine/{entry_id}", get_quarantined, methods=["GET"]),
    Route("/v1/quarantine/{entry_id}/resubmit", resubmit_quarantined, methods=["POST"]),
    Route("/v1/quarantine/{entry_id}/discard", discard_quarantined, methods=["POST"]),
    Route("/v1/workspace", get_workspace, methods=["GET"]),
    Route("/v1/workspace/config", workspace_config, methods=["GET", "PUT"]),
    Route("/v1/sources", create_source, methods=["POST"]),
    Route("/v1/keys", keys, methods=["GET", "POST"]),
    Route("/v1/keys/{key_id}", revoke_key, methods=["DELETE"]),
    Route("/v1/workspaces", workspaces_resource, methods=["GET", "POST"]),
]
