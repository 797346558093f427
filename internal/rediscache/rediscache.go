// Package rediscache adapts Redis to Cabildo's cache: projection snapshots with their log
// position, and rendered responses keyed by version, shared by every gateway node. Redis is
// a cache, never the only copy: flushing it loses nothing, and a slow or absent Redis must
// never hold a request, so every operation runs under its own short deadline and failures
// come back as errors for the caller to degrade on. An outage costs at most one deadline:
// the first operation that finds Redis unreachable opens a circuit breaker, later ones fail
// at once with ErrUnavailable, and a background probe closes it when Redis answers again.
package rediscache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/cabildo/cabildo/internal/cabildo"
)

// Defaults for Options fields left zero.
const (
	DefaultPrefix = "cabildo:"
	// DefaultOpTimeout is short because Redis only ever saves work: past this a request
	// is better served by rebuilding or rendering again than by waiting.
	DefaultOpTimeout = 50 * time.Millisecond
)

// Options configure a Cache.
type Options struct {
	// URL is a redis:// or rediss:// URL as accepted by redis.ParseURL.
	URL string
	// Prefix starts every key, so several deployments can share one Redis.
	// Default DefaultPrefix.
	Prefix string
	// OpTimeout bounds each operation, whatever the caller's context allows.
	// Default DefaultOpTimeout.
	OpTimeout time.Duration
	// Logger gets one line when Redis becomes unavailable and one when it is back, never
	// one per request. Default: discard.
	Logger *slog.Logger
}

// Cache is a Redis-backed cache. It is safe for concurrent use; go-redis reconnects on its
// own after Redis comes back. Close stops its prober.
type Cache struct {
	rdb       *redis.Client
	limiter   *redis_rate.Limiter
	prefix    string
	opTimeout time.Duration

	brk       *breaker
	commands  atomic.Uint64 // sent to Redis for callers
	refused   atomic.Uint64 // answered by the open breaker
	stopProbe context.CancelFunc
	probing   sync.WaitGroup
}

// Snapshots are hashes with these fields. seq is a zero-padded decimal of fixed width so the
// script can compare it exactly: Lua numbers are doubles and lose uint64 precision. A
// snapshot bigger than snapshotChunk keeps its bytes in a hash of its own (parts), one
// field per chunk, so that moving it is many operations each within OpTimeout rather than
// one that could never be: the snapshot of a long log is hundreds of megabytes.
const (
	fieldSeq    = "seq"
	fieldLog    = "log"
	fieldData   = "data"
	fieldChunks = "chunks" // number of chunks in parts; absent or 0: the bytes are in data
	fieldParts  = "parts"  // key of the hash holding the chunks
	fieldSize   = "size"   // total bytes of the chunks
	seqWidth    = 20       // digits in the largest uint64

	snapshotChunk = 1 << 20
	// partsTTL bounds how long the chunks of a snapshot whose store never finished (the
	// node died uploading it) stay in Redis; a stored snapshot's parts do not expire.
	partsTTL = 10 * time.Minute
)

// storeSnapshot replaces the snapshot at KEYS[1] with ARGV (seq, log, data, chunks, parts,
// size) unless the stored one is from the same log and at least as recent; it returns 1
// when it stored. It runs as one script so nodes racing to store cannot interleave the check
// and the write. Anything that is not a well-formed snapshot is overwritten: it is a cache,
// and a broken entry must heal rather than block every later store. The chunks of the
// snapshot replaced are dropped; those of a snapshot refused too.
var storeSnapshot = redis.NewScript(`
local t = redis.call('TYPE', KEYS[1]).ok
if t ~= 'none' and t ~= 'hash' then
  redis.call('DEL', KEYS[1])
end
local cur = redis.call('HMGET', KEYS[1], 'seq', 'log', 'parts')
local seq, log, parts = cur[1], cur[2], cur[3]
if seq and log and log == ARGV[2] and #seq == #ARGV[1] then
  -- Byte-wise on purpose: Lua's < on strings follows the server's collation locale.
  local newer = false
  for i = 1, #seq do
    local a, b = string.byte(ARGV[1], i), string.byte(seq, i)
    if a ~= b then
      newer = a > b
      break
    end
  end
  if not newer then
    if ARGV[5] ~= '' then
      redis.call('UNLINK', ARGV[5])
    end
    return 0
  end
end
if parts and parts ~= ARGV[5] then
  redis.call('UNLINK', parts)
end
redis.call('DEL', KEYS[1])
if ARGV[5] == '' then
  redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'log', ARGV[2], 'data', ARGV[3])
else
  redis.call('PERSIST', ARGV[5])
  redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'log', ARGV[2], 'data', '', 'chunks', ARGV[4], 'parts', ARGV[5], 'size', ARGV[6])
end
return 1
`)

