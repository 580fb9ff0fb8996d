"""Setting polku up: surveys (status, invitations, pause and resume), channels and
the contact policy (with deliveries and what the policy held back), and sources,
keys, webhooks and the quarantine. Each read and each form is the same engine call
as its ``/v1`` route (``survey_routes``, ``delivery_routes``, ``admin_routes``) and
its ``polku`` command."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote, urlsplit, urlunsplit

import msgspec
from starlette.responses import Response

from polku.adapters.sqlite import survey_store
from polku.adapters.sqlite.deliveries import STATUSES, deliveries
from polku.core.errors import InvalidInput, NotFound, PolkuError
from polku.core.events import format_millis, format_time
from polku.core.journey_stats import summarize
from polku.core.policy import DEFAULT_CONSENT
from polku.core.workspace import ADMIN_SCOPES, Credential, KeyKind
from polku.dashboard.frame import View, page_route
from polku.engine.feedback_reports import invitation_view, survey_counts
from polku.engine.journey_reports import stats_rows
from polku.engine.overview import delivery_counts, quarantine_open
from polku.engine.profile_views import ProfileViews
from polku.engine.setup import NewKey, add_key, ensure_source
from polku.engine.survey_admin import set_survey_status, survey_detail, survey_summary
from polku.engine.views import credential_json, quarantine_json
from polku.engine.worker import wall_clock_ms
from polku.ports import JourneyStatus, StoredJourney
from polku.web.auth import CREDENTIAL_KEY

DAY_MS: Final = 86_400_000
SHOWN_INVITATIONS: Final = 50
SHOWN_DELIVERIES: Final = 50
SHOWN_QUARANTINE: Final = 20
EDITABLE_BODY: Final = 16 * 1024
"""A quarantined message longer than this is resubmitted as stored or through the API."""
MASK: Final = "•••"
EMPTY_COUNTS: Final = {"sent": 0, "suppressed": 0, "answered": 0, "reasons": {}, "response_rate": None}


_summaries: dict[tuple[str, str, int, str], dict[str, Any]] = {}
"""Survey summaries by stored version: reading a survey's YAML takes milliseconds,
and a stored version never changes (its status is taken fresh each time)."""
MAX_SUMMARIES: Final = 512


def cached_summary(stored: StoredJourney) -> dict[str, Any]:
    """``survey_summary`` (as ``GET /v1/surveys``), its document read once per version."""
    key = (stored.workspace, stored.id, stored.version, stored.deployed_at)
    found = _summaries.get(key)
    if found is None:
        if len(_summaries) >= MAX_SUMMARIES:
            _summaries.clear()
        found = _summaries[key] = survey_summary(stored)
    return {**found, "version": stored.current, "status": stored.status, "updated_at": stored.updated_at}


def _now_iso() -> str:
    return format_time(datetime.now(UTC))


# -- surveys ------------------------------------------------------------------------


async def surveys_page(view: View) -> Response:
    """``/ui/surveys``: every survey with its status and last 30 days (``GET /v1/surveys``)."""
    workspace = view.workspace
    since = wall_clock_ms() - 30 * DAY_MS
    counts = await view.profiles.run(lambda views: survey_counts(views.sql, workspace, None, since))
    surveys = [
        {**cached_summary(stored), "last_30_days": {**EMPTY_COUNTS, **counts.get(stored.id, {})}}
        for stored in await view.services.catalog.definitions("survey", workspace)
    ]
    config = (await view.services.catalog.workspace(workspace)).config.surveys
    return view.render(
        "pages/surveys.html",
        title="Surveys",
        area="surveys",
        surveys=surveys,
        fatigue=msgspec.to_builtins(config.fatigue),
        base_url=config.base_url or view.services.settings.public_url,
    )


def _wording(wording: dict[str, str] | None, locale: str) -> str:
    if not wording:
        return ""
    return wording.get(locale) or next(iter(wording.values()))


async def survey_page(view: View) -> Response:
    """``/ui/surveys/{id}``: its questions, invitations and why some were not sent
    (``GET /v1/surveys/{id}`` and ``/invitations``)."""
    workspace = view.workspace
    survey_id = view.request.path_params["survey_id"]
    detail = survey_detail(await view.services.catalog.definition("survey", workspace, survey_id))

    def read(views: ProfileViews) -> dict[str, Any]:
        connection = views.sql
        rows = survey_store.invitations(connection, workspace, survey=survey_id, limit=SHOWN_INVITATIONS)
        totals = survey_counts(connection, workspace, survey_id, 0).get(survey_id, {})
        return {"totals": {**EMPTY_COUNTS, **totals}, "invitations": [invitation_view(r, a) for r, a in rows]}

    found = await view.profiles.run(read)
    spec = detail["spec"]
    locale = spec.get("default_locale") or "en"
    questions = [
        {
            "id": question["id"],
            "type": question["type"],
            "text": _wording(question["text"], locale),
            "required": question.get("required", False),
            "options": [_wording(option["text"], locale) for option in question.get("options") or []],
        }
        for question in spec.get("questions") or []
    ]
    return view.render(
        "pages/survey.html",
        title=f"Survey {detail['name'] or survey_id}",
        area="surveys",
        survey=detail,
        spec=spec,
        question=_wording(spec["question"], locale),
        questions=questions,
        locale=locale,
        totals=found["totals"],
        reasons=sorted(found["totals"]["reasons"].items(), key=lambda item: (-item[1], item[0])),
        invitations=found["invitations"],
    )


async def _survey_status(view: View, status: JourneyStatus, done: str) -> Response:
    await view.form()
    survey_id = view.request.path_params["survey_id"]
    back = f"/ui/surveys/{quote(survey_id, safe='')}"
    try:
        await set_survey_status(
            view.services.catalog, view.workspace, survey_id, status, format_millis(wall_clock_ms())
        )
    except PolkuError as error:
        if error.status >= 500:
            raise
        return view.back(back, error=error.message)
    return view.back(back, notice=f"{done} survey {survey_id}.")


async def pause_survey(view: View) -> Response:
    return await _survey_status(view, "paused", "Paused")


async def resume_survey(view: View) -> Response:
    return await _survey_status(view, "active", "Resumed")


# -- channels and the contact policy ----------------------------------------------


def masked_url(url: str | None) -> str | None:
    """A channel's address without its secrets: user info and query values masked."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    if parts.username or parts.password:
        host = f"{MASK}@{host}"
    names = dict.fromkeys(part.partition("=")[0] for part in parts.query.split("&") if part)
    query = "&".join(f"{name}={MASK}" for name in names)
    return urlunsplit((parts.scheme, host, parts.path, query, ""))


