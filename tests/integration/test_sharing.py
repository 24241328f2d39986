"""Agreements enforced by PostgreSQL: each organisation's own role reads exactly what its grant allows through
the views `hub apply` made, and nothing else by any path. Against the session stack's real PostgreSQL, with a
partner, organisations and rows of the tests' own (tests/integration/sharing_support.py)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from asyncpg.exceptions._base import InternalClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.agreement.grants import resolve
from hub.agreement.model import Agreement
from hub.agreement.patterns import glob_match
from hub.agreement.policy import Question, World, decide
from hub.agreement.world import load_world
from hub.control.share_sql import Validity, create_view_sql, view_spec
from hub.settings import HubSettings
from tests.integration.sharing_support import ORIGIN, Workspace, bucket_of, seed

ORGS = ["fields", "devices", "pseudo", "pseudo2", "other", "delay", "later", "agg", "revoke", "nobody", "prop"]
AGREEMENTS = """\
agreements:
  - {id: fields_{tag}, provider: {partner}, consumers: [fields_{tag}], purpose: t, licence: L,
     grants: [{feed: air, fields: [pm25, no2]}]}
  - {id: devices_{tag}, provider: {partner}, consumers: [devices_{tag}], purpose: t, licence: L,
     grants: [{feed: air, devices: [st-001, "st_0*"]}]}
  - {id: pseudo_{tag}, provider: {partner}, consumers: [pseudo_{tag}, pseudo2_{tag}], purpose: t, licence: L,
     grants: [{feed: air, fields: [pm25], pseudonymise: true}]}
  - {id: pseudob_{tag}, provider: {partner}, consumers: [other_{tag}], purpose: t, licence: L,
     grants: [{feed: air, fields: [pm25], pseudonymise: true}]}
  - {id: delay_{tag}, provider: {partner}, consumers: [delay_{tag}], purpose: t, licence: L,
     grants: [{feed: air, fields: [pm25], delay: 1h}]}
  - {id: later_{tag}, provider: {partner}, consumers: [later_{tag}], purpose: t, licence: L, valid_from: {tomorrow},
     grants: [{feed: air}]}
  - {id: agg_{tag}, provider: {partner}, consumers: [agg_{tag}], purpose: t, licence: L,
     grants: [{feed: air, form: aggregate, bucket: 30m, min_devices: 4, fields: [pm25, no2],
               devices: [st-001, st-002, st-003, st-004]}]}
  - {id: open_{tag}, provider: {partner}, consumers: everyone, purpose: t, licence: CC0-1.0,
     grants: [{feed: noise, form: aggregate, bucket: 1h, min_devices: 2}]}
  - {id: revoke_{tag}, provider: {partner}, consumers: [revoke_{tag}], purpose: t, licence: L,
     grants: [{feed: air, fields: [pm25]}]}
