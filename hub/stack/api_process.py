"""The API as the local stack's fourth managed process (`hub stack up | down | status`).

Kept free of Starlette and uvicorn imports: `hub stack` only starts, finds and probes the process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx

from hub.stack.process import ManagedProcess

# What the live process's command line contains (`<python> -m hub serve --port N`).
MARKER = "hub serve"


def api_process(state_dir: Path) -> ManagedProcess:
    return ManagedProcess("api", state_dir / "api", MARKER)


def start_api(state_dir: Path, port: int, agreements_dir: str | None = None) -> ManagedProcess:
    """`hub serve` on 127.0.0.1:`port`, reading the catalog of the stack in `state_dir` (and writing approved
    access requests' agreements to `agreements_dir`: the process runs in a directory of its own)."""
    proc = api_process(state_dir)
    env = {"HUB_STATE_DIR": str(state_dir)}
    if agreements_dir:
        env["HUB_AGREEMENTS_DIR"] = agreements_dir
    proc.start([sys.executable, "-m", "hub", "serve", "--host", "127.0.0.1", "--port", str(port)], env=env)
    return proc


def api_check(base_url: str, timeout_s: float = 5.0) -> str:
    """GET /health; returns a one-line detail or raises."""
    response = httpx.get(f"{base_url.rstrip('/')}/health", timeout=timeout_s)
    body = response.json()
    if response.status_code != 200:
        raise ConnectionError(f"/health answered {response.status_code}: {body.get('database', body)}")
    return f"catalog, page and schema registry, {body['subjects']} subjects"
