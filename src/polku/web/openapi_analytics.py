"""The analytics part of the OpenAPI document (docs/analytics.md)."""

from __future__ import annotations

from typing import Any

from polku.engine.analytics_registry import ANALYSES, LIST_PARAMETERS, MAX_LIST_TEXT, MAX_TEXT, SCOPE
from polku.web.openapi import _query, _read


def analytics_paths() -> dict[str, Any]:
    names = sorted({p.name for analysis in ANALYSES.values() for p in analysis.parameters} | {p.name for p in SCOPE})
    return {
        "/v1/analytics": _read("list_analyses", "Every analysis with its parameters.", [], (401,)),
        "/v1/analytics/{name}": _read(
            "run_analysis",
            "Run an analysis; each takes its own parameters (see `GET /v1/analytics`) and the scope: since, until, "
            "channel, segment, customers.",
            [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": list(ANALYSES)}},
                *(
                    _query(
                        name,
                        f"See `GET /v1/analytics` for what `{name}` means to each analysis.",
                        {"type": "string", "maxLength": MAX_LIST_TEXT if name in LIST_PARAMETERS else MAX_TEXT},
                    )
                    for name in names
                ),
            ],
            (400, 401),
        ),
    }
