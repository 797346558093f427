package rediscache

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/redis/go-redis/v9"
)

// RouteLogs sends go-redis's own messages (dial failures while Redis is away) to log at
// debug level instead of its default writer, stderr. go-redis has one logger per process.
func RouteLogs(log *slog.Logger) { redis.SetLogger(slogPrintf{log}) }

type slogPrintf struct{ log *slog.Logger }

func (s slogPrintf) Printf(ctx context.Context, format string, v ...any) {
	s.log.DebugContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}
