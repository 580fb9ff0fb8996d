"""Getting in and out of the dashboard, and its static files.

Login takes an admin token once and answers with the session cookie; the login
form itself is protected by a double-submit cookie (login CSRF). Static files are
the dashboard's own CSS and JavaScript and ``plotly.min.js`` from the ``plotly``
package, gzipped once in memory and cached by browsers for a year (their URLs carry
polku's version).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import secrets
import time
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Final

import plotly
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from polku.core.workspace import hash_key
from polku.dashboard.frame import current_session, dashboard, secure_headers
from polku.dashboard.session import COOKIE_NAME, MAX_AGE_S
from polku.web.services import services

LOGIN_COOKIE: Final = "polku_login"
MAX_TOKEN_LENGTH: Final = 512
FAILED_LOGIN_DELAY_S: Final = 0.5
"""Each wrong token costs the guesser half a second (tokens are 32 random bytes)."""
STATIC_FILES: Final = {
    "app.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "plotly.min.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}


def _safe_next(target: str | None) -> str:
    """Only a path inside the dashboard: never another site (open redirect)."""
    if not target or not target.startswith("/ui") or target.startswith("//") or "\\" in target:
        return "/ui/"
    if any(ord(character) < 32 for character in target):
        return "/ui/"
    return target[:2000]


def _secure(request: Request) -> bool:
    public = services(request).settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


async def login(request: Request) -> Response:
    started = time.perf_counter()
    if request.method == "GET":
        if await current_session(request) is not None:
            return secure_headers(RedirectResponse(_safe_next(request.query_params.get("next")), status_code=303))
        return _login_page(request, started, error=None, status=200)
    form = await request.form(max_files=0, max_fields=10, max_part_size=8192)
    token = str(form.get("token") or "").strip()
    check = str(form.get("check") or "")
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if not check or not cookie or not hmac.compare_digest(check, cookie):
        return _login_page(request, started, error="The login form expired. Try again.", status=403)
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return _login_page(request, started, error="Enter your admin token.", status=400)
    key_hash = hash_key(token)
    credential = await services(request).catalog.credential(key_hash)
    if credential is None or credential.kind != "admin" or credential.revoked_at:
        await asyncio.sleep(FAILED_LOGIN_DELAY_S)
        return _login_page(request, started, error="That admin token is not valid.", status=401)
    if "read" not in credential.scopes:
        return _login_page(request, started, error="That admin token may not read the workspace.", status=403)
    cookie_value, _ = dashboard(request).signer.issue(credential.workspace, key_hash)
    response = RedirectResponse(_safe_next(str(form.get("next") or "")), status_code=303)
    response.set_cookie(
        COOKIE_NAME, cookie_value, max_age=MAX_AGE_S, path="/ui", httponly=True, samesite="strict",
        secure=_secure(request),
    )  # fmt: skip
    response.delete_cookie(LOGIN_COOKIE, path="/ui/login")
    return secure_headers(response, started)


def _login_page(request: Request, started: float, *, error: str | None, status: int) -> Response:
    check = secrets.token_urlsafe(16)
    html = dashboard(request).render(
        "login.html",
        {"error": error, "check": check, "next": _safe_next(request.query_params.get("next") or None)},
    )
    response = Response(html, status_code=status, media_type="text/html")
    response.set_cookie(
        LOGIN_COOKIE, check, max_age=3600, path="/ui/login", httponly=True, samesite="strict", secure=_secure(request)
    )
    return secure_headers(response, started)


async def logout(request: Request) -> Response:
    session = await current_session(request)
    if session is not None:
        form = await request.form(max_files=0, max_fields=10, max_part_size=8192)
        if not dashboard(request).signer.check_csrf(session, str(form.get("csrf") or "")):
            return secure_headers(Response("The logout form expired; reload the page.", status_code=403))
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path="/ui")
    return secure_headers(response)


@cache
def _static(name: str) -> tuple[bytes, bytes, str]:
    """(body, gzipped body, ETag) of one static file, read once."""
    if name == "plotly.min.js":
        body = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    else:
        body = resources.files("polku.dashboard").joinpath(f"static/{name}").read_bytes()
    return body, gzip.compress(body, compresslevel=6, mtime=0), '"' + hashlib.sha256(body).hexdigest()[:20] + '"'


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    media_type = STATIC_FILES.get(name)
    if media_type is None:
        return Response("not found", status_code=404, media_type="text/plain")
    body, zipped, etag = await asyncio.to_thread(_static, name)
    headers = {
        "ETag": etag,
        "Cache-Control": "public, max-age=31536000, immutable" if request.query_params.get("v") else "no-cache",
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(zipped, media_type=media_type, headers={**headers, "Content-Encoding": "gzip"})
    return Response(body, media_type=media_type, headers=headers)


async def home(request: Request) -> Response:
    """``/`` and ``/ui``: people who open the server's address land on the dashboard."""
    return RedirectResponse("/ui/", status_code=307)


routes = [
    Route("/", home, methods=["GET"]),
    Route("/ui", home, methods=["GET"]),
    Route("/ui/login", login, methods=["GET", "POST"]),
    Route("/ui/logout", logout, methods=["POST"]),
    Route("/ui/static/{name}", static, methods=["GET"]),
]
