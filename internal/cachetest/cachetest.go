// Package cachetest is the one conformance suite for Cabildo's cache, run against every
// implementation (in-process and Redis) so they cannot drift apart: a node must behave the
// same whichever cache it was started with. It is imported only by tests.
package cachetest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/ratelimit"
)

// Cache is what the suite exercises: the methods every cache implementation shares.
type Cache interface {
	LoadSnapshot(ctx context.Context, key string) (cabildo.Snapshot, bool, error)
	StoreSnapshot(ctx context.Context, key string, s cabildo.Snapshot) (bool, error)
	GetRendered(ctx context.Context, key string) ([]byte, bool, error)
	PutRendered(ctx context.Context, key string, b []byte, ttl time.Duration) error
	Ping(ctx context.Context) error
	Allow(ctx context.Context, key string, l ratelimit.Limit) (ratelimit.Decision, error)
}

// Run runs the suite. newCache is called once per subtest and must return an empty cache
// that no other subtest sees; it registers its own cleanup with t.
func Run(t *testing.T, newCache func(t *testing.T) Cache) {
	t.Run("StoreSnapshot", func(t *testing.T) { testStoreSnapshot(t, newCache) })

	tests := []struct {
		name string
		run  func(t *testing.T, c Cache)
	}{
		{"MissingSnapshot", testMissingSnapshot},
		{"SnapshotRoundTrip", testSnapshotRoundTrip},
		{"EmptySnapshotData", testEmptySnapshotData},
		{"ConcurrentStoreKeepsMax", testConcurrentStore},
		{"KeysAreIndependent", testKeysIndependent},
		{"SnapshotBytesAreCopies", testSnapshotCopies},
		{"LargeSnapshot", testLargeSnapshot},
		{"MissingRendered", testMissingRendered},
		{"RenderedRoundTrip", testRenderedRoundTrip},
		{"RenderedOverwrite", testRenderedOverwrite},
		{"RenderedTTLExpiry", testRenderedTTL},
		{"RenderedNonPositiveTTL", testRenderedNonPositiveTTL},
		{"RenderedBytesAreCopies", testRenderedCopies},
		{"LargeRendered", testLargeRendered},
		{"Ping", testPing},
		{"RateLimitExact", testRateLimitExact},
		{"RateLimitKeysIndependent", testRateLimitKeys},
		{"RateLimitRefills", testRateLimitRefills},
		{"RateLimitConcurrent", testRateLimitConcurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.run(t, newCache(t)) })
	}
}

