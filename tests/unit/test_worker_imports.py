"""A worker process loads only what its kind uses: every module it imports costs resident memory in
every worker (issue 18). Each check runs in a fresh interpreter, as `hub run` starts its workers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hub.worker_registry import KINDS

# The CLI, the HTTP API and its server, the Avro compatibility checker, the catalog's RDF, Grafana.
NEVER_IN_A_WORKER = (
    "typer", "click", "rich", "hub.cli", "hub.api", "starlette", "uvicorn", "httpx",
    "avro.compatibility", "hub.schema.compatibility", "hub.control", "rdflib", "grafana_foundation_sdk",
)  # fmt: skip


def loaded_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return set(json.loads(out.stdout.splitlines()[-1]))


def forbidden(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_worker_process_never_loads_the_cli_the_http_api_or_the_compatibility_checker(kind: str) -> None:
    module, _, cls = KINDS[kind].worker.partition(":")
    modules = loaded_after(f"import hub.worker_process\nimport {module}\nassert {module}.{cls}")
    assert forbidden(modules, NEVER_IN_A_WORKER) == []


def test_the_run_supervisor_loads_no_settings_model_no_openssl_and_no_psutil() -> None:
    # It only starts and watches worker processes: pydantic, libcrypto (hashlib) and psutil (it reads a process's
    # start time from /proc) would cost it more than it needs in all.
    modules = loaded_after("import hub.supervise")
    never = (*NEVER_IN_A_WORKER, "pydantic", "hub.settings", "hashlib", "_hashlib", "ssl", "psutil")
    assert forbidden(modules, never) == []


@pytest.mark.parametrize("kind", ["ingest", "land"])
def test_ingest_and_landing_workers_load_no_validation_library(kind: str) -> None:
    # They read settings and applied feeds as plain dataclasses: pydantic would cost each worker about 12 MB.
    module, _, cls = KINDS[kind].worker.partition(":")
    modules = loaded_after(f"import hub.worker_process\nimport {module}\nassert {module}.{cls}")
    assert forbidden(modules, ("pydantic", "pydantic_core", "pydantic_settings")) == []
