package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/cabildo/cabildo/internal/config"
	"github.com/cabildo/cabildo/pkg/api"
	"github.com/cabildo/cabildo/pkg/client"
	"github.com/cabildo/cabildo/pkg/protocol"
)

// wsResult is one line of `cabildo loadgen ws` (and of `cabildo loadgen peer`).
type wsResult struct {
	Scenario         string  `json:"scenario"`
	Client           string  `json:"client"` // lean: raw websockets, a byte scan per frame; sdk: the Go SDK
	Connections      int     `json:"connections"`
	Connected        int     `json:"connected"`
	ConnectPerSecond float64 `json:"connect_per_second"`
	ChangesPerSecond float64 `json:"changes_per_second"`
	Changes          int     `json:"changes"`
	Expected         int     `json:"expected_deliveries"`
	Delivered        int     `json:"delivered"`
	Lost             int     `json:"lost"`
	Gaps             uint64  `json:"gaps"`
	Duplicates       uint64  `json:"duplicates"`
	Reconnects       uint64  `json:"reconnects"`
	Dropped          int     `json:"dropped,omitempty"` // lean clients whose connection ended before the run did
	// Latencies run from each change's scheduled time (open loop), not from when it was sent.
	P50ms float64 `json:"p50_ms"`
	P95ms float64 `json:"p95_ms"`
	P99ms float64 `json:"p99_ms"`
	Maxms float64 `json:"max_ms"`
	// SendLateMaxMs is the most a change was sent after its scheduled time: the writer fell
	// behind by that much, and the latencies above include it.
	SendLateMaxMs float64 `json:"send_late_max_ms"`
	FrameBytes    float64 `json:"frame_bytes,omitempty"` // mean size of a delivered frame (lean clients)
	// Server memory per connection, from its RSS growth over the idle baseline: right
	// after the ramp (connection set-up garbage included) and at the end of the run.
	ServerRSSPerConnK    float64 `json:"server_rss_per_connection_kib,omitempty"`
	ServerRSSEndPerConnK float64 `json:"server_rss_end_per_connection_kib,omitempty"`
	ServerCPUPerDelUs    float64 `json:"server_cpu_per_delivery_us,omitempty"`
	// The load generator's own CPU per frame it received during the changes, and the cores
	// it kept busy: when these approach the server's, the tool is what is being measured.
	LoadgenCPUPerFrameUs float64 `json:"loadgen_cpu_per_frame_us,omitempty"`
	LoadgenCores         float64 `json:"loadgen_cores,omitempty"`
	ServerCores          float64 `json:"server_cores,omitempty"`
}

