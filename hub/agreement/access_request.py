"""Access requests, pure: what an organisation may ask for, and the agreement an approval becomes.

An organisation asks a provider for one feed (fields, form, delivery, purpose, optionally an end); the provider
approves or refuses with a reason. Approval writes the agreement below as a file under `agreements/` and applies
it like any other (hub/control/access_requests.py), so an approved request is an agreement like the rest: in
the files, in `hub explain`, in the audit trail, revocable with `hub agreements revoke`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml

from hub.agreement.grants import FeedInfo
from hub.agreement.model import Delivery, Form
from hub.agreement.policy import Question, World, decide
from hub.catalog.access_requests import RequestRow
from hub.errors import AccessDenied, ConfigError, NotFound

MAX_PURPOSE = 500
AGREEMENT_PREFIX = "request_"


@dataclass(frozen=True)
class RequestSpec:
    """What an organisation asks for (from the page's form, the API's JSON or `hub requests create`)."""

    consumer: str
    feed: str  # provider.feed
    form: Form = Form.raw
    fields: tuple[str, ...] | None = None  # None: every field
    delivery: tuple[str, ...] = ("sql",)
    purpose: str = ""
    valid_until: datetime | None = None


def check(spec: RequestSpec, world: World, now: datetime) -> FeedInfo:
    """The feed asked for, or why the request cannot be made (each error names the field to fix)."""
    if spec.consumer not in world.orgs:
        raise NotFound(f"unknown organisation {spec.consumer!r}")
    feed = world.feeds.get(spec.feed)
    if feed is None:
        raise NotFound(f"unknown feed {spec.feed!r}: the catalog lists every feed as provider.feed")
    if feed.provider == spec.consumer:
        raise ConfigError(f"{spec.consumer} publishes {feed.key}: it reads it already", field="feed")
    purpose = spec.purpose.strip()
    if not purpose:
        raise ConfigError("say what the data is for: the provider decides on the purpose", field="purpose")
    if len(purpose) > MAX_PURPOSE:
        raise ConfigError(f"the purpose is longer than {MAX_PURPOSE} characters", field="purpose")
    if spec.fields is not None:
        if not spec.fields:
            raise ConfigError("pick at least one field, or ask for every field", field="fields")
        unknown = [f for f in spec.fields if f not in feed.fields]
        if unknown:
            raise ConfigError(
                f"{feed.key} has no field {', '.join(unknown)} (its fields: {', '.join(feed.fields)})", field="fields"
            )
        if spec.form == Form.aggregate:
            text = [f for f in spec.fields if f not in feed.numeric]
            if text:
                raise ConfigError(f"aggregates are of numeric fields only: {', '.join(text)} is not", field="fields")
    known = {str(d) for d in Delivery}
    odd = [d for d in spec.delivery if d not in known]
    if odd:
        raise ConfigError(
            f"unknown delivery {', '.join(odd)} (choose from {', '.join(sorted(known))})", field="delivery"
        )
    if spec.valid_until is not None and spec.valid_until <= now:
        raise ConfigError("the end asked for is in the past", field="valid_until")
    asked = Question(spec.consumer, feed.key, now, spec.form, spec.fields or ())
    decision = decide(asked, world)
    if decision.allowed:
        raise AccessDenied(
            f"{spec.consumer} can read {feed.key} in form {spec.form} already, from {decision.object}: "
            "nothing to ask for"
        )
    return feed


def normalised(spec: RequestSpec) -> RequestSpec:
    """sql first and always (every agreement delivers SQL), each delivery once; the purpose stripped."""
    delivery = ("sql", *sorted({d for d in spec.delivery if d != "sql"}))
    return RequestSpec(
        spec.consumer, spec.feed, spec.form, spec.fields, delivery, spec.purpose.strip(), spec.valid_until
    )


def agreement_id(request_id: int) -> str:
    return f"{AGREEMENT_PREFIX}{request_id}"


def agreement_file_text(request: RequestRow, licence: str, approved_by: str, at: datetime) -> str:
    """The agreements file an approval writes: one agreement granting what was asked, and nothing more."""
    grant: dict[str, Any] = {"feed": request.feed, "form": request.form}
    if request.fields is not None:
        grant["fields"] = list(request.fields)
    agreement: dict[str, Any] = {
        "id": agreement_id(request.id),
        "provider": request.provider,
        "consumers": [request.consumer],
        "purpose": request.purpose,
        "licence": licence,
    }
    if request.valid_until is not None:
        agreement["valid_until"] = request.valid_until.isoformat().replace("+00:00", "Z")
    agreement["delivery"] = list(request.delivery)
    agreement["grants"] = [grant]
    approved_by = " ".join(approved_by.split())  # one comment line, whatever the name holds
    header = (
        f"# Access request {request.id}: {request.consumer} asked {request.provider} for {request.feed} "
        f"on {request.requested_at:%Y-%m-%d %H:%M}Z;\n"
        f"# approved by {approved_by} on {at:%Y-%m-%d %H:%M}Z (`hub requests`). Revoke with "
        f"`hub agreements revoke {agreement_id(request.id)}`.\n"
    )
    body = yaml.safe_dump({"agreements": [agreement]}, sort_keys=False, allow_unicode=True, width=100)
    return header + body
