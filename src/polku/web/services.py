"""What the routes need, built once per app from ``Settings``."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from polku.config import Settings
from polku.core.rate_limit import KeyRateLimiter
from polku.engine.ingest import Ingestor
from polku.engine.key_usage import KeyUsage
from polku.ports import Catalog, EventLog
from polku.web.metrics import Metrics


@dataclass
class Services:
    settings: Settings
    log: EventLog
    catalog: Catalog
    ingestor: Ingestor
    metrics: Metrics
    admin_limiter: KeyRateLimiter | None = None
    key_usage: KeyUsage | None = None
    ready: bool = False


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found
