"""Surveys over HTTP (docs/surveys.md).

With an admin token: deploy (versioned), validate, list, show, pause / resume /
archive, invitations sent and not sent (with the reason), a customer's pending
in-app surveys, feedback metrics and the answers per metric. Without one, with the invitation's signed
token as the only credential: the survey as a front end shows it, the answers
API, and the hosted page ``/s/<token>`` (a plain HTML form; no JavaScript needed).
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qs, quote

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from polku.adapters.sqlite import survey_store
from polku.core.errors import Conflict, Forbidden, Gone, InvalidInput, LimitExceeded, MalformedBody, PolkuError
from polku.core.events import format_millis
from polku.core.survey_spec import SURVEY_CHANNEL, survey_schema
from polku.engine.feedback_reports import (
    DEFAULT_PERIOD_DAYS,
    MAX_COUNT_DAYS,
    MetricQuery,
    feedback_counts,
    feedback_metrics,
    invitation_view,
    survey_counts,
)
from polku.engine.survey_admin import (
    check_survey_for_workspace,
    localized,
    set_survey_status,
    survey_detail,
    survey_summary,
)
from polku.engine.survey_answers import Opened, SurveyAnswers
from polku.engine.worker import wall_clock_ms
from polku.ports import JourneyStatus
from polku.web.admin_routes import _int_param, _text_param, _time_param
from polku.web.auth import admin_access
from polku.web.journey_routes import _read_document
from polku.web.profile_routes import _customer, _profiles
from polku.web.responses import json_response
from polku.web.services import services
from polku.web.survey_page import render_survey_page, ui_text

SURVEY_PURPOSE: Final = "surveys"
"""The consent purpose survey invitations ask for (``polku.core.journey_engine``)."""

MAX_ANSWER_BYTES: Final = 32 * 1024
DAY_MS: Final = 86_400_000
SCHEMA: Final = survey_schema()
PAGE_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; form-action 'self'; img-src 'self'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
"""The hosted page: no scripts at all, nothing from elsewhere, not framed, and the
token in its address never leaks through a Referer header."""


def answers_service(request: Request) -> SurveyAnswers:
    found: SurveyAnswers | None = getattr(request.app.state, "survey_answers", None)
    if found is None:
        profiles = _profiles(request)
        secret_box: list[bytes] = []

        async def secret() -> bytes:
            if not secret_box:
                secret_box.append(await profiles.run(lambda views: views.state.survey_secret()))
            return secret_box[0]

        async def invitation(invitation_id: str) -> Any:
            return await profiles.run(lambda views: survey_store.invitation(views.reports, invitation_id))

        async def live_id(workspace: str, customer_id: str) -> str:
            return await profiles.run(lambda views: views.state.redirect(workspace, customer_id))

        found = SurveyAnswers(
            services(request).catalog,
            services(request).log,
            secret=secret,
            invitation=invitation,
            clock=wall_clock_ms,
            live_id=live_id,
        )
        request.app.state.survey_answers = found
    return found


# --- definitions (admin) -----------------------------------------------------------------


async def list_surveys(request: Request) -> Response:
    catalog = services(request).catalog
    credential = await admin_access(request, catalog)
    workspace = credential.workspace
    since = wall_clock_ms() - 30 * DAY_MS
    counts = await _profiles(request).run(lambda views: survey_counts(views.reports, workspace, None, since))
    items = []
    for stored in await catalog.definitions("survey", workspace):
        numbers = counts.get(stored.id, {"sent": 0, "suppressed": 0, "answered": 0, "reasons": {}})
        items.append({**survey_summary(stored), "last_30_days": numbers})
    return json_response({"surveys": items})


async def get_schema(request: Request) -> Response:
    await admin_access(request, services(request).catalog)
    return json_response(SCHEMA)


async def validate_survey(request: Request) -> Response:
    catalog = services(request).catalog
    credential = await admin_access(request, catalog)
    survey, _ = await check_survey_for_workspace(
        catalog, credential.workspace, await _read_document(request), survey_id=None
    )
    return json_response({"valid": True, "id": survey.id})


async def survey(request: Request) -> Response:
    """``GET`` shows a survey, ``PUT`` deploys one."""
    catalog = services(request).catalog
    credential = await admin_access(request, catalog)
    survey_id = request.path_params["survey_id"]
    if request.method == "GET":
        return json_response(survey_detail(await catalog.definition("survey", credential.workspace, survey_id)))
    body = await _read_document(request)
    _, version = await check_survey_for_workspace(catalog, credential.workspace, body, survey_id=survey_id)
    if request.query_params.get("dry_run", "").lower() in ("1", "true", "yes"):
        return json_response({"id": survey_id, "valid": True, "dry_run": True, "version": version, "created": False})
    stored, created = await catalog.deploy_definition(
        "survey", credential.workspace, survey_id, body.decode(), format_millis(wall_clock_ms())
    )
    current = await catalog.definition("survey", credential.workspace, survey_id)
    return json_response(
        {"id": survey_id, "version": stored, "created": created, "status": current.status},
        status=201 if created else 200,
    )


async def _set_status(request: Request, status: JourneyStatus) -> Response:
    catalog = services(request).catalog
    credential = await admin_access(request, catalog)
    updated = await set_survey_status(
        catalog, credential.workspace, request.path_params["survey_id"], status, format_millis(wall_clock_ms())
    )
    return json_response(survey_summary(updated))


async def pause_survey(request: Request) -> Response:
    return await _set_status(request, "paused")


async def resume_survey(request: Request) -> Response:
    return await _set_status(request, "active")


async def archive_survey(request: Request) -> Response:
    return await _set_status(request, "archived")


async def survey_invitations(request: Request) -> Response:
    """Invitations of a survey, newest first: sent ones, and the ones not sent with
    the reason (``cooldown:invitation``, ``consent:surveys`` …)."""
    catalog = services(request).catalog
    credential = await admin_access(request, catalog)
    workspace = credential.workspace
    survey_id = request.path_params["survey_id"]
    await catalog.definition("survey", workspace, survey_id)
    status = request.query_params.get("status")
    if status is not None and status not in ("sent", "suppressed"):
        raise InvalidInput("query parameter `status` must be sent or suppressed", field="status")
    limit = _int_param(request, "limit", 100, 1, 1000)
    since = _time_param(request, "since") or 0

    def read(views: Any) -> dict[str, Any]:
        connection = views.reports
        rows = survey_store.invitations(
            connection, workspace, survey=survey_id, status=status, since_ms=since, limit=limit
        )
        return {
            "survey": survey_id,
            "totals": survey_counts(connection, workspace, survey_id, since).get(
                survey_id, {"sent": 0, "suppressed": 0, "answered": 0, "reasons": {}}
            ),
            "invitations": [invitation_view(record, answered) for record, answered in rows],
        }

    return json_response(await _profiles(request).run(read))


async def profile_surveys(request: Request) -> Response:
    """A customer's open in-app surveys (not answered, not expired), ready to show:
    the survey in the customer's locale and the token to answer with. ``?all=true``
    lists every invitation of theirs instead (sent or not, with reasons)."""
    workspace, _, customer_id = await _customer(request)
    everything = request.query_params.get("all", "").lower() in ("1", "true", "yes")
    limit = _int_param(request, "limit", 20, 1, 1000)
    now = wall_clock_ms()

    def read(views: Any) -> list[tuple[Any, bool]]:
        connection = views.reports
        return survey_store.invitations(
            connection,
            workspace,
            customer_ids=survey_store.merged_ids(connection, workspace, customer_id),
            status=None if everything else "sent",
            channel=None if everything else SURVEY_CHANNEL,
            limit=1000 if not everything else limit,
        )

    rows = await _profiles(request).run(read)
    if everything:
        return json_response({"customer_id": customer_id, "invitations": [invitation_view(r, a) for r, a in rows]})
    answers = answers_service(request)
    pending = []
    for record, answered in rows:
        if answered or record.expires_ms <= now:
            continue
        stored = await answers.catalog.survey_answer(workspace, record.id)
        if stored is not None:
            continue
        found = await answers.survey(workspace, record.survey, record.version)
        pending.append(
            {
                "invitation": record.id,
                "token": await answers.token(record.id, record.expires_ms),
                "created": format_millis(record.created_ms),
                "expires": format_millis(record.expires_ms),
                "journey": record.journey or None,
                "step": record.step or None,
                "survey": localized(found, record.locale or found.default_locale),
            }
        )
        if len(pending) >= limit:
            break
    return json_response({"customer_id": customer_id, "surveys": pending})


async def metrics(request: Request) -> Response:
    catalog = services(request).catalog
    credential = await admin_access(request, catalog)
    params = request.query_params
    try:
        confidence = float(params.get("confidence", "0.95"))
    except ValueError:
        raise InvalidInput("confidence must be a number such as 0.95", field="confidence") from None
    query = MetricQuery(
        metric=params.get("metric", "nps").lower(),
        by=params.get("by") or None,
        since_ms=_time_param(request, "since") or 0,
        until_ms=_time_param(request, "until") or 0,
        survey=_text_param(request, "survey"),
        journey=_text_param(request, "journey"),
        step=_text_param(request, "step"),
        channel=_text_param(request, "channel"),
        segment=_text_param(request, "segment"),
        confidence=confidence,
    ).check()
    workspace = credential.workspace
    now = wall_clock_ms()
    return json_response(
        await _profiles(request).run(lambda views: feedback_metrics(views.reports, workspace, query, now))
    )


async def counts(request: Request) -> Response:
    """Answers per metric in the last ``days`` days, and the metric most answered."""
    credential = await admin_access(request, services(request).catalog)
    days = _int_param(request, "days", DEFAULT_PERIOD_DAYS, 1, MAX_COUNT_DAYS)
    workspace = credential.workspace
    now = wall_clock_ms()
    return json_response(
        await _profiles(request).run(lambda views: feedback_counts(views.reports, workspace, days, now))
    )


# --- answering (the token is the credential) ---------------------------------------------


def _opened_view(opened: Opened, now: int) -> dict[str, Any]:
    answer = opened.answer
    return {
        "invitation": opened.invitation.id,
        "survey": localized(opened.survey, opened.invitation.locale or opened.survey.default_locale),
        "expires": format_millis(opened.invitation.expires_ms),
        "answered": answer is not None,
        "answer": answer.answer if answer is not None else None,
        "revision": answer.revision if answer is not None else 0,
        "can_edit": opened.can_edit(now),
        "edit_until": format_millis(opened.edit_until_ms) if answer is not None and opened.edit_until_ms else None,
    }


async def get_invitation(request: Request) -> Response:
    opened = await answers_service(request).open(request.path_params["token"])
    return json_response(_opened_view(opened, wall_clock_ms()))


async def _json_body(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_ANSWER_BYTES:
        raise LimitExceeded(f"an answer is at most {MAX_ANSWER_BYTES} bytes", limit=MAX_ANSWER_BYTES)
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError as error:
        raise MalformedBody(f"the body is not JSON: {error}") from None
    except RecursionError:
        raise MalformedBody("the body is nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidInput("the body must be a JSON object with `score` (and `answers`, `comment`)", field="body")
    return data


async def answer_invitation(request: Request) -> Response:
    """``POST /v1/invitations/{token}/answer`` ``{score, answers, comment, customer_id?, locale?}``."""
    data = await _json_body(request)
    answers = data.get("answers")
    if answers is not None and not isinstance(answers, dict):
        raise InvalidInput("`answers` must be an object of question id → answer", field="answers")
    customer_id = data.get("customer_id")
    if customer_id is not None and not isinstance(customer_id, str):
        raise InvalidInput("`customer_id` must be text", field="customer_id")
    opened, stored, changed = await answers_service(request).submit(
        request.path_params["token"],
        score=data.get("score"),
        answers=answers,
        comment=data.get("comment"),
        customer_id=customer_id,
        locale=data.get("locale") if isinstance(data.get("locale"), str) else None,
    )
    view = {**_opened_view(opened, wall_clock_ms()), "changed": changed}
    return json_response(view, status=201 if changed and stored.revision == 1 else 200)


# --- the hosted page -------------------------------------------------------------------------


def _page(state: str, locale: str, status: int, **values: Any) -> HTMLResponse:
    return HTMLResponse(
        render_survey_page(state=state, locale=locale, **values), status_code=status, headers=PAGE_HEADERS
    )


def _locale(request: Request, opened: Opened) -> str:
    wanted = request.query_params.get("lang")
    if wanted and wanted in opened.survey.locales:
        return wanted
    return opened.invitation.locale or opened.survey.default_locale


def _browser_locale(request: Request) -> str:
    accepted = request.headers.get("accept-language", "")
    return "fi" if accepted.lower().startswith("fi") else "sv" if accepted.lower().startswith("sv") else "en"


def _edit_note(opened: Opened, locale: str) -> str | None:
    if opened.answer is None or not opened.edit_until_ms:
        return None
    until = format_millis(opened.edit_until_ms)[:16].replace("T", " ") + " UTC"
    notes = {
        "fi": f"Voit muuttaa vastaustasi {until} asti.",
        "sv": f"Du kan ändra ditt svar till {until}.",
    }
    return notes.get(locale, f"You can change your answer until {until}.")


async def page(request: Request) -> Response:
    token = request.path_params["token"]
    answers = answers_service(request)
    try:
        opened = await answers.open(token)
    except Gone:
        return _page("expired", _browser_locale(request), 410, survey=None)
    except Forbidden:
        return _page("invalid", _browser_locale(request), 403, survey=None)
    locale = _locale(request, opened)
    view = localized(opened.survey, locale)
    now = wall_clock_ms()
    opt_out = _opt_out_link(token)
    if request.method == "POST":
        return await _submit_page(request, answers, token, opened, locale, view)
    if opened.answer is None:
        return _page("form", locale, 200, survey=view, opt_out=opt_out)
    if not opened.can_edit(now):
        return _page("closed", locale, 200, survey=view)
    if request.query_params.get("edit"):
        note = _edit_note(opened, locale)
        return _page("form", locale, 200, survey=view, answer=opened.answer.answer, message=note, opt_out=opt_out)
    return _page("thanks", locale, 200, survey=view, can_edit=True, message=_edit_note(opened, locale), opt_out=opt_out)


def _opt_out_link(token: str) -> str:
    return f"/s/{quote(token, safe='')}/opt-out"


async def opt_out_page(request: Request) -> Response:
    """``POST /s/<token>/opt-out``: "don't ask me for feedback again" — the person's
    consent to the ``surveys`` purpose becomes no, through the log as an ``identify``
    of theirs (docs/privacy.md), so no survey invites them again."""
    from polku.engine.runtime import INTERNAL_SOURCE, consent_event
    from polku.ports import AppendBatch

    token = request.path_params["token"]
    try:
        opened = await answers_service(request).open(token)
    except Gone:
        return _page("expired", _browser_locale(request), 410, survey=None)
    except Forbidden:
        return _page("invalid", _browser_locale(request), 403, survey=None)
    invitation = opened.invitation
    workspace, customer_id = invitation.workspace, invitation.customer_id
    runtime = await _profiles(request).runtime(workspace)
    now = wall_clock_ms()
    channel = invitation.event_channel or invitation.channel or "other"
    identity = f"survey-opt-out|{invitation.id}|{now}"
    event = consent_event(customer_id, runtime.policy.consent_trait, {SURVEY_PURPOSE: False}, now, identity, channel)
    await services(request).log.append(
        AppendBatch(workspace=workspace, source=INTERNAL_SOURCE, received_ms=now, events=[event])
    )
    locale = _locale(request, opened)
    return _page("opted_out", locale, 200, survey=localized(opened.survey, locale))


async def _submit_page(
    request: Request, answers: SurveyAnswers, token: str, opened: Opened, locale: str, view: dict[str, Any]
) -> Response:
    body = await request.body()
    if len(body) > MAX_ANSWER_BYTES:
        return _page("form", locale, 413, survey=view, errors={"score": "The answer is too long."})
    form = {key: values[-1] for key, values in parse_qs(body.decode("utf-8", "replace"), max_num_fields=20).items()}
    given = {
        question["id"]: form.get(f"q_{question['id']}")
        for question in view["questions"]
        if form.get(f"q_{question['id']}")
    }
    try:
        submitted, _, _ = await answers.submit(token, score=form.get("score"), answers=given, locale=locale)
    except Conflict:
        return _page("closed", locale, 409, survey=view)
    except Gone:
        return _page("expired", locale, 410, survey=None)
    except PolkuError as error:
        if error.status >= 500:
            raise
        field = str(error.details.get("field") or "score")
        previous = {"score": form.get("score"), "answers": given}
        return _page(
            "form",
            locale,
            422,
            survey=view,
            answer=previous,
            errors={field: _in_words(field, error.message, view, locale)},
        )
    return _page(
        "thanks",
        locale,
        200,
        survey=view,
        can_edit=submitted.can_edit(wall_clock_ms()),
        message=_edit_note(submitted, locale),
    )


def _in_words(field: str, message: str, view: dict[str, Any], locale: str) -> str:
    """An answer's problem in the page's language (the API's messages are English)."""
    text = ui_text(locale)
    if field == "score":
        low, high = view["scale"]
        return text["error_score"].format(low=low, high=high)
    question = next((q for q in view["questions"] if f"answers.{q['id']}" == field), None)
    if question is not None and question["type"] == "choice":
        return text["error_choice"]
    if question is not None and message.startswith("answers."):
        return (
            text["error_too_long"].format(max_length=question["max_length"])
            if "at most" in message
            else text["error_required"]
        )
    return text["error_required"]


async def stylesheet(request: Request) -> Response:
    css = resources.files("polku.web").joinpath("static/survey.css").read_text()
    return Response(css, media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})


