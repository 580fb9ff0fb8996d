"""The ASGI application: ``create_app(settings)`` wires adapters, engine and routes."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from polku.adapters.postgres.catalog import PostgresCatalog
from polku.adapters.postgres.schema import redact
from polku.adapters.sqlite import SqliteCatalog, SqliteEventLog
from polku.config import Settings
from polku.core.errors import PolkuError
from polku.core.rate_limit import KeyRateLimiter
from polku.dashboard.routes import build_dashboard, dashboard_routes
from polku.engine.ingest import Ingestor
from polku.engine.key_usage import KeyUsage
from polku.engine.profile_views import ProfileViews, embedded_only
from polku.engine.scale_worker import migrate_all
from polku.engine.setup import NewKey, bootstrap
from polku.ports import Catalog, EventLog
from polku.web import (
    admin_routes,
    analytics_routes,
    audit,
    decision_routes,
    delivery_routes,
    ingest_routes,
    journey_routes,
    overview_routes,
    profile_routes,
    survey_routes,
)
from polku.web.audit import AuditTrail
from polku.web.children import SupervisedChild, analytics_child, dispatcher_child, processor_child
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


@dataclass
class Backends:
    """The adapters one deployment's API runs on, and the children it supervises."""

    event_log: EventLog
    catalog: Catalog
    open_views: Callable[[], ProfileViews]
    children: list[SupervisedChild]
    prepare: Callable[[], Awaitable[None]]
    """Run first at startup (the scale-out's migrations)."""


def embedded_backends(settings: Settings, metric_set: Metrics) -> Backends:
    event_log = SqliteEventLog(
        settings.data_dir,
        synchronous=settings.synchronous,
        max_pending_events=settings.max_pending_events,
        on_commit=metric_set.observe_commit,
    )
    # The processor writes survey links; it learns the server's address from its environment.
    os.environ["POLKU_PUBLIC_URL"] = settings.public_url or f"http://{settings.host}:{settings.port}"
    children = [processor_child(settings.data_dir)] if settings.processor else []
    if settings.dispatcher:
        children.append(dispatcher_child(settings.data_dir))
    # The analytics feed follows the processor: without it, there is nothing to feed.
    if settings.analytics and settings.processor:
        children.append(analytics_child(settings.data_dir))

    async def nothing() -> None:
        return None

    return Backends(
        event_log=event_log,
        catalog=SqliteCatalog(settings.data_dir, synchronous=settings.synchronous),
        open_views=lambda: ProfileViews.of_files(settings.data_dir),
        children=children,
        prepare=nothing,
    )


def scale_out_backends(settings: Settings) -> Backends:
    """The API role of the scale-out deployment (docs/scale-out.md): events go to the
    stream, the catalog and the reads to PostgreSQL; workers, dispatchers and the
    analytics consumer run as processes of their own."""
    deployment = settings.deployment()
    event_log = deployment.event_log(
        duplicate_window_s=settings.duplicate_window_s, max_pending_events=settings.max_pending_events
    )

    async def migrate() -> None:
        await migrate_all(deployment)

    return Backends(
        event_log=event_log,
        catalog=PostgresCatalog(deployment.store_url, schema=deployment.schema),
        open_views=lambda: ProfileViews.of_store(deployment.store_url, deployment.schema),
        children=[],
        prepare=migrate,
    )


def rate_limiter(per_second: float) -> KeyRateLimiter | None:
    """Per key, per process; bursts of ten seconds' worth (0: none)."""
    return KeyRateLimiter(per_second, max(1.0, 10 * per_second)) if per_second else None


async def not_served(request: Request) -> Response:
    raise embedded_only("the dashboard")


def create_app(settings: Settings, *, on_keys: Callable[[list[NewKey]], None] = lambda keys: None) -> Starlette:
    """``on_keys`` receives the keys created at startup (to print them once)."""
    holder: dict[str, Any] = {}
    metric_set = Metrics(pending=lambda: holder["log"].pending_events() if "log" in holder else 0)
    backends = scale_out_backends(settings) if settings.scale_out else embedded_backends(settings, metric_set)
    event_log, catalog = backends.event_log, backends.catalog
    holder["log"] = event_log
    key_usage = KeyUsage(catalog)
    ingestor = Ingestor(
        event_log,
        catalog,
        on_result=metric_set.observe_result,
        limiter=rate_limiter(settings.write_rate_limit),
        on_used=key_usage.note,
    )
    state = Services(
        settings=settings,
        log=event_log,
        catalog=catalog,
        ingestor=ingestor,
        metrics=metric_set,
        admin_limiter=rate_limiter(settings.admin_rate_limit),
        key_usage=key_usage,
    )
    profiles = profile_routes.ProfileService(backends.open_views, catalog)
    openapi = build_openapi()

    async def openapi_json(request: Request) -> Response:
        return json_response(openapi)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await backends.prepare()
        await catalog.start()
        await event_log.start()
        created = await bootstrap(catalog, write_key=settings.write_key, admin_token=settings.admin_token)
        on_keys(created)
        for child in backends.children:
            await child.start()
        state.ready = True
        where = {"store": redact(settings.store or "")} if settings.scale_out else {"data_dir": str(settings.data_dir)}
        log.info("polku ready", extra={**where, "host": settings.host, "port": settings.port})
        try:
            yield
        finally:
            state.ready = False
            for child in reversed(backends.children):
                await child.stop()
            profiles.close()
            await key_usage.close()
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
            *audit.routes,
            *(dashboard_routes() if not settings.scale_out else [Route("/ui{rest:path}", not_served)]),
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
            Middleware(AuditTrail),
        ],
        lifespan=lifespan,
    )
    app.state.services = state
    app.state.metrics = metric_set
    app.state.profiles = profiles
    if not settings.scale_out:
        app.state.dashboard = build_dashboard(settings.data_dir)
    return app
