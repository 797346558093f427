# Cabildo: the two commands a newcomer needs are `make run` and `make test`.
GO       ?= go
# Loopback: a development node is for this machine. ADDR=:8080 make run opens it to the network.
ADDR     ?= 127.0.0.1:8080
DATA_DIR ?= data
TEST_TIMEOUT ?= 20m
STATICCHECK  ?= v0.8.2

.PHONY: run test test-deps lint build bench bench-reads bench-coldstart vet fmt clean

## run: build, then start a node on the embedded default (in-process NATS JetStream + in-memory cache) with the demo event
# exec makes the server make's own child, not a grandchild behind `go run` or a shell: Ctrl-C
# reaches it directly and it exits 0 after shutting down (no "Error 1"), and the SIGTERM make
# passes to its children on being terminated reaches the server itself.
run: build
	exec bin/cabildo serve --demo --addr $(ADDR) --data-dir $(DATA_DIR)

## test: install what the tests need (redis-server, curl, jq), lint, then run every test with the race detector
test: test-deps lint
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) ./...

## lint: gofmt, go vet and staticcheck (fetched through the Go module proxy at a pinned version)
lint:
	@unformatted=$$(gofmt -l cmd internal pkg mobile-api); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK) ./...

test-deps:
	@scripts/test-deps

## build: build the binary into bin/
build:
	$(GO) build -trimpath -buildvcs=auto -o bin/cabildo ./cmd/cabildo

## bench: measure REST reads and acknowledged writes on loopback (figures go to docs/benchmarks.md)
bench: build
	@scripts/bench

## bench-reads: the schedule read against nginx and the Go floor (needs nginx and wrk)
bench-reads: build
	@scripts/bench-reads

## bench-coldstart: a node's start from a 1,000,000-entry log and from a Redis snapshot
bench-coldstart: build
	@scripts/bench-coldstart

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin .bench
