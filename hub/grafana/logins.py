"""The database side of Grafana, as SQL: each organisation's Grafana login, the operators' role, and the
`hub_stats` functions a provider's dashboard reads its own counters through.

Pure; hub/grafana/database.py runs it. Why a login of its own per organisation, and not the organisation's role
with its password (docs/dashboards.md): the hub keeps no organisation's password (it shows it once), Grafana's
secret can be rotated without breaking the organisation's own login, and the audit log tells Grafana's reads
from the organisation's. The login is NOINHERIT and a member of org_<id> only, and every session it opens
starts as org_<id> (`ALTER ROLE .. SET role`): it reads exactly what the organisation reads, and `SET ROLE NONE`
leaves it with nothing at all. Passwords reach PostgreSQL as SCRAM verifiers only.
"""

from __future__ import annotations

from hub.agreement import names
from hub.control.share_sql import AUDIT_SETTINGS
from hub.grafana.sql import STATS_SCHEMA
from hub.identifiers import qualified, quote_ident, quote_literal

STATS_OWNER = "hub_stats_owner"  # NOLOGIN: owns the hub_stats functions, reads the counters they filter
GRAFANA_CONNECTION_LIMIT = 5
# The operators' role reads the hub's counters and no feed data: only these tables (and columns).
OPERATOR_TABLES = ("ingest_counters", "land_counters", "land_offsets", "land_events")
OPERATOR_COLUMNS = {
    "feeds": ("partner_id", "name", "table_schema", "table_name", "kafka_topic"),
    # never the refused payloads or their messages: who, what, when and why only
    "dead_letters": ("id", "at", "stored_at", "partner_id", "feed", "reason", "stage", "replays", "replayed_at"),
}
SESSION_SETTINGS = (
    ("statement_timeout", "60s"),
    ("idle_in_transaction_session_timeout", "5min"),
    ("default_transaction_read_only", "on"),
)


def _connect_sql(role: str) -> str:
    grant = "format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), " + quote_literal(role) + ")"
    return f"DO $$BEGIN EXECUTE {grant}; END$$"


def login_sql(org: str, verifier: str | None, *, exists: bool, database_grants: bool) -> list[str]:
    """Create (or bring back in line) the Grafana login of `org`; a verifier sets its password."""
    if verifier is not None and not verifier.startswith("SCRAM-SHA-256$"):
        raise ValueError("a Grafana login's password reaches the database as a SCRAM verifier only")
    login = quote_ident(names.grafana_login(org))
    org_role = names.org_role(org)
    attributes = (
        f"LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
        f"CONNECTION LIMIT {GRAFANA_CONNECTION_LIMIT}"
    )
    password = f" PASSWORD {quote_literal(verifier)}" if verifier else ""
    stmts = [f"{'ALTER' if exists else 'CREATE'} ROLE {login} {attributes}{password}"]
    stmts += [
        f"GRANT {quote_ident(org_role)} TO {login}",
        f"ALTER ROLE {login} SET role = {quote_literal(org_role)}",
        f"ALTER ROLE {login} SET search_path = {quote_ident(names.org_schema(org))}, {quote_ident(names.OPEN_SCHEMA)}",
        *(f"ALTER ROLE {login} SET {k} = {quote_literal(v)}" for k, v in SESSION_SETTINGS),
        *(f"ALTER ROLE {login} SET {k} = {quote_literal(v)}" for k, v in AUDIT_SETTINGS),
    ]
    if database_grants:
        stmts.append(_connect_sql(names.grafana_login(org)))
    return stmts