def channel_rows(config: Any) -> list[dict[str, Any]]:
    rows = []
    for name, channel in sorted(config.channels.items()):
        if channel.type == "webhook":
            target = masked_url(channel.url)
        else:
            target = f"{channel.host}:{channel.port}" + (
                " (TLS)" if channel.tls else " (STARTTLS)" if channel.starttls else ""
            )
        rows.append(
            {
                "name": name,
                "type": channel.type,
                "event_channel": channel.channel or name,
                "target": target,
                "sender": channel.sender,
                "username": channel.username,
                "secret_env": channel.secret_env or channel.password_env,
                "headers": sorted(channel.headers),
                "timeout": channel.timeout,
                "max_attempts": channel.max_attempts,
                "backoff": channel.backoff,
                "concurrency": channel.concurrency,
            }
        )
    return rows


def policy_view(config: Any) -> dict[str, Any]:
    policy = config.policy
    defaults = {**DEFAULT_CONSENT, **policy.consent.defaults}
    return {
        "consent_trait": policy.consent.trait,
        "consent": sorted(defaults.items()),
        "caps": [msgspec.to_builtins(cap) | {"name": cap.name or f"caps[{i}]"} for i, cap in enumerate(policy.caps)],
        "quiet_hours": msgspec.to_builtins(policy.quiet_hours) if policy.quiet_hours else None,
        "suppress": [msgspec.to_builtins(rule) for rule in policy.suppress],
        "timezone_trait": policy.timezone_trait,
        "default_timezone": policy.default_timezone,
    }


