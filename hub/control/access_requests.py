"""Access requests made, approved and refused: the page's and the API's routes and `hub requests` call these.

Approval is an agreement like every other: its file is written under the agreements directory (validated by
the same loader first) and applied by `hub apply`'s own code, with the approver as the audit trail's actor.
If the apply fails, the file is removed and the request stays pending: nothing is applied half-way.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from hub.agreement.access_request import RequestSpec, agreement_file_text, agreement_id, check, normalised
from hub.agreement.loader import parse_agreements
from hub.agreement.world import load_world
from hub.catalog import access_requests as stored
from hub.catalog import agreements as shared
from hub.catalog import store as catalog
from hub.catalog.access_requests import RequestRow
from hub.control.apply import apply
from hub.db import connection
from hub.errors import AccessDenied, ConfigError, NotFound
from hub.mqtt_auth.dynsec import BrokerAuth
from hub.settings import HubSettings


async def create(conn: asyncpg.Connection, spec: RequestSpec, requested_by: str) -> RequestRow:
    """Record a request after checking it against the applied catalog (feed, fields, not readable already)."""
    await catalog.ensure_catalog(conn)
    spec = normalised(spec)
    feed = check(spec, await load_world(conn), datetime.now(UTC))
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('hub.access_requests'))")
        pending = await stored.pending_like(conn, spec.consumer, feed.provider, feed.name, str(spec.form))
        if pending is not None:
            raise ConfigError(
                f"request {pending} asks {feed.provider} for {feed.key} in form {spec.form} already and is pending",
                field="feed",
            )
        return await stored.insert(
            conn,
            consumer=spec.consumer,
            provider=feed.provider,
            feed=feed.name,
            form=str(spec.form),
            fields=spec.fields,
            delivery=spec.delivery,
            purpose=spec.purpose,
            valid_until=spec.valid_until,
            requested_by=requested_by,
        )


async def _pending(conn: asyncpg.Connection, request_id: int, decider: str | None) -> RequestRow:
    """The request, if `decider` (its provider; None: the operator) may decide it now."""
    await catalog.ensure_catalog(conn)
    row = await stored.get(conn, request_id)
    if row is None:
        raise NotFound(f"no access request {request_id}")
    if decider is not None and decider != row.provider:
        raise AccessDenied(f"access request {request_id} is for {row.provider} to decide, not {decider}")
    if row.status != "pending":
        when = f"{row.decided_at:%Y-%m-%d %H:%M}Z" if row.decided_at else "earlier"
        raise ConfigError(f"access request {request_id} was {row.status} on {when} by {row.decided_by}")
    return row


async def approve(
    settings: HubSettings,
    request_id: int,
    *,
    decider: str | None,
    actor: str,
    reason: str | None,
    agreements_dir: Path,
    broker: BrokerAuth,
) -> RequestRow:
    """Write the request's agreement under `agreements_dir`, apply it, and record the approval."""
    url = settings.endpoints().database_url
    async with connection(url) as conn:
        row = await _pending(conn, request_id, decider)
        licence = next(
            (f.licence for f in await catalog.feeds(conn) if f.partner_id == row.provider and f.name == row.feed), None
        )
        applied_before = agreement_id(request_id) in await shared.agreements(conn)
    if licence is None:
        raise NotFound(f"feed {row.feed_key} is no longer in the catalog")
    aid = agreement_id(request_id)
    path = agreements_dir / f"{aid}.yaml"
    if not applied_before:  # (an agreement applied by an approval whose record then failed is not applied twice)
        now = datetime.now(UTC)
        text = agreement_file_text(row, licence, actor, now)
        parse_agreements(text, str(path))  # the loader's own checks, before anything is written
        _write_new(path, text)
        try:
            await apply(settings, [path], broker=broker, actor=f"{actor} (access request {request_id})")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    async with connection(url) as conn:
        decided = await stored.decide(conn, request_id, "approved", actor, reason or None, aid, str(path))
    if decided is None:
        raise ConfigError(f"access request {request_id} was decided by someone else meanwhile")
    return decided


async def refuse(
    conn: asyncpg.Connection, request_id: int, *, decider: str | None, actor: str, reason: str
) -> RequestRow:
    if not reason.strip():
        raise ConfigError("say why the request is refused: the organisation that asked reads it", field="reason")
    await _pending(conn, request_id, decider)
    decided = await stored.decide(conn, request_id, "refused", actor, reason.strip())
    if decided is None:
        raise ConfigError(f"access request {request_id} was decided by someone else meanwhile")
    return decided


def _write_new(path: Path, text: str) -> None:
    """Write a file that must not exist yet (an approval never overwrites an agreement file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise ConfigError(
            "exists already and was not applied: apply it (`hub apply`) or remove it, then approve again",
            file=str(path),
        ) from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