// New returns a Cache for opts. It fails only on invalid options, not when Redis is
// unreachable: a node must start and serve without its cache, and go-redis connects
// lazily and reconnects by itself. ctx bounds a best-effort load of the store script so the
// first StoreSnapshot takes one round trip.
func New(ctx context.Context, opts Options) (*Cache, error) {
	if opts.URL == "" {
		return nil, errors.New("rediscache: no URL")
	}
	ro, err := redis.ParseURL(opts.URL)
	if err != nil {
		// url.Error quotes the whole URL, password included; keep only what went wrong.
		if uerr, ok := errors.AsType[*url.Error](err); ok {
			err = uerr.Err
		}
		return nil, fmt.Errorf("rediscache: parse URL: %w", err)
	}
	if opts.OpTimeout < 0 {
		return nil, fmt.Errorf("rediscache: negative op timeout %s", opts.OpTimeout)
	}
	if opts.OpTimeout == 0 {
		opts.OpTimeout = DefaultOpTimeout
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	// Without this go-redis ignores context deadlines on socket I/O and a stalled Redis
	// would hold the caller for the read timeout (seconds), not OpTimeout.
	ro.ContextTimeoutEnabled = true
	rdb := redis.NewClient(ro)
	c := &Cache{rdb: rdb, limiter: redis_rate.NewLimiter(rdb), prefix: opts.Prefix, opTimeout: opts.OpTimeout,
		brk: newBreaker(opts.Logger)}
	rdb.AddHook(commandCounter{&c.commands})
	pctx, stop := context.WithCancel(context.Background())
	c.stopProbe = stop
	c.probing.Go(func() { c.probe(pctx) })

	// Through the breaker, so a node started while Redis is down pays one timeout here and
	// none per request.
	_ = c.do(ctx, func(ctx context.Context) error {
		return storeSnapshot.Load(ctx, c.rdb).Err() // Run falls back to EVAL when the script is missing.
	})
	return c, nil
}

// Name identifies the implementation in /readyz detail and metrics.
func (c *Cache) Name() string { return "redis" }

// Close stops the prober and closes the connections to Redis.
func (c *Cache) Close() error {
	c.stopProbe()
	c.probing.Wait()
	if err := c.rdb.Close(); err != nil {
		return fmt.Errorf("rediscache: close: %w", err)
	}
	return nil
}

// Ping reports whether Redis answers within OpTimeout; while the breaker is open it
// reports ErrUnavailable without asking.
func (c *Cache) Ping(ctx context.Context) error {
	if err := c.do(ctx, func(ctx context.Context) error { return c.rdb.Ping(ctx).Err() }); err != nil {
		return fmt.Errorf("rediscache: ping: %w", err)
	}
	return nil
}

// LoadSnapshot returns the snapshot stored under key, if any. A big snapshot comes a chunk
// per operation; if another node replaces it meanwhile, the load fails and the caller
// rebuilds from the log.
func (c *Cache) LoadSnapshot(ctx context.Context, key string) (cabildo.Snapshot, bool, error) {
	snap, body, ok, err := c.OpenSnapshot(ctx, key)
	if !ok || err != nil {
		return snap, ok, err
	}
	defer body.Close()
	snap.Data, err = io.ReadAll(body)
	if err != nil {
		return cabildo.Snapshot{}, false, err
	}
	return snap, true, nil
}

// OpenSnapshot is LoadSnapshot with the bytes to be read from body as they come: the
// snapshot's sequence and log are known at once, and a big snapshot's chunks are fetched
// (one bounded operation each) while the caller reads the first ones. Data is nil. The
// caller closes body; reading it fails if a chunk is gone (the snapshot was replaced
// meanwhile) or Redis fails.
func (c *Cache) OpenSnapshot(ctx context.Context, key string) (snap cabildo.Snapshot, body io.ReadCloser, ok bool, err error) {
	var vals []any
	err = c.do(ctx, func(ctx context.Context) (err error) {
		vals, err = c.rdb.HMGet(ctx, c.snapshotKey(key), fieldSeq, fieldLog, fieldData, fieldChunks, fieldParts, fieldSize).Result()
		return err
	})
	if err != nil {
		return cabildo.Snapshot{}, nil, false, fmt.Errorf("rediscache: load snapshot %q: %w", key, err)
	}
	if vals[0] == nil && vals[1] == nil && vals[2] == nil {
		return cabildo.Snapshot{}, nil, false, nil
	}
	seqStr, ok1 := vals[0].(string)
	log, ok2 := vals[1].(string)
	data, ok3 := vals[2].(string)
	if !ok1 || !ok2 || !ok3 {
		return cabildo.Snapshot{}, nil, false, fmt.Errorf("rediscache: load snapshot %q: malformed entry", key)
	}
	seq, err := strconv.ParseUint(seqStr, 10, 64)
	if err != nil {
		return cabildo.Snapshot{}, nil, false, fmt.Errorf("rediscache: load snapshot %q: malformed seq: %w", key, err)
	}
	snap = cabildo.Snapshot{Seq: seq, Log: log}
	if vals[3] == nil {
		return snap, io.NopCloser(strings.NewReader(data)), true, nil
	}
	chunks, err1 := strconv.Atoi(fmt.Sprint(vals[3]))
	size, err2 := strconv.Atoi(fmt.Sprint(vals[5]))
	parts, ok := vals[4].(string)
	if err1 != nil || err2 != nil || !ok || chunks < 0 || size < 0 || chunks > size || data != "" {
		return cabildo.Snapshot{}, nil, false, fmt.Errorf("rediscache: load snapshot %q: malformed entry", key)
	}
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	go func() {
		defer cancel()
		total := 0
		for i := range chunks {
			var b []byte
			err := c.do(ctx, func(ctx context.Context) (err error) {
				b, err = c.rdb.HGet(ctx, parts, strconv.Itoa(i)).Bytes()
				return err
			})
			switch {
			case errors.Is(err, redis.Nil):
				err = fmt.Errorf("rediscache: load snapshot %q: chunk %d of %d is gone: replaced meanwhile", key, i, chunks)
			case err != nil:
				err = fmt.Errorf("rediscache: load snapshot %q: chunk %d: %w", key, i, err)
			case total+len(b) > size:
				err = fmt.Errorf("rediscache: load snapshot %q: more than its %d bytes", key, size)
			}
			if err == nil {
				total += len(b)
				_, err = pw.Write(b) // fails once the reader has closed
			}
			if err != nil {
				pw.CloseWithError(err)
				return
			}
		}
		if total != size {
			pw.CloseWithError(fmt.Errorf("rediscache: load snapshot %q: %d bytes, want %d", key, total, size))
			return
		}
		pw.Close()
	}()
	return snap, &snapshotBody{PipeReader: pr, cancel: cancel}, true, nil
}

// snapshotBody is a big snapshot's bytes as its chunks arrive; Close stops the fetching.
type snapshotBody struct {
	*io.PipeReader
	cancel context.CancelFunc
}

func (b *snapshotBody) Close() error {
	b.cancel()
	return b.PipeReader.Close()
}

// StoreSnapshot stores s under key unless the stored snapshot is from the same log and at
// least as recent, atomically across nodes; it reports whether it stored. A snapshot from
// another log always replaces the stored one: the log was recreated and the old snapshot
// describes a history that no longer exists. A big snapshot is uploaded a chunk per
// operation first, then put in place by the same one script as a small one.
func (c *Cache) StoreSnapshot(ctx context.Context, key string, s cabildo.Snapshot) (bool, error) {
	seq := fmt.Sprintf("%0*d", seqWidth, s.Seq)
	data, chunks, parts := s.Data, 0, ""
	if len(s.Data) > snapshotChunk {
		// Not worth uploading when the stored one is at least as recent.
		var cur []any
		err := c.do(ctx, func(ctx context.Context) (err error) {
			cur, err = c.rdb.HMGet(ctx, c.snapshotKey(key), fieldSeq, fieldLog).Result()
			return err
		})
		if err != nil && !isWrongType(err) {
			return false, fmt.Errorf("rediscache: store snapshot %q: %w", key, err)
		}
		if err == nil && cur[0] == seq && cur[1] == s.Log {
			return false, nil
		}
		if err == nil {
			if cs, ok := cur[0].(string); ok && cur[1] == s.Log && len(cs) == len(seq) && cs > seq {
				return false, nil
			}
		}
		parts = fmt.Sprintf("%s:parts:%s:%d", c.snapshotKey(key), seq, time.Now().UnixNano())
		for off := 0; off < len(s.Data); off += snapshotChunk {
			chunk := s.Data[off:min(off+snapshotChunk, len(s.Data))]
			err := c.do(ctx, func(ctx context.Context) error {
				p := c.rdb.TxPipeline()
				p.HSet(ctx, parts, strconv.Itoa(chunks), chunk)
				p.PExpire(ctx, parts, partsTTL)
				_, err := p.Exec(ctx)
				return err
			})
			if err != nil {
				return false, fmt.Errorf("rediscache: store snapshot %q: chunk %d: %w", key, chunks, err)
			}
			chunks++
		}
		data = nil
	}
	var n int
	err := c.do(ctx, func(ctx context.Context) (err error) {
		n, err = storeSnapshot.Run(ctx, c.rdb, []string{c.snapshotKey(key)}, seq, s.Log, data, chunks, parts, len(s.Data)).Int()
		return err
	})
	if err != nil {
		return false, fmt.Errorf("rediscache: store snapshot %q: %w", key, err)
	}
	return n == 1, nil
}

// isWrongType reports Redis refusing a command for the key's type: a malformed entry that
// the store script will overwrite.
func isWrongType(err error) bool {
	var reply redis.Error
	return errors.As(err, &reply) && strings.HasPrefix(err.Error(), "WRONGTYPE")
}

// GetRendered returns the rendered response stored under key, if it has not expired.
func (c *Cache) GetRendered(ctx context.Context, key string) ([]byte, bool, error) {
	var b []byte
	err := c.do(ctx, func(ctx context.Context) (err error) {
		b, err = c.rdb.Get(ctx, c.renderedKey(key)).Bytes()
		return err
	})
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("rediscache: get rendered %q: %w", key, err)
	}
	return b, true, nil
}

// PutRendered stores b under key for ttl (millisecond precision). Memory is bounded by the
// Redis server's maxmemory policy, not here.
func (c *Cache) PutRendered(ctx context.Context, key string, b []byte, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("rediscache: put rendered %q: ttl must be positive", key)
	}
	// PX so sub-second TTLs keep their precision; rounded up because Redis rejects PX 0.
	ms := (ttl + time.Millisecond - 1) / time.Millisecond
	err := c.do(ctx, func(ctx context.Context) error {
		return c.rdb.Do(ctx, "SET", c.renderedKey(key), b, "PX", int64(ms)).Err()
	})
	if err != nil {
		return fmt.Errorf("rediscache: put rendered %q: %w", key, err)
	}
	return nil
}

// opContext gives one operation its own deadline, so the caller's generous context never
// lets a slow Redis hold a request longer than OpTimeout.
func (c *Cache) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.opTimeout)
}

// Snapshots and rendered responses live in separate namespaces so the same caller key can be
// used for both.
func (c *Cache) snapshotKey(key string) string { return c.prefix + "snapshot:" + key }
func (c *Cache) renderedKey(key string) string { return c.prefix + "rendered:" + key }
