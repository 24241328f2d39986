#!/usr/bin/env bash
# The test command: set up what is missing, check lint, types and the import floors (pyproject.toml),
# then run every test
# (the compose file is checked by tests/integration/test_compose.py) against real servers
# that the harness starts.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy hub
.venv/bin/lint-imports --no-cache
# Three test processes (pytest-xdist), each with a stack of its own, a test module per process at a time: the
# integration tests mostly wait for servers, so on 2 cores three processes take about half the time of one.
.venv/bin/pytest -q -n "${HUB_TEST_PROCESSES:-3}" --dist loadfile "$@"
