package rediscache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/cachetest"
	"github.com/cabildo/cabildo/internal/redistest"
)

var _ cachetest.Cache = (*Cache)(nil)

// suiteOpTimeout is generous for the conformance suite, which checks semantics, not
// latency: under -race on a busy machine a 1 MiB round trip can exceed the 50 ms default.
// The outage tests use the default.
const suiteOpTimeout = time.Second

func newCache(t *testing.T, opts Options) *Cache {
	t.Helper()
	c, err := New(t.Context(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// rawClient talks to the server directly, as an operator would, behind the Cache's back.
func rawClient(t *testing.T, srv *redistest.Server) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatalf("ParseURL: %v", err)
	}
	rdb := redis.NewClient(o)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func TestConformance(t *testing.T) {
	srv := redistest.Start(t)
	var n atomic.Int64
	cachetest.Run(t, func(t *testing.T) cachetest.Cache {
		// A prefix per subtest keeps them apart on one server.
		return newCache(t, Options{URL: srv.URL(), Prefix: fmt.Sprintf("test%d:", n.Add(1)), OpTimeout: suiteOpTimeout})
	})
}

func TestKeysArePrefixed(t *testing.T) {
	srv := redistest.Start(t)
	c := newCache(t, Options{URL: srv.URL(), OpTimeout: suiteOpTimeout})
	ctx := t.Context()
	if _, err := c.StoreSnapshot(ctx, "schedule:ogp", cabildo.Snapshot{Seq: 1, Log: "log-a"}); err != nil {
		t.Fatalf("StoreSnapshot: %v", err)
	}
	if err := c.PutRendered(ctx, "schedule:ogp:1:es:ics", []byte("v"), time.Minute); err != nil {
		t.Fatalf("PutRendered: %v", err)
	}
	keys, err := rawClient(t, srv).Keys(ctx, "*").Result()
	if err != nil {
		t.Fatalf("KEYS: %v", err)
	}
	slices.Sort(keys)
	want := []string{"cabildo:rendered:schedule:ogp:1:es:ics", "cabildo:snapshot:schedule:ogp"}
	if diff := cmp.Diff(keys, want); diff != "" {
		t.Errorf("keys in Redis (-got +want):\n%s", diff)
	}
}

// TestFlushAll is scenario B10's first half: flushing Redis loses nothing the cache promised,
// it only turns hits into misses.
func TestFlushAll(t *testing.T) {
	srv := redistest.Start(t)
	c := newCache(t, Options{URL: srv.URL(), OpTimeout: suiteOpTimeout})
	ctx := t.Context()
	if _, err := c.StoreSnapshot(ctx, "schedule:ogp", cabildo.Snapshot{Seq: 100, Log: "log-a", Data: []byte("x")}); err != nil {
		t.Fatalf("StoreSnapshot: %v", err)
	}
	if err := c.PutRendered(ctx, "r", []byte("v"), time.Minute); err != nil {
		t.Fatalf("PutRendered: %v", err)
	}
	if err := rawClient(t, srv).FlushAll(ctx).Err(); err != nil {
		t.Fatalf("FLUSHALL: %v", err)
	}

	if s, ok, err := c.LoadSnapshot(ctx, "schedule:ogp"); err != nil || ok {
		t.Errorf("LoadSnapshot after FLUSHALL = %+v, %t, %v; want not found, no error", s, ok, err)
	}
	if b, ok, err := c.GetRendered(ctx, "r"); err != nil || ok {
		t.Errorf("GetRendered after FLUSHALL = %q, %t, %v; want not found, no error", b, ok, err)
	}
	// The flushed seq no longer holds back a rebuilt snapshot, even a lower one.
	stored, err := c.StoreSnapshot(ctx, "schedule:ogp", cabildo.Snapshot{Seq: 1, Log: "log-a"})
	if err != nil || !stored {
		t.Errorf("StoreSnapshot after FLUSHALL = %t, %v; want true, no error", stored, err)
	}
}

// TestMalformedEntryHeals: whatever sits under a snapshot key (a planted string, a hash from
// another version), loading reports it and the next store replaces it.
func TestMalformedEntryHeals(t *testing.T) {
	tests := []struct {
		name  string
		plant func(ctx context.Context, rdb *redis.Client, key string) error
	}{
		{"string", func(ctx context.Context, rdb *redis.Client, key string) error {
			return rdb.Set(ctx, key, "junk", 0).Err()
		}},
		{"hash without seq", func(ctx context.Context, rdb *redis.Client, key string) error {
			return rdb.HSet(ctx, key, "log", "log-a", "data", "x").Err()
		}},
		{"hash with bad seq", func(ctx context.Context, rdb *redis.Client, key string) error {
			return rdb.HSet(ctx, key, "seq", "ninety", "log", "log-a", "data", "x").Err()
		}},
	}
	srv := redistest.Start(t)
	rdb := rawClient(t, srv)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := t.Context()
			prefix := fmt.Sprintf("malformed%d:", i)
			c := newCache(t, Options{URL: srv.URL(), Prefix: prefix, OpTimeout: suiteOpTimeout})
			if err := tt.plant(ctx, rdb, prefix+"snapshot:k"); err != nil {
				t.Fatalf("plant: %v", err)
			}
			if _, _, err := c.LoadSnapshot(ctx, "k"); err == nil {
				t.Errorf("LoadSnapshot of a malformed entry: no error")
			}
			want := cabildo.Snapshot{Seq: 1, Log: "log-a", Data: []byte("good")}
			if stored, err := c.StoreSnapshot(ctx, "k", want); err != nil || !stored {
				t.Fatalf("StoreSnapshot over a malformed entry = %t, %v; want true, no error", stored, err)
			}
			got, ok, err := c.LoadSnapshot(ctx, "k")
			if err != nil || !ok {
				t.Fatalf("LoadSnapshot after healing = found %t, %v", ok, err)
			}
			if diff := cmp.Diff(got, want); diff != "" {
				t.Errorf("healed snapshot (-got +want):\n%s", diff)
			}
		})
	}
}