// loadgenWS ramps N clients on one channel, makes programme changes at fixed times and
// measures how fast and how completely every client receives them. Change i is due at
// start + i/rate (an open loop: a write that falls behind does not move the clock), and a
// delivery's latency runs from its change's due time to the moment the client has read it.
func loadgenWS(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := config.NewFlagSet("loadgen ws")
	base := fs.String("url", "http://127.0.0.1:8080", "node base URL (loopback only)")
	event := fs.String("event", "ogp-sanjose-2027", "event whose schedule channel the clients follow")
	tok := fs.String("token", "", "organizer token for the changes (required)")
	n := fs.Int("clients", 1000, "websocket connections")
	rampRate := fs.Int("ramp", 2000, "connections opened per second")
	changeRate := fs.Float64("rate", 1, "programme changes per second")
	dur := fs.Duration("duration", 30*time.Second, "how long changes are made")
	pid := fs.Int("server-pid", 0, "server process id, to read its memory and CPU from /proc (same machine)")
	name := fs.String("scenario", "", "name for the result line")
	mode := fs.String("client", "lean", "lean: raw websockets that scan each frame for its version and prev (about the peer client's cost per frame); sdk: the Go SDK, which decodes every frame")
	lang := fs.String("lang", "en", "language the clients subscribe in (es brings the demo's snapshot in parts)")
	if err := config.ParseArgs(fs, args); errors.Is(err, flag.ErrHelp) {
		return printHelp(stdout, "usage: cabildo loadgen ws [flags]\n", fs)
	} else if err != nil {
		return err
	}
	if err := loopbackURL("loadgen", "--url", *base); err != nil {
		return err
	}
	if *tok == "" || *n < 1 || *n > 20000 || *changeRate <= 0 || *changeRate > 1000 || *dur <= 0 || *dur > time.Hour {
		return errors.New("loadgen ws: need --token, 1 ≤ --clients ≤ 20000, 0 < --rate ≤ 1000, 0 < --duration ≤ 1h")
	}
	if *mode != "lean" && *mode != "sdk" {
		return fmt.Errorf("loadgen ws: --client is lean or sdk, not %q", *mode)
	}
	if *name == "" {
		*name = fmt.Sprintf("ws_%d_clients_%g_per_s", *n, *changeRate)
	}
	httpc := &http.Client{Timeout: 10 * time.Second}
	lg := &restLoad{client: httpc, base: *base, event: *event, token: *tok}
	sessions, _, err := lg.prepare(ctx)
	if err != nil {
		return err
	}
	rss0, _ := procStats(*pid)
	channel := "schedule:" + *event
	wsURL := "ws" + strings.TrimPrefix(*base, "http") + "/v1/ws"
	origin := time.Now()

	// Ramp. Connected means subscribed: the client has its snapshot.
	var fleet wsFleet
	if *mode == "lean" {
		fleet = &leanFleet{url: wsURL, channel: channel, lang: *lang, origin: origin,
			capacity: int(*changeRate*dur.Seconds()) + 16}
	} else {
		fleet = &sdkFleet{url: wsURL, channel: channel, lang: *lang, origin: origin}
	}
	rampStart := time.Now()
	connected := ramp(ctx, *n, *rampRate, fleet.dial)
	rampTook := time.Since(rampStart)
	rss1, cpu1 := procStats(*pid)
	self1, wall1 := selfCPU(), time.Now()

	// Changes at fixed times; each one's due time keyed by the version it produced.
	var (
		mu   sync.Mutex
		due  = map[uint64]time.Duration{} // since origin
		last uint64
	)
	writeErrs := 0
	late := openLoop(ctx, time.Now(), time.Duration(float64(time.Second) / *changeRate), *dur, func(i int, at time.Time) {
		v, err := lg.nudgeVersion(ctx, sessions[0], i)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			writeErrs++
			return
		}
		if _, ok := due[v]; !ok { // a change that changed nothing names an earlier version
			due[v] = at.Sub(origin)
		}
		last = max(last, v)
	})
	// Let the last deliveries arrive.
	settle := time.Now().Add(10 * time.Second)
	for time.Now().Before(settle) && fleet.behind(last) > 0 {
		time.Sleep(20 * time.Millisecond)
	}
	rss2, cpu2 := procStats(*pid)
	self2, wall2 := selfCPU(), time.Now()

	res := wsResult{Scenario: *name, Client: *mode, Connections: *n, Connected: connected,
		ConnectPerSecond: float64(connected) / rampTook.Seconds(),
		ChangesPerSecond: *changeRate, Changes: len(due), Expected: len(due) * connected, SendLateMaxMs: ms(late)}
	lat, frames := fleet.collect(&res, due) // closes the clients first
	res.summarize(lat, int64(connected), rss1-rss0, rss2-rss0, cpu2-cpu1)
	res.loadgenCPU(self2-self1, wall2.Sub(wall1), cpu2-cpu1, frames)
	if writeErrs > 0 {
		fmt.Fprintf(stderr, "loadgen ws: %d writes failed\n", writeErrs)
	}
	return json.NewEncoder(stdout).Encode(res)
}

// openLoop calls fn for change i at start + i·every, for every such time before
// start + dur, one change at a time. When fn takes longer than every, the next changes
// are made at once, as soon as fn returns, but each is still handed its own due time:
// latencies counted from it include the writer's delay instead of hiding it (a writer
// that falls behind does not move the clock). It returns the most a change started
// after its due time.
func openLoop(ctx context.Context, start time.Time, every, dur time.Duration, fn func(i int, due time.Time)) (late time.Duration) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for i := 0; ; i++ {
		at := start.Add(time.Duration(i) * every)
		if !at.Before(start.Add(dur)) {
			return late
		}
		if d := time.Until(at); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				return late
			case <-timer.C:
			}
		} else if ctx.Err() != nil {
			return late
		}
		late = max(late, time.Since(at))
		fn(i, at)
	}
}

