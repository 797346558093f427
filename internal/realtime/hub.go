// Package realtime is the websocket hub without the websocket: connections as bounded
// queues of encoded frames, topics they subscribe to, and the ordering rules that make
// resume exact. It knows nothing of HTTP or Fiber; internal/httpapi moves its frames over
// real sockets.
//
// Ordering: a subscription starts inside the topic's lock with the caller's start
// function, which reads the subscriber's first frames (a snapshot or the missed updates)
// from the projection and returns the version they reach. Publish takes the same lock
// and is only ever called after the projection has applied what it publishes. So an
// update is either already in what start read (its version ≤ the subscriber's) and is
// skipped, or is published after the subscriber is registered and is delivered: never
// lost between snapshot and subscribe, never delivered twice.
//
// Lock order: topic.mu, then Client.mu. Hub.mu is never held while taking either.
package realtime

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/cabildo/cabildo/pkg/protocol"
)

// Frame is one encoded server frame. A broadcast is encoded once and the same Frame is
// queued to every subscriber; nobody may modify it.
type Frame []byte

// Options configure a Hub.
type Options struct {
	// QueueSize bounds each connection's queue of frames not yet written. A connection
	// whose queue is full is closed as a slow consumer, never waited on.
	QueueSize int
}

// Hub holds connections and topics.
type Hub struct {
	opts Options

	mu      sync.Mutex
	topics  map[string]*topic
	clients map[*Client]struct{}
	closed  bool

	dropped atomic.Uint64 // slow consumers closed
}

type topic struct {
	mu   sync.Mutex
	subs map[*Client]uint64 // the last version each subscriber has been given
}

// ErrClosed is returned for work on a closed client or hub.
var ErrClosed = errors.New("realtime: closed")

// New returns an empty hub.
func New(opts Options) *Hub {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 64
	}
	return &Hub{opts: opts, topics: map[string]*topic{}, clients: map[*Client]struct{}{}}
}

// Client is one connection's side of the hub.
type Client struct {
	hub  *Hub
	send chan Frame
	done chan struct{}
	once sync.Once

	mu        sync.Mutex
	topics    map[string]struct{}
	closeCode int
	closeText string
}

// Register adds a connection. It fails once the hub is shutting down.
func (h *Hub) Register() (*Client, error) {
	c := &Client{hub: h, send: make(chan Frame, h.opts.QueueSize), done: make(chan struct{}), topics: map[string]struct{}{}}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	h.clients[c] = struct{}{}
	return c, nil
}

// Frames is what the connection's writer drains, until Done.
func (c *Client) Frames() <-chan Frame { return c.send }

// Done is closed when the client is closed; CloseReason then says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// CloseReason is the close code and text the connection should close with.
func (c *Client) CloseReason() (int, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCode, c.closeText
}

// Subscriptions is the number of topics the client is subscribed to.
func (c *Client) Subscriptions() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.topics)
}

// Subscribed reports whether the client is subscribed to key.
func (c *Client) Subscribed(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.topics[key]
	return ok
}

// Enqueue queues a frame without blocking. A full queue closes the client as a slow
// consumer: everyone else stays on time, and the client resumes from its last version.
// It must not be called with a topic lock held (Close takes topic locks).
func (c *Client) Enqueue(f Frame) bool {
	if c.offer(f) {
		return true
	}
	c.closeSlow()
	return false
}

// offer queues f if there is room and the client is open.
func (c *Client) offer(f Frame) bool {
	select {
	case <-c.done:
		return false
	default:
	}
	select {
	case c.send <- f:
		return true
	default:
		return false
	}
}

func (c *Client) closeSlow() {
	select {
	case <-c.done:
		return
	default:
	}
	c.hub.dropped.Add(1)
	c.Close(protocol.CloseSlowConsumer, "slow consumer: reconnect and resume")
}

