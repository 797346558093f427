package httpapi

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/andybalholm/brotli"
	"github.com/gofiber/fiber/v2"
	"github.com/klauspost/compress/gzip"
	"github.com/valyala/fasthttp"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/projection"
)

// A public read of one version is the same bytes for every client that asks in the same
// language: each node renders it once, compresses it once per content coding on first
// demand, and from then on answers from those immutable bytes, written to the connection
// without a copy. A change to the event (a new version) replaces them on the next read.

// encoding is a content coding a public read may be served in.
type encoding uint8

const (
	identity encoding = iota
	encGzip
	encBrotli
	numEncodings
)

// etagSuffix tells a compressed representation's ETag from the identity one's: the bytes
// differ, so a strong validator must too.
var etagSuffix = [numEncodings]string{identity: "", encGzip: "-gz", encBrotli: "-br"}

var encodingName = [numEncodings]string{identity: "", encGzip: "gzip", encBrotli: "br"}

const (
	// minCompressed is the smallest body worth compressing: below it, a coding's header
	// and framing eat most of the saving.
	minCompressed = 1024
	// maxBrotliBest is the largest body compressed at brotli's best (and slowest) level;
	// larger ones, such as a long list of changes, get a faster level.
	maxBrotliBest = 128 << 10
	// Bounds of a node's rendered bodies: arbitrary filters and since= values make
	// arbitrarily many variants, so entries are evicted at random beyond these.
	maxRenditionBytes   = 64 << 20
	maxRenditionEntries = 4096
)

// Header values every public read shares.
const (
	cacheControlPublic = "public, max-age=0, must-revalidate"
	varyPublic         = "Accept-Language, Accept-Encoding"
)

// stamp identifies the event state a rendition was rendered from: every public read of an
// event is a function of its schedule version and its announcements' version.
type stamp struct {
	version, announcements uint64
}

func stampOf(st *projection.EventState) stamp {
	return stamp{version: st.Version, announcements: st.AnnouncementsVersion}
}

type renditionKey struct {
	event, variant string
	lang           cabildo.Lang
}

// rendition is one public read at one stamp: its body and header values, computed once.
// Everything but the compressed bodies is set before ready is closed and never changes.
type rendition struct {
	key      renditionKey
	stamp    stamp
	ready    chan struct{}
	err      error // the render failed: nothing to serve
	retry    bool  // the state moved on while rendering: read again
	body     []byte
	etag     [numEncodings]string
	modified time.Time
	lastMod  string // "" when the resource has no date
	lang     string
	enc      [numEncodings]compressed
	held     int64 // bytes counted against the cache's bound; renditions.mu guards it
}

// compressed is a rendition's body in one content coding, compressed on first demand;
// nil after done when compressing does not make it smaller.
type compressed struct {
	once sync.Once
	body []byte
}

func newRendition(k renditionKey, st stamp, v validators) *rendition {
	k.event = strings.Clone(k.event) // a request's strings live in its buffer
	lang := k.lang
	r := &rendition{key: k, stamp: st, ready: make(chan struct{}), modified: v.modified, lang: string(lang)}
	for e := range numEncodings {
		r.etag[e] = withSuffix(v.etag, etagSuffix[e])
	}
	if !v.modified.IsZero() {
		r.lastMod = v.modified.UTC().Format(http.TimeFormat)
	}
	return r
}

// withSuffix puts suffix inside an entity tag's closing quote: "12-es" → "12-es-gz".
func withSuffix(tag, suffix string) string {
	if suffix == "" || !strings.HasSuffix(tag, `"`) {
		return tag
	}
	return tag[:len(tag)-1] + suffix + `"`
}

// renditions is a node's cache of rendered public reads.
type renditions struct {
	mu      sync.RWMutex
	m       map[renditionKey]*rendition
	bytes   int64        // held by the entries in m; mu guards it
	renders atomic.Int64 // bodies rendered (test seam and metric)
	packs   atomic.Int64 // bodies compressed
	fast    atomic.Int64 // reads answered before routing
	// compressing allows one compression at a time, so a burst of new variants cannot take
	// every core away from the reads already rendered.
	compressing chan struct{}
}

func newRenditions() *renditions {
	return &renditions{m: map[renditionKey]*rendition{}, compressing: make(chan struct{}, 1)}
}

// current returns the rendition of k at st, or nil.
func (rs *renditions) current(k renditionKey, st stamp) *rendition {
	rs.mu.RLock()
	r := rs.m[k]
	rs.mu.RUnlock()
	if r != nil && r.stamp == st {
		return r
	}
	return nil
}

