"""The OpenAPI 3.1 document, built from the msgspec structs the routes decode and
encode (so the schemas cannot drift from the code) plus a table of operations.

Starlette has no schema generator of its own that knows msgspec; this module is
that table, kept beside the routes and checked by schemathesis in the test suite."""

from __future__ import annotations

from typing import Any

import msgspec

from polku import __version__
from polku.core.action_spec import CatalogueSpec
from polku.core.events import CHANNEL_PATTERN, MESSAGE_TYPES, BatchEnvelope, Event, RawMessage
from polku.core.journey_spec import JourneySpec
from polku.core.limits import MAX_BATCH_EVENTS, MAX_ID_CHARS, MAX_REQUEST_BYTES
from polku.core.survey_spec import SurveySpec
from polku.core.workspace import KNOWN_SCOPES, NAME_PATTERN, WorkspaceConfig
from polku.engine.ingest import IngestResult
from polku.web.admin_routes import KeyRequest, SourceRequest, WorkspaceRequest

ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Invalid input (JSON error body names what and where).",
        401: "Missing or invalid credentials.",
        404: "Not found.",
        409: "Conflict.",
        413: "A size limit was exceeded.",
        415: "Unsupported Content-Encoding.",
        503: "Overloaded; retry after `Retry-After` seconds.",
    }
    return {str(code): {"description": text[code], **_json(ERROR)} for code in codes}


ID = {"anyOf": [{"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS}, {"type": "integer"}]}
REQUIRED_BY_TYPE = {"track": "event", "group": "groupId", "alias": "previousId"}


def _message_schema(kind: str) -> dict[str, Any]:
    """What a single-message endpoint needs beyond ``RawMessage``'s types. A message
    the schema admits can still be refused with 400 (and quarantined) for what JSON
    Schema cannot say: a timestamp before 1970, a message over 32 KB."""
    rules: list[dict[str, Any]] = [
        {"$ref": "#/components/schemas/RawMessage"},
        {
            "anyOf": [
                {"required": ["userId"], "properties": {"userId": ID}},
                {"required": ["anonymousId"], "properties": {"anonymousId": ID}},
            ]
        },
    ]
    field = REQUIRED_BY_TYPE.get(kind)
    if field == "event":
        rules.append(
            {
                "required": ["event"],
                "properties": {"event": {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS}},
            }
        )
    elif field is not None:
        rules.append({"required": [field], "properties": {field: ID}})
    return {"allOf": rules, "description": f"A Segment `{kind}` message: `userId` or `anonymousId` is required."}


INGEST_ERRORS = (400, 401, 413, 415, 503)
WRITE_KEY: list[dict[str, list[str]]] = [{"writeKey": []}]
ADMIN: list[dict[str, list[str]]] = [{"adminToken": []}]


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string", "maxLength": 256},
    }


def _read(operation: str, summary: str, parameters: list[dict[str, Any]], errors: tuple[int, ...]) -> dict[str, Any]:
    return {
        "get": {
            "operationId": operation,
            "summary": summary,
            "security": ADMIN,
            "parameters": parameters,
            "responses": {"200": {"description": "OK", **_json({"type": "object"})}, **_errors(*errors)},
        }
    }


def _profile_paths() -> dict[str, Any]:
    from polku.web.openapi_profiles import profile_paths as paths  # it imports this module's helpers

    return paths()


def _journey_paths() -> dict[str, Any]:
    """Journeys: definitions, their lifecycle and stats, and per customer (docs/journeys.md)."""
    journey = [
        {
            "name": "journey_id",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_\\-]{0,62}$"},
        }
    ]
    customer = [{"name": "customer_id", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 256}}]
    customer_filters = [
        _query("journey", "Only this journey."),
        _query("limit", "At most this many rows, newest first.", {"type": "integer", "minimum": 1, "maximum": 1000}),
    ]
    document = {
        "required": True,
        "description": "The journey as YAML (`application/yaml`, `text/yaml`) or JSON, at most 1 MB.",
        **_json({"$ref": "#/components/schemas/JourneySpec"}),
    }

    def lifecycle(operation: str, summary: str) -> dict[str, Any]:
        return {
            "post": {
                "operationId": operation,
                "summary": summary,
                "security": ADMIN,
                "parameters": journey,
                "responses": {"200": {"description": "The journey's status.", **_json({"type": "object"})}}
                | _errors(401, 404, 409),
            }
        }

    return {
        "/v1/journeys": _read(
            "list_journeys", "Every journey: current version, status, entered / active / goal counts.", [], (401,)
        ),
        "/v1/journeys/schema": _read("journey_schema", "The JSON Schema of a journey document.", [], (401,)),
        "/v1/journeys/validate": {
            "post": {
                "operationId": "validate_journey",
                "summary": "Check a journey document against the workspace without storing it.",
                "security": ADMIN,
                "requestBody": document,
                "responses": {"200": {"description": "Valid.", **_json({"type": "object"})}} | _errors(400, 401, 413),
            }
        },
        "/v1/journeys/{journey_id}": {
            **_read(
                "get_journey",
                "The current version: its document, parsed spec, status and versions.",
                journey,
                (401, 404),
            ),
            "put": {
                "operationId": "deploy_journey",
                "summary": "Deploy a journey as its next version (`?dry_run=true` validates only).",
                "description": "An invalid document is a 400 naming the file, line and field, and is never "
                "stored. A document identical to the current version creates no new version (200).",
                "security": ADMIN,
                "parameters": [
                    *journey,
                    _query("dry_run", "`true`: validate only.", {"type": "string", "enum": ["true", "false"]}),
                ],
                "requestBody": document,
                "responses": {
                    "200": {"description": "Unchanged, or validated (dry run).", **_json({"type": "object"})},
                    "201": {"description": "Deployed as a new version.", **_json({"type": "object"})},
                    **_errors(400, 401, 404, 413),
                },
            },
        },
        "/v1/journeys/{journey_id}/versions/{version}": _read(
            "get_journey_version",
            "One stored version of a journey.",
            [
                *journey,
                {
                    "name": "version",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 999_999_999},
                },
            ],
            (400, 401, 404),
        ),
        "/v1/journeys/{journey_id}/pause": lifecycle(
            "pause_journey", "Stop new entries (running instances go on to their end)."
        ),
        "/v1/journeys/{journey_id}/resume": lifecycle("resume_journey", "Make a paused or archived journey active."),
        "/v1/journeys/{journey_id}/archive": lifecycle("archive_journey", "End the journey and its instances."),
        "/v1/journeys/{journey_id}/stats": _read(
            "journey_stats",
            "Entries, active instances, endings, steps, actions and goal uplift against the holdout, per version.",
            journey,
            (401, 404),
        ),
        "/v1/profiles/{customer_id}/journeys": _read(
            "get_profile_journeys",
            "The customer's live journey instances and transitions, newest first (why a message was or was not sent).",
            [*customer, *customer_filters],
            (400, 401, 404),
        ),
        "/v1/profiles/{customer_id}/messages": _read(
            "get_profile_messages",
            "The customer's in-app inbox and the messages decided for them, newest first.",
            [*customer, *customer_filters],
            (400, 401, 404),
        ),
    }


