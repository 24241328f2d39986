"""`hub agreements revoke ID --reason ...`: an agreement ends now, before its time.

Within one transaction the agreement is marked revoked with who and why (the audit trail records it), the
organisations' sessions are ended (a statement prepared in an open transaction would otherwise go on
answering), its views are dropped and its pseudonym key deleted; after the commit the sessions are ended
once more, in case one connected meanwhile. The agreement stays revoked: `hub apply` will not bring it back.
"""

from __future__ import annotations

from dataclasses import dataclass

from hub.agreement import names
from hub.catalog import agreements as shared
from hub.catalog import store as catalog
from hub.catalog.locks import APPLY_LOCK
from hub.control import share_sql
from hub.control.share_apply import mark_revoked
from hub.db import connection
from hub.errors import HubError, NotFound
from hub.settings import HubSettings


@dataclass(frozen=True)
class Revoked:
    agreement: str
    objects: list[str]
    sessions_ended: int


async def revoke(settings: HubSettings, agreement_id: str, reason: str, actor: str) -> Revoked:
    if not reason.strip():
        raise HubError("say why the agreement is revoked (--reason): the audit trail keeps it")
    async with connection(settings.endpoints().database_url) as conn:
        await catalog.ensure_catalog(conn)
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", APPLY_LOCK)
            rows = await shared.agreements(conn)
            row = rows.get(agreement_id)
            if row is None:
                known = ", ".join(sorted(i for i, r in rows.items() if r.status == "active")) or "none"
                raise NotFound(f"no applied agreement {agreement_id!r} (active agreements: {known})")
            if row.status == "revoked":
                raise HubError(f"agreement {agreement_id} was already revoked on {row.revoked_at:%Y-%m-%d %H:%M}Z")
            objects = await shared.objects_of_agreement(conn, agreement_id)
            roles = sorted(
                await shared.org_roles(conn)
                if any(s == names.OPEN_SCHEMA for s, _ in objects)
                else {s for s, _ in objects}
            )
            await mark_revoked(conn, agreement_id, actor, reason.strip())
            ended = await shared.terminate_sessions(conn, roles)
            await conn.execute("SET LOCAL lock_timeout = '10s'")
            for schema, name in objects:
                for stmt in share_sql.drop_view_sql(schema, name):
                    await conn.execute(stmt)
            await conn.execute(share_sql.delete_key_sql(agreement_id))
        ended += await shared.terminate_sessions(conn, roles)
    return Revoked(agreement_id, [f"{s}.{n}" for s, n in objects], ended)
