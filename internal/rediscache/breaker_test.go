package rediscache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/cabildo/cabildo/internal/ratelimit"
	"github.com/cabildo/cabildo/internal/redistest"
)

// callerKey marks the contexts of the calls a test makes, so callWitness counts what
// those calls send to Redis and nothing else (not the breaker's own probes).
type callerKey struct{}

func callerContext(t *testing.T) context.Context {
	return context.WithValue(t.Context(), callerKey{}, true)
}

// callWitness counts the commands and dials go-redis makes for a caller's context. It is the
// test's own witness, installed on the client from outside the code under test, so the
// assertion "no network call while the breaker is open" does not trust the Cache's own
// counting.
type callWitness struct{ n atomic.Int64 }

func witness(c *Cache) *callWitness {
	w := &callWitness{}
	c.rdb.AddHook(w)
	return w
}

func (w *callWitness) count(ctx context.Context, n int) {
	if ctx.Value(callerKey{}) != nil {
		w.n.Add(int64(n))
	}
}

func (w *callWitness) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		w.count(ctx, 1)
		return next(ctx, network, addr)
	}
}

func (w *callWitness) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		w.count(ctx, 1)
		return next(ctx, cmd)
	}
}

func (w *callWitness) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		w.count(ctx, len(cmds))
		return next(ctx, cmds)
	}
}

// rateLimit is the one operation the outage tests add to ops: the shared rate limit.
func rateLimit(ctx context.Context, c *Cache) error {
	_, err := c.Allow(ctx, "ip:192.0.2.1", ratelimit.Limit{N: 1000, Per: time.Minute})
	return err
}

// allOps is every operation a node makes on its cache: reads (GetRendered then
// PutRendered), rate limits, snapshots and readiness.
var allOps = append(ops[:len(ops):len(ops)], struct {
	name string
	run  func(ctx context.Context, c *Cache) error
}{"Allow", rateLimit})

// warm runs every operation once against a healthy Redis, so the outage also meets pooled
// connections that were good.
func warm(t *testing.T, ctx context.Context, c *Cache) {
	t.Helper()
	for _, op := range allOps {
		if err := op.run(ctx, c); err != nil {
			t.Fatalf("%s with Redis up: %v", op.name, err)
		}
	}
}

// checkOpen is the breaker's promise once one operation has met the outage: every later
// operation fails at once and sends nothing to Redis, and rate limits fall back to this
// node's own count.
func checkOpen(t *testing.T, ctx context.Context, c *Cache, w *callWitness) {
	t.Helper()
	if c.Up() {
		t.Fatal("Up() after an operation found Redis unavailable = true; want false")
	}
	before, stats := w.n.Load(), c.Stats()
	for round := range 3 {
		for _, op := range allOps {
			start := time.Now()
			err := op.run(ctx, c)
			if elapsed := time.Since(start); elapsed > maxOutageWait {
				t.Errorf("round %d: %s with the breaker open took %s; want < %s", round, op.name, elapsed, maxOutageWait)
			}
			if !errors.Is(err, ErrUnavailable) || !strings.HasPrefix(err.Error(), "rediscache: ") {
				t.Errorf("round %d: %s with the breaker open = %v; want rediscache: ... ErrUnavailable", round, op.name, err)
			}
		}
	}
	// A flooding device is still held back, by this node alone.
	f := &ratelimit.Fallback{Shared: c, Local: ratelimit.NewLocal()}
	lim := ratelimit.Limit{N: 2, Per: time.Minute}
	var allowed int
	for range 3 {
		if d, err := f.Allow(ctx, "attendee:flood", lim); err != nil {
			t.Errorf("Fallback.Allow: %v", err)
		} else if d.Allowed {
			allowed++
		}
	}
	if allowed != 2 || !f.Degraded() {
		t.Errorf("node-local fallback allowed %d of 3 (degraded %t); want 2 (degraded true)", allowed, f.Degraded())
	}
	if got := w.n.Load() - before; got != 0 {
		t.Errorf("calls sent to Redis while it was unavailable, after the first failure: %d; want 0", got)
	}
	// The Cache's own count, which metrics read, agrees with the witness.
	got := c.Stats()
	want := Stats{Commands: stats.Commands, Refused: stats.Refused + uint64(3*len(allOps)+3), Opened: 1}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("Stats() while the breaker is open (-got +want):\n%s", diff)
	}
}

// checkBack waits until the Cache uses Redis again, polling, and checks that operations
// reach it.
func checkBack(t *testing.T, ctx context.Context, c *Cache, w *callWitness) {
	t.Helper()
	waitFor(t, 10*time.Second, func() error {
		if !c.Up() {
			return errors.New("breaker still open")
		}
		return nil
	})
	before, stats := w.n.Load(), c.Stats()
	warm(t, ctx, c)
	if got := w.n.Load() - before; got < int64(len(allOps)) {
		t.Errorf("calls sent to Redis by %d operations after it came back: %d; want at least %d", len(allOps), got, len(allOps))
	}
	if got := c.Stats().Commands - stats.Commands; got < uint64(len(allOps)) {
		t.Errorf("Stats().Commands grew by %d over %d operations after Redis came back; want at least %d", got, len(allOps), len(allOps))
	}
}

