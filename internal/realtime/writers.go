package realtime

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// The write side of every connection is served by one small pool of writer goroutines.
// A client with frames waiting is put in line once (Client.writing); a writer takes it,
// writes what it has queued as one batch and puts it back at the end of the line if more
// arrived meanwhile, so one busy connection cannot starve the rest. A broadcast to ten
// thousand subscribers therefore costs a handful of goroutines, not ten thousand, and an
// idle connection costs none.
//
// A write only blocks when the peer's socket buffer is full. So that a few such peers
// cannot stall everyone's writes until their deadlines, the hub's maintenance loop adds
// a writer whenever the line has not moved for stallAfter; writers beyond the pool's
// size leave as soon as the line is empty, like every writer does.

const (
	// stallAfter is how long the line may stand still before another writer is added.
	stallAfter = 20 * time.Millisecond
	// tickEvery paces the maintenance loop.
	tickEvery = 10 * time.Millisecond
)

type writers struct {
	max int // writers started on demand; stalls may add more

	mu      sync.Mutex
	line    []*Client // clients with something to write, first at head
	head    int
	running int

	progress atomic.Int64 // unix nanos of the last batch written (or of an empty line)
}

func newWriters(n int) *writers {
	if n <= 0 {
		n = 8 * runtime.GOMAXPROCS(0)
	}
	w := &writers{max: n}
	w.progress.Store(time.Now().UnixNano())
	return w
}

// schedule puts c in line. The caller holds c.mu and has just set c.writing.
func (w *writers) schedule(c *Client) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.line = append(w.line, c)
	if w.running < w.max {
		w.running++
		go w.work()
	}
}

// next takes the client at the head of the line; false when the line is empty, and then
// the writer leaves.
func (w *writers) next() (*Client, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.head == len(w.line) {
		w.line, w.head = w.line[:0], 0
		w.running--
		return nil, false
	}
	c := w.line[w.head]
	w.line[w.head] = nil
	w.head++
	if w.head > 1024 && w.head > len(w.line)/2 {
		n := copy(w.line, w.line[w.head:])
		clear(w.line[n:])
		w.line, w.head = w.line[:n], 0
	}
	return c, true
}

func (w *writers) work() {
	for {
		c, ok := w.next()
		if !ok {
			return
		}
		if c.flush() {
			w.requeue(c)
		}
		w.progress.Store(time.Now().UnixNano())
	}
}

// requeue puts a client that still has frames at the end of the line.
func (w *writers) requeue(c *Client) {
	w.mu.Lock()
	w.line = append(w.line, c)
	w.mu.Unlock()
}

// unstall adds a writer when clients wait in line and no batch has been written for
// stallAfter: the writers are all blocked on peers that do not read.
func (w *writers) unstall(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.head == len(w.line) {
		w.progress.Store(now.UnixNano())
		return
	}
	if now.UnixNano()-w.progress.Load() > int64(stallAfter) {
		w.running++
		go w.work()
		w.progress.Store(now.UnixNano())
	}
}
