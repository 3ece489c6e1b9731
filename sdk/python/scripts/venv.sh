#!/usr/bin/env bash
# Create sdk/python/.venv if missing and install requirements-dev.lock plus the
# package (editable). Skips pip when the lock file and pyproject.toml are
# unchanged since the last install (hash stamp in .venv).
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi

stamp="$VENV/.latchgate-lock.sha256"
want=$(cat requirements-dev.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.lock
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --no-deps --no-build-isolation -e .
    echo "$want" > "$stamp"
fi
