"""The reads pages share, each the same engine call the API and the CLI make."""

from __future__ import annotations

import asyncio
from typing import Any

from polku.core.events import format_millis
from polku.dashboard.frame import View
from polku.engine import analytics_registry
from polku.engine.worker import wall_clock_ms
from polku.web.overview_routes import read_overview


def days_ago(days: int) -> str:
    """The ISO time ``days`` days ago: the ``since`` of an analysis."""
    return format_millis(wall_clock_ms() - days * 86_400_000)


async def analyze(view: View, name: str, **parameters: str) -> dict[str, Any]:
    """``GET /v1/analytics/{name}?…`` for the session's workspace."""
    analysis = analytics_registry.analysis_named(name)
    given = {key: value for key, value in parameters.items() if value not in (None, "")}
    scope, arguments = analytics_registry.parse(analysis, view.workspace, given)
    data_dir = view.services.settings.data_dir
    return await asyncio.to_thread(analytics_registry.run, analysis, data_dir, scope, arguments)


async def workspace_overview(view: View) -> dict[str, Any]:
    """``GET /v1/overview`` for the session's workspace."""
    return await read_overview(view.profiles, view.services.settings.data_dir, view.workspace)
