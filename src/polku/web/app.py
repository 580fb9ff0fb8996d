"""The ASGI application: ``create_app(settings)`` wires adapters, engine and routes."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from polku.adapters.sqlite import SqliteCatalog, SqliteEventLog
from polku.config import Settings
from polku.core.errors import PolkuError
from polku.dashboard.routes import build_dashboard, dashboard_routes
from polku.engine.ingest import Ingestor
from polku.engine.setup import NewKey, bootstrap
from polku.web import (
    admin_routes,
    analytics_routes,
    decision_routes,
    delivery_routes,
    ingest_routes,
    journey_routes,
    overview_routes,
    profile_routes,
    survey_routes,
)
from polku.web.children import analytics_child, dispatcher_child, processor_child
from polku.web.errors import http_error, polku_error, server_error
from polku.web.inflight import InflightBytesLimit
from polku.web.metrics import Metrics
from polku.web.openapi import build_openapi
from polku.web.responses import json_response
from polku.web.services import Services, services

log = logging.getLogger("polku")


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    found = services(request)
    if not found.ready:
        return json_response({"code": "not_ready", "message": "the store is not open yet"}, status=503)
    return json_response({"status": "ready", "pending_events": found.log.pending_events()})


async def metrics(request: Request) -> Response:
    return Response(generate_latest(services(request).metrics.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: Settings, *, on_keys: Callable[[list[NewKey]], None] = lambda keys: None) -> Starlette:
    """``on_keys`` receives the keys created at startup (to print them once)."""
    holder: dict[str, Any] = {}
    metric_set = Metrics(pending=lambda: holder["log"].pending_events() if "log" in holder else 0)
    event_log = SqliteEventLog(
        settings.data_dir,
        synchronous=settings.synchronous,
        max_pending_events=settings.max_pending_events,
        on_commit=metric_set.observe_commit,
    )
    holder["log"] = event_log
    catalog = SqliteCatalog(settings.data_dir, synchronous=settings.synchronous)
    ingestor = Ingestor(event_log, catalog, on_result=metric_set.observe_result)
    state = Services(settings=settings, log=event_log, catalog=catalog, ingestor=ingestor, metrics=metric_set)
    profiles = profile_routes.ProfileService(settings.data_dir, catalog)
    # The processor writes survey links; it learns the server's address from its environment.
    os.environ["POLKU_PUBLIC_URL"] = settings.public_url or f"http://{settings.host}:{settings.port}"
    processor = processor_child(settings.data_dir) if settings.processor else None
    dispatcher = dispatcher_child(settings.data_dir) if settings.dispatcher else None
    # The analytics feed follows the processor: without it, there is nothing to feed.
    analytics = analytics_child(settings.data_dir) if settings.analytics and settings.processor else None
    openapi = build_openapi()

    async def openapi_json(request: Request) -> Response:
        return json_response(openapi)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await catalog.start()
        await event_log.start()
        created = await bootstrap(catalog, write_key=settings.write_key, admin_token=settings.admin_token)
        on_keys(created)
        if processor is not None:
            await processor.start()
        if dispatcher is not None:
            await dispatcher.start()
        if analytics is not None:
            await analytics.start()
        state.ready = True
        log.info(
            "polku ready", extra={"data_dir": str(settings.data_dir), "host": settings.host, "port": settings.port}
        )
        try:
            yield
        finally:
            state.ready = False
            if analytics is not None:
                await analytics.stop()
            if dispatcher is not None:
                await dispatcher.stop()
            if processor is not None:
                await processor.stop()
            profiles.close()
            await event_log.close()
            await catalog.close()

    app = Starlette(
        routes=[
            *ingest_routes.routes,
            *admin_routes.routes,
            *profile_routes.routes,
            *journey_routes.routes,
            *survey_routes.routes,
            *analytics_routes.routes,
            *decision_routes.routes,
            *delivery_routes.routes,
            *overview_routes.routes,
            *dashboard_routes(),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
        ],
        exception_handlers={PolkuError: polku_error, HTTPException: http_error, Exception: server_error},
        middleware=[
            # Browser SDKs (analytics.js) post from any origin. Credentials travel in
            # headers or bodies, never cookies, so allowing every origin grants nothing.
            Middleware(
                CORSMiddleware,
                allow_origins=["*"],
                allow_methods=["GET", "POST", "PUT", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "Content-Encoding"],
                max_age=86400,
            ),
            Middleware(InflightBytesLimit),
        ],
        lifespan=lifespan,
    )
    app.state.services = state
    app.state.metrics = metric_set
    app.state.profiles = profiles
    app.state.dashboard = build_dashboard(settings.data_dir)
    return app
