"""schemathesis against the application in-process: every operation of
``/openapi.json``, called with the credentials its ``security`` names, answers
without a server error, with a documented status, and as its schemas say; requests
that break the schema are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance
from schemathesis.config import SchemathesisConfig
from starlette.applications import Starlette
from tests.conftest import ADMIN_TOKEN, WRITE_KEY

from polku.config import Settings
from polku.web.app import create_app
from polku.web.openapi import build_openapi

# The credentials each security scheme of the document names, and 413 (a size limit)
# counted among the ways to refuse invalid data.
CONFIG = SchemathesisConfig.from_str(f"""
[auth.openapi.writeKey]
username = "{WRITE_KEY}"
password = ""

[auth.openapi.adminToken]
bearer = "{ADMIN_TOKEN}"

[checks.negative_data_rejection]
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]
""")

# Operations whose schema-valid requests may still be refused with 400, for what JSON
# Schema cannot say: a timestamp before 1970 or out of range after clock-skew correction,
# the type a re-submitted body needs, a JMESPath expression that does not compile, a
# profile lookup by exactly one identifier that must look like one (an e-mail address),
# a survey's wording in every locale, an answer on its survey's own scale.
# Every other check still runs on them.
SEMANTIC_VALIDATION = {
    *(f"/v1/{kind}" for kind in ("track", "identify", "page", "screen", "group", "alias")),
    "/v1/quarantine/{entry_id}/resubmit",
    "/v1/workspace/config",
    "/v1/profiles/lookup",
    "/v1/journeys/{journey_id}",
    "/v1/journeys/validate",
    "/v1/surveys/{survey_id}",
    "/v1/surveys/validate",
    "/v1/invitations/{token}/answer",
    "/v1/feedback/metrics",
    "/s/{token}",
    "/v1/analytics/{name}",
    "/v1/decide",
    "/v1/actions",
    "/v1/actions/validate",
}

# The document the app serves (a test below holds the two equal), loaded without an
# app: schemathesis' fixture-based loader does not run under pytest 9, and each
# operation gets its own app and store below.
schema = schemathesis.openapi.from_dict(build_openapi(), config=CONFIG)


@pytest.fixture
def app(tmp_path: Path) -> Starlette:
    """A fresh application and store per operation. Its lifespan starts with the first
    request schemathesis sends, and schemathesis ends it with the test."""
    return create_app(
        Settings(data_dir=tmp_path / "data", write_key=WRITE_KEY, admin_token=ADMIN_TOKEN, processor=False)
    )


@schema.parametrize()
@settings(max_examples=25, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case: schemathesis.Case, app: Starlette) -> None:
    # The operation was collected before its app existed; the checks that send
    # requests of their own (unsupported methods, ignored auth) look for the app on
    # the operation and on its schema.
    case.operation.app = case.operation.schema.app = app
    excluded = [positive_data_acceptance] if case.operation.path in SEMANTIC_VALIDATION else []
    case.call_and_validate(base_url="http://testserver", excluded_checks=excluded)


def test_the_fuzzed_document_is_the_one_served(app: Starlette) -> None:
    served = schemathesis.openapi.from_asgi("/openapi.json", app)
    assert served.raw_schema == build_openapi()
