"""The restart gate of the local stack's Mosquitto: partners stay out of a restarted broker until ingest is back.

Mosquitto 2.0.11 does not restore shared subscriptions (the ingest workers' `$share/hub-ingest/...`)
after it died, so what devices publish to the restarted broker before the workers have subscribed
again is acknowledged and dropped. Why the gate disables logins, and which: hub/mqtt_auth/gate.py.

Closing, before the supervisor starts a broker that died: the logins to close are added to the gate's
record (`<state>/mosquitto/restart-gate.json`, written first, so the logins the gate disabled are known
whatever happens next), then marked disabled in the plugin's file, which no broker holds open now.
Opening: once every running ingest worker (hub/worker_registry.py) reports a SUBACK later than the
restart (or none runs, or `stack_gate_timeout_s` has passed), the recorded logins are enabled through
the plugin's API as the admin login, and the record is removed. A supervisor that stops mid-gate leaves
the record; the next pass of a supervisor opens the gate.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from hub.errors import StackError
from hub.mqtt_auth.dynsec import DynsecAdmin
from hub.mqtt_auth.gate import closed_document, enable_commands, logins_to_close
from hub.settings import MqttAddress, write_private_json
from hub.stack.servers import dynsec_file, mosquitto_process
from hub.worker_registry import running_workers

GATE_FILE = "restart-gate.json"


@dataclass(frozen=True)
class Gate:
    closed_at: float  # when the broker was (last) started behind it: a SUBACK after this is the new broker's
    logins: tuple[str, ...]  # what the gate disabled, and only that is enabled again


def gate_path(state: Path) -> Path:
    return mosquitto_process(state).state_dir / GATE_FILE


def read_gate(state: Path) -> Gate | None:
    """The gate while it is closed, else None (the record is replaced whole, never half written)."""
    try:
        data = json.loads(gate_path(state).read_text())
        return Gate(float(data["closed_at"]), tuple(str(name) for name in data["logins"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StackError(f"the restart gate's record {gate_path(state)} is unreadable ({exc})") from exc


def close_gate(state: Path, now: float) -> tuple[Gate, bool]:
    """Disable every login that is not the hub's own in the plugin's file (the broker must not be running).

    Returns the gate and whether it was open until now (a restart tried again keeps the logins it closed).
    """
    accounts = dynsec_file(mosquitto_process(state).state_dir)
    try:
        document = json.loads(accounts.read_text())
    except (OSError, ValueError) as exc:
        raise StackError(f"cannot read the broker's accounts {accounts} to close the restart gate ({exc})") from exc
    if not isinstance(document, dict):
        raise StackError(f"the broker's accounts {accounts} are not a JSON object")
    closing = logins_to_close(document)
    before = read_gate(state)
    gate = Gate(now, tuple(sorted({*(before.logins if before else ()), *closing})))
    write_private_json(gate_path(state), {"closed_at": gate.closed_at, "logins": list(gate.logins)})
    if closing:
        write_private_json(accounts, closed_document(document, closing))
    return gate, before is None


def ingest_workers(state: Path, since: float) -> tuple[list[str], list[str]]:
    """(every running ingest worker, those with no SUBACK after `since`), by name."""
    running = [w for w in running_workers(state) if w.kind == "ingest"]
    return [w.name for w in running], [w.name for w in running if (w.subscribed_at or 0.0) <= since]


def open_gate(state: Path, admin: MqttAddress, gate: Gate) -> None:
    """Enable the logins the gate disabled, through the broker's API, then remove the record (blocking)."""
    if gate.logins:
        with DynsecAdmin(admin, timeout_s=10) as api:
            api.run(enable_commands(gate.logins), ok_errors=("Client not found",))  # removed meanwhile: fine
    gate_path(state).unlink(missing_ok=True)


def describe(gate: Gate, now: float | None = None) -> str:
    """For `hub stack status` while the gate is closed."""
    held = (now if now is not None else time.time()) - gate.closed_at
    return (
        f"restart gate closed for {held:.0f} s: {len(gate.logins)} partner and consumer logins are refused "
        "until every ingest worker has subscribed again"
    )
