package rediscache

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrUnavailable is what every operation returns, wrapped with its context, while the
// breaker is open: an earlier operation found Redis gone or hung, and until a background
// probe finds it answering again the Cache does not ask it. Callers degrade on it exactly as
// on any other cache error (render again, count rate limits locally, rebuild from the log).
var ErrUnavailable = errors.New("redis unavailable")

// Probe intervals while the breaker is open: the first probe soon, since most outages are
// short (a restart, a failover), then backing off, but never past about a second so a
// node uses Redis again within a second or two of it coming back.
const (
	probeFirst = 250 * time.Millisecond
	probeMax   = time.Second
)

// breaker is a circuit breaker with one rule: a single operation that found Redis
// unreachable opens it, and only a background probe closes it. Hand-written rather than
// github.com/sony/gobreaker because gobreaker recovers by letting live requests through
// (half-open), so a request would pay a timeout each time Redis is tried and is still down;
// here no request ever waits on a Redis that was last seen gone.
//
// state counts transitions: even while closed, odd while open. An operation remembers the
// state it started in and may open only that one, so an operation that started before the
// breaker last closed cannot reopen it with its stale failure, and of the operations that
// were in flight when Redis went away only the first one to fail opens it and logs.
type breaker struct {
	log      *slog.Logger
	state    atomic.Uint64
	openedAt atomic.Int64  // UnixNano of the last opening, for the log line on closing
	opened   chan struct{} // capacity 1: wakes the prober
}

func newBreaker(log *slog.Logger) *breaker {
	return &breaker{log: log, opened: make(chan struct{}, 1)}
}

// allow returns the state an operation starts in and whether it may go to Redis.
func (b *breaker) allow() (uint64, bool) {
	s := b.state.Load()
	return s, s%2 == 0
}

// open opens the breaker if it is still in state s, the closed state the failed operation
// started in.
func (b *breaker) open(s uint64, err error) {
	if !b.state.CompareAndSwap(s, s+1) {
		return
	}
	b.openedAt.Store(time.Now().UnixNano())
	b.log.Warn("redis unavailable; serving without the shared cache and probing it in the background", "err", err)
	select {
	case b.opened <- struct{}{}:
	default:
	}
}

// close closes the breaker after a successful probe; only the prober calls it.
func (b *breaker) close() {
	if s := b.state.Load(); s%2 == 1 && b.state.CompareAndSwap(s, s+1) {
		down := time.Since(time.Unix(0, b.openedAt.Load()))
		b.log.Info("redis answers again; using the shared cache", "unavailable_for", down.Round(time.Millisecond))
	}
}

// unreachable reports whether err, from an operation under the caller's ctx, means Redis
// cannot be reached (timed out, refused, reset, pool exhausted), as opposed to an answer
// (a miss, an error reply) or the caller giving up.
func unreachable(ctx context.Context, err error) bool {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, redis.ErrClosed) || ctx.Err() != nil {
		return false
	}
	// An error reply came back fast: Redis is there, the command was wrong or refused.
	var reply redis.Error
	return !errors.As(err, &reply)
}

// probeKey marks the prober's context, so the command count leaves its PINGs out.
type probeKey struct{}

// probe runs while the Cache is open, owned by it and stopped by Close through ctx. It
// waits for the breaker to open, then PINGs Redis until it answers and closes the breaker.
func (c *Cache) probe(ctx context.Context) {
	ctx = context.WithValue(ctx, probeKey{}, true)
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.brk.opened:
		}
		for wait := probeFirst; ; wait = min(2*wait, probeMax) {
			// Jitter keeps the nodes of a deployment from probing a recovering Redis in step.
			t := time.NewTimer(wait*3/4 + rand.N(wait/2))
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			pctx, cancel := context.WithTimeout(ctx, c.opTimeout)
			err := c.rdb.Ping(pctx).Err()
			cancel()
			if err == nil {
				c.brk.close()
				break
			}
		}
	}
}

// do runs one operation on Redis under the breaker and OpTimeout. While the breaker is
// open it returns ErrUnavailable at once without touching the network.
func (c *Cache) do(ctx context.Context, op func(ctx context.Context) error) error {
	s, ok := c.brk.allow()
	if !ok {
		c.refused.Add(1)
		return ErrUnavailable
	}
	octx, cancel := c.opContext(ctx)
	defer cancel()
	err := op(octx)
	if unreachable(ctx, err) {
		c.brk.open(s, err)
	}
	return err
}

// Up reports whether operations go to Redis: false from the first operation that found it
// unreachable until a background probe finds it answering again.
func (c *Cache) Up() bool {
	_, ok := c.brk.allow()
	return ok
}

// Stats are counts since New, for metrics and tests.
type Stats struct {
	// Commands is how many commands were sent to Redis for callers (the breaker's probes
	// are not counted): zero more while the breaker is open.
	Commands uint64
	// Refused is how many operations the open breaker answered with ErrUnavailable.
	Refused uint64
	// Opened is how many times the breaker opened.
	Opened uint64
}

// Stats returns the counts since New.
func (c *Cache) Stats() Stats {
	return Stats{
		Commands: c.commands.Load(),
		Refused:  c.refused.Load(),
		Opened:   (c.brk.state.Load() + 1) / 2,
	}
}

// commandCounter is a go-redis hook counting the commands sent for callers. It counts in
// the client, below every operation, so a command sent outside do would still be seen.
type commandCounter struct{ n *atomic.Uint64 }

func (h commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if ctx.Value(probeKey{}) == nil {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if ctx.Value(probeKey{}) == nil {
			h.n.Add(uint64(len(cmds)))
		}
		return next(ctx, cmds)
	}
}
