"""The dispatcher's ledger over HTTP (admin token): ``GET /v1/deliveries``."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from polku.adapters.sqlite.deliveries import MAX_LIMIT, STATUSES, deliveries
from polku.core.errors import InvalidInput
from polku.web.admin_routes import _int_param
from polku.web.auth import admin_access
from polku.web.profile_routes import _profiles
from polku.web.responses import json_response
from polku.web.services import services


async def list_deliveries(request: Request) -> Response:
    found = services(request)
    credential = await admin_access(request, found.catalog)
    customer_id = request.query_params.get("customer_id")
    if customer_id is not None and not 0 < len(customer_id) <= 256:
        raise InvalidInput("query parameter `customer_id` must be 1-256 characters", field="customer_id")
    status = request.query_params.get("status")
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"query parameter `status` must be one of {', '.join(STATUSES)}", field="status")
    limit = _int_param(request, "limit", 100, 1, MAX_LIMIT)
    workspace = credential.workspace
    if found.settings.scale_out:  # the shared ledger, in PostgreSQL
        rows = await _profiles(request).run(
            lambda views: deliveries(views.reports, workspace, customer_id, status, limit)
        )
    else:
        rows = await asyncio.to_thread(deliveries, found.settings.data_dir, workspace, customer_id, status, limit)
    return json_response({"deliveries": rows})


routes = [Route("/v1/deliveries", list_deliveries, methods=["GET"])]