def operators_sql(role: str, verifier: str | None, *, exists: bool, database_grants: bool) -> list[str]:
    """The operators' role: made here only where nobody made it before (compose's init script does); its
    password is set only when the hub generated it. Then: the counters, and nothing else."""
    r = quote_ident(role)
    stmts = []
    if not exists:
        assert verifier is not None, "a new operators' role needs a password"
        stmts.append(
            f"CREATE ROLE {r} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
            f"CONNECTION LIMIT {GRAFANA_CONNECTION_LIMIT} PASSWORD {quote_literal(verifier)}"
        )
    elif verifier is not None:
        stmts.append(f"ALTER ROLE {r} PASSWORD {quote_literal(verifier)}")
    stmts += [f"ALTER ROLE {r} SET {k} = {quote_literal(v)}" for k, v in SESSION_SETTINGS]
    if database_grants:
        stmts.append(_connect_sql(role))
    stmts.append(f"GRANT USAGE ON SCHEMA hub TO {r}")
    stmts += [f"GRANT SELECT ON {qualified('hub', t)} TO {r}" for t in OPERATOR_TABLES]
    for table, columns in OPERATOR_COLUMNS.items():
        cols = ", ".join(quote_ident(c) for c in columns)
        stmts.append(f"GRANT SELECT ({cols}) ON {qualified('hub', table)} TO {r}")
    return stmts


def _function(name: str, args: str, returns: str, body: str) -> list[str]:
    fn = qualified(STATS_SCHEMA, name)
    # SECURITY DEFINER with a fixed search_path: the body resolves nothing through the caller's path.
    return [
        f"CREATE OR REPLACE FUNCTION {fn}({args}) RETURNS TABLE ({returns})\n"
        "LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$\n"
        f"{body}\n$f$",
        f"ALTER FUNCTION {fn}({_types(args)}) OWNER TO {quote_ident(STATS_OWNER)}",
        f"GRANT EXECUTE ON FUNCTION {fn}({_types(args)}) TO PUBLIC",
    ]


def _types(args: str) -> str:
    return ", ".join(a.split()[-1] for a in args.split(","))


# The caller publishes `provider` when its session's role is org_<provider> or a member of it (its Grafana
# login): nobody else gets a row, whoever asks and however.
PUBLISHES = (
    "EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = 'org_' || provider "
    "AND pg_catalog.pg_has_role(session_user, r.oid, 'MEMBER'))"
)


def stats_sql() -> list[str]:
    """Once per database (idempotent): the functions providers read their own feeds' counters through."""
    owner = quote_ident(STATS_OWNER)
    schema = quote_ident(STATS_SCHEMA)
    stmts = [
        f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {quote_literal(STATS_OWNER)}) THEN "
        f"CREATE ROLE {owner} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS; "
        "END IF; END$$",
        f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {owner}",
        f"GRANT USAGE ON SCHEMA {schema} TO PUBLIC",
        f"GRANT USAGE ON SCHEMA hub TO {owner}",
        f"GRANT SELECT ON hub.ingest_counters, hub.land_counters TO {owner}",
        f"GRANT SELECT (at, partner_id, feed, reason, stage) ON hub.dead_letters TO {owner}",
    ]
    stmts += _function(
        "feed_messages",
        "provider text, feed_name text",
        "reason text, messages bigint, last_at timestamptz",
        "SELECT c.reason, c.messages, c.last_at FROM hub.ingest_counters c\n"
        f"WHERE c.partner_id = provider AND c.feed = feed_name AND {PUBLISHES}",
    )
    stmts += _function(
        "feed_rows_landed",
        "provider text, feed_name text",
        "rows bigint",
        "SELECT coalesce(sum(c.rows), 0)::bigint FROM hub.land_counters c\n"
        f"WHERE c.partner_id = provider AND c.feed = feed_name\nHAVING {PUBLISHES}",
    )
    stmts += _function(
        "feed_dead_letters",
        "provider text, feed_name text, since timestamptz, until timestamptz",
        "at timestamptz, reason text, stage text",
        "SELECT d.at, d.reason, d.stage FROM hub.dead_letters d\n"
        f"WHERE d.partner_id = provider AND d.feed = feed_name AND d.at >= since AND d.at <= until AND {PUBLISHES}",
    )
    return stmts
