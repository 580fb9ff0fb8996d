"""A bound on the request bodies held in memory at once.

The writer queue applies back-pressure per event, but only after a body has been read,
inflated and decoded; without this bound, many slow clients could make the server hold
any number of 500 KB bodies. Over the bound, ingestion answers 503 + ``Retry-After``
before reading anything."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from polku.core.limits import MAX_REQUEST_BYTES
from polku.web.responses import json_response

MAX_INFLIGHT_BYTES = 64 * MAX_REQUEST_BYTES


class InflightBytesLimit:
    def __init__(self, app: ASGIApp, limit: int = MAX_INFLIGHT_BYTES) -> None:
        self.app = app
        self.limit = limit
        self.inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        # A chunked body is counted at the most it may grow to.
        size = min(int(declared), MAX_REQUEST_BYTES) if declared.isdigit() else MAX_REQUEST_BYTES
        if self.inflight + size > self.limit and self.inflight > 0:
            response = json_response(
                {"code": "overloaded", "message": "too many request bodies in flight; retry shortly"},
                status=503,
                headers={"Retry-After": "1"},
            )
            await response(scope, receive, send)
            return
        self.inflight += size
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= size
