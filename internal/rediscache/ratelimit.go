package rediscache

import (
	"context"
	"fmt"

	"github.com/go-redis/redis_rate/v10"

	"github.com/cabildo/cabildo/internal/ratelimit"
)

// Allow implements ratelimit.Limiter with counters every node shares, under the cache's
// short deadline and breaker: a slow or absent Redis answers with an error, at once while
// the breaker is open, and the caller counts locally.
func (c *Cache) Allow(ctx context.Context, key string, l ratelimit.Limit) (ratelimit.Decision, error) {
	if l.N <= 0 || l.Per <= 0 {
		return ratelimit.Decision{Allowed: true}, nil
	}
	var res *redis_rate.Result
	err := c.do(ctx, func(ctx context.Context) (err error) {
		res, err = c.limiter.Allow(ctx, c.prefix+"rate:"+key, redis_rate.Limit{Rate: l.N, Burst: l.N, Period: l.Per})
		return err
	})
	if err != nil {
		return ratelimit.Decision{}, fmt.Errorf("rediscache: rate limit: %w", err)
	}
	if res.Allowed > 0 {
		return ratelimit.Decision{Allowed: true}, nil
	}
	return ratelimit.Decision{RetryAfter: res.RetryAfter}, nil
}