"""


@pytest_asyncio.fixture(scope="module")
async def ws(stack_settings: HubSettings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Workspace]:
    w = Workspace(tmp_path_factory.mktemp("sharing"), stack_settings)
    w.setup(ORGS)
    await w.apply("connectors", "organisations")
    conn = await asyncpg.connect(stack_settings.endpoints().database_url)
    try:
        w.rows = await seed(conn, w.partner, datetime.now(UTC))  # type: ignore[attr-defined]
    finally:
        await conn.close()
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    w.write("agreements/lab.yaml", AGREEMENTS.replace("{tomorrow}", tomorrow))
    await w.apply()
    yield w


async def superuser(ws: Workspace) -> asyncpg.Connection:
    return await asyncpg.connect(ws.settings.endpoints().database_url)


async def read(ws: Workspace, org: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await ws.connect(org)
    try:
        return list(await conn.fetch(sql.replace("{partner}", ws.partner), *args))
    finally:
        await conn.close()


def base(ws: Workspace) -> list[tuple[Any, ...]]:
    return ws.rows  # type: ignore[attr-defined, no-any-return]


# --------------------------------------------------------------------------- each kind of limit


async def test_fields_limit_the_columns_and_every_row_of_every_device_comes_through(ws: Workspace) -> None:
    rows = await read(ws, "fields", "SELECT * FROM {partner}__air")
    assert list(rows[0].keys()) == ["device_id", "time", "pm25", "no2"]
    assert {tuple(r) for r in rows} == {(r[0], r[1], r[2], r[4]) for r in base(ws)}


async def test_devices_are_ids_and_patterns_whose_underscore_is_not_a_wildcard(ws: Workspace) -> None:
    rows = await read(ws, "devices", "SELECT device_id, count(*) AS n FROM {partner}__air GROUP BY 1")
    assert {r["device_id"] for r in rows} == {"st-001", "st_01"}  # not stX01, st-002 or secret-9
    assert sum(r["n"] for r in rows) == sum(1 for r in base(ws) if r[0] in ("st-001", "st_01"))


async def test_pseudonyms_are_a_keyed_hash_stable_within_an_agreement_and_unlinkable_across(ws: Workspace) -> None:
    rows = await read(ws, "pseudo", "SELECT * FROM {partner}__air")
    assert list(rows[0].keys()) == ["device_pseudonym", "time", "pm25"]
    conn = await superuser(ws)
    try:
        key = await conn.fetchval(
            "SELECT key FROM hub_private.pseudonym_keys WHERE agreement_id = $1", f"pseudo_{ws.tag}"
        )
    finally:
        await conn.close()
    devices = {r[0] for r in base(ws)}
    assert {r["device_pseudonym"] for r in rows} == {
        hmac.new(key, d.encode(), hashlib.sha256).hexdigest() for d in devices
    }
    same = await read(ws, "pseudo2", "SELECT DISTINCT device_pseudonym FROM {partner}__air")
    other = await read(ws, "other", "SELECT DISTINCT device_pseudonym FROM {partner}__air")
    assert {r[0] for r in same} == {r["device_pseudonym"] for r in rows}
    assert len({r[0] for r in other}) == len(devices) and not {r[0] for r in other} & {r[0] for r in same}


async def test_a_delay_hides_rows_younger_than_it_at_the_moment_of_each_statement(ws: Workspace) -> None:
    conn = await ws.connect("delay")
    try:
        cut = await conn.fetchval("SELECT statement_timestamp() - interval '1 hour'")
        rows = await conn.fetch(f"SELECT time FROM {ws.partner}__air")
    finally:
        await conn.close()
    assert max(r["time"] for r in rows) <= cut
    assert len(rows) == sum(1 for r in base(ws) if r[1] <= cut)


async def test_an_agreement_not_yet_in_force_gives_an_object_with_no_rows_and_explain_says_when(ws: Workspace) -> None:
    assert await read(ws, "later", "SELECT * FROM {partner}__air") == []
    conn = await superuser(ws)
    try:
        d = decide(Question(ws.org("later"), f"{ws.partner}.air", datetime.now(UTC)), await load_world(conn))
    finally:
        await conn.close()
    assert not d.allowed and any("not yet in force: valid from" in r.detail for r in d.rules)


async def test_aggregates_come_from_the_rollup_in_closed_buckets_of_at_least_k_devices(ws: Workspace) -> None:
    conn = await ws.connect("agg")
    try:
        cut = bucket_of(await conn.fetchval("SELECT statement_timestamp()"), timedelta(minutes=30))
        rows = await conn.fetch(f"SELECT * FROM {ws.partner}__air__agg ORDER BY bucket")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch(f"SELECT * FROM {ws.partner}.air_rollup")
    finally:
        await conn.close()
    assert list(rows[0].keys()) == [
        "bucket", "devices", "samples", "avg_pm25", "min_pm25", "max_pm25", "avg_no2", "min_no2", "max_no2"
    ]  # fmt: skip
    granted = [r for r in base(ws) if r[0] in ("st-001", "st-002", "st-003", "st-004")]
    buckets: dict[datetime, list[tuple[Any, ...]]] = {}
    for r in granted:
        buckets.setdefault(bucket_of(r[1], timedelta(minutes=30)), []).append(r)
    expected = {b: rs for b, rs in buckets.items() if b < cut and len({r[0] for r in rs}) >= 4}
    assert expected and [r["bucket"] for r in rows] == sorted(expected)  # buckets without st-004 are suppressed
    for r in rows:
        readings = expected[r["bucket"]]
        assert r["devices"] == 4 and r["samples"] == len(readings)
        assert r["avg_pm25"] == pytest.approx(sum(x[2] for x in readings) / len(readings))
        no2 = [x[4] for x in readings if x[4] is not None]  # a nullable field: weighted by its own count
        assert r["avg_no2"] == pytest.approx(sum(no2) / len(no2))


async def test_open_data_is_read_by_every_organisation_from_one_object(ws: Workspace) -> None:
    for org in ("nobody", "fields"):
        rows = await read(ws, org, "SELECT bucket, devices FROM {partner}__noise__agg")
        assert rows and all(r["devices"] == 4 for r in rows)
        assert all((r["bucket"] - ORIGIN) % timedelta(hours=1) == timedelta(0) for r in rows)


async def test_an_organisation_without_an_agreement_has_nothing_in_its_schema(ws: Workspace) -> None:
    rows = await read(
        ws, "nobody", "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema LIKE 'org%'"
    )
    assert rows == []


# --------------------------------------------------------------------------- abuse


ABUSES = [
    ("the feed table", "SELECT * FROM {partner}.air", "permission denied for schema"),
    ("the rollup", "SELECT * FROM {partner}.air_rollup", "permission denied for schema"),
    ("another organisation's schema", "SELECT * FROM org_devices_{tag}.{partner}__air", "permission denied for schema"),
    ("the pseudonym secret", "SELECT * FROM hub_private.pseudonym_keys", "permission denied for schema hub_private"),
    ("the catalog", "SELECT * FROM hub.agreements", "permission denied for schema hub"),
    ("another organisation's role", "SET ROLE org_devices_{tag}", "permission denied to set role"),
    ("the owner of the views", "SET ROLE hub_share_owner", "permission denied to set role"),
    ("a session as someone else", "SET SESSION AUTHORIZATION org_devices_{tag}", "permission denied to set session"),
    (
        "a function of its own",
        "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "permission denied",
    ),
    ("a table of its own", "CREATE TABLE org_fields_{tag}.t (x int)", "permission denied for schema"),
    ("writing through the view", "DELETE FROM {partner}__air", "permission denied for view"),
    ("the hub's passwords", "SELECT rolpassword FROM pg_authid", "permission denied for table pg_authid"),
    ("the server's files", "SELECT pg_read_file('postgresql.conf')", "permission denied for function pg_read_file"),
]


@pytest.mark.parametrize(("what", "sql", "error"), ABUSES, ids=[a[0] for a in ABUSES])
async def test_an_organisation_is_refused(ws: Workspace, what: str, sql: str, error: str) -> None:
    conn = await ws.connect("fields")
    try:
        with pytest.raises(asyncpg.PostgresError) as caught:
            await conn.execute(sql.replace("{partner}", ws.partner).replace("{tag}", ws.tag))
    finally:
        await conn.close()
    assert error in str(caught.value), (what, str(caught.value))


async def test_a_leaky_function_in_a_where_clause_sees_only_the_rows_the_grant_allows(ws: Workspace) -> None:
    """security_barrier: the view's own filter runs first. The organisation cannot create functions at all, so
    the hub's superuser lends it one for this test."""
    schema = f"leak_{ws.tag}"
    admin = await superuser(ws)
    await admin.execute(
        f"CREATE SCHEMA {schema}; CREATE FUNCTION {schema}.peek(d text) RETURNS bool LANGUAGE plpgsql COST 0.0000001"
        f" AS $$BEGIN RAISE NOTICE 'saw %', d; RETURN true; END$$;"
        f" GRANT USAGE ON SCHEMA {schema} TO org_devices_{ws.tag}; GRANT EXECUTE ON FUNCTION {schema}.peek(text)"
        f" TO org_devices_{ws.tag}"
    )
    seen: set[str] = set()
    conn = await ws.connect("devices")
    conn.add_log_listener(lambda _c, msg: seen.add(msg.message.removeprefix("saw ")))
    try:
        n = await conn.fetchval(f"SELECT count(*) FROM {ws.partner}__air WHERE {schema}.peek(device_id)")
        await asyncio.sleep(0)  # notices are delivered with the result
    finally:
        await conn.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()
    assert n > 0 and seen == {"st-001", "st_01"}


