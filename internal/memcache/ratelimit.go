package memcache

import (
	"context"

	"github.com/cabildo/cabildo/internal/ratelimit"
)

// Allow implements ratelimit.Limiter for one node: in embedded mode there is no other
// node to share counts with.
func (c *Cache) Allow(ctx context.Context, key string, l ratelimit.Limit) (ratelimit.Decision, error) {
	c.mu.Lock()
	closed := c.closed
	if c.limits == nil {
		c.limits = ratelimit.NewLocal()
	}
	lim := c.limits
	c.mu.Unlock()
	if closed {
		return ratelimit.Decision{}, ErrClosed
	}
	return lim.Allow(ctx, key, l)
}
