"""Customers and accounts over HTTP (admin token): the recently active, lookup,
profile, timeline, the agent view, consent and the contact policy, accounts,
identity refusals and changes."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from polku.core.erasure import ErasureReceipt
from polku.core.errors import InvalidInput, NotFound
from polku.engine.profile_views import (
    MAX_RECENT_CUSTOMERS,
    MAX_TIMELINE_PAGE,
    RECENT_CUSTOMERS,
    ProfileViews,
    parse_cursor,
    refusal_json,
)
from polku.engine.runtime import WorkspaceRuntime
from polku.engine.worker import wall_clock_ms
from polku.ports import Catalog, EventLog
from polku.web.admin_routes import _int_param
from polku.web.audit import AUDIT_ACTION_KEY
from polku.web.auth import admin_access
from polku.web.responses import json_response
from polku.web.services import services

T = TypeVar("T")
RUNTIME_TTL_S = 1.0
_encode_config = msgspec.json.Encoder().encode


class ProfileService:
    """Reads of the processor's state on a small thread pool, each thread with its
    own read-only connections; workspace runtimes compiled once per configuration."""

    def __init__(self, open_views: Callable[[], ProfileViews], catalog: Catalog) -> None:
        self.open_views = open_views
        self.catalog = catalog
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="polku-profiles")
        self._local = threading.local()
        self._views: list[ProfileViews] = []
        self._runtimes: dict[str, tuple[bytes, WorkspaceRuntime, float]] = {}

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for views in self._views:
            views.close()

    def _thread_views(self) -> ProfileViews:
        views: ProfileViews | None = getattr(self._local, "views", None)
        if views is None:
            views = self.open_views()
            self._local.views = views
            self._views.append(views)
        return views

    async def run(self, function: Callable[[ProfileViews], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: function(self._thread_views()))

    async def erase(
        self, log: EventLog, workspace: str, customer_id: str, *, suppress: bool, wait_s: float
    ) -> tuple[str, ErasureReceipt | None]:
        """Ask for an erasure (``polku.engine.erasure``) and wait up to ``wait_s`` for
        every store to be clean: the erasure's id and its receipt so far."""
        from polku.engine.erasure import request_erasure, wait_for_receipt

        erasure = await request_erasure(log, workspace, customer_id, suppress=suppress, now_ms=wall_clock_ms())

        async def read() -> ErasureReceipt | None:
            found = await self.run(lambda views: views.state.erasure_receipts(workspace, erasure=erasure))
            return found[0] if found else None

        return erasure, await wait_for_receipt(read, wait_s, done=lambda found: found.status == "erased")

    def forget(self, workspace_id: str) -> None:
        """The configuration changed (``PUT /v1/workspace/config``)."""
        self._runtimes.pop(workspace_id, None)

    async def runtime(self, workspace_id: str) -> WorkspaceRuntime:
        """The compiled configuration, read again at most every ``RUNTIME_TTL_S``
        (a lookup should not pay for reading and comparing the configuration)."""
        now = time.monotonic()
        cached = self._runtimes.get(workspace_id)
        if cached is not None and now - cached[2] < RUNTIME_TTL_S:
            return cached[1]
        workspace = await self.catalog.workspace(workspace_id)
        body = _encode_config(workspace.config)
        runtime = cached[1] if cached is not None and cached[0] == body else WorkspaceRuntime.compile(workspace.config)
        self._runtimes[workspace_id] = (body, runtime, now)
        return runtime


def _profiles(request: Request) -> ProfileService:
    found: ProfileService = request.app.state.profiles
    return found


async def _customer(request: Request) -> tuple[str, WorkspaceRuntime, str]:
    credential = await admin_access(request, services(request).catalog)
    service = _profiles(request)
    runtime = await service.runtime(credential.workspace)
    customer_id = request.path_params["customer_id"]
    live = await service.run(lambda views: views.find(credential.workspace, runtime, "customer_id", customer_id))
    return credential.workspace, runtime, live


async def lookup(request: Request) -> Response:
    credential = await admin_access(request, services(request).catalog)
    service = _profiles(request)
    runtime = await service.runtime(credential.workspace)
    given = [(name, value) for name, value in request.query_params.multi_items() if name != "format"]
    if len(given) != 1:
        known = ", ".join(["customer_id", *runtime.rules.types()])
        raise InvalidInput(f"give exactly one identifier as a query parameter ({known})", field="query")
    kind, value = given[0]
    if len(value) > 512:
        raise InvalidInput(f"query parameter `{kind}` is longer than 512 characters", field=kind)
    now = wall_clock_ms()
    workspace = credential.workspace

    def read(views: ProfileViews) -> dict[str, Any]:
        return views.profile_json(workspace, runtime, views.find(workspace, runtime, kind, value), now)

    return json_response(await service.run(read))


