"""The API's own metrics (`hub_api_*`) and its `/metrics`, `/health/live` and `/health/ready` routes.

Requests are counted by route (the endpoint's name, so a path full of subject names is one series),
method and status; their durations go to one histogram per route. `/metrics` also has the process's
`process_*` and `python_*` metrics (prometheus-client's defaults), like every worker's.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hub import metrics  # noqa: F401  (the process-wide settings of prometheus-client: no `_created` series)

REQUESTS = Counter("hub_api_requests", "HTTP requests answered by the API.", ["route", "method", "status"])
DURATION = Histogram(
    "hub_api_request_duration_seconds",
    "Time to answer an API request.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


async def serve_metrics(_request: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


async def live(_request: Request) -> Response:
    """The process answers (its event loop turns); readiness is `/health/ready` (the database too)."""
    return JSONResponse({"status": "ok"})


class RequestMetrics:
    """ASGI middleware: count each HTTP request by route, method and status, and time it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(
        self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            endpoint = scope.get("endpoint")
            route = getattr(endpoint, "__name__", None) or "unmatched"
            REQUESTS.labels(route, scope.get("method", ""), str(status)).inc()
            DURATION.labels(route).observe(time.perf_counter() - started)