// testStoreSnapshot is the ordering rule: a snapshot replaces the stored one only when it is
// newer in the same log, or comes from another log (which was recreated).
func testStoreSnapshot(t *testing.T, newCache func(t *testing.T) Cache) {
	const big = uint64(1) << 60 // beyond 2^53, where a float comparison would lose the difference
	snap := func(seq uint64, log, data string) *cabildo.Snapshot {
		return &cabildo.Snapshot{Seq: seq, Log: log, Data: []byte(data)}
	}
	tests := []struct {
		name       string
		stored     *cabildo.Snapshot // nil: nothing stored first
		store      cabildo.Snapshot
		wantStored bool
		want       cabildo.Snapshot
	}{
		{
			name:       "first store",
			store:      *snap(5, "log-a", "five"),
			wantStored: true,
			want:       *snap(5, "log-a", "five"),
		},
		{
			name:       "older seq refused",
			stored:     snap(10, "log-a", "ten"),
			store:      *snap(9, "log-a", "nine"),
			wantStored: false,
			want:       *snap(10, "log-a", "ten"),
		},
		{
			name:       "equal seq refused",
			stored:     snap(10, "log-a", "ten"),
			store:      *snap(10, "log-a", "other ten"),
			wantStored: false,
			want:       *snap(10, "log-a", "ten"),
		},
		{
			name:       "newer seq accepted",
			stored:     snap(10, "log-a", "ten"),
			store:      *snap(11, "log-a", "eleven"),
			wantStored: true,
			want:       *snap(11, "log-a", "eleven"),
		},
		{
			name:       "other log accepted with lower seq",
			stored:     snap(10, "log-a", "ten"),
			store:      *snap(3, "log-b", "three"),
			wantStored: true,
			want:       *snap(3, "log-b", "three"),
		},
		{
			name:       "other log accepted with equal seq",
			stored:     snap(10, "log-a", "ten"),
			store:      *snap(10, "log-b", "ten again"),
			wantStored: true,
			want:       *snap(10, "log-b", "ten again"),
		},
		{
			name:       "seq zero stored first",
			store:      *snap(0, "log-a", "empty log"),
			wantStored: true,
			want:       *snap(0, "log-a", "empty log"),
		},
		{
			name:       "large seq newer by one accepted",
			stored:     snap(big, "log-a", "big"),
			store:      *snap(big+1, "log-a", "big+1"),
			wantStored: true,
			want:       *snap(big+1, "log-a", "big+1"),
		},
		{
			name:       "large seq older by one refused",
			stored:     snap(big+1, "log-a", "big+1"),
			store:      *snap(big, "log-a", "big"),
			wantStored: false,
			want:       *snap(big+1, "log-a", "big+1"),
		},
		{
			name:       "max seq refuses everything in its log",
			stored:     snap(^uint64(0), "log-a", "max"),
			store:      *snap(^uint64(0)-1, "log-a", "max-1"),
			wantStored: false,
			want:       *snap(^uint64(0), "log-a", "max"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCache(t)
			const key = "schedule:ogp"
			if tt.stored != nil {
				mustStoreSnapshot(t, c, key, *tt.stored, true)
			}
			mustStoreSnapshot(t, c, key, tt.store, tt.wantStored)
			got := mustLoadSnapshot(t, c, key)
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("stored snapshot (-got +want):\n%s", diff)
			}
		})
	}
}

func testMissingSnapshot(t *testing.T, c Cache) {
	got, ok, err := c.LoadSnapshot(t.Context(), "schedule:nobody")
	if err != nil {
		t.Fatalf("LoadSnapshot: %v", err)
	}
	if ok {
		t.Errorf("LoadSnapshot of a missing key = %+v, true; want not found", got)
	}
}

func testSnapshotRoundTrip(t *testing.T, c Cache) {
	// Bytes that are not text: the cache must be binary safe.
	want := cabildo.Snapshot{Seq: 1234, Log: "2026-05-01T09:00:00.123456789Z", Data: []byte("{\"a\":1}\x00\xff\xfe\r\n")}
	mustStoreSnapshot(t, c, "schedule:ogp", want, true)
	got := mustLoadSnapshot(t, c, "schedule:ogp")
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("loaded snapshot (-got +want):\n%s", diff)
	}
}

func testEmptySnapshotData(t *testing.T, c Cache) {
	mustStoreSnapshot(t, c, "schedule:ogp", cabildo.Snapshot{Seq: 1, Log: "log-a"}, true)
	got := mustLoadSnapshot(t, c, "schedule:ogp")
	if got.Seq != 1 || got.Log != "log-a" || len(got.Data) != 0 {
		t.Errorf("loaded snapshot = %+v; want seq 1, log-a, no data", got)
	}
}

