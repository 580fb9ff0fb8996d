"""The Segment HTTP Tracking API and the inbound webhook source."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from polku.connectors.webhook import map_payload
from polku.core.errors import LimitExceeded, MalformedBody, NotFound, Unauthorized
from polku.core.events import Rejection
from polku.core.limits import MAX_BATCH_EVENTS, MAX_REQUEST_BYTES
from polku.engine.body import decode_body
from polku.engine.ingest import IngestResult, probe_object, rejected_single
from polku.web.auth import basic_username, bearer_or_basic
from polku.web.responses import json_response
from polku.web.services import services

_any_json = msgspec.json.Decoder()
_encode = msgspec.json.Encoder().encode


async def read_body(request: Request) -> bytes:
    """The body, decompressed per ``Content-Encoding``, never more than the limit,
    and valid UTF-8 (every body polku reads is JSON or YAML text)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_REQUEST_BYTES:
        raise LimitExceeded(
            f"request body is {length} bytes; the limit is {MAX_REQUEST_BYTES} bytes (500 KB)", limit=MAX_REQUEST_BYTES
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            raise LimitExceeded(
                f"request body exceeds the limit of {MAX_REQUEST_BYTES} bytes (500 KB)", limit=MAX_REQUEST_BYTES
            )
        chunks.append(chunk)
    body = decode_body(b"".join(chunks), request.headers.get("content-encoding"))
    # Checked here, for the whole request: msgspec validates UTF-8 only in the
    # strings it decodes, and raises UnicodeDecodeError rather than DecodeError.
    if not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as error:
            raise MalformedBody(f"the body is not valid UTF-8: {error}") from None
    return body


def _result_response(result: IngestResult, single: bool) -> Response:
    if single:
        refused = rejected_single(result)
        if refused is not None:
            return json_response(refused, status=400)
    return json_response(result)


async def check_basic_key(request: Request) -> str | None:
    """A Basic write key is checked before the body is read, so an unauthenticated
    client cannot make the server read and inflate 500 KB. ``Authorization: Bearer``
    counts only for an admin token with the ``ingest`` scope; anything else there (a
    write key: some clients send it both ways) is left to the body's ``writeKey``, as
    before there were such tokens."""
    ingestor = services(request).ingestor
    basic = basic_username(request)
    if basic is not None:
        await ingestor.write_access(basic)
        return basic
    bearer = bearer_or_basic(request)
    if bearer is None:
        return None
    try:
        access = await ingestor.write_access(bearer, count=False)
    except Unauthorized:
        return None
    if access.credential.kind != "admin":
        return None
    await ingestor.write_access(bearer)  # counted against its rate limit, once
    return bearer


def message_route(message_type: str) -> Any:
    async def endpoint(request: Request) -> Response:
        key = await check_basic_key(request)
        body = await read_body(request)
        result = await services(request).ingestor.ingest_body(body, message_type=message_type, basic_key=key)
        return _result_response(result, single=True)

    endpoint.__name__ = f"ingest_{message_type}"
    return endpoint


async def ingest_batch(request: Request) -> Response:
    key = await check_basic_key(request)
    body = await read_body(request)
    result = await services(request).ingestor.ingest_body(body, message_type=None, basic_key=key)
    return _result_response(result, single=False)


async def ingest_webhook(request: Request) -> Response:
    name = request.path_params["source"]
    key = await check_basic_key(request)
    body = await read_body(request)
    ingestor = services(request).ingestor
    try:
        payload = _any_json.decode(body)
    except msgspec.DecodeError as error:
        raise MalformedBody(f"the body is not valid JSON: {error}") from None
    except RecursionError:
        raise MalformedBody("the body is nested too deeply") from None
    if key is None and isinstance(payload, dict):
        key = probe_object(body).write_key
    access = await ingestor.write_access(key or request.query_params.get("writeKey"))
    if isinstance(payload, dict):
        payload.pop("writeKey", None)  # a secret never reaches stored properties
    workspace = await services(request).catalog.workspace(access.credential.workspace)
    mapping = workspace.config.webhooks.get(name)
    if mapping is None:
        # Kept, not dropped: the sender cannot know our configuration is missing.
        reason = f"no webhook mapping named {name!r} in workspace {workspace.id!r}; add one under `webhooks:`"
        unmapped = Rejection(code="no_mapping", reason=reason, body=_encode(payload))
        await ingestor.append(access.source, [], [unmapped], ingestor.clock())
        raise NotFound(reason, quarantined=True)
    messages = map_payload(payload, mapping, source=name)
    if len(messages) > MAX_BATCH_EVENTS:
        raise LimitExceeded(
            f"webhook payload holds {len(messages)} records; the limit is {MAX_BATCH_EVENTS}", limit=MAX_BATCH_EVENTS
        )
    result = await ingestor.ingest_items(
        messages, access=access, received_at=ingestor.clock(), default_channel=mapping.channel
    )
    return json_response(result)


routes = [
    *(
        Route(f"/v1/{kind}", message_route(kind), methods=["POST"])
        for kind in ("track", "identify", "page", "screen", "group", "alias")
    ),
    Route("/v1/batch", ingest_batch, methods=["POST"]),
    Route("/v1/import", ingest_batch, methods=["POST"]),  # Segment's alias of /v1/batch
    Route("/v1/webhooks/{source}", ingest_webhook, methods=["POST"]),
]