// ops are every Cache operation, for the outage tests.
var ops = []struct {
	name string
	run  func(ctx context.Context, c *Cache) error
}{
	{"Ping", func(ctx context.Context, c *Cache) error { return c.Ping(ctx) }},
	{"LoadSnapshot", func(ctx context.Context, c *Cache) error {
		_, _, err := c.LoadSnapshot(ctx, "schedule:ogp")
		return err
	}},
	{"StoreSnapshot", func(ctx context.Context, c *Cache) error {
		_, err := c.StoreSnapshot(ctx, "schedule:ogp", cabildo.Snapshot{Seq: 2, Log: "log-a"})
		return err
	}},
	{"GetRendered", func(ctx context.Context, c *Cache) error {
		_, _, err := c.GetRendered(ctx, "r")
		return err
	}},
	{"PutRendered", func(ctx context.Context, c *Cache) error {
		return c.PutRendered(ctx, "r", []byte("v"), time.Minute)
	}},
}

// maxOutageWait is how long any operation may take while Redis is gone or stalled: the
// default OpTimeout (50 ms) plus slack for a loaded machine, far below a request's budget.
const maxOutageWait = time.Second

// checkAllFail runs every operation a few times (the first ones meet pooled connections to
// the dead server, later ones fresh dials) and wants each to fail fast.
func checkAllFail(t *testing.T, c *Cache, rounds int) {
	t.Helper()
	var slowest time.Duration
	defer func() { t.Logf("slowest failing operation: %s", slowest) }()
	for range rounds {
		for _, op := range ops {
			start := time.Now()
			err := op.run(t.Context(), c)
			elapsed := time.Since(start)
			slowest = max(slowest, elapsed)
			if err == nil {
				t.Errorf("%s with Redis unavailable: no error", op.name)
			} else if !strings.HasPrefix(err.Error(), "rediscache: ") {
				t.Errorf("%s error %q lacks the rediscache: context", op.name, err)
			}
			if elapsed > maxOutageWait {
				t.Errorf("%s with Redis unavailable took %s; want < %s", op.name, elapsed, maxOutageWait)
			}
		}
	}
}

// TestKilledRedis is scenario B9 at the adapter: a dead Redis costs each call a bounded
// error (the first one a timeout at most, the rest nothing: see breaker_test.go), and the
// same Cache works again once Redis is back (go-redis redials).
func TestKilledRedis(t *testing.T) {
	srv := redistest.Start(t)
	c := newCache(t, Options{URL: srv.URL()}) // default OpTimeout
	ctx := t.Context()
	// Fill the pool, so the outage also hits connections that were healthy.
	for _, op := range ops {
		if err := op.run(ctx, c); err != nil {
			t.Fatalf("%s before the outage: %v", op.name, err)
		}
	}

	srv.Kill()
	checkAllFail(t, c, 3)

	srv.Restart(t)
	// The breaker probes Redis about once a second, so recovery is polled for, within
	// B9's 10 s.
	waitFor(t, 10*time.Second, func() error { return c.Ping(ctx) })
	for _, op := range ops {
		if err := op.run(ctx, c); err != nil {
			t.Errorf("%s after restart: %v", op.name, err)
		}
	}
	// The restarted server has no data and no script cache: the store above had to fall
	// back from EVALSHA to EVAL, and what it stored must read back.
	s, ok, err := c.LoadSnapshot(ctx, "schedule:ogp")
	if err != nil || !ok || s.Seq != 2 {
		t.Errorf("LoadSnapshot after restart = %+v, %t, %v; want seq 2", s, ok, err)
	}
}

