"""Mosquitto's restart gate: which logins it closes in the plugin's file, what opens them again, and its record.

The plugin's file is built as `hub stack up` writes it (bootstrap_document) plus clients as the plugin saves
them: a client that is enabled has no `disabled` key, or `"disabled": false`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hub.errors import BrokerAccountsError, StackError
from hub.mqtt_auth.accounts import ADMIN_USER, HEALTH_USER, bootstrap_document
from hub.mqtt_auth.gate import closed_document, enable_commands, is_hub_login, logins_to_close
from hub.settings import HubSettings
from hub.stack.broker_gate import Gate, close_gate, gate_path, read_gate
from hub.stack.servers import dynsec_file, mosquitto_process

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


def accounts_file(state: Path, *clients: dict[str, Any]) -> Path:
    path = dynsec_file(mosquitto_process(state).state_dir)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(plugin_file(*clients)))
    return path


def disabled_in(path: Path) -> set[str]:
    return {c["username"] for c in json.loads(path.read_text())["clients"] if c.get("disabled")}


def test_closing_records_the_logins_before_it_disables_them_and_a_second_close_keeps_them(tmp_path: Path) -> None:
    path = accounts_file(tmp_path, *WORKERS, client("voltcharge"), client("city_transport", disabled=True))
    gate, newly = close_gate(tmp_path, 100.0)
    assert newly and gate == Gate(100.0, ("voltcharge",))
    assert read_gate(tmp_path) == gate
    assert disabled_in(path) == {"voltcharge", "city_transport"}
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    # The restart failed and is tried again: the file says voltcharge is disabled now, but the gate closed it.
    again, newly = close_gate(tmp_path, 105.0)
    assert not newly and again == Gate(105.0, ("voltcharge",))


def test_the_gate_is_open_when_no_record_is_left_and_a_broken_record_is_named(tmp_path: Path) -> None:
    assert read_gate(tmp_path) is None
    gate_path(tmp_path).parent.mkdir(parents=True)
    gate_path(tmp_path).write_text('{"closed_at": 1.0}')
    with pytest.raises(StackError, match=r"restart-gate\.json"):
        read_gate(tmp_path)


def test_an_unreadable_accounts_file_is_named_and_nothing_is_recorded(tmp_path: Path) -> None:
    path = dynsec_file(mosquitto_process(tmp_path).state_dir)
    path.parent.mkdir(parents=True)
    path.write_text('{"clients": [')
    with pytest.raises(StackError, match=r"dynsec\.json"):
        close_gate(tmp_path, 1.0)
    assert read_gate(tmp_path) is None
