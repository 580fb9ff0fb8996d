"""The survey part of the OpenAPI document (docs/surveys.md): definitions, their
invitations, feedback metrics and answer counts, and the answers API whose credential is the
invitation's signed token."""

from __future__ import annotations

from typing import Any

from polku.core.feedback_metrics import GROUPINGS
from polku.engine.feedback_reports import DEFAULT_PERIOD_DAYS, MAX_COUNT_DAYS
from polku.web.openapi import ADMIN, _errors, _json, _query, _read

SURVEY_ID = {
    "name": "survey_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_\\-]{0,62}$"},
}
TOKEN = {"name": "token", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 128}}
DOCUMENT = {
    "required": True,
    "description": "The survey as YAML (`application/yaml`, `text/yaml`) or JSON, at most 1 MB.",
    **_json({"$ref": "#/components/schemas/SurveySpec"}),
}
ANSWER = {
    "type": "object",
    "required": ["score"],
    "properties": {
        "score": {"type": "integer", "description": "On the survey's scale (CSAT 1-5, NPS 0-10, CES 1-7)."},
        "answers": {"type": "object", "description": "Question id → the option's value or the text."},
        "comment": {"type": ["string", "null"], "maxLength": 5000},
        "customer_id": {"type": "string", "description": "Who answers, when the front end knows: must be the invitee."},
        "locale": {"type": "string", "maxLength": 16},
    },
}


def _lifecycle(operation: str, summary: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation,
            "summary": summary,
            "security": ADMIN,
            "parameters": [SURVEY_ID],
            "responses": {"200": {"description": "The survey's status.", **_json({"type": "object"})}}
            | _errors(401, 404, 409),
        }
    }


