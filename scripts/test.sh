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
.venv/bin/pytest -q "$@"
