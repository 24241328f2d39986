"""Access requests over HTTP: `GET /requests` (made or received by the token's organisation), `POST /requests`
to ask, `POST /requests/{id}/approve` and `.../refuse` for the provider. Each answers JSON, or, for the page's
forms, HTML and redirects. The decisions themselves are hub/control/access_requests.py's (also `hub requests`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from hub.access.published import PublishedFeed, published_feeds
from hub.agreement.access_request import MAX_PURPOSE, RequestSpec
from hub.agreement.model import Delivery, Form, Instant
from hub.agreement.policy import readable
from hub.api.auth import require, require_org
from hub.api.errors import ApiError, from_hub_error
from hub.api.registry import pool, read_body
from hub.api.render import page, wants_html
from hub.api.site import site
from hub.catalog import access_requests as stored
from hub.catalog.tokens import Bearer
from hub.control import access_requests as control
from hub.errors import HubError

INVALID = 42201


class RequestIn(BaseModel):
    """The body of `POST /requests` (JSON), or the page's form."""

    model_config = ConfigDict(extra="forbid")

    feed: str = Field(min_length=3, max_length=100, description="provider.feed")
    form: Form = Form.raw
    fields: list[str] | None = Field(default=None, max_length=200, description="None: every field")
    delivery: list[Delivery] = Field(default_factory=lambda: [Delivery.sql])
    purpose: str = Field(min_length=1, max_length=MAX_PURPOSE)
    valid_until: Instant | None = None


def actor(bearer: Bearer) -> str:
    """Who acts, as the audit trail records it: the organisation and which of its tokens."""
    return f"{bearer.org} (API token {bearer.token_id})"


def _invalid(exc: ValidationError) -> ApiError:
    problems = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()[:10])
    return ApiError(422, INVALID, f"the request is not valid: {problems}")


def _from_form(form: FormData) -> RequestIn:
    data: dict[str, Any] = {
        "feed": str(form.get("feed") or ""),
        "form": str(form.get("form") or "raw"),
        "fields": [str(f) for f in form.getlist("fields")],
        "delivery": ["sql", *(str(d) for d in form.getlist("delivery") if d != "sql")],
        "purpose": str(form.get("purpose") or ""),
    }
    if form.get("valid_until"):
        data["valid_until"] = str(form.get("valid_until"))
    return RequestIn.model_validate(data)


async def _body(request: Request) -> tuple[RequestIn | None, FormData | None, ApiError | None]:
    """The request asked for, from a form or JSON, or why it is not valid."""
    form = None
    try:
        if "application/json" in request.headers.get("content-type", ""):
            return RequestIn.model_validate_json(await read_body(request)), None, None
        form = await request.form()
        return _from_form(form), form, None
    except ValidationError as exc:
        return None, form, _invalid(exc)


async def _feeds_to_ask(request: Request, org: str) -> list[PublishedFeed]:
    """Feeds of other providers that `org` cannot read in every form yet."""
    async with pool(request).acquire() as conn:
        world, feeds = await published_feeds(conn)
    now = datetime.now(UTC)
    raw = {a.feed for a in readable(world, org, now) if not a.clause.aggregate}
    return [f for f in feeds if f.publisher.id != org and f.key not in raw]


async def list_requests(request: Request) -> Response:
    bearer = await require(request)
    async with pool(request).acquire() as conn:
        rows = await stored.listing(conn, bearer.org)
    made = [r for r in rows if r.consumer == bearer.org]
    received = [r for r in rows if r.provider == bearer.org]
    if wants_html(request):
        feeds = await _feeds_to_ask(request, bearer.org)
        return page(request, "requests.html", bearer=bearer, made=made, received=received, feeds=feeds)
    return JSONResponse(
        {"org": bearer.org, "made": [r.to_json() for r in made], "received": [r.to_json() for r in received]}
    )


async def _form_page(
    request: Request, bearer: Bearer, feed_key: str, *, error: str | None = None, form: FormData | None = None
) -> Response:
    feeds = {f.key: f for f in await _feeds_to_ask(request, bearer.org)}
    feed = feeds.get(feed_key)
    if feed is None:
        async with pool(request).acquire() as conn:
            _world, every = await published_feeds(conn)
        known = next((f for f in every if f.key == feed_key), None)
        if known is None:
            raise ApiError(404, 404, f"no feed {feed_key!r}: the catalog lists every feed as provider.feed")
        if known.publisher.id == bearer.org:
            raise ApiError(409, 409, f"{bearer.org} publishes {feed_key}: it reads it already")
        raise ApiError(
            409,
            409,
            f"{bearer.org} reads {feed_key} as raw rows already (`hub access {bearer.org}`, or the page's "
            "What may I read); its provider changes the terms of that agreement",
        )
    return page(
        request,
        "request_new.html",
        bearer=bearer,
        feed=feed,
        error=error,
        form=form,
        status=422 if error else 200,
    )


