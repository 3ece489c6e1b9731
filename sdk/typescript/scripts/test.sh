#!/usr/bin/env bash
# Installs devDependencies when needed, builds (tsc) and runs the tests with
# node's built-in test runner over the compiled output. Needs only Node ≥ 18
# and the npm registry. Set LATCHGATE_TEST_SOCKET to also run the integration
# test against a real gate.
set -euo pipefail
cd "$(dirname "$0")/.."

stamp=node_modules/.latchgate-lock-stamp
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -d node_modules || ! -f $stamp || "$(cat "$stamp")" != "$want" ]]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi

rm -rf dist
npm run --silent build
npm run --silent typecheck
npm run --silent check-readme
node --test dist/test/*.test.js
