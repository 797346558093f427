package main

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/cabildo/cabildo/internal/natslog"
)

// natsServer is a NATS JetStream server the test owns, listening on loopback, that it can
// stop and start again on the same port and store directory.
type natsServer struct {
	t    *testing.T
	dir  string
	addr string
	emb  *natslog.Embedded
}

func startNATS(t *testing.T) *natsServer {
	t.Helper()
	n := &natsServer{t: t, dir: t.TempDir(), addr: "127.0.0.1:0"}
	n.start()
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(n.emb.ClientURL(), "nats://"))
	n.addr = "127.0.0.1:" + port
	t.Cleanup(func() {
		if n.emb != nil {
			n.emb.Shutdown()
		}
	})
	return n
}

func (n *natsServer) start() {
	n.t.Helper()
	emb, err := natslog.StartEmbedded(natslog.EmbeddedOptions{StoreDir: n.dir, Listen: n.addr, ServerName: "test-nats"})
	if err != nil {
		n.t.Fatalf("start NATS: %v", err)
	}
	n.emb = emb
}

func (n *natsServer) stop() {
	n.emb.Shutdown()
	n.emb = nil
}

func (n *natsServer) url() string { return "nats://" + n.addr }

// TestNATSRestartLosesNoAckedWrite is scenario 4 for programme writes: organizers keep
// writing while NATS goes away and comes back. While it is away every write answers 503
// with Retry-After within seconds; afterwards writes succeed again; every acknowledged
// write is in the programme, also after the node itself restarts.
func TestNATSRestartLosesNoAckedWrite(t *testing.T) {
	ns := startNATS(t)
	n := startNode(t, "", nil, "--demo", "--nats-url", ns.url())
	h := auth(n.token("organizer"))
	ev := "/v1/events/" + demoEvent

	var acked []int64
	write := func(i int) response {
		hdr := map[string]string{"Authorization": h["Authorization"], "Idempotency-Key": fmt.Sprintf("nats-restart-%d", i)}
		return n.do(t, req{method: "POST", path: ev + "/sessions?force=true", header: hdr, body: map[string]any{
			"title": map[string]string{"es": fmt.Sprintf("Sesión %d", i)}, "kind": "workshop", "language": "es",
			"room": "sala-1", "start": "2027-04-15T18:00:00-06:00", "end": "2027-04-15T18:30:00-06:00"}})
	}
	record := func(r response) {
		var s struct {
			ID int64 `json:"id"`
		}
		r.json(t, &s)
		acked = append(acked, s.ID)
	}
	i := 0
	for ; i < 20; i++ {
		r := write(i)
		if r.Status != 201 {
			t.Fatalf("write %d before the outage: %d %s", i, r.Status, r.Body)
		}
		record(r)
	}

	ns.stop()
	outage := time.Now()
	refused := 0
	for time.Since(outage) < 3*time.Second {
		start := time.Now()
		r := write(i)
		i++
		took := time.Since(start)
		switch r.Status {
		case 201:
			record(r) // raced the shutdown: acknowledged, so it must be kept
		case 503:
			refused++
			if r.problemCode(t) != "unavailable" || r.Header.Get("Retry-After") == "" {
				t.Fatalf("outage answer: %v %s", r.Header, r.Body)
			}
			if took > 4*time.Second {
				t.Fatalf("a write during the outage took %v to be refused", took)
			}
		default:
			t.Fatalf("write during the outage: %d %s", r.Status, r.Body)
		}
	}
	if refused == 0 {
		t.Fatal("no write was refused while NATS was down")
	}
	if r := n.do(t, req{method: "GET", path: "/readyz"}); r.Status != 503 {
		t.Errorf("readyz while NATS is down: %d %s", r.Status, r.Body)
	}

	ns.start()
	back := time.Now()
	var first time.Duration
	for ok := 0; ok < 10; i++ {
		if time.Since(back) > 15*time.Second {
			t.Fatalf("writes did not recover within 15s of NATS returning")
		}
		r := write(i)
		switch r.Status {
		case 201:
			if ok == 0 {
				first = time.Since(back)
			}
			ok++
			record(r)
		case 503:
			time.Sleep(100 * time.Millisecond)
		default:
			t.Fatalf("write after the outage: %d %s", r.Status, r.Body)
		}
	}
	t.Logf("%d writes refused during the outage; first write accepted %v after NATS returned", refused, first)
	if first > 5*time.Second {
		t.Errorf("first write accepted %v after NATS returned, want ≤ 5s", first)
	}

	check := func(n *node) {
		t.Helper()
		sch := getSchedule(t, n)
		have := map[int64]bool{}
		for _, s := range sch.Sessions {
			have[s.ID] = true
		}
		for _, id := range acked {
			if !have[id] {
				t.Errorf("acknowledged session %d is missing", id)
			}
		}
	}
	check(n)
	n.stop()
	check(startNode(t, "", nil, "--nats-url", ns.url()))
}
