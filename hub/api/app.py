"""The hub's HTTP API as one Starlette app: the web page, the DCAT-AP catalog, access requests, the schema
registry's routes, `GET /feeds`, `GET /health` (also `/health/ready`; `/health/live`) and `GET /metrics`
(Prometheus, hub/api/metrics.py).

Public: the page's catalog (`/`), `/catalog.*`, open data, `/feeds`, `/health`, signing in. Every other route
needs an organisation's API token (hub/api/auth.py): 401 without one, 403 with one of an organisation the
route's object does not belong to. The catalog is read through an asyncpg pool opened in the app's lifespan.
Every error, including unknown routes and database failures, is a JSON body in the Confluent shape
{"error_code", "message"}, or an HTML page for a browser on the page's routes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from hub.api import catalog_routes, page, requests_routes
from hub.api.errors import STORE_ERROR, ApiError
from hub.api.limits import ApiLimits, BodyLimit
from hub.api.metrics import RequestMetrics, live, serve_metrics
from hub.api.registry import ROUTES, RegistryJSON, pool
from hub.api.registry_access import guard_all
from hub.api.render import STATIC, wants_html
from hub.api.render import page as html_page
from hub.api.site import Site
from hub.catalog import store as catalog
from hub.catalog.feeds_view import feed_summaries
from hub.db import DATABASE_ERRORS, redact
from hub.errors import ServerUnavailable, shortened

log = logging.getLogger("hub.api")

# Paths served as plain JSON (or HTML to a browser); every other route is the registry's and uses its media type.
HUB_PATHS = (
    "/feeds", "/health", "/metrics", "/catalog", "/open-data", "/access", "/orgs", "/matrix", "/requests", "/sign",
    "/static",
)  # fmt: skip


async def feeds(request: Request) -> Response:
    """The catalog's feeds: the same objects as `hub feeds --json`."""
    async with pool(request).acquire() as conn:
        return JSONResponse(await feed_summaries(conn))


async def health(request: Request) -> Response:
    try:
        subjects = await pool(request).fetchval("SELECT count(DISTINCT subject) FROM hub.subject_versions")
    except DATABASE_ERRORS as exc:
        return JSONResponse({"status": "unavailable", "database": f"not answering: {exc}"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok", "subjects": int(subjects)})


def _page_path(path: str) -> bool:
    return path == "/" or path.startswith(HUB_PATHS)


def _error_response(request: Request, status: int, body: dict[str, object], headers: dict[str, str]) -> Response:
    if _page_path(request.url.path) and wants_html(request):
        bearer = request.scope.get("principal")
        response = html_page(request, "error.html", bearer=bearer, status=status, code=status, message=body["message"])
        response.headers.update(headers)
        return response
    cls = JSONResponse if _page_path(request.url.path) else RegistryJSON
    return cls(body, status_code=status, headers=headers)


def _media_type(path: str) -> str:
    return str(JSONResponse.media_type if path.startswith(HUB_PATHS) else RegistryJSON.media_type)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    limits: ApiLimits = request.app.state.limits
    body = {"error_code": exc.code, "message": shortened(exc.message, limits.max_message_chars)}
    return _error_response(request, exc.status, body, exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = f"HTTP {exc.status_code} {exc.detail}"
    return _error_response(
        request, exc.status_code, {"error_code": exc.status_code, "message": message}, dict(exc.headers or {})
    )


async def _database_error(request: Request, exc: Exception) -> Response:
    """A database failure is a 500 with Confluent's store error code, not a traceback page."""
    log.warning("database error on %s %s: %s", request.method, shortened(request.url.path, 200), exc)
    message = shortened(f"Error in the catalog database: {exc}", request.app.state.limits.max_message_chars)
    body: dict[str, object] = {"error_code": STORE_ERROR, "message": message}
    return _error_response(request, 500, body, {})


def create_app(
    database_url: str, *, pool_size: int = 8, limits: ApiLimits | None = None, site: Site | None = None
) -> Starlette:
    """The API reading the catalog at `database_url` (the catalog's tables are created if missing); `site` says
    what the catalog and the page need besides (`hub serve` passes the hub's settings and broker)."""
    limits = limits or ApiLimits()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            # No floor: a pool with one reconnects in the background while the database is down, logging a
            # traceback each time; connections are opened when a request needs one.
            db = await asyncpg.create_pool(database_url, min_size=0, max_size=pool_size, timeout=10)
        except DATABASE_ERRORS as exc:
            raise ServerUnavailable(
                "PostgreSQL", redact(database_url), f"{exc}; start it with `hub stack up` or check HUB_DATABASE_URL"
            ) from exc
        try:
            async with db.acquire() as conn:
                await catalog.ensure_catalog(conn)
            app.state.pool = db
            yield
        finally:
            await db.close()

    routes: list[BaseRoute] = [
        *page.ROUTES,
        *catalog_routes.ROUTES,
        *requests_routes.ROUTES,
        Route("/feeds", feeds, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/health/ready", health, methods=["GET"]),
        Route("/health/live", live, methods=["GET"]),
        Route("/metrics", serve_metrics, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        *guard_all(ROUTES),
    ]
    handlers: dict[type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
        ApiError: _api_error,
        HTTPException: _http_error,
        **dict.fromkeys(DATABASE_ERRORS, _database_error),
    }
    app = Starlette(
        routes=routes,
        exception_handlers=handlers,
        lifespan=lifespan,
        middleware=[
            Middleware(RequestMetrics),
            Middleware(BodyLimit, max_body_bytes=limits.max_body_bytes, media_type=_media_type),
        ],
    )
    app.state.limits = limits
    app.state.site = site or Site.bare(database_url)
    return app
