"""What agreements become in SQL, read as text: properties every generated object keeps whatever the grant."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.agreement.grants import Clause, FeedInfo
from hub.agreement.model import Form
from hub.agreement.patterns import glob_match, glob_to_like
from hub.control.share_sql import Validity, bootstrap_sql, org_role_sql, scram_verifier, view_spec
from hub.errors import IdentifierError

AIR = FeedInfo("lab", "air", ("pm25", "no2", "label"), frozenset({"pm25", "no2"}), timedelta(minutes=15))
UNTIL = Validity(datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))

clauses = st.builds(
    Clause,
    agreement=st.just("a1"),
    index=st.just(0),
    provider=st.just("lab"),
    feed=st.just("air"),
    form=st.sampled_from(Form),
    fields=st.lists(st.sampled_from(["pm25", "no2"]), unique=True).map(tuple),
    devices=st.lists(st.text(min_size=1, max_size=8).filter(lambda s: "\x00" not in s), max_size=3).map(tuple),
    patterns=st.lists(st.sampled_from(["st-*", "st_0*", "a%b*", "x\\*"]), max_size=2, unique=True).map(tuple),
    pseudonymise=st.booleans(),
    delay=st.sampled_from([timedelta(0), timedelta(minutes=5), timedelta(hours=1)]),
    bucket=st.sampled_from([timedelta(minutes=15), timedelta(hours=1)]),
    min_devices=st.integers(1, 5),
)


@given(clauses, st.sampled_from(["city", None]))
def test_every_shared_view_is_a_security_barrier_view_created_fresh_and_timed_by_the_statement(
    clause: Clause, org: str | None
) -> None:
    if clause.aggregate and clause.pseudonymise:
        clause = Clause(**{**clause.__dict__, "pseudonymise": False})
    v = view_spec(clause, org, AIR, UNTIL, rollup_counts=True)
    create = v.statements[0]
    assert create.startswith("CREATE VIEW ") and "WITH (security_barrier = true)" in create
    assert "OR REPLACE" not in create  # it would silently drop security_barrier from an existing view
    assert "now()" not in create and "statement_timestamp() < '2027-01-01T00:00:00+00:00'::timestamptz" in create
    if clause.aggregate:  # aggregates only ever read the rollup, never the raw rows
        assert 'FROM "lab"."air_rollup" AS r' in create and '"lab"."air" ' not in create
        assert f"HAVING count(DISTINCT r.device_id) >= {clause.min_devices}" in create
    assert v.schema == ("open_data" if org is None else "org_city") and v.grantee in ("PUBLIC", "org_city")
    if clause.pseudonymise:
        assert "SELECT t.device_id" not in create and 'AS "device_pseudonym"' in create and "hub_private" in create


def test_no_secret_ever_reaches_statement_text() -> None:
    c = Clause("a1", 0, "lab", "air", Form.raw, ("pm25",), pseudonymise=True)
    text = "\n".join(view_spec(c, "city", AIR, Validity(), rollup_counts=True).statements)
    assert "k.opad" in text and "k.ipad" in text and "'\\x" not in text  # the key is joined, never written
    verifier = scram_verifier("Secret-Password-1")
    role = "\n".join(org_role_sql("city", verifier, 5))
    assert "Secret-Password-1" not in role and verifier in role
    with pytest.raises(ValueError, match="SCRAM verifier"):
        org_role_sql("city", "plaintext", 5)


def test_the_scram_verifier_is_the_one_postgresql_derives() -> None:
    salt = b"0123456789abcdef"
    verifier = scram_verifier("pencil", salt=salt, iterations=4096)
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    stored = hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    assert verifier.startswith(f"SCRAM-SHA-256$4096:{base64.b64encode(salt).decode()}$")
    assert verifier.split("$")[2].split(":")[0] == base64.b64encode(stored).decode()


def test_names_longer_than_postgresql_keeps_are_refused_not_truncated() -> None:
    long = FeedInfo("p" * 40, "f" * 40, ("x",), frozenset({"x"}), timedelta(minutes=15))
    with pytest.raises(IdentifierError, match="longer than 63 bytes"):
        view_spec(Clause("a", 0, "p" * 40, "f" * 40, Form.raw, ("x",)), "city", long, Validity(), rollup_counts=True)


def test_the_timescaledb_schemas_organisations_need_not_see_are_closed_but_its_functions_stay_open() -> None:
    text = "\n".join(bootstrap_sql(timescale=True))
    assert "'_timescaledb_internal'" in text and "'timescaledb_information'" in text
    assert "_timescaledb_functions" not in text and "add_job" in text
    assert "timescaledb" not in "\n".join(bootstrap_sql(timescale=False))


@given(st.text(alphabet="ab_%\\*-", max_size=6), st.text(alphabet="ab_%\\-X", max_size=6))
def test_a_device_pattern_matches_the_same_ids_in_python_as_its_like_form(pattern: str, device: str) -> None:
    like = glob_to_like(pattern)
    # LIKE's semantics, spelled out: \x is x literally, % is any run, _ any one character
    regex, i = "", 0
    while i < len(like):
        ch = like[i]
        if ch == "\\" and i + 1 < len(like):
            regex += "\\" + like[i + 1] if not like[i + 1].isalnum() else like[i + 1]
            i += 2
            continue
        regex += ".*" if ch == "%" else ("." if ch == "_" else ("\\" + ch if not ch.isalnum() else ch))
        i += 1
    import re

    assert (re.fullmatch(regex, device, re.DOTALL) is not None) == glob_match(pattern, device)
    assert not glob_match("st_0*", "stX01") and glob_match("st_0*", "st_01")
