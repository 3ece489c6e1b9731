#!/usr/bin/env bash
# Runs the compiled smoke test against a running gate (make test-smoke).
# Env: LATCHGATE_SOCKET, LATCHGATE_ADMIN_SOCKET, LATCHGATE_BIN,
# LATCHGATE_SMOKE_APPROVALS=1 to include the approval check.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=node_modules/.latchgate-lock-stamp
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -d node_modules || ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi
if [[ ! -f dist/examples/smoke_test.js || -n "$(find src examples -newer dist/examples/smoke_test.js -name '*.ts' -print -quit)" ]]; then
  npm run --silent build
fi
exec node dist/examples/smoke_test.js