// ramp opens n connections at rate per second, 64 at most being set up at once, and
// returns how many succeeded.
func ramp(ctx context.Context, n, rate int, dial func(ctx context.Context, i int) bool) int {
	tick := time.NewTicker(time.Second / time.Duration(max(rate, 1)))
	defer tick.Stop()
	var (
		wg sync.WaitGroup
		ok atomic.Int64
	)
	sem := make(chan struct{}, 64)
	for i := range n {
		<-tick.C
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if dial(dctx, i) {
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	return int(ok.Load())
}

// wsFleet is the clients of one run, lean or SDK.
type wsFleet interface {
	// dial connects client i and returns once it is subscribed.
	dial(ctx context.Context, i int) bool
	// behind counts the clients that have not reached version v.
	behind(v uint64) int
	// collect closes every client, adds its losses and checks to res and returns the
	// latencies of the deliveries of the changes in due, and the frames read.
	collect(res *wsResult, due map[uint64]time.Duration) (lat []time.Duration, frames int64)
}

// wsRecv is one delivery: the version and when it was read, since the run's origin.
type wsRecv struct {
	version uint64
	at      time.Duration
}

// deliveryLatencies matches deliveries with their changes' due times; deliveries of
// versions the writer did not make (or whose write failed) are left out.
func deliveryLatencies(lat []time.Duration, got []wsRecv, due map[uint64]time.Duration) []time.Duration {
	for _, r := range got {
		if d, ok := due[r.version]; ok {
			lat = append(lat, r.at-d)
		}
	}
	return lat
}

// sdkFleet: each client is the Go SDK, which decodes every frame in full.
type sdkFleet struct {
	url, channel, lang string
	origin             time.Time

	mu    sync.Mutex
	conns []*sdkConn
}

type sdkConn struct {
	c *client.Client
	s *client.Subscription
	// got belongs to the client's read goroutine until the client is closed: no lock
	// shared by thousands of clients distorts the latencies measured.
	got []wsRecv
}

func (f *sdkFleet) dial(ctx context.Context, _ int) bool {
	c, err := client.Dial(ctx, client.Options{URL: f.url, MinBackoff: 200 * time.Millisecond, MaxBackoff: 5 * time.Second})
	if err != nil {
		return false
	}
	sc := &sdkConn{c: c}
	s, err := c.Subscribe(f.channel, f.lang, client.Handler{
		OnUpdate: func(v, _ uint64, _ json.RawMessage) {
			sc.got = append(sc.got, wsRecv{v, time.Since(f.origin)})
		},
	})
	if err != nil {
		c.Close()
		return false
	}
	sc.s = s
	f.mu.Lock()
	f.conns = append(f.conns, sc)
	f.mu.Unlock()
	for {
		if _, ok := s.Last(c); ok {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (f *sdkFleet) behind(v uint64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, sc := range f.conns {
		if last, _ := sc.s.Last(sc.c); last < v {
			n++
		}
	}
	return n
}

func (f *sdkFleet) collect(res *wsResult, due map[uint64]time.Duration) ([]time.Duration, int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	// Closing a client waits for its read goroutine: its deliveries are then ours.
	var closing sync.WaitGroup
	for _, sc := range f.conns {
		closing.Go(func() { sc.c.Close() })
	}
	closing.Wait()
	var lat []time.Duration
	var frames int64
	for _, sc := range f.conns {
		lat = deliveryLatencies(lat, sc.got, due)
		frames += int64(len(sc.got))
		st := sc.c.Stats()
		res.Gaps += st.Gaps
		res.Duplicates += st.Duplicates
		res.Reconnects += st.Connects - 1
	}
	return lat, frames
}

// leanFleet: each client is a bare websocket whose read loop scans a frame's top-level
// fields (parseLean) instead of decoding it, reads into buffers shared by all clients
// and allocates nothing per frame, so that its CPU per frame is about the peer client's
// (loadgen peer --client lean) and the tool stays far from being what it measures.
type leanFleet struct {
	url, channel, lang string
	origin             time.Time
	capacity           int // deliveries each client expects, to size its list once

	mu      sync.Mutex
	conns   []*leanConn
	readers sync.WaitGroup
}

// leanConn is one connection; its read loop owns everything but last until it returns.
type leanConn struct {
	conn    *websocket.Conn
	channel string
	origin  time.Time
	last    atomic.Uint64 // the last version applied
	got     []wsRecv
	gaps    uint64
	dups    uint64
	frames  int64 // frames read after subscribing
	bytes   int64 // their bytes
	parts   leanParts
	err     error // why the read loop ended before the run did
	closing atomic.Bool
}

var leanDialer = &websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 2048, WriteBufferSize: 512,
	WriteBufferPool: &sync.Pool{}}

func (f *leanFleet) dial(ctx context.Context, _ int) bool {
	conn, resp, err := leanDialer.DialContext(ctx, f.url, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return false
	}
	conn.SetReadLimit(protocol.MaxServerFrameBytes)
	c := &leanConn{conn: conn, channel: f.channel, origin: f.origin, got: make([]wsRecv, 0, f.capacity)}
	sub, _ := json.Marshal(protocol.ClientFrame{Type: protocol.TypeSubscribe, ID: 1, Channel: f.channel, Lang: f.lang})
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(dl)
		_ = conn.SetWriteDeadline(dl)
	}
	if err := conn.WriteMessage(websocket.TextMessage, sub); err != nil {
		conn.Close()
		return false
	}
	for subscribed := false; !subscribed; {
		if err := c.readFrame(func(fr *leanFrame) error {
			if fr.is(protocol.TypeError) {
				return errors.New("subscribe refused")
			}
			subscribed = fr.is(protocol.TypeSubscribed)
			return nil
		}); err != nil {
			conn.Close()
			return false
		}
	}
	_ = conn.SetReadDeadline(time.Time{})
	_ = conn.SetWriteDeadline(time.Time{})
	c.got, c.frames, c.bytes = c.got[:0], 0, 0 // a resume's updates are not deliveries of the run
	f.mu.Lock()
	f.conns = append(f.conns, c)
	f.mu.Unlock()
	f.readers.Go(c.read)
	return true
}

func (f *leanFleet) behind(v uint64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.conns {
		if c.last.Load() < v {
			n++
		}
	}
	return n
}

func (f *leanFleet) collect(res *wsResult, due map[uint64]time.Duration) ([]time.Duration, int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.conns {
		c.closing.Store(true)
		_ = c.conn.Close()
	}
	f.readers.Wait() // every client's deliveries are now ours
	var (
		lat           []time.Duration
		frames, bytes int64
	)
	for _, c := range f.conns {
		lat = deliveryLatencies(lat, c.got, due)
		res.Gaps += c.gaps
		res.Duplicates += c.dups
		frames += c.frames
		bytes += c.bytes
		if c.err != nil {
			res.Dropped++
		}
	}
	if frames > 0 {
		res.FrameBytes = float64(bytes) / float64(frames)
	}
	return lat, frames
}

// read applies frames until the connection ends.
func (c *leanConn) read() {
	for {
		if err := c.readFrame(nil); err != nil {
			if !c.closing.Load() {
				c.err = err
			}
			return
		}
	}
}

// frameBufs are the read buffers every lean client shares: a frame is copied into one
// only once it has arrived, so there are about as many as frames being handled at once.
var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// readFrame reads one frame and applies it to the channel's state: versions must chain by
// prev, a snapshot in parts counts once its last part is in. Other frames go to other
// (nil: ignored).
func (c *leanConn) readFrame(other func(*leanFrame) error) error {
	typ, r, err := c.conn.NextReader()
	if err != nil {
		return err
	}
	bp := frameBufs.Get().(*[]byte)
	defer frameBufs.Put(bp)
	if err := readInto(bp, r); err != nil {
		return err
	}
	b := *bp
	if typ != websocket.TextMessage {
		return nil
	}
	now := time.Since(c.origin)
	var fr leanFrame
	if err := scanFrame(b, &fr); err != nil {
		return err
	}
	c.frames++
	c.bytes += int64(len(b))
	if string(fr.channel) != c.channel && !fr.is(protocol.TypeError) {
		return nil
	}
	switch {
	case fr.is(protocol.TypeUpdate):
		last := c.last.Load()
		switch {
		case fr.version <= last:
			c.dups++
		default:
			if !fr.hasPrev || fr.prev != last {
				c.gaps++
			}
			c.last.Store(fr.version)
			c.got = append(c.got, wsRecv{fr.version, now})
		}
		return nil
	case fr.is(protocol.TypeSnapshot):
		if v, whole, err := c.parts.add(&fr); err != nil {
			return err
		} else if whole {
			c.last.Store(v)
		}
		if other != nil {
			return other(&fr)
		}
		return nil
	}
	if other != nil {
		return other(&fr)
	}
	return nil
}

// leanParts follows a snapshot in parts: 1 to parts, same version and count, nothing of
// the channel between them (asyncapi.yaml, Frame size).
type leanParts struct {
	version    uint64
	parts, got int
}

// add takes a snapshot frame and reports the version it brings the channel to once whole.
func (p *leanParts) add(f *leanFrame) (version uint64, whole bool, err error) {
	if f.parts == 0 {
		if p.got != 0 {
			return 0, false, fmt.Errorf("a whole snapshot at %d inside the parts of %d", f.version, p.version)
		}
		return f.version, true, nil
	}
	if p.got == 0 {
		p.version, p.parts = f.version, f.parts
	}
	if f.part != p.got+1 || f.version != p.version || f.parts != p.parts || f.parts < 2 {
		return 0, false, fmt.Errorf("snapshot part %d/%d at %d out of sequence (expected %d/%d at %d)",
			f.part, f.parts, f.version, p.got+1, p.parts, p.version)
	}
	if p.got++; p.got < p.parts {
		return 0, false, nil
	}
	p.got = 0
	return p.version, true, nil
}

// leanFrame is what the lean client reads of a server frame: its top-level scalars. The
// strings are views into the frame's buffer, valid until the next read.
type leanFrame struct {
	typ, channel      []byte
	id, version, prev uint64
	hasPrev           bool
	part, parts       int
}

func (f *leanFrame) is(typ string) bool { return string(f.typ) == typ }

// scanFrame reads a frame with parseLean, or with a full decode the rare frame it refuses
// (an error echoing a channel name with escapes, say).
func scanFrame(b []byte, f *leanFrame) error {
	if parseLean(b, f) {
		return nil
	}
	var full protocol.ServerFrame
	if err := json.Unmarshal(b, &full); err != nil {
		return fmt.Errorf("frame %.80q: %w", b, err)
	}
	*f = leanFrame{typ: []byte(full.Type), channel: []byte(full.Channel), id: full.ID, version: full.Version,
		hasPrev: full.Prev != nil, part: full.Part, parts: full.Parts}
	if full.Prev != nil {
		f.prev = *full.Prev
	}
	return nil
}

// parseLean reads a server frame's top-level fields into f with a byte scan: type and
// channel as views of b, id, version, prev, part and parts as numbers; every other value
// (data, chunk, code, message) is skipped over without being decoded. It reports false for
// anything it does not read the way encoding/json would: not one object, a string field
// with escapes, a number that is not a plain unsigned integer, a key seen twice.
func parseLean(b []byte, f *leanFrame) bool {
	*f = leanFrame{}
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return false
	}
	var seen uint8
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return skipSpace(b, i+1) == len(b)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return false
		}
		key, j, ok := plainString(b, i)
		if !ok {
			return false
		}
		i = skipSpace(b, j)
		if i >= len(b) || b[i] != ':' {
			return false
		}
		i = skipSpace(b, i+1)
		var bit uint8
		switch string(key) {
		case "type", "channel":
			s, j, ok := plainString(b, i)
			if !ok {
				return false
			}
			if key[0] == 't' {
				f.typ, bit = s, 1
			} else {
				f.channel, bit = s, 2
			}
			i = j
		case "id", "version", "prev", "part", "parts":
			v, j, ok := plainUint(b, i)
			if !ok {
				return false
			}
			switch string(key) {
			case "id":
				f.id, bit = v, 4
			case "version":
				f.version, bit = v, 8
			case "prev":
				f.prev, f.hasPrev, bit = v, true, 16
			case "part":
				f.part, bit = int(v), 32
			default:
				f.parts, bit = int(v), 64
			}
			i = j
		default:
			j, ok := skipValue(b, i)
			if !ok {
				return false
			}
			i = j
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		i = skipSpace(b, i)
		if i >= len(b) {
			return false
		}
		if b[i] == '}' {
			return skipSpace(b, i+1) == len(b) && seen&1 != 0
		}
		if b[i] != ',' {
			return false
		}
		i = skipSpace(b, i+1)
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString reads the string at b[i] ('"'), which must hold no escape.
func plainString(b []byte, i int) (s []byte, next int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return nil, 0, false
	}
	j := bytes.IndexByte(b[i+1:], '"')
	if j < 0 {
		return nil, 0, false
	}
	s = b[i+1 : i+1+j]
	if bytes.IndexByte(s, '\\') >= 0 {
		return nil, 0, false
	}
	return s, i + j + 2, true
}

// plainUint reads the unsigned integer at b[i].
func plainUint(b []byte, i int) (v uint64, next int, ok bool) {
	j := i
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		d := uint64(b[j] - '0')
		if v > (math.MaxUint64-d)/10 {
			return 0, 0, false
		}
		v = v*10 + d
		j++
	}
	if j == i || (b[i] == '0' && j > i+1) {
		return 0, 0, false
	}
	if j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
		return 0, 0, false
	}
	return v, j, true
}