# --------------------------------------------------------------------------- revocation and expiry


async def test_a_revocation_cuts_off_open_sessions_and_a_prepared_statement_in_an_open_transaction(
    ws: Workspace,
) -> None:
    from hub.control.revoke import revoke

    idle = await ws.connect("revoke")
    busy = await ws.connect("revoke")
    query = f"SELECT count(*) FROM {ws.partner}__air"
    assert await idle.fetchval(query) > 0
    tx = busy.transaction()
    await tx.start()
    assert await busy.fetchval(query) > 0
    done = await revoke(ws.settings, f"revoke_{ws.tag}", "test: partner withdrew consent", "alice")
    assert done.objects == [f"org_revoke_{ws.tag}.{ws.partner}__air"] and done.sessions_ended >= 2
    for conn in (idle, busy):
        # How the client reports the ended session depends on when the server's notice arrives (asyncpg may be
        # mid-read of it: InternalClientError); every way is an error, never rows.
        ended = (
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.AdminShutdownError,
            InternalClientError,
        )
        with pytest.raises(ended):
            await conn.fetchval(query)
        conn.terminate()
    again = await ws.connect("revoke")
    try:
        with pytest.raises(asyncpg.UndefinedTableError):
            await again.fetchval(query)
    finally:
        await again.close()
    admin = await superuser(ws)
    try:
        event = await admin.fetchrow(
            "SELECT * FROM hub.agreement_events WHERE agreement_id = $1 ORDER BY id DESC LIMIT 1", f"revoke_{ws.tag}"
        )
        keys = await admin.fetchval(
            "SELECT count(*) FROM hub_private.pseudonym_keys WHERE agreement_id = $1", f"revoke_{ws.tag}"
        )
    finally:
        await admin.close()
    assert (event["action"], event["actor"], event["reason"]) == ("revoked", "alice", "test: partner withdrew consent")
    assert event["before"] is not None and event["db_role"] == "postgres" and keys == 0
    result = await ws.apply()  # the file still lists it: it stays revoked, and applying changes nothing
    assert result.plan.empty and any("stays revoked" in n for n in result.plan.notes)


