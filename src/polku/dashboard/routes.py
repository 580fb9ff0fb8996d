"""Every route of the dashboard, and what ``create_app`` needs to serve it."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute

from polku.dashboard import entry
from polku.dashboard.frame import Dashboard
from polku.dashboard.pages import customers, feedback, journeys, overview, paths, setup
from polku.dashboard.session import SessionSigner


def dashboard_routes() -> list[BaseRoute]:
    return [
        *entry.routes,
        *overview.routes,
        *journeys.routes,
        *paths.routes,
        *feedback.routes,
        *customers.routes,
        *setup.routes,
    ]


def build_dashboard(data_dir: Path) -> Dashboard:
    return Dashboard(signer=SessionSigner.for_data_dir(data_dir))