// TestStalledRedis is scenario B11 at the adapter: a Redis that stops answering on
// connections that were healthy must not hold callers past OpTimeout.
func TestStalledRedis(t *testing.T) {
	srv := redistest.Start(t)
	c := newCache(t, Options{URL: srv.URL()})
	ctx := t.Context()
	for _, op := range ops {
		if err := op.run(ctx, c); err != nil {
			t.Fatalf("%s before the stall: %v", op.name, err)
		}
	}
	// The pause ends by itself (UNPAUSE would be paused too); it is long enough for one
	// round of operations at OpTimeout each.
	const pause = 2 * time.Second
	if err := rawClient(t, srv).Do(ctx, "CLIENT", "PAUSE", pause.Milliseconds(), "ALL").Err(); err != nil {
		t.Fatalf("CLIENT PAUSE: %v", err)
	}
	start := time.Now()
	checkAllFail(t, c, 1)
	if time.Since(start) >= pause {
		t.Fatalf("checks outlasted the pause (%s); their results mean nothing", time.Since(start))
	}
	waitFor(t, 10*time.Second, func() error { return c.Ping(ctx) })
}

// TestUnresponsiveRedis: a server that accepts connections but never answers, not even the
// handshake, must not hold callers past OpTimeout either.
func TestUnresponsiveRedis(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return // listener closed by cleanup
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			wg.Go(func() { _, _ = io.Copy(io.Discard, conn) })
		}
	})
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for _, conn := range conns {
			_ = conn.Close()
		}
		mu.Unlock()
		wg.Wait()
	})

	c := newCache(t, Options{URL: "redis://" + l.Addr().String() + "/0"})
	checkAllFail(t, c, 3)
}

func TestCallerDeadlineStillApplies(t *testing.T) {
	srv := redistest.Start(t)
	c := newCache(t, Options{URL: srv.URL(), OpTimeout: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	// OpTimeout only shortens the caller's context, never extends it.
	if err := c.Ping(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Ping with a cancelled context = %v; want context.Canceled", err)
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		wantErr bool
	}{
		{name: "no URL", opts: Options{}, wantErr: true},
		{name: "bad scheme", opts: Options{URL: "http://127.0.0.1:6379"}, wantErr: true},
		{name: "bad port", opts: Options{URL: "redis://user:s3cret@127.0.0.1:port/0"}, wantErr: true},
		{name: "negative timeout", opts: Options{URL: "redis://127.0.0.1:6379/0", OpTimeout: -time.Second}, wantErr: true},
		{name: "valid", opts: Options{URL: "redis://127.0.0.1:1/0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(t.Context(), tt.opts)
			if (err != nil) != tt.wantErr {
				t.Fatalf("New(%+v) error = %v; want error %t", tt.opts, err, tt.wantErr)
			}
			if err != nil {
				if strings.Contains(err.Error(), "s3cret") {
					t.Errorf("error %q repeats the URL's password", err)
				}
				return
			}
			_ = c.Close()
		})
	}
}

func TestDefaults(t *testing.T) {
	// Nothing listens on port 1: New must still succeed, since a node starts without its
	// cache, and Ping must say Redis is not there.
	c := newCache(t, Options{URL: "redis://127.0.0.1:1/0"})
	if c.prefix != DefaultPrefix || c.opTimeout != DefaultOpTimeout {
		t.Errorf("defaults: prefix %q, op timeout %s; want %q, %s", c.prefix, c.opTimeout, DefaultPrefix, DefaultOpTimeout)
	}
	if got := c.Name(); got != "redis" {
		t.Errorf("Name() = %q; want %q", got, "redis")
	}
	if err := c.Ping(t.Context()); err == nil {
		t.Error("Ping with nothing listening: no error")
	}
}

// waitFor polls check until it returns nil or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
