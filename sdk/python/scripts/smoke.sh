#!/usr/bin/env bash
# Run examples/smoke_test.py against a running gate with the SDK's venv.
# Needs LATCHGATE_SOCKET; see examples/smoke_test.py for the other variables.
set -euo pipefail

cd "$(dirname "$0")/.."
scripts/venv.sh
exec .venv/bin/python examples/smoke_test.py "$@"
