"""Next-best-action over HTTP (admin token; docs/decisions.md): ``POST /v1/decide``,
the action catalogue (``/v1/actions``: deploy, validate, show, schema, pause,
resume), what the model learned (``/v1/actions/stats``) and a customer's interests."""

from __future__ import annotations

from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from polku.core.action_spec import catalogue_schema, parse_catalogue
from polku.core.errors import LimitExceeded, MalformedBody, NotFound
from polku.core.events import format_millis
from polku.engine.action_admin import check_catalogue, deploy_catalogue, learned
from polku.engine.decision_service import CATALOGUE_ID, DecisionService, parse_request
from polku.engine.worker import wall_clock_ms
from polku.ports import JourneyStatus
from polku.web.auth import admin_access
from polku.web.journey_routes import _read_document
from polku.web.profile_routes import _customer, _profiles
from polku.web.responses import json_response
from polku.web.services import services

MAX_DECIDE_BYTES: Final = 16 * 1024
SCHEMA: Final = catalogue_schema()


def decision_service(request: Request) -> DecisionService:
    found: DecisionService | None = getattr(request.app.state, "decisions", None)
    if found is None:
        found = DecisionService(services(request).catalog, services(request).log, _profiles(request).run, wall_clock_ms)
        request.app.state.decisions = found
    return found


async def decide(request: Request) -> Response:
    found = services(request)
    credential = await admin_access(request, found.catalog)
    body = await request.body()
    if len(body) > MAX_DECIDE_BYTES:
        raise LimitExceeded(f"a decision request is at most {MAX_DECIDE_BYTES} bytes", limit=MAX_DECIDE_BYTES)
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError as error:
        raise MalformedBody(f"the body is not JSON: {error}") from None
    except RecursionError:
        raise MalformedBody("the body is nested too deeply") from None
    call = parse_request(credential.workspace, data)
    runtime = await _profiles(request).runtime(credential.workspace)
    return json_response(await decision_service(request).decide(runtime, call))


async def actions(request: Request) -> Response:
    """``GET`` the current catalogue, ``PUT`` a new version."""
    catalog = services(request).catalog
    credential = await admin_access(request, catalog)
    workspace = credential.workspace
    if request.method == "GET":
        stored = await catalog.definition("actions", workspace, CATALOGUE_ID)
        spec = parse_catalogue(stored.body)
        return json_response(
            {
                "version": stored.version,
                "status": stored.status,
                "deployed_at": stored.deployed_at,
                "versions": list(stored.versions),
                "actions": [
                    {"id": a.id, "name": a.name, "channels": a.channels, "purpose": a.purpose} for a in spec.actions
                ],
                "body": stored.body,
            }
        )
    body = await _read_document(request)
    if request.query_params.get("dry_run", "").lower() in ("1", "true", "yes"):
        catalogue = await check_catalogue(catalog, workspace, body)
        return json_response({"valid": True, "dry_run": True, "actions": len(catalogue.actions)})
    version, created = await deploy_catalogue(catalog, workspace, body, format_millis(wall_clock_ms()))
    decision_service(request).forget(workspace)
    return json_response({"version": version, "created": created}, status=201 if created else 200)


async def validate_actions(request: Request) -> Response:
    catalog = services(request).catalog
    credential = await admin_access(request, catalog)
    catalogue = await check_catalogue(catalog, credential.workspace, await _read_document(request))
    return json_response({"valid": True, "actions": len(catalogue.actions)})


async def actions_schema(request: Request) -> Response:
    await admin_access(request, services(request).catalog)
    return json_response(SCHEMA)


async def _status(request: Request, status: JourneyStatus) -> Response:
    catalog = services(request).catalog
    credential = await admin_access(request, catalog)
    stored = await catalog.set_definition_status(
        "actions",
        credential.workspace,
        CATALOGUE_ID,
        status,
        format_millis(wall_clock_ms()),
    )
    decision_service(request).forget(credential.workspace)
    return json_response({"version": stored.current, "status": stored.status})


async def pause_actions(request: Request) -> Response:
    return await _status(request, "paused")


async def resume_actions(request: Request) -> Response:
    return await _status(request, "active")


async def action_stats(request: Request) -> Response:
    catalog = services(request).catalog
    credential = await admin_access(request, catalog)
    workspace = credential.workspace
    try:
        catalogue = await decision_service(request).catalogue(workspace)
    except NotFound:
        catalogue = None
    result: dict[str, Any] = await _profiles(request).run(lambda views: learned(views.reports, workspace, catalogue))
    return json_response(result)


async def interests(request: Request) -> Response:
    workspace, runtime, customer_id = await _customer(request)
    now = wall_clock_ms()
    return json_response(
        await _profiles(request).run(lambda views: views.interests(workspace, runtime, customer_id, now))
    )


routes = [
    Route("/v1/decide", decide, methods=["POST"]),
    Route("/v1/actions", actions, methods=["GET", "PUT"]),
    Route("/v1/actions/validate", validate_actions, methods=["POST"]),
    Route("/v1/actions/schema", actions_schema, methods=["GET"]),
    Route("/v1/actions/stats", action_stats, methods=["GET"]),
    Route("/v1/actions/pause", pause_actions, methods=["POST"]),
    Route("/v1/actions/resume", resume_actions, methods=["POST"]),
    Route("/v1/profiles/{customer_id}/interests", interests, methods=["GET"]),
]
