from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from polku.web.inflight import InflightBytesLimit

pytestmark = pytest.mark.anyio


async def test_bodies_over_the_in_flight_bound_get_503_until_memory_is_released() -> None:
    release = asyncio.Event()
    entered = asyncio.Event()

    async def slow(request: Request) -> Response:
        await request.body()
        entered.set()
        await release.wait()
        return Response("ok")

    app = Starlette(
        routes=[Route("/", slow, methods=["POST"])], middleware=[Middleware(InflightBytesLimit, limit=1500)]
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        first = asyncio.create_task(client.post("/", content=b"x" * 1000))
        await entered.wait()
        refused = await client.post("/", content=b"y" * 1000)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["code"] == "overloaded"
        small = asyncio.create_task(client.post("/", content=b"z" * 400))
        release.set()
        assert (await first).status_code == 200
        assert (await small).status_code == 200
        assert (await client.post("/", content=b"y" * 1000)).status_code == 200
