package realtime

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
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

func register(t *testing.T, h *Hub) *Client {
	t.Helper()
	c, err := h.Register()
	if err != nil {
		t.Fatal(err)
	}
	return c
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
	case f := <-c.Frames():
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
	h := New(Options{QueueSize: 4})
	slow := register(t, h)
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
	h := New(Options{QueueSize: versions + 1})
	st := &history{}
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond) // spread the joins over the run
			c, err := h.Register()
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
				case b := <-c.Frames():
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
	h := New(Options{QueueSize: 2})
	c := register(t, h)
	boom := fmt.Errorf("no such channel")
	if err := h.Subscribe(c, "x", func() ([]Frame, uint64, error) { return nil, 0, boom }); err != boom {
		t.Fatalf("start error: %v", err)
	}
	if c.Subscribed("x") {
		t.Fatal("subscribed despite the error")
	}
	// A resume that does not fit the queue closes the client: it reconnects and gets a
	// snapshot instead.
	big := []Frame{snapshot("y", 1), update("y", 2, 1), update("y", 3, 2)}
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
	}
	if _, err := h.Register(); err != ErrClosed {
		t.Fatalf("register after shutdown: %v", err)
	}
}
