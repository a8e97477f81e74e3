"""Who may look and write: a bearer token (header or login form), and CSRF tokens on writes.

With a token configured, every console URL but the login form answers only to a request
carrying ``Authorization: Bearer <token>`` or the session cookie the login form sets. The
cookie holds an HMAC of the token, never the token, so it is useless once the token changes;
it is ``HttpOnly`` and ``SameSite=Strict``. The token travels only in a header or a POST body:
never in a URL, and nothing here logs it.

Every POST must carry the per-browser CSRF token (the ``csrf`` form field or an
``X-CSRF-Token`` header) equal to the ``kstream_csrf`` cookie (double submit): a page of
another site can make a browser post a form, but cannot read the cookie to fill in the field.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from kstream.console.html import esc, page, url
from kstream.errors import BrokerError, KstreamError

log = logging.getLogger("kstream.console")

SESSION = "kstream_session"
CSRF = "kstream_csrf"
Endpoint = Callable[[Request], Awaitable[Response]]


class Access:
    def __init__(self, token: str | None) -> None:
        self._token = token or None
        self._session = hmac.new(self._token.encode(), b"kstream-console-session", hashlib.sha256).hexdigest() \
            if self._token else None

    @property
    def required(self) -> bool:
        return self._token is not None

    def who(self, request: Request) -> Literal["open", "bearer", "cookie"] | None:
        """How the request is authenticated; None: it is not."""
        if self._token is None or self._session is None:
            return "open"
        given = request.headers.get("authorization", "")
        if given and hmac.compare_digest(given.encode(), f"Bearer {self._token}".encode()):
            return "bearer"
        cookie = request.cookies.get(SESSION, "")
        if cookie and hmac.compare_digest(cookie.encode(), self._session.encode()):
            return "cookie"
        return None

    def token_ok(self, given: str) -> bool:
        return self._token is not None and hmac.compare_digest(given.encode(), self._token.encode())

    def session_cookie(self, response: Response, request: Request) -> None:
        assert self._session is not None
        response.set_cookie(SESSION, self._session, httponly=True, samesite="strict", path=_cookie_path(request),
                            secure=request.url.scheme == "https")


def guard(access: Access, endpoint: Endpoint, *, public: bool = False) -> Endpoint:
    """Authentication (unless ``public``) and CSRF around one endpoint."""

    async def handle(request: Request) -> Response:
        fresh = CSRF not in request.cookies
        request.state.csrf = request.cookies.get(CSRF) or secrets.token_urlsafe(24)
        request.state.signed_in_by = access.who(request)
        if not public and request.state.signed_in_by is None:
            response: Response = _refuse(request)
        elif request.method == "POST" and not await _csrf_ok(request):
            response = page(request, "Refused", "<p class=error>The form is stale or came from another site "
                            "(CSRF check failed): reload the page and try again.</p>", status=403)
        else:
            try:
                response = await endpoint(request)
            except KstreamError as exc:  # the broker is away, a topic is missing: say so on the page
                log.warning("console %s %s failed: %s", request.method, request.url.path, exc)
                response = page(request, "Error", f"<p class=error>{esc(exc)}</p>",
                                status=503 if isinstance(exc, BrokerError) else 400)
        if fresh:
            response.set_cookie(CSRF, request.state.csrf, httponly=True, samesite="strict", path=_cookie_path(request),
                                secure=request.url.scheme == "https")
        response.headers.setdefault("cache-control", "no-store")
        return response

    return handle


async def _csrf_ok(request: Request) -> bool:
    cookie = request.cookies.get(CSRF, "")
    given = request.headers.get("x-csrf-token", "")
    if not given and request.headers.get("content-type", "").startswith(("application/x-www-form-urlencoded",
                                                                          "multipart/form-data")):
        value = (await request.form()).get("csrf", "")
        given = value if isinstance(value, str) else ""
    return bool(cookie) and hmac.compare_digest(cookie.encode(), given.encode())


def _refuse(request: Request) -> Response:
    wants_html = request.method == "GET" and "text/html" in request.headers.get("accept", "")
    if wants_html:
        return RedirectResponse(url(request, "login"), status_code=303)
    return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401,
                        headers={"www-authenticate": "Bearer"})


def login_routes(access: Access) -> tuple[Endpoint, Endpoint, Endpoint]:
    """GET and POST ``/login``, POST ``/logout``."""

    async def show(request: Request, error: str = "", status: int = 200) -> Response:
        note = f"<p class=error>{esc(error)}</p>" if error else ""
        if not access.required:
            note += "<p>No token is configured: the console is open.</p>"
        body = (f'{note}<form method="post" action="{esc(url(request, "login"))}" class="login">'
                f'<input type="hidden" name="csrf" value="{esc(request.state.csrf)}">'
                '<label>Token <input type="password" name="token" autocomplete="current-password" autofocus></label>'
                '<button type="submit">Sign in</button></form>')
        return page(request, "Sign in", body, status=status)

    async def get(request: Request) -> Response:
        return await show(request)

    async def post(request: Request) -> Response:
        token = (await request.form()).get("token", "")
        if not isinstance(token, str) or not access.token_ok(token.strip()):
            return await show(request, "Wrong token.", 401)
        response = RedirectResponse(url(request, "topology"), status_code=303)
        access.session_cookie(response, request)
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse(url(request, "login"), status_code=303)
        response.delete_cookie(SESSION, path=_cookie_path(request))
        return response

    return get, post, logout


def _cookie_path(request: Request) -> str:
    return str(request.scope.get("root_path") or "/")
