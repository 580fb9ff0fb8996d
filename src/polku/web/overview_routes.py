"""``GET /v1/overview`` (admin token): the live overview of the workspace — event
rate by channel, people, processing lag, quarantine, deliveries (engine/overview.py).
The dashboard's first page polls the same reads every two seconds."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from polku.engine.overview import overview, people
from polku.engine.profile_views import ProfileViews
from polku.engine.worker import wall_clock_ms
from polku.web.auth import admin_access
from polku.web.profile_routes import ProfileService, _profiles
from polku.web.responses import json_response
from polku.web.services import services

PEOPLE_TTL_S: Final = 10.0
"""Counting customers reads an index of every profile: once per ten seconds is live
enough for a tile, and keeps a page polled every two seconds cheap."""
_people_cache: dict[tuple[str, str], tuple[float, dict[str, int]]] = {}


async def read_overview(profiles: ProfileService, data_dir: Path, workspace: str) -> dict[str, Any]:
    now = wall_clock_ms()
    key = (str(data_dir), workspace)
    cached = _people_cache.get(key)
    fresh = cached[1] if cached is not None and time.monotonic() - cached[0] < PEOPLE_TTL_S else None

    def read(views: ProfileViews) -> dict[str, Any]:
        state, log = views.sqlite("the overview")
        counts = fresh if fresh is not None else people(state, workspace)
        return overview(
            log.connection,
            state,
            data_dir,
            workspace,
            now,
            checkpoint=views.state.checkpoint(),
            log_end=log.last_seq(),
            people_counts=counts,
        )

    found = await profiles.run(read)
    if fresh is None:
        _people_cache[key] = (time.monotonic(), found["people"])
    return found


async def get_overview(request: Request) -> Response:
    found = services(request)
    credential = await admin_access(request, found.catalog)
    return json_response(await read_overview(_profiles(request), found.settings.data_dir, credential.workspace))


routes = [Route("/v1/overview", get_overview, methods=["GET"])]
