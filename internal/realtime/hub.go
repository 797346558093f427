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
	"time"

	"github.com/cabildo/cabildo/pkg/protocol"
)

// Frame is one encoded server frame. A broadcast is encoded once and the same Frame is
// queued to every subscriber; nobody may modify it.
type Frame []byte

// Conn is the transport under a Client: a websocket, in production. The hub calls Write,
// Ping and Close from one goroutine at a time, and only while something is waiting to be
// written, so an idle connection holds no goroutine of its own on the write side. Abort
// may be called at any time, concurrently with a Write.
type Conn interface {
	// Write writes frames in order.
	Write(frames []Frame) error
	// Ping sends a keepalive the peer must answer.
	Ping() error
	// Close sends the close code and text (best effort) and ends the transport. It is
	// called exactly once, after the last Write.
	Close(code int, text string)
	// Abort makes a Write blocked on a peer that does not read return at once.
	Abort()
}

// PingWriter is a Conn that can send its keepalive in the same write as frames. The hub
// holds a due ping back a moment (pingGrace) for frames to go with it: at a change a
// second, ten thousand pings then cost no write of their own.
type PingWriter interface {
	// WriteWithPing writes a ping, then frames, in order.
	WriteWithPing(frames []Frame) error
}

// Options configure a Hub.
type Options struct {
	// QueueBytes bounds the bytes of frames queued for one connection and not yet
	// written. A connection whose queue would pass it is closed as a slow consumer, never
	// waited on; it reconnects and resumes. Default 1 MiB.
	QueueBytes int
	// PingEvery is how often each connection is pinged; zero disables pings.
	PingEvery time.Duration
	// Writers is how many goroutines write to connections when none is blocked on a
	// peer; default 8 per CPU.
	Writers int
}

// Hub holds connections and topics.
type Hub struct {
	opts Options

	mu      sync.Mutex
	topics  map[string]*topic
	clients map[*Client]struct{}
	closed  bool
	stop    chan struct{}

	registered uint64 // clients ever registered
	writers    *writers

	dropped atomic.Uint64 // slow consumers closed
}

type topic struct {
	mu   sync.Mutex
	subs map[*Client]uint64 // the last version each subscriber has been given
}

// ErrClosed is returned for work on a closed client or hub.
var ErrClosed = errors.New("realtime: closed")

// New returns an empty hub. Close it with Shutdown.
func New(opts Options) *Hub {
	if opts.QueueBytes <= 0 {
		opts.QueueBytes = 1 << 20
	}
	h := &Hub{opts: opts, topics: map[string]*topic{}, clients: map[*Client]struct{}{}, stop: make(chan struct{}),
		writers: newWriters(opts.Writers)}
	go h.maintain()
	return h
}

// ResumeBytes is the most a subscription's first frames may weigh: resuming more than
// this sends a snapshot instead, so that a resume never trips the slow-consumer bound.
func (h *Hub) ResumeBytes() int { return h.opts.QueueBytes / 2 }

// Client is one connection's side of the hub: its queue of frames, written to its Conn
// by the hub's writers (see writers.go).
type Client struct {
	hub    *Hub
	conn   Conn
	done   chan struct{}
	once   sync.Once
	bucket uint64 // which slice of the ping interval pings it

	mu        sync.Mutex
	queue     []Frame // frames waiting for the writer
	queued    int     // their bytes
	spare     []Frame // the writer's last batch, reused
	writing   bool    // in the writers' line or being written
	ping      bool    // a ping is due
	closed    bool
	closeCode int
	closeText string
	topics    map[string]struct{}
}

// Register adds a connection writing to conn. It fails once the hub is shutting down.
func (h *Hub) Register(conn Conn) (*Client, error) {
	c := &Client{hub: h, conn: conn, done: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	h.registered++
	c.bucket = h.registered % pingBuckets
	h.clients[c] = struct{}{}
	return c, nil
}

// Done is closed when the client is closed; CloseReason then says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// CloseReason is the close code and text the connection closes with.
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

// Ping asks for a keepalive to be written.
func (c *Client) Ping() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.ping = true
		c.wakeLocked()
	}
}

// pingLater asks for a keepalive to go with the next frames written, without putting the
// client in the writers' line for it alone; pingNow does, if it is still waiting.
func (c *Client) pingLater() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed {
		c.ping = true
	}
}

func (c *Client) pingNow() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed && c.ping {
		c.wakeLocked()
	}
}

// offer queues f if the client is open and f fits its queue.
func (c *Client) offer(f Frame) bool { return c.offerAll([]Frame{f}) }

// offerAll queues frames as one unit if the client is open. They fit an empty queue
// whatever they weigh (a big event's snapshot and the subscribed frame behind it must
// not close every subscriber as a slow consumer), else they must fit the room left.
func (c *Client) offerAll(frames []Frame) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, f := range frames {
		n += len(f)
	}
	if c.closed || (c.queued > 0 && c.queued+n > c.hub.opts.QueueBytes) {
		return false
	}
	c.queue = append(c.queue, frames...)
	c.queued += n
	c.wakeLocked()
	return true
}

