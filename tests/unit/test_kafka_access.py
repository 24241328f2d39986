"""Consumers' Kafka logins, without a broker: who gets one, the ACLs, the plan, and the AdminClient requests.

No SASL-enabled Kafka can run on this machine (the local broker, Tansu, has no authentication), so the
requests are checked as built; docs/operations.md says so.
"""

from __future__ import annotations

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
    ScramMechanism,
)

from hub.control import kafka_access
from hub.control.kafka_access import Acl, access_mode, consumer_acls, plan_access
from hub.errors import IdentifierError
from hub.settings import HubSettings


def settings(**kw: object) -> HubSettings:
    return HubSettings(**kw)  # type: ignore[arg-type]


def test_the_local_broker_gets_no_kafka_login_and_says_why_in_one_line() -> None:
    mode = access_mode(settings(kafka_security_protocol="SASL_PLAINTEXT"), local_broker=True)
    assert not mode.issues_logins
    assert "Tansu" in mode.reason and "no authentication" in mode.reason and "\n" not in mode.reason


def test_a_broker_reached_without_sasl_gets_no_login_and_the_reason_names_the_setting() -> None:
    mode = access_mode(settings(kafka_security_protocol="PLAINTEXT"), local_broker=False)
    assert not mode.issues_logins and "HUB_KAFKA_SECURITY_PROTOCOL=PLAINTEXT" in mode.reason


def test_a_sasl_broker_gets_scram_logins_unless_the_operator_turned_them_off() -> None:
    assert access_mode(settings(kafka_security_protocol="SASL_SSL"), local_broker=False).issues_logins
    off = access_mode(settings(kafka_security_protocol="SASL_SSL", kafka_consumer_logins="off"), local_broker=False)
    assert not off.issues_logins and "HUB_KAFKA_CONSUMER_LOGINS=off" in off.reason


def test_a_consumer_may_read_and_describe_its_own_share_topics_open_data_and_its_own_groups_only() -> None:
    acls = consumer_acls("city")
    assert {(a.resource, a.prefix, a.operation) for a in acls} == {
        ("topic", "share.city.", "read"),
        ("topic", "share.city.", "describe"),
        ("topic", "share.open_data.", "read"),
        ("topic", "share.open_data.", "describe"),
        ("group", "share.city.", "read"),
        ("group", "share.city.", "describe"),
    }
    assert {a.principal for a in acls} == {"User:consumer-city"}
    # the trailing dot keeps city's prefix off city_lab's topics
    assert not any(
        "share.city_lab.x".startswith(a.prefix) for a in acls if a.resource == "topic" and "city" in a.prefix
    )


def test_an_organisation_id_that_is_not_an_identifier_never_reaches_an_acl() -> None:
    with pytest.raises(IdentifierError):
        consumer_acls("city.*")


def test_the_plan_makes_new_logins_keeps_existing_ones_and_removes_those_without_a_kafka_stream() -> None:
    plan = plan_access(wanted=["city", "health"], existing=["health", "startup"])
    assert (plan.new_users, plan.kept_users, plan.removed_users) == (["city"], ["health"], ["startup"])
    assert {a.user for a in plan.acls} == {"consumer-city", "consumer-health"}
    assert {a.user for a in plan.removed_acls} == {"consumer-startup"}
    assert plan_access(["city"], ["city"]).empty


def test_an_acl_becomes_a_prefixed_allow_binding_for_the_user_from_any_host() -> None:
    binding = kafka_access.acl_binding(Acl("consumer-city", "topic", "share.city.", "read"))
    assert (binding.restype, binding.name, binding.resource_pattern_type) == (
        ResourceType.TOPIC,
        "share.city.",
        ResourcePatternType.PREFIXED,
    )
    assert (binding.principal, binding.host) == ("User:consumer-city", "*")
    assert (binding.operation, binding.permission_type) == (AclOperation.READ, AclPermissionType.ALLOW)
    group = kafka_access.acl_filter(Acl("consumer-city", "group", "share.city.", "describe"))
    assert (group.restype, group.operation, group.resource_pattern_type) == (
        ResourceType.GROUP,
        AclOperation.DESCRIBE,
        ResourcePatternType.PREFIXED,
    )


def test_a_scram_credential_is_sha_512_with_the_password_and_a_deletion_names_the_same_mechanism() -> None:
    up = kafka_access.scram_upsertion("consumer-city", "s3cret", salt=b"salt")
    assert up.user == "consumer-city" and up.password == b"s3cret" and up.salt == b"salt"
    assert up.scram_credential_info.mechanism == ScramMechanism.SCRAM_SHA_512
    assert up.scram_credential_info.iterations >= 4096  # Kafka refuses fewer
    gone = kafka_access.scram_deletion("consumer-city")
    assert (gone.user, gone.mechanism) == ("consumer-city", ScramMechanism.SCRAM_SHA_512)


def test_the_client_configuration_shown_once_names_the_user_mechanism_and_group_prefix() -> None:
    conf = kafka_access.client_config("kafka.example:29092", "city", "pw", "SASL_SSL")
    assert conf["sasl.username"] == "consumer-city" and conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["group.id"].startswith("share.city.")


def test_apply_plans_each_new_login_with_its_acls_and_says_in_one_line_why_the_local_broker_gets_none() -> None:
    from hub.control.kafka_users import KafkaLogins

    sasl = KafkaLogins(access_mode(settings(kafka_security_protocol="SASL_SSL"), False), plan_access(["city"], []))
    changes = [(c.kind, c.action, c.target) for c in sasl.changes()]
    assert ("kafka-login", "create", "consumer-city") in changes
    assert ("kafka-acl", "create", "User:consumer-city READ topic share.city.*") in changes
    assert sasl.notes() == []
    local = KafkaLogins(access_mode(settings(), True), None, ["city", "health"])
    assert local.changes() == []
    [note] = local.notes()
    assert note.startswith("Kafka share streams of city, health: no Kafka login: the local stack's broker (Tansu)")
