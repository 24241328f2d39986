"""Worker client ids: unique across hosts (machines, containers, pods) and across the processes of one machine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hub.errors import HubError
from hub.ingest.identity import worker_client_id
from hub.settings import HubSettings
from hub.supervise import reserve_slots
from hub.worker_registry import KINDS, claim, host_label, worker_id

SAFE = re.compile(r"^hub-[a-z]+-[a-z0-9-]{1,40}-\d+$")


def test_scaled_containers_and_pods_get_distinct_client_ids_of_safe_characters() -> None:
    # docker-compose --scale: each container's host name is its own 12-hex id; Kubernetes: the pod's name.
    hosts = [
        "3f9a1c2b7d4e",
        "a1b2c3d4e5f6",
        "hub-ingest-7d9f8c6b5d-x2x7q",
        "hub-ingest-7d9f8c6b5d-k8s2p",
        "Node_A.local",
    ]
    ids = {worker_id(kind, host, 0) for kind in KINDS for host in hosts}
    assert len(ids) == len(KINDS) * len(hosts)
    assert all(SAFE.match(i) for i in ids), ids
    assert worker_id("ingest", "3f9a1c2b7d4e", 0) == "hub-ingest-3f9a1c2b7d4e-0"
    assert worker_id("land", "Node_A.local", 2) == "hub-land-node-a-local-2"


def test_long_host_names_that_differ_only_at_the_end_stay_distinct() -> None:
    prefix = "civic-hub-production-ingest-deployment-6b8f9c7d5f-"
    a, b = host_label(prefix + "x2x7q"), host_label(prefix + "k8s2p")
    assert a != b and len(a) <= 40 and len(b) <= 40
    assert host_label(prefix + "x2x7q") == a, "the same host always gets the same label"


def test_the_ingest_client_id_is_the_generic_worker_id(tmp_path: Path) -> None:
    settings = HubSettings(state_dir=tmp_path, worker_host="node-a")
    assert worker_client_id(settings, 3) == worker_id("ingest", "node-a", 3) == "hub-ingest-node-a-3"
    with pytest.raises(ValueError, match="negative"):
        worker_id("land", "node-a", -1)


def test_a_second_hub_run_on_one_machine_takes_the_next_indexes_never_the_same_client_id(tmp_path: Path) -> None:
    first, held_first = reserve_slots(tmp_path, "node-a", "ingest", 2)
    with claim(tmp_path, worker_id("ingest", "node-a", 2)):  # a worker started outside `hub run` holds index 2
        second, held_second = reserve_slots(tmp_path, "node-a", "ingest", 2)
    assert (first, second) == ([0, 1], [3, 4])
    land, held_land = reserve_slots(tmp_path, "node-a", "land", 2)
    assert land == [0, 1], "each kind has its own indexes"
    with (
        pytest.raises(HubError, match="hub-ingest-node-a-0 is in use by process"),
        claim(tmp_path, "hub-ingest-node-a-0"),
    ):
        with claim(tmp_path, "hub-ingest-node-a-0"):
            pass
    held_first.close()
    again, held_again = reserve_slots(tmp_path, "node-a", "ingest", 1)
    assert again == [0], "a stopped run's indexes (and sessions) are taken up again"
    for held in (held_second, held_land, held_again):
        held.close()
