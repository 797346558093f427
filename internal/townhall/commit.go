package townhall

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/schedule"
)

// committer group-commits one kind of town-hall write (votes, questions): one goroutine
// per node appends whatever is waiting as one log entry as soon as the previous append is
// acknowledged, then answers each writer. There is no timer: under a trickle every write
// is its own entry at once, under a burst entries grow instead of queueing, and a write
// never waits for more than the append before its own. A durable append costs about one
// fsync whatever its size (docs/benchmarks.md), so this is what lets a node take
// thousands of votes, or a swarm's questions, a second without delaying everyone else's.
//
// Writes with a key (an Idempotency-Key) are de-duplicated while they wait or are in
// flight: a retry sent meanwhile joins the first and gets its answer. Once answered, a
// retry is recognised by the projection, which remembers every key it applied.
type committer[T any] struct {
	log      Log
	maxBatch int
	what     string // "vote", "question": for the messages clients see
	// record builds the log entry that holds items, all of one event.
	record func(event string, items []T) cabildo.Record
	// prepare, when set, may change the items of an entry just before it is appended;
	// after is the sequence of this committer's previous entry (0 for none). It must
	// return by ctx's deadline, which is the entry's answer deadline.
	prepare func(ctx context.Context, event string, items []T, after uint64)
	last    uint64 // the sequence of the previous entry; run's goroutine only
	// maxQueue, when above 0, bounds the writes waiting for their entry: one more is
	// refused at once (shed), not stored. maxWait, when above 0, is how long a write may
	// wait for its entry to start: one that waited longer is shed when its turn comes,
	// never appended. Both keep a flood from queueing beyond what the log can take in a
	// moment; a shed write is answered 503 with Retry-After and was never stored.
	maxQueue int
	maxWait  time.Duration
	// answerWithin, when above 0, bounds how long any write waits for its answer: an
	// entry must be confirmed by its first write's arrival plus answerWithin, whatever
	// the writes waited for before it (the append ahead of theirs, prepare). One that is
	// not is answered unavailable; one whose deadline passed before its append started
	// is never appended. Without it, a write queued behind an append that hung until its
	// timeout would then wait for its own append's timeout too.
	answerWithin time.Duration

	mu      sync.Mutex
	pending map[string][]*write[T] // by event
	order   []string               // events in the order their first waiting write came
	keyed   map[string]*write[T]   // waiting or in flight, by event and key
	queued  int                    // writes in pending
	running bool
	closed  bool

	entries, stored, failed, shed atomic.Uint64 // for CommitStats
}

// CommitStats counts one kind of group-committed write on this node: log entries
// appended, writes they held, writes refused because their append failed (or the node
// was closing), and writes shed unstored because too many were waiting or one waited too
// long. Stored over Entries is the mean batch.
type CommitStats struct {
	Entries, Stored, Failed, Shed uint64
}

func (c *committer[T]) stats() CommitStats {
	return CommitStats{Entries: c.entries.Load(), Stored: c.stored.Load(), Failed: c.failed.Load(), Shed: c.shed.Load()}
}

// write is one waiting write; done is closed once seq and err (and item's index in the
// entry) are set, so any number of joined retries can wait for it.
type write[T any] struct {
	item  T
	key   string // event + key, when the write has one
	hash  string // the request's content: a key reused for another request is refused
	msgID string // the log's de-duplication id, used when the write is alone in its entry
	at    time.Time

	done  chan struct{}
	seq   uint64
	index int
	dup   bool // the log already held the write's message id: another request stored it
	err   error
}

func newCommitter[T any](log Log, maxBatch int, what string, record func(string, []T) cabildo.Record) *committer[T] {
	return &committer[T]{log: log, maxBatch: maxBatch, what: what, record: record,
		pending: map[string][]*write[T]{}, keyed: map[string]*write[T]{}}
}