// testConcurrentStore has nodes racing to store: whatever the interleaving, the highest
// seq must win, with its own data (the check and the write are one atomic step).
func testConcurrentStore(t *testing.T, c Cache) {
	const goroutines, perGoroutine = 20, 5
	seqs := make([][]uint64, goroutines)
	var maxSeq uint64
	for i := range seqs {
		for range perGoroutine {
			s := rand.Uint64N(1_000_000) + 1
			seqs[i] = append(seqs[i], s)
			maxSeq = max(maxSeq, s)
		}
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range goroutines {
		wg.Go(func() {
			<-start
			for _, s := range seqs[i] {
				snap := cabildo.Snapshot{Seq: s, Log: "log-a", Data: fmt.Appendf(nil, "seq=%d", s)}
				if _, err := c.StoreSnapshot(t.Context(), "schedule:ogp", snap); err != nil {
					t.Errorf("StoreSnapshot(seq %d): %v", s, err)
				}
			}
		})
	}
	close(start)
	wg.Wait()

	got := mustLoadSnapshot(t, c, "schedule:ogp")
	want := cabildo.Snapshot{Seq: maxSeq, Log: "log-a", Data: fmt.Appendf(nil, "seq=%d", maxSeq)}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("after concurrent stores (-got +want):\n%s", diff)
	}
}

