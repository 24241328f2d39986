"""Access requests as the catalog keeps them (`hub.access_requests`): queries only; checking a request and
deciding it is the control plane's (hub/control/access_requests.py)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class RequestRow:
    id: int
    consumer: str
    provider: str
    feed: str
    form: str
    fields: tuple[str, ...] | None  # None: every field
    delivery: tuple[str, ...]
    purpose: str
    valid_until: datetime | None
    status: str  # pending | approved | refused
    requested_at: datetime
    requested_by: str
    decided_at: datetime | None
    decided_by: str | None
    reason: str | None
    agreement_id: str | None
    agreement_file: str | None

    @property
    def feed_key(self) -> str:
        return f"{self.provider}.{self.feed}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            if isinstance(value, datetime):
                value = value.isoformat().replace("+00:00", "Z")
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out


def _row(r: asyncpg.Record) -> RequestRow:
    return RequestRow(
        id=r["id"],
        consumer=r["consumer"],
        provider=r["provider"],
        feed=r["feed"],
        form=r["form"],
        fields=tuple(r["fields"]) if r["fields"] is not None else None,
        delivery=tuple(r["delivery"]),
        purpose=r["purpose"],
        valid_until=r["valid_until"],
        status=r["status"],
        requested_at=r["requested_at"],
        requested_by=r["requested_by"],
        decided_at=r["decided_at"],
        decided_by=r["decided_by"],
        reason=r["reason"],
        agreement_id=r["agreement_id"],
        agreement_file=r["agreement_file"],
    )


async def insert(
    conn: asyncpg.Connection,
    *,
    consumer: str,
    provider: str,
    feed: str,
    form: str,
    fields: Sequence[str] | None,
    delivery: Sequence[str],
    purpose: str,
    valid_until: datetime | None,
    requested_by: str,
) -> RequestRow:
    r = await conn.fetchrow(
        """INSERT INTO hub.access_requests (consumer, provider, feed, form, fields, delivery, purpose, valid_until,
               requested_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *""",
        consumer, provider, feed, form, list(fields) if fields is not None else None, list(delivery), purpose,
        valid_until, requested_by,
    )  # fmt: skip
    return _row(r)


async def get(conn: asyncpg.Connection, request_id: int, *, lock: bool = False) -> RequestRow | None:
    r = await conn.fetchrow(
        "SELECT * FROM hub.access_requests WHERE id = $1" + (" FOR UPDATE" if lock else ""), request_id
    )
    return _row(r) if r else None


async def listing(conn: asyncpg.Connection, org: str | None = None, status: str | None = None) -> list[RequestRow]:
    """Requests `org` made or received (every request when None), newest first."""
    rows = await conn.fetch(
        """SELECT * FROM hub.access_requests
           WHERE ($1::text IS NULL OR consumer = $1 OR provider = $1) AND ($2::text IS NULL OR status = $2)
           ORDER BY id DESC""",
        org, status,
    )  # fmt: skip
    return [_row(r) for r in rows]


async def pending_like(conn: asyncpg.Connection, consumer: str, provider: str, feed: str, form: str) -> int | None:
    """The id of a pending request for the same feed and form by the same organisation, if any."""
    found: int | None = await conn.fetchval(
        """SELECT id FROM hub.access_requests WHERE status = 'pending' AND consumer = $1 AND provider = $2
               AND feed = $3 AND form = $4""",
        consumer, provider, feed, form,
    )  # fmt: skip
    return found


async def decide(
    conn: asyncpg.Connection,
    request_id: int,
    status: str,
    decided_by: str,
    reason: str | None,
    agreement_id: str | None = None,
    agreement_file: str | None = None,
) -> RequestRow | None:
    """Record a decision on a pending request; None when it was no longer pending."""
    r = await conn.fetchrow(
        """UPDATE hub.access_requests SET status = $2, decided_at = now(), decided_by = $3, reason = $4,
               agreement_id = $5, agreement_file = $6
           WHERE id = $1 AND status = 'pending' RETURNING *""",
        request_id, status, decided_by, reason, agreement_id, agreement_file,
    )  # fmt: skip
    return _row(r) if r else None