// Close ends the client once: it leaves every topic and Done is closed. The first code
// and text win.
func (c *Client) Close(code int, text string) {
	c.once.Do(func() {
		c.mu.Lock()
		c.closeCode, c.closeText = code, text
		keys := make([]string, 0, len(c.topics))
		for k := range c.topics {
			keys = append(keys, k)
		}
		clear(c.topics)
		c.mu.Unlock()
		close(c.done)
		for _, k := range keys {
			c.hub.leave(c, k)
		}
		c.hub.mu.Lock()
		delete(c.hub.clients, c)
		c.hub.mu.Unlock()
	})
}

func (h *Hub) topic(key string, create bool) *topic {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.topics[key]
	if !ok && create {
		t = &topic{subs: map[*Client]uint64{}}
		h.topics[key] = t
	}
	return t
}

// Subscribe subscribes c to key. start runs under the topic's lock and returns the
// client's first frames and the version they bring it to (see the package comment).
func (h *Hub) Subscribe(c *Client, key string, start func() ([]Frame, uint64, error)) error {
	t := h.topic(key, true)
	t.mu.Lock()
	err := h.subscribeLocked(t, c, key, start)
	t.mu.Unlock()
	if errors.Is(err, errSlow) {
		// Its first frames did not fit: closed only now, outside the topic's lock.
		c.closeSlow()
		return ErrClosed
	}
	return err
}

var errSlow = errors.New("realtime: queue full")

func (h *Hub) subscribeLocked(t *topic, c *Client, key string, start func() ([]Frame, uint64, error)) error {
	select {
	case <-c.done:
		return ErrClosed
	default:
	}
	frames, version, err := start()
	if err != nil {
		return err
	}
	for _, f := range frames {
		if !c.offer(f) {
			return errSlow
		}
	}
	t.subs[c] = version
	c.mu.Lock()
	c.topics[key] = struct{}{}
	c.mu.Unlock()
	return nil
}

// Unsubscribe removes c from key.
func (h *Hub) Unsubscribe(c *Client, key string) {
	c.mu.Lock()
	delete(c.topics, key)
	c.mu.Unlock()
	h.leave(c, key)
}

func (h *Hub) leave(c *Client, key string) {
	t := h.topic(key, false)
	if t == nil {
		return
	}
	t.mu.Lock()
	delete(t.subs, c)
	empty := len(t.subs) == 0
	t.mu.Unlock()
	if empty {
		h.mu.Lock()
		// Only drop it if nobody subscribed in between.
		if cur, ok := h.topics[key]; ok && cur == t {
			t.mu.Lock()
			if len(t.subs) == 0 {
				delete(h.topics, key)
			}
			t.mu.Unlock()
		}
		h.mu.Unlock()
	}
}

// Publish queues frame, the update to version, to every subscriber of key that has not
// got that version yet. It must be called in version order per topic, after the
// projection has applied the version. It returns the number of clients it reached.
func (h *Hub) Publish(key string, version uint64, frame Frame) int {
	t := h.topic(key, false)
	if t == nil {
		return 0
	}
	t.mu.Lock()
	n := 0
	var slow []*Client
	for c, last := range t.subs {
		if version <= last {
			continue
		}
		t.subs[c] = version
		if c.offer(frame) {
			n++
		} else {
			slow = append(slow, c)
		}
	}
	t.mu.Unlock()
	// Closing takes topic locks: only after this one is released.
	for _, c := range slow {
		c.closeSlow()
	}
	return n
}

// Stats are the hub's gauges and counters.
type Stats struct {
	Clients       int
	Topics        int
	SlowConsumers uint64
}

// Stats reads the hub's current figures.
func (h *Hub) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return Stats{Clients: len(h.clients), Topics: len(h.topics), SlowConsumers: h.dropped.Load()}
}

// Shutdown refuses new clients and closes every client with code and text (reconnect,
// on a rolling restart).
func (h *Hub) Shutdown(code int, text string) {
	h.mu.Lock()
	h.closed = true
	clients := make([]*Client, 0, len(h.clients))
	for c := range h.clients {
		clients = append(clients, c)
	}
	h.mu.Unlock()
	for _, c := range clients {
		c.Close(code, text)
	}
}

// HasTopic reports whether anyone is subscribed to key, so publishers can skip encoding.
func (h *Hub) HasTopic(key string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.topics[key]
	return ok
}