def survey_paths() -> dict[str, Any]:
    customer = {"name": "customer_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 256}}
    period = [
        _query("since", "Earliest moment (ISO 8601), inclusive.", {"type": "string", "format": "date-time"}),
        _query("until", "Latest moment (ISO 8601), exclusive.", {"type": "string", "format": "date-time"}),
    ]
    return {
        "/v1/surveys": _read(
            "list_surveys",
            "Every survey: version, status, invitations sent / not sent / answered (30 days).",
            [],
            (401,),
        ),
        "/v1/surveys/schema": _read("survey_schema", "The JSON Schema of a survey document.", [], (401,)),
        "/v1/surveys/validate": {
            "post": {
                "operationId": "validate_survey",
                "summary": "Check a survey document against the workspace without storing it.",
                "security": ADMIN,
                "requestBody": DOCUMENT,
                "responses": {"200": {"description": "Valid.", **_json({"type": "object"})}} | _errors(400, 401, 413),
            }
        },
        "/v1/surveys/{survey_id}": {
            **_read(
                "get_survey", "The current version: document, parsed spec, status, versions.", [SURVEY_ID], (401, 404)
            ),
            "put": {
                "operationId": "deploy_survey",
                "summary": "Deploy a survey as its next version (`?dry_run=true` validates only).",
                "description": "An invalid document is a 400 naming the file, line and field, and is never stored.",
                "security": ADMIN,
                "parameters": [
                    SURVEY_ID,
                    _query("dry_run", "`true`: validate only.", {"type": "string", "enum": ["true", "false"]}),
                ],
                "requestBody": DOCUMENT,
                "responses": {
                    "200": {"description": "Unchanged, or validated (dry run).", **_json({"type": "object"})},
                    "201": {"description": "Deployed as a new version.", **_json({"type": "object"})},
                    **_errors(400, 401, 404, 413),
                },
            },
        },
        "/v1/surveys/{survey_id}/pause": _lifecycle("pause_survey", "Send no new invitations (sent links still work)."),
        "/v1/surveys/{survey_id}/resume": _lifecycle("resume_survey", "Make a paused or archived survey active."),
        "/v1/surveys/{survey_id}/archive": _lifecycle("archive_survey", "Retire the survey and its triggers."),
        "/v1/surveys/{survey_id}/invitations": _read(
            "list_survey_invitations",
            "Invitations of the survey, newest first: sent, and not sent with the reason; totals by reason.",
            [
                SURVEY_ID,
                _query("status", "Only these.", {"type": "string", "enum": ["sent", "suppressed"]}),
                _query("since", "Decided at or after (ISO 8601).", {"type": "string", "format": "date-time"}),
                _query("limit", "At most this many.", {"type": "integer", "minimum": 1, "maximum": 1000}),
            ],
            (400, 401, 404),
        ),
        "/v1/profiles/{customer_id}/surveys": _read(
            "get_profile_surveys",
            "The customer's open in-app surveys, ready to show (with the token to answer with); "
            "`?all=true`: every invitation of theirs, sent or not.",
            [
                customer,
                _query("all", "`true`: every invitation.", {"type": "string", "enum": ["true", "false"]}),
                _query("limit", "At most this many.", {"type": "integer", "minimum": 1, "maximum": 1000}),
            ],
            (400, 401, 404),
        ),
        "/v1/feedback/metrics": _read(
            "feedback_metrics",
            "NPS, CSAT or CES with confidence intervals and response rate, overall or by a grouping.",
            [
                _query("metric", "The metric.", {"type": "string", "enum": ["nps", "csat", "ces"]}),
                _query("by", "The grouping.", {"type": "string", "enum": list(GROUPINGS)}),
                *period,
                _query("survey", "Only this survey."),
                _query("journey", "Only answers to this journey's survey steps."),
                _query("step", "Only this journey step."),
                _query("channel", "Only answers on this channel."),
                _query("segment", "Only customers in this segment when they answered."),
                _query(
                    "confidence",
                    "Of the intervals (default 0.95).",
                    {"type": "number", "exclusiveMinimum": 0.5, "exclusiveMaximum": 0.999},
                ),
            ],
            (400, 401),
        ),
        "/v1/feedback/counts": _read(
            "feedback_counts",
            "Answers per metric (NPS, CSAT, CES) in the last `days` days, and the metric most answered.",
            [
                _query(
                    "days",
                    f"The period, in days up to now (default {DEFAULT_PERIOD_DAYS}).",
                    {"type": "integer", "minimum": 1, "maximum": MAX_COUNT_DAYS},
                )
            ],
            (400, 401),
        ),
        "/s/{token}": {
            method: {
                "operationId": f"survey_page_{method}",
                "summary": "The hosted survey page (HTML): the form, or the answer posted from it "
                "(`application/x-www-form-urlencoded`: `score`, `q_<question id>`).",
                "security": [],
                "parameters": [TOKEN],
                **(
                    {
                        "requestBody": {
                            "required": False,
                            "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}},
                        }
                    }
                    if method == "post"
                    else {}
                ),
                "responses": {
                    "200": {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}},
                    **{
                        str(code): {"description": text, "content": {"text/html": {"schema": {"type": "string"}}}}
                        for code, text in (
                            (403, "The link is not valid."),
                            (409, "Answered, and the time to change it is over."),
                            (410, "The link expired."),
                            (413, "The answer is too long."),
                            (422, "The answer needs correcting (the form says where)."),
                        )
                    },
                },
            }
            for method in ("get", "post")
        },
        "/s/{token}/opt-out": {
            "post": {
                "operationId": "survey_page_opt_out",
                "summary": "\"Don't ask me for feedback again\" on the hosted page (HTML): the person's consent to "
                "the `surveys` purpose becomes no (docs/surveys.md).",
                "security": [],
                "parameters": [TOKEN],
                "responses": {
                    str(code): {"description": text, "content": {"text/html": {"schema": {"type": "string"}}}}
                    for code, text in (
                        (200, "Done: the page says so."),
                        (403, "The link is not valid."),
                        (410, "The link expired."),
                    )
                },
            }
        },
        "/s/static/survey.css": {
            "get": {
                "operationId": "survey_page_stylesheet",
                "summary": "The hosted survey page's stylesheet.",
                "security": [],
                "responses": {"200": {"description": "CSS.", "content": {"text/css": {"schema": {"type": "string"}}}}},
            }
        },
        "/v1/invitations/{token}": {
            "get": {
                "operationId": "get_invitation",
                "summary": "The survey of an invitation, in the invitee's locale, and its answer so far (token only).",
                "security": [],
                "parameters": [TOKEN],
                "responses": {"200": {"description": "The invitation.", **_json({"type": "object"})}}
                | {
                    "403": {"description": "The token is not valid.", **_json({"$ref": "#/components/schemas/Error"})},
                    "410": {"description": "The link expired.", **_json({"$ref": "#/components/schemas/Error"})},
                },
            }
        },
        "/v1/invitations/{token}/answer": {
            "post": {
                "operationId": "answer_invitation",
                "summary": "Answer an invitation (the app, a chatbot, an IVR); a second answer within the edit window "
                "edits it.",
                "security": [],
                "parameters": [TOKEN],
                "requestBody": {"required": True, **_json(ANSWER)},
                "responses": {
                    "200": {"description": "Edited, or the same answer again.", **_json({"type": "object"})},
                    "201": {"description": "Answered.", **_json({"type": "object"})},
                    **_errors(400, 409, 413),
                    "403": {
                        "description": "Not valid, or another customer's.",
                        **_json({"$ref": "#/components/schemas/Error"}),
                    },
                    "410": {"description": "The link expired.", **_json({"$ref": "#/components/schemas/Error"})},
                },
            }
        },
    }
