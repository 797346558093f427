package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
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

// TestSDKModeratorTokenRenewal: the server ends a moderation subscription when its token
// expires; the SDK reports token_expired, and SetToken with a fresh token resumes it from
// the last version it delivered: every question asked meanwhile arrives, with no gap and
// no second snapshot.
func TestSDKModeratorTokenRenewal(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	n := startNode(t, dir, nil, "--demo")
	session := townHallSession(t, n)
	mintTTL := func(ttl string) string {
		var out, errb strings.Builder
		if err := run(context.Background(), []string{"token", "create", "--event", demoEvent, "--role", "moderator",
			"--subject", "sdk", "--ttl", ttl, "--data-dir", dir}, func(string) string { return "" }, &out, &errb); err != nil {
			t.Fatalf("token create: %v %s", err, errb.String())
		}
		return strings.TrimSpace(out.String())
	}
	short := mintTTL("1s")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{URL: "ws" + strings.TrimPrefix(n.base, "http") + "/v1/ws", Token: short})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var (
		mu        sync.Mutex
		questions = map[int64]bool{}
		snapshots int
		codes     []string
	)
	onData := func(data json.RawMessage) {
		var d struct {
			Questions []struct {
				ID int64 `json:"id"`
			} `json:"questions"`
		}
		if err := json.Unmarshal(data, &d); err != nil {
			t.Errorf("moderation data: %v", err)
		}
		mu.Lock()
		for _, q := range d.Questions {
			questions[q.ID] = true
		}
		mu.Unlock()
	}
	channel := fmt.Sprintf("moderation:%s:%d", demoEvent, session)
	if _, err := c.Subscribe(channel, "", client.Handler{
		OnSnapshot: func(_ uint64, d json.RawMessage) { mu.Lock(); snapshots++; mu.Unlock(); onData(d) },
		OnUpdate:   func(_, _ uint64, d json.RawMessage) { onData(d) },
		OnError:    func(code, _ string) { mu.Lock(); codes = append(codes, code); mu.Unlock() },
	}); err != nil {
		t.Fatal(err)
	}
	attendee := mintAttendee(t, n)
	ask := func(i int) int64 {
		r := n.do(t, req{method: "POST", path: fmt.Sprintf("/v1/events/%s/sessions/%d/questions", demoEvent, session),
			body:   map[string]any{"text": fmt.Sprintf("Pregunta de prueba número %d sobre datos abiertos", i)},
			header: map[string]string{"Authorization": "Bearer " + attendee}})
		if r.Status != 201 {
			t.Fatalf("ask: %d %s", r.Status, r.Body)
		}
		var q struct {
			ID int64 `json:"id"`
		}
		r.json(t, &q)
		return q.ID
	}
	first := ask(1)
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if !questions[first] {
			return fmt.Errorf("question %d not on the moderation channel", first)
		}
		return nil
	})
	// 1 s of token plus 5 s of leeway.
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if !slices.Contains(codes, "token_expired") {
			return fmt.Errorf("codes %v, want token_expired", codes)
		}
		return nil
	})
	missed := ask(2) // asked while the subscription is ended
	time.Sleep(300 * time.Millisecond)
	mu.Lock()
	leaked := questions[missed]
	mu.Unlock()
	if leaked {
		t.Fatal("a question reached the moderation subscription after its token expired")
	}
	if err := c.SetToken(mintTTL("1h")); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if !questions[missed] {
			return fmt.Errorf("question %d asked while the token was expired never arrived", missed)
		}
		return nil
	})
	st := c.Stats()
	if st.Gaps != 0 || st.Duplicates != 0 || snapshots != 1 {
		t.Fatalf("gaps %d, duplicates %d, snapshots %d; want 0, 0, 1 (resumed, not restarted)", st.Gaps, st.Duplicates, snapshots)
	}
}

// townHallSession is the demo event's town hall.
func townHallSession(t *testing.T, n *node) int64 {
	t.Helper()
	r := n.do(t, req{method: "GET", path: "/v1/events/" + demoEvent + "/sessions?kind=town_hall"})
	var list struct {
		Sessions []struct {
			ID int64 `json:"id"`
		} `json:"sessions"`
	}
	r.json(t, &list)
	if len(list.Sessions) == 0 {
		t.Fatal("the demo event has no town hall")
	}
	return list.Sessions[0].ID
}

// mintAttendee gets an attendee token from the node.
func mintAttendee(t *testing.T, n *node) string {
	t.Helper()
	r := n.do(t, req{method: "POST", path: "/v1/events/" + demoEvent + "/attendees"})
	var a struct {
		Token string `json:"token"`
	}
	r.json(t, &a)
	if r.Status != 201 || a.Token == "" {
		t.Fatalf("mint attendee: %d %s", r.Status, r.Body)
	}
	return a.Token
}
