// Package memcache is the in-process cache used in embedded mode, where there is no Redis:
// projection snapshots and rendered responses kept in this process's memory. Like Redis it is
// only ever a cache, never the only copy: everything in it can be rebuilt from the log.
// Rendered responses are bounded in total bytes and evicted least recently used first, so a
// busy event cannot make the process grow without limit.
package memcache

import (
	"container/list"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/ratelimit"
)

// DefaultMaxRenderedBytes bounds the rendered responses a Cache from New keeps. Rendered
// exports of one event are tens to hundreds of KiB each, one per version and language, so
// this holds many versions while staying small next to the projection itself.
const DefaultMaxRenderedBytes = 64 << 20

// ErrClosed is returned by every operation on a closed Cache.
var ErrClosed = errors.New("memcache: closed")

// Cache holds snapshots and rendered responses in memory. It is safe for concurrent use.
// Stored bytes are copied on the way in and on the way out, so no caller can change what
// another caller reads.
type Cache struct {
	maxBytes int64
	// now is the clock for TTLs; tests replace it to expire entries without waiting.
	now func() time.Time

	mu        sync.Mutex
	closed    bool
	snapshots map[string]cabildo.Snapshot // one per projection and event: few, so unbounded
	rendered  map[string]*list.Element    // values are *renderedEntry
	lru       *list.List                  // front is most recently used
	bytes     int64                       // sum of renderedEntry.size over lru
	limits    *ratelimit.Local
}

type renderedEntry struct {
	key     string
	value   []byte
	expires time.Time
	size    int64
}

// New returns an empty Cache whose rendered responses are bounded by DefaultMaxRenderedBytes.
func New() *Cache {
	return NewWithLimit(DefaultMaxRenderedBytes)
}

// NewWithLimit returns an empty Cache that keeps at most maxBytes of rendered responses
// (keys and values); maxBytes <= 0 means DefaultMaxRenderedBytes.
func NewWithLimit(maxBytes int64) *Cache {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxRenderedBytes
	}
	return &Cache{
		maxBytes:  maxBytes,
		now:       time.Now,
		snapshots: make(map[string]cabildo.Snapshot),
		rendered:  make(map[string]*list.Element),
		lru:       list.New(),
	}
}

// Name identifies the implementation in /readyz detail and metrics.
func (c *Cache) Name() string { return "memory" }

// Ping reports whether the cache can be used: always, until it is closed.
func (c *Cache) Ping(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	return nil
}

// Close drops everything held; later operations return ErrClosed.
func (c *Cache) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	c.snapshots = nil
	c.rendered = nil
	c.lru.Init()
	c.bytes = 0
	return nil
}

// LoadSnapshot returns a copy of the snapshot stored under key, if any.
func (c *Cache) LoadSnapshot(ctx context.Context, key string) (cabildo.Snapshot, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return cabildo.Snapshot{}, false, ErrClosed
	}
	s, ok := c.snapshots[key]
	if !ok {
		return cabildo.Snapshot{}, false, nil
	}
	s.Data = clone(s.Data)
	return s, true, nil
}

// StoreSnapshot stores s under key unless the stored snapshot is from the same log and
// at least as recent, so a node that finished building late never replaces a newer
// snapshot. A snapshot from another log always replaces the stored one: the log was
// recreated and the old snapshot describes a history that no longer exists.
func (c *Cache) StoreSnapshot(ctx context.Context, key string, s cabildo.Snapshot) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false, ErrClosed
	}
	if cur, ok := c.snapshots[key]; ok && cur.Log == s.Log && cur.Seq >= s.Seq {
		return false, nil
	}
	s.Data = clone(s.Data)
	c.snapshots[key] = s
	return true, nil
}

// GetRendered returns a copy of the rendered response stored under key, if it has not
// expired.
func (c *Cache) GetRendered(ctx context.Context, key string) ([]byte, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, false, ErrClosed
	}
	el, ok := c.rendered[key]
	if !ok {
		return nil, false, nil
	}
	e := el.Value.(*renderedEntry)
	if !c.now().Before(e.expires) {
		c.remove(el)
		return nil, false, nil
	}
	c.lru.MoveToFront(el)
	return clone(e.value), true, nil
}

// PutRendered stores a copy of b under key for ttl, evicting the least recently used
// responses until the total fits the byte bound. A response larger than the whole bound is
// not kept: holding it would mean evicting everything else for one entry.
func (c *Cache) PutRendered(ctx context.Context, key string, b []byte, ttl time.Duration) error {
	if ttl <= 0 {
		return errors.New("memcache: put rendered: ttl must be positive")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if el, ok := c.rendered[key]; ok {
		c.remove(el)
	}
	size := int64(len(key)) + int64(len(b))
	if size > c.maxBytes {
		return nil
	}
	now := c.now()
	// Expired entries go first: they are dead weight however recently they were used.
	for el := c.lru.Back(); el != nil && c.bytes+size > c.maxBytes; {
		prev := el.Prev()
		if !now.Before(el.Value.(*renderedEntry).expires) {
			c.remove(el)
		}
		el = prev
	}
	for c.bytes+size > c.maxBytes {
		c.remove(c.lru.Back())
	}
	e := &renderedEntry{key: key, value: clone(b), expires: now.Add(ttl), size: size}
	c.rendered[key] = c.lru.PushFront(e)
	c.bytes += size
	return nil
}

// remove drops one rendered entry; c.mu must be held.
func (c *Cache) remove(el *list.Element) {
	e := c.lru.Remove(el).(*renderedEntry)
	delete(c.rendered, e.key)
	c.bytes -= e.size
}

// clone returns a copy that is never nil, so an empty value reads back the same from every
// implementation (Redis cannot tell nil from empty).
func clone(b []byte) []byte {
	return append([]byte{}, b...)
}
