"""deploy/kubernetes/: plain manifests, validated offline against Kubernetes' own schemas (kubernetes-validate, strict)
and checked against the hub itself: the routes its probes call, the commands its workers run, the settings it reads."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import ValidationError

from hub.api.app import create_app
from hub.metrics import HEALTH_ROUTES
from hub.settings import HubSettings
from hub.worker_registry import KINDS

MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
VERSIONS = ("1.30", "1.37")  # an older supported release, and the newest the validator knows


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path.name, doc))
    return found


def deployments() -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in documents() if doc["kind"] == "Deployment"}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def test_the_kustomization_lists_every_manifest_and_nothing_else() -> None:
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    files = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_strictly_against_kubernetes_schemas(version: str) -> None:
    docs = documents()
    assert {doc["kind"] for _, doc in docs} >= {"Deployment", "Service", "ConfigMap", "Namespace"}
    for name, doc in docs:
        assert kubernetes_validate.validate(doc, version, strict=True) == version, name


def test_the_validator_refuses_a_misspelled_field_and_a_wrong_type() -> None:
    """The check above can fail: strict validation catches what a typo in a manifest would be."""
    deployment = deployments()["hub-ingest"]
    misspelled = copy.deepcopy(deployment)
    container(misspelled)  # the shape the rest relies on
    misspelled["spec"]["template"]["spec"]["containers"][0]["ports"][0]["protcol"] = "TCP"
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(misspelled, VERSIONS[0], strict=True)
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "2"
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(wrong_type, VERSIONS[0], strict=True)


def test_each_worker_kind_is_a_scalable_deployment_with_a_unique_client_id_per_pod() -> None:
    found = deployments()
    for name, deployment in found.items():
        spec = deployment["spec"]
        assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items(), name
    workers = {name: d for name, d in found.items() if container(d)["command"][:2] == ["hub", "run"]}
    assert {container(d)["command"][2] for d in workers.values()} <= set(KINDS)
    assert {"hub-ingest", "hub-land"} <= set(workers)
    for name, deployment in workers.items():
        assert deployment["spec"]["replicas"] >= 2, name
        env = {e["name"]: e for e in container(deployment)["env"]}
        # The pod's name makes the worker's client id hub-<kind>-<pod>-0: unique across replicas.
        assert env["HUB_WORKER_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", name
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace > 30, "a worker gets 30 s to finish its batch and end its broker session"


def test_probes_call_the_health_routes_the_hub_serves_on_a_named_port() -> None:
    api_paths = {getattr(route, "path", None) for route in create_app("postgresql://unused/hub").routes}
    for name, deployment in deployments().items():
        c = container(deployment)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        served = api_paths if c["command"][1] == "serve" else set(HEALTH_ROUTES) | {"/metrics"}
        for probe, path in (("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready")):
            assert c[probe]["httpGet"]["path"] == path, (name, probe)
            assert path in served, (name, path)
            assert c[probe]["httpGet"]["port"] in ports, (name, probe)
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/path"] in served
        assert int(annotations["prometheus.io/port"]) in ports.values(), name


def test_secrets_come_from_a_kubernetes_secret_and_settings_are_the_hubs_own() -> None:
    fields = set(HubSettings.env_names())
    (settings,) = [doc for _, doc in documents() if doc["kind"] == "ConfigMap"]
    assert set(settings["data"]) <= fields, set(settings["data"]) - fields
    assert not any("://" in v and "@" in v for v in settings["data"].values()), "no credentials in a ConfigMap"
    for name, deployment in deployments().items():
        c = container(deployment)
        assert c["envFrom"] == [{"configMapRef": {"name": settings["metadata"]["name"]}}]
        env = {e["name"]: e for e in c["env"]}
        assert set(env) <= fields, name
        for secret in ("HUB_DATABASE_URL", "HUB_MQTT_URL"):
            assert env[secret]["valueFrom"]["secretKeyRef"]["name"] == "hub-secrets", (name, secret)
            assert "value" not in env[secret]
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_services_select_pods_of_a_deployment_and_name_its_ports() -> None:
    found = deployments()
    services = [doc for _, doc in documents() if doc["kind"] == "Service"]
    assert services
    for service in services:
        targets = [
            d
            for d in found.values()
            if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert targets, service["metadata"]["name"]
        ports = {p["name"] for d in targets for p in container(d)["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
