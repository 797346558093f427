package realtime

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cabildo/cabildo/pkg/protocol"
)

func update(key string, version, prev uint64) Frame {
	b, _ := json.Marshal(protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: key, Version: version, Prev: &prev})
	return b
}

func snapshot(key string, version uint64) Frame {
	b, _ := json.Marshal(protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: key, Version: version})
	return b
}

// testConn is a realtime.Conn that hands written frames to the test. While hold is
// set, Write blocks like a peer that stops reading, until Abort.
type testConn struct {
	frames chan Frame
	closed chan struct{} // closed by Close
	hold   bool
	abort  chan struct{}
	once   sync.Once

	mu    sync.Mutex
	code  int
	pings int
}

func newTestConn(hold bool) *testConn {
	return &testConn{frames: make(chan Frame, 100_000), closed: make(chan struct{}), hold: hold, abort: make(chan struct{})}
}

func (tc *testConn) Write(frames []Frame) error {
	if tc.hold {
		<-tc.abort
		return fmt.Errorf("aborted")
	}
	for _, f := range frames {
		tc.frames <- f
	}
	return nil
}

func (tc *testConn) Ping() error {
	tc.mu.Lock()
	tc.pings++
	tc.mu.Unlock()
	return nil
}

func (tc *testConn) Close(code int, _ string) {
	tc.mu.Lock()
	tc.code = code
	tc.mu.Unlock()
	close(tc.closed) // a second Close would panic: the hub must call it once
}

func (tc *testConn) Abort() { tc.once.Do(func() { close(tc.abort) }) }

func registerConn(t *testing.T, h *Hub, tc *testConn) *Client {
	t.Helper()
	c, err := h.Register(tc)
	if err != nil {
		t.Fatal(err)
	}
	conns.Store(c, tc)
	return c
}

func register(t *testing.T, h *Hub) *Client {
	t.Helper()
	return registerConn(t, h, newTestConn(false))
}

// conns maps clients to their test connections.
var conns sync.Map

func connOf(c *Client) *testConn {
	tc, _ := conns.Load(c)
	return tc.(*testConn)
}

func subscribeAt(t *testing.T, h *Hub, c *Client, key string, v uint64) {
	t.Helper()
	if err := h.Subscribe(c, key, func() ([]Frame, uint64, error) { return []Frame{snapshot(key, v)}, v, nil }); err != nil {
		t.Fatal(err)
	}
}

func recv(t *testing.T, c *Client) Frame {
	t.Helper()
	select {
	case f := <-connOf(c).frames:
		return f
	case <-time.After(5 * time.Second):
		t.Fatal("no frame within 5s")
	}
	return nil
}

func TestBroadcastEncodedOnce(t *testing.T) {
	h := New(Options{})
	var clients []*Client
	for range 3 {
		c := register(t, h)
		subscribeAt(t, h, c, "schedule:e", 1)
		recv(t, c) // snapshot
		clients = append(clients, c)
	}
	f := update("schedule:e", 2, 1)
	if n := h.Publish("schedule:e", 2, f); n != 3 {
		t.Fatalf("reached %d clients, want 3", n)
	}
	for _, c := range clients {
		if got := recv(t, c); &got[0] != &f[0] {
			t.Fatal("a client got a copy of the frame, not the one encoding")
		}
	}
	if n := h.Publish("schedule:e", 2, f); n != 0 {
		t.Fatalf("a repeated version reached %d clients, want 0", n)
	}
	if n := h.Publish("schedule:other", 3, f); n != 0 {
		t.Fatalf("a topic without subscribers reached %d", n)
	}
}