async def new_request(request: Request) -> Response:
    """`GET /requests/new?feed=provider.feed`: the form to ask for one feed."""
    bearer = await require(request)
    return await _form_page(request, bearer, request.query_params.get("feed", "")[:100])


async def create_request(request: Request) -> Response:
    bearer = await require(request)
    body, form, error = await _body(request)
    if body is not None:
        spec = RequestSpec(
            consumer=bearer.org,
            feed=body.feed,
            form=body.form,
            fields=tuple(body.fields) if body.fields is not None else None,
            delivery=tuple(str(d) for d in body.delivery),
            purpose=body.purpose,
            valid_until=body.valid_until,
        )
        try:
            async with pool(request).acquire() as conn:
                row = await control.create(conn, spec, actor(bearer))
        except HubError as exc:
            error = from_hub_error(exc)
    if error is not None:
        if form is not None and wants_html(request):
            return await _form_page(request, bearer, str(form.get("feed") or ""), error=error.message, form=form)
        raise error
    if form is not None:
        return RedirectResponse(f"/requests#request-{row.id}", status_code=303)
    return JSONResponse(row.to_json(), status_code=201)


async def _request_for(request: Request, bearer: Bearer, *, provider_only: bool) -> stored.RequestRow:
    number: int = request.path_params["id"]
    row = None
    if number < 2**63:  # a larger one cannot exist (bigint), and would not reach SQL
        async with pool(request).acquire() as conn:
            row = await stored.get(conn, number)
    if row is None:
        raise ApiError(404, 40401, f"no access request {number}")
    owners = (row.provider,) if provider_only else (row.consumer, row.provider)
    require_org(bearer, *owners, what=f"access request {row.id}" + (" (its provider decides)" if provider_only else ""))
    return row


async def show_request(request: Request) -> Response:
    bearer = await require(request)
    row = await _request_for(request, bearer, provider_only=False)
    if wants_html(request):
        return RedirectResponse(f"/requests#request-{row.id}", status_code=303)
    return JSONResponse(row.to_json())


async def _reason(request: Request) -> tuple[str, bool]:
    """(the decision's reason, whether it came from the page's form)."""
    if "application/json" in request.headers.get("content-type", ""):
        try:
            data = RequestDecision.model_validate_json(await read_body(request))
        except ValidationError as exc:
            raise _invalid(exc) from None
        return data.reason, False
    form = await request.form()
    return str(form.get("reason") or "")[:MAX_PURPOSE], True


class RequestDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=MAX_PURPOSE)


def _decided(row: stored.RequestRow, from_form: bool) -> Response:
    if from_form:
        return RedirectResponse(f"/requests#request-{row.id}", status_code=303)
    return JSONResponse(row.to_json())


async def approve(request: Request) -> Response:
    """The provider approves: the agreement file is written under the agreements directory and applied."""
    bearer = await require(request)
    row = await _request_for(request, bearer, provider_only=True)
    reason, from_form = await _reason(request)
    s = site(request)
    if s.settings is None or s.broker is None:
        raise ApiError(
            503, 50301, "this API was started without the hub's settings: approve with `hub requests approve`"
        )
    try:
        decided = await control.approve(
            s.settings,
            row.id,
            decider=bearer.org,
            actor=actor(bearer),
            reason=reason.strip() or None,
            agreements_dir=s.agreements_dir,
            broker=s.broker,
        )
    except HubError as exc:
        raise from_hub_error(exc) from None
    return _decided(decided, from_form)


async def refuse(request: Request) -> Response:
    bearer = await require(request)
    row = await _request_for(request, bearer, provider_only=True)
    reason, from_form = await _reason(request)
    try:
        async with pool(request).acquire() as conn:
            decided = await control.refuse(conn, row.id, decider=bearer.org, actor=actor(bearer), reason=reason)
    except HubError as exc:
        raise from_hub_error(exc) from None
    return _decided(decided, from_form)


ROUTES: list[BaseRoute] = [
    Route("/requests", list_requests, methods=["GET"]),
    Route("/requests", create_request, methods=["POST"]),
    Route("/requests/new", new_request, methods=["GET"]),
    Route("/requests/{id:int}", show_request, methods=["GET"]),
    Route("/requests/{id:int}/approve", approve, methods=["POST"]),
    Route("/requests/{id:int}/refuse", refuse, methods=["POST"]),
]
