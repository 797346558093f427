package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cabildo/cabildo/internal/redistest"
)

// TestRedisCacheIsRebuildable proves Redis is a cache only: a node starts from a snapshot
// when one matches the log, and from the log alone when Redis was flushed or holds a
// snapshot that is ahead of the log (scenario 10). The served programme is the same each
// time.
func TestRedisCacheIsRebuildable(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer rdb.Close()
	ctx := context.Background()
	dir := t.TempDir()
	args := []string{"--demo", "--redis-url", srv.URL()}

	n := startNode(t, dir, nil, args...)
	sch := getSchedule(t, n)
	s := pickSession(t, sch, "panel")
	r := n.do(t, req{method: "POST", path: fmt.Sprintf("/v1/events/%s/sessions/%d/cancel", demoEvent, s.ID),
		header: auth(n.token("organizer")), body: map[string]any{"reason": map[string]any{"code": "weather"}}})
	if r.Status != 200 {
		t.Fatalf("cancel: %d %s", r.Status, r.Body)
	}
	want := n.do(t, req{method: "GET", path: "/v1/events/" + demoEvent + "/schedule"}).Body
	rendered, err := rdb.Keys(ctx, "cabildo:rendered:schedule:*").Result()
	if err != nil || len(rendered) == 0 {
		t.Fatalf("no rendered schedule in Redis (%v): keys %v", err, rendered)
	}
	n.stop()

	snap, err := rdb.HGetAll(ctx, "cabildo:snapshot:projection").Result()
	if err != nil || snap["log"] == "" {
		t.Fatalf("no snapshot in Redis after shutdown: %v %v", snap["seq"], err)
	}

	steps := []struct {
		name    string
		prepare func(t *testing.T)
		log     string
	}{
		{"from snapshot", func(*testing.T) {}, "restored snapshot"},
		{"after FLUSHALL", func(t *testing.T) {
			if err := rdb.FlushAll(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}, "no snapshot; rebuilding from the log"},
		{"snapshot ahead of the log", func(t *testing.T) {
			if err := rdb.FlushAll(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			if err := rdb.HSet(ctx, "cabildo:snapshot:projection", "seq", fmt.Sprintf("%020d", 999999),
				"log", snap["log"], "data", `{"format":1,"seq":999999,"events":{}}`).Err(); err != nil {
				t.Fatal(err)
			}
		}, "snapshot is ahead of the log; ignoring it"},
		{"snapshot of another log", func(t *testing.T) {
			if err := rdb.HSet(ctx, "cabildo:snapshot:projection", "seq", fmt.Sprintf("%020d", 3),
				"log", "another-log", "data", `{"format":1,"seq":3,"events":{}}`).Err(); err != nil {
				t.Fatal(err)
			}
		}, "snapshot is from another log"},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			st.prepare(t)
			n := startNode(t, dir, nil, args...)
			defer n.stop()
			if !strings.Contains(n.stderr.String(), st.log) {
				t.Fatalf("start log lacks %q:\n%s", st.log, n.stderr.String())
			}
			got := n.do(t, req{method: "GET", path: "/v1/events/" + demoEvent + "/schedule"}).Body
			if string(got) != string(want) {
				t.Fatalf("served schedule differs from before (%d vs %d bytes)", len(got), len(want))
			}
		})
	}
}

// TestRedisDownNodeServes: with Redis gone the node keeps serving reads and writes and
// says so in /readyz (scenario 9, in part).
func TestRedisDownNodeServes(t *testing.T) {
	srv := redistest.Start(t)
	n := startNode(t, "", nil, "--demo", "--redis-url", srv.URL())
	srv.Kill()
	r := n.do(t, req{method: "GET", path: "/readyz"})
	if r.Status != 200 || !strings.Contains(string(r.Body), `"cache":"degraded"`) {
		t.Fatalf("readyz with Redis down: %d %s", r.Status, r.Body)
	}
	sch := getSchedule(t, n)
	s := pickSession(t, sch, "workshop")
	w := n.do(t, req{method: "POST", path: fmt.Sprintf("/v1/events/%s/sessions/%d/cancel", demoEvent, s.ID),
		header: auth(n.token("organizer")), body: map[string]any{"reason": map[string]any{"code": "other"}}})
	if w.Status != 200 {
		t.Fatalf("write with Redis down: %d %s", w.Status, w.Body)
	}
	if after := getSchedule(t, n); after.Version <= sch.Version {
		t.Fatalf("version %d after a write, was %d", after.Version, sch.Version)
	}
}

// TestRedisOutageCostsOneTimeout is a Redis outage on a whole node: with Redis
// hung (SIGSTOP) and then killed, requests kept paying a 50 ms cache timeout each, for as
// long as Redis stayed away. Now the first failure opens the breaker and the requests after
// it send Redis nothing (the node's own counter of commands stays put while they go on),
// /metrics says cache_up 0, and once Redis is back the breaker closes and they use it
// again. The request is an attendee token: its per-address limit is counted in Redis on
// every request (a schedule read no longer is: a node keeps the bytes of each version).
func TestRedisOutageCostsOneTimeout(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	n := startNode(t, "", nil, "--demo", "--redis-url", srv.URL(), "--qa-attendees-per-ip-per-minute", "100000")
	path := "/v1/events/" + demoEvent + "/attendees"
	read := func() {
		t.Helper()
		if r := n.do(t, req{method: "POST", path: path, body: map[string]any{}}); r.Status != 201 {
			t.Fatalf("attendee token: %d %s", r.Status, truncate(r.Body))
		}
	}
	metric := func(name string) float64 { t.Helper(); return metricValue(t, n, name) }
	for _, outage := range []struct {
		name       string
		stop, back func()
	}{
		{"hung", func() { srv.Suspend(t) }, func() { srv.Resume(t) }},
		{"killed", srv.Kill, func() { srv.Restart(t) }},
	} {
		t.Run(outage.name, func(t *testing.T) {
			read()
			if metric("cabildo_cache_up") != 1 {
				t.Fatalf("cache_up is not 1 with Redis answering")
			}
			outage.stop()
			read() // pays the one timeout and opens the breaker
			checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
				if metric("cabildo_cache_up") != 0 {
					return fmt.Errorf("breaker still closed")
				}
				return nil
			})
			before := metric("cabildo_cache_redis_commands_total")
			for range 50 {
				read()
			}
			if sent := metric("cabildo_cache_redis_commands_total") - before; sent != 0 {
				t.Fatalf("50 requests with the breaker open sent Redis %v commands; want 0", sent)
			}
			if metric("cabildo_cache_refused_total") == 0 {
				t.Fatalf("no cache operation was answered by the open breaker")
			}
			outage.back()
			checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
				if metric("cabildo_cache_up") != 1 {
					return fmt.Errorf("breaker still open with Redis back")
				}
				return nil
			})
			before = metric("cabildo_cache_redis_commands_total")
			read()
			if metric("cabildo_cache_redis_commands_total") == before {
				t.Fatalf("a request with Redis back sent it nothing")
			}
		})
	}
}
