package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cabildo/cabildo/internal/natslog"
	"github.com/cabildo/cabildo/pkg/client"
)

// Scenario 2 of docs/reliability.md at tier T, scaled to what `make test` can carry.
//
// The scenario asks for 2,000 clients. Here the clients and the balancer run in the test
// process under the race detector, where each update delivered to a client costs about
// 50-100 µs of CPU (socket reads and splices, frame decoding, the detector's bookkeeping).
// With 2,000 clients that is ~130 ms per update, so the organizer, who waits for each ack,
// manages ~8 writes/s: 1,000 writes took 132 s on 2 cores (the test 148 s), and the
// reconnect storm is measured on a starved process. 200 clients keep the stream at
// 50-90 writes/s (up to 18,000 deliveries/s) and the test at 20-35 s, so A dies while
// updates flow, as the scenario means; 300 clients already drop it to ~35/s and the test
// to 35-60 s. The 2,000- and 10,000-client runs belong to the soak tier, which is not
// automated yet (docs/reliability.md).
//
// Fan-out latency is logged, not asserted: under the detector it measures the test's
// own clients more than gateway B.
const (
	failoverClients  = 200
	failoverWrites   = 1000
	failoverInterval = 10 * time.Millisecond // at most 100 writes/s: each write waits for its ack
	// failoverReconnect is the promise: every client dropped by the kill is connected
	// again within this time.
	failoverReconnect = 5 * time.Second
	// One client in failoverSample records when each update arrived, for the fan-out
	// latency figure.
	failoverSample = 10
)