def suppressions(views: ProfileViews, workspace: str, journeys: list[str]) -> dict[str, Any]:
    """Actions the contact policy (or lateness) skipped, by reason, summed over every
    journey's counters (``GET /v1/journeys/{id}/stats``: ``actions.<step>.skipped``)."""
    by_reason: dict[str, dict[str, Any]] = {}
    totals = {"sent": 0, "held": 0, "failed": 0, "skipped": 0}
    for journey in journeys:
        summary = summarize(stats_rows(views.sql, workspace, journey))["total"]
        for step, action in summary["actions"].items():
            for result in ("sent", "held", "failed"):
                totals[result] += action[result]
            for reason, count in action["skipped"].items():
                totals["skipped"] += count
                entry = by_reason.setdefault(reason, {"reason": reason, "count": 0, "where": {}})
                entry["count"] += count
                entry["where"][f"{journey} · {step}"] = count
    rows = sorted(by_reason.values(), key=lambda entry: (-entry["count"], entry["reason"]))
    return {"totals": totals, "reasons": rows}


async def channels_page(view: View) -> Response:
    """``/ui/channels``: channels (secrets masked), the contact policy, deliveries
    (``GET /v1/deliveries``) and what the policy held back."""
    workspace = view.workspace
    status = view.request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status must be one of {', '.join(STATUSES)}", field="status")
    catalog = view.services.catalog
    config = (await catalog.workspace(workspace)).config
    journeys = [stored.id for stored in await catalog.journeys(workspace)]
    data_dir = view.services.settings.data_dir
    now = wall_clock_ms()

    def ledger() -> dict[str, Any]:
        return {
            "counts": delivery_counts(data_dir, workspace, now),
            "recent": deliveries(data_dir, workspace, None, status, SHOWN_DELIVERIES),
            "failed": deliveries(data_dir, workspace, None, "dead", SHOWN_DELIVERIES),
        }

    found, skipped = await asyncio.gather(
        asyncio.to_thread(ledger),
        view.profiles.run(lambda views: suppressions(views, workspace, journeys)),
    )
    survey_reasons: dict[str, int] = {}
    counts = await view.profiles.run(lambda views: survey_counts(views.sql, workspace, None, now - 30 * DAY_MS))
    for entry in counts.values():
        for reason, count in entry["reasons"].items():
            survey_reasons[reason] = survey_reasons.get(reason, 0) + count
    shown_status: dict[str, int] = {name: 0 for name in STATUSES}
    for row in found["recent"]:
        shown_status[row["status"]] = shown_status.get(row["status"], 0) + 1
    return view.render(
        "pages/channels.html",
        title="Channels & policy",
        area="channels",
        channels=channel_rows(config),
        notes=config.agent_notes,
        policy=policy_view(config),
        counts=found["counts"],
        recent=found["recent"],
        shown_status=shown_status,
        failed=found["failed"],
        wanted=status,
        statuses=STATUSES,
        skipped=skipped,
        survey_reasons=sorted(survey_reasons.items(), key=lambda item: (-item[1], item[0])),
        shown_limit=SHOWN_DELIVERIES,
    )


# -- sources, keys, webhooks, quarantine ------------------------------------------


