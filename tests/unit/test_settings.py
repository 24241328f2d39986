"""Settings come from `HUB_<NAME>` variables; a value a setting cannot take is an error naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hub.errors import ConfigError
from hub.settings import HubSettings


def test_defaults_hold_without_any_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in HubSettings.env_names():
        monkeypatch.delenv(name, raising=False)
    s = HubSettings()
    assert (s.state_dir, s.ingest_max_inbox, s.log_format, s.database_url) == (Path(".hub"), 10_000, "plain", None)


def test_variables_are_read_as_the_type_each_setting_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_STATE_DIR", "/var/lib/hub")
    monkeypatch.setenv("HUB_INGEST_MAX_INBOX", " 2500 ")
    monkeypatch.setenv("HUB_SHARE_RELOAD_S", "0.5")
    monkeypatch.setenv("HUB_STACK_SUPERVISE", "off")
    monkeypatch.setenv("HUB_LAND_COMMIT_KAFKA_OFFSETS", "TRUE")
    monkeypatch.setenv("HUB_LOG_FORMAT", "json")
    monkeypatch.setenv("HUB_APPLY_MAX_LOCKS", "")  # empty: unset, as `HUB_X=` in a compose file means
    s = HubSettings()
    assert s.state_dir == Path("/var/lib/hub") and s.ingest_max_inbox == 2500 and s.share_reload_s == 0.5
    assert (s.stack_supervise, s.land_commit_kafka_offsets, s.log_format, s.apply_max_locks) == (
        False, True, "json", None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("variable", "text", "says"),
    [
        ("HUB_INGEST_MAX_INBOX", "lots", "HUB_INGEST_MAX_INBOX: 'lots' is not a whole number"),
        ("HUB_INGEST_MAX_INBOX", "0", "HUB_INGEST_MAX_INBOX: must be at least 1 (got 0)"),
        ("HUB_SHARE_RELOAD_S", "0", "HUB_SHARE_RELOAD_S: must be greater than 0 (got 0.0)"),
        ("HUB_SHARE_RELOAD_S", "nan", "HUB_SHARE_RELOAD_S: 'nan' is not a number"),
        ("HUB_CATALOG_PAGE_SIZE", "5000", "HUB_CATALOG_PAGE_SIZE: must be at most 1000 (got 5000)"),
        ("HUB_STACK_SUPERVISE", "maybe", "HUB_STACK_SUPERVISE: 'maybe' is not true or false"),
        ("HUB_LOG_FORMAT", "xml", "HUB_LOG_FORMAT: 'xml' is not one of plain, json"),
        ("HUB_INGEST_ACK", "", "HUB_INGEST_ACK: '' is not one of auto, kafka, landed"),
        ("HUB_INGEST_FLUSH_MS", "0", "HUB_INGEST_FLUSH_MS: must be at least 1 (got 0)"),
        ("HUB_LAND_FETCH_WAIT_MS", "60000", "HUB_LAND_FETCH_WAIT_MS: must be at most 5000 (got 60000)"),
        ("HUB_LAND_FETCH_MIN_BYTES", "0", "HUB_LAND_FETCH_MIN_BYTES: must be at least 1 (got 0)"),
        ("HUB_SHARE_FETCH_WAIT_MS", "soon", "HUB_SHARE_FETCH_WAIT_MS: 'soon' is not a whole number"),
    ],
)
def test_a_value_a_setting_cannot_take_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, text: str, says: str
) -> None:
    monkeypatch.setenv(variable, text)
    with pytest.raises(ConfigError) as refused:
        HubSettings()
    assert str(refused.value).startswith(says)


def test_keywords_come_before_the_environment_and_are_checked_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_INGEST_MAX_INBOX", "lots")  # not read: the keyword wins
    s = HubSettings(ingest_max_inbox=7, state_dir="/tmp/x", share_reload_s=2)
    assert (s.ingest_max_inbox, s.state_dir, s.share_reload_s) == (7, Path("/tmp/x"), 2.0)
    with pytest.raises(ConfigError, match="ingest_max_inbox: True is not a whole number"):
        HubSettings(ingest_max_inbox=True)
    with pytest.raises(TypeError, match="no setting ingest_max_inbx"):
        HubSettings(ingest_max_inbx=7)


def test_replace_checks_its_changes_and_reads_no_variable_again(monkeypatch: pytest.MonkeyPatch) -> None:
    s = HubSettings(ingest_max_inbox=7)
    monkeypatch.setenv("HUB_LOG_FORMAT", "json")
    changed = s.replace(land_batch_size=100)
    assert (changed.land_batch_size, changed.ingest_max_inbox, changed.log_format) == (100, 7, s.log_format)
    with pytest.raises(ConfigError, match="land_retry_max_s: must be greater than 0"):
        s.replace(land_retry_max_s=0)


def test_passwords_stay_out_of_the_settings_repr() -> None:
    s = HubSettings(
        database_url="postgresql://hub:s3cret-db@127.0.0.1/hub",
        mqtt_url="mqtt://hub:s3cret-mqtt@127.0.0.1:1883",
        kafka_sasl_password="s3cret-kafka",
    )
    assert "s3cret" not in repr(s)


def test_a_worker_process_started_with_a_bad_variable_says_which_in_one_line() -> None:
    env = {**os.environ, "HUB_INGEST_MAX_INBOX": "lots"}
    run = subprocess.run(
        [sys.executable, "-m", "hub.worker_process", "ingest", "0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1
    assert run.stderr.strip() == "hub ingest worker: HUB_INGEST_MAX_INBOX: 'lots' is not a whole number"


def test_a_hub_command_run_with_a_bad_variable_says_which_in_one_line() -> None:
    env = {**os.environ, "HUB_LOG_FORMAT": "xml", "COLUMNS": "200"}
    run = subprocess.run(
        [sys.executable, "-m", "hub", "stack", "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == ["error: HUB_LOG_FORMAT: 'xml' is not one of plain, json"]
