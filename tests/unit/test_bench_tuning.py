"""`hub bench` hands the caller's data-path tuning variables to its workers, and nothing that points elsewhere."""

from __future__ import annotations

from hub.bench.tuning import TUNING_PREFIXES, tuning_env
from hub.settings import HubSettings


def test_tuning_variables_reach_the_benchmark_workers() -> None:
    environ = {
        "HUB_LAND_FETCH_WAIT_MS": "500",
        "HUB_INGEST_FLUSH_MS": "20",
        "HUB_SHARE_FETCH_WAIT_MS": "10",
        "HUB_KAFKA_LINGER_MS": "1",
        "PATH": "/usr/bin",
    }
    assert tuning_env(environ) == {k: v for k, v in environ.items() if k != "PATH"}


def test_endpoints_credentials_and_the_ack_mode_stay_the_benchmarks_own() -> None:
    environ = {
        "HUB_DATABASE_URL": "postgresql://someone@elsewhere/hub",
        "HUB_MQTT_URL": "mqtt://admin:secret@elsewhere",
        "HUB_KAFKA_BOOTSTRAP": "elsewhere:9092",
        "HUB_KAFKA_SASL_PASSWORD": "secret",
        "HUB_STATE_DIR": "/somewhere",
        "HUB_PG_PORT": "5432",
        "HUB_INGEST_ACK": "kafka",  # the benchmark's --ack decides
    }
    assert tuning_env(environ) == {}


def test_every_tuning_prefix_names_settings_that_exist() -> None:
    names = {f"HUB_{name.upper()}" for name in HubSettings.__dataclass_fields__}
    for prefix in TUNING_PREFIXES:
        assert any(n.startswith(prefix) for n in names), prefix