func TestSlowConsumerClosedOthersServed(t *testing.T) {
	frame := update("k", 1, 0)
	h := New(Options{QueueBytes: 4 * len(frame)})
	slow := registerConn(t, h, newTestConn(true))
	subscribeAt(t, h, slow, "k", 0)
	fast := register(t, h)
	subscribeAt(t, h, fast, "k", 0)
	recv(t, fast)
	for v := uint64(1); v <= 20; v++ {
		h.Publish("k", v, update("k", v, v-1))
		if got := recv(t, fast); got == nil {
			t.Fatal("fast client starved")
		}
	}
	select {
	case <-slow.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("slow client not closed")
	}
	if code, _ := slow.CloseReason(); code != protocol.CloseSlowConsumer {
		t.Fatalf("slow client closed with %d, want %d", code, protocol.CloseSlowConsumer)
	}
	// Its writer was blocked on the peer: the close aborted the write and closed the
	// connection with the slow-consumer code.
	select {
	case <-connOf(slow).closed:
	case <-time.After(5 * time.Second):
		t.Fatal("slow client's connection not closed")
	}
	if tc := connOf(slow); tc.code != protocol.CloseSlowConsumer {
		t.Fatalf("connection closed with %d", tc.code)
	}
	if st := h.Stats(); st.SlowConsumers != 1 || st.Clients != 1 {
		t.Fatalf("stats %+v, want 1 slow consumer and 1 client left", st)
	}
	if slow.Subscribed("k") {
		t.Fatal("a closed client is still subscribed")
	}
}

// history is a stand-in for the projection: versions applied in order, then published.
type history struct {
	mu      sync.Mutex
	version uint64
}

func (s *history) apply(v uint64) {
	s.mu.Lock()
	s.version = v
	s.mu.Unlock()
}