// TestGatewayFailover is scenario 2, "kill 1 of 2 gateways during broadcast". Two gateways
// run as real processes on one NATS JetStream owned by the test, behind a TCP balancer
// that spreads the SDK clients over both. An organizer writes to gateway B while gateway A
// is SIGKILLed halfway through. It proves that losing a gateway loses nothing: every client
// that was on A reconnects (through the balancer, to B) within 5 s and resumes from its
// last version, so every client ends with every acknowledged version exactly once, in
// order, prev chaining, and every acknowledged write is in the log.
func TestGatewayFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cabildo, runs two gateway processes and kills one")
	}
	began := time.Now()

	// The log lives in the test process, so killing a gateway cannot take it along.
	emb, err := natslog.StartEmbedded(natslog.EmbeddedOptions{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", ServerName: "failover-nats"})
	if err != nil {
		t.Fatalf("start NATS: %v", err)
	}
	t.Cleanup(emb.Shutdown)

	// Both gateways verify tokens with one key, as replicas behind one balancer must.
	keyDir := t.TempDir()
	gw := []string{"--nats-url", emb.ClientURL(), "--signing-key-file", filepath.Join(keyDir, "signing.key"),
		// Every client comes from 127.0.0.1 through the balancer, and after the kill all of
		// them are on B.
		"--ws-max-conns-per-ip", strconv.Itoa(2 * failoverClients)}
	procA, a := startProcess(t, t.TempDir(), append(gw, "--demo")...) // A loads the demo into the empty log
	_, b := startProcess(t, t.TempDir(), gw...)
	lb := startBalancer(t, strings.TrimPrefix(a.base, "http://"), strings.TrimPrefix(b.base, "http://"))

	tok := mint(t, keyDir, demoEvent, "organizer")
	sch := getSchedule(t, b)
	s := pickSession(t, sch, "breakout")
	var rooms []string // two rooms other than the session's, so every move is a change
	for _, r := range sch.Rooms {
		if r.ID != s.Room && len(rooms) < 2 {
			rooms = append(rooms, r.ID)
		}
	}
	if len(rooms) < 2 {
		t.Fatalf("the demo has too few rooms: %v", sch.Rooms)
	}

	// The clients, all through the balancer, all subscribed at the schedule's version.
	start := time.Now()
	var killedAt atomic.Int64 // nanoseconds since start; 0 until A is killed
	clients := dialFailoverClients(t, "ws://"+lb.addr()+"/v1/ws", start, &killedAt)
	checkFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		for i, fc := range clients {
			if last, ok := fc.sub.Last(fc.c); !ok || last < sch.Version {
				return fmt.Errorf("client %d has no snapshot at version %d yet", i, sch.Version)
			}
		}
		return nil
	})
	onA, onB := lb.open(0), lb.open(1)
	t.Logf("%d clients connected (%d on A, %d on B) in %v", len(clients), onA, onB, time.Since(start).Round(time.Millisecond))
	if onA == 0 || onB == 0 {
		t.Fatalf("the balancer put %d clients on A and %d on B, want both in use", onA, onB)
	}

	// The organizer writes to B, the survivor, at a steady rate; A dies halfway.
	acked := make([]uint64, 0, failoverWrites)
	sentAt := make([]time.Duration, 0, failoverWrites)
	writeLat := make([]time.Duration, 0, failoverWrites)
	writing := time.Now()
	for i := range failoverWrites {
		time.Sleep(time.Until(writing.Add(time.Duration(i) * failoverInterval))) // pace, not sync
		if i == failoverWrites/2 {
			onA = lb.open(0)
			killedAt.Store(int64(time.Since(start)))
			if err := procA.Process.Kill(); err != nil { // SIGKILL, to the process this test started
				t.Fatal(err)
			}
			_ = procA.Wait()
		}
		sentAt = append(sentAt, time.Since(start))
		acked = append(acked, moveSession(t, b, tok, s.ID, rooms[i%2]))
		writeLat = append(writeLat, time.Since(start)-sentAt[i])
	}
	took, killed := time.Since(writing), time.Duration(killedAt.Load())
	last := acked[len(acked)-1]
	wl := percentiles(writeLat)
	t.Logf("%d writes acknowledged by B in %v (%.0f/s; ack p50 %v p99 %v max %v); A killed %v into the writing with %d clients on it",
		len(acked), took.Round(time.Millisecond), float64(len(acked))/took.Seconds(), wl[0], wl[1], wl[2], killed-sentAt[0], onA)

	// The writing went on for seconds after the kill: by now every client on A has noticed.
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		away := 0
		for _, fc := range clients {
			fc.mu.Lock()
			if fc.dropped != 0 && fc.back == 0 {
				away++
			}
			fc.mu.Unlock()
		}
		if away > 0 {
			return fmt.Errorf("%d clients dropped by the kill have not reconnected", away)
		}
		return nil
	})
	checkFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		behind := 0
		for _, fc := range clients {
			if v, _ := fc.sub.Last(fc.c); v < last {
				behind++
			}
		}
		if behind > 0 {
			return fmt.Errorf("%d of %d clients have not reached the last acknowledged version %d", behind, len(clients), last)
		}
		return nil
	})
	if nowA, nowB := lb.open(0), lb.open(1); nowA != 0 || nowB != int64(len(clients)) {
		t.Errorf("after the failover the balancer has %d connections to A and %d to B, want 0 and %d", nowA, nowB, len(clients))
	}

	// 0 of the acknowledged writes lost: the log's changes since the snapshot are exactly them.
	var changes changesBody
	b.do(t, req{method: "GET", path: fmt.Sprintf("/v1/events/%s/changes?since=%d", demoEvent, sch.Version)}).json(t, &changes)
	var logged []uint64
	for _, ch := range changes.Changes {
		logged = append(logged, ch.Version)
	}
	if !slices.Equal(logged, acked) || changes.Version != last {
		t.Errorf("the log holds %d changes up to version %d after %d, want exactly the %d acknowledged writes up to %d",
			len(logged), changes.Version, sch.Version, len(acked), last)
	}

	// Every client: one snapshot, then every acknowledged version once, in order, chained;
	// every client dropped by the kill connected again within the promise.
	var reconnect, resumed, fanout []time.Duration
	dropped := 0
	for i, fc := range clients {
		fc.mu.Lock()
		st := fc.c.Stats()
		if fc.snapshots != 1 || fc.broken != 0 || st.Gaps != 0 || st.Duplicates != 0 || !slices.Equal(fc.seen, acked) {
			t.Errorf("client %d: %d snapshots, %d broken prev chains, SDK stats %+v, %d of %d versions in order",
				i, fc.snapshots, fc.broken, st, len(fc.seen), len(acked))
		}
		if fc.dropped != 0 {
			dropped++
			if fc.back == 0 {
				t.Errorf("client %d was dropped %v after the kill and never reconnected", i, fc.dropped-killed)
			} else {
				reconnect = append(reconnect, fc.back-killed)
			}
			if fc.resumed != 0 {
				resumed = append(resumed, fc.resumed-killed)
			}
		}
		if fc.dropped == 0 && len(fc.arrived) == len(sentAt) { // B's own clients: fan-out during the storm
			for j, at := range fc.arrived {
				fanout = append(fanout, at-sentAt[j])
			}
		}
		fc.mu.Unlock()
	}
	if dropped < int(onA) {
		t.Errorf("%d clients were dropped, want at least the %d that were on A", dropped, onA)
	}
	rc, rs, fo := percentiles(reconnect), percentiles(resumed), percentiles(fanout)
	t.Logf("%d clients dropped by the kill; reconnected after p50 %v p99 %v max %v; resumed (first update on the new connection) p50 %v p99 %v max %v",
		dropped, rc[0], rc[1], rc[2], rs[0], rs[1], rs[2])
	t.Logf("fan-out on B (write sent to update received, %d samples): p50 %v p99 %v max %v", len(fanout), fo[0], fo[1], fo[2])
	if rc[2] > failoverReconnect {
		t.Errorf("the slowest client reconnected %v after the kill, want ≤ %v", rc[2], failoverReconnect)
	}
	t.Logf("scenario 2 took %v", time.Since(began).Round(time.Millisecond))
}

