"""docker-compose.yml and the files it uses, checked offline.

There is no Docker engine here, so the compose file is checked with Debian's
`docker-compose config` (v1.29), which validates and renders it without a daemon. The
setup script installs `docker-compose`: a missing binary fails these tests, it does not
skip them. These tests use no fixture of tests/conftest.py (they start no server).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hub.grafana.model import OPERATORS_DIR
from hub.grafana.site import OPERATORS_DATASOURCE, OPERATORS_FOLDER, OPERATORS_PROMETHEUS
from hub.settings import HubSettings

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
DEPLOY = REPO / "deploy"

# Distinctive dummy values, so that any place a secret ends up can be found.
SECRETS = {
    "HUB_DB_PASSWORD": "dummy-db-secret-7f3a",
    "HUB_MQTT_ADMIN_PASSWORD": "dummy-mqtt-secret-91c2",
    "HUB_MQTT_HEALTH_PASSWORD": "dummy-mqtt-health-secret-3a77",
    "HUB_KAFKA_ADMIN_PASSWORD": "dummy-kafka-admin-secret-4c19",
    "GRAFANA_ADMIN_PASSWORD": "dummy-grafana-admin-secret-5be8",
    "GRAFANA_DB_PASSWORD": "dummy-grafana-db-secret-0d4e",
}
HUB_SERVICES = ("hub-api", "hub-ingest", "hub-land", "hub-share", "hub-apply")
INIT_SERVICES = ("mosquitto-init",)  # one-shot, from the hub's image, before the broker first starts
INFRA_SERVICES = ("mosquitto", "kafka", "timescaledb", "grafana", "prometheus")
# The only places a secret may reach: the environment entries that need it.
SECRET_ENV_KEYS = {
    "POSTGRES_PASSWORD",
    "GF_SECURITY_ADMIN_PASSWORD",
    "GRAFANA_DB_PASSWORD",
    "HUB_MQTT_HEALTH_PASSWORD",
    "HUB_DATABASE_URL",
    "HUB_MQTT_URL",
    "HUB_KAFKA_SASL_PASSWORD",  # the hub's Kafka login
    "HUB_KAFKA_ADMIN_PASSWORD",  # the Kafka health check's client
    "KAFKA_LISTENER_NAME_CONTROLLER_PLAIN_SASL_JAAS_CONFIG",  # the broker's own login and its check of it
    "KAFKA_LISTENER_NAME_INTERNAL_PLAIN_SASL_JAAS_CONFIG",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|PRIVATE_KEY", re.IGNORECASE)
VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}")


# --- helpers ------------------------------------------------------------------------------


def docker_compose() -> str:
    path = shutil.which("docker-compose")
    if path is None:
        pytest.fail("docker-compose is not installed: run scripts/setup.sh (Debian package `docker-compose`)")
    return path


def run_compose(args: list[str], env: dict[str, str], env_file: Path) -> subprocess.CompletedProcess[str]:
    """Run docker-compose on the repository's file with exactly `env` (plus PATH and HOME).

    `--env-file` points at an empty file so that a developer's own .env cannot change the outcome.
    """
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"), **env}
    return subprocess.run(
        [docker_compose(), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def render(env: dict[str, str], env_file: Path) -> dict[str, Any]:
    result = run_compose(["config"], env, env_file)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert isinstance(config, dict)
    return config


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Target path -> (source, read_only) for every volume of a rendered service."""
    out: dict[str, tuple[str, bool]] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            out[volume["target"]] = (str(volume.get("source", "")), bool(volume.get("read_only", False)))
        else:
            source, target, *mode = str(volume).split(":")
            out[target] = (source, "ro" in (mode[0].split(",") if mode else []))
    return out


