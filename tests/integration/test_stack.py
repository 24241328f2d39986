"""The local stack: real servers as processes, idempotent start, clean stop, clear errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from hub.settings import HubSettings
from hub.stack.local import LocalStack
from hub.stack.process import free_port

HUB = [sys.executable, "-m", "hub"]


def run_hub(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HUB, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_status_reports_every_component_healthy_and_the_database_mode(hub_env: dict[str, str]) -> None:
    result = run_hub(["stack", "status", "--json"], hub_env)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert isinstance(status.pop("workers"), list), "the running workers (tests/integration/test_operations.py)"
    assert set(status) == {"postgres", "kafka", "mosquitto", "api", "supervisor"}
    assert all(c["healthy"] for c in status.values()), status
    assert "PostgreSQL" in status["postgres"]["detail"]
    assert ("TimescaleDB" in status["postgres"]["detail"]) or ("no TimescaleDB" in status["postgres"]["detail"])
    assert "schema registry" in status["api"]["detail"]


def test_second_up_changes_nothing(stack_settings: HubSettings) -> None:
    stack = LocalStack(stack_settings)
    before = {s.name: s.pid for s in stack.status()}
    after = {s.name: s.pid for s in stack.up()}
    assert before == after
    assert all(after.values())


def test_env_prints_exports_that_point_at_the_stack(hub_env: dict[str, str], stack_settings: HubSettings) -> None:
    result = run_hub(["stack", "env"], hub_env)
    assert result.returncode == 0, result.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in result.stdout.splitlines())
    assert f":{stack_settings.pg_port}/" in exports["HUB_DATABASE_URL"]
    assert f":{stack_settings.mqtt_port}" in exports["HUB_MQTT_URL"]
    assert exports["HUB_KAFKA_BOOTSTRAP"].strip("'") == f"127.0.0.1:{stack_settings.kafka_port}"


def test_occupied_port_is_a_one_line_error_naming_the_setting(state_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        env = {"HUB_STATE_DIR": str(state_dir), "HUB_PG_PORT": str(port), "PATH": os.environ["PATH"]}
        result = run_hub(["stack", "up"], env)
    assert result.returncode == 1
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert f"port {port}" in err and "HUB_PG_PORT" in err


def test_unwritable_state_dir_is_a_one_line_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_hub(["--state-dir", str(blocker / "state"), "stack", "up"], {"PATH": os.environ["PATH"]})
    assert result.returncode == 1
    assert "state directory" in result.stderr and "HUB_STATE_DIR" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_binary_is_a_one_line_error_saying_what_to_install(tmp_path: Path, state_dir: Path) -> None:
    env = {
        "HUB_STATE_DIR": str(state_dir),
        "HUB_PG_PORT": str(free_port()),
        "HUB_KAFKA_PORT": str(free_port()),
        "HUB_MQTT_PORT": str(free_port()),
        "PATH": str(tmp_path),  # neither mosquitto nor the PostgreSQL binaries are found here
    }
    result = run_hub(["stack", "up"], env)
    assert result.returncode == 1
    assert "mosquitto not found" in result.stderr and "apt-get install mosquitto" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (state_dir / "postgres" / "data").exists(), "nothing may start when a binary is missing"


def test_down_stops_only_ours_and_restart_keeps_database_data(state_dir: Path) -> None:
    settings = HubSettings(
        state_dir=state_dir,
        mqtt_port=free_port(),
        pg_port=free_port(),
        kafka_port=free_port(),
        api_port=free_port(),
    )
    stack = LocalStack(settings)
    stack.up()
    import asyncio

    import asyncpg

    url = settings.endpoints().database_url

    async def sql(query: str) -> object:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetchval(query) if query.startswith("SELECT") else await conn.execute(query)
        finally:
            await conn.close()

    asyncio.run(sql("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)"))
    pids = [s.pid for s in stack.status()]
    assert sorted(stack.down()) == ["api", "kafka", "mosquitto", "postgres", "supervisor"]
    import psutil

    for pid in pids:
        assert pid is not None
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert stack.down() == []
    stack.up()
    try:
        assert asyncio.run(sql("SELECT x FROM kept")) == 42
    finally:
        stack.down()