// failoverClient is one SDK client with its own record of what it saw. Its fields are
// written by the SDK's callbacks, on the client's read goroutine.
type failoverClient struct {
	c   *client.Client
	sub *client.Subscription

	mu        sync.Mutex
	snapshots int
	last      uint64
	seen      []uint64
	broken    int             // updates whose prev was not the last version seen
	arrived   []time.Duration // when each update arrived, in sampled clients only
	// Since the test began: the first drop after the kill, the first connection after
	// that, and the first update delivered on it.
	dropped, back, resumed time.Duration
}

// dialFailoverClients connects failoverClients SDK clients to url and subscribes each to
// the demo schedule. Times are measured from start; killedAt says when A died.
func dialFailoverClients(t *testing.T, url string, start time.Time, killedAt *atomic.Int64) []*failoverClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	clients := make([]*failoverClient, failoverClients)
	var wg sync.WaitGroup
	dials := make(chan struct{}, 16) // handshakes in flight
	for i := range clients {
		fc := &failoverClient{seen: make([]uint64, 0, failoverWrites)}
		if i%failoverSample == 0 {
			fc.arrived = make([]time.Duration, 0, failoverWrites)
		}
		clients[i] = fc
		opts := client.Options{
			URL: url,
			// The SDK's jittered backoff, bounded so a dropped client retries within the promise.
			MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second,
			OnDisconnect: func(int, error) {
				fc.mu.Lock()
				if killedAt.Load() != 0 && fc.dropped == 0 {
					fc.dropped = time.Since(start)
				}
				fc.mu.Unlock()
			},
			OnConnect: func() {
				fc.mu.Lock()
				if fc.dropped != 0 && fc.back == 0 {
					fc.back = time.Since(start)
				}
				fc.mu.Unlock()
			},
		}
		dials <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-dials }()
			c, err := client.Dial(ctx, opts)
			if err != nil {
				t.Errorf("client %d: %v", i, err)
				return
			}
			fc.c = c
			fc.sub, err = c.Subscribe("schedule:"+demoEvent, "en", client.Handler{
				OnSnapshot: func(v uint64, _ json.RawMessage) {
					fc.mu.Lock()
					fc.snapshots++
					fc.last = v
					fc.mu.Unlock()
				},
				OnUpdate: func(v, prev uint64, _ json.RawMessage) {
					now := time.Since(start)
					fc.mu.Lock()
					if prev != fc.last {
						fc.broken++
					}
					fc.last = v
					fc.seen = append(fc.seen, v)
					if fc.arrived != nil {
						fc.arrived = append(fc.arrived, now)
					}
					if fc.back != 0 && fc.resumed == 0 {
						fc.resumed = now
					}
					fc.mu.Unlock()
				},
			})
			if err != nil {
				t.Errorf("client %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, fc := range clients {
			if fc.c != nil {
				fc.c.Close()
			}
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	return clients
}

// percentiles returns the p50, p99 and maximum of d (zeros when empty).
func percentiles(d []time.Duration) [3]time.Duration {
	if len(d) == 0 {
		return [3]time.Duration{}
	}
	slices.Sort(d)
	at := func(p float64) time.Duration { return percentile(d, p).Round(time.Millisecond) }
	return [3]time.Duration{at(.50), at(.99), at(1)}
}

// balancer is a TCP load balancer on loopback standing in for the one in front of a real
// deployment: each accepted connection is piped to the next backend in turn, skipping
// backends that refuse the dial, and closed on both sides when either side ends.
type balancer struct {
	ln       net.Listener
	backends []string
	next     atomic.Uint64
	live     []atomic.Int64 // open connections per backend

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func startBalancer(t *testing.T, backends ...string) *balancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lb := &balancer{ln: ln, backends: backends, live: make([]atomic.Int64, len(backends)), conns: map[net.Conn]struct{}{}}
	lb.wg.Add(1)
	go lb.serve()
	t.Cleanup(lb.close)
	return lb
}

func (lb *balancer) addr() string { return lb.ln.Addr().String() }

// open is the number of connections piped to backend i right now.
func (lb *balancer) open(i int) int64 { return lb.live[i].Load() }

func (lb *balancer) serve() {
	defer lb.wg.Done()
	for {
		c, err := lb.ln.Accept()
		if err != nil {
			return // closed
		}
		lb.wg.Add(1)
		go lb.pipe(c)
	}
}

// pipe connects c to a backend and copies both ways until either side ends.
func (lb *balancer) pipe(c net.Conn) {
	defer lb.wg.Done()
	up, i := lb.dial()
	if up == nil || !lb.track(c, up) {
		c.Close()
		if up != nil {
			up.Close()
		}
		return
	}
	lb.live[i].Add(1)
	defer lb.live[i].Add(-1)
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(up, c)
		c.Close()
		up.Close()
		close(done)
	}()
	_, _ = io.Copy(c, up)
	c.Close()
	up.Close()
	<-done
	lb.untrack(c, up)
}

// dial returns a connection to the next backend that accepts one, and its index.
func (lb *balancer) dial() (net.Conn, int) {
	first := int(lb.next.Add(1) - 1)
	for k := range lb.backends {
		i := (first + k) % len(lb.backends)
		if up, err := net.DialTimeout("tcp", lb.backends[i], time.Second); err == nil {
			return up, i
		}
	}
	return nil, 0
}

func (lb *balancer) track(cs ...net.Conn) bool {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if lb.closed {
		return false
	}
	for _, c := range cs {
		lb.conns[c] = struct{}{}
	}
	return true
}

func (lb *balancer) untrack(cs ...net.Conn) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	for _, c := range cs {
		delete(lb.conns, c)
	}
}

// close stops accepting, cuts every piped connection and waits for its goroutines.
func (lb *balancer) close() {
	lb.ln.Close()
	lb.mu.Lock()
	lb.closed = true
	for c := range lb.conns {
		c.Close()
	}
	lb.mu.Unlock()
	lb.wg.Wait()
}
