"""The broker's accounts as the hub wants them, the diff that repairs a broker, worker identities and takeovers."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from hub.ingest.identity import index_on_host, ingest_client_id, watch_client_id
from hub.mqtt_auth.accounts import (
    ADMIN_USER,
    HEALTH_USER,
    ROLE_INGEST,
    Accounts,
    Client,
    Group,
    bootstrap_document,
    desired_accounts,
    partner_role,
)
from hub.mqtt_auth.broker_log import TakeoverParser
from hub.mqtt_auth.reconcile import diff_accounts
from hub.settings import HubSettings

SETTINGS = HubSettings(database_url=None, mqtt_url=None, kafka_bootstrap=None)
LOGINS = [("air", "air"), ("air", "air.gauge-1"), ("volt", "volt")]


def broker_as_wanted() -> Accounts:
    want = desired_accounts(SETTINGS, LOGINS)
    return Accounts(dict(want.default_acl), dict(want.roles), dict(want.groups), dict(want.clients))


def summary(have: Accounts, issue: tuple[str, ...] = ()) -> list[tuple[str, str, str, bool]]:
    diff = diff_accounts(desired_accounts(SETTINGS, LOGINS), have, issue=issue)
    return [(c.kind, c.action, c.target, c.password_for is not None) for c in diff.changes]


# --------------------------------------------------------------------------- what a partner may do


def test_a_partner_reads_only_its_own_error_reports_each_granted_as_subscribe_and_receive_and_unsubscribe() -> None:
    role = partner_role(SETTINGS, "air")
    by_type = {(a.acltype, a.topic) for a in role.acls}
    assert by_type == {
        ("publishClientSend", "partners/air/#"),
        ("subscribePattern", "hub/errors/air/#"),
        ("publishClientReceive", "hub/errors/air/#"),
        ("unsubscribePattern", "hub/errors/air/#"),
    }
    # An ACL of `#` or starting with `+` would match `$share/hub-ingest/...` too.
    assert all(a.allow and a.topic != "#" and not a.topic.startswith(("+", "$")) for a in role.acls)


def test_every_partner_login_is_bound_to_the_client_id_of_its_name_in_its_partners_group() -> None:
    want = desired_accounts(SETTINGS, LOGINS)
    assert want.clients["air.gauge-1"] == Client("air.gauge-1", "air.gauge-1", groups=frozenset(["partner-air"]))
    assert want.groups["partner-air"] == Group("partner-air", frozenset(["partner-air"]))
    assert set(want.default_acl.values()) == {False}
    unsubscribe = [a.topic for a in want.roles[ROLE_INGEST].acls if a.acltype == "unsubscribePattern"]
    assert unsubscribe == ["$share/hub-ingest/partners/#"], "else an MQTT 3.1.1 worker stays in the group"


def test_the_first_accounts_file_holds_hashes_the_plugin_can_check_and_denies_by_default() -> None:
    doc = bootstrap_document(SETTINGS, "admin-secret", "health-secret")
    assert set(doc["defaultACLAccess"].values()) == {False}
    clients = {c["username"]: c for c in doc["clients"]}
    assert "clientid" not in clients[ADMIN_USER] and clients[HEALTH_USER]["clientid"] == HEALTH_USER
    for user, password in ((ADMIN_USER, "admin-secret"), (HEALTH_USER, "health-secret")):
        c = clients[user]
        salt = base64.b64decode(c["salt"])
        assert len(salt) == 12, "the plugin skips a login whose salt is not 12 bytes"
        digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, c["iterations"])
        assert base64.b64decode(c["password"]) == digest
    admin_acls = {a["topic"] for r in doc["roles"] if r["rolename"] == "hub-admin" for a in r["acls"]}
    assert admin_acls == {"$CONTROL/dynamic-security/v1", "$CONTROL/dynamic-security/v1/response"}


# --------------------------------------------------------------------------- repairing a broker


def test_a_broker_that_matches_the_catalog_needs_no_change() -> None:
    assert summary(broker_as_wanted()) == []


def test_a_broker_that_lost_a_login_and_a_role_gets_them_back_the_login_with_a_new_password() -> None:
    have = broker_as_wanted()
    del have.clients["air.gauge-1"], have.roles["partner-air"]
    have.groups["partner-air"] = Group("partner-air")
    assert summary(have) == [
        ("role", "create", "partner-air", False),
        ("group", "update", "partner-air", False),
        ("login", "create", "air.gauge-1", True),
    ]


def test_a_password_being_issued_is_set_whether_or_not_the_broker_knows_the_login() -> None:
    assert summary(broker_as_wanted(), issue=("volt",)) == [("login", "update", "volt", True)]
    [change] = diff_accounts(desired_accounts(SETTINGS, LOGINS), broker_as_wanted(), issue=("volt",)).changes
    assert change.with_password("s3cret") == [
        {"command": "setClientPassword", "username": "volt", "password": "s3cret"}
    ]


def test_a_login_bound_to_another_id_disabled_or_out_of_its_group_is_put_right() -> None:
    have = broker_as_wanted()
    have.clients["air"] = Client("air", "hub-ingest-x-0", roles=frozenset(["hub-ingest"]), disabled=True)
    [change] = diff_accounts(desired_accounts(SETTINGS, LOGINS), have).changes
    assert [c["command"] for c in change.commands] == [
        "modifyClient",
        "enableClient",
        "addGroupClient",
        "removeClientRole",
    ]
    assert change.commands[0]["clientid"] == "air"


def test_leftovers_in_the_hubs_groups_are_removed_and_logins_that_are_not_the_hubs_left_alone() -> None:
    have = broker_as_wanted()
    have.clients["gone"] = Client("gone", "gone", groups=frozenset(["partner-gone"]))
    have.groups["partner-gone"] = Group("partner-gone", frozenset(["partner-gone"]))
    have.roles["partner-gone"] = partner_role(SETTINGS, "gone")
    have.clients["intruder"] = Client("intruder", None, groups=frozenset(["hub-ingest"]))
    have.clients["bridge"] = Client("bridge", None)  # an operator's own login
    have.clients["hub-ingest-h-3"] = Client("hub-ingest-h-3", "hub-ingest-h-3", groups=frozenset(["hub-ingest"]))
    diff = diff_accounts(desired_accounts(SETTINGS, LOGINS), have)
    assert [(c.kind, c.action, c.target) for c in diff.changes] == [
        ("login", "delete", "gone"),
        ("login", "delete", "intruder"),
        ("group", "delete", "partner-gone"),
        ("role", "delete", "partner-gone"),
    ]
    assert diff.notes == ["broker login 'bridge' is not the hub's; left alone"]


# --------------------------------------------------------------------------- worker identities and takeovers


def test_ingest_client_ids_differ_by_host_and_index_and_are_one_safe_topic_level() -> None:
    ids = {ingest_client_id(h, i) for h in ("node-a", "node-b", "3f2a9c1b7d0e") for i in range(3)}
    assert len(ids) == 9
    assert ingest_client_id("Build Box.example.org", 2) == "hub-ingest-build-box-example-org-2"
    assert ingest_client_id("", 0) == "hub-ingest-host-0"
    assert all(len(x) <= 63 and set(x) <= set("abcdefghijklmnopqrstuvwxyz0123456789-") for x in ids)
    assert watch_client_id("node-a", 1) != ingest_client_id("node-a", 1)
    assert index_on_host(ingest_client_id("node-a", 12), "node-a") == 12
    assert index_on_host(ingest_client_id("node-a", 1), "node-b") is None
    with pytest.raises(ValueError):
        ingest_client_id("node-a", -1)


def test_a_takeover_is_read_from_the_brokers_log_with_who_took_the_session() -> None:
    parser = TakeoverParser({"hub-ingest-h-0"})
    lines = [
        ("$SYS/broker/log/N", "1700000000: New connection from 10.0.0.7:55219 on port 1883."),
        ("$SYS/broker/log/E", "1700000000: Client hub-ingest-h-0 already connected, closing old connection."),
        ("$SYS/broker/log/N", "1700000000: New client connected from 10.0.0.7:55219 as hub-ingest-h-0 "
                              "(p2, c0, k30, u'hub-ingest-h-0')."),
    ]  # fmt: skip
    found = [parser.feed(topic, text.encode()) for topic, text in lines]
    assert found[:2] == [None, None]
    taken = found[2]
    assert taken is not None
    assert (taken.client_id, taken.address, taken.port, taken.username) == ("hub-ingest-h-0", "10.0.0.7", 55219,
                                                                            "hub-ingest-h-0")  # fmt: skip
    assert "MQTT 3.1.1, clean start off" in taken.describe()
    other = TakeoverParser({"hub-ingest-h-1"})
    assert [other.feed(t, x.encode()) for t, x in lines] == [None, None, None]
    # A client that merely connects (nobody was connected with its id) is no takeover.
    assert TakeoverParser().feed(*lines[2][:1], lines[2][1].encode()) is None


def test_broker_init_writes_the_first_accounts_file_owner_only_and_never_overwrites_it(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hub.cli.main import app

    path = tmp_path / "dynsec" / "dynsec.json"
    env = {"HUB_MQTT_URL": "mqtt://hub-admin:adm1n@mosquitto:1883", "HUB_MQTT_HEALTH_PASSWORD": "h3alth"}
    first = CliRunner().invoke(app, ["broker-init", str(path)], env=env)
    assert first.exit_code == 0, first.output
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    written = path.read_text()
    assert "adm1n" not in written and "h3alth" not in written, "only hashes"
    again = CliRunner().invoke(app, ["broker-init", str(path)], env={**env, "HUB_MQTT_HEALTH_PASSWORD": "other"})
    assert again.exit_code == 0 and path.read_text() == written
    wrong = CliRunner().invoke(
        app, ["broker-init", str(tmp_path / "x.json")], env={**env, "HUB_MQTT_URL": "mqtt://me:pw@h"}
    )
    assert wrong.exit_code == 1 and "hub-admin" in wrong.output
