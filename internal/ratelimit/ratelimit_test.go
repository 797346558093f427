package ratelimit

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestGCRAExactCounts(t *testing.T) {
	lim := Limit{N: 5, Per: time.Minute}
	now := time.Date(2027, 4, 14, 16, 0, 0, 0, time.UTC)
	var tat time.Time
	allowed := 0
	// 1,000 attempts in 10 s: exactly the burst of 5 passes (the next token is 12 s away).
	for i := range 1000 {
		d, next := GCRA(now.Add(time.Duration(i)*10*time.Millisecond), tat, lim)
		if d.Allowed {
			allowed++
			tat = next
		} else if d.RetryAfter <= 0 || d.RetryAfter > 12*time.Second {
			t.Fatalf("attempt %d: refused with Retry-After %v, want (0, 12s]", i, d.RetryAfter)
		}
	}
	if allowed != 5 {
		t.Fatalf("allowed %d of 1,000 in 10 s, want exactly 5", allowed)
	}
	// 12 s after the burst began one more fits, and not two.
	d, next := GCRA(now.Add(12*time.Second), tat, lim)
	if !d.Allowed {
		t.Fatal("refused after the emission interval")
	}
	if d, _ := GCRA(now.Add(12*time.Second), next, lim); d.Allowed {
		t.Fatal("two allowed after one emission interval")
	}
}

func TestLocalForgetsRefilledKeys(t *testing.T) {
	l := NewLocal()
	now := time.Date(2027, 4, 14, 16, 0, 0, 0, time.UTC)
	l.now = func() time.Time { return now }
	lim := Limit{N: 2, Per: time.Second}
	for i := range 100 {
		if _, err := l.Allow(context.Background(), string(rune('a'+i%26))+"-key", lim); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(2 * time.Minute)
	if _, err := l.Allow(context.Background(), "other", lim); err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	n := len(l.tat)
	l.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d keys kept after every bucket refilled, want 1", n)
	}
}

type failing struct{}

func (failing) Allow(context.Context, string, Limit) (Decision, error) {
	return Decision{}, errors.New("redis: connection refused")
}

// With the shared store down, limits are node-local: degraded, never off.
func TestFallbackLimitsLocallyWhenSharedFails(t *testing.T) {
	f := &Fallback{Shared: failing{}, Local: NewLocal()}
	lim := Limit{N: 3, Per: time.Minute}
	allowed := 0
	for range 50 {
		d, err := f.Allow(context.Background(), "device", lim)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allowed {
			allowed++
		}
	}
	if allowed != 3 || !f.Degraded() {
		t.Fatalf("allowed %d (want 3), degraded %v (want true)", allowed, f.Degraded())
	}
}