async def _sources_values(view: View) -> dict[str, Any]:
    workspace = view.workspace
    catalog = view.services.catalog
    after = view.request.query_params.get("after", "0")
    after_id = int(after) if after.isdigit() and len(after) < 18 else 0
    sources = await catalog.sources(workspace)
    credentials = await catalog.credentials(workspace, None)
    config = (await catalog.workspace(workspace)).config
    entries = await view.services.log.quarantined(
        workspace, status="open", after_id=after_id, limit=SHOWN_QUARANTINE + 1
    )
    open_count = await view.profiles.run(lambda views: quarantine_open(views.log_sql, workspace))
    base = (view.services.settings.public_url or str(view.request.base_url)).rstrip("/")
    keys = sorted(
        (credential_json(c) for c in credentials), key=lambda key: (bool(key["revoked_at"]), key["created_at"])
    )
    active_keys: dict[str, int] = {}
    for key in keys:
        if key["kind"] == "write" and not key["revoked_at"] and key["source"]:
            active_keys[key["source"]] = active_keys.get(key["source"], 0) + 1
    return {
        "title": "Sources & keys",
        "area": "sources",
        "sources": sources,
        "active_keys": active_keys,
        "keys": keys,
        "own_key": view.session.key_hash[:12],
        "webhooks": [
            {
                "name": name,
                "channel": mapping.channel,
                "type": mapping.type,
                "event": mapping.event,
                "url": f"{base}/v1/webhooks/{quote(name, safe='')}",
            }
            for name, mapping in sorted(config.webhooks.items())
        ],
        "base_url": base,
        "quarantine": [quarantine_json(entry) for entry in entries[:SHOWN_QUARANTINE]],
        "editable_body": EDITABLE_BODY,
        "after": after_id,
        "quarantine_next": entries[SHOWN_QUARANTINE - 1].id if len(entries) > SHOWN_QUARANTINE else None,
        "quarantine_open": open_count,
        "new_key": None,
        "new_key_for": None,
        "form": {},
    }


async def sources_page(view: View) -> Response:
    """``/ui/sources``: sources, keys (never the keys themselves), webhooks, quarantine."""
    return view.render("pages/sources.html", **await _sources_values(view))


async def _show_new_key(view: View, new_key: NewKey | None, what: str) -> Response:
    """The page with the new key shown once (never in a URL)."""
    if new_key is None:  # a random 32-byte key collided: practically never
        return view.back("/ui/sources#keys", error="The key could not be stored; try again.")
    values = await _sources_values(view)
    values["new_key"] = msgspec.to_builtins(new_key)
    values["new_key_for"] = what
    values["notice"] = f"Created {what}."
    return view.render("pages/sources.html", status=201, **values)


async def create_source(view: View) -> Response:
    """``POST /v1/sources``: a source and its first write key."""
    form = await view.form()
    name = form.get("name", "").strip()
    channel = form.get("channel", "").strip()
    catalog = view.services.catalog
    try:
        if not await ensure_source(catalog, view.workspace, name, channel):
            return view.back("/ui/sources#sources", error=f"Source {name!r} exists; create another key for it below.")
    except PolkuError as error:
        if error.status >= 500:
            raise
        return view.back("/ui/sources#sources", error=error.message)
    key = await add_key(catalog, "write", view.workspace, name, label=f"source {name}")
    return await _show_new_key(view, key, f"source {name} and its write key")


async def create_key(view: View) -> Response:
    """``POST /v1/keys``: a write key of a source, or an admin token."""
    form = await view.form()
    catalog = view.services.catalog
    kind_text = form.get("kind", "")
    if kind_text not in ("write", "admin"):
        return view.back("/ui/sources#keys", error="Pick the kind of key: write or admin.")
    kind: KeyKind = "write" if kind_text == "write" else "admin"
    source = form.get("source", "").strip() or None
    if kind == "write":
        if source is None:
            return view.back("/ui/sources#keys", error="A write key needs a source.")
        try:
            await catalog.source(view.workspace, source)
        except NotFound as error:
            return view.back("/ui/sources#keys", error=error.message)
    label = form.get("label", "").strip()
    # The scopes of the dashboard's own token, of the default ones: no key made here
    # can do more than the person making it.
    held: Credential | None = view.request.scope.get(CREDENTIAL_KEY)
    scopes = tuple(scope for scope in ADMIN_SCOPES if held is not None and scope in held.scopes)
    key = await add_key(catalog, kind, view.workspace, source if kind == "write" else None, label=label, scopes=scopes)
    return await _show_new_key(view, key, f"a write key for {source}" if kind == "write" else "an admin token")


