"""What every dashboard page shares: the templates, the session check, the security
headers and the timing header.

Pages are ``async def page(request, view: View) -> Response`` functions wrapped by
``page_route``: it finds the session (or sends the browser to the login page),
times the handler and adds ``Server-Timing`` and the security headers. JSON
endpoints that the pages' scripts poll use ``json_route`` (401 without a session).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from polku import __version__
from polku.core.errors import Forbidden, PolkuError
from polku.core.workspace import Credential
from polku.dashboard import formatting
from polku.dashboard.session import COOKIE_NAME, Session, SessionSigner
from polku.web.auth import CREDENTIAL_KEY
from polku.web.profile_routes import ProfileService
from polku.web.responses import json_response
from polku.web.services import Services, services

TEMPLATES: Final = Path(__file__).parent / "templates"
STATIC_PREFIX: Final = "/ui/static"

# Plotly sets style attributes from script (d3), so styles allow 'unsafe-inline';
# scripts do not: every script is a file from /ui/static, data travels as JSON in
# <script type="application/json"> blocks, which browsers never execute.
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
NAVIGATION: Final = (
    ("overview", "Overview", "/ui/"),
    ("journeys", "Journeys", "/ui/journeys"),
    ("paths", "Paths", "/ui/paths"),
    ("feedback", "Feedback", "/ui/feedback"),
    ("customers", "Customers", "/ui/customers"),
    ("surveys", "Surveys", "/ui/surveys"),
    ("channels", "Channels", "/ui/channels"),
    ("sources", "Sources & keys", "/ui/sources"),
)


def _environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"], default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(formatting.FILTERS)
    environment.globals.update(navigation=NAVIGATION, static=STATIC_PREFIX, version=__version__)
    return environment


@dataclass
class Dashboard:
    """Built once per app; found as ``request.app.state.dashboard``."""

    signer: SessionSigner
    environment: Environment = field(default_factory=_environment)

    def render(self, template: str, values: Mapping[str, Any]) -> str:
        return self.environment.get_template(template).render(**values)


@dataclass
class View:
    """One request to a page: its session, its CSRF token, and where to read."""

    request: Request
    session: Session
    csrf: str
    dashboard: Dashboard
    services: Services
    profiles: ProfileService
    started: float

    @property
    def workspace(self) -> str:
        return self.session.workspace

    def render(self, template: str, *, status: int = 200, **values: Any) -> HTMLResponse:
        query = self.request.query_params
        context = {
            "csrf": self.csrf,
            "workspace": self.workspace,
            "path": self.request.url.path,
            "area": "",
            "notice": query.get("notice", "")[:300],
            "flash_error": query.get("error", "")[:300],
            **values,
        }
        html = self.dashboard.render(template, context)
        return HTMLResponse(html, status_code=status)

    def back(self, location: str, *, notice: str | None = None, error: str | None = None) -> RedirectResponse:
        """After a form: 303 to ``location`` with a one-line message for the page."""
        message = ""
        if notice:
            message = f"notice={quote(notice[:300])}"
        elif error:
            message = f"error={quote(error[:300])}"
        separator = "&" if "?" in location else "?"
        return RedirectResponse(f"{location}{separator}{message}" if message else location, status_code=303)

    async def form(self, *, max_part_size: int = 256 * 1024, scope: str = "manage") -> dict[str, str]:
        """The posted form, after its CSRF token and the session token's ``scope`` are
        checked (``PolkuError`` 403); ``max_part_size`` bounds each field (a journey
        document may be 1 MB)."""
        form = await self.request.form(max_files=0, max_fields=50, max_part_size=max_part_size)
        values = {name: value for name, value in form.items() if isinstance(value, str)}
        if not self.dashboard.signer.check_csrf(self.session, values.get("csrf")):
            raise CsrfRefused()
        credential: Credential | None = self.request.scope.get(CREDENTIAL_KEY)
        if credential is None or scope not in credential.scopes:
            what = "read the workspace, not change it" if scope == "manage" else "not do this"
            raise Forbidden(f"this admin token may {what} (it lacks the {scope!r} scope)", scope=scope)
        return values


class CsrfRefused(PolkuError):
    status = 403
    code = "csrf"

    def __init__(self) -> None:
        super().__init__("the form's security token is missing or out of date: reload the page and try again")


def dashboard(request: Request) -> Dashboard:
    found: Dashboard = request.app.state.dashboard
    return found


async def current_session(request: Request) -> Session | None:
    """The request's session, if its cookie is valid and its admin token still is."""
    session = dashboard(request).signer.read(request.cookies.get(COOKIE_NAME))
    if session is None:
        return None
    credential = await services(request).catalog.credential(session.key_hash)
    if (
        credential is None
        or credential.kind != "admin"
        or credential.revoked_at
        or credential.workspace != session.workspace
        or "read" not in credential.scopes  # the dashboard shows the workspace: reading it is the least
    ):
        return None
    request.scope[CREDENTIAL_KEY] = credential  # the audit trail's "who" (web/audit.py)
    return session


def secure_headers(response: Response, started: float | None = None) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")
    if started is not None:
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
    return response


PageHandler = Callable[[View], Awaitable[Response]]


def _view(request: Request, session: Session, started: float) -> View:
    found = dashboard(request)
    return View(
        request=request,
        session=session,
        csrf=found.signer.csrf_token(session),
        dashboard=found,
        services=services(request),
        profiles=request.app.state.profiles,
        started=started,
    )


def page_route(path: str, handler: PageHandler, *, methods: tuple[str, ...] = ("GET",)) -> Route:
    """A page; without a session, the browser is sent to log in."""

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        session = await current_session(request)
        if session is None and path.startswith("/ui/fragments/"):
            # Fetched by a page's script, which sends the browser to log in.
            return secure_headers(Response("log in again", status_code=401, media_type="text/plain"))
        if session is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return secure_headers(RedirectResponse(f"/ui/login?next={quote(target)}", status_code=303))
        view = _view(request, session, started)
        try:
            response = await handler(view)
        except PolkuError as error:
            response = error_page(view, error)
        return secure_headers(response, started)

    return Route(path, endpoint, methods=list(methods))


def json_route(path: str, handler: Callable[[View], Awaitable[Any]]) -> Route:
    """A JSON endpoint for the pages' scripts (GET, session cookie)."""

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        session = await current_session(request)
        if session is None:
            return secure_headers(json_response({"code": "unauthorized", "message": "log in again"}, status=401))
        view = _view(request, session, started)
        try:
            body = await handler(view)
        except PolkuError as error:
            return secure_headers(json_response(error.to_dict(), status=error.status), started)
        return secure_headers(json_response(body), started)

    return Route(path, endpoint, methods=["GET"])


def error_page(view: View, error: PolkuError) -> HTMLResponse:
    return view.render("error.html", status=error.status, title="Something is not right", error=error)