// wakeLocked puts the client in the writers' line unless it is there already.
func (c *Client) wakeLocked() {
	if !c.writing {
		c.writing = true
		c.hub.writers.schedule(c)
	}
}

// flush writes what is queued as one batch and reports whether the client must go back
// in line (more arrived, or it was closed meanwhile). After Close, it closes the
// connection, once; the client then never gets in line again.
func (c *Client) flush() (more bool) {
	c.mu.Lock()
	if c.closed {
		code, text, rest := c.closeCode, c.closeText, c.queue
		c.queue, c.spare, c.queued = nil, nil, 0
		c.mu.Unlock()
		if len(rest) > 0 {
			_ = c.conn.Write(rest) // bounded by the queue and the write deadline
		}
		c.conn.Close(code, text)
		return false
	}
	batch, ping := c.queue, c.ping
	c.queue, c.spare, c.queued, c.ping = c.spare[:0], nil, 0, false
	if len(batch) == 0 && !ping {
		c.writing = false
		c.spare = batch
		c.mu.Unlock()
		return false
	}
	c.mu.Unlock()
	var err error
	if pw, ok := c.conn.(PingWriter); ok && ping && len(batch) > 0 {
		err = pw.WriteWithPing(batch)
	} else {
		if ping {
			err = c.conn.Ping()
		}
		if err == nil && len(batch) > 0 {
			err = c.conn.Write(batch)
		}
	}
	clear(batch) // let written frames go
	if err != nil {
		c.Close(protocol.CloseNormal, "") // still in line: Close does not queue it again
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.spare == nil {
		c.spare = batch
	}
	more = c.closed || c.ping || len(c.queue) > 0
	if !more {
		c.writing = false
	}
	return more
}

func (c *Client) closeSlow() {
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return
	}
	c.hub.dropped.Add(1)
	c.close(protocol.CloseSlowConsumer, "slow consumer: reconnect and resume", true)
	// A writer blocked on this peer would hold the close back until its write deadline.
	c.conn.Abort()
}

// Close ends the client once: it leaves every topic, Done is closed, and its writer
// writes what is still queued (replies to earlier frames, say), then closes the
// connection with code and text. The first code and text win.
func (c *Client) Close(code int, text string) { c.close(code, text, false) }

// close is Close; drop discards the queue instead (a slow consumer resumes anyway).
func (c *Client) close(code int, text string, drop bool) {
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.closeCode, c.closeText = code, text
		if drop {
			clear(c.queue)
			c.queue, c.queued = c.queue[:0], 0
		}
		keys := make([]string, 0, len(c.topics))
		for k := range c.topics {
			keys = append(keys, k)
		}
		c.topics = nil
		c.wakeLocked()
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
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return ErrClosed
	}
	frames, version, err := start()
	if err != nil {
		return err
	}
	if !c.offerAll(frames) {
		return errSlow
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if c.topics == nil {
		c.topics = map[string]struct{}{}
	}
	c.topics[key] = struct{}{}
	t.subs[c] = version
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

// Publish queues frames, the update to version (or the snapshot at version sent in its
// place, in parts), to every subscriber of key that has not got that version yet, as one
// unit. It must be called in version order per topic, after the projection has applied
// the version. It returns the number of clients it reached.
func (h *Hub) Publish(key string, version uint64, frames ...Frame) int {
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
		if c.offerAll(frames) {
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
	if !h.closed {
		close(h.stop)
		h.closed = true
	}
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

// pingBuckets spreads each round of pings over its interval, so that ten thousand
// connections are not pinged in the same millisecond.
const pingBuckets = 16

// pingGrace is the most a due ping waits for frames to go out with (never more than a
// bucket's slice of the interval): a connection that is sent nothing meanwhile is then
// woken for its ping alone.
const pingGrace = time.Second

// maintain is the hub's one background loop: it keeps the writers' line moving (see
// writers.go) and pings every client once per PingEvery, a slice of them at a time,
// instead of a timer per connection.
func (h *Hub) maintain() {
	t := time.NewTicker(tickEvery)
	defer t.Stop()
	var (
		round    uint64
		nextPing time.Time
		due      []*Client // pinged last round, woken at wakeAt if their ping still waits
		wakeAt   time.Time
	)
	grace := min(pingGrace, h.opts.PingEvery/pingBuckets)
	wake := func() {
		for _, c := range due {
			c.pingNow()
		}
		clear(due)
		due = due[:0]
	}
	for {
		var now time.Time
		select {
		case <-h.stop:
			return
		case now = <-t.C:
		}
		h.writers.unstall(now)
		if len(due) > 0 && !now.Before(wakeAt) {
			wake()
		}
		if h.opts.PingEvery <= 0 || now.Before(nextPing) {
			continue
		}
		wake()
		nextPing = now.Add(h.opts.PingEvery / pingBuckets)
		wakeAt = now.Add(grace)
		round++
		h.mu.Lock()
		for c := range h.clients {
			if c.bucket == round%pingBuckets {
				due = append(due, c)
			}
		}
		h.mu.Unlock()
		for _, c := range due {
			c.pingLater()
		}
	}
}
