"""The next-best-action part of the OpenAPI document (docs/decisions.md)."""

from __future__ import annotations

from typing import Any

from polku.web.openapi import ADMIN, _errors, _json, _read

DECIDE = {
    "type": "object",
    "required": ["identifier", "channel"],
    "properties": {
        "identifier": {
            "type": "object",
            "description": "One identifier of the customer: user_id, anonymous_id, email, phone or customer_id.",
            "minProperties": 1,
            "maxProperties": 1,
            "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 256},
        },
        "channel": {"type": "string", "minLength": 1, "maxLength": 64},
        "placement": {"type": "string", "maxLength": 64},
        "context": {
            "type": "object",
            "maxProperties": 32,
            "additionalProperties": {
                "anyOf": [{"type": "string", "maxLength": 256}, {"type": "number"}, {"type": "boolean"}]
            },
        },
        "limit": {"type": "integer", "minimum": 1, "maximum": 20},
    },
}
DOCUMENT = {
    "required": True,
    "description": "The action catalogue as YAML or JSON, at most 1 MB.",
    **_json({"$ref": "#/components/schemas/CatalogueSpec"}),
}


def decision_paths() -> dict[str, Any]:
    customer = {"name": "customer_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 256}}
    return {
        "/v1/decide": {
            "post": {
                "operationId": "decide",
                "summary": "What now for this customer, here: ranked actions with treatments, scores and reasons "
                "(and in a chat, self-service answers and the hand-over decision).",
                "security": ADMIN,
                "requestBody": {"required": True, **_json(DECIDE)},
                "responses": {"200": {"description": "The decision.", **_json({"type": "object"})}}
                | _errors(400, 401, 404, 413),
            }
        },
        "/v1/actions": {
            **_read("get_actions", "The current action catalogue: version, status, actions, document.", [], (401, 404)),
            "put": {
                "operationId": "deploy_actions",
                "summary": "Deploy the action catalogue as its next version (`?dry_run=true` validates only).",
                "security": ADMIN,
                "requestBody": DOCUMENT,
                "responses": {
                    "200": {"description": "Unchanged, or validated.", **_json({"type": "object"})},
                    "201": {"description": "Deployed.", **_json({"type": "object"})},
                    **_errors(400, 401, 413),
                },
            },
        },
        "/v1/actions/validate": {
            "post": {
                "operationId": "validate_actions",
                "summary": "Check an action catalogue without storing it.",
                "security": ADMIN,
                "requestBody": DOCUMENT,
                "responses": {"200": {"description": "Valid.", **_json({"type": "object"})}} | _errors(400, 401, 413),
            }
        },
        "/v1/actions/schema": _read("actions_schema", "The JSON Schema of the action catalogue.", [], (401,)),
        "/v1/actions/stats": _read(
            "action_stats",
            "What the model learned: offers, acceptances, rejections and propensity per action and learning group; "
            "the global holdout's uplift.",
            [],
            (401,),
        ),
        "/v1/actions/pause": {
            "post": {
                "operationId": "pause_actions",
                "summary": "Stop deciding (POST /v1/decide answers 404 until resumed).",
                "security": ADMIN,
                "responses": {"200": {"description": "The status.", **_json({"type": "object"})}} | _errors(401, 404),
            }
        },
        "/v1/actions/resume": {
            "post": {
                "operationId": "resume_actions",
                "summary": "Decide again.",
                "security": ADMIN,
                "responses": {"200": {"description": "The status.", **_json({"type": "object"})}} | _errors(401, 404),
            }
        },
        "/v1/profiles/{customer_id}/interests": _read(
            "get_profile_interests",
            "What the customer is shopping for now (recency-weighted), the likely reason for contact, recent purchases.",
            [customer],
            (401, 404),
        ),
    }