// submit queues one write and returns the log sequence of the entry that holds it and its
// index there. key (with hash), when not empty, joins a write with the same key that is
// still waiting or in flight instead of queueing a second one; replayed says the write
// was another request's with the same key (joined here, or found in the log).
func (c *committer[T]) submit(ctx context.Context, event, key, hash string, item T) (seq uint64, index int, replayed bool, err error) {
	w := &write[T]{item: item, hash: hash, done: make(chan struct{}), at: time.Now()}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, 0, false, c.unavailable(errClosed)
	}
	if key != "" {
		w.key, w.msgID = event+"\x00"+key, event+":"+key
		if first, ok := c.keyed[w.key]; ok {
			c.mu.Unlock()
			if first.hash != hash {
				return 0, 0, false, schedule.ErrKeyReused()
			}
			seq, index, _, err := c.wait(ctx, first)
			return seq, index, true, err
		}
	}
	if c.maxQueue > 0 && c.queued >= c.maxQueue {
		c.mu.Unlock()
		c.shed.Add(1)
		return 0, 0, false, c.overloaded()
	}
	if w.key != "" {
		c.keyed[w.key] = w
	}
	c.queued++
	if len(c.pending[event]) == 0 {
		c.order = append(c.order, event)
	}
	c.pending[event] = append(c.pending[event], w)
	start := !c.running
	c.running = true
	c.mu.Unlock()
	if start {
		go c.run()
	}
	return c.wait(ctx, w)
}

func (c *committer[T]) wait(ctx context.Context, w *write[T]) (uint64, int, bool, error) {
	select {
	case <-w.done:
		return w.seq, w.index, w.dup, w.err
	case <-ctx.Done():
		// The write may still be stored: a vote retried changes nothing (votes are sets),
		// and a question retried with its Idempotency-Key is recognised.
		return 0, 0, false, &cabildo.Error{Code: cabildo.CodeTimeout, Err: ctx.Err(),
			Message: fmt.Sprintf("the %s was not confirmed in time; send it again (with the same Idempotency-Key)", c.what)}
	}
}

// run appends batches until nothing waits.
func (c *committer[T]) run() {
	for {
		c.mu.Lock()
		if len(c.order) == 0 {
			c.running = false
			c.mu.Unlock()
			return
		}
		event := c.order[0]
		batch := c.pending[event]
		if len(batch) > c.maxBatch {
			c.pending[event] = batch[c.maxBatch:]
			batch = batch[:c.maxBatch:c.maxBatch] // appending to it must not write over the rest
			// This event goes to the back, so one event's flood cannot starve another's.
			c.order = append(c.order[1:], event)
		} else {
			delete(c.pending, event)
			c.order = c.order[1:]
		}
		c.queued -= len(batch)
		c.mu.Unlock()
		if batch = c.shedLate(batch); len(batch) == 0 {
			continue
		}
		seq, dup, err := c.appendBy(event, batch)
		if err == nil {
			c.last = seq
		} else {
			// The log is not taking appends: the writes queued meanwhile would only wait
			// for the same answer, one timeout later. They get it now.
			batch = append(batch, c.takeAll()...)
		}
		c.answer(batch, seq, dup, err)
	}
}

