# LatchGate build and test entry points. `make run` starts a dev gate;
# `make test` runs every test and installs what it needs (Go modules,
# redis-server via apt-get, Python and npm packages into local envs).
GO        ?= go
BIN       := bin/latchgate
DEV_STATE ?= .dev/state
FUZZTIME  ?= 30s
SOAK_DURATION ?= 5m
GOTESTFLAGS ?=

export LATCHGATE_REQUIRE_REDIS ?= 1

.PHONY: all build run test test-go test-policy test-sdk test-sdk-go test-sdk-python \
        test-sdk-typescript test-smoke test-faults bench bench-gate fuzz soak lint clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/latchgate

## run: a local dev gate (embedded store, no Redis, no Docker).
run: build
	./$(BIN) serve --dev --state-dir $(DEV_STATE)

## test: every test, as CI runs it. test-go runs the fault-injection,
## concurrency, hostile-input tests and every fuzz target's seed corpus too.
test: test-go test-policy test-sdk test-smoke

test-go:
	./scripts/ensure-redis.sh
	$(GO) vet ./...
	$(GO) test -race -count=1 $(GOTESTFLAGS) ./...

test-policy: build
	./$(BIN) policy test

# SDK_LANGS selects the SDKs for test-sdk and test-smoke.
SDK_LANGS ?= go python typescript

test-sdk: $(patsubst %,test-sdk-%,$(SDK_LANGS))

test-sdk-go:
	$(GO) test -race -count=1 ./sdk/...

test-sdk-python:
	./sdk/python/scripts/test.sh

test-sdk-typescript:
	./sdk/typescript/scripts/test.sh

## test-smoke: a real gate in a temp dir, driven by all three SDKs.
test-smoke: build
	./scripts/smoke.sh $(SDK_LANGS)

## test-faults: only the fault-injection, concurrency and hostile-input
## tests (Redis killed/paused/emptied, ledger write failures, kill -9,
## upstream faults, races, the hostile corpus). make test runs them too.
FAULT_TESTS := Ledger|Redis|Kill9|Upstream|OneProof|BudgetRace|IdempotencyKeyRace|RevokeRaces|Hostile|HeaderFlood|SlowClient|ConnectionCap|StartsBeforeRedis
test-faults:
	./scripts/ensure-redis.sh
	$(GO) test -race -count=1 -run '$(FAULT_TESTS)' ./gate/ ./actions/ ./cmd/latchgate/

## soak: a steady load on the real binary for SOAK_DURATION (not in CI);
## reports RSS, goroutines, threads, open files and latency per interval.
soak:
	LATCHGATE_SOAK_DURATION=$(SOAK_DURATION) $(GO) test -count=1 -timeout 0 -run '^TestSoak$$' -v ./cmd/latchgate/

## bench: Go micro-benchmarks of the hot path.
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 1s ./lease/ ./store/ ./policy/ ./receipts/ ./gate/

## bench-gate: end-to-end figures (BENCHMARKS.md): embedded, full speed and 1,000 req/s.
BENCH_DURATION ?= 10s
bench-gate: build
	./$(BIN) bench --duration $(BENCH_DURATION)
	./$(BIN) bench --duration $(BENCH_DURATION) --rate 1000

## fuzz: run every fuzz target for FUZZTIME each.
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

lint:
	gofmt -l . | (! grep .)
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

clean:
	rm -rf bin .dev
