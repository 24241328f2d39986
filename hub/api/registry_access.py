"""Which schema registry subjects an organisation may read: the registry's routes behind API tokens.

A feed's subject is its provider's and every organisation's that the policy (hub/agreement/policy.py) lets
read the feed; a share topic's subject (`share.<consumer>.<provider>.<feed>[.agg]-value`) is its consumer's and
its provider's (open data's, `share.open_data...`, every organisation's).
A subject that exists and is none of the token's: 403; listings show only
the token's subjects.
Routes that name no subject (`/config`, `/mode`, `/schemas/types`) need a token of any organisation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from hub.agreement import names
from hub.agreement.policy import Question, decide
from hub.agreement.world import load_world
from hub.api.auth import FORBIDDEN, require
from hub.api.errors import ApiError
from hub.api.registry import pool, subject_param
from hub.catalog import store as catalog
from hub.catalog.tokens import Bearer
from hub.schema import registry

VALUE_SUFFIX = "-value"


def share_owners(subject: str) -> tuple[str, str] | None:
    """(consumer, provider) of a share topic's subject (`share.<consumer>.<provider>.<feed>[.agg]-value`,
    hub/agreement/names.py), or None for any other subject. The consumer of open data is `open_data`."""
    if not (subject.startswith(names.SHARE_TOPIC_PREFIX) and subject.endswith(VALUE_SUFFIX)):
        return None
    parts = subject[: -len(VALUE_SUFFIX)].split(".")
    if len(parts) == 5 and parts[4] == "agg":
        parts = parts[:4]
    return (parts[1], parts[2]) if len(parts) == 4 else None


async def visible_subjects(request: Request, bearer: Bearer) -> set[str]:
    org, now = bearer.org, datetime.now(UTC)
    async with pool(request).acquire() as conn:
        await catalog.ensure_catalog(conn)
        world = await load_world(conn)
        feeds = await catalog.feeds(conn)
        every = await registry.subjects(conn)
    visible = {
        f.subject
        for f in feeds
        if f.partner_id == org or decide(Question(org, f"{f.partner_id}.{f.name}", now), world).allowed
    }
    for subject in every:
        owners = share_owners(subject)
        if owners is not None and (org in owners or owners[0] == names.OPEN_DATA_CONSUMER):
            visible.add(subject)
    return visible


Endpoint = Callable[[Request], Awaitable[Response]]


def guarded(endpoint: Endpoint) -> Endpoint:
    """A registry route behind a token: 401 without one, 403 for a subject or schema id of other organisations."""

    async def route(request: Request) -> Response:
        bearer = await require(request)
        visible = await visible_subjects(request, bearer)
        request.scope["visible_subjects"] = visible
        subject = subject_param(request) if "subject" in request.path_params else None  # (a NUL is a 400 first)
        if subject is not None and subject not in visible and await registry.versions(pool(request), subject):
            raise ApiError(403, FORBIDDEN, f"subject '{subject}' is not readable with {bearer.org}'s token")
        schema_id = request.path_params.get("id")
        if isinstance(schema_id, int) and 0 < schema_id < 2**31:
            uses = await registry.uses_of_schema(pool(request), schema_id)
            if uses and not any(s in visible for s, _v in uses):
                raise ApiError(403, FORBIDDEN, f"schema {schema_id} is not readable with {bearer.org}'s token")
        return await endpoint(request)

    return route


def guard_all(routes: list[BaseRoute]) -> list[BaseRoute]:
    out: list[BaseRoute] = []
    for r in routes:
        assert isinstance(r, Route)
        methods = sorted(m for m in (r.methods or ()) if m != "HEAD")
        out.append(Route(r.path, guarded(r.endpoint), methods=methods))
    return out