async def test_expiry_needs_no_job_an_open_transaction_sees_nothing_once_the_agreement_ends(ws: Workspace) -> None:
    until = datetime.now(UTC) + timedelta(seconds=4)
    ws.write(
        "expiring/air.yaml",
        "agreements:\n  - {id: expiring_{tag}, provider: {partner}, consumers: [nobody_{tag}], purpose: t, licence: L,"
        f" valid_until: '{until.isoformat()}', grants: [{{feed: air, fields: [pm25]}}]}}\n",
    )
    await ws.apply("expiring")
    conn = await ws.connect("nobody")
    try:
        async with conn.transaction(isolation="repeatable_read"):
            statement = await conn.prepare(f"SELECT count(*) FROM {ws.partner}__air")
            assert await statement.fetchval() > 0
            await asyncio.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 0.3)
            assert await statement.fetchval() == 0  # the same prepared statement, in the same snapshot
    finally:
        await conn.close()
    admin = await superuser(ws)
    try:
        d = decide(Question(ws.org("nobody"), f"{ws.partner}.air", datetime.now(UTC)), await load_world(admin))
    finally:
        await admin.close()
    assert not d.allowed and any(r.detail.startswith("expired on") for r in d.rules)
    result = await ws.apply("expiring")  # noticing the end: the object goes, the trail says so
    assert any(c.kind == "agreement" and "expired on" in c.detail for c in result.plan.changes)