def decision_paths() -> dict[str, Any]:
    from polku.web.openapi_decisions import decision_paths as paths  # it imports this module's helpers

    return paths()


def analytics_paths() -> dict[str, Any]:
    from polku.web.openapi_analytics import analytics_paths as paths  # it imports this module's helpers

    return paths()


def survey_paths() -> dict[str, Any]:
    from polku.web.openapi_surveys import survey_paths as paths  # it imports this module's helpers

    return paths()


def build_openapi() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [
            RawMessage,
            BatchEnvelope,
            Event,
            IngestResult,
            SourceRequest,
            KeyRequest,
            WorkspaceRequest,
            WorkspaceConfig,
            JourneySpec,
            SurveySpec,
            CatalogueSpec,
        ],
        ref_template="#/components/schemas/{name}",
    )
    # What the routes check beyond the structs' types, so that the document admits
    # only requests the server can accept.
    components["SourceRequest"]["properties"]["name"]["pattern"] = f"^{NAME_PATTERN.pattern}$"
    components["SourceRequest"]["properties"]["channel"]["pattern"] = f"^{CHANNEL_PATTERN.pattern}$"
    components["WorkspaceRequest"]["properties"]["id"]["pattern"] = f"^{NAME_PATTERN.pattern}$"
    components["WorkspaceRequest"]["properties"]["channel"]["pattern"] = f"^{CHANNEL_PATTERN.pattern}$"
    components["WorkspaceRequest"]["properties"]["name"]["anyOf"][0].update({"minLength": 1, "maxLength": 200})
    components["KeyRequest"]["anyOf"] = [
        {"properties": {"kind": {"const": "admin"}}},
        # A write key names its source and has no scopes (it ingests, nothing else).
        {"required": ["source"], "properties": {"source": {"type": "string"}, "scopes": {"type": "null"}}},
    ]
    components["KeyRequest"]["properties"]["scopes"]["anyOf"][0].update(
        {"items": {"enum": list(KNOWN_SCOPES)}, "minItems": 1}
    )
    components["KeyRequest"]["description"] = (
        "An admin token (with some of the scopes read, manage, privacy, ingest, workspaces — only those the "
        "token asking has; without `scopes`, those of read, manage and privacy it has), or a write key for an "
        "existing `source`."
    )
    components["BatchEnvelope"]["properties"]["batch"]["maxItems"] = MAX_BATCH_EVENTS
    components["WorkspaceConfig"]["properties"]["webhooks"]["propertyNames"] = {"pattern": f"^{NAME_PATTERN.pattern}$"}
    components["WebhookMapping"]["properties"]["channel"]["pattern"] = f"^{CHANNEL_PATTERN.pattern}$"
    components["WebhookMapping"]["properties"]["type"]["enum"] = sorted(MESSAGE_TYPES)
    components["Error"] = {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    }
    paths: dict[str, Any] = {}
    for kind in ("track", "identify", "page", "screen", "group", "alias"):
        paths[f"/v1/{kind}"] = {
            "post": {
                "operationId": f"ingest_{kind}",
                "summary": f"Record one `{kind}` message (Segment HTTP Tracking API).",
                "security": WRITE_KEY,
                "requestBody": {"required": True, **_json(_message_schema(kind))},
                "responses": {
                    "200": {"description": "Stored durably.", **_json({"$ref": "#/components/schemas/IngestResult"})},
                    **_errors(*INGEST_ERRORS),
                },
            }
        }
    paths["/v1/batch"] = {
        "post": {
            "operationId": "ingest_batch",
            "summary": f"Record up to {MAX_BATCH_EVENTS} messages of any type; invalid ones are quarantined.",
            "description": f"Request bodies up to {MAX_REQUEST_BYTES} bytes after decompression; 32 KB per message.",
            "security": WRITE_KEY,
            "requestBody": {"required": True, **_json({"$ref": "#/components/schemas/BatchEnvelope"})},
            "responses": {
                "200": {
                    "description": "Stored durably; `rejected` lists quarantined items.",
                    **_json({"$ref": "#/components/schemas/IngestResult"}),
                },
                **_errors(*INGEST_ERRORS),
            },
        }
    }
    # Segment's alias of /v1/batch: the same operation under another path.
    paths["/v1/import"] = {
        "post": {**paths["/v1/batch"]["post"], "operationId": "ingest_import", "summary": "Alias of `/v1/batch`."}
    }
    paths["/v1/webhooks/{source}"] = {
        "post": {
            "operationId": "ingest_webhook",
            "summary": "Receive a webhook payload mapped to events by the workspace's `webhooks.<source>` mapping.",
            "security": WRITE_KEY,
            "parameters": [
                {
                    "name": "source",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"},
                }
            ],
            "requestBody": {"required": True, **_json({})},
            "responses": {
                "200": {"description": "Stored durably.", **_json({"$ref": "#/components/schemas/IngestResult"})},
                **_errors(*INGEST_ERRORS, 404),
            },
        }
    }
    paths["/v1/events"] = {
        "get": {
            "operationId": "list_events",
            "summary": "Events of the workspace in log order, filtered and paged.",
            "security": ADMIN,
            "parameters": [
                _query("identifier", "userId or anonymousId."),
                _query("user_id", "userId."),
                _query("anonymous_id", "anonymousId."),
                _query(
                    "type",
                    "Message type; empty, like every filter here, means any.",
                    {"type": "string", "enum": ["", "track", "identify", "page", "screen", "group", "alias"]},
                ),
                _query("name", "Event name (track) or page/screen name."),
                _query("channel", "Channel."),
                _query("since", "Earliest timestamp (ISO 8601), inclusive.", {"type": "string", "format": "date-time"}),
                _query("until", "Latest timestamp (ISO 8601), exclusive.", {"type": "string", "format": "date-time"}),
                _query(
                    "cursor", "`next_cursor` of the previous page.", {"type": "integer", "minimum": 0, "maximum": 2**62}
                ),
                _query("limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": 1000}),
            ],
            "responses": {
                "200": {"description": "A page of events.", **_json({"type": "object"})},
                **_errors(400, 401),
            },
        }
    }
    entry_id = [
        {
            "name": "entry_id",
            "in": "path",
            "required": True,
            "schema": {"type": "integer", "minimum": 1, "maximum": 10**18 - 1},
        }
    ]
    paths["/v1/audit"] = {
        "get": {
            "operationId": "list_audit",
            "summary": "The audit log of admin actions: who (which admin token), what, when, from where, and the "
            "answer's status; oldest first (docs/security.md).",
            "security": ADMIN,
            "parameters": [
                _query(
                    "cursor", "`next_cursor` of the previous page.", {"type": "integer", "minimum": 0, "maximum": 2**62}
                ),
                _query("limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": 1000}),
            ],
            "responses": {
                "200": {"description": "A page of entries.", **_json({"type": "object"})},
                **_errors(400, 401),
            },
        }
    }
    paths["/v1/quarantine"] = {
        "get": {
            "operationId": "list_quarantine",
            "summary": "Refused messages with their reasons.",
            "security": ADMIN,
            "parameters": [
                _query(
                    "status", "Which entries.", {"type": "string", "enum": ["open", "resubmitted", "discarded", "all"]}
                ),
                _query(
                    "cursor", "`next_cursor` of the previous page.", {"type": "integer", "minimum": 0, "maximum": 2**62}
                ),
                _query("limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": 1000}),
            ],
            "responses": {
                "200": {"description": "A page of entries.", **_json({"type": "object"})},
                **_errors(400, 401),
            },
        }
    }
    paths["/v1/quarantine/{entry_id}"] = {
        "get": {
            "operationId": "get_quarantined",
            "summary": "One quarantine entry.",
            "security": ADMIN,
            "parameters": entry_id,
            "responses": {"200": {"description": "The entry.", **_json({"type": "object"})}, **_errors(400, 401, 404)},
        }
    }
    paths["/v1/quarantine/{entry_id}/resubmit"] = {
        "post": {
            "operationId": "resubmit_quarantined",
            "summary": "Validate the stored (or a corrected) message again and store it.",
            "security": ADMIN,
            "parameters": entry_id,
            "requestBody": {"required": False, **_json({"$ref": "#/components/schemas/RawMessage"})},
            "responses": {
                "200": {"description": "Stored.", **_json({"$ref": "#/components/schemas/IngestResult"})},
                **_errors(400, 401, 404, 409),
            },
        }
    }
    paths["/v1/quarantine/{entry_id}/discard"] = {
        "post": {
            "operationId": "discard_quarantined",
            "summary": "Mark an entry discarded.",
            "security": ADMIN,
            "parameters": entry_id,
            "responses": {
                "200": {"description": "Discarded.", **_json({"type": "object"})},
                **_errors(400, 401, 404, 409),
            },
        }
    }
    paths["/v1/workspace"] = {
        "get": {
            "operationId": "get_workspace",
            "summary": "The workspace, its sources and configuration.",
            "security": ADMIN,
            "responses": {"200": {"description": "The workspace.", **_json({"type": "object"})}, **_errors(401)},
        }
    }
    paths["/v1/workspace/config"] = {
        "get": {
            "operationId": "get_workspace_config",
            "summary": "The workspace configuration as stored (edit it and PUT it back).",
            "security": ADMIN,
            "responses": {"200": {"description": "The configuration.", **_json({"type": "object"})}, **_errors(401)},
        },
        "put": {
            "operationId": "put_workspace_config",
            "summary": "Replace the workspace configuration (YAML or JSON).",
            "security": ADMIN,
            "description": "The mappings' JMESPath expressions are compiled on the way in; one that does not compile is a 400.",
            "requestBody": {"required": True, **_json({"$ref": "#/components/schemas/WorkspaceConfig"})},
            "responses": {"200": {"description": "Stored.", **_json({"type": "object"})}, **_errors(400, 401, 413)},
        },
    }
    paths["/v1/sources"] = {
        "post": {
            "operationId": "create_source",
            "summary": "Add a source with its default channel; returns a new write key.",
            "security": ADMIN,
            "requestBody": {"required": True, **_json({"$ref": "#/components/schemas/SourceRequest"})},
            "responses": {
                "201": {"description": "Created, with a new write key (shown once).", **_json({"type": "object"})},
                **_errors(400, 401, 409),
            },
        }
    }
    paths["/v1/keys"] = {
        "get": {
            "operationId": "list_keys",
            "summary": "Keys of the workspace (ids only; keys are stored hashed).",
            "security": ADMIN,
            "parameters": [_query("kind", "write or admin.", {"type": "string", "enum": ["write", "admin"]})],
            "responses": {"200": {"description": "The keys.", **_json({"type": "object"})}, **_errors(400, 401)},
        },
        "post": {
            "operationId": "create_key",
            "summary": "Create a write key (for a source) or an admin token; shown once.",
            "security": ADMIN,
            "requestBody": {"required": True, **_json({"$ref": "#/components/schemas/KeyRequest"})},
            "responses": {"201": {"description": "Created.", **_json({"type": "object"})}, **_errors(400, 401, 404)},
        },
    }
    workspace = {"type": "object", "properties": {"id": {"type": "string"}}}
    paths["/v1/workspaces"] = {
        "get": {
            "operationId": "list_workspaces",
            "summary": "Every workspace: id, name, creation time (needs the `workspaces` scope).",
            "security": ADMIN,
            "responses": {"200": {"description": "The workspaces.", **_json({"type": "object"})}, **_errors(401)},
        },
        "post": {
            "operationId": "create_workspace",
            "summary": "A new workspace (a tenant of its own) with a `default` source, its first admin token and a "
            "write key, shown once (needs the `workspaces` scope; docs/security.md).",
            "security": ADMIN,
            "requestBody": {"required": True, **_json({"$ref": "#/components/schemas/WorkspaceRequest"})},
            "responses": {
                "201": {"description": "Created: the workspace and its keys.", **_json(workspace)},
                **_errors(400, 401, 409),
            },
        },
    }
    paths["/v1/keys/{key_id}"] = {
        "delete": {
            "operationId": "revoke_key",
            "summary": "Revoke a key by its id (a prefix of its hash).",
            "security": ADMIN,
            "parameters": [
                {
                    "name": "key_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[0-9a-f]{8,64}$"},
                }
            ],
            "responses": {"200": {"description": "Revoked.", **_json({"type": "object"})}, **_errors(400, 401, 404)},
        }
    }
    paths.update(_profile_paths())
    paths.update(_journey_paths())
    paths.update(survey_paths())
    paths.update(analytics_paths())
    paths.update(decision_paths())
    paths["/v1/deliveries"] = _read(
        "list_deliveries",
        "The dispatcher's ledger: each message's delivery status (pending, sent, dead), attempts and last error,"
        " newest first.",
        [
            _query("customer_id", "Only this customer's deliveries."),
            _query(
                "status", "Only deliveries in this status.", {"type": "string", "enum": ["pending", "sent", "dead"]}
            ),
            _query("limit", "At most this many rows.", {"type": "integer", "minimum": 1, "maximum": 1000}),
        ],
        (400, 401),
    )
    for path, description in (
        ("/healthz", "The process is up."),
        ("/readyz", "The store is open and accepting writes."),
    ):
        paths[path] = {
            "get": {
                "operationId": path.strip("/"),
                "summary": description,
                "responses": {"200": {"description": "OK", **_json({"type": "object"})}, **_errors(503)},
            }
        }
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics.",
            "responses": {
                "200": {
                    "description": "Prometheus text format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    }
    # Every operation a key opens may meet the key's rate limit (docs/security.md);
    # the write keys' is off unless configured, the admin tokens' is on.
    for operations in paths.values():
        for operation in operations.values():
            if operation.get("security") in (ADMIN, WRITE_KEY) and "429" not in operation["responses"]:
                operation["responses"]["429"] = {
                    "description": "The key's rate limit; retry after `Retry-After` seconds.",
                    **_json(ERROR),
                }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "polku",
            "version": __version__,
            "description": "Real-time customer journey orchestration: ingestion, profiles and identity API.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "writeKey": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "Write key as the Basic username, empty password.",
                },
                "adminToken": {"type": "http", "scheme": "bearer", "description": "Admin token."},
            },
        },
    }
