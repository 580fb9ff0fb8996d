"""The analyses over HTTP (admin token): ``GET /v1/analytics`` lists them with
their parameters, ``GET /v1/analytics/{name}?…`` runs one (docs/analytics.md)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from polku.engine.analytics_registry import analysis_named, describe, parse, run
from polku.web.auth import admin_access
from polku.web.responses import json_response
from polku.web.services import services


async def list_analyses(request: Request) -> Response:
    await admin_access(request, services(request).catalog)
    return json_response({"analyses": describe()})


async def run_analysis(request: Request) -> Response:
    found = services(request)
    credential = await admin_access(request, found.catalog)
    analysis = analysis_named(request.path_params["name"])
    scope, arguments = parse(analysis, credential.workspace, dict(request.query_params))
    result = await asyncio.to_thread(run, analysis, found.settings.data_dir, scope, arguments)
    return json_response(result)


routes = [
    Route("/v1/analytics", list_analyses, methods=["GET"]),
    Route("/v1/analytics/{name}", run_analysis, methods=["GET"]),
]