async def recent_profiles(request: Request) -> Response:
    """The customers behind the newest processed events, newest first."""
    credential = await admin_access(request, services(request).catalog)
    limit = _int_param(request, "limit", RECENT_CUSTOMERS, 1, MAX_RECENT_CUSTOMERS)
    workspace = credential.workspace
    return json_response({"customers": await _profiles(request).run(lambda v: v.recent(workspace, limit))})


async def get_profile(request: Request) -> Response:
    workspace, runtime, customer_id = await _customer(request)
    now = wall_clock_ms()
    return json_response(await _profiles(request).run(lambda v: v.profile_json(workspace, runtime, customer_id, now)))


async def get_consent(request: Request) -> Response:
    """Per purpose the consent given (or the default), and every event that set it."""
    from polku.engine.consent_views import consent_view

    workspace, runtime, customer_id = await _customer(request)
    return json_response(await _profiles(request).run(lambda v: consent_view(v, workspace, runtime, customer_id)))


async def export_profile(request: Request) -> Response:
    """The right of access: everything held about the person, as one JSON document
    to hand over (``polku.engine.privacy_export``; docs/privacy.md)."""
    from polku.engine.privacy_export import export_person

    workspace, runtime, customer_id = await _customer(request)
    now = wall_clock_ms()
    document = await _profiles(request).run(lambda v: export_person(v, workspace, runtime, customer_id, now))
    response = json_response(document)
    response.headers["Content-Disposition"] = f'attachment; filename="polku-export-{customer_id}.json"'
    response.headers["Cache-Control"] = "no-store"  # personal data: no copy in any cache
    return response


class ConsentRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    purposes: dict[str, bool]
    """Purpose → yes or no; purposes not named keep what the person said before."""
    channel: str = "api"
    """Where the person said it (a preference center: ``web``; a call: ``phone``)."""


async def set_consent(request: Request) -> Response:
    """Set some of a person's consent (a preference center, a call-center agent): the
    purposes named change, the others keep what the person said (merged when the
    processor applies it, in their order); goes through the log as an ``identify`` of
    theirs, so the history shows it like any other."""
    from polku.core.events import CHANNEL_PATTERN
    from polku.engine.runtime import INTERNAL_SOURCE, consent_event
    from polku.ports import AppendBatch
    from polku.web.ingest_routes import read_body

    workspace, runtime, customer_id = await _customer(request)
    try:
        wanted = msgspec.json.decode(await read_body(request), type=ConsentRequest)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise InvalidInput(f"the body is not a consent request: {error}") from None
    if not 0 < len(wanted.purposes) <= 50 or not all(0 < len(name) <= 64 for name in wanted.purposes):
        raise InvalidInput("name 1-50 purposes, each 1-64 characters", field="purposes")
    if not CHANNEL_PATTERN.fullmatch(wanted.channel):
        raise InvalidInput(f"channel {wanted.channel!r} is not a channel name", field="channel")
    now = wall_clock_ms()
    identity = f"consent|{secrets.token_hex(10)}"
    event = consent_event(customer_id, runtime.policy.consent_trait, wanted.purposes, now, identity, wanted.channel)
    log = services(request).log
    await log.append(AppendBatch(workspace=workspace, source=INTERNAL_SOURCE, received_ms=now, events=[event]))
    return json_response(
        {"customer_id": customer_id, "purposes": wanted.purposes, "message_id": event.message_id}, status=202
    )


async def erase_profile(request: Request) -> Response:
    """The right to be forgotten: the request goes into the log; the answer is the
    receipt once every store is clean (200), or as far as it got within ``wait``
    seconds (202; follow ``GET /v1/erasures/{id}``)."""
    from polku.engine.erasure import DEFAULT_WAIT_S, MAX_WAIT_S

    suppress = _flag(request, "suppress")
    wait_s = float(_int_param(request, "wait", int(DEFAULT_WAIT_S), 0, int(MAX_WAIT_S)))
    workspace, _, customer_id = await _customer(request)
    erasure, receipt = await _profiles(request).erase(
        services(request).log, workspace, customer_id, suppress=suppress, wait_s=wait_s
    )
    # The audit record names the erasure, not the person (their id is erased).
    request.scope[AUDIT_ACTION_KEY] = f"DELETE /v1/profiles/[{erasure}]"
    if receipt is None:
        body: dict[str, Any] = {"id": erasure, "workspace": workspace, "status": "requested"}
    else:
        body = msgspec.to_builtins(receipt)
    return json_response(body, status=200 if body["status"] == "erased" else 202)


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise InvalidInput(f"query parameter `{name}` must be true or false, not {value!r}", field=name)
    return value in ("true", "1")


async def list_erasures(request: Request) -> Response:
    """The workspace's erasure receipts, newest first (no personal data in them)."""
    credential = await admin_access(request, services(request).catalog)
    limit = _int_param(request, "limit", 100, 1, 1000)
    workspace = credential.workspace
    found = await _profiles(request).run(lambda views: views.state.erasure_receipts(workspace, limit=limit))
    return json_response({"erasures": [msgspec.to_builtins(receipt) for receipt in found]})


