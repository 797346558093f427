package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cabildo/cabildo/pkg/client"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestSDKResumesAcrossRestarts: the Go SDK stays subscribed while the server restarts
// twice and changes keep coming; it sees every version exactly once, in order, with prev
// chaining, and never a second snapshot (scenarios 1 and 3).
func TestSDKResumesAcrossRestarts(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	n := startNode(t, dir, nil, "--demo", "--addr", addr)
	tok := n.token("organizer")
	sch := getSchedule(t, n)
	s := pickSession(t, sch, "breakout")

	var (
		mu   sync.Mutex
		seen []uint64
		snap []uint64
	)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{URL: "ws://" + addr + "/v1/ws", MinBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub, err := c.Subscribe("schedule:"+demoEvent, "en", client.Handler{
		OnSnapshot: func(v uint64, _ json.RawMessage) { mu.Lock(); snap = append(snap, v); mu.Unlock() },
		OnUpdate:   func(v, _ uint64, _ json.RawMessage) { mu.Lock(); seen = append(seen, v); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	waitFor := func(v uint64) {
		t.Helper()
		checkFor(t, 15*time.Second, 10*time.Millisecond, func() error {
			if last, ok := sub.Last(c); !ok || last < v {
				return fmt.Errorf("client at %d, want %d", last, v)
			}
			return nil
		})
	}
	waitFor(sch.Version)

	var written []uint64
	rooms := []string{"terraza-jardin", "vestibulo"}
	for round := range 3 {
		for i := range 5 {
			written = append(written, moveSession(t, n, tok, s.ID, rooms[(round+i)%2]))
		}
		if round < 2 {
			n.stop()
			n = startNode(t, dir, nil, "--addr", addr)
		}
	}
	waitFor(written[len(written)-1])

	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(seen, written) {
		t.Fatalf("client saw versions %v, want exactly %v", seen, written)
	}
	st := c.Stats()
	if len(snap) != 1 || st.Gaps != 0 || st.Duplicates != 0 || st.Connects < 2 {
		t.Fatalf("snapshots %v, stats %+v: want one snapshot, no gaps, no duplicates, ≥ 2 connections", snap, st)
	}
}
