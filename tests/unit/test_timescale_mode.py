"""Which mode the hub runs in (TimescaleDB or plain PostgreSQL), and what the local PostgreSQL is started with:
pure decisions, from what a server says and what is installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.db import TimescaleState, extension_error, uses_timescaledb
from hub.errors import ConfigError
from hub.stack.postgres_conf import (
    PRELOADABLE,
    WorkerBudget,
    libraries_to_preload,
    postgres_options,
    server_settings,
    timescaledb_workers,
)

CONF = "/etc/postgresql/15/main/postgresql.conf"


@pytest.mark.parametrize(
    ("installed", "available", "preloaded", "uses"),
    [
        (False, False, False, False),  # plain PostgreSQL
        (False, True, True, True),  # apply creates the extension
        (True, True, True, True),
        (True, True, False, True),  # already created (the WASM engine loads it without preloading)
    ],
)
def test_the_mode_follows_what_the_server_has(installed: bool, available: bool, preloaded: bool, uses: bool) -> None:
    assert uses_timescaledb(TimescaleState(installed, available, preloaded, CONF)) is uses


def test_an_extension_available_but_not_preloaded_is_one_line_naming_the_setting_and_the_file() -> None:
    with pytest.raises(ConfigError) as caught:
        uses_timescaledb(TimescaleState(installed=False, available=True, preloaded=False, config_file=CONF))
    message = str(caught.value)
    assert "\n" not in message
    assert "not preloaded" in message
    assert f"shared_preload_libraries in {CONF}" in message
    assert "restart PostgreSQL" in message


def test_without_the_config_files_path_the_message_says_how_to_find_it() -> None:
    with pytest.raises(ConfigError, match=r"postgresql\.conf \(SHOW config_file\)"):
        uses_timescaledb(TimescaleState(installed=False, available=True, preloaded=False, config_file=None))


def test_the_servers_preload_error_is_recognised_and_others_are_not() -> None:
    said = 'extension "timescaledb" must be preloaded'
    explained = extension_error(said, CONF)
    assert explained is not None and CONF in explained and "shared_preload_libraries" in explained
    assert extension_error('permission denied to create extension "timescaledb"', CONF) is None


def test_the_local_postgresql_preloads_only_what_is_installed() -> None:
    assert libraries_to_preload({"plpgsql", "pgcrypto"}) == []
    assert libraries_to_preload({"timescaledb", "plpgsql"}) == ["timescaledb"]
    assert libraries_to_preload(PRELOADABLE) == list(PRELOADABLE)  # each in its place in the list
    assert "shared_preload_libraries" not in server_settings([])
    assert "max_worker_processes" not in server_settings([])


def test_with_timescaledb_every_policy_job_finds_a_worker_slot() -> None:
    budget = WorkerBudget(databases=4, concurrent_jobs=16, parallel_workers=2)
    settings = server_settings(["timescaledb"], budget)
    assert settings["shared_preload_libraries"] == "timescaledb"
    background = int(settings["timescaledb.max_background_workers"])
    assert background == budget.databases + budget.concurrent_jobs
    # PostgreSQL's slots hold TimescaleDB's workers, parallel query workers and the two launchers.
    assert int(settings["max_worker_processes"]) >= background + budget.parallel_workers + 2 > 8
    assert timescaledb_workers(budget) == {k: settings[k] for k in timescaledb_workers(budget)}


def test_options_are_plain_words_for_pg_ctls_shell() -> None:
    options = postgres_options(15432, Path("/tmp/hub/run"), server_settings(["timescaledb"]))
    assert options.startswith("-p 15432 -k /tmp/hub/run -c listen_addresses=127.0.0.1")
    assert "-c shared_preload_libraries=timescaledb" in options
    with pytest.raises(ValueError, match="unsafe"):
        postgres_options(1, Path("/x"), {"shared_preload_libraries": "a; rm -rf /"})
