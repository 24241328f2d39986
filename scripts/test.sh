#!/usr/bin/env bash
# The test command: set up what is missing, check lint and types, check the compose
# file, then run every test against real servers started by the harness.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy hub
docker-compose -f docker-compose.yml config -q
.venv/bin/pytest -q "$@"
