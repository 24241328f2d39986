"""The stack's supervisor as a managed process (`hub stack up` starts it, `hub stack down` stops it first).

Kept apart from supervisor.py, which needs the whole LocalStack, so that local.py can start it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from hub.settings import HubSettings
from hub.stack.process import ManagedProcess

MARKER = "hub stack supervise"  # what the live process's command line contains
EVENTS_FILE = "events.jsonl"


def supervisor_process(state_dir: Path) -> ManagedProcess:
    return ManagedProcess("supervisor", state_dir / "supervisor", MARKER)


def events_path(state_dir: Path) -> Path:
    return state_dir / "supervisor" / EVENTS_FILE


def start_supervisor(settings: HubSettings) -> ManagedProcess:
    """`hub stack supervise` for the stack in `settings.state_dir`, with the settings that place its servers."""
    s = settings
    proc = supervisor_process(s.state_dir.resolve())
    proc.start(
        [sys.executable, "-m", "hub", "stack", "supervise"],
        env={
            "HUB_STATE_DIR": str(s.state_dir.resolve()),
            "HUB_PG_PORT": str(s.pg_port),
            "HUB_KAFKA_PORT": str(s.kafka_port),
            "HUB_MQTT_PORT": str(s.mqtt_port),
            "HUB_API_PORT": str(s.api_port),
            "HUB_INGEST_MAX_IN_FLIGHT": str(s.ingest_max_in_flight),
            "HUB_STACK_SUPERVISE_EVERY_S": str(s.stack_supervise_every_s),
            "HUB_STACK_GATE_TIMEOUT_S": str(s.stack_gate_timeout_s),
        },
    )
    return proc
