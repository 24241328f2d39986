"""SQL for what agreements become in PostgreSQL: organisation roles and schemas, and one security_barrier
view per (organisation, feed, form), owned by the NOLOGIN non-superuser role hub_share_owner.

Pure generation; hub/control/share_apply.py runs it. Every identifier is quoted by hub/identifiers.py and
every value is a literal quoted there too (DDL takes no parameters). No secret ever appears in the text:
pseudonym keys are made by the server into a table no organisation can read, and passwords arrive as
SCRAM verifiers. Why views and not row-level security: docs/agreements.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from hub.agreement import names
from hub.agreement.grants import Clause, FeedInfo
from hub.agreement.patterns import glob_to_like
from hub.control.tables import BUCKET_ORIGIN, interval
from hub.identifiers import qualified, quote_ident, quote_literal

SHARING_VERSION = "hub sharing 1"
OWNER = quote_ident(names.SHARE_OWNER)
PRIVATE = quote_ident(names.PRIVATE_SCHEMA)
KEYS = qualified(names.PRIVATE_SCHEMA, "pseudonym_keys")
# TimescaleDB's schemas no organisation needs: chunk names and time ranges, jobs, its catalog. Its
# `_timescaledb_functions` must stay usable: TimescaleDB resolves them as the querying role.
TIMESCALE_PRIVATE_SCHEMAS = (
    "timescaledb_information",
    "timescaledb_experimental",
    "_timescaledb_catalog",
    "_timescaledb_config",
    "_timescaledb_internal",
    "_timescaledb_cache",
    "_timescaledb_debug",
)
# A 256-bit key from the server's random generator (gen_random_uuid is core since PostgreSQL 13): made
# where it is kept, so it is in no statement text and no log.
KEY_EXPR = "sha256(uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()))"


def bootstrap_sql(timescale: bool) -> list[str]:
    """Once per database (idempotent): the owner role, the private schema with the key table, open_data."""
    stmts = [
        f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {quote_literal(names.SHARE_OWNER)}) THEN "
        f"CREATE ROLE {OWNER} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS; "
        "END IF; END$$",
        f"CREATE SCHEMA IF NOT EXISTS {PRIVATE}",
        f"REVOKE ALL ON SCHEMA {PRIVATE} FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA {PRIVATE} TO {OWNER}",
        # HMAC's inner and outer pads (RFC 2104) of a key, zero-padded to SHA-256's 64-byte block: the views
        # compute sha256(opad || sha256(ipad || id)), which is HMAC-SHA256, with core SQL only.
        f"CREATE OR REPLACE FUNCTION {PRIVATE}.hmac_pad(key bytea, pad int) RETURNS bytea"
        " LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $f$"
        " SELECT decode(string_agg(lpad(to_hex((CASE WHEN i < octet_length(key) THEN get_byte(key, i) ELSE 0 END)"
        " # pad), 2, '0'), '' ORDER BY i), 'hex') FROM generate_series(0, 63) AS i $f$",
        f"REVOKE ALL ON FUNCTION {PRIVATE}.hmac_pad(bytea, int) FROM PUBLIC",
        f"CREATE TABLE IF NOT EXISTS {KEYS} ("
        " agreement_id text PRIMARY KEY,"
        " key bytea NOT NULL CHECK (octet_length(key) BETWEEN 32 AND 64),"
        f" ipad bytea GENERATED ALWAYS AS ({PRIVATE}.hmac_pad(key, 54)) STORED,"
        f" opad bytea GENERATED ALWAYS AS ({PRIVATE}.hmac_pad(key, 92)) STORED,"
        " created_at timestamptz NOT NULL DEFAULT now())",
        f"REVOKE ALL ON {KEYS} FROM PUBLIC",
        f"GRANT SELECT ON {KEYS} TO {OWNER}",
        f"CREATE SCHEMA IF NOT EXISTS {quote_ident(names.OPEN_SCHEMA)} AUTHORIZATION {OWNER}",
        f"GRANT USAGE ON SCHEMA {quote_ident(names.OPEN_SCHEMA)} TO PUBLIC",
    ]
    if timescale:
        listed = ", ".join(quote_literal(s) for s in TIMESCALE_PRIVATE_SCHEMAS)
        stmts += [
            "DO $$DECLARE s text; BEGIN FOR s IN SELECT nspname FROM pg_namespace WHERE nspname IN "
            f"({listed}) LOOP EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM PUBLIC', s); END LOOP; END$$",
            # add_job() would let an organisation schedule its own jobs (and block dropping its role).
            "DO $$DECLARE f regprocedure; BEGIN FOR f IN SELECT p.oid::regprocedure FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.proname = 'add_job' AND n.nspname = 'public' "
            "LOOP EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f); END LOOP; END$$",
        ]
    stmts.append(f"COMMENT ON SCHEMA {PRIVATE} IS {quote_literal(SHARING_VERSION)}")
    return stmts


def database_sql() -> list[str]:
    """Only roles granted CONNECT may log in, and no organisation gets TEMP (pg_temp is where it could
    otherwise create a function). PostgreSQL grants both to PUBLIC by default."""
    return [
        "DO $$BEGIN EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database()); END$$"
    ]


# --- organisations ----------------------------------------------------------------------


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = 4096) -> str:
    """What PostgreSQL stores for a password (SCRAM-SHA-256, RFC 5802/7677, PostgreSQL's format), so the
    password itself never reaches the server. ASCII only: PostgreSQL's SASLprep is the identity for it."""
    if not password.isascii():
        raise ValueError("passwords are generated ASCII")
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def generate_password() -> str:
    return secrets.token_urlsafe(24)


# pgaudit settings of an organisation's role (superuser-only parameters: the role cannot change them).
# Without pgaudit loaded PostgreSQL keeps them as inert placeholders.
AUDIT_SETTINGS = (
    ("pgaudit.log", "read"),
    ("pgaudit.log_relation", "on"),  # one line per relation read
    ("pgaudit.log_catalog", "off"),  # not psql's own catalog queries
    ("pgaudit.log_parameter", "on"),  # the values bound to a statement
    ("pgaudit.log_rows", "on"),
    ("pgaudit.log_statement_once", "on"),
)


def org_role_sql(org: str, verifier: str, connection_limit: int) -> list[str]:
    """A new organisation: its login role (a SCRAM verifier, never a password), its schema, its settings."""
    if not verifier.startswith("SCRAM-SHA-256$"):
        raise ValueError("an organisation's password reaches the database as a SCRAM verifier only")
    role = quote_ident(names.org_role(org))
    schema = quote_ident(names.org_schema(org))
    return [
        f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS"
        f" CONNECTION LIMIT {int(connection_limit)} PASSWORD {quote_literal(verifier)}",
        *org_schema_sql(org),
        f"ALTER ROLE {role} SET search_path = {schema}, {quote_ident(names.OPEN_SCHEMA)}",
        f"ALTER ROLE {role} SET statement_timeout = '60s'",
        f"ALTER ROLE {role} SET idle_in_transaction_session_timeout = '5min'",
        *(f"ALTER ROLE {role} SET {name} = {quote_literal(value)}" for name, value in AUDIT_SETTINGS),
    ]


def org_schema_sql(org: str) -> list[str]:
    role = quote_ident(names.org_role(org))
    schema = quote_ident(names.org_schema(org))
    return [
        f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {OWNER}",
        f"GRANT USAGE ON SCHEMA {schema} TO {role}",
    ]


def org_connect_sql(org: str) -> list[str]:
    role = quote_literal(names.org_role(org))
    return [f"DO $$BEGIN EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), {role}); END$$"]


def org_limit_sql(org: str, connection_limit: int) -> str:
    return f"ALTER ROLE {quote_ident(names.org_role(org))} CONNECTION LIMIT {int(connection_limit)}"


def password_sql(org: str, verifier: str) -> str:
    return f"ALTER ROLE {quote_ident(names.org_role(org))} PASSWORD {quote_literal(verifier)}"


# --- shared views ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Validity:
    valid_from: datetime | None = None
    valid_until: datetime | None = None


@dataclass(frozen=True)
class ViewSpec:
    """One shared object: created by `statements` (run as the owner role), described by its comment."""

    schema: str
    name: str
    grantee: str  # a role, or PUBLIC for open data
    agreement: str | None
    base_schema: str
    base: str  # the feed table or its rollup
    pseudonym_key: str | None  # the agreement whose key the view joins
    statements: tuple[str, ...]
    fingerprint: str

    @property
    def object(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def qualified(self) -> str:
        return qualified(self.schema, self.name)


def _ts(t: datetime) -> str:
    return quote_literal(t.isoformat()) + "::timestamptz"


def _validity(v: Validity) -> list[str]:
    # statement_timestamp(), not now(): now() stays at the start of the reader's transaction, so a
    # transaction opened before the end would keep seeing rows after it.
    out = []
    if v.valid_from:
        out.append(f"statement_timestamp() >= {_ts(v.valid_from)}")
    if v.valid_until:
        out.append(f"statement_timestamp() < {_ts(v.valid_until)}")
    return out


def _devices(c: Clause, column: str) -> list[str]:
    parts = []
    if c.devices:
        parts.append(f"{column} = ANY (ARRAY[{', '.join(quote_literal(d) for d in c.devices)}]::text[])")
    if c.patterns:
        likes = ", ".join(quote_literal(glob_to_like(p)) for p in c.patterns)
        parts.append(f"{column} LIKE ANY (ARRAY[{likes}]::text[])")
    return ["(" + " OR ".join(parts) + ")"] if parts else []


def raw_select(c: Clause, validity: Validity) -> str:
    table = qualified(c.provider, c.feed)
    columns = []
    source = f"{table} AS t"
    if c.pseudonymise:
        columns.append(
            "encode(sha256(k.opad || sha256(k.ipad || convert_to(t.device_id, 'UTF8'))), 'hex') AS "
            + quote_ident(names.PSEUDONYM_COLUMN)
        )
        # a join, not a scalar subquery: without its key the view has no rows (it fails closed)
        source += f"\n  JOIN {KEYS} AS k ON k.agreement_id = {quote_literal(c.agreement or '')}"
    else:
        columns.append("t.device_id")
    columns.append('t."time"')
    columns += [f"t.{quote_ident(f)}" for f in c.fields]
    where = [f't."time" <= statement_timestamp() - {interval(c.delay)}'] if c.delay > timedelta(0) else []
    where += _validity(validity) + _devices(c, "t.device_id")
    return f"SELECT {', '.join(columns)}\nFROM {source}" + ("\nWHERE " + "\n  AND ".join(where) if where else "")


def aggregate_select(c: Clause, feed: FeedInfo, validity: Validity, rollup_counts: bool) -> str:
    """Buckets of `c.bucket` over the rollup (never the raw rows), closed and older than the delay, over at
    least `c.min_devices` devices. Averages are re-weighted by each field's own count where the rollup has it
    (`n_<field>`), else by its samples (exact for fields that are never null)."""
    bucket = c.bucket or feed.rollup
    if bucket < feed.rollup or bucket.total_seconds() % feed.rollup.total_seconds():
        raise ValueError(f"bucket {bucket} is not a multiple of the rollup's {feed.rollup}")
    rollup = qualified(c.provider, c.feed + "_rollup")
    new_bucket = f"date_bin({interval(bucket)}, r.bucket, {BUCKET_ORIGIN})"
    columns = [f"{new_bucket} AS bucket", "count(DISTINCT r.device_id) AS devices", "sum(r.samples)::bigint AS samples"]
    for f in c.fields:
        avg, low, high, n = (quote_ident(p + f) for p in ("avg_", "min_", "max_", "n_"))
        weight = f"r.{n}" if rollup_counts else "r.samples"
        columns += [
            f"sum(r.{avg} * {weight}) / nullif(sum({weight}) FILTER (WHERE r.{avg} IS NOT NULL), 0) AS {avg}",
            f"min(r.{low}) AS {low}",
            f"max(r.{high}) AS {high}",
        ]
    # closed buckets only: every rollup bucket before the one holding (statement time - delay)
    where = [f"r.bucket < date_bin({interval(bucket)}, statement_timestamp() - {interval(c.delay)}, {BUCKET_ORIGIN})"]
    where += _validity(validity) + _devices(c, "r.device_id")
    return (
        f"SELECT {', '.join(columns)}\nFROM {rollup} AS r\nWHERE "
        + "\n  AND ".join(where)
        + f"\nGROUP BY 1\nHAVING count(DISTINCT r.device_id) >= {int(c.min_devices)}"
    )


def view_spec(
    c: Clause, grantee_org: str | None, feed: FeedInfo, validity: Validity, *, rollup_counts: bool
) -> ViewSpec:
    """The view that enforces clause `c` for one organisation (None: everyone, in open_data)."""
    schema = names.org_schema(grantee_org)
    name = names.view_name(c.provider, c.feed, c.aggregate)
    grantee = "PUBLIC" if grantee_org is None else quote_ident(names.org_role(grantee_org))
    view = qualified(schema, name)
    body = aggregate_select(c, feed, validity, rollup_counts) if c.aggregate else raw_select(c, validity)
    create = f"CREATE VIEW {view} WITH (security_barrier = true) AS\n{body}"
    grant = f"GRANT SELECT ON {view} TO {grantee}"
    fingerprint = hashlib.sha256(f"{create}\n{grant}".encode()).hexdigest()[:16]
    what = f"agreement {c.agreement}, grants[{c.index}]" if c.agreement else f"{c.provider} reads its own feed"
    comment = f"COMMENT ON VIEW {view} IS {quote_literal(f'hub share: {what} (fingerprint {fingerprint})')}"
    return ViewSpec(
        schema=schema,
        name=name,
        grantee="PUBLIC" if grantee_org is None else names.org_role(grantee_org),
        agreement=c.agreement,
        base_schema=c.provider,
        base=c.feed + ("_rollup" if c.aggregate else ""),
        pseudonym_key=c.agreement if c.pseudonymise else None,
        statements=(create, comment, grant),
        fingerprint=fingerprint,
    )


def create_view_sql(v: ViewSpec) -> list[str]:
    """The owner may read the base relation; the view is created by the owner itself (so no superuser ever
    owns a shared view), then the role reverts."""
    stmts = [
        f"GRANT USAGE ON SCHEMA {quote_ident(v.base_schema)} TO {OWNER}",
        f"GRANT SELECT ON {qualified(v.base_schema, v.base)} TO {OWNER}",
    ]
    if v.pseudonym_key is not None:
        stmts.append(
            f"INSERT INTO {KEYS} (agreement_id, key) VALUES ({quote_literal(v.pseudonym_key)}, {KEY_EXPR}) "
            "ON CONFLICT DO NOTHING"
        )
    return [*stmts, f"SET LOCAL ROLE {OWNER}", *v.statements, "RESET ROLE"]


def drop_view_sql(schema: str, name: str) -> list[str]:
    return [f"DROP VIEW IF EXISTS {qualified(schema, name)}"]


def delete_key_sql(agreement: str) -> str:
    """Deleting an agreement's key unlinks its pseudonyms for good (nobody can recompute them)."""
    return f"DELETE FROM {KEYS} WHERE agreement_id = {quote_literal(agreement)}"
