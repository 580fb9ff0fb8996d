"""Credentials from HTTP headers: write keys as the Basic username (Segment's
convention) and admin tokens as ``Bearer`` (or the Basic username too)."""

from __future__ import annotations

import base64
import binascii

from starlette.requests import Request

from polku.core.errors import Unauthorized
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
    request.scope[CREDENTIAL_KEY] = credential  # the audit trail's "who" (web/audit.py)
    return credential
