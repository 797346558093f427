package rediscache

import (
	"bytes"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/redistest"
)

// TestBigSnapshot moves a snapshot many times OpTimeout's worth of bytes (the snapshot of a
// long log is hundreds of megabytes) with the default 50 ms bound on every operation: it is
// stored and loaded whole, a newer one replaces it and takes the old chunks with it, an
// older one is refused without leaving chunks behind, and a load that finds its chunks gone
// fails rather than returning part of a snapshot.
func TestBigSnapshot(t *testing.T) {
	srv := redistest.Start(t)
	rdb := rawClient(t, srv)
	c := newCache(t, Options{URL: srv.URL()})
	ctx := t.Context()
	rng := rand.New(rand.NewPCG(1, 2))
	big := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	parts := func() []string {
		keys, err := rdb.Keys(ctx, DefaultPrefix+"snapshot:projection:parts:*").Result()
		if err != nil {
			t.Fatal(err)
		}
		return keys
	}
	load := func() cabildo.Snapshot {
		t.Helper()
		got, ok, err := c.LoadSnapshot(ctx, "projection")
		if err != nil || !ok {
			t.Fatalf("LoadSnapshot = found %t, %v", ok, err)
		}
		return got
	}

	first := cabildo.Snapshot{Seq: 1000, Log: "log-a", Data: big(24<<20 + 12345)}
	if stored, err := c.StoreSnapshot(ctx, "projection", first); err != nil || !stored {
		t.Fatalf("StoreSnapshot of %d bytes = %t, %v", len(first.Data), stored, err)
	}
	if got := load(); got.Seq != first.Seq || got.Log != first.Log || !bytes.Equal(got.Data, first.Data) {
		t.Fatalf("loaded seq %d log %q %d bytes (equal %t); want seq %d, %d bytes", got.Seq, got.Log, len(got.Data),
			bytes.Equal(got.Data, first.Data), first.Seq, len(first.Data))
	}
	old := parts()
	if len(old) != 1 {
		t.Fatalf("chunk keys after one store: %v", old)
	}
	if ttl := rdb.PTTL(ctx, old[0]).Val(); ttl >= 0 {
		t.Errorf("a stored snapshot's chunks expire in %s", ttl)
	}

	// Older: refused, nothing left behind.
	if stored, err := c.StoreSnapshot(ctx, "projection", cabildo.Snapshot{Seq: 999, Log: "log-a", Data: big(3 << 20)}); err != nil || stored {
		t.Errorf("StoreSnapshot of an older snapshot = %t, %v; want false", stored, err)
	}
	if got := parts(); len(got) != 1 || got[0] != old[0] {
		t.Errorf("chunk keys after a refused store: %v, want %v", got, old)
	}

	// Newer: replaces it, the old chunks go; a small one after it drops the chunks too.
	second := cabildo.Snapshot{Seq: 2000, Log: "log-a", Data: big(2<<20 + 1)}
	if stored, err := c.StoreSnapshot(ctx, "projection", second); err != nil || !stored {
		t.Fatalf("StoreSnapshot of a newer snapshot = %t, %v", stored, err)
	}
	if got := load(); got.Seq != second.Seq || !bytes.Equal(got.Data, second.Data) {
		t.Errorf("loaded seq %d, %d bytes; want seq %d, %d bytes", got.Seq, len(got.Data), second.Seq, len(second.Data))
	}
	now := parts()
	if len(now) != 1 || now[0] == old[0] {
		t.Errorf("chunk keys after replacing: %v (before %v)", now, old)
	}

	// Chunks gone under a load (another node replaced it meanwhile, an eviction): an error.
	if err := rdb.HDel(ctx, now[0], "1").Err(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.LoadSnapshot(ctx, "projection"); err == nil || !strings.Contains(err.Error(), "gone") {
		t.Errorf("LoadSnapshot with a chunk missing = %v; want an error", err)
	}

	small := cabildo.Snapshot{Seq: 3000, Log: "log-a", Data: []byte("small")}
	if stored, err := c.StoreSnapshot(ctx, "projection", small); err != nil || !stored {
		t.Fatalf("StoreSnapshot of a small snapshot = %t, %v", stored, err)
	}
	if got := load(); got.Seq != small.Seq || string(got.Data) != "small" {
		t.Errorf("loaded %+v, want %+v", got, small)
	}
	if got := parts(); len(got) != 0 {
		t.Errorf("chunk keys after a small snapshot replaced a big one: %v", got)
	}
	if !c.Up() {
		t.Error("the breaker opened while moving big snapshots")
	}
}

// OpenSnapshot gives a big snapshot's bytes as its chunks arrive, equal to what was
// stored; a chunk gone midway fails the read (never a short snapshot read as whole), and
// closing the body early stops the fetching.
func TestOpenSnapshotStreams(t *testing.T) {
	srv := redistest.Start(t)
	rdb := rawClient(t, srv)
	c := newCache(t, Options{URL: srv.URL()})
	ctx := t.Context()
	data := make([]byte, 3<<20+777)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if stored, err := c.StoreSnapshot(ctx, "projection", cabildo.Snapshot{Seq: 7, Log: "log-a", Data: data}); err != nil || !stored {
		t.Fatalf("StoreSnapshot = %t, %v", stored, err)
	}
	open := func() (cabildo.Snapshot, io.ReadCloser) {
		t.Helper()
		snap, body, ok, err := c.OpenSnapshot(ctx, "projection")
		if err != nil || !ok || snap.Seq != 7 || snap.Log != "log-a" || snap.Data != nil {
			t.Fatalf("OpenSnapshot = %+v, found %t, %v", snap, ok, err)
		}
		return snap, body
	}
	_, body := open()
	got, err := io.ReadAll(iotest.HalfReader(body))
	body.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes (equal %t), %v; want %d", len(got), bytes.Equal(got, data), err, len(data))
	}

	_, body = open()
	if _, err := io.ReadFull(body, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	if err := body.Close(); err != nil {
		t.Fatalf("closing early: %v", err)
	}

	_, body = open()
	keys, err := rdb.Keys(ctx, DefaultPrefix+"snapshot:projection:parts:*").Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("chunk keys %v, %v", keys, err)
	}
	if err := rdb.HDel(ctx, keys[0], "2").Err(); err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(body)
	body.Close()
	if err == nil || !strings.Contains(err.Error(), "chunk 2 of 4 is gone") {
		t.Fatalf("with chunk 2 gone: read %d bytes, %v; want the read to fail", len(got), err)
	}
	if _, ok, err := c.LoadSnapshot(ctx, "projection"); err == nil || ok {
		t.Fatalf("LoadSnapshot with chunk 2 gone = %t, %v; want an error", ok, err)
	}
}