// claim returns the rendition of k at r.stamp: an existing one (owner false), or r itself,
// now stored (owner true), which the caller must render and then mark ready.
func (rs *renditions) claim(r *rendition) (*rendition, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if old := rs.m[r.key]; old != nil {
		if old.stamp == r.stamp {
			return old, false
		}
		rs.remove(old)
	}
	for len(rs.m) >= maxRenditionEntries || rs.bytes > maxRenditionBytes {
		if !rs.evictOne() {
			break
		}
	}
	rs.m[r.key] = r
	return r, true
}

// remove deletes r from m; mu is held.
func (rs *renditions) remove(r *rendition) {
	delete(rs.m, r.key)
	rs.bytes -= r.held
}

// account counts n more bytes of r against the bound, if r is still cached.
func (rs *renditions) account(r *rendition, n int) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.m[r.key] == r {
		r.held += int64(n)
		rs.bytes += int64(n)
	}
}

// evictOne drops one entry at random (map order is random enough for this); mu is held.
func (rs *renditions) evictOne() bool {
	skip := rand.IntN(max(len(rs.m), 1))
	for _, r := range rs.m {
		if skip > 0 {
			skip--
			continue
		}
		rs.remove(r)
		return true
	}
	return false
}

// drop removes r if it is still its key's rendition.
func (rs *renditions) drop(r *rendition) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.m[r.key] == r {
		rs.remove(r)
	}
}

// finish stores the rendered body and wakes the readers waiting for it.
func (rs *renditions) finish(r *rendition, body []byte, err error) {
	r.body, r.err = body, err
	if err == nil {
		rs.renders.Add(1)
		rs.account(r, len(body))
	} else {
		rs.drop(r)
	}
	close(r.ready)
}

// encoded returns r's body in e, compressing it the first time; the identity body when e
// does not make it smaller.
func (rs *renditions) encoded(r *rendition, e encoding) ([]byte, encoding) {
	if e == identity || len(r.body) < minCompressed {
		return r.body, identity
	}
	c := &r.enc[e]
	c.once.Do(func() {
		rs.compressing <- struct{}{}
		defer func() { <-rs.compressing }()
		b := compress(r.body, e)
		rs.packs.Add(1)
		if len(b) < len(r.body) {
			c.body = b
			rs.account(r, len(b))
		}
	})
	if c.body == nil {
		return r.body, identity
	}
	return c.body, e
}

func compress(body []byte, e encoding) []byte {
	var buf bytes.Buffer
	buf.Grow(len(body) / 3)
	switch e {
	case encGzip:
		w, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		_, _ = w.Write(body)
		_ = w.Close()
	case encBrotli:
		level := brotli.BestCompression
		if len(body) > maxBrotliBest {
			level = 6
		}
		w := brotli.NewWriterLevel(&buf, level)
		_, _ = w.Write(body)
		_ = w.Close()
	}
	return bytes.Clone(buf.Bytes())
}

// negotiate picks the content coding from Accept-Encoding (RFC 9110 §12.5.3): the
// acceptable coding with the highest q, brotli before gzip before identity when equal.
// No header means identity; identity stays acceptable unless refused with q=0, directly
// or through "*"; when nothing is acceptable the answer is identity all the same.
func negotiate(header []byte) encoding {
	if len(header) == 0 {
		return identity
	}
	var (
		q           [numEncodings]float64
		listed      [numEncodings]bool
		star        = -1.0
		best, bestQ = identity, 0.0
	)
	for part := range bytes.SplitSeq(header, []byte(",")) {
		name, params, _ := bytes.Cut(part, []byte(";"))
		name = bytes.TrimSpace(name)
		weight := qvalue(params)
		var e encoding
		switch {
		case bytes.EqualFold(name, []byte("gzip")), bytes.EqualFold(name, []byte("x-gzip")):
			e = encGzip
		case bytes.EqualFold(name, []byte("br")):
			e = encBrotli
		case bytes.EqualFold(name, []byte("identity")):
			e = identity
		case bytes.Equal(name, []byte("*")):
			star = weight
			continue
		default:
			continue
		}
		if !listed[e] || weight > q[e] {
			q[e] = weight
		}
		listed[e] = true
	}
	for e := range numEncodings {
		if !listed[e] {
			switch {
			case star >= 0:
				q[e] = star
			case e == identity:
				q[e] = 0.001 // acceptable, but any listed coding is preferred
			}
		}
	}
	for _, e := range []encoding{encBrotli, encGzip, identity} {
		if q[e] > bestQ {
			best, bestQ = e, q[e]
		}
	}
	return best
}

