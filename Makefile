# Strata. `make help` lists the targets.
GO        ?= go
TOOLS     := $(GO) tool -modfile=tools/go.mod
VERSION   ?= $(shell cat VERSION 2>/dev/null || echo 0.0.0-dev)
REVISION  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
BRANCH    ?= $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
LDFLAGS   := -X github.com/prometheus/common/version.Version=$(VERSION) \
             -X github.com/prometheus/common/version.Revision=$(REVISION) \
             -X github.com/prometheus/common/version.Branch=$(BRANCH)
# The README's test command: unit tests and the process-level end-to-end tests, ~30 minutes at most on 2 cores.
TEST_TIMEOUT ?= 30m
BENCH_TIME   ?= 1s

.PHONY: help build run test test-deps test-unit test-e2e bench lint format proto clean bench-write

help: ## Show this help.
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## Build bin/strata.
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/strata ./cmd/strata

run: ## Run Strata with its embedded defaults (all components, data under ./data).
	$(GO) run -ldflags '$(LDFLAGS)' ./cmd/strata all

test: ## Run every test: unit tests and the end-to-end tests that start the real binary (needs memcached, curl).
	@bash scripts/test-deps.sh
	$(GO) test -timeout $(TEST_TIMEOUT) -count=1 ./...

test-deps: ## Install what the tests and `make proto` need (apt-get, as root): memcached, curl, git, protoc.
	bash scripts/test-deps.sh --install --proto

test-unit: ## Run the unit tests only.
	@bash scripts/test-deps.sh
	$(GO) test -timeout $(TEST_TIMEOUT) -count=1 $$($(GO) list ./... | grep -v /test/e2e)

FUZZ_TIME ?= 30s

test-e2e: ## Run the end-to-end tests, then short bounded fuzz runs of remote-write decoding (1.0, 2.0) and validation, of the ingester's gRPC write (its handler, its decoder of the forward RPC, its compressed write), of the HA tracker's KV codec and of the OTLP handler.
	@bash scripts/test-deps.sh
	$(GO) test -timeout $(TEST_TIMEOUT) -count=1 -v ./test/e2e/...
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeValidate$$' -fuzztime $(FUZZ_TIME) ./pkg/receive/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeV2$$' -fuzztime $(FUZZ_TIME) ./pkg/receive/
	$(GO) test -run '^$$' -fuzz '^FuzzIngesterRemoteWrite$$' -fuzztime $(FUZZ_TIME) ./pkg/receive/
	$(GO) test -run '^$$' -fuzz '^FuzzForwardedWrite$$' -fuzztime $(FUZZ_TIME) ./pkg/receive/
	$(GO) test -run '^$$' -fuzz '^FuzzCompressedWrite$$' -fuzztime $(FUZZ_TIME) ./pkg/receive/
	$(GO) test -run '^$$' -fuzz '^FuzzHAReplicaCodec$$' -fuzztime $(FUZZ_TIME) ./pkg/receive/
	$(GO) test -run '^$$' -fuzz '^FuzzOTLPHandler$$' -fuzztime $(FUZZ_TIME) ./pkg/receive/

bench: ## Run the benchmarks (not part of `make test`), then the store-gateway's process-level benchmark.
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCH_TIME) -timeout 90m ./...
	# The line above runs pkg/query's BenchmarkGatewayStartup and BenchmarkGateway7DayRange (gateway vs Prometheus,
	# in process); this one the same against the real binaries: strata store-gateway vs prometheus over 1,000 blocks.
	# It also runs pkg/compact's BenchmarkCompact_RF3 (Strata's compaction cycle vs Prometheus's LeveledCompactor
	# over the blocks of 3 ingesters; `make bench-compact` runs it alone) and BenchmarkNormalise.
	bash scripts/bench-gateway.sh

.PHONY: bench-write-allocs
BENCH_ALLOCS_TIME ?= 20x
bench-write-allocs: ## Write-path allocations alone: the ingester's gRPC write and the distributor's split (allocs/sample, B/sample, ns/sample); compare two commits' output with benchstat.
	$(GO) test -run '^$$' -bench '^Benchmark(IngesterRemoteWrite|DistributorSplit)$$' -benchmem -benchtime $(BENCH_ALLOCS_TIME) -count 6 ./pkg/receive/

.PHONY: bench-write-layers
bench-write-layers: ## The ingester's write path layer by layer over 100k series: Prometheus's head alone, Ingester.Push, the gRPC write (ns/sample each; the head's is the floor).
	$(GO) test -run '^$$' -bench '^BenchmarkIngesterLayers$$' -benchmem -benchtime 2000x -count 6 ./pkg/receive/

.PHONY: bench-write-memory
bench-write-memory: ## The memory floor of the write soak: Prometheus's head alone vs Ingester.Push, fed what each ingester stores in 10 minutes of bench-write (KB/series live, at GOGC 20, RSS; BENCH_MEMORY_ROUNDS samples per series, default 1800).
	$(GO) test -run '^$$' -bench '^BenchmarkIngesterMemory$$' -benchtime 1x -timeout 60m ./pkg/receive/

.PHONY: bench-compact
bench-compact: ## Compaction benchmark alone: RF-3 blocks compacted by Strata's cycle vs Prometheus's tsdb compactor (samples/s, ratio, peak RSS).
	$(GO) test -run '^$$' -bench '^Benchmark(Compact_RF3|Normalise)$$' -benchtime $(BENCH_TIME) ./pkg/compact/

lint: ## go vet, then golangci-lint (bans github.com/pkg/errors, prometheus.DefaultRegisterer, fmt.Print* in pkg/).
	# -stdmethods=false: Prometheus's chunkenc.Iterator has Seek(int64) ValueType, which is not io.Seeker.
	$(GO) vet -stdmethods=false ./...
	$(TOOLS) golangci-lint run ./...

format: ## Format the code.
	$(TOOLS) golangci-lint fmt ./...

proto: ## Regenerate the StoreAPI code from the .proto files (needs apt-get install protobuf-compiler libprotobuf-dev).
	@bash scripts/test-deps.sh --proto
	bash scripts/genproto.sh

clean: ## Remove build output.
	rm -rf bin

BENCH_SETUP ?= both

bench-write: ## Write benchmark (not a test): load tool vs `strata all` (RF 1) and distributor + 3 ingesters (RF 3), per-process CPU per sample, KB/series; BENCH_SETUP=rf1|rf3|both, BENCH_DURATION, BENCH_SERIES, BENCH_RUNS (3, medians), BENCH_BASELINE=REV (ratios to that commit), BENCH_PPROF=DIR (profiles); more in scripts/bench-write.sh.
	bash scripts/bench-write.sh $(BENCH_SETUP)