# --------------------------------------------------------------------------- apply


async def test_applying_the_same_files_again_changes_nothing(ws: Workspace) -> None:
    result = await ws.apply()
    assert result.plan.empty, result.plan.render()


async def test_an_agreement_whose_file_is_gone_is_withdrawn_when_its_directory_is_applied(ws: Workspace) -> None:
    one = "agreements:\n  - {id: %s_{tag}, provider: {partner}, consumers: [%s_{tag}], purpose: t, licence: L,"
    extra = ws.write("more/extra.yaml", one % ("extra", "fields") + " grants: [{feed: noise}]}\n")
    ws.write("more/kept.yaml", one % ("kept", "devices") + " grants: [{feed: noise}]}\n")
    await ws.apply("more")
    assert (await read(ws, "fields", "SELECT count(*) FROM {partner}__noise"))[0][0] > 0
    extra.unlink()
    result = await ws.apply("more")
    assert f"- agreement   extra_{ws.tag}  (withdrawn: no longer in {extra.resolve()})" in result.plan.render()
    with pytest.raises(asyncpg.UndefinedTableError):
        await read(ws, "fields", "SELECT count(*) FROM {partner}__noise")
    assert (await read(ws, "devices", "SELECT count(*) FROM {partner}__noise"))[0][0] > 0


async def snapshot(ws: Workspace) -> dict[str, Any]:
    """Everything about sharing that `hub apply` could change."""
    conn = await superuser(ws)
    try:
        return {
            "agreements": [
                tuple(r) for r in await conn.fetch("SELECT id, spec::text, status FROM hub.agreements ORDER BY id")
            ],
            "events": await conn.fetchval("SELECT count(*) FROM hub.agreement_events"),
            "organisations": [tuple(r) for r in await conn.fetch("SELECT * FROM hub.organisations ORDER BY id")],
            "roles": [r[0] for r in await conn.fetch("SELECT rolname FROM pg_roles ORDER BY 1")],
            "objects": [
                tuple(r)
                for r in await conn.fetch(
                    r"""SELECT n.nspname, c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c
                        JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE n.nspname LIKE 'org\_%' OR n.nspname = 'open_data' ORDER BY 1, 2"""
                )
            ],
            "keys": await conn.fetchval("SELECT count(*) FROM hub_private.pseudonym_keys"),
        }
    finally:
        await conn.close()