// qvalue reads q= from a coding's parameters; 1 without one, 0 when malformed.
func qvalue(params []byte) float64 {
	for p := range bytes.SplitSeq(params, []byte(";")) {
		k, v, ok := bytes.Cut(bytes.TrimSpace(p), []byte("="))
		if !ok || !bytes.EqualFold(bytes.TrimSpace(k), []byte("q")) {
			continue
		}
		v = bytes.TrimSpace(v)
		// qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
		if len(v) == 0 || len(v) > 5 || (v[0] != '0' && v[0] != '1') || (len(v) > 1 && v[1] != '.') {
			return 0
		}
		f, scale := float64(v[0]-'0'), 0.1
		for _, d := range v[min(len(v), 2):] {
			if d < '0' || d > '9' {
				return 0
			}
			f += float64(d-'0') * scale
			scale /= 10
		}
		return min(f, 1)
	}
	return 1
}

// sendRendition answers a public read from r: 304 when the client's copy is current (in
// any coding: they are the same version), else the body in the negotiated coding.
func (s *Server) sendRendition(c *fiber.Ctx, r *rendition) error {
	s.writeRendition(c.Context(), r)
	return nil
}

// writeRendition is sendRendition on fasthttp's request; it returns the status.
func (s *Server) writeRendition(ctx *fasthttp.RequestCtx, r *rendition) int {
	req, resp := &ctx.Request.Header, &ctx.Response
	e := negotiate(req.Peek(fiber.HeaderAcceptEncoding))
	if len(r.body) < minCompressed {
		e = identity
	}
	h := &resp.Header
	h.SetContentType(fiber.MIMEApplicationJSON)
	if r.lastMod != "" {
		h.Set(fiber.HeaderLastModified, r.lastMod)
	}
	h.Set(fiber.HeaderCacheControl, cacheControlPublic)
	h.Set(fiber.HeaderVary, varyPublic)
	h.Set(fiber.HeaderContentLanguage, r.lang)
	if tag, ok := r.matches(req, e); ok {
		h.Set(fiber.HeaderETag, tag)
		resp.SetStatusCode(fiber.StatusNotModified)
		resp.ResetBody()
		return fiber.StatusNotModified
	}
	body, e := s.reads.encoded(r, e)
	h.Set(fiber.HeaderETag, r.etag[e])
	if e != identity {
		h.Set(fiber.HeaderContentEncoding, encodingName[e])
	}
	resp.SetStatusCode(fiber.StatusOK)
	// The bytes are immutable: the response points at them instead of copying, and a large
	// body goes to the connection in one system call with the header.
	if len(body) > directWrite {
		resp.SetBodyStream(newDirectBody(ctx.Conn(), body), len(body))
	} else {
		resp.SetBodyRaw(body)
	}
	return fiber.StatusOK
}

// directWrite is the body size above which a response is written straight to the
// connection: fasthttp would otherwise copy its first 4 KiB into its buffer and write the
// response in two system calls.
const directWrite = 2 << 10

// directBody is a response body fasthttp writes through its WriteTo: the header fasthttp
// buffered and the body leave in one writev, with no copy of the body.
type directBody struct {
	conn net.Conn
	body []byte
	off  int // for Read, should fasthttp ever read instead
}

var directBodies = sync.Pool{New: func() any { return new(directBody) }}

func newDirectBody(conn net.Conn, body []byte) *directBody {
	d := directBodies.Get().(*directBody)
	d.conn, d.body, d.off = conn, body, 0
	return d
}

func (d *directBody) Read(p []byte) (int, error) {
	if d.off >= len(d.body) {
		return 0, io.EOF
	}
	n := copy(p, d.body[d.off:])
	d.off += n
	return n, nil
}