// TestBreakerHungRedis is a hung Redis (SIGSTOP): the first operation pays at most
// one timeout, every later one is answered by the node without touching Redis, and the
// Cache uses Redis again once it answers.
func TestBreakerHungRedis(t *testing.T) {
	srv := redistest.Start(t)
	var logs lockedBuffer
	// Default OpTimeout, as in production.
	c := newCache(t, Options{URL: srv.URL(), Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	w := witness(c)
	ctx := callerContext(t)
	warm(t, ctx, c)

	srv.Suspend(t)
	// Reads in flight when Redis hangs each pay their own timeout, once; they open the
	// breaker once between them.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			start := time.Now()
			if _, _, err := c.GetRendered(ctx, "r"); err == nil {
				t.Error("GetRendered with Redis hung: no error")
			}
			if elapsed := time.Since(start); elapsed > maxOutageWait {
				t.Errorf("first GetRendered with Redis hung took %s; want < %s", elapsed, maxOutageWait)
			}
		})
	}
	wg.Wait()
	checkOpen(t, ctx, c, w)

	srv.Resume(t)
	checkBack(t, ctx, c, w)
	// One line each way, none per request.
	waitFor(t, 10*time.Second, func() error {
		down, back := logs.count("redis unavailable"), logs.count("redis answers again")
		if down != 1 || back != 1 {
			return fmt.Errorf("log lines: %d on opening, %d on closing; want 1 and 1:\n%s", down, back, logs.String())
		}
		return nil
	})
}

// TestBreakerStaysClosed: only an unreachable Redis opens the breaker, not a miss, an error
// reply, or a caller that gave up.
func TestBreakerStaysClosed(t *testing.T) {
	srv := redistest.Start(t)
	c := newCache(t, Options{URL: srv.URL(), OpTimeout: suiteOpTimeout})
	ctx := t.Context()
	if err := rawClient(t, srv).Set(ctx, DefaultPrefix+"snapshot:junk", "x", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	tests := []struct {
		name string
		run  func() error
	}{
		{"miss", func() error {
			if _, ok, err := c.GetRendered(ctx, "missing"); ok || err != nil {
				return fmt.Errorf("found %t, %v", ok, err)
			}
			return nil
		}},
		{"error reply", func() error {
			if _, _, err := c.LoadSnapshot(ctx, "junk"); err == nil {
				return errors.New("LoadSnapshot of a string: no error")
			}
			return nil
		}},
		{"cancelled caller", func() error {
			if err := c.Ping(cancelled); !errors.Is(err, context.Canceled) {
				return fmt.Errorf("Ping = %v; want context.Canceled", err)
			}
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.run(); err != nil {
				t.Fatal(err)
			}
			if !c.Up() || c.Stats().Opened != 0 {
				t.Errorf("breaker opened (Up %t, %+v); want closed", c.Up(), c.Stats())
			}
		})
	}
}

// lockedBuffer collects log lines written by the Cache's goroutines while the test reads.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *lockedBuffer) count(s string) int { return strings.Count(b.String(), s) }

// TestBreakerKilledRedis is a dead Redis (SIGKILL), restarted on the same port.
func TestBreakerKilledRedis(t *testing.T) {
	srv := redistest.Start(t)
	c := newCache(t, Options{URL: srv.URL()})
	w := witness(c)
	ctx := callerContext(t)
	warm(t, ctx, c)

	srv.Kill()
	if _, _, err := c.GetRendered(ctx, "r"); err == nil {
		t.Fatal("GetRendered with Redis killed: no error")
	}
	checkOpen(t, ctx, c, w)

	srv.Restart(t)
	checkBack(t, ctx, c, w)
}

// BenchmarkGetRendered is what one cache lookup costs a read: with Redis up (a round trip
// on loopback), and with Redis hung once the breaker is open (no network at all).
func BenchmarkGetRendered(b *testing.B) {
	srv := redistest.Start(b)
	c, err := New(b.Context(), Options{URL: srv.URL()})
	if err != nil {
		b.Fatalf("New: %v", err)
	}
	b.Cleanup(func() { _ = c.Close() })
	if err := c.PutRendered(b.Context(), "r", make([]byte, 4096), time.Hour); err != nil {
		b.Fatalf("PutRendered: %v", err)
	}
	b.Run("up", func(b *testing.B) {
		for b.Loop() {
			if _, ok, err := c.GetRendered(b.Context(), "r"); !ok || err != nil {
				b.Fatalf("GetRendered = %t, %v", ok, err)
			}
		}
	})
	b.Run("hung", func(b *testing.B) {
		srv.Suspend(b)
		defer srv.Resume(b)
		for b.Loop() {
			if _, _, err := c.GetRendered(b.Context(), "r"); err == nil {
				b.Fatal("GetRendered with Redis hung: no error")
			}
		}
	})
}