routes = [
    Route("/v1/surveys", list_surveys, methods=["GET"]),
    Route("/v1/surveys/schema", get_schema, methods=["GET"]),
    Route("/v1/surveys/validate", validate_survey, methods=["POST"]),
    Route("/v1/surveys/{survey_id}", survey, methods=["GET", "PUT"]),
    Route("/v1/surveys/{survey_id}/pause", pause_survey, methods=["POST"]),
    Route("/v1/surveys/{survey_id}/resume", resume_survey, methods=["POST"]),
    Route("/v1/surveys/{survey_id}/archive", archive_survey, methods=["POST"]),
    Route("/v1/surveys/{survey_id}/invitations", survey_invitations, methods=["GET"]),
    Route("/v1/profiles/{customer_id}/surveys", profile_surveys, methods=["GET"]),
    Route("/v1/feedback/metrics", metrics, methods=["GET"]),
    Route("/v1/feedback/counts", counts, methods=["GET"]),
    Route("/v1/invitations/{token}", get_invitation, methods=["GET"]),
    Route("/v1/invitations/{token}/answer", answer_invitation, methods=["POST"]),
    Route("/s/static/survey.css", stylesheet, methods=["GET"]),
    Route("/s/{token}", page, methods=["GET", "POST"]),
    Route("/s/{token}/opt-out", opt_out_page, methods=["POST"]),
]
