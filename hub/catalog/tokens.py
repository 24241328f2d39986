"""Organisations' API tokens (`hub tokens`): made here, shown once, kept only as a SHA-256.

A token reads `hub_<id>_<secret>`: `id` names it in listings and revocation (it is not secret), `secret` is
256 random bits. The hash of the whole token is what is stored and looked up.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

PREFIX = "hub_"
_SHAPE = re.compile(r"^hub_([0-9a-f]{8})_[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True)
class TokenRow:
    id: str
    org: str
    label: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None
    revoked_by: str | None


@dataclass(frozen=True)
class Bearer:
    """Who presented a valid token: the organisation, and which of its tokens."""

    org: str
    token_id: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """(id, token): a fresh token and its id."""
    token_id = secrets.token_hex(4)
    return token_id, f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"


def well_formed(token: str) -> bool:
    """Whether `token` has the shape of a hub token (checked before any query, so junk costs nothing)."""
    return _SHAPE.fullmatch(token) is not None


async def create(conn: asyncpg.Connection, org: str, label: str, created_by: str) -> tuple[str, str]:
    """A new token for `org` (which the caller checked): (id, token); only its hash is kept."""
    token_id, token = new_token()
    await conn.execute(
        "INSERT INTO hub.api_tokens (id, org_id, token_hash, label, created_by) VALUES ($1, $2, $3, $4, $5)",
        token_id, org, token_hash(token), label, created_by,
    )  # fmt: skip
    return token_id, token


async def bearer(conn: asyncpg.Connection | asyncpg.Pool, token: str) -> Bearer | None:
    """The organisation a token belongs to, or None (unknown, malformed or revoked)."""
    if not well_formed(token):
        return None
    row = await conn.fetchrow(
        "SELECT id, org_id FROM hub.api_tokens WHERE token_hash = $1 AND revoked_at IS NULL", token_hash(token)
    )
    return Bearer(row["org_id"], row["id"]) if row else None


async def listing(conn: asyncpg.Connection, org: str | None = None) -> list[TokenRow]:
    rows = await conn.fetch(
        "SELECT * FROM hub.api_tokens WHERE $1::text IS NULL OR org_id = $1 ORDER BY org_id, created_at", org
    )
    return [
        TokenRow(r["id"], r["org_id"], r["label"], r["created_at"], r["created_by"], r["revoked_at"], r["revoked_by"])
        for r in rows
    ]


async def revoke(conn: asyncpg.Connection, token_id: str, revoked_by: str) -> TokenRow | None:
    """Revoke a token by its id (at once: the next request with it is refused); None if no such token."""
    r = await conn.fetchrow(
        """UPDATE hub.api_tokens SET revoked_at = coalesce(revoked_at, now()), revoked_by = coalesce(revoked_by, $2)
           WHERE id = $1 RETURNING *""",
        token_id, revoked_by,
    )  # fmt: skip
    if r is None:
        return None
    return TokenRow(
        r["id"], r["org_id"], r["label"], r["created_at"], r["created_by"], r["revoked_at"], r["revoked_by"]
    )
