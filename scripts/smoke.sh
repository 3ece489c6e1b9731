#!/usr/bin/env bash
# make test-smoke: start a real gate in a temp dir and drive it with each
# SDK's smoke test (lease, execute, receipt verification, an approval
# approved through the CLI, a policy denial, budget exhaustion, renewal).
# Usage: scripts/smoke.sh [go] [python] [typescript]   (default: all)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
sdks=("$@")
[ ${#sdks[@]} -eq 0 ] && sdks=(go python typescript)

go build -o bin/latchgate ./cmd/latchgate
tmp="$(mktemp -d)"
log="$tmp/gate.log"
cleanup() {
  if [ -n "${gate_pid:-}" ] && kill -0 "$gate_pid" 2>/dev/null; then
    kill -TERM "$gate_pid" 2>/dev/null || true
    wait "$gate_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

export LATCHGATE_SOCKET="$tmp/run/gate.sock"
export LATCHGATE_ADMIN_SOCKET="$tmp/run-admin/admin.sock"
export LATCHGATE_BIN="$root/bin/latchgate"
export LATCHGATE_SMOKE_APPROVALS=1
# Smoke tests prove behaviour, not latency (a loaded machine must not turn a
# slow policy evaluation into a correct but unwanted 503).
export LATCHGATE_POLICY_TIMEOUT=10s
# The held action every SDK's approval check uses: a local high-risk echo
# (testdata/smoke-manifests), so approval needs no network.
export LATCHGATE_SMOKE_HELD_ACTION=echo_held
export LATCHGATE_SMOKE_HELD_ARGS='{"ship":"it"}'
./bin/latchgate serve --dev --socket "$LATCHGATE_SOCKET" --admin-socket "$LATCHGATE_ADMIN_SOCKET" \
  --state-dir "$tmp/state" --manifests-dir "$root/testdata/smoke-manifests" >"$log" 2>&1 &
gate_pid=$!
for _ in $(seq 1 100); do
  if [ -S "$LATCHGATE_SOCKET" ] && ./bin/latchgate status --admin-socket "$LATCHGATE_ADMIN_SOCKET" >/dev/null 2>&1; then
    break
  fi
  sleep 0.1
done
./bin/latchgate status --admin-socket "$LATCHGATE_ADMIN_SOCKET" >/dev/null || { cat "$log"; exit 1; }

fail=0
for sdk in "${sdks[@]}"; do
  echo "== smoke: $sdk SDK"
  case "$sdk" in
    go) go run ./sdk/examples/smoke_test || fail=1 ;;
    python) ./sdk/python/scripts/smoke.sh || fail=1 ;;
    typescript) ./sdk/typescript/scripts/smoke.sh || fail=1 ;;
    *) echo "unknown sdk $sdk"; fail=1 ;;
  esac
done

echo "== smoke: ledger verification"
./bin/latchgate receipts verify --admin-socket "$LATCHGATE_ADMIN_SOCKET" || fail=1
kill -TERM "$gate_pid"; wait "$gate_pid" || { echo "gate did not exit cleanly"; fail=1; }
gate_pid=""
./bin/latchgate receipts verify --state-dir "$tmp/state" || fail=1
if [ "$fail" != 0 ]; then
  echo "--- gate log (tail)"; tail -50 "$log"
  exit 1
fi
echo "smoke: all SDKs passed"
