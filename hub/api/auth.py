"""Who is asking: organisations' API tokens, on every route that is not public.

A token comes as `Authorization: Bearer <token>`, as HTTP Basic with the organisation's id as the user name
and the token as the password (what Confluent clients send for `basic.auth.user.info`), or, from the web page
after signing in, in an HttpOnly, SameSite=Strict cookie. No token: 401. A token of another organisation than
the one a route belongs to: 403 (`require_org`). A cookie never authorises a state-changing request from
another site: such a request must come with an Origin (or Referer) of this host.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import urlsplit

import asyncpg
from starlette.requests import Request

from hub.api.errors import ApiError
from hub.catalog import tokens
from hub.catalog.tokens import Bearer

COOKIE = "hub_token"
UNAUTHORISED = 40101
FORBIDDEN = 40301
SIGN_IN = (
    "an organisation's API token is needed (`hub tokens create ORG`): send it as `Authorization: Bearer TOKEN`, "
    "as HTTP Basic with the organisation's id and the token, or sign in on the page"
)


def _pool(request: Request) -> asyncpg.Pool:
    found: asyncpg.Pool = request.app.state.pool
    return found


def _basic(value: str) -> tuple[str, str] | None:
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return (user, password) if sep else None


async def principal(request: Request) -> Bearer | None:
    """The organisation whose valid token the request carries, or None (remembered for the request)."""
    if "principal" in request.scope:
        found: Bearer | None = request.scope["principal"]
        return found
    bearer: Bearer | None = None
    via_cookie = False
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer":
            bearer = await tokens.bearer(_pool(request), value.strip())
        elif scheme.lower() == "basic":
            pair = _basic(value)
            if pair is not None:
                bearer = await tokens.bearer(_pool(request), pair[1])
                if bearer is not None and pair[0] != bearer.org:
                    bearer = None  # the user name must be the token's organisation: a mix-up is refused
    elif COOKIE in request.cookies:
        bearer = await tokens.bearer(_pool(request), request.cookies[COOKIE])
        via_cookie = bearer is not None
    request.scope["principal"] = bearer
    request.scope["principal_via_cookie"] = via_cookie
    return bearer


def challenge(request: Request) -> dict[str, str]:
    """The WWW-Authenticate of a 401: Basic for the registry's clients; none for a browser (no login box)."""
    if "text/html" in request.headers.get("accept", ""):
        return {}
    return {"WWW-Authenticate": 'Basic realm="hub", charset="UTF-8", Bearer realm="hub"'}


async def require(request: Request) -> Bearer:
    """The requesting organisation, or 401."""
    bearer = await principal(request)
    if bearer is None:
        what = "this token is unknown or revoked" if _presented(request) else "no token"
        raise ApiError(401, UNAUTHORISED, f"{what}: {SIGN_IN}", challenge(request))
    if request.scope.get("principal_via_cookie") and request.method not in ("GET", "HEAD"):
        same_site(request)
    return bearer


def _presented(request: Request) -> bool:
    return "authorization" in request.headers or COOKIE in request.cookies


def require_org(bearer: Bearer, *orgs: str, what: str) -> None:
    """403 unless the token is one of `orgs`' (the organisations `what` belongs to)."""
    if bearer.org not in orgs:
        raise ApiError(403, FORBIDDEN, f"{what} is not {bearer.org}'s: this token cannot read or change it")


def same_site(request: Request) -> None:
    """A cookie-authorised change must come from this site's own page (CSRF), not from a form elsewhere."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    host = request.headers.get("host", "")
    if not origin or urlsplit(origin).netloc != host:
        raise ApiError(403, FORBIDDEN, "this change must be sent from the hub's own page (its Origin did not match)")
