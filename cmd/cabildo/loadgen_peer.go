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
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/cabildo/cabildo/internal/config"
)

// loadgenPeer runs the measurement of `loadgen ws` against a peer realtime server speaking
// the Centrifugo JSON protocol, so both can be compared on the same machine with the same
// method: N raw websocket clients subscribe to one channel, a publisher posts to the peer's
// HTTP server API at fixed times (publication i is due at start + i/rate, an open loop as
// in loadgen ws), and latency runs from a publication's due time to the moment a client
// has read it. It prints one wsResult line.
func loadgenPeer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := config.NewFlagSet("loadgen peer")
	wsURL := fs.String("url", "ws://127.0.0.1:8000/connection/websocket", "peer websocket endpoint, Centrifugo JSON protocol (loopback only)")
	apiURL := fs.String("api", "http://127.0.0.1:8000/api", "peer HTTP server API base; publishes go to <api>/publish (loopback only)")
	apiKey := fs.String("api-key", "", "peer HTTP API key, sent as X-API-Key (required)")
	channel := fs.String("channel", "schedule", "channel the clients subscribe to and the publisher publishes into")
	n := fs.Int("clients", 1000, "websocket connections")
	rampRate := fs.Int("ramp", 2000, "connections opened per second")
	changeRate := fs.Float64("rate", 1, "publications per second")
	dur := fs.Duration("duration", 30*time.Second, "how long publications are made")
	pad := fs.Int("payload-bytes", 360, "padding in each publication's data; 360 makes a push frame of ~425 bytes, the size of a Cabildo update frame")
	pid := fs.Int("server-pid", 0, "peer server process id, to read its memory and CPU from /proc (same machine)")
	name := fs.String("scenario", "", "name for the result line")
	mode := fs.String("client", "lean", "lean: scan each push for its channel and seq, shared read buffers (about loadgen ws --client lean's cost per frame); full: decode every message with encoding/json")
	if err := config.ParseArgs(fs, args); errors.Is(err, flag.ErrHelp) {
		return printHelp(stdout, "usage: cabildo loadgen peer [flags]\n", fs)
	} else if err != nil {
		return err
	}
	for _, raw := range []string{*wsURL, *apiURL} {
		if err := loopbackURL("loadgen peer", "--url and --api", raw); err != nil {
			return err
		}
	}
	if !strings.HasPrefix(*wsURL, "ws://") {
		return fmt.Errorf("loadgen peer: --url must be a ws:// URL, not %q", *wsURL)
	}
	if *apiKey == "" || *channel == "" || *n < 1 || *n > 20000 || *changeRate <= 0 || *changeRate > 1000 ||
		*dur <= 0 || *dur > time.Hour || *pad < 0 || *pad > 60000 {
		return errors.New("loadgen peer: need --api-key and --channel, 1 ≤ --clients ≤ 20000, 0 < --rate ≤ 1000, 0 < --duration ≤ 1h, 0 ≤ --payload-bytes ≤ 60000")
	}
	if *mode != "lean" && *mode != "full" {
		return fmt.Errorf("loadgen peer: --client is lean or full, not %q", *mode)
	}
	if *name == "" {
		*name = fmt.Sprintf("peer_centrifugo_%d_clients_%g_per_s", *n, *changeRate)
	}
	pub := &peerPublisher{client: &http.Client{Timeout: 10 * time.Second}, url: strings.TrimSuffix(*apiURL, "/") + "/publish",
		key: *apiKey, channel: *channel, pad: strings.Repeat("x", *pad)}
	rss0, _ := procStats(*pid)
	origin := time.Now()
	capacity := int(*changeRate*dur.Seconds()) + 16

	// Ramp: each client connects and subscribes, then reads until closed.
	clients := make([]*peerClient, *n)
	var connected atomic.Int64
	var readers sync.WaitGroup
	dialer := &websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	rampStart := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(max(*rampRate, 1)))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var firstErr atomic.Value
	for i := range *n {
		<-tick.C
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			c, err := dialPeer(dctx, dialer, *wsURL, *channel, *mode == "lean", origin, capacity)
			if err != nil {
				firstErr.CompareAndSwap(nil, err.Error())
				return
			}
			clients[i] = c
			connected.Add(1)
			readers.Add(1)
			go func() {
				defer readers.Done()
				c.read()
			}()
		}()
	}
	tick.Stop()
	wg.Wait()
	rampTook := time.Since(rampStart)
	rss1, cpu1 := procStats(*pid)
	self1, wall1 := selfCPU(), time.Now()

	// Publications at fixed times; each one's due time keyed by its sequence number.
	due := map[int64]time.Duration{} // since origin
	var last int64
	pubErrs := 0
	late := openLoop(ctx, time.Now(), time.Duration(float64(time.Second) / *changeRate), *dur, func(i int, at time.Time) {
		seq := int64(i) + 1
		if err := pub.publish(ctx, seq); err != nil {
			pubErrs++
			firstErr.CompareAndSwap(nil, err.Error())
			return
		}
		due[seq] = at.Sub(origin)
		last = seq
	})
	// Let the last deliveries arrive.
	settle := time.Now().Add(10 * time.Second)
	for time.Now().Before(settle) {
		behind := 0
		for _, c := range clients {
			if c != nil && c.last.Load() < last {
				behind++
			}
		}
		if behind == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	rss2, cpu2 := procStats(*pid)
	self2, wall2 := selfCPU(), time.Now()
	for _, c := range clients {
		if c != nil {
			_ = c.conn.Close()
		}
	}
	readers.Wait() // every client's received list is now the main goroutine's

	res := wsResult{Scenario: *name, Client: *mode, Connections: *n, Connected: int(connected.Load()),
		ConnectPerSecond: float64(connected.Load()) / rampTook.Seconds(),
		ChangesPerSecond: *changeRate, Changes: len(due), Expected: len(due) * int(connected.Load()), SendLateMaxMs: ms(late)}
	var (
		lat           []time.Duration
		frames, bytes int64
	)
	dropped := 0
	for _, c := range clients {
		if c == nil {
			continue
		}
		frames += c.frames
		bytes += c.bytes
		var prev int64
		for _, r := range c.received {
			if r.seq <= prev {
				res.Duplicates++
				continue
			}
			if prev != 0 && r.seq > prev+1 {
				res.Gaps++
			}
			prev = r.seq
			if d, ok := due[r.seq]; ok {
				lat = append(lat, r.at-d)
			}
		}
		if c.err != nil {
			dropped++
		}
	}
	res.Dropped = dropped
	if frames > 0 {
		res.FrameBytes = float64(bytes) / float64(frames)
	}
	res.summarize(lat, int64(connected.Load()), rss1-rss0, rss2-rss0, cpu2-cpu1)
	res.loadgenCPU(self2-self1, wall2.Sub(wall1), cpu2-cpu1, frames)
	if pubErrs > 0 || dropped > 0 || res.Connected < *n {
		fmt.Fprintf(stderr, "loadgen peer: %d publishes failed, %d of %d clients connected, %d dropped before the end; first error: %v\n",
			pubErrs, res.Connected, *n, dropped, firstErr.Load())
	}
	return json.NewEncoder(stdout).Encode(res)
}