// overloadedNow reports whether a write submitted now would be shed: the queue is full,
// or its oldest write has waited past the budget.
func (c *committer[T]) overloadedNow() bool {
	if c.maxQueue <= 0 && c.maxWait <= 0 {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.maxQueue > 0 && c.queued >= c.maxQueue {
		return true
	}
	if c.maxWait > 0 && len(c.order) > 0 {
		if w := c.pending[c.order[0]]; len(w) > 0 && time.Since(w[0].at) > c.maxWait {
			return true
		}
	}
	return false
}

// shedLate answers the writes of a batch that waited longer than maxWait for their
// entry (they are refused, never appended) and returns the rest. Writes queue in arrival
// order, so the late ones are the batch's first.
func (c *committer[T]) shedLate(batch []*write[T]) []*write[T] {
	if c.maxWait <= 0 || len(batch) == 0 {
		return batch
	}
	late := time.Now().Add(-c.maxWait)
	n := 0
	for n < len(batch) && batch[n].at.Before(late) {
		n++
	}
	if n == 0 {
		return batch
	}
	c.shed.Add(uint64(n))
	c.settle(batch[:n], 0, false, c.overloaded())
	return batch[n:]
}

// overloaded is the answer to a write shed unstored.
func (c *committer[T]) overloaded() error {
	return &cabildo.Error{Code: cabildo.CodeUnavailable, RetryAfter: time.Second, Err: errOverloaded,
		Message: fmt.Sprintf("this node is taking more %ss than it can store right now; this one was not stored: send it again after Retry-After", c.what)}
}

// answer tells each write of a batch how it went.
func (c *committer[T]) answer(batch []*write[T], seq uint64, dup bool, err error) {
	if err != nil {
		c.failed.Add(uint64(len(batch)))
	} else {
		c.entries.Add(1)
		c.stored.Add(uint64(len(batch)))
	}
	c.settle(batch, seq, dup, err)
}

// settle forgets a batch's keys and wakes its writers.
func (c *committer[T]) settle(batch []*write[T], seq uint64, dup bool, err error) {
	c.mu.Lock()
	for _, w := range batch {
		if w.key != "" && c.keyed[w.key] == w {
			delete(c.keyed, w.key)
		}
	}
	c.mu.Unlock()
	for i, w := range batch {
		w.seq, w.index, w.dup, w.err = seq, i, dup, err
		close(w.done)
	}
}

// takeAll removes every waiting write.
func (c *committer[T]) takeAll() []*write[T] {
	c.mu.Lock()
	defer c.mu.Unlock()
	var all []*write[T]
	for _, event := range c.order {
		all = append(all, c.pending[event]...)
		delete(c.pending, event)
	}
	c.order, c.queued = nil, 0
	return all
}

// appendBy appends a batch as one entry by the batch's answer deadline (see answerWithin).
func (c *committer[T]) appendBy(event string, batch []*write[T]) (seq uint64, dup bool, err error) {
	ctx := context.Background()
	if c.answerWithin > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, batch[0].at.Add(c.answerWithin))
		defer cancel()
	}
	items := make([]T, len(batch))
	for i, w := range batch {
		items[i] = w.item
	}
	if c.prepare != nil {
		c.prepare(ctx, event, items, c.last)
	}
	if ctx.Err() != nil {
		return 0, false, &cabildo.Error{Code: cabildo.CodeUnavailable, RetryAfter: 2 * time.Second, Err: errLate,
			Message: fmt.Sprintf("the log of record is slow to take %ss right now; this one was not stored: send it again after Retry-After", c.what)}
	}
	rec := c.record(event, items)
	data, err := json.Marshal(rec)
	if err != nil {
		return 0, false, fmt.Errorf("townhall: encode %s: %w", rec.Type, err)
	}
	// No expected sequence: entries need no order among themselves. Applying a vote twice
	// changes nothing, and the projection skips a question whose key it has applied
	// already. A keyed write alone in its entry (the usual case outside a burst) also
	// takes the key as the log's message id, so that a retry of an append that timed out
	// but was stored is not stored again; a retry caught in a batch may be, and is then
	// skipped by every node alike. The append's own timeout bounds it.
	var msgID string
	if len(batch) == 1 {
		msgID = batch[0].msgID
	}
	return c.log.Append(ctx, rec.Subject(), data, nil, msgID)
}

// close refuses new writes and fails the waiting ones; the batch in flight completes.
func (c *committer[T]) close() {
	c.mu.Lock()
	c.closed = true
	var waiting []*write[T]
	for event, batch := range c.pending {
		waiting = append(waiting, batch...)
		delete(c.pending, event)
	}
	c.order, c.queued = nil, 0
	c.mu.Unlock()
	c.answer(waiting, 0, false, c.unavailable(errClosed))
}

func (c *committer[T]) unavailable(err error) error {
	return &cabildo.Error{Code: cabildo.CodeUnavailable, RetryAfter: time.Second, Err: err,
		Message: fmt.Sprintf("this node is shutting down; send the %s again", c.what)}
}
