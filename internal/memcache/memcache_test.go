package memcache

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cabildo/cabildo/internal/cachetest"
)

var _ cachetest.Cache = (*Cache)(nil)

func TestConformance(t *testing.T) {
	cachetest.Run(t, func(t *testing.T) cachetest.Cache {
		c := New()
		t.Cleanup(func() { _ = c.Close() })
		return c
	})
}

// fakeClock lets the bound tests control expiry without waiting.
type fakeClock struct{ t time.Time }

func (f *fakeClock) now() time.Time          { return f.t }
func (f *fakeClock) advance(d time.Duration) { f.t = f.t.Add(d) }

func newTestCache(t *testing.T, maxBytes int64) (*Cache, *fakeClock) {
	t.Helper()
	clock := &fakeClock{t: time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)}
	c := NewWithLimit(maxBytes)
	c.now = clock.now
	t.Cleanup(func() { _ = c.Close() })
	return c, clock
}

// present reports which of keys are still cached, in order.
func present(t *testing.T, c *Cache, keys ...string) []string {
	t.Helper()
	var got []string
	for _, k := range keys {
		_, ok, err := c.GetRendered(t.Context(), k)
		if err != nil {
			t.Fatalf("GetRendered(%q): %v", k, err)
		}
		if ok {
			got = append(got, k)
		}
	}
	return got
}

func put(t *testing.T, c *Cache, key string, size int, ttl time.Duration) {
	t.Helper()
	// Each entry costs len(key)+len(value); keys here are 2 bytes.
	if err := c.PutRendered(t.Context(), key, make([]byte, size-len(key)), ttl); err != nil {
		t.Fatalf("PutRendered(%q): %v", key, err)
	}
}

func TestRenderedBoundEvictsLeastRecentlyUsed(t *testing.T) {
	tests := []struct {
		name string
		// ops run in order: "put:k" stores 100 bytes under k, "get:k" reads k.
		ops  []string
		want []string // of k1..k5, the keys still cached (checked in that order)
	}{
		{
			name: "fits",
			ops:  []string{"put:k1", "put:k2", "put:k3"},
			want: []string{"k1", "k2", "k3"},
		},
		{
			name: "oldest evicted",
			ops:  []string{"put:k1", "put:k2", "put:k3", "put:k4"},
			want: []string{"k2", "k3", "k4"},
		},
		{
			name: "read refreshes",
			ops:  []string{"put:k1", "put:k2", "put:k3", "get:k1", "put:k4"},
			want: []string{"k1", "k3", "k4"},
		},
		{
			name: "rewrite refreshes without double counting",
			ops:  []string{"put:k1", "put:k2", "put:k3", "put:k1", "put:k1", "put:k4"},
			want: []string{"k1", "k3", "k4"},
		},
		{
			name: "many puts keep only the newest",
			ops:  []string{"put:k1", "put:k2", "put:k3", "put:k4", "put:k5"},
			want: []string{"k3", "k4", "k5"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newTestCache(t, 300) // room for three 100-byte entries
			for _, op := range tt.ops {
				verb, key, _ := strings.Cut(op, ":")
				switch verb {
				case "put":
					put(t, c, key, 100, time.Hour)
				case "get":
					present(t, c, key)
				}
			}
			if diff := cmp.Diff(present(t, c, "k1", "k2", "k3", "k4", "k5"), tt.want); diff != "" {
				t.Errorf("cached keys (-got +want):\n%s", diff)
			}
			if c.bytes > c.maxBytes {
				t.Errorf("accounted bytes %d exceed the bound %d", c.bytes, c.maxBytes)
			}
		})
	}
}

func TestRenderedBoundPrefersExpired(t *testing.T) {
	c, clock := newTestCache(t, 300)
	put(t, c, "k1", 100, time.Hour)
	put(t, c, "k2", 100, time.Second) // more recent, but about to expire
	put(t, c, "k3", 100, time.Hour)
	clock.advance(2 * time.Second)
	put(t, c, "k4", 100, time.Hour)

	if diff := cmp.Diff(present(t, c, "k1", "k2", "k3", "k4"), []string{"k1", "k3", "k4"}); diff != "" {
		t.Errorf("cached keys (-got +want):\n%s", diff)
	}
}

func TestRenderedLargerThanBoundNotKept(t *testing.T) {
	c, _ := newTestCache(t, 300)
	put(t, c, "k1", 100, time.Hour)
	put(t, c, "k2", 301, time.Hour)

	// The oversized entry is dropped rather than evicting everything else for it.
	if diff := cmp.Diff(present(t, c, "k1", "k2"), []string{"k1"}); diff != "" {
		t.Errorf("cached keys (-got +want):\n%s", diff)
	}
}

func TestRenderedTTLWithClock(t *testing.T) {
	c, clock := newTestCache(t, 0)
	put(t, c, "k1", 100, time.Minute)
	clock.advance(time.Minute - time.Nanosecond)
	if diff := cmp.Diff(present(t, c, "k1"), []string{"k1"}); diff != "" {
		t.Errorf("just before expiry (-got +want):\n%s", diff)
	}
	clock.advance(time.Nanosecond)
	if got := present(t, c, "k1"); len(got) != 0 {
		t.Errorf("at expiry: still cached %v", got)
	}
	if c.bytes != 0 {
		t.Errorf("accounted bytes after expiry = %d; want 0", c.bytes)
	}
}

func TestClosed(t *testing.T) {
	c := New()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx := t.Context()
	if err := c.Ping(ctx); err == nil {
		t.Error("Ping after Close: no error")
	}
	if _, _, err := c.LoadSnapshot(ctx, "k"); err == nil {
		t.Error("LoadSnapshot after Close: no error")
	}
	if err := c.PutRendered(ctx, "k", []byte("v"), time.Minute); err == nil {
		t.Error("PutRendered after Close: no error")
	}
}

func TestName(t *testing.T) {
	if got := New().Name(); got != "memory" {
		t.Errorf("Name() = %q; want %q", got, "memory")
	}
}
