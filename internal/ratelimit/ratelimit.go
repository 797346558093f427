// Package ratelimit limits how often one key (an attendee, an address) may do something.
// Limits are shared by every node through the cache (Redis) and fall back to this node's
// own count when the cache cannot answer: degraded, never off, so a flooding device is
// still held back while Redis is down.
//
// The algorithm is GCRA, the same as github.com/go-redis/redis_rate uses in Redis: N
// events per period, at most N at once, evenly refilled. So node-local and shared limits
// answer alike, and the cache conformance suite checks both against the same cases.
package ratelimit

import (
	"context"
	"sync"
	"time"
)

// Limit is N events per Per, N of them at once at most.
type Limit struct {
	N   int
	Per time.Duration
}

// Decision is the answer for one event.
type Decision struct {
	Allowed bool
	// RetryAfter is how long until the next event would be allowed, when this one was not.
	RetryAfter time.Duration
}

// Limiter decides whether one more event under key fits its limit.
type Limiter interface {
	Allow(ctx context.Context, key string, l Limit) (Decision, error)
}

// Local is a node-local Limiter. Its zero value is not usable: call NewLocal.
type Local struct {
	now func() time.Time

	mu    sync.Mutex
	tat   map[string]time.Time // theoretical arrival time per key
	swept time.Time
}

// NewLocal returns an empty node-local limiter.
func NewLocal() *Local {
	return &Local{now: time.Now, tat: map[string]time.Time{}}
}

// Allow implements Limiter. A key whose bucket has refilled is forgotten, so memory
// follows the keys active within their period.
func (l *Local) Allow(_ context.Context, key string, lim Limit) (Decision, error) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.swept) > time.Minute {
		for k, t := range l.tat {
			if !t.After(now) {
				delete(l.tat, k)
			}
		}
		l.swept = now
	}
	d, tat := GCRA(now, l.tat[key], lim)
	if d.Allowed {
		l.tat[key] = tat
	}
	return d, nil
}

// GCRA decides one event at now for a key whose theoretical arrival time is tat, and
// returns the new tat. Exported so the Redis script and this agree on one definition.
func GCRA(now, tat time.Time, lim Limit) (Decision, time.Time) {
	if lim.N <= 0 || lim.Per <= 0 {
		return Decision{Allowed: true}, tat
	}
	emission := lim.Per / time.Duration(lim.N)
	if tat.Before(now) {
		tat = now
	}
	next := tat.Add(emission)
	allowAt := next.Add(-emission * time.Duration(lim.N))
	if wait := allowAt.Sub(now); wait > 0 {
		return Decision{RetryAfter: wait}, tat
	}
	return Decision{Allowed: true}, next
}

// Fallback asks Shared and, when it fails (Redis down or slow), Local. Degraded reports
// whether the last answer came from Local.
type Fallback struct {
	Shared Limiter
	Local  *Local

	mu       sync.Mutex
	degraded bool
}

// Allow implements Limiter; it never returns an error.
func (f *Fallback) Allow(ctx context.Context, key string, l Limit) (Decision, error) {
	if f.Shared != nil {
		d, err := f.Shared.Allow(ctx, key, l)
		f.setDegraded(err != nil)
		if err == nil {
			return d, nil
		}
	}
	return f.Local.Allow(ctx, key, l)
}

func (f *Fallback) setDegraded(v bool) {
	f.mu.Lock()
	f.degraded = v
	f.mu.Unlock()
}

// Degraded reports whether limits are node-local now because the shared store failed.
func (f *Fallback) Degraded() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.degraded
}
