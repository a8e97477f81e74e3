"""The console as a Starlette app: :func:`create_console`.

Alone (``kstream console APP``) it is served at ``/``; in ``kstream serve APP --console
TOPOLOGY`` it is mounted at ``/console`` of the workflows API and shares its workflow view.
Every route goes through :func:`kstream.console.access.guard`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.resources import files

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from kstream.api.server import Api
from kstream.config import Settings
from kstream.console import pages, trash_pages
from kstream.console.access import Access, guard, login_routes
from kstream.console.html import url
from kstream.console.state import Console
from kstream.topology import Topology

Page = Callable[[Console, Request], Awaitable[Response]]
STATIC = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}


def create_console(topology: Topology, settings: Settings, *, token: str | None = None,
                   workflows: Starlette | None = None) -> Starlette:
    """The console of ``topology``; ``workflows``: the app of :func:`kstream.api.server.create_app`
    whose workflow view it shows (its lifespan is run by the console's when served alone)."""
    api: Api | None = workflows.state.api if workflows is not None else None
    console = Console(topology, settings, api)
    access = Access(token)

    def route(path: str, endpoint: Page, methods: tuple[str, ...] = ("GET",)) -> Route:
        async def call(request: Request) -> Response:
            return await endpoint(console, request)

        return Route(path, guard(access, call), methods=list(methods))

    login_get, login_post, logout = login_routes(access)

    async def home(request: Request) -> Response:
        return RedirectResponse(url(request, "topology"), status_code=303)

    routes: list[BaseRoute] = [
        Route("/", guard(access, home)),
        Route("/login", guard(access, login_get, public=True), methods=["GET"]),
        Route("/login", guard(access, login_post, public=True), methods=["POST"]),
        Route("/logout", guard(access, logout), methods=["POST"]),
        Route("/static/{name}", guard(access, _static)),
        route("/topology", pages.topology_page),
        route("/api/topology", pages.topology_json),
        route("/trash", trash_pages.trash_list),
        route("/trash/preview", trash_pages.trash_preview, ("POST",)),
        route("/trash/run", trash_pages.trash_run, ("POST",)),
        route("/trash/{id}", trash_pages.trash_entry),
        route("/trash/{id}/edit", trash_pages.trash_edit, ("POST",)),
        route("/jobs/{id}", trash_pages.job_page),
        route("/api/jobs/{id}", trash_pages.job_json),
        route("/workflows", pages.workflows_page),
        route("/workflows/{id}", pages.workflow_page),
        route("/workflows/{id}/timeline", pages.workflow_fragment),
        route("/workflows/{id}/{command}", pages.workflow_command, ("POST",)),
        route("/cursors", pages.cursors_page),
        route("/cursors/reset", pages.cursor_reset, ("POST",)),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if workflows is None:
            yield
            return
        async with workflows.router.lifespan_context(workflows):
            yield

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.console = console
    return app


def mount(api_app: Starlette, console_app: Starlette, path: str = "/console") -> None:
    """Serve the console under ``path`` of the workflows API (the API's lifespan runs the view)."""
    api_app.router.routes.append(Mount(path, console_app))


async def _static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in STATIC:
        return Response("not found", status_code=404)
    return Response(files("kstream.console").joinpath("static", name).read_bytes(), media_type=STATIC[name])
