"""Mosquitto's restart gate, as pure logic: which logins it closes in the plugin's file, and what opens them again.

The plugin's file is built as `hub stack up` writes it (bootstrap_document) plus clients as the plugin saves
them: a client that is enabled has no `disabled` key, or `"disabled": false`.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from hub.errors import BrokerAccountsError
from hub.mqtt_auth.accounts import ADMIN_USER, HEALTH_USER, bootstrap_document
from hub.mqtt_auth.gate import closed_document, enable_commands, is_hub_login, logins_to_close
from hub.settings import HubSettings

SETTINGS = HubSettings(database_url=None, mqtt_url=None, kafka_bootstrap=None)


def plugin_file(*clients: dict[str, Any]) -> dict[str, Any]:
    doc = bootstrap_document(SETTINGS, "admin-secret", "health-secret")
    doc["clients"] += list(clients)
    return doc


def client(username: str, **extra: Any) -> dict[str, Any]:
    return {"username": username, "clientid": username, "roles": [], "groups": [], **extra}


WORKERS = [client("hub-ingest-vm-0"), client("hub-watch-vm-0"), client("hub-land-vm-0"), client("hub-share-vm-0")]


def test_the_gate_closes_every_partner_device_and_consumer_login_and_none_of_the_hubs() -> None:
    doc = plugin_file(
        *WORKERS,
        client("voltcharge"),
        client("voltcharge.charger-7", disabled=False),
        client("uni_air_lab.gauge-1"),
        client("consumer-city"),
    )
    assert logins_to_close(doc) == ["consumer-city", "uni_air_lab.gauge-1", "voltcharge", "voltcharge.charger-7"]


def test_a_login_an_operator_disabled_is_not_the_gates_so_it_stays_disabled() -> None:
    doc = plugin_file(client("voltcharge", disabled=True), client("city_transport"))
    assert logins_to_close(doc) == ["city_transport"]
    assert enable_commands(logins_to_close(doc)) == [{"command": "enableClient", "username": "city_transport"}]


def test_the_hubs_own_logins_are_told_apart_by_their_prefix_which_no_partner_id_can_have() -> None:
    assert all(is_hub_login(name) for name in (ADMIN_USER, HEALTH_USER, "hub-ingest-vm-0", "hub-watch-vm-0"))
    assert not any(is_hub_login(name) for name in ("voltcharge", "hub.gauge-1", "consumer-city", "hubx"))


def test_closing_disables_exactly_the_listed_logins_and_changes_nothing_else() -> None:
    doc = plugin_file(*WORKERS, client("voltcharge"), client("city_transport"))
    before = json.dumps(doc, sort_keys=True)
    closed = closed_document(doc, ["voltcharge"])
    assert json.dumps(doc, sort_keys=True) == before  # the input is not changed
    disabled = {c["username"] for c in closed["clients"] if c.get("disabled")}
    assert disabled == {"voltcharge"}
    for key in ("defaultACLAccess", "roles", "groups"):
        assert closed[key] == doc[key]
    assert logins_to_close(closed) == ["city_transport"]  # closing again adds only what is still open


def test_opening_enables_each_closed_login_once_in_a_stable_order() -> None:
    assert enable_commands(["volt", "air", "volt"]) == [
        {"command": "enableClient", "username": "air"},
        {"command": "enableClient", "username": "volt"},
    ]
    assert enable_commands([]) == []


@pytest.mark.parametrize(
    "doc",
    [{"clients": "voltcharge"}, {"clients": [{"clientid": "x"}]}, {"clients": [["voltcharge"]]}],
    ids=["not a list", "no username", "not an object"],
)
def test_a_plugin_file_without_a_valid_client_list_is_refused_with_a_clear_error(doc: dict[str, Any]) -> None:
    with pytest.raises(BrokerAccountsError, match="`clients` list"):
        logins_to_close(doc)
