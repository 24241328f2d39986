"""The public routes of the catalog: DCAT-AP 3 (`/catalog.ttl|jsonld|rdf`) and open data (`/open-data/...`).

Neither needs a token: the catalog is metadata anyone may harvest, and open data is what an agreement with
`everyone` grants (decided by hub/agreement/policy.py, like every other read).
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hub.access.published import published_feeds, with_coverage
from hub.agreement.policy import open_data
from hub.api import dcat
from hub.api.auth import FORBIDDEN
from hub.api.errors import ApiError
from hub.api.registry import pool
from hub.api.site import site
from hub.identifiers import qualified

BAD_REQUEST = 40001
OPEN_DATA_DEFAULT_ROWS = 1_000
OPEN_DATA_MAX_ROWS = 10_000


def _page_number(request: Request) -> int:
    text = request.query_params.get("page", "1")
    if not text.isdigit() or not 1 <= int(text) <= 1_000_000:
        raise ApiError(400, BAD_REQUEST, f"page must be a whole number from 1, not {text[:40]!r}")
    return int(text)


def _modified_since(request: Request) -> datetime | None:
    text = request.query_params.get("modified_since")
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        raise ApiError(
            400,
            BAD_REQUEST,
            f"modified_since must be an ISO 8601 date-time such as 2027-01-31T12:00:00Z, not {text[:40]!r}",
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


async def catalog(request: Request) -> Response:
    """One page of the catalog (`?page=N`, `?modified_since=...`), in the format of its extension."""
    extension = request.path_params["extension"]
    if extension not in dcat.FORMATS:
        raise ApiError(404, 404, f"no catalog format {extension!r}: use catalog.ttl, catalog.jsonld or catalog.rdf")
    number, since = _page_number(request), _modified_since(request)
    s = site(request)
    async with pool(request).acquire() as conn:
        _world, feeds = await published_feeds(conn)
        chosen, total = dcat.select(feeds, number, s.page_size, since)
        chosen = await with_coverage(conn, chosen)
    page = dcat.Page(number, s.page_size, total, extension, since)
    graph = dcat.build(s.catalog_info(request), s.addresses, chosen, feeds, page)
    return Response(dcat.serialise(graph, extension), media_type=dcat.FORMATS[extension][1])


def _cell(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):  # an aggregate's averages
        return float(value)
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return value


async def open_rows(request: Request) -> Response:
    """The latest rows everyone may read of one feed (`?limit=N`), as CSV or JSON: 403 where it is not open data."""
    provider, name = request.path_params["provider"], request.path_params["name"]
    feed, _, fmt = name.rpartition(".")
    if fmt not in ("csv", "json"):
        raise ApiError(404, 404, "open data comes as .csv or .json: /open-data/PROVIDER/FEED.csv")
    text = request.query_params.get("limit", str(OPEN_DATA_DEFAULT_ROWS))
    if not text.isdigit() or not 1 <= int(text) <= OPEN_DATA_MAX_ROWS:
        raise ApiError(400, BAD_REQUEST, f"limit must be a whole number from 1 to {OPEN_DATA_MAX_ROWS}")
    async with pool(request).acquire() as conn:
        world, _feeds = await published_feeds(conn)
        found = [a for a in open_data(world, datetime.now(UTC)) if a.feed == f"{provider}.{feed}"]
        if not found:
            raise ApiError(
                403,
                FORBIDDEN,
                f"{provider}.{feed} is not open data now: an organisation requests access to it on the hub's page",
            )
        access = found[0]  # raw before aggregates
        schema, view = access.object.split(".", 1)
        order = '"bucket"' if access.clause.aggregate else '"time"'
        rows = await conn.fetch(f"SELECT * FROM {qualified(schema, view)} ORDER BY {order} DESC LIMIT $1", int(text))
    headers = {"X-Hub-Object": access.object, "X-Hub-Agreement": access.agreement.id if access.agreement else ""}
    if fmt == "json":
        body = orjson.dumps([{k: _cell(v) for k, v in r.items()} for r in rows])
        return Response(body, media_type="application/json", headers=headers)
    out = io.StringIO()
    writer = csv.writer(out)
    if rows:
        writer.writerow(rows[0].keys())
    for r in rows:
        writer.writerow([_cell(v) for v in r.values()])
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


ROUTES: list[BaseRoute] = [
    Route("/catalog.{extension}", catalog, methods=["GET"]),
    Route("/open-data/{provider}/{name}", open_rows, methods=["GET"]),
]
