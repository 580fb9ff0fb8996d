"""The one place where errors become HTTP responses: ``{"code", "message", …}``."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from polku.core.errors import PolkuError, Unavailable
from polku.web.responses import json_response

log = logging.getLogger("polku.web")

HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "limit_exceeded"}


async def polku_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, PolkuError)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.requests_refused.labels(error.code).inc()
    headers = {}
    if isinstance(error, Unavailable):
        headers["Retry-After"] = str(error.retry_after)
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="polku"'
    return json_response(error.to_dict(), status=error.status, headers=headers)


async def http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    code = HTTP_CODES.get(error.status_code, "http_error")
    # Starlette's own headers matter: a 405 carries `Allow` (RFC 9110).
    return json_response({"code": code, "message": str(error.detail)}, status=error.status_code, headers=error.headers)


async def server_error(request: Request, error: Exception) -> Response:
    log.exception("unhandled error", extra={"path": request.url.path})
    return json_response({"code": "internal", "message": "internal server error"}, status=500)