async def get_erasure(request: Request) -> Response:
    credential = await admin_access(request, services(request).catalog)
    erasure = request.path_params["erasure_id"]
    workspace = credential.workspace
    found = await _profiles(request).run(lambda views: views.state.erasure_receipts(workspace, erasure=erasure))
    if not found:
        raise NotFound(f"no erasure {erasure!r} has been carried out (yet) in this workspace")
    return json_response(msgspec.to_builtins(found[0]))


async def consent_resource(request: Request) -> Response:
    return await (set_consent(request) if request.method == "PUT" else get_consent(request))


async def profile_resource(request: Request) -> Response:
    """One route for both methods, so a 405 lists them both in ``Allow``."""
    return await (erase_profile(request) if request.method == "DELETE" else get_profile(request))


async def get_timeline(request: Request) -> Response:
    workspace, _, customer_id = await _customer(request)
    limit = _int_param(request, "limit", 50, 1, MAX_TIMELINE_PAGE)
    before = parse_cursor(request.query_params.get("cursor"))
    page = await _profiles(request).run(lambda v: v.timeline(workspace, customer_id, before=before, limit=limit))
    return json_response(page)


async def get_context(request: Request) -> Response:
    workspace, runtime, customer_id = await _customer(request)
    now = wall_clock_ms()
    return json_response(await _profiles(request).run(lambda v: v.context(workspace, runtime, customer_id, now)))


async def get_policy(request: Request) -> Response:
    workspace, runtime, customer_id = await _customer(request)
    now = wall_clock_ms()
    return json_response(await _profiles(request).run(lambda v: v.policy(workspace, runtime, customer_id, now)))


async def get_account(request: Request) -> Response:
    credential = await admin_access(request, services(request).catalog)
    account_id = request.path_params["account_id"]
    return json_response(await _profiles(request).run(lambda v: v.account(credential.workspace, account_id)))


async def list_refusals(request: Request) -> Response:
    credential = await admin_access(request, services(request).catalog)
    after = _int_param(request, "after", 0, 0, 2**62)
    limit = _int_param(request, "limit", 100, 1, 1000)
    page = await _profiles(request).run(lambda v: v.state.refusals(credential.workspace, after_id=after, limit=limit))
    items = [refusal_json(entry_id, record) for entry_id, record in page]
    return json_response({"refusals": items, "next_cursor": items[-1]["id"] if len(items) == limit else None})


async def list_identity_changes(request: Request) -> Response:
    credential = await admin_access(request, services(request).catalog)
    after = _int_param(request, "after", 0, 0, 2**62)
    limit = _int_param(request, "limit", 100, 1, 1000)
    page = await _profiles(request).run(
        lambda v: v.state.identity_changes(credential.workspace, after_id=after, limit=limit)
    )
    items = [{"id": entry_id, **msgspec.to_builtins(record)} for entry_id, record in page]
    return json_response({"changes": items, "next_cursor": items[-1]["id"] if len(items) == limit else None})


async def processor_status(request: Request) -> Response:
    """How far the processor is behind the log (``lag`` events)."""
    credential = await admin_access(request, services(request).catalog)

    def read(views: ProfileViews) -> dict[str, Any]:
        # The scale-out deployment has a checkpoint per partition (docs/scale-out.md).
        views.sqlite("the processor's status")
        checkpoint = views.state.checkpoint()
        end = views.log.last_seq()
        failures = views.state.failures(credential.workspace)
        return {"checkpoint": checkpoint, "log_end": end, "lag": max(0, end - checkpoint), "failed_events": failures}

    return json_response(await _profiles(request).run(read))


routes = [
    # Before `/v1/profiles/{customer_id}`, which would take `recent` for a customer id.
    Route("/v1/profiles/recent", recent_profiles, methods=["GET"]),
    Route("/v1/processor", processor_status, methods=["GET"]),
    Route("/v1/profiles/lookup", lookup, methods=["GET"]),
    Route("/v1/profiles/{customer_id}", profile_resource, methods=["GET", "DELETE"]),
    Route("/v1/erasures", list_erasures, methods=["GET"]),
    Route("/v1/erasures/{erasure_id}", get_erasure, methods=["GET"]),
    Route("/v1/profiles/{customer_id}/timeline", get_timeline, methods=["GET"]),
    Route("/v1/profiles/{customer_id}/export", export_profile, methods=["GET"]),
    Route("/v1/profiles/{customer_id}/consent", consent_resource, methods=["GET", "PUT"]),
    Route("/v1/profiles/{customer_id}/context", get_context, methods=["GET"]),
    Route("/v1/profiles/{customer_id}/policy", get_policy, methods=["GET"]),
    Route("/v1/accounts/{account_id}", get_account, methods=["GET"]),
    Route("/v1/identity/refusals", list_refusals, methods=["GET"]),
    Route("/v1/identity/changes", list_identity_changes, methods=["GET"]),
]
