"""The README's main command and the simulator, run as a user runs them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import psutil

from hub.settings import HubSettings
from hub.stack.local import cli_env, private_settings
from tests.conftest import REPO

HUB = [sys.executable, "-m", "hub"]


def test_hub_demo_lands_every_valid_message_and_stack_down_stops_everything_it_started() -> None:
    settings = private_settings("hub-test-demo-")
    env = cli_env(settings)
    try:
        result = subprocess.run(
            [*HUB, "demo", "--messages", "300", "--rate", "600", "--invalid", "0.1"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert "sent 300" in result.stdout and "refused 0" in result.stdout
        assert "rows (every valid message exactly once)" in result.stdout
        # it ends with a consumer organisation's own view of the data, beside what it is refused
        sharing = result.stdout.split("6. sharing")[1]
        assert "org_city_data_team | uni_air_lab__air_quality" in sharing and "(5 rows)" in sharing
        assert "ERROR:  permission denied for schema uni_air_lab" in sharing
        # and the page's address, with a token to sign in there as that organisation
        assert f"7. the page: {settings.endpoints().registry_url}/" in result.stdout
        assert re.search(r"\n   hub_[0-9a-f]{8}_", result.stdout)
        pids = [
            p.pid
            for p in psutil.process_iter(["cmdline"])
            if str(settings.state_dir) in " ".join(p.info["cmdline"] or [])
        ]
    finally:
        down = subprocess.run(
            [*HUB, "stack", "down"], env=env, capture_output=True, text=True, timeout=120, check=False
        )
    stopped = down.stdout.removeprefix("stopped: ").strip().split(", ")
    assert {"ingest-0", "land-0", "share-0", "api", "postgres"} <= set(stopped), down.stdout
    assert any(s.startswith("hub run (pid ") for s in stopped), down.stdout
    assert not [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    shutil.rmtree(settings.state_dir, ignore_errors=True)


def test_simulate_publishes_with_the_partners_credentials_and_summarises_what_it_sent(applied: HubSettings) -> None:
    result = subprocess.run(
        [*HUB, "simulate", "--messages", "40", "--rate", "0", "--invalid", "0.25", "--partner", "voltcharge"],
        env=cli_env(applied),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "voltcharge.charger_status" in result.stdout
    assert "broker acknowledged 40, refused 0" in result.stdout
    assert "invalid on purpose" in result.stdout


def test_simulate_for_an_unknown_partner_is_a_one_line_error(applied: HubSettings) -> None:
    result = subprocess.run(
        [*HUB, "simulate", "--partner", "nobody"], env=cli_env(applied), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert "no applied partner or feed named 'nobody'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