func testKeysIndependent(t *testing.T, c Cache) {
	a := cabildo.Snapshot{Seq: 100, Log: "log-a", Data: []byte("event a")}
	b := cabildo.Snapshot{Seq: 5, Log: "log-a", Data: []byte("event b")}
	mustStoreSnapshot(t, c, "schedule:a", a, true)
	// A lower seq under another key is not compared with the first key's.
	mustStoreSnapshot(t, c, "schedule:b", b, true)
	// Snapshots and rendered responses are separate namespaces.
	mustPutRendered(t, c, "schedule:a", []byte("rendered a"), time.Minute)

	if diff := cmp.Diff(mustLoadSnapshot(t, c, "schedule:a"), a); diff != "" {
		t.Errorf("snapshot a (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(mustLoadSnapshot(t, c, "schedule:b"), b); diff != "" {
		t.Errorf("snapshot b (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(mustGetRendered(t, c, "schedule:a"), []byte("rendered a")); diff != "" {
		t.Errorf("rendered a (-got +want):\n%s", diff)
	}
	if _, ok, err := c.GetRendered(t.Context(), "schedule:b"); err != nil || ok {
		t.Errorf("GetRendered(schedule:b) = found %t, %v; want not found, no error", ok, err)
	}
}

func testSnapshotCopies(t *testing.T, c Cache) {
	data := []byte("original")
	mustStoreSnapshot(t, c, "schedule:ogp", cabildo.Snapshot{Seq: 1, Log: "log-a", Data: data}, true)
	data[0] = 'X' // the caller reuses its buffer after storing

	got := mustLoadSnapshot(t, c, "schedule:ogp")
	got.Data[0] = 'Y' // a reader scribbles on what it got

	again := mustLoadSnapshot(t, c, "schedule:ogp")
	if diff := cmp.Diff(again.Data, []byte("original")); diff != "" {
		t.Errorf("snapshot data after callers mutated their slices (-got +want):\n%s", diff)
	}
}

func testLargeSnapshot(t *testing.T, c Cache) {
	want := cabildo.Snapshot{Seq: 42, Log: "log-a", Data: randomBytes(1 << 20)}
	mustStoreSnapshot(t, c, "schedule:ogp", want, true)
	got := mustLoadSnapshot(t, c, "schedule:ogp")
	if got.Seq != want.Seq || got.Log != want.Log || !bytes.Equal(got.Data, want.Data) {
		t.Errorf("1 MiB snapshot: got seq %d log %q %d bytes, equal %t; want seq %d log %q %d bytes",
			got.Seq, got.Log, len(got.Data), bytes.Equal(got.Data, want.Data), want.Seq, want.Log, len(want.Data))
	}
}

func testMissingRendered(t *testing.T, c Cache) {
	got, ok, err := c.GetRendered(t.Context(), "schedule:ogp:1:es:ics")
	if err != nil {
		t.Fatalf("GetRendered: %v", err)
	}
	if ok {
		t.Errorf("GetRendered of a missing key = %q, true; want not found", got)
	}
}

func testRenderedRoundTrip(t *testing.T, c Cache) {
	want := []byte("BEGIN:VCALENDAR\r\n\x00\xff")
	mustPutRendered(t, c, "schedule:ogp:1234:es:ics", want, time.Minute)
	if diff := cmp.Diff(mustGetRendered(t, c, "schedule:ogp:1234:es:ics"), want); diff != "" {
		t.Errorf("rendered (-got +want):\n%s", diff)
	}
}

func testRenderedOverwrite(t *testing.T, c Cache) {
	mustPutRendered(t, c, "k", []byte("first"), time.Minute)
	mustPutRendered(t, c, "k", []byte("second"), time.Minute)
	if diff := cmp.Diff(mustGetRendered(t, c, "k"), []byte("second")); diff != "" {
		t.Errorf("rendered after overwrite (-got +want):\n%s", diff)
	}
}

func testRenderedTTL(t *testing.T, c Cache) {
	const ttl = 100 * time.Millisecond
	start := time.Now()
	mustPutRendered(t, c, "short", []byte("v"), ttl)
	mustPutRendered(t, c, "long", []byte("v"), time.Hour)

	_, ok, err := c.GetRendered(t.Context(), "short")
	if err != nil {
		t.Fatalf("GetRendered: %v", err)
	}
	// Only a failure if the TTL cannot have run out yet: a loaded machine may be slower.
	if !ok && time.Since(start) < ttl {
		t.Errorf("GetRendered(short) not found %s after put with TTL %s", time.Since(start), ttl)
	}

	waitFor(t, 2*time.Second, func() error {
		if _, ok, err := c.GetRendered(t.Context(), "short"); err != nil || ok {
			return fmt.Errorf("GetRendered(short) = found %t, %v; want expired", ok, err)
		}
		return nil
	})
	if elapsed := time.Since(start); elapsed < ttl {
		t.Errorf("entry expired after %s; want at least its TTL %s", elapsed, ttl)
	}
	mustGetRendered(t, c, "long")
}

func testRenderedNonPositiveTTL(t *testing.T, c Cache) {
	for _, ttl := range []time.Duration{0, -time.Second} {
		if err := c.PutRendered(t.Context(), "k", []byte("v"), ttl); err == nil {
			t.Errorf("PutRendered with TTL %s: no error; want one (an entry must expire)", ttl)
		}
	}
}

func testRenderedCopies(t *testing.T, c Cache) {
	b := []byte("original")
	mustPutRendered(t, c, "k", b, time.Minute)
	b[0] = 'X'

	got := mustGetRendered(t, c, "k")
	got[0] = 'Y'

	if diff := cmp.Diff(mustGetRendered(t, c, "k"), []byte("original")); diff != "" {
		t.Errorf("rendered after callers mutated their slices (-got +want):\n%s", diff)
	}
}

func testLargeRendered(t *testing.T, c Cache) {
	want := randomBytes(1 << 20)
	mustPutRendered(t, c, "schedule:ogp:1:en:json", want, time.Minute)
	got := mustGetRendered(t, c, "schedule:ogp:1:en:json")
	if !bytes.Equal(got, want) {
		t.Errorf("1 MiB rendered: got %d bytes, not equal to the %d stored", len(got), len(want))
	}
}

func testPing(t *testing.T, c Cache) {
	if err := c.Ping(t.Context()); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func mustStoreSnapshot(t *testing.T, c Cache, key string, s cabildo.Snapshot, wantStored bool) {
	t.Helper()
	stored, err := c.StoreSnapshot(t.Context(), key, s)
	if err != nil {
		t.Fatalf("StoreSnapshot(%q, seq %d, log %q): %v", key, s.Seq, s.Log, err)
	}
	if stored != wantStored {
		t.Errorf("StoreSnapshot(%q, seq %d, log %q) = %t; want %t", key, s.Seq, s.Log, stored, wantStored)
	}
}

func mustLoadSnapshot(t *testing.T, c Cache, key string) cabildo.Snapshot {
	t.Helper()
	s, ok, err := c.LoadSnapshot(t.Context(), key)
	if err != nil {
		t.Fatalf("LoadSnapshot(%q): %v", key, err)
	}
	if !ok {
		t.Fatalf("LoadSnapshot(%q): not found", key)
	}
	return s
}

func mustPutRendered(t *testing.T, c Cache, key string, b []byte, ttl time.Duration) {
	t.Helper()
	if err := c.PutRendered(t.Context(), key, b, ttl); err != nil {
		t.Fatalf("PutRendered(%q): %v", key, err)
	}
}

func mustGetRendered(t *testing.T, c Cache, key string) []byte {
	t.Helper()
	b, ok, err := c.GetRendered(t.Context(), key)
	if err != nil {
		t.Fatalf("GetRendered(%q): %v", key, err)
	}
	if !ok {
		t.Fatalf("GetRendered(%q): not found", key)
	}
	return b
}

// waitFor polls check until it returns nil or timeout passes: expiry is observed, never
// assumed after a fixed sleep.
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
		time.Sleep(10 * time.Millisecond)
	}
}

// randomBytes returns n bytes covering every byte value, seeded so a failure reproduces.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{'c', 'a', 'b', 'i', 'l', 'd', 'o'})
	_, _ = r.Read(b)
	return b
}

