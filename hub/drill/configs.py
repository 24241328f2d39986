"""Hostile configs: `hub plan` and `hub apply` must refuse each family with a one-line error, and nothing
stored may change (the catalog's control tables, the database's roles and schemas, the broker's accounts).
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from hub.control import apply as applier
from hub.drill.faults import Pace, stream_scenario
from hub.drill.reconcile import Result, judge_refusals
from hub.drill.stack import CONFIG, DrillStack
from hub.errors import HubError
from hub.identifiers import qualified
from hub.stack.broker_auth import LocalBrokerAuth
from hub.stack.servers import dynsec_file

# Written by the data plane while the drill runs; everything else in schema hub is the control plane's.
DATA_PLANE = ("devices", "resources", "dead_letters", "mqtt_devices")
DATA_PLANE_PREFIXES = ("land_", "ingest_", "share_")
FEED = """  - name: {name}
    description: A hostile config of `hub drill`.
    licence: CC0-1.0
    schema: {schema}
    topic: {topic}
    format: json
    device_id: {{source: field, field: id}}
    time: {{field: t, format: epoch_ms}}
"""
PARTNER = """partner:
  id: {id}
  name: Hostile
  kind: private
  contact: hostile@hub.invalid
feeds:
"""


def billion_laughs(levels: int = 9) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n" + PARTNER.format(id="laughs") + FEED.format(name="air", schema="drill_air",
                                                                                topic="air/x")  # fmt: skip


def partner_with(feed: dict[str, str], pid: str = "hostile_lab") -> str:
    return PARTNER.format(id=pid) + FEED.format(**{"name": "air", "schema": "drill_air", "topic": "air/x", **feed})


FAMILIES: dict[str, dict[str, str]] = {
    "YAML aliases (billion laughs)": {"laughs.yaml": billion_laughs()},
    "SQL injection in a partner id": {"p.yaml": PARTNER.format(id='x"; DROP TABLE hub.feeds; --')
                                      + FEED.format(name="air", schema="drill_air", topic="air/x")},
    "SQL injection in a feed name": {"p.yaml": partner_with({"name": "air; DROP SCHEMA hub CASCADE"})},
    "topic injection": {"p.yaml": partner_with({"topic": "air/../../../hub/errors/drill_other"})},
    "wildcard topic #": {"p.yaml": partner_with({"topic": "air/#"})},
    "wildcard topic +": {"p.yaml": partner_with({"topic": "+/readings"})},
    "traversal in a schema path": {"p.yaml": partner_with({"schema": "../../../../etc/passwd"})},
    "duplicate partners": {"a.yaml": partner_with({}), "b.yaml": partner_with({"name": "air2"})},
}  # fmt: skip


TABLE_DIGEST = "SELECT md5(coalesce(string_agg(t::text, chr(10) ORDER BY t::text), '')) FROM {} t"
CATALOG_DIGESTS = {
    "the database's roles": "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles",
    "the database's schemas": "SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace",
    "the database's tables": "SELECT string_agg(table_schema || '.' || table_name, ',' ORDER BY 1) "
    "FROM information_schema.tables",
}
CLI_FAMILY = "YAML aliases (billion laughs)"


async def stored_state(stack: DrillStack) -> dict[str, str]:
    """Digests of what a refused plan or apply must leave as it was, by part (a table, the roles, ...)."""
    tables = await stack.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'hub' AND table_type = 'BASE TABLE'"
    )
    parts = {}
    for (name,) in sorted(tables):
        if name in DATA_PLANE or name.startswith(DATA_PLANE_PREFIXES):
            continue
        parts[f"hub.{name}"] = str(await stack.fetchval(TABLE_DIGEST.format(qualified("hub", name))))
    for what, sql in CATALOG_DIGESTS.items():
        parts[what] = str(await stack.fetchval(sql))
    parts["the broker's accounts"] = hashlib.sha256(dynsec_file(stack.state / "mosquitto").read_bytes()).hexdigest()
    return parts


async def refused_in_process(stack: DrillStack, command: str, folder: Path) -> str | None:
    """None when plan/apply refused the folder with a HubError of one line (what the CLI prints as its error)."""
    run = applier.plan if command == "plan" else applier.apply
    try:
        await run(stack.settings, folder, CONFIG, broker=LocalBrokerAuth(stack.settings))
    except HubError as exc:
        return None if len(str(exc).strip().splitlines()) == 1 else f"{command}: an error of several lines"
    except Exception as exc:  # the CLI would print a traceback
        return f"{command}: {type(exc).__name__}: {str(exc)[:100]}"
    return f"{command} accepted it"


def refused_by_cli(stack: DrillStack, command: str, folder: Path) -> str | None:
    """None when `hub <command>` refused the folder with a one-line error; otherwise what went wrong."""
    env = {**stack.env, "COLUMNS": "500"}
    try:
        run = subprocess.run([sys.executable, "-m", "hub", command, str(folder), "--schemas", str(CONFIG)],
                             env=env, capture_output=True, timeout=60, text=True)  # fmt: skip
    except subprocess.TimeoutExpired:
        return f"hub {command} ran over 60 s"
    lines = [line for line in (run.stdout + run.stderr).splitlines() if line.strip()]
    if run.returncode == 0:
        return f"hub {command} accepted it"
    if any("Traceback" in line for line in lines) or len(lines) != 1:
        return f"hub {command} answered with {len(lines)} lines: {(lines or [''])[-1][:120]}"
    return None


def hostile_configs(stack: DrillStack, log: Callable[[str], None]) -> Callable[[Result], tuple[float, float]]:
    def fault(result: Result) -> tuple[float, float]:
        began = time.time()
        before = asyncio.run(stored_state(stack))
        for family, files in FAMILIES.items():
            folder = Path(tempfile.mkdtemp(prefix="hub-drill-config-"))
            try:
                for name, text in files.items():
                    (folder / name).write_text(text)
                problems = [asyncio.run(refused_in_process(stack, command, folder)) for command in ("plan", "apply")]
                if family == CLI_FAMILY:  # and once as a person runs it: the command's whole output is one line
                    problems += [refused_by_cli(stack, command, folder) for command in ("plan", "apply")]
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            result.attempts += len(problems)
            result.refused += problems.count(None)
            result.notes += [f"{family}: {p}" for p in problems if p]
            log(f"hostile config: {family}")
        after = asyncio.run(stored_state(stack))
        changed = [k for k in before.keys() | after.keys() if before.get(k) != after.get(k)]
        if changed:
            result.fail(f"changed after the refused plans and applies: {', '.join(sorted(changed))}")
        return began, time.time()

    return fault


def run_configs(stack: DrillStack, pace: Pace, log: Callable[[str], None], _quick: bool) -> list[Result]:
    row = stream_scenario(stack, pace, "hostile configs", f"hub plan and hub apply of {len(FAMILIES)} families: "
                          + ", ".join(FAMILIES), hostile_configs(stack, log), recovery=False)  # fmt: skip
    judge_refusals(row)
    return [row]
