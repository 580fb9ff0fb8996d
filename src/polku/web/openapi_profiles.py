"""The customers part of the OpenAPI document: lookup, profiles, timelines, the
agent view, accounts, identity (docs/profiles.md, docs/identity.md)."""

from __future__ import annotations

from typing import Any

from polku.core.events import CHANNEL_PATTERN
from polku.engine.profile_views import MAX_RECENT_CUSTOMERS
from polku.web.openapi import ADMIN, _errors, _json, _query, _read

_CONSENT_REQUEST: Any = {
    "type": "object",
    "required": ["purposes"],
    "additionalProperties": False,
    "properties": {
        "purposes": {
            "type": "object",
            "minProperties": 1,
            "maxProperties": 50,
            "propertyNames": {"minLength": 1, "maxLength": 64},
            "additionalProperties": {"type": "boolean"},
        },
        "channel": {"type": "string", "pattern": f"^{CHANNEL_PATTERN.pattern}$"},
    },
}


def _erase_operation(customer: list[dict[str, Any]]) -> dict[str, Any]:
    receipt = {"description": 'The receipt (docs/privacy.md, "Erasing a person").', **_json({"type": "object"})}
    return {
        "operationId": "erase_profile",
        "summary": "The right to be forgotten: erase the person (and every id merged into them) from the log, the "
        "quarantine, the state, journeys, messages, survey invitations and answers, decisions, the delivery ledger, "
        "the audit log's paths and the analytics store. Needs the `privacy` scope.",
        "security": ADMIN,
        "parameters": [
            *customer,
            _query(
                "suppress",
                "Keep the person's identifiers as hashes, so that their events are not taken in again.",
                {"type": "string", "enum": ["true", "false", "1", "0"]},
            ),
            _query(
                "wait",
                "Seconds to wait for every store to be clean (default 10).",
                {"type": "integer", "minimum": 0, "maximum": 120},
            ),
        ],
        "responses": {
            "200": receipt | {"description": "Erased everywhere: the receipt."},
            "202": receipt | {"description": "Requested, not finished within `wait`: follow `GET /v1/erasures/{id}`."},
            **_errors(400, 401, 404, 503),
        },
    }


def profile_paths() -> dict[str, Any]:
    """Customers, accounts and identity (docs/profiles.md, docs/identity.md)."""
    customer = [{"name": "customer_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 256}}]
    page = [
        _query("after", "`next_cursor` of the previous page.", {"type": "integer", "minimum": 0, "maximum": 2**62}),
        _query("limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": 1000}),
    ]
    recent = MAX_RECENT_CUSTOMERS
    lookup = [
        _query(name, f"Find the customer by {name} (give exactly one parameter).")
        for name in ("user_id", "anonymous_id", "email", "phone", "customer_id")
    ]
    return {
        "/v1/profiles/recent": _read(
            "recent_profiles",
            "The customers behind the newest processed events, newest first: name, contact, event, channel, time.",
            [_query("limit", "At most this many (default 20).", {"type": "integer", "minimum": 1, "maximum": recent})],
            (400, 401),
        ),
        "/v1/profiles/lookup": _read(
            "lookup_profile",
            "The customer with this identifier: identifiers, traits, computed attributes, segments, accounts.",
            lookup,
            (400, 401, 404),
        ),
        "/v1/profiles/{customer_id}": {
            **_read("get_profile", "A customer's profile.", customer, (401, 404)),
            "delete": _erase_operation(customer),
        },
        "/v1/erasures": _read(
            "list_erasures",
            "The workspace's erasure receipts, newest first: when, each store's stage, records removed per store "
            "and table, identifiers suppressed — no personal data (docs/privacy.md).",
            [_query("limit", "At most this many (default 100).", {"type": "integer", "minimum": 1, "maximum": 1000})],
            (400, 401),
        ),
        "/v1/erasures/{erasure_id}": _read(
            "get_erasure",
            "One erasure's receipt (404 until the processor has carried the request out).",
            [{"name": "erasure_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 64}}],
            (401, 404),
        ),
        "/v1/profiles/{customer_id}/timeline": _read(
            "get_timeline",
            "Every event of the customer across channels and merged identifiers, newest first.",
            [
                *customer,
                _query("cursor", "`next_cursor` of the previous page."),
                _query("limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": 200}),
            ],
            (400, 401, 404),
        ),
        "/v1/profiles/{customer_id}/export": _read(
            "export_profile",
            "The right of access: everything held about the person as one JSON document (profile, consent and "
            "policy, every event, journeys, messages, survey invitations and answers, decisions, notes); "
            "docs/privacy.md.",
            customer,
            (401, 404),
        ),
        "/v1/profiles/{customer_id}/consent": {
            **_read(
                "get_profile_consent",
                "Per purpose: the consent given (or the default that applies), and every event that set it — when, "
                "through which channel and source, and what it said, newest first (docs/privacy.md).",
                customer,
                (401, 404),
            ),
            "put": {
                "operationId": "set_profile_consent",
                "summary": "Set some of the person's consent (a preference center, an agent): the purposes named "
                "change, the others keep what was said; applied through the log as an identify of theirs.",
                "security": ADMIN,
                "parameters": customer,
                "requestBody": {"required": True, **_json(_CONSENT_REQUEST)},
                "responses": {
                    "202": {"description": "Taken in: the consent as it will be.", **_json({"type": "object"})},
                    **_errors(400, 401, 404, 503),
                },
            },
        },
        "/v1/profiles/{customer_id}/context": _read(
            "get_context",
            "The agent view: who this is, recent interactions, purchases, feedback, likely reason for contact.",
            customer,
            (401, 404),
        ),
        "/v1/profiles/{customer_id}/policy": _read(
            "get_profile_policy",
            "Per purpose: the customer's consent (given, or the default) and what the contact policy would decide "
            "for a message on each channel now (send, hold until, or skip and why).",
            customer,
            (401, 404),
        ),
        "/v1/accounts/{account_id}": _read(
            "get_account",
            "A B2B account: traits and people.",
            [{"name": "account_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 256}}],
            (401, 404),
        ),
        "/v1/identity/refusals": _read("list_identity_refusals", "Links the merge rules refused.", page, (400, 401)),
        "/v1/identity/changes": _read("list_identity_changes", "The audit of merges and splits.", page, (400, 401)),
        "/v1/processor": _read("processor_status", "How far the processor is behind the log.", [], (401,)),
        "/v1/overview": _read(
            "get_overview",
            "The live overview: events per second by channel (last minute, and two minutes in 5 s buckets), "
            "people, processing lag, open quarantine, deliveries (docs/dashboard.md).",
            [],
            (401,),
        ),
    }
