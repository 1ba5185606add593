# backupfs — see README.md. Every target works on a fresh machine once Go
# is installed (the tests also want fuse3 and attr; .ci/run installs what
# CI needs).

GO          ?= go
# Pinned, and fetched by go run on first use: any other staticcheck may
# judge the code differently.
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
VERSION     := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X main.version=$(VERSION)
BIN         := bin/backupfs
FUZZTIME    ?= 10s

.PHONY: all build install test lint bench fuzz demo clean

all: build

build:
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/backupfs

install:
	$(GO) install -trimpath -ldflags "$(LDFLAGS)" ./cmd/backupfs

# The whole gate: formatting, vet, staticcheck, and every test under the
# race detector.
test: lint
	$(GO) test -race -count=1 ./...

lint:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

# Every benchmark: the Go benchmarks of each package (throughput and
# allocations), then the end-to-end suite of internal/bench (real mounts
# against an in-memory ceiling and the machine's limits), which prints a
# table and writes bench/results.md. The suite needs root and generates its
# repositories once, in $(BENCH_DIR).
BENCH_DIR   ?= /var/tmp/backupfs-bench
BENCH_FLAGS ?=
bench: build
	$(GO) build -o bin/ceilingfs ./internal/bench/cmd/ceilingfs
	$(GO) test -run '^$$' -bench . -benchmem -count=1 ./...
	$(GO) run ./internal/bench/cmd/bench -backupfs $(BIN) -ceilingfs bin/ceilingfs \
		-work $(BENCH_DIR) -out bench/results.md -version $(VERSION) $(BENCH_FLAGS)

# Every fuzz target for FUZZTIME each (make fuzz FUZZTIME=5m for longer).
fuzz:
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

demo: build
	scripts/demo.sh $(BIN)

clean:
	rm -rf bin