BAD = (
    "agreements:\n  - id: bad_{tag}\n    provider: {partner}\n    consumers: [fields_{tag}]\n"
    "    purpose: t\n    licence: L\n"
)
BAD_INPUTS = [
    ("an unknown organisation", ("consumers: [fields_{tag}]", "consumers: [ghost_{tag}]"), "  grants: [{feed: air}]", 4,
     "unknown organisation 'ghost_"),
    ("an unknown feed", None, "  grants: [{feed: wind}]", 7, "unknown feed 'wind'"),
    ("a feed the provider does not own", None, "  grants: [{feed: parking}]", 7, "feed 'parking' belongs to town_"),
    ("an unknown field", None, "  grants: [{feed: air, fields: [wind_speed]}]", 7, "has no field 'wind_speed'"),
    ("an unknown device", None, "  grants: [{feed: air, devices: [zz-9]}]", 7, "unknown device 'zz-9'"),
    ("a grant that contradicts itself", None, "  grants: [{feed: air, form: aggregate, pseudonymise: true}]", 7,
     "aggregates carry no device ids"),
    ("an end in the past", None, "  valid_until: 2020-01-01\n    grants: [{feed: air}]", 7, "is in the past"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "change", "tail", "line", "reason"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
async def test_an_agreement_with_bad_input_is_refused_with_file_and_line_and_nothing_changes(
    ws: Workspace, what: str, change: tuple[str, str] | None, tail: str, line: int, reason: str
) -> None:
    from hub.errors import ConfigError

    text = BAD + "  " + tail + "\n"
    path = ws.write(f"bad/{what.replace(' ', '_')}.yaml", text.replace(*change) if change else text)
    before = await snapshot(ws)
    with pytest.raises(ConfigError) as caught:
        await ws.apply("connectors", "organisations", "agreements", str(path.relative_to(ws.root)))
    assert caught.value.file == str(path) and caught.value.line == line, caught.value
    assert reason in caught.value.reason
    assert await snapshot(ws) == before


# --------------------------------------------------------------------------- the policy and the database agree


@st.composite
def agreements(draw: st.DrawFn, partner: str, tag: str) -> dict[str, Any]:
    form = draw(st.sampled_from(["raw", "aggregate"]))
    grant: dict[str, Any] = {"feed": "air", "form": form}
    if draw(st.booleans()):
        grant["fields"] = draw(st.lists(st.sampled_from(["pm25", "pm10", "no2"]), min_size=1, unique=True))
    devices = draw(
        st.one_of(st.none(), st.lists(st.sampled_from(["st-001", "st_01", "st-00*", "s*"]), min_size=1, unique=True))
    )
    if devices is not None:
        grant["devices"] = devices
    grant["delay"] = f"{draw(st.sampled_from([0, 5, 60]))}m"
    if form == "aggregate":
        known = ("st-001", "st-002", "st-003", "st-004", "st_01", "stX01", "secret-9")
        n = len([d for d in known if devices is None or any(glob_match(p, d) for p in devices)])
        grant["bucket"] = f"{draw(st.sampled_from([15, 30, 60]))}m"
        grant["min_devices"] = min(draw(st.integers(1, 3)), n)  # buckets older than two hours hold every device
    else:
        grant["pseudonymise"] = draw(st.booleans())
    now = datetime.now(UTC)
    window = draw(st.sampled_from(["always", "started", "not yet", "ended"]))
    valid = {
        "always": {},
        "started": {"valid_from": now - timedelta(days=1), "valid_until": now + timedelta(days=1)},
        "not yet": {"valid_from": now + timedelta(hours=1)},
        "ended": {"valid_until": now - timedelta(minutes=1)},
    }[window]
    consumer = draw(st.sampled_from(["prop", "nobody", "everyone"]))
    return {
        "id": f"prop_{tag}",
        "provider": partner,
        "consumers": "everyone" if consumer == "everyone" else [f"{consumer}_{tag}"],
        "purpose": "property",
        "licence": "L",
        "grants": [grant],
        **valid,
    }


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_explain_says_allowed_exactly_when_the_role_can_select_the_object_and_gets_rows(
    ws: Workspace, data: st.DataObject
) -> None:
    """Any agreement, made into SQL by the same generator `hub apply` uses (in a transaction rolled back after),
    against the decision `hub explain` gives for it."""
    spec = data.draw(agreements(ws.partner, ws.tag))
    admin = await superuser(ws)
    try:
        world = await load_world(admin)
        state = resolve(Agreement.model_validate(spec), world.feeds)
        org = ws.org("prop")
        decision = decide(
            Question(org, f"{ws.partner}.air", datetime.now(UTC)), World(world.orgs, world.feeds, (state,))
        )
        (clause,) = state.clauses
        obj = clause.object(None if state.consumers is None else org)
        async with admin.transaction():
            for grantee in state.grantees():
                v = view_spec(
                    clause,
                    grantee,
                    world.feeds[clause.feed_key],
                    Validity(state.valid_from, state.valid_until),
                    rollup_counts=True,
                )
                for stmt in create_view_sql(v):
                    await admin.execute(stmt)
            exists = await admin.fetchval("SELECT to_regclass($1) IS NOT NULL", obj)
            can = exists and await admin.fetchval("SELECT has_table_privilege($1, $2, 'SELECT')", f"org_{org}", obj)
            rows = 0
            if can:
                await admin.execute(f"SET LOCAL ROLE org_{org}")
                rows = await admin.fetchval(f"SELECT count(*) FROM {obj}")
                await admin.execute("RESET ROLE")
            raise Rollback
    except Rollback:
        pass
    finally:
        await admin.close()
    assert decision.allowed == bool(can and rows), (spec, decision.to_json()["rules"], can, rows)
    if decision.allowed:
        assert decision.object == obj


class Rollback(Exception):
    """Leaves the property test's transaction without a trace."""


async def test_a_schema_change_that_rebuilds_the_rollup_keeps_every_share(ws: Workspace) -> None:
    """A new numeric field: the rollup is dropped and made again, and the views reading it with it, in one
    transaction; the provider's own view gains the field, the others stay as their agreements say."""
    import json

    schema = json.loads((ws.root / "schemas" / "air_quality.avsc").read_text())
    schema["fields"].append({"name": "o3", "type": ["null", "double"], "default": None})
    (ws.root / "schemas" / "air_quality.avsc").write_text(json.dumps(schema))
    before = await read(ws, "agg", "SELECT * FROM {partner}__air__agg ORDER BY bucket")
    result = await ws.apply()
    assert any(c.kind == "table" and any(x.startswith("DROP VIEW") for x in c.sql) for c in result.plan.changes), (
        result.plan.render()
    )
    assert await read(ws, "agg", "SELECT * FROM {partner}__air__agg ORDER BY bucket") == before
    own = ws.passwords.get(ws.partner)
    assert own is not None
    conn = await asyncpg.connect(
        ws.url("fields").replace(f"org_fields_{ws.tag}:{ws.passwords[ws.org('fields')]}", f"org_{ws.partner}:{own}")
    )
    try:
        columns = [a.name for a in (await conn.prepare(f"SELECT * FROM {ws.partner}__air")).get_attributes()]
    finally:
        await conn.close()
    assert columns[-1] == "o3" and "o3" not in [
        r for r in (await read(ws, "fields", "SELECT * FROM {partner}__air LIMIT 1"))[0].keys()
    ]


# --------------------------------------------------------------------------- audit


async def test_the_agreement_trail_is_append_only_even_for_the_hubs_own_role(ws: Workspace) -> None:
    conn = await superuser(ws)
    try:
        for sql in ("UPDATE hub.agreement_events SET actor = 'mallory'", "DELETE FROM hub.agreement_events",
                    "TRUNCATE hub.agreement_events"):  # fmt: skip
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(sql)
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO hub.agreement_events (actor, agreement_id, action, db_role)"
                " VALUES ('x', 'y', 'created', 'z')"
            )
        actions = {
            r[0]
            for r in await conn.fetch(
                "SELECT action FROM hub.agreement_events WHERE agreement_id LIKE $1", f"%{ws.tag}"
            )
        }
    finally:
        await conn.close()
    assert {"created", "revoked", "expired"} <= actions


async def test_reads_and_refusals_of_an_organisation_are_audited(ws: Workspace) -> None:
    from hub.access.audit import report

    admin = await superuser(ws)
    try:
        cap = await admin.fetchrow("SELECT * FROM hub.audit_capability()")
        if not cap["pgaudit_preloaded"]:
            pytest.skip("pgaudit is not preloaded on this PostgreSQL (Debian: postgresql-15-pgaudit)")
        start = await admin.fetchval("SELECT now()")
        conn = await ws.connect("fields")
        try:
            assert await conn.fetchval(f"SELECT count(*) FROM {ws.partner}__air WHERE device_id = $1", "st-002") > 0
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.fetch(f"SELECT * FROM {ws.partner}.air")
        finally:
            await conn.close()
        found = None
        for _ in range(50):  # the log collector writes the lines moments later
            r = await report(admin, ws.org("fields"), start, "test-suite")
            found = next((x for x in r.reads if x.object == f"org_fields_{ws.tag}.{ws.partner}__air"), None)
            if found and r.refused:
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    assert found is not None and found.reads == 1 and found.rows == 1, (r.reads, r.refused[:3], r.why_not)
    assert any(
        "permission denied for schema" in x["message"] and f"{ws.partner}.air" in x["statement"] for x in r.refused
    )
