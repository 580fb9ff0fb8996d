"""Credentials from HTTP headers: write keys as the Basic username (Segment's
convention) and admin tokens as ``Bearer`` (or the Basic username too)."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

from starlette.requests import Request

from polku.core.errors import Forbidden, RateLimited, Unauthorized
from polku.core.workspace import Credential, hash_key
from polku.ports import Catalog

CREDENTIAL_KEY = "polku.credential"
"""Where the admin credential a request was accepted with is kept (its scope), for
the audit trail (``polku.web.audit``)."""


def basic_username(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Unauthorized("the Authorization header is not valid Basic credentials") from None
    return decoded.partition(":")[0] or None


def bearer_or_basic(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    return basic_username(request)


async def admin_access(request: Request, catalog: Catalog) -> Credential:
    token = bearer_or_basic(request)
    if not token:
        raise Unauthorized("an admin token is required: `Authorization: Bearer <token>`")
    credential = await catalog.credential(hash_key(token))
    if credential is None or credential.kind != "admin":
        raise Unauthorized("the admin token is not valid")
    needed = required_scope(request.method, request.url.path)
    if needed not in credential.scopes:
        raise Forbidden(
            f"this admin token has the scopes {', '.join(credential.scopes) or 'none'}; "
            f"{request.method} {request.url.path} needs {needed!r}",
            scope=needed,
        )
    found = getattr(request.app.state, "services", None)
    limiter = getattr(found, "admin_limiter", None)
    if limiter is not None and (wait := limiter.admit(credential.key_hash)):
        raise RateLimited(f"this admin token sent more than its rate limit; retry in {wait} s", retry_after=wait)
    usage = getattr(found, "key_usage", None)
    if usage is not None:
        usage.note(credential.key_hash)
    request.scope[CREDENTIAL_KEY] = credential  # the audit trail's "who" (web/audit.py)
    return credential


PRIVACY_PATHS: Final = re.compile(r"/v1/audit|/v1/erasures(/[^/]+)?|/v1/profiles/[^/]+/export")
"""Reads that hand a person's data out whole, the audit log and erasure receipts."""
PROFILE_PATH: Final = re.compile(r"/v1/profiles/[^/]+")
READING_POSTS: Final = frozenset(
    {"/v1/journeys/validate", "/v1/surveys/validate", "/v1/actions/validate", "/v1/decide"}
)
"""POSTs that change nothing an admin manages: checks, and decisions (which a
chatbot's read-only token asks for)."""


def required_scope(method: str, path: str) -> str:
    """The scope an admin request needs (docs/security.md, "Keys and scopes")."""
    if PRIVACY_PATHS.fullmatch(path) or (method == "DELETE" and PROFILE_PATH.fullmatch(path)):
        return "privacy"
    if path == "/v1/workspaces":
        return "workspaces"
    if method in ("GET", "HEAD") or path in READING_POSTS:
        return "read"
    return "manage"
