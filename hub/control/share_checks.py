"""Checks `hub apply` runs against the database before it commits sharing changes: the invariants every
shared object must keep, and the expectations written next to agreements."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from hub.agreement import names
from hub.agreement.expectations import ObjectFact, problems, words
from hub.agreement.model import Form
from hub.agreement.policy import Question, World, decide
from hub.catalog.agreements import SHARED_SCHEMAS_SQL
from hub.control.share_plan import Expected

FACTS_SQL = f"""
SELECT DISTINCT n.nspname AS schema, c.relname AS name, b.relname AS base,
       array(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) AS columns,
       coalesce((regexp_match(pg_get_viewdef(c.oid),
                'statement_timestamp\\(\\) - ''([^'']+)''::interval'))[1]::interval, '0'::interval) AS delay
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_rewrite w ON w.ev_class = c.oid
JOIN pg_depend d ON d.objid = w.oid AND d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
JOIN pg_class b ON b.oid = d.refobjid
JOIN pg_namespace bn ON bn.oid = b.relnamespace
WHERE {SHARED_SCHEMAS_SQL} AND c.relkind = 'v' AND b.oid <> c.oid
  AND bn.nspname = $2::text AND b.relname::text IN ($3::text, $3::text || '_rollup')
  AND has_schema_privilege($1::text, n.oid, 'USAGE') AND has_table_privilege($1::text, c.oid, 'SELECT')
"""


async def object_facts(conn: asyncpg.Connection, org: str, provider: str, feed: str) -> list[ObjectFact]:
    """What `org`'s role can select that reads `provider.feed`, as PostgreSQL's catalogs say."""
    rows = await conn.fetch(FACTS_SQL, names.org_role(org), provider, feed)
    return [
        ObjectFact(
            object=f"{r['schema']}.{r['name']}",
            form=Form.aggregate if r["base"] == f"{feed}_rollup" else Form.raw,
            columns=frozenset(r["columns"]),
            delay=r["delay"] if isinstance(r["delay"], timedelta) else timedelta(0),
        )
        for r in rows
    ]


async def expectation_failures(
    conn: asyncpg.Connection, world: World, expected: Sequence[Expected], now: datetime
) -> list[str]:
    out = []
    for x in expected:
        e = x.expectation
        decision = decide(Question(e.org, f"{x.provider}.{e.feed}", now), world)
        facts = await object_facts(conn, e.org, x.provider, e.feed)
        found = problems(e, decision, facts)
        if found:
            where = f"{x.file}:{x.line}" if x.line else x.file
            out.append(f'{where}: agreement {x.agreement} expects "{words(e, x.provider)}", but ' + "; ".join(found))
    return out


# Each query lists what breaks an invariant (nothing, when all hold). From the verified design: every shared
# relation a security_barrier view owned by hub_share_owner; organisation schemas usable by their own role
# only; organisation roles plain logins that are members of nothing; no organisation role with a privilege
# on a relation outside its schema and open_data; the pseudonym keys readable by hub_share_owner only. The one
# member an organisation role may have is its Grafana login (hub_grafana_<id>, made by `hub grafana build` or
# `sync`): NOINHERIT, a member of that role only, with no privilege of its own on any relation.
INVARIANTS = (
    f"""SELECT format('%s.%s is not a security_barrier view owned by hub_share_owner', n.nspname, c.relname)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {SHARED_SCHEMAS_SQL} AND (c.relkind <> 'v' OR pg_get_userbyid(c.relowner) <> 'hub_share_owner'
              OR NOT coalesce('security_barrier=true' = ANY (c.reloptions), false)
              OR coalesce('security_invoker=true' = ANY (c.reloptions), false))""",
    r"""SELECT format('schema %s: owner %s, %s has %s', n.nspname, pg_get_userbyid(n.nspowner),
                      CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type)
        FROM pg_namespace n LEFT JOIN LATERAL aclexplode(n.nspacl) a ON true
        WHERE n.nspname LIKE 'org\_%' AND (pg_get_userbyid(n.nspowner) <> 'hub_share_owner'
              OR (a.grantee <> n.nspowner AND (a.grantee = 0 OR pg_get_userbyid(a.grantee) <> n.nspname
                  OR a.privilege_type <> 'USAGE')))""",
    r"""SELECT format('%s.%s grants %s to %s', n.nspname, c.relname, a.privilege_type,
                      CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace CROSS JOIN LATERAL aclexplode(c.relacl) a
        WHERE n.nspname LIKE 'org\_%' AND a.grantee <> c.relowner
          AND (a.grantee = 0 OR pg_get_userbyid(a.grantee) <> n.nspname OR a.privilege_type <> 'SELECT')""",
    r"""SELECT format('role %s may do more than log in and read', r.rolname) FROM pg_roles r
        WHERE (r.rolname LIKE 'org\_%' AND (r.rolsuper OR r.rolbypassrls OR r.rolcreaterole OR r.rolcreatedb
               OR r.rolreplication
               OR EXISTS (SELECT FROM pg_auth_members m WHERE m.member = r.oid OR (m.roleid = r.oid
                          AND pg_get_userbyid(m.member) <> 'hub_grafana_' || substr(r.rolname, 5)))))
           OR (r.rolname LIKE 'hub\_grafana\_%' AND (r.rolsuper OR r.rolbypassrls OR r.rolcreaterole OR r.rolcreatedb
               OR r.rolreplication OR r.rolinherit OR EXISTS (SELECT FROM pg_auth_members m WHERE m.roleid = r.oid)
               OR EXISTS (SELECT FROM pg_auth_members m WHERE m.member = r.oid
                          AND pg_get_userbyid(m.roleid) <> 'org_' || substr(r.rolname, 13))))
           OR (r.rolname = 'hub_share_owner' AND (r.rolcanlogin OR r.rolsuper OR r.rolbypassrls
               OR EXISTS (SELECT FROM pg_auth_members m WHERE m.roleid = r.oid)))""",
    r"""SELECT format('role %s can read %s.%s', r.rolname, n.nspname, c.relname)
        FROM pg_roles r CROSS JOIN pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE (r.rolname LIKE 'org\_%' OR r.rolname LIKE 'hub\_grafana\_%') AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
          AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'open_data') AND n.nspname <> r.rolname
          AND n.nspname NOT LIKE '\_timescaledb%' AND n.nspname NOT LIKE 'timescaledb%'
          AND has_table_privilege(r.oid, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')""",
    r"""SELECT format('role %s can read the pseudonym keys', r.rolname) FROM pg_roles r
        WHERE NOT r.rolsuper AND r.rolname <> 'hub_share_owner' AND r.rolname NOT LIKE 'pg\_%'
          AND to_regclass('hub_private.pseudonym_keys') IS NOT NULL
          AND has_table_privilege(r.oid, 'hub_private.pseudonym_keys', 'SELECT')""",
)


async def broken_invariants(conn: asyncpg.Connection) -> list[str]:
    out: list[str] = []
    for query in INVARIANTS:
        out += [r[0] for r in await conn.fetch(query)]
    return out