// WriteTo is called by fasthttp with its buffered writer over the connection, holding the
// response header.
func (d *directBody) WriteTo(w io.Writer) (int64, error) {
	bw, ok := w.(*bufio.Writer)
	if !ok || d.conn == nil || d.off != 0 {
		n, err := w.Write(d.body[d.off:])
		d.off += n
		return int64(n), err
	}
	// bufio.Writer's AvailableBuffer is its buffer right after the bytes it holds: the
	// header is the Buffered() bytes before it. Sent together with the body, they leave
	// bw, which is then reset over the same connection (fasthttp's writer wraps it).
	hdr := bw.Buffered()
	avail := bw.AvailableBuffer()
	if hdr == 0 || cap(avail) == 0 {
		if err := bw.Flush(); err != nil {
			return 0, err
		}
		n, err := d.conn.Write(d.body)
		d.off = n
		return int64(n), err
	}
	head := unsafe.Slice((*byte)(unsafe.Add(unsafe.Pointer(unsafe.SliceData(avail)), -hdr)), hdr)
	bufs := net.Buffers{head, d.body}
	n, err := bufs.WriteTo(d.conn)
	bw.Reset(d.conn)
	sent := max(int(n)-hdr, 0)
	d.off = sent
	return int64(sent), err
}

// Close returns d to its pool once fasthttp is done with the response.
func (d *directBody) Close() error {
	*d = directBody{}
	directBodies.Put(d)
	return nil
}

// matches applies If-None-Match (any of r's ETags, in any coding, weakly compared, or *)
// or, without it, If-Modified-Since; it returns the ETag to answer a 304 with: the one the
// client sent for the coding it now negotiates, else the first of r's it sent.
func (r *rendition) matches(req *fasthttp.RequestHeader, want encoding) (string, bool) {
	if inm := req.Peek(fiber.HeaderIfNoneMatch); len(inm) > 0 {
		found := -1
		for tag := range bytes.SplitSeq(inm, []byte(",")) {
			tag = bytes.TrimPrefix(bytes.TrimSpace(tag), []byte("W/"))
			if bytes.Equal(tag, []byte("*")) {
				return r.etag[want], true
			}
			for e := range numEncodings {
				if string(tag) == r.etag[e] {
					if e == want {
						return r.etag[e], true
					}
					if found < 0 {
						found = int(e)
					}
				}
			}
		}
		if found >= 0 {
			return r.etag[found], true
		}
		return "", false
	}
	ims := req.Peek(fiber.HeaderIfModifiedSince)
	if len(ims) == 0 || r.lastMod == "" {
		return "", false
	}
	if string(ims) == r.lastMod {
		return r.etag[want], true
	}
	if t, err := http.ParseTime(string(ims)); err == nil && !r.modified.Truncate(time.Second).After(t) {
		return r.etag[want], true
	}
	return "", false
}

// fastRead answers GET /v1/events/{event}/schedule straight from fasthttp when this node
// holds the current rendition, without Fiber's context and routing: the read every app
// repeats. It reports false, having written nothing, for anything else (another path or
// method, a body, an escaped or non-canonical path, a bad lang, nothing rendered yet),
// which Fiber then serves as usual. It is counted in the request metrics like any route.
func (s *Server) fastRead(ctx *fasthttp.RequestCtx) bool {
	// A request without a body has no Content-Length (-2) or says 0; -1 is chunked.
	if cl := ctx.Request.Header.ContentLength(); !ctx.IsGet() || cl > 0 || cl == -1 {
		return false
	}
	path := ctx.Request.URI().PathOriginal()
	rest, ok := bytes.CutPrefix(path, []byte("/v1/events/"))
	if !ok {
		return false
	}
	ev, ok := bytes.CutSuffix(rest, []byte("/schedule"))
	if !ok || len(ev) == 0 || bytes.IndexByte(ev, '/') >= 0 || bytes.IndexByte(ev, '%') >= 0 {
		return false
	}
	start := time.Now()
	lang, err := langOf(ctx.QueryArgs().Peek("lang"), ctx.Request.Header.Peek(fiber.HeaderAcceptLanguage))
	if err != nil {
		return false
	}
	// The event's bytes live in the request's buffer: only looked up, never kept.
	event := unsafe.String(unsafe.SliceData(ev), len(ev))
	k := renditionKey{event: event, variant: scheduleVariant, lang: lang}
	var r *rendition
	s.opts.Store.Read(event, func(st *projection.EventState) { r = s.reads.current(k, stampOf(st)) })
	if r == nil {
		return false
	}
	select {
	case <-r.ready:
	default:
		return false // still rendering: Fiber's path waits for it
	}
	if r.err != nil || r.retry {
		return false
	}
	status := s.writeRendition(ctx, r)
	s.reads.fast.Add(1)
	s.m.series(fiber.MethodGet, scheduleRoute, status).observe(time.Since(start))
	return true
}

const (
	scheduleVariant = "schedule"
	scheduleRoute   = "/v1/events/:event/schedule"
)
