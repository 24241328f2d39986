"""The hub's HTTP API as one Starlette app: the schema registry's routes, `GET /feeds`, `GET /health`
(also `/health/ready`; `/health/live`) and `GET /metrics` (Prometheus, hub/api/metrics.py).

The catalog is read through an asyncpg pool opened in the app's lifespan. Every error, including
unknown routes and database failures, is a JSON body in the Confluent shape {"error_code", "message"}.
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
from starlette.routing import BaseRoute, Route

from hub.api.errors import STORE_ERROR, ApiError
from hub.api.limits import ApiLimits, BodyLimit
from hub.api.metrics import RequestMetrics, live, serve_metrics
from hub.api.registry import ROUTES, RegistryJSON, pool
from hub.catalog import store as catalog
from hub.catalog.feeds_view import feed_summaries
from hub.db import DATABASE_ERRORS, redact
from hub.errors import ServerUnavailable, shortened

log = logging.getLogger("hub.api")

# Paths served as plain JSON; every other route is the registry's and uses its media type.
HUB_PATHS = ("/feeds", "/health", "/metrics")


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


async def root(_request: Request) -> Response:
    return RegistryJSON({})


def _error_response(request: Request, status: int, body: dict[str, object], headers: dict[str, str]) -> Response:
    cls = JSONResponse if request.url.path.startswith(HUB_PATHS) else RegistryJSON
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


def create_app(database_url: str, *, pool_size: int = 8, limits: ApiLimits | None = None) -> Starlette:
    """The API reading the catalog at `database_url` (the catalog's tables are created if missing)."""
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
        Route("/", root, methods=["GET"]),
        Route("/feeds", feeds, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/health/ready", health, methods=["GET"]),
        Route("/health/live", live, methods=["GET"]),
        Route("/metrics", serve_metrics, methods=["GET"]),
        *ROUTES,
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
    return app
