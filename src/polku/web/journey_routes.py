"""Journeys over HTTP (admin token): deploy (versioned), validate, list, show,
pause / resume / archive, stats; and per customer, their journeys and messages
(docs/journeys.md). Definitions live in the catalog; what the processor did with
them is read from its state (through ``ProfileService``'s read-only connections)."""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from polku.core.errors import InvalidInput, LimitExceeded
from polku.core.events import format_millis
from polku.core.journey_spec import journey_schema
from polku.core.journey_stats import summarize
from polku.engine.journey_admin import (
    check_for_workspace,
    journey_detail,
    journey_name,
    journey_summary,
    set_status,
)
from polku.engine.journey_reports import customer_journeys, customer_messages, journey_totals, stats_rows
from polku.engine.profile_views import ProfileViews
from polku.engine.worker import wall_clock_ms
from polku.ports import JourneyStatus
from polku.web.admin_routes import _int_param
from polku.web.auth import admin_access
from polku.web.profile_routes import _customer, _profiles
from polku.web.responses import json_response
from polku.web.services import services

MAX_JOURNEY_BYTES: Final = 1 << 20
CONTENT_TYPES: Final = frozenset(
    {"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "application/json", "text/plain"}
)
SCHEMA: Final = journey_schema()


async def _read_document(request: Request) -> bytes:
    """The body: YAML or JSON text of at most 1 MB."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type and media_type not in CONTENT_TYPES:
        raise InvalidInput(
            f"Content-Type {media_type!r}: send a journey as application/yaml, text/yaml or application/json",
            field="content-type",
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_JOURNEY_BYTES:
            raise LimitExceeded(
                f"a journey document is at most {MAX_JOURNEY_BYTES} bytes (1 MB)", limit=MAX_JOURNEY_BYTES
            )
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise InvalidInput("the body is empty; send the journey document", field="body")
    return body


async def put_journey(request: Request) -> Response:
    catalog = services(request).catalog
    credential = await admin_access(request, catalog)
    journey_id = request.path_params["journey_id"]
    body = await _read_document(request)
    _, version = await check_for_workspace(catalog, credential.workspace, body, journey_id=journey_id)
    if request.query_params.get("dry_run", "").lower() in ("1", "true", "yes"):
        return json_response({"id": journey_id, "valid": True, "dry_run": True, "version": version, "created": False})
    stored, created = await catalog.deploy_journey(
        credential.workspace, journey_id, body.decode(), format_millis(wall_clock_ms())
    )
    journey = await catalog.journey(credential.workspace, journey_id)
    return json_response(
        {"id": journey_id, "version": stored, "created": created, "status": journey.status},
        status=201 if created else 200,
    )


async def validate_journey(request: Request) -> Response:
    catalog = services(request).catalog
    credential = await admin_access(request, catalog)
    body = await _read_document(request)
    journey, _ = await check_for_workspace(catalog, credential.workspace, body, journey_id=None)
    return json_response({"valid": True, "id": journey.id})


async def get_schema(request: Request) -> Response:
    await admin_access(request, services(request).catalog)
    return json_response(SCHEMA)


async def list_journeys(request: Request) -> Response:
    catalog = services(request).catalog
    credential = await admin_access(request, catalog)
    workspace = credential.workspace
    stored = await catalog.journeys(workspace)
    totals = await _profiles(request).run(lambda views: journey_totals(views.reports, workspace))
    items = []
    for journey in stored:
        counts = totals.get(journey.id, {"entered": 0, "active": 0, "goal": 0})
        items.append({**journey_summary(journey), "name": journey_name(journey), **counts})
    return json_response({"journeys": items})


async def get_journey(request: Request) -> Response:
    catalog = services(request).catalog
    credential = await admin_access(request, catalog)
    return json_response(journey_detail(await catalog.journey(credential.workspace, request.path_params["journey_id"])))


async def journey(request: Request) -> Response:
    """``GET`` shows a journey, ``PUT`` deploys one (one route, so that ``Allow``
    lists both)."""
    return await (put_journey(request) if request.method == "PUT" else get_journey(request))


async def get_version(request: Request) -> Response:
    catalog = services(request).catalog
    credential = await admin_access(request, catalog)
    text = request.path_params["version"]
    if not text.isdigit() or len(text) > 9:
        raise InvalidInput(f"version {text[:20]!r} is not a version number", field="version")
    version = int(text)
    found = await catalog.journey(credential.workspace, request.path_params["journey_id"], version)
    return json_response(journey_detail(found))


async def _set_status(request: Request, status: JourneyStatus) -> Response:
    catalog = services(request).catalog
    credential = await admin_access(request, catalog)
    journey_id = request.path_params["journey_id"]
    updated = await set_status(catalog, credential.workspace, journey_id, status, format_millis(wall_clock_ms()))
    return json_response(journey_summary(updated))


async def pause_journey(request: Request) -> Response:
    return await _set_status(request, "paused")


async def resume_journey(request: Request) -> Response:
    return await _set_status(request, "active")


async def archive_journey(request: Request) -> Response:
    return await _set_status(request, "archived")


async def journey_stats(request: Request) -> Response:
    catalog = services(request).catalog
    credential = await admin_access(request, catalog)
    workspace = credential.workspace
    journey = await catalog.journey(workspace, request.path_params["journey_id"])
    rows = await _profiles(request).run(lambda views: stats_rows(views.reports, workspace, journey.id))
    return json_response({**journey_summary(journey), **summarize(rows)})


async def profile_journeys(request: Request) -> Response:
    workspace, _, customer_id = await _customer(request)
    limit = _int_param(request, "limit", 100, 1, 1000)
    journey = request.query_params.get("journey")

    def read(views: ProfileViews) -> dict[str, Any]:
        profile = views.state.profile(workspace, customer_id)
        accounts = list(profile.accounts) if profile is not None else []
        return customer_journeys(views.reports, workspace, customer_id, accounts, journey=journey, limit=limit)

    return json_response(await _profiles(request).run(read))


async def profile_messages(request: Request) -> Response:
    workspace, _, customer_id = await _customer(request)
    limit = _int_param(request, "limit", 100, 1, 1000)
    journey = request.query_params.get("journey")
    now = wall_clock_ms()
    return json_response(
        await _profiles(request).run(
            lambda views: customer_messages(views.reports, workspace, customer_id, now, journey=journey, limit=limit)
        )
    )


routes = [
    Route("/v1/journeys", list_journeys, methods=["GET"]),
    Route("/v1/journeys/schema", get_schema, methods=["GET"]),
    Route("/v1/journeys/validate", validate_journey, methods=["POST"]),
    Route("/v1/journeys/{journey_id}", journey, methods=["GET", "PUT"]),
    Route("/v1/journeys/{journey_id}/versions/{version}", get_version, methods=["GET"]),
    Route("/v1/journeys/{journey_id}/pause", pause_journey, methods=["POST"]),
    Route("/v1/journeys/{journey_id}/resume", resume_journey, methods=["POST"]),
    Route("/v1/journeys/{journey_id}/archive", archive_journey, methods=["POST"]),
    Route("/v1/journeys/{journey_id}/stats", journey_stats, methods=["GET"]),
    Route("/v1/profiles/{customer_id}/journeys", profile_journeys, methods=["GET"]),
    Route("/v1/profiles/{customer_id}/messages", profile_messages, methods=["GET"]),
]
