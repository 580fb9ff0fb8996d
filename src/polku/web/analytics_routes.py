"""The analyses over HTTP (admin token): ``GET /v1/analytics`` lists them with
their parameters, ``GET /v1/analytics/{name}?…`` runs one (docs/analytics.md)."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from polku.adapters.duckdb import analytics_store
from polku.engine.analytics_registry import analysis_named, describe, parse, run
from polku.engine.profile_views import embedded_only
from polku.web.auth import admin_access
from polku.web.responses import json_response
from polku.web.services import services


async def list_analyses(request: Request) -> Response:
    """The analyses, and how current the store is (``lag``: log events not in it yet)."""
    found = services(request)
    await admin_access(request, found.catalog)
    if found.settings.scale_out:
        raise embedded_only("the analyses (the scale-out's are the Parquet files, docs/parquet.md)")

    def store() -> dict[str, Any]:
        from polku.adapters.sqlite.log_reader import SqliteLogReader

        with analytics_store.reader(found.settings.data_dir) as db:
            current = analytics_store.status(db, found.settings.data_dir)
        log = SqliteLogReader(found.settings.data_dir)
        try:
            end = log.last_seq()
        finally:
            log.close()
        return {**current, "log_end": end, "lag": max(0, end - current["fed_to"])}

    return json_response({"store": await asyncio.to_thread(store), "analyses": describe()})


async def run_analysis(request: Request) -> Response:
    found = services(request)
    credential = await admin_access(request, found.catalog)
    if found.settings.scale_out:
        raise embedded_only("the analyses (the scale-out's are the Parquet files, docs/parquet.md)")
    analysis = analysis_named(request.path_params["name"])
    scope, arguments = parse(analysis, credential.workspace, dict(request.query_params))
    result = await asyncio.to_thread(run, analysis, found.settings.data_dir, scope, arguments)
    return json_response(result)


routes = [
    Route("/v1/analytics", list_analyses, methods=["GET"]),
    Route("/v1/analytics/{name}", run_analysis, methods=["GET"]),
]
