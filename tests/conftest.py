"""Test harness: real servers, started once per test session on free loopback ports."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hub.settings import Endpoints, HubSettings
from hub.stack.local import cli_env
from tests.integration.examples import apply_with_agreements
from tests.integration.support import apply_examples, private_stack

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[HubSettings]:
    """A whole local stack (PostgreSQL, Kafka-protocol broker, Mosquitto) for this test session."""
    with private_stack("hub-test-") as settings:
        yield settings


@pytest.fixture(scope="session")
def spare_stack() -> Iterator[HubSettings]:
    """A second whole stack, for tests that apply configs from a database of their own (a small PostgreSQL,
    the TimescaleDB engine): `hub apply` makes a broker's accounts match its catalog, so pairing another
    catalog with the session stack's broker would remove the example partners' logins there."""
    with private_stack("hub-spare-") as settings:
        yield settings


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A fresh state directory that PostgreSQL (run as `postgres` under root) can enter."""
    path = Path(tempfile.mkdtemp(prefix="hub-test-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def endpoints(stack_settings: HubSettings) -> Endpoints:
    return stack_settings.endpoints()


@pytest.fixture
def hub_env(stack_settings: HubSettings) -> dict[str, str]:
    """Environment for running the `hub` CLI against the test stack."""
    return cli_env(stack_settings)


@pytest.fixture(scope="session")
def applied(stack_settings: HubSettings) -> HubSettings:
    """The example partners of connectors/ applied to the test stack, their credentials saved in the state dir."""
    return apply_examples(stack_settings)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Playwright (pytest-playwright-asyncio) drives Debian's Chromium: it cannot download a browser here."""
    from tests.integration.page_support import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip(f"no browser: {CHROMIUM} is absent (scripts/setup.sh installs Debian's chromium)")
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM), "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def examples(applied: HubSettings) -> tuple[HubSettings, subprocess.CompletedProcess[str]]:
    """`applied`, plus the example organisations and agreements (`hub apply`'s output), rows in every example
    feed, and every organisation's database login saved where `hub db-url` finds it."""
    return apply_with_agreements(applied)


TIMESCALE_WASM = REPO.parent / "shared" / "timescale-wasm"


@pytest.fixture(scope="module")
def timescale_url() -> Iterator[str]:
    """A real TimescaleDB engine (PGlite WASM from ../shared/timescale-wasm) on a free port, per test module.

    It serves one client session at a time and cannot COPY; skipped, saying why, where it is absent.
    """
    import shutil
    import subprocess

    from hub.stack.process import free_port

    if not (TIMESCALE_WASM / "run.sh").is_file():
        pytest.skip(f"no TimescaleDB engine: {TIMESCALE_WASM} is absent")
    if shutil.which("node") is None:
        pytest.skip("no TimescaleDB engine: node is not installed")
    port = free_port()
    started = subprocess.run(
        [str(TIMESCALE_WASM / "run.sh"), str(port)], capture_output=True, text=True, timeout=300, check=False
    )
    if started.returncode != 0:
        pytest.skip(f"the TimescaleDB WASM engine did not start: {started.stderr.strip()[-500:]}")
    pid = started.stdout.strip().splitlines()[-1]
    try:
        yield f"postgresql://postgres:postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([str(TIMESCALE_WASM / "stop.sh"), pid], capture_output=True, timeout=30, check=False)
