"""The web page of `hub serve`: the catalog (public), and for a signed-in organisation what it may read and the
sharing matrix. Each page is also JSON for scripts (without `Accept: text/html`).

"What may I read" is `hub access`'s own answer (hub/access/explain.py over hub/agreement/policy.py), with the
lines to start reading (hub/access/reading.py); the page adds nothing of its own to the decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from hub.access import explain as explaining
from hub.access.published import PublishedFeed, published_feeds, with_coverage
from hub.access.reading import with_start_lines
from hub.agreement.matrix import matrix
from hub.agreement.policy import Access, readable
from hub.agreement.world import load_world
from hub.api import dcat
from hub.api.auth import COOKIE, principal, require, require_org, same_site
from hub.api.registry import RegistryJSON, pool
from hub.api.render import page, wants_html
from hub.api.site import site
from hub.catalog import tokens
from hub.connector.model import THEME_LABELS

ACCESS_LABELS = {"open": "Open data", "restricted": "Needs an agreement"}


@dataclass(frozen=True)
class Filters:
    q: str = ""
    provider: str = ""
    theme: str = ""
    access: str = ""

    @classmethod
    def of(cls, request: Request) -> Filters:
        p = request.query_params
        return cls(*(p.get(k, "")[:200].strip() for k in ("q", "provider", "theme", "access")))

    def keep(self, f: PublishedFeed) -> bool:
        return (
            (not self.q or all(word in search_text(f) for word in self.q.lower().split()))
            and (not self.provider or f.publisher.id == self.provider)
            and (not self.theme or self.theme in f.themes)
            and (not self.access or f.access == self.access)
        )


def search_text(f: PublishedFeed) -> str:
    """What the search box matches, lower-cased (the page's script matches the same text)."""
    words = [
        f.key,
        f.name.replace("_", " "),
        f.description,
        f.publisher.name,
        f.licence,
        *f.keywords,
        *(fi.name for fi in f.fields),
        *(THEME_LABELS.get(t, t) for t in f.themes),
        ACCESS_LABELS[f.access],
    ]
    return " ".join(words).lower()


async def home(request: Request) -> Response:
    """The catalog page for a browser; `{}` for anything else (a schema registry's root answers so)."""
    if not wants_html(request):
        return RegistryJSON({})
    bearer = await principal(request)
    filters = Filters.of(request)
    now = datetime.now(UTC)
    async with pool(request).acquire() as conn:
        world, feeds = await published_feeds(conn, now)
        feeds = await with_coverage(conn, feeds)
    mine: dict[str, list[Access]] = {}
    if bearer is not None:
        for a in readable(world, bearer.org, now):
            mine.setdefault(a.feed, []).append(a)
    shown = [f for f in feeds if filters.keep(f)]
    providers = sorted({(f.publisher.id, f.publisher.name) for f in feeds}, key=lambda p: p[1])
    themes = sorted({t for f in feeds for t in f.themes}, key=lambda t: THEME_LABELS.get(t, t))
    return page(
        request,
        "catalog.html",
        bearer=bearer,
        feeds=feeds,
        shown={f.key for f in shown},
        count=len(shown),
        filters=filters,
        providers=providers,
        themes=[(t, THEME_LABELS.get(t, t)) for t in themes],
        theme_labels=THEME_LABELS,
        access_labels=ACCESS_LABELS,
        mine=mine,
        search_text=search_text,
        anchor=dcat.anchor,
        title_of=dcat.title_of,
        now=now,
    )


async def _entries(request: Request, org: str) -> list[dict[str, Any]]:
    async with pool(request).acquire() as conn:
        _known, entries = await explaining.access(conn, org)
    return [with_start_lines(e.to_json(), org, site(request).addresses) for e in entries]


async def my_access(request: Request) -> Response:
    """What the signed-in organisation may read now: `hub access ORG`, with how to start reading each."""
    bearer = await require(request)
    entries = await _entries(request, bearer.org)
    if wants_html(request):
        return page(request, "access.html", bearer=bearer, entries=entries, addresses=site(request).addresses)
    return JSONResponse({"org": bearer.org, "access": entries})


async def org_access(request: Request) -> Response:
    """`GET /orgs/{org}/access`: the same, for that organisation's own token only."""
    bearer = await require(request)
    org = request.path_params["org"]
    require_org(bearer, org, what=f"what {org} may read")
    return JSONResponse({"org": org, "access": await _entries(request, org)})


def _iso(t: datetime | None) -> str | None:
    return t.isoformat().replace("+00:00", "Z") if t else None


async def sharing_matrix(request: Request) -> Response:
    """Providers x consumers: what every applied agreement grants, in what form, until when, and its state."""
    bearer = await require(request)
    now = datetime.now(UTC)
    async with pool(request).acquire() as conn:
        world = await load_world(conn)
    m = matrix(world, now, include=[bearer.org])
    if wants_html(request):
        return page(request, "matrix.html", bearer=bearer, m=m, now=now)
    cells = [
        {
            **c.__dict__,
            "valid_from": _iso(c.valid_from),
            "valid_until": _iso(c.valid_until),
            "delivery": list(c.delivery),
        }
        for key in sorted(m.grid)
        for c in m.grid[key]
    ]
    return JSONResponse({"providers": list(m.providers), "consumers": list(m.consumers), "cells": cells})


async def signin_form(request: Request) -> Response:
    return page(request, "signin.html", bearer=await principal(request), error=None)


async def signin(request: Request) -> Response:
    """Check a token from the form and keep it in an HttpOnly, SameSite=Strict cookie."""
    same_site(request)
    form = await request.form()
    token = str(form.get("token") or "").strip()
    bearer = await tokens.bearer(pool(request), token)
    if bearer is None:
        message = "This token is unknown or revoked. Ask the hub's operator for one (`hub tokens create ORG`)."
        return page(request, "signin.html", bearer=None, error=message, status=401)
    response = RedirectResponse("/access", status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https", path="/")
    return response


async def signout(request: Request) -> Response:
    same_site(request)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


ROUTES: list[BaseRoute] = [
    Route("/", home, methods=["GET"]),
    Route("/access", my_access, methods=["GET"]),
    Route("/orgs/{org}/access", org_access, methods=["GET"]),
    Route("/matrix", sharing_matrix, methods=["GET"]),
    Route("/signin", signin_form, methods=["GET"]),
    Route("/signin", signin, methods=["POST"]),
    Route("/signout", signout, methods=["POST"]),
]