// skipValue steps over the JSON value at b[i] without decoding it: strings by their
// quotes and escapes, objects and arrays by their brackets, anything else up to the ',' or
// '}' that ends it.
func skipValue(b []byte, i int) (next int, ok bool) {
	depth := 0
	for i < len(b) {
		switch b[i] {
		case '"':
			j := i + 1
			for {
				k := bytes.IndexAny(b[j:], `"\`)
				if k < 0 {
					return 0, false
				}
				if b[j+k] == '\\' {
					j += k + 2
					continue
				}
				j += k + 1
				break
			}
			i = j
		case '{', '[':
			depth++
			i++
		case '}', ']':
			if depth == 0 {
				return i, true
			}
			depth--
			i++
		case ',':
			if depth == 0 {
				return i, true
			}
			i++
		default:
			i++
		}
	}
	return i, false
}

// nudgeVersion makes one programme change and returns the version it produced.
func (l *restLoad) nudgeVersion(ctx context.Context, s api.Session, i int) (uint64, error) {
	req, err := l.nudgeRequest(ctx, s, i)
	if err != nil {
		return 0, err
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var body struct {
		Version uint64 `json:"version"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 {
		return 0, fmt.Errorf("change: status %d: %v", resp.StatusCode, err)
	}
	return body.Version, nil
}

// procStats reads a local process's resident memory (KiB) and CPU time (µs).
func procStats(pid int) (rssKiB int64, cpuMicros int64) {
	if pid <= 0 {
		return 0, 0
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				rssKiB, _ = strconv.ParseInt(f[1], 10, 64)
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the command name (which may hold spaces) start after ") ".
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			f := strings.Fields(s[i+2:])
			if len(f) > 12 {
				ut, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				cpuMicros = (ut + st) * 10_000 // clock ticks of 10 ms (USER_HZ 100)
			}
		}
	}
	return rssKiB, cpuMicros
}

// summarize fills in latency percentiles and the server's memory per connection and CPU
// per delivery (growths measured from /proc; zero when unknown).
func (res *wsResult) summarize(lat []time.Duration, connected, rssGrowthKiB, rssEndGrowthKiB, cpuMicros int64) {
	res.Delivered = len(lat)
	res.Lost = res.Expected - res.Delivered
	slices.Sort(lat)
	pct := func(p float64) float64 { return ms(percentile(lat, p)) }
	res.P50ms, res.P95ms, res.P99ms, res.Maxms = pct(.5), pct(.95), pct(.99), pct(1)
	if rssGrowthKiB > 0 && connected > 0 {
		res.ServerRSSPerConnK = float64(rssGrowthKiB) / float64(connected)
	}
	if rssEndGrowthKiB > 0 && connected > 0 {
		res.ServerRSSEndPerConnK = float64(rssEndGrowthKiB) / float64(connected)
	}
	if cpuMicros > 0 && res.Delivered > 0 {
		res.ServerCPUPerDelUs = float64(cpuMicros) / float64(res.Delivered)
	}
}

// selfCPU is this process's user and system CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadgenCPU fills in the load generator's CPU per frame read and the cores it and the
// server kept busy over wall.
func (res *wsResult) loadgenCPU(self, wall time.Duration, serverMicros, frames int64) {
	if frames > 0 {
		res.LoadgenCPUPerFrameUs = float64(self.Microseconds()) / float64(frames)
	}
	if wall > 0 {
		res.LoadgenCores = self.Seconds() / wall.Seconds()
		res.ServerCores = float64(serverMicros) / 1e6 / wall.Seconds()
	}
}
