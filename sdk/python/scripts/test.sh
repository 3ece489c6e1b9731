#!/usr/bin/env bash
# Lint, type-check and test the Python SDK in sdk/python/.venv (see venv.sh).
# Extra arguments go to pytest. Set LATCHGATE_TEST_SOCKET to also run the
# integration tests against a real gate.
set -euo pipefail

cd "$(dirname "$0")/.."
scripts/venv.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy src tests examples
.venv/bin/pytest -q "$@"
