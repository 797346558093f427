# Cabildo: the two commands a newcomer needs are `make run` and `make test`.
GO       ?= go
ADDR     ?= :8080
DATA_DIR ?= data
TEST_TIMEOUT ?= 20m

.PHONY: run test test-deps build bench vet fmt clean

## run: start a node on the embedded default (in-process NATS JetStream + in-memory cache) with the demo event
run:
	$(GO) run ./cmd/cabildo serve --demo --addr $(ADDR) --data-dir $(DATA_DIR)

## test: install what the tests need (redis-server), then vet and run every test with the race detector
test: test-deps
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

test-deps:
	@scripts/test-deps

## build: build the binary into bin/
build:
	$(GO) build -trimpath -o bin/cabildo ./cmd/cabildo

## bench: measure REST reads and acknowledged writes on loopback (figures go to docs/benchmarks.md)
bench: build
	@scripts/bench

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin .bench
