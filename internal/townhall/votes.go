package townhall

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/cabildo/cabildo/internal/cabildo"
)

// committer group-commits votes: one goroutine per node appends whatever votes are waiting
// as one log entry as soon as the previous append is acknowledged, then answers each of
// them. There is no timer: under a trickle every vote is its own entry at once, under a
// burst entries grow instead of queueing, and a vote never waits for more than the append
// before its own. A durable append costs about one fsync whatever its size
// (docs/benchmarks.md), so this is what lets a node take thousands of votes a second.
//
// A vote is a set operation (attendee A's vote for question Q is in, or out), so applying
// one twice changes nothing: a retried request or a batch stored twice cannot count twice.
type committer struct {
	log      Log
	maxBatch int

	mu      sync.Mutex
	pending map[string][]*ballot // by event
	order   []string             // events in the order their first waiting vote came
	running bool
	closed  bool
}

type ballot struct {
	op   cabildo.VoteOp
	done chan result // buffered: the committer never blocks on an abandoned caller
}

type result struct {
	seq uint64
	err error
}

func newCommitter(log Log, maxBatch int) *committer {
	return &committer{log: log, maxBatch: maxBatch, pending: map[string][]*ballot{}}
}

// submit queues one vote and returns the log sequence of the entry that holds it.
func (c *committer) submit(ctx context.Context, event string, op cabildo.VoteOp) (uint64, error) {
	b := &ballot{op: op, done: make(chan result, 1)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, unavailable(errClosed)
	}
	if len(c.pending[event]) == 0 {
		c.order = append(c.order, event)
	}
	c.pending[event] = append(c.pending[event], b)
	start := !c.running
	c.running = true
	c.mu.Unlock()
	if start {
		go c.run()
	}
	select {
	case r := <-b.done:
		return r.seq, r.err
	case <-ctx.Done():
		// The vote may still be stored: a retry is harmless, votes being sets.
		return 0, &cabildo.Error{Code: cabildo.CodeTimeout, Message: "the vote was not confirmed in time; send it again",
			Err: ctx.Err()}
	}
}

// run appends batches until nothing waits.
func (c *committer) run() {
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
			batch = batch[:c.maxBatch]
			// This event goes to the back, so one event's flood cannot starve another's.
			c.order = append(c.order[1:], event)
		} else {
			delete(c.pending, event)
			c.order = c.order[1:]
		}
		c.mu.Unlock()
		seq, err := c.append(event, batch)
		if err != nil {
			// The log is not taking appends: the votes queued meanwhile would only wait
			// for the same answer, one timeout later. They get it now.
			batch = append(batch, c.takeAll()...)
		}
		for _, b := range batch {
			b.done <- result{seq: seq, err: err}
		}
	}
}

// takeAll removes every waiting vote.
func (c *committer) takeAll() []*ballot {
	c.mu.Lock()
	defer c.mu.Unlock()
	var all []*ballot
	for _, event := range c.order {
		all = append(all, c.pending[event]...)
		delete(c.pending, event)
	}
	c.order = nil
	return all
}

func (c *committer) append(event string, batch []*ballot) (uint64, error) {
	rec := cabildo.Record{Type: cabildo.RecordVotesCast, Event: event, Votes: make([]cabildo.VoteOp, len(batch))}
	for i, b := range batch {
		rec.Votes[i] = b.op
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return 0, fmt.Errorf("townhall: encode votes: %w", err)
	}
	// No expected sequence and no message id: batches need no order among themselves,
	// and a batch stored twice changes nothing. The append's own timeout bounds it.
	seq, _, err := c.log.Append(context.Background(), rec.Subject(), data, nil, "")
	return seq, err
}

// close refuses new votes and fails the waiting ones; the batch in flight completes.
func (c *committer) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for event, batch := range c.pending {
		for _, b := range batch {
			b.done <- result{err: unavailable(errClosed)}
		}
		delete(c.pending, event)
	}
	c.order = nil
}

func unavailable(err error) error {
	return &cabildo.Error{Code: cabildo.CodeUnavailable, Message: "this node is shutting down; send the vote again",
		RetryAfter: time.Second, Err: err}
}