// allowN sends n events under key and counts the allowed ones; every refusal must say
// when to retry, within one emission interval.
func allowN(t *testing.T, c Cache, key string, l ratelimit.Limit, n int) int {
	t.Helper()
	allowed := 0
	for range n {
		d, err := c.Allow(context.Background(), key, l)
		if err != nil {
			t.Fatalf("Allow: %v", err)
		}
		switch {
		case d.Allowed:
			allowed++
		case d.RetryAfter <= 0 || d.RetryAfter > l.Per/time.Duration(l.N)+time.Second:
			t.Fatalf("refused with Retry-After %v, want within one emission interval (%v)", d.RetryAfter, l.Per/time.Duration(l.N))
		}
	}
	return allowed
}

// A device flooding a 5-per-minute limit gets exactly 5 through.
func testRateLimitExact(t *testing.T, c Cache) {
	if got := allowN(t, c, "ask:attendee:flood", ratelimit.Limit{N: 5, Per: time.Minute}, 200); got != 5 {
		t.Fatalf("allowed %d of 200, want exactly 5", got)
	}
}

func testRateLimitKeys(t *testing.T, c Cache) {
	l := ratelimit.Limit{N: 3, Per: time.Minute}
	a := allowN(t, c, "vote:attendee:a", l, 10)
	b := allowN(t, c, "vote:attendee:b", l, 10)
	if a != 3 || b != 3 {
		t.Fatalf("allowed %d and %d, want 3 each", a, b)
	}
}

func testRateLimitRefills(t *testing.T, c Cache) {
	l := ratelimit.Limit{N: 2, Per: 400 * time.Millisecond}
	if got := allowN(t, c, "refill", l, 10); got != 2 {
		t.Fatalf("allowed %d of the first burst, want 2", got)
	}
	time.Sleep(450 * time.Millisecond)
	if got := allowN(t, c, "refill", l, 10); got != 2 {
		t.Fatalf("allowed %d after a full refill, want 2", got)
	}
}

// Many callers at once (several nodes' requests) still let exactly N through.
func testRateLimitConcurrent(t *testing.T, c Cache) {
	l := ratelimit.Limit{N: 20, Per: time.Hour}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		allowed int
	)
	for range 10 {
		wg.Go(func() {
			n := 0
			for range 20 {
				d, err := c.Allow(context.Background(), "concurrent", l)
				if err == nil && d.Allowed {
					n++
				}
			}
			mu.Lock()
			allowed += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if allowed != 20 {
		t.Fatalf("allowed %d of 200 concurrent, want exactly 20", allowed)
	}
}