def strings(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every string (keys included) in a parsed YAML document, with where it is."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, str(key)), str(key)
            yield from strings(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from strings(value, (*path, str(i)))
    elif node is not None:
        yield path, str(node)


def mosquitto_directives() -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for line in (DEPLOY / "mosquitto" / "mosquitto.conf").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition(" ")
            directives.setdefault(name, []).append(value.strip())
    return directives


@pytest.fixture(scope="module")
def empty_env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("")
    return path


@pytest.fixture(scope="module")
def rendered(empty_env_file: Path) -> dict[str, Any]:
    """`docker-compose config` with only the required secrets set."""
    return render(dict(SECRETS), empty_env_file)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


# --- the file is valid, and refuses to run without its secrets ----------------------------


def test_compose_file_is_valid_when_the_required_secrets_are_set(empty_env_file: Path) -> None:
    result = run_compose(["config", "-q"], dict(SECRETS), empty_env_file)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_render_without_a_secret_and_names_it(missing: str, empty_env_file: Path) -> None:
    env = {name: value for name, value in SECRETS.items() if name != missing}
    result = run_compose(["config", "-q"], env, empty_env_file)
    assert result.returncode != 0
    assert f"set {missing} " in result.stderr, result.stderr


def test_compose_refuses_to_render_without_any_secret(empty_env_file: Path) -> None:
    result = run_compose(["config", "-q"], {}, empty_env_file)
    assert result.returncode != 0
    assert "Missing mandatory value" in result.stderr, result.stderr


# --- services --------------------------------------------------------------------------------


def test_compose_describes_the_infrastructure_and_the_hub_services(rendered: dict[str, Any]) -> None:
    assert set(rendered["services"]) == {*INFRA_SERVICES, *HUB_SERVICES, *INIT_SERVICES}
    images = {name: rendered["services"][name]["image"] for name in INFRA_SERVICES}
    assert images == {
        "mosquitto": "eclipse-mosquitto:2.0",
        "kafka": "apache/kafka:3.8.0",
        "timescaledb": "timescale/timescaledb:2.17.2-pg16",
        "grafana": "grafana/grafana-oss:11.2.0",
        "prometheus": "prom/prometheus:v2.53.0",
    }


def test_hub_services_are_built_from_one_image_and_run_their_commands(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    for name in (*HUB_SERVICES, *INIT_SERVICES):
        assert services[name]["build"]["dockerfile"] == "Dockerfile"
        assert Path(services[name]["build"]["context"]) == REPO
    assert len({services[name]["image"] for name in (*HUB_SERVICES, *INIT_SERVICES)}) == 1
    commands = {name: services[name]["command"] for name in HUB_SERVICES}
    assert commands == {
        "hub-api": ["hub", "serve", "--host", "0.0.0.0", "--port", "8081"],
        "hub-ingest": ["hub", "run", "ingest"],
        "hub-land": ["hub", "run", "land"],
        "hub-share": ["hub", "run", "share"],
        "hub-apply": ["hub", "apply", "/connectors", "/organisations", "/agreements"],
    }
    assert any(port.endswith(":8081/tcp") for port in services["hub-api"]["ports"])


def test_hub_services_get_every_server_address_from_compose(rendered: dict[str, Any]) -> None:
    expected = {
        "HUB_DATABASE_URL": f"postgresql://postgres:{SECRETS['HUB_DB_PASSWORD']}@timescaledb:5432/hub",
        "HUB_KAFKA_BOOTSTRAP": "kafka:9092",
        "HUB_MQTT_URL": f"mqtt://hub-admin:{SECRETS['HUB_MQTT_ADMIN_PASSWORD']}@mosquitto:1883",
        "HUB_REGISTRY_URL": "http://hub-api:8081",
    }
    for name in (*HUB_SERVICES, *INIT_SERVICES):
        environment = rendered["services"][name]["environment"]
        assert {key: environment.get(key) for key in expected} == expected, name


def test_services_wait_for_the_health_of_what_they_need(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    for name in ("mosquitto", "kafka", "timescaledb", "grafana", "prometheus", "hub-api", "hub-ingest", "hub-land"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name in HUB_SERVICES:
        depends_on = services[name]["depends_on"]
        for dependency in ("timescaledb", "kafka"):
            assert depends_on[dependency] == {"condition": "service_healthy"}, (name, dependency)
    for name in ("hub-ingest", "hub-land", "hub-apply"):
        assert services[name]["depends_on"]["hub-api"] == {"condition": "service_healthy"}
    assert services["hub-ingest"]["depends_on"]["mosquitto"] == {"condition": "service_healthy"}


def test_kafka_is_a_single_kraft_node_that_never_creates_topics_by_itself(rendered: dict[str, Any]) -> None:
    environment = rendered["services"]["kafka"]["environment"]
    assert environment["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert environment["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert environment["CLUSTER_ID"]
    assert "INTERNAL://kafka:9092" in environment["KAFKA_ADVERTISED_LISTENERS"]
    assert str(environment["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]) == "false"
    assert str(environment["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == "1"
    assert mounts(rendered["services"]["kafka"])["/var/lib/kafka/data"][0] == "kafka-data"


def test_kafka_authenticates_every_listener_and_authorises_every_request_with_acls(rendered: dict[str, Any]) -> None:
    """The hub logs in as hub-admin (PLAIN, super user) inside the network; consumers of share streams use the
    SCRAM users `hub apply` makes, on the published listener; nobody reads without an ACL."""
    kafka = rendered["services"]["kafka"]["environment"]
    protocols = dict(x.split(":") for x in kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(protocols.values()) == {"SASL_PLAINTEXT"}, protocols
    assert kafka["KAFKA_LISTENER_NAME_EXTERNAL_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    assert kafka["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert str(kafka["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"]) == "false"
    assert kafka["KAFKA_SUPER_USERS"] == "User:hub-admin"
    secret = SECRETS["HUB_KAFKA_ADMIN_PASSWORD"]
    for listener in ("CONTROLLER", "INTERNAL"):
        jaas = kafka[f"KAFKA_LISTENER_NAME_{listener}_PLAIN_SASL_JAAS_CONFIG"]
        assert f'username="hub-admin" password="{secret}"' in jaas and f'user_hub-admin="{secret}"' in jaas
    assert "--command-config" in " ".join(rendered["services"]["kafka"]["healthcheck"]["test"])
    for name in HUB_SERVICES:
        env = rendered["services"][name]["environment"]
        assert (env["HUB_KAFKA_SECURITY_PROTOCOL"], env["HUB_KAFKA_SASL_MECHANISM"]) == ("SASL_PLAINTEXT", "PLAIN")
        assert (env["HUB_KAFKA_SASL_USERNAME"], env["HUB_KAFKA_SASL_PASSWORD"]) == ("hub-admin", secret)
        assert env["HUB_KAFKA_PUBLIC_BOOTSTRAP"] == "localhost:29092"


def test_timescaledb_creates_database_hub_and_is_checked_with_pg_isready(rendered: dict[str, Any]) -> None:
    service = rendered["services"]["timescaledb"]
    assert service["environment"]["POSTGRES_DB"] == "hub"
    assert service["environment"]["POSTGRES_PASSWORD"] == SECRETS["HUB_DB_PASSWORD"]
    assert "pg_isready" in " ".join(service["healthcheck"]["test"])
    volumes = mounts(service)
    assert volumes["/var/lib/postgresql/data"][0] == "timescaledb-data"
    # Our init script is added next to the image's own scripts, not instead of them.
    assert "/docker-entrypoint-initdb.d" not in volumes
    init = [target for target in volumes if target.startswith("/docker-entrypoint-initdb.d/")]
    assert init and all((REPO / Path(volumes[target][0]).relative_to(REPO)).is_file() for target in init)


def test_mosquitto_enforces_accounts_with_the_dynamic_security_plugin_alone_and_never_drops_messages(
    rendered: dict[str, Any],
) -> None:
    conf = mosquitto_directives()
    assert conf["listener"] == ["1883"]
    assert conf["allow_anonymous"] == ["false"]
    assert conf["plugin"] == ["/usr/lib/mosquitto_dynamic_security.so"]
    assert conf["plugin_opt_config_file"] == ["/mosquitto/dynsec/dynsec.json"]
    # An acl_file next to the plugin would grant every SUBSCRIBE the plugin has no rule for.
    assert "acl_file" not in conf and "password_file" not in conf
    assert "topic" in conf["log_dest"], "the workers read who took over a session from the broker's log"
    assert conf["max_queued_messages"] == ["0"]
    assert conf["max_inflight_messages"] == ["0"]
    assert conf["persistence"] == ["true"]
    assert conf["persistent_client_expiration"] == ["1h"]
    service = rendered["services"]["mosquitto"]
    volumes = mounts(service)
    assert volumes["/mosquitto/dynsec"][0] == "mosquitto-dynsec"
    assert volumes["/mosquitto/data"][0] == "mosquitto-data"
    config_dir = Path(volumes["/etc/hub-mosquitto"][0])
    assert (config_dir / "mosquitto.conf").is_file() and (config_dir / "entrypoint.sh").is_file()
    assert service["entrypoint"][-1] == "/etc/hub-mosquitto/entrypoint.sh"
    health = " ".join(service["healthcheck"]["test"])
    assert "-u hub-health -i hub-health" in health, "the health check has a login of its own, bound to its id"


def test_the_brokers_first_accounts_are_written_by_the_hub_before_it_starts(rendered: dict[str, Any]) -> None:
    services = rendered["services"]
    init = services["mosquitto-init"]
    assert init["command"] == ["hub", "broker-init", "/mosquitto-dynsec/dynsec.json"]
    assert init["restart"] == "no"
    assert mounts(init)["/mosquitto-dynsec"] == ("mosquitto-dynsec", False)
    assert services["mosquitto"]["depends_on"]["mosquitto-init"] == {"condition": "service_completed_successfully"}
    for name in HUB_SERVICES:  # they reach the broker's accounts through its API, not its files
        assert "/mosquitto-dynsec" not in mounts(services[name]), name


def test_grafana_provisions_the_timescaledb_datasource_and_the_hub_dashboards(rendered: dict[str, Any]) -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "hub.yaml").read_text())["datasources"]
    (datasource, prometheus) = datasources
    assert datasource["url"] == "timescaledb:5432"
    assert datasource["type"] in ("grafana-postgresql-datasource", "postgres")
    assert datasource["jsonData"]["timescaledb"] is True
    assert datasource["secureJsonData"]["password"] == "${GRAFANA_DB_PASSWORD}"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "hub.yaml").read_text())["providers"]
    # The operators' dashboards of `hub grafana build`, into the folder the build names (docs/dashboards.md).
    assert provider["options"]["path"] == f"/var/lib/grafana/dashboards/{OPERATORS_DIR}"
    assert (provider["orgId"], provider["folderUid"]) == (1, OPERATORS_FOLDER)
    assert datasource["uid"] == OPERATORS_DATASOURCE
    # The overview's rate panels read the compose file's Prometheus, by the uid the build gives their queries.
    assert (prometheus["uid"], prometheus["type"], prometheus["orgId"]) == (OPERATORS_PROMETHEUS, "prometheus", 1)
    assert prometheus["url"] == "http://prometheus:9090" and "secureJsonData" not in prometheus
    assert "9090" in str(rendered["services"]["prometheus"]["ports"])

    grafana = rendered["services"]["grafana"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == SECRETS["GRAFANA_ADMIN_PASSWORD"]
    # Every variable the datasource file expands is set in Grafana's environment.
    expanded = {m["name"] for _, text in strings(datasources) for m in VARIABLE.finditer(text)}
    assert expanded
    for name in expanded:
        assert grafana["environment"].get(name), name
    volumes = mounts(grafana)
    assert volumes["/etc/grafana/provisioning"] == (str(provisioning), True)
    assert volumes["/var/lib/grafana/dashboards"] == ("dashboards", True)
    for name in ("hub-api", "hub-apply"):
        service = rendered["services"][name]
        assert mounts(service)[service["environment"]["HUB_GRAFANA_DASHBOARDS_DIR"]] == ("dashboards", False)
        # `hub grafana build|sync` grant the counters to the role Grafana's provisioned datasource logs in as
        assert service["environment"]["HUB_GRAFANA_DB_USER"] == grafana["environment"]["GRAFANA_DB_USER"]
        assert service["environment"]["HUB_GRAFANA_PROMETHEUS_URL"] == prometheus["url"]
        assert service["environment"]["HUB_GRAFANA_DB_HOST"] == datasource["url"]
    # Grafana's database passwords outlive the one-shot container that made them.
    assert mounts(rendered["services"]["hub-apply"])["/var/lib/hub"] == ("hub-state", False)


def test_hub_apply_is_a_one_shot_job_behind_a_profile(rendered: dict[str, Any]) -> None:
    service = rendered["services"]["hub-apply"]
    assert service["profiles"] == ["onboard"]
    assert service["restart"] == "no"
    assert mounts(service)["/connectors"] == (str(REPO / "connectors"), True)
    assert mounts(service)["/agreements"] == (str(REPO / "agreements"), True)


def test_ingest_and_landing_workers_can_be_scaled(rendered: dict[str, Any], empty_env_file: Path) -> None:
    for name in ("hub-ingest", "hub-land", "hub-share"):
        service = rendered["services"][name]
        # A fixed container name or a published port would make a second replica fail.
        assert "container_name" not in service and "ports" not in service, name
        assert service["deploy"]["replicas"] == 1
    scaled = render({**SECRETS, "HUB_INGEST_REPLICAS": "3", "HUB_LAND_REPLICAS": "2"}, empty_env_file)
    assert scaled["services"]["hub-ingest"]["deploy"]["replicas"] == 3
    assert scaled["services"]["hub-land"]["deploy"]["replicas"] == 2


def worker_services(rendered: dict[str, Any]) -> dict[str, str]:
    """Service name -> worker kind, for every service that runs `hub run <kind>`."""
    return {
        name: service["command"][2]
        for name, service in rendered["services"].items()
        if service.get("command", [])[:2] == ["hub", "run"]
    }


def test_every_worker_service_scales_serves_metrics_and_reports_its_health(rendered: dict[str, Any]) -> None:
    from hub.worker_registry import KINDS

    workers = worker_services(rendered)
    assert set(workers.values()) == set(KINDS), "every kind of worker has a service"
    for name in workers:
        service = rendered["services"][name]
        assert "container_name" not in service and "ports" not in service, name
        environment = service["environment"]
        assert (environment["HUB_METRICS_HOST"], environment["HUB_METRICS_PORT"]) == ("0.0.0.0", "9400"), name
        assert "http://127.0.0.1:9400/health/live" in " ".join(service["healthcheck"]["test"]), name


def test_prometheus_scrapes_the_api_and_every_container_of_every_worker_service(rendered: dict[str, Any]) -> None:
    service = rendered["services"]["prometheus"]
    config_path = Path(mounts(service)["/etc/prometheus/prometheus.yml"][0])
    assert mounts(service)["/etc/prometheus/prometheus.yml"][1], "read-only"
    jobs = {job["job_name"]: job for job in yaml.safe_load(config_path.read_text())["scrape_configs"]}
    assert jobs["hub-api"]["static_configs"][0]["targets"] == ["hub-api:8081"]
    (dns,) = jobs["hub-workers"]["dns_sd_configs"]
    # A scaled service's name resolves to each of its containers: every replica is scraped.
    assert dns["type"] == "A" and dns["port"] == 9400
    assert set(worker_services(rendered)) <= set(dns["names"])
    assert jobs["hub-workers"]["metrics_path"] == jobs["hub-api"]["metrics_path"] == "/metrics"


def test_hub_tuning_settings_pass_through_from_the_environment(raw: dict[str, Any], empty_env_file: Path) -> None:
    passed_through = [key for key, value in raw["x-hub-environment"].items() if value is None]
    assert passed_through
    fields = set(HubSettings.env_names())
    assert set(passed_through) <= fields, set(passed_through) - fields
    tuned = render({**SECRETS, "HUB_KAFKA_PARTITIONS": "12", "HUB_LAND_BATCH_SIZE": "777"}, empty_env_file)
    for name in HUB_SERVICES:
        environment = tuned["services"][name]["environment"]
        assert (environment["HUB_KAFKA_PARTITIONS"], environment["HUB_LAND_BATCH_SIZE"]) == ("12", "777")


def test_published_ports_other_than_mqtt_default_to_loopback(rendered: dict[str, Any]) -> None:
    for name, service in rendered["services"].items():
        for port in service.get("ports", []):
            if name == "mosquitto":
                assert port.endswith(":1883/tcp")
            else:
                assert port.startswith("127.0.0.1:"), (name, port)


# --- secrets -------------------------------------------------------------------------------


def test_no_secret_is_written_in_the_compose_file(raw: dict[str, Any]) -> None:
    for path, text in strings(raw):
        key = path[-1] if path else ""
        if SECRET_NAME.search(key) and text != key:
            # A secret-named setting is either passed through (None, not visited) or only a variable.
            assert VARIABLE.fullmatch(text), f"{'.'.join(path)} = {text!r}"
        for url in re.finditer(r"://[^/:@\s]+:(?P<password>[^@\s]+)@", text):
            assert VARIABLE.fullmatch(url["password"]), f"{'.'.join(path)} has a literal password"


def test_required_secrets_never_have_a_default(raw: dict[str, Any]) -> None:
    references = [m for _, text in strings(raw) for m in VARIABLE.finditer(text) if m["name"] in SECRETS]
    assert {m["name"] for m in references} == set(SECRETS)
    for match in references:
        assert match["op"] == ":?", match.group(0)


def test_rendered_secrets_reach_only_the_settings_that_need_them(rendered: dict[str, Any]) -> None:
    for path, text in strings(rendered):
        if any(secret in text for secret in SECRETS.values()):
            assert len(path) == 4 and path[0] == "services" and path[2] == "environment", ".".join(path)
            assert path[3] in SECRET_ENV_KEYS, ".".join(path)
    for name, service in rendered["services"].items():
        for key, value in service.get("environment", {}).items():
            if SECRET_NAME.search(key):
                assert value is None or value in SECRETS.values(), f"{name}: {key} is a literal"


def test_env_example_lists_every_variable_and_no_secret_value(raw: dict[str, Any]) -> None:
    documented: dict[str, str] = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            documented[match[1]] = match[2]
    used = {m["name"] for _, text in strings(raw) for m in VARIABLE.finditer(text)}
    assert used - set(documented) == set()
    for name in SECRETS:
        assert documented[name] == "", f"{name} must be empty in .env.example"


# --- image ---------------------------------------------------------------------------------


def test_dockerfile_installs_the_package_on_python_311_slim_as_a_non_root_user() -> None:
    text = (REPO / "Dockerfile").read_text()
    instructions = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in instructions
    assert all(
        line == "FROM ${PYTHON_IMAGE}" or line.startswith("FROM ${PYTHON_IMAGE} AS")
        for line in instructions
        if line.startswith("FROM")
    )
    assert "pip install ." in text
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), "the image must end as a non-root user"
    for line in instructions:
        if line.startswith(("ENV ", "ARG ")):
            assert not SECRET_NAME.search(line), f"secret in the image: {line}"


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_build_context() -> None:
    patterns = [
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and line[0] != "#"
    ]

    def ignored(path: str) -> bool:
        parts = path.split("/")
        candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(
            fnmatch.fnmatch(c, p.removeprefix("**/")) or fnmatch.fnmatch(c, p) for p in patterns for c in candidates
        )

    for path in (
        ".venv/bin/python",
        ".hub/stack.json",
        ".git/HEAD",
        ".env",
        "hub/__pycache__/x.pyc",
        ".pytest_cache/x",
    ):
        assert ignored(path) or ignored(path.split("/")[-1]), path
    for path in ("pyproject.toml", "README.md", "hub/settings.py", "hub/cli/main.py"):
        assert not ignored(path), f"{path} is needed by `pip install .`"