func (s *history) current() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// TestNoGapNoDuplicateWhileSubscribing: clients subscribe at random moments while
// versions are applied and published; each sees its snapshot, then every later version
// exactly once, in order, prev chaining. This is the classic bug of an update landing
// between reading the snapshot and subscribing.
func TestNoGapNoDuplicateWhileSubscribing(t *testing.T) {
	const (
		key      = "schedule:e"
		versions = 3000
		clients  = 40
	)
	h := New(Options{QueueBytes: 1 << 30})
	st := &history{}
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond) // spread the joins over the run
			tc := newTestConn(false)
			c, err := h.Register(tc)
			if err != nil {
				errs <- err
				return
			}
			err = h.Subscribe(c, key, func() ([]Frame, uint64, error) {
				v := st.current()
				return []Frame{snapshot(key, v)}, v, nil
			})
			if err != nil {
				errs <- err
				return
			}
			var last uint64
			for first := true; last < versions; first = false {
				var f protocol.ServerFrame
				select {
				case b := <-tc.frames:
					_ = json.Unmarshal(b, &f)
				case <-time.After(10 * time.Second):
					errs <- fmt.Errorf("client %d stuck at %d", i, last)
					return
				}
				switch {
				case first && f.Type != protocol.TypeSnapshot:
					errs <- fmt.Errorf("client %d: first frame %s", i, f.Type)
					return
				case first:
					last = f.Version
				case f.Prev == nil || *f.Prev != last || f.Version != last+1:
					errs <- fmt.Errorf("client %d: after %d got version %d prev %v", i, last, f.Version, f.Prev)
					return
				default:
					last = f.Version
				}
			}
		}()
	}
	for v := uint64(1); v <= versions; v++ {
		st.apply(v)
		h.Publish(key, v, update(key, v, v-1))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestUnsubscribeAndTopicCleanup(t *testing.T) {
	h := New(Options{})
	c := register(t, h)
	subscribeAt(t, h, c, "a", 0)
	subscribeAt(t, h, c, "b", 0)
	recv(t, c)
	recv(t, c)
	if got := c.Subscriptions(); got != 2 {
		t.Fatalf("%d subscriptions, want 2", got)
	}
	h.Unsubscribe(c, "a")
	if n := h.Publish("a", 1, update("a", 1, 0)); n != 0 {
		t.Fatalf("unsubscribed client reached: %d", n)
	}
	if st := h.Stats(); st.Topics != 1 {
		t.Fatalf("%d topics, want 1 after the last subscriber left", st.Topics)
	}
	c.Close(protocol.CloseNormal, "bye")
	c.Close(protocol.CloseReconnect, "again") // the first reason wins
	if code, text := c.CloseReason(); code != protocol.CloseNormal || text != "bye" {
		t.Fatalf("close reason %d %q", code, text)
	}
	if st := h.Stats(); st.Topics != 0 || st.Clients != 0 {
		t.Fatalf("stats after close %+v", st)
	}
	if err := h.Subscribe(c, "a", func() ([]Frame, uint64, error) { return nil, 0, nil }); err != ErrClosed {
		t.Fatalf("subscribe on a closed client: %v", err)
	}
}

func TestSubscribeStartErrorAndOverflow(t *testing.T) {
	big := []Frame{snapshot("y", 1), update("y", 2, 1), update("y", 3, 2)}
	h := New(Options{QueueBytes: len(big[0]) + len(big[1])})
	c := registerConn(t, h, newTestConn(true))
	boom := fmt.Errorf("no such channel")
	if err := h.Subscribe(c, "x", func() ([]Frame, uint64, error) { return nil, 0, boom }); err != boom {
		t.Fatalf("start error: %v", err)
	}
	if c.Subscribed("x") {
		t.Fatal("subscribed despite the error")
	}
	// First frames heavier than the bound fit an empty queue as one unit (a big event's
	// snapshot and the subscribed frame behind it)...
	if err := h.Subscribe(c, "z", func() ([]Frame, uint64, error) { return big, 3, nil }); err != nil {
		t.Fatalf("heavy start on an empty queue: %v", err)
	}
	// ...but not behind a backlog: the writer is blocked on the peer with the first
	// batch, and this update waits in the queue.
	checkFor(t, func() bool { c.mu.Lock(); defer c.mu.Unlock(); return len(c.queue) == 0 })
	h.Publish("z", 4, update("z", 4, 3))
	if err := h.Subscribe(c, "y", func() ([]Frame, uint64, error) { return big, 3, nil }); err != ErrClosed {
		t.Fatalf("overflowing start: %v", err)
	}
	if code, _ := c.CloseReason(); code != protocol.CloseSlowConsumer {
		t.Fatalf("closed with %d", code)
	}
}

func TestShutdown(t *testing.T) {
	h := New(Options{})
	a, b := register(t, h), register(t, h)
	subscribeAt(t, h, a, "k", 0)
	h.Shutdown(protocol.CloseReconnect, "restarting")
	for _, c := range []*Client{a, b} {
		select {
		case <-c.Done():
		default:
			t.Fatal("client not closed by shutdown")
		}
		if code, _ := c.CloseReason(); code != protocol.CloseReconnect {
			t.Fatalf("closed with %d", code)
		}
		select {
		case <-connOf(c).closed:
		case <-time.After(5 * time.Second):
			t.Fatal("connection not closed by shutdown")
		}
		if code := connOf(c).code; code != protocol.CloseReconnect {
			t.Fatalf("connection closed with %d", code)
		}
	}
	if _, err := h.Register(newTestConn(false)); err != ErrClosed {
		t.Fatalf("register after shutdown: %v", err)
	}
}

// TestIdleClientsHoldNoGoroutine: a writer runs only while a client has frames waiting,
// so a thousand idle subscribers cost no goroutines once a broadcast is written.
func TestIdleClientsHoldNoGoroutine(t *testing.T) {
	h := New(Options{})
	defer h.Shutdown(protocol.CloseReconnect, "")
	base := runtime.NumGoroutine()
	var clients []*Client
	for range 1000 {
		c := register(t, h)
		subscribeAt(t, h, c, "k", 0)
		clients = append(clients, c)
	}
	h.Publish("k", 1, update("k", 1, 0))
	for _, c := range clients {
		recv(t, c) // snapshot
		recv(t, c) // update
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base+10 {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines for 1000 idle clients, %d before them", runtime.NumGoroutine(), base)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFrameLargerThanQueueFitsEmptyQueue(t *testing.T) {
	h := New(Options{QueueBytes: 16})
	c := register(t, h)
	big := snapshot("k", 1)
	if len(big) <= 16 {
		t.Fatalf("test frame too small: %d bytes", len(big))
	}
	subscribeAt(t, h, c, "k", 1)
	if got := recv(t, c); string(got) != string(snapshot("k", 1)) {
		t.Fatalf("got %s", got)
	}
	if code, _ := c.CloseReason(); code != 0 {
		t.Fatalf("closed with %d", code)
	}
}

func TestPingsEveryClient(t *testing.T) {
	h := New(Options{PingEvery: 160 * time.Millisecond})
	defer h.Shutdown(protocol.CloseReconnect, "")
	var clients []*Client
	for range 40 {
		clients = append(clients, register(t, h))
	}
	checkPings := func(min int) error {
		for i, c := range clients {
			tc := connOf(c)
			tc.mu.Lock()
			n := tc.pings
			tc.mu.Unlock()
			if n < min {
				return fmt.Errorf("client %d pinged %d times, want at least %d", i, n, min)
			}
		}
		return nil
	}
	deadline := time.Now().Add(20 * time.Second) // generous: a loaded CI machine
	for err := checkPings(2); err != nil; err = checkPings(2) {
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBlockedPeerDoesNotStallOthers: with a single writer, blocked on a peer that does
// not read, the others' frames are still written (the hub adds a writer).
func TestBlockedPeerDoesNotStallOthers(t *testing.T) {
	h := New(Options{Writers: 1})
	defer h.Shutdown(protocol.CloseReconnect, "")
	stuck := registerConn(t, h, newTestConn(true))
	subscribeAt(t, h, stuck, "k", 0) // its snapshot's write blocks the only writer
	defer connOf(stuck).Abort()
	for i := range 3 {
		c := register(t, h)
		subscribeAt(t, h, c, "k", 0)
		if got := recv(t, c); got == nil {
			t.Fatalf("client %d got nothing", i)
		}
	}
}

// checkFor polls cond for up to five seconds.
func checkFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestCloseWritesWhatIsQueued: a close for a bad frame still delivers the replies queued
// before it (a pong, a rate-limit warning), then closes with its code.
func TestCloseWritesWhatIsQueued(t *testing.T) {
	h := New(Options{Writers: 1})
	defer h.Shutdown(protocol.CloseReconnect, "")
	tc := newTestConn(false)
	c := registerConn(t, h, tc)
	// Hold the only writer on another client so that the pong stays queued.
	stuck := registerConn(t, h, newTestConn(true))
	stuck.Enqueue(snapshot("s", 1))
	defer connOf(stuck).Abort()
	c.Enqueue(Frame(`{"type":"pong","id":1}`))
	c.Close(protocol.ClosePolicy, "send JSON text frames")
	if got := recv(t, c); string(got) != `{"type":"pong","id":1}` {
		t.Fatalf("got %s, want the pong", got)
	}
	select {
	case <-tc.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("not closed")
	}
	if tc.code != protocol.ClosePolicy {
		t.Fatalf("closed with %d", tc.code)
	}
}

// pingConn is a testConn that takes its pings with its frames, like the websocket.
type pingConn struct {
	*testConn
	withFrames int // pings written with frames
}

func (pc *pingConn) WriteWithPing(frames []Frame) error {
	pc.mu.Lock()
	pc.withFrames++
	pc.mu.Unlock()
	return pc.Write(frames)
}

// TestPingsRideWithFrames: a connection that is being sent frames gets its pings in the
// same writes (no write for a ping alone); one that is sent nothing still gets them on
// their own, within the grace.
func TestPingsRideWithFrames(t *testing.T) {
	h := New(Options{PingEvery: 320 * time.Millisecond}) // a round every 20 ms, grace 20 ms
	defer h.Shutdown(protocol.CloseReconnect, "")
	busy := &pingConn{testConn: newTestConn(false)}
	bc, err := h.Register(busy)
	if err != nil {
		t.Fatal(err)
	}
	idle := register(t, h)
	subscribeAt(t, h, bc, "k", 0)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // a frame every 5 ms: always some within a ping's grace
		defer close(done)
		for v := uint64(1); ; v++ {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			h.Publish("k", v, update("k", v, v-1))
		}
	}()
	go func() {
		for range busy.frames {
		}
	}()
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	<-done
	busy.mu.Lock()
	alone, with := busy.pings, busy.withFrames
	busy.mu.Unlock()
	it := connOf(idle)
	it.mu.Lock()
	idlePings := it.pings
	it.mu.Unlock()
	if with < 2 || alone > with/4 {
		t.Fatalf("busy connection: %d pings with frames, %d alone; want nearly all with frames", with, alone)
	}
	if idlePings < 2 {
		t.Fatalf("idle connection pinged %d times", idlePings)
	}
}
