"""The local PostgreSQL's server settings: which libraries it preloads, and enough worker slots for them.

Pure: the settings are computed from what is installed (a set of library names) and rendered as
`postgres -c` options, so they can be read and tested without starting a server.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

# Libraries the local PostgreSQL preloads, in this order, each only where it is installed. Preloading is
# what lets `CREATE EXTENSION` work for them (TimescaleDB refuses to be created otherwise).
PRELOADABLE: tuple[str, ...] = ("timescaledb", "pgaudit")


@dataclass(frozen=True)
class WorkerBudget:
    """What TimescaleDB's background jobs need at once on the local stack.

    Each feed table has up to three policy jobs (compression, retention, continuous-aggregate refresh);
    TimescaleDB runs one scheduler per database with the extension, plus one launcher. Jobs that find no
    free slot do not start (seen with PostgreSQL's default of 8 worker processes).
    """

    databases: int = 4  # hub, postgres, and room for a test or scratch database
    concurrent_jobs: int = 16
    parallel_workers: int = 2  # parallel query workers (max_parallel_workers); the local stack runs on few cores


def libraries_to_preload(installed: Iterable[str]) -> list[str]:
    """The libraries of PRELOADABLE that are installed, in PRELOADABLE's order."""
    have = set(installed)
    return [name for name in PRELOADABLE if name in have]


def timescaledb_workers(budget: WorkerBudget) -> dict[str, str]:
    """TimescaleDB's advice: background workers = databases + concurrent jobs; worker processes = those +
    parallel workers (+ its launcher and PostgreSQL's logical replication launcher)."""
    background = budget.databases + budget.concurrent_jobs
    return {
        "timescaledb.max_background_workers": str(background),
        "max_parallel_workers": str(budget.parallel_workers),
        "max_worker_processes": str(background + budget.parallel_workers + 2),
    }


def server_settings(preload: list[str], budget: WorkerBudget = WorkerBudget()) -> dict[str, str]:
    # 4x PostgreSQL's default lock table: one `hub apply` is one transaction, holding ~10 locks per new
    # feed table until it commits (hub/control/size.py); this lets about 1,970 new feeds through at once.
    settings = {"listen_addresses": "127.0.0.1", "max_connections": "200", "max_locks_per_transaction": "256"}
    if preload:
        settings["shared_preload_libraries"] = ",".join(preload)
    if "timescaledb" in preload:
        settings.update(timescaledb_workers(budget))
        settings["timescaledb.telemetry_level"] = "off"
    if "pgaudit" in preload:
        # Read auditing of organisation roles (hub audit): the log is also written as jsonlog files under
        # the data directory's log/, which `hub audit` reads back. Without pgaudit the hub runs the same,
        # and `hub audit` says that read auditing is off.
        settings.update({"logging_collector": "on", "log_destination": "stderr,jsonlog"})
    return settings


def postgres_options(port: int, socket_dir: Path, settings: Mapping[str, str]) -> str:
    """The `pg_ctl -o` string. pg_ctl runs it through a shell: values are plain words, never quoted input."""
    for key, value in settings.items():
        if not all(c.isalnum() or c in "._-,/" for c in key + value):
            raise ValueError(f"unsafe PostgreSQL setting {key}={value!r}")
    return " ".join([f"-p {port}", f"-k {socket_dir}", *(f"-c {k}={v}" for k, v in settings.items())])


def installed_libraries(pg_config: str) -> set[str]:
    """The shared libraries in the server's library directory (`pg_config --pkglibdir`), by name."""
    result = subprocess.run([pg_config, "--pkglibdir"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return set()
    return {p.stem for p in Path(result.stdout.strip()).glob("*.so")}