// peerPublisher posts publications to the peer's HTTP server API.
type peerPublisher struct {
	client  *http.Client
	url     string
	key     string
	channel string
	pad     string
}

func (p *peerPublisher) publish(ctx context.Context, seq int64) error {
	type data struct {
		Seq int64  `json:"seq"`
		Pad string `json:"pad,omitempty"`
	}
	body, _ := json.Marshal(struct {
		Channel string `json:"channel"`
		Data    data   `json:"data"`
	}{p.channel, data{seq, p.pad}})
	req, err := http.NewRequestWithContext(ctx, "POST", p.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-API-Key", p.key)
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	// The API answers 200 with either a result or an error object.
	var out struct {
		Error *peerError `json:"error"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil || resp.StatusCode != 200 {
		return fmt.Errorf("publish: status %d: %v", resp.StatusCode, err)
	}
	if out.Error != nil {
		return fmt.Errorf("publish: %d %s", out.Error.Code, out.Error.Message)
	}
	return nil
}

type peerError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

// peerMsg is one message of the peer's JSON protocol: a reply to command id, or a push.
// An empty object is a ping, which the client answers with an empty object.
type peerMsg struct {
	ID    uint32     `json:"id"`
	Error *peerError `json:"error"`
	Push  *struct {
		Channel string `json:"channel"`
		Pub     *struct {
			Data struct {
				Seq int64 `json:"seq"`
			} `json:"data"`
		} `json:"pub"`
	} `json:"push"`
}

// peerMessages calls fn for each message in a text frame: the server may batch several
// JSON objects in one frame, separated by newlines.
func peerMessages(frame []byte, fn func(line []byte) error) error {
	for len(frame) > 0 {
		line := frame
		if i := bytes.IndexByte(frame, '\n'); i >= 0 {
			line, frame = frame[:i], frame[i+1:]
		} else {
			frame = nil
		}
		if line = bytes.TrimSpace(line); len(line) == 0 {
			continue
		}
		if err := fn(line); err != nil {
			return err
		}
	}
	return nil
}

func isPeerPing(line []byte) bool { return bytes.Equal(line, []byte("{}")) }

type peerRecv struct {
	seq int64
	at  time.Duration // since the run's origin
}

// peerClient is one subscribed connection. Its read loop is its only writer once
// subscribed (pongs), and owns received until the loop returns.
type peerClient struct {
	conn     *websocket.Conn
	channel  string
	lean     bool // scan pushes (peerPushSeq) into shared buffers instead of decoding them
	origin   time.Time
	last     atomic.Int64 // highest sequence number received
	received []peerRecv
	frames   int64 // frames read after subscribing
	bytes    int64
	err      error // why the read loop ended before the connection was closed by us
}

// dialPeer connects, sends connect and subscribe, and returns once subscribed.
func dialPeer(ctx context.Context, d *websocket.Dialer, wsURL, channel string, lean bool, origin time.Time, capacity int) (*peerClient, error) {
	conn, resp, err := d.DialContext(ctx, wsURL, nil)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, err
	}
	conn.SetReadLimit(1 << 20)
	c := &peerClient{conn: conn, channel: channel, lean: lean, origin: origin, received: make([]peerRecv, 0, capacity)}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(dl)
		defer conn.SetReadDeadline(time.Time{})
	}
	sub, _ := json.Marshal(map[string]any{"id": 2, "subscribe": map[string]string{"channel": channel}})
	for _, step := range []struct {
		id  uint32
		cmd []byte
	}{{1, []byte(`{"id":1,"connect":{}}`)}, {2, sub}} {
		if err := c.write(step.cmd); err != nil {
			conn.Close()
			return nil, err
		}
		if err := c.await(step.id); err != nil {
			conn.Close()
			return nil, err
		}
	}
	c.received, c.frames, c.bytes = c.received[:0], 0, 0
	return c, nil
}

func (c *peerClient) write(b []byte) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return c.conn.WriteMessage(websocket.TextMessage, b)
}

// await reads until the reply to command id, answering pings and keeping any publication.
func (c *peerClient) await(id uint32) error {
	for {
		done := false
		if err := c.readFrame(func(m *peerMsg) error {
			if m.ID != id {
				return nil
			}
			if m.Error != nil {
				return fmt.Errorf("command %d: %d %s", id, m.Error.Code, m.Error.Message)
			}
			done = true
			return nil
		}); err != nil {
			return err
		}
		if done {
			return nil
		}
	}
}

// read keeps every publication on the channel until the connection ends.
func (c *peerClient) read() {
	for {
		if err := c.readFrame(nil); err != nil {
			if !errors.Is(err, net.ErrClosed) {
				c.err = err
			}
			return
		}
	}
}

// readFrame reads one frame: pings are answered, publications on the channel recorded,
// and any other message handed to reply (nil: ignored).
func (c *peerClient) readFrame(reply func(*peerMsg) error) error {
	var (
		typ   int
		frame []byte
		err   error
	)
	if c.lean {
		var bp *[]byte
		typ, bp, err = c.readShared()
		if bp != nil {
			frame = *bp
			defer frameBufs.Put(bp)
		}
	} else {
		typ, frame, err = c.conn.ReadMessage()
	}
	if err != nil {
		return err
	}
	now := time.Since(c.origin)
	if typ != websocket.TextMessage {
		return nil
	}
	c.frames++
	c.bytes += int64(len(frame))
	return peerMessages(frame, func(line []byte) error {
		if isPeerPing(line) {
			return c.write([]byte("{}"))
		}
		if c.lean {
			if seq, pub, ok := peerPushSeq(line, c.channel); ok {
				if pub {
					c.keep(seq, now)
				}
				return nil
			}
		}
		var m peerMsg
		if err := json.Unmarshal(line, &m); err != nil {
			return fmt.Errorf("bad message %.80q: %w", line, err)
		}
		if m.Push != nil {
			if m.Push.Pub != nil && m.Push.Channel == c.channel {
				c.keep(m.Push.Pub.Data.Seq, now)
			}
			return nil
		}
		if reply != nil {
			return reply(&m)
		}
		return nil
	})
}

func (c *peerClient) keep(seq int64, at time.Duration) {
	c.received = append(c.received, peerRecv{seq, at})
	if seq > c.last.Load() {
		c.last.Store(seq)
	}
}

// readShared reads one frame into a buffer from frameBufs, which the caller puts back.
func (c *peerClient) readShared() (int, *[]byte, error) {
	typ, r, err := c.conn.NextReader()
	if err != nil {
		return 0, nil, err
	}
	bp := frameBufs.Get().(*[]byte)
	if err := readInto(bp, r); err != nil {
		frameBufs.Put(bp)
		return 0, nil, err
	}
	return typ, bp, nil
}

// readInto reads r to its end into *bp, growing it as needed.
func readInto(bp *[]byte, r io.Reader) error {
	b := (*bp)[:0]
	defer func() { *bp = b }()
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		k, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+k]
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// peerPushSeq reads a publication push with a byte scan, the way the peer's JSON encoder
// writes it: {"push":{"channel":"<channel>","pub":{"data":{"seq":<n>,…}…}}}. ok is false
// for any other message (replies, other pushes, another layout), which the caller then
// decodes in full; pub is false for a push of another channel or with no publication.
func peerPushSeq(line []byte, channel string) (seq int64, pub, ok bool) {
	rest, found := bytes.CutPrefix(line, []byte(`{"push":{"channel":`))
	if !found {
		return 0, false, false
	}
	ch, next, good := plainString(rest, 0)
	if !good {
		return 0, false, false
	}
	rest = rest[next:]
	if string(ch) != channel {
		return 0, false, true
	}
	rest, found = bytes.CutPrefix(rest, []byte(`,"pub":{"data":{"seq":`))
	if !found {
		return 0, false, false
	}
	v, _, good := plainUint(rest, 0)
	if !good || v > math.MaxInt64 {
		return 0, false, false
	}
	return int64(v), true, true
}