async def revoke_key(view: View) -> Response:
    """``DELETE /v1/keys/{id}``. The admin token of this session is refused: revoking
    it would end the session (revoke it from another session, the API or the CLI)."""
    await view.form()
    key_id = view.request.path_params["key_id"]
    if len(key_id) < 8 or not all(c in "0123456789abcdef" for c in key_id):
        return view.back("/ui/sources#keys", error="A key id is 8-64 lower-case hex characters.")
    if view.session.key_hash.startswith(key_id):
        return view.back(
            "/ui/sources#keys",
            error="That is the admin token you are logged in with: revoking it would log you out. "
            "Log in with another admin token to revoke it, or use DELETE /v1/keys/{id} or polku keys revoke.",
        )
    try:
        revoked = await view.services.catalog.revoke_credential(view.workspace, key_id, _now_iso())
    except PolkuError as error:
        if error.status >= 500:
            raise
        return view.back("/ui/sources#keys", error=error.message)
    view.services.ingestor.forget_keys()
    what = "admin token" if revoked.kind == "admin" else f"write key of {revoked.source}"
    return view.back("/ui/sources#keys", notice=f"Revoked the {what} {key_id[:12]}.")


def _entry_id(view: View) -> int:
    raw = view.request.path_params["entry_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise InvalidInput("the quarantine entry id must be a positive integer", field="entry_id")
    return int(raw)


async def resubmit_quarantined(view: View) -> Response:
    """``POST /v1/quarantine/{id}/resubmit``: validate the stored message again, or
    the corrected one given in the form."""
    form = await view.form()
    entry_id = _entry_id(view)
    workspace = view.workspace
    corrected = form.get("body", "").strip()
    try:
        entry = await view.services.log.quarantine_entry(workspace, entry_id)
        stored = entry.body.decode("utf-8", errors="replace").strip()
        body = corrected.encode() if corrected and corrected != stored else None
        result = await view.services.ingestor.resubmit(workspace, entry_id, body)
    except PolkuError as error:
        if error.status >= 500:
            raise
        return view.back("/ui/sources#quarantine", error=f"Entry {entry_id}: {error.message}")
    stored_as = "a duplicate of a stored event" if result.duplicates and not result.accepted else "accepted"
    return view.back("/ui/sources#quarantine", notice=f"Resubmitted entry {entry_id}: {stored_as}.")


async def discard_quarantined(view: View) -> Response:
    """``POST /v1/quarantine/{id}/discard``."""
    await view.form()
    entry_id = _entry_id(view)
    try:
        await view.services.ingestor.discard(view.workspace, entry_id)
    except PolkuError as error:
        if error.status >= 500:
            raise
        return view.back("/ui/sources#quarantine", error=f"Entry {entry_id}: {error.message}")
    return view.back("/ui/sources#quarantine", notice=f"Discarded entry {entry_id}.")


routes = [
    page_route("/ui/surveys", surveys_page),
    page_route("/ui/surveys/{survey_id}", survey_page),
    page_route("/ui/surveys/{survey_id}/pause", pause_survey, methods=("POST",)),
    page_route("/ui/surveys/{survey_id}/resume", resume_survey, methods=("POST",)),
    page_route("/ui/channels", channels_page),
    page_route("/ui/sources", sources_page),
    page_route("/ui/sources/create", create_source, methods=("POST",)),
    page_route("/ui/keys/create", create_key, methods=("POST",)),
    page_route("/ui/keys/{key_id}/revoke", revoke_key, methods=("POST",)),
    page_route("/ui/quarantine/{entry_id}/resubmit", resubmit_quarantined, methods=("POST",)),
    page_route("/ui/quarantine/{entry_id}/discard", discard_quarantined, methods=("POST",)),
]
