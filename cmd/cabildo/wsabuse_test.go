package main

import (
	wsbin "encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/contract"
	"github.com/cabildo/cabildo/pkg/protocol"
)

// This file is the gateway's fault and abuse scenarios of docs/reliability.md (3, 12-15, 17),
// driven black-box through GET /v1/ws, /metrics and /readyz of nodes run in-process.
// Client counts are the scenarios' scaled down: every client and the node share one
// process and two cores under -race, so behaviour is asserted, not capacity.

func wsURL(n *node) string { return "ws" + strings.TrimPrefix(n.base, "http") + "/v1/ws" }

// metricValue reads one unlabelled sample from the node's /metrics.
func metricValue(t testing.TB, n *node, name string) float64 {
	t.Helper()
	resp, err := http.Get(n.base + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("metrics (status %d) have no %s: %.300s", resp.StatusCode, name, b)
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatalf("metric %s: %v", name, err)
	}
	return v
}

const (
	gaugeSockets      = "cabildo_websocket_connections"
	counterSlowClosed = "cabildo_websocket_slow_consumers_total"
)

// waitGauge waits until the node reports want open websockets.
func waitGauge(t *testing.T, n *node, want float64, within time.Duration) {
	t.Helper()
	checkFor(t, within, 10*time.Millisecond, func() error {
		if got := metricValue(t, n, gaugeSockets); got != want {
			return fmt.Errorf("%s = %v, want %v", gaugeSockets, got, want)
		}
		return nil
	})
}

// follower is a subscribed client whose frames a goroutine reads: each is checked against
// the contract and the prev chain, and the arrival of each version is timed.
type follower struct {
	c *websocket.Conn
	v *contract.FrameValidator

	mu      sync.Mutex
	last    uint64
	got     []uint64
	arrived []time.Time
	pongs   map[uint64]bool
	end     error // the first broken frame, or why reading stopped
}

func follow(t *testing.T, n *node, channel string) *follower {
	t.Helper()
	w := mustDial(t, n)
	fr := w.subscribe(channel, nil)
	f := &follower{c: w.c, v: frames(t), last: fr[len(fr)-1].Version, pongs: map[uint64]bool{}}
	go f.read()
	return f
}

func (f *follower) read() {
	_ = f.c.SetReadDeadline(time.Time{})
	for {
		_, b, err := f.c.ReadMessage()
		now := time.Now()
		var fr protocol.ServerFrame
		if err == nil {
			if err = json.Unmarshal(b, &fr); err == nil {
				err = f.v.Server(b)
			}
		}
		f.mu.Lock()
		switch {
		case err != nil:
		case fr.Type == protocol.TypeUpdate && fr.Prev != nil && *fr.Prev == f.last:
			f.last = fr.Version
			f.got = append(f.got, fr.Version)
			f.arrived = append(f.arrived, now)
		case fr.Type == protocol.TypePong:
			f.pongs[fr.ID] = true
		default:
			err = fmt.Errorf("unexpected frame after version %d: %.200s", f.last, b)
		}
		if err != nil && f.end == nil {
			f.end = err
		}
		f.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// waitFollowers waits until every follower has got version v, failing at once when one
// saw a gap, a duplicate, a broken frame or a close.
func waitFollowers(t *testing.T, fs []*follower, v uint64, within time.Duration) {
	t.Helper()
	checkFor(t, within, 10*time.Millisecond, func() error {
		behind := 0
		for i, f := range fs {
			f.mu.Lock()
			end, last := f.end, f.last
			f.mu.Unlock()
			if end != nil {
				t.Fatalf("client %d: %v", i, end)
			}
			if last < v {
				behind++
			}
		}
		if behind > 0 {
			return fmt.Errorf("%d of %d clients have not got version %d", behind, len(fs), v)
		}
		return nil
	})
}

// checkFollowers asserts each follower got exactly the versions written, in order, and
// is still connected (answers a ping).
func checkFollowers(t *testing.T, fs []*follower, written []uint64) {
	t.Helper()
	waitFollowers(t, fs, written[len(written)-1], 20*time.Second)
	for i, f := range fs {
		f.mu.Lock()
		got := slices.Clone(f.got)
		f.mu.Unlock()
		if !slices.Equal(got, written) {
			t.Fatalf("client %d got versions %v, want exactly %v", i, got, written)
		}
		if err := f.c.WriteJSON(protocol.ClientFrame{Type: protocol.TypePing, ID: uint64(i + 1)}); err != nil {
			t.Fatalf("client %d: ping: %v", i, err)
		}
	}
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		for i, f := range fs {
			f.mu.Lock()
			ok, end := f.pongs[uint64(i+1)], f.end
			f.mu.Unlock()
			if end != nil {
				t.Fatalf("client %d: %v", i, end)
			}
			if !ok {
				return fmt.Errorf("client %d has no pong yet", i)
			}
		}
		return nil
	})
}

// deliveryPercentiles is the time from sending each write to a follower getting its
// version, over every follower and version.
func deliveryPercentiles(fs []*follower, sent map[uint64]time.Time) (p50, p99, worst time.Duration) {
	var lat []time.Duration
	for _, f := range fs {
		f.mu.Lock()
		for i, v := range f.got {
			if s, ok := sent[v]; ok {
				lat = append(lat, f.arrived[i].Sub(s))
			}
		}
		f.mu.Unlock()
	}
	if len(lat) == 0 {
		return 0, 0, 0
	}
	slices.Sort(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
}

// readToClose reads raw frames until the connection ends and returns them with the close
// code, or the error when it ended without a close frame.
func readToClose(c *websocket.Conn, deadline time.Time) (msgs [][]byte, code int, err error) {
	_ = c.SetReadDeadline(deadline)
	for {
		_, b, err := c.ReadMessage()
		if err == nil {
			msgs = append(msgs, b)
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return msgs, ce.Code, nil
		}
		return msgs, 0, err
	}
}

// chain checks that msgs are contract-valid frames of a client's subscriptions, each
// update chaining by prev from the last version of its channel in last (a snapshot
// restarts the channel), and advances last.
func chain(t *testing.T, msgs [][]byte, last map[string]uint64) {
	t.Helper()
	for _, b := range msgs {
		if err := frames(t).Server(b); err != nil {
			t.Fatalf("contract: %v", err)
		}
		var f protocol.ServerFrame
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatal(err)
		}
		switch f.Type {
		case protocol.TypeSnapshot:
			last[f.Channel] = f.Version
		case protocol.TypeUpdate:
			if *f.Prev != last[f.Channel] {
				t.Fatalf("%s: update %d has prev %d, want %d", f.Channel, f.Version, *f.Prev, last[f.Channel])
			}
			last[f.Channel] = f.Version
		case protocol.TypeSubscribed:
			if f.Version != last[f.Channel] {
				t.Fatalf("%s: subscribed at %d after version %d", f.Channel, f.Version, last[f.Channel])
			}
		case protocol.TypeUnsubscribed:
		default:
			t.Fatalf("unexpected frame %.200s", b)
		}
	}
}

// resumeExactly resumes channel from since on a fresh connection and asserts it gets
// exactly the written versions after since, chained, then subscribed at the last one.
func resumeExactly(t *testing.T, n *node, channel string, since uint64, written []uint64) {
	t.Helper()
	var want []uint64
	for _, v := range written {
		if v > since {
			want = append(want, v)
		}
	}
	w := mustDial(t, n)
	got := w.subscribe(channel, &since)
	var versions []uint64
	prev := since
	for _, f := range got[:len(got)-1] {
		if f.Type != protocol.TypeUpdate || *f.Prev != prev {
			t.Fatalf("%s: resume from %d: %s %d (prev %v), want an update with prev %d", channel, since, f.Type, f.Version, f.Prev, prev)
		}
		versions = append(versions, f.Version)
		prev = f.Version
	}
	if !slices.Equal(versions, want) || got[len(got)-1].Version != written[len(written)-1] {
		t.Fatalf("%s: resume from %d gave %v then subscribed at %d, want exactly %v then %d",
			channel, since, versions, got[len(got)-1].Version, want, written[len(written)-1])
	}
}

func postAnnouncement(t *testing.T, n *node, tok, body string) uint64 {
	t.Helper()
	return versionOf(t, n, req{method: "POST", path: "/v1/events/" + demoEvent + "/announcements", header: auth(tok),
		body: map[string]any{"title": map[string]string{"es": "Aviso", "en": "Notice"}, "body": map[string]string{"es": body, "en": body}}}, 201)
}

// TestRealtimeSlowConsumer is scenario 12: a client that stops reading while updates
// flow is dropped as a slow consumer once its queue (--ws-queue-bytes 256 KiB) is full and
// its connection released within 5 s, though it still reads nothing; nobody else is
// slowed or dropped; it resumes with since to exactly what it missed (its announcements,
// heavier than half the queue, as one snapshot holding them all).
//
// The scenario's 1k readers are 100 here (one process, -race). Before the server's queue
// can fill, a client that does not read fills the kernel's socket buffers: megabytes on
// loopback, where the server's send buffer grows towards tcp_wmem's maximum. So the slow
// client first stuffs its own pipe with schedule snapshots (65 KB each: it unsubscribes
// and subscribes again without reading the answers), then 8 KB announcements and
// schedule updates, broadcast to it by the hub, overflow its queue.
func TestRealtimeSlowConsumer(t *testing.T) {
	const queueBytes, normals, stuffing = 256 << 10, 100, 40
	n := startNode(t, "", nil, "--demo", "--ws-queue-bytes", strconv.Itoa(queueBytes), "--ws-frame-rate", "1000")
	tok := n.token("organizer")
	sch := getSchedule(t, n)
	s := pickSession(t, sch, "breakout")
	sched, ann := "schedule:"+demoEvent, "announcements:"+demoEvent

	fs := make([]*follower, normals)
	for i := range fs {
		fs[i] = follow(t, n, sched)
	}
	slow := &wsConn{t: t, c: dialSmallWindow(t, n)}
	last := map[string]uint64{}
	for _, ch := range []string{sched, ann} {
		got := slow.subscribe(ch, nil)
		last[ch] = got[len(got)-1].Version
	}
	// From here on the slow client reads nothing until it has been dropped.
	dropped0 := metricValue(t, n, counterSlowClosed)
	heap0 := heapInuse()
	// Each cycle is paced by a scrape, so the writer keeps up while the pipe has room.
	var t0 time.Time
	cycles := 0
	for ; cycles < stuffing && t0.IsZero(); cycles++ {
		id := uint64(100 + cycles)
		for _, f := range []protocol.ClientFrame{{Type: protocol.TypeUnsubscribe, ID: id, Channel: sched},
			{Type: protocol.TypeSubscribe, ID: id, Channel: sched, Lang: "en"}} {
			if b, _ := json.Marshal(f); frames(t).Client(b) != nil {
				t.Fatalf("a test frame breaks the contract: %s", b)
			}
			_ = slow.c.WriteJSON(f) // fails only once the server has dropped it
		}
		if metricValue(t, n, counterSlowClosed) > dropped0 { // possible where socket buffers are small
			t0 = time.Now()
		}
	}
	big := strings.Repeat("🎺", cabildo.MaxAnnouncementBody) // 8 KB of text per announcement
	rooms := []string{"terraza-jardin", "vestibulo"}
	sent := map[uint64]time.Time{}
	var moves, posts []uint64
	move := func() {
		at := time.Now()
		v := moveSession(t, n, tok, s.ID, rooms[len(moves)%2])
		sent[v] = at
		moves = append(moves, v)
	}
	for t0.IsZero() {
		if len(posts) >= 1200 { // 10 MB: far more than any socket buffers
			t.Fatalf("the slow client was not dropped after %d announcements and %d updates", len(posts), len(moves))
		}
		for range 3 {
			posts = append(posts, postAnnouncement(t, n, tok, big))
		}
		move()
		// Scraped between writes, never concurrently with other requests: see metricValue.
		if metricValue(t, n, counterSlowClosed) > dropped0 {
			t0 = time.Now()
		}
	}
	// Released while it still reads nothing: a peer that stopped reading cannot hold a
	// connection, its goroutines and its buffers.
	waitGauge(t, n, normals, 5*time.Second)
	released := time.Since(t0)

	// What it was sent before the drop is intact and in order; then the connection ends.
	msgs, code, err := readToClose(slow.c, time.Now().Add(5*time.Second))
	// 4503, unless the drop cut a write short: no close frame can follow part of a
	// frame, so the connection just ends (1006), or is reset when the client's own frames
	// were still unread. The client resumes the same way after each.
	switch {
	case err == nil && (code == protocol.CloseSlowConsumer || code == websocket.CloseAbnormalClosure):
	case errors.Is(err, syscall.ECONNRESET):
	default:
		t.Fatalf("slow client: close %d, err %v after %d frames; want %d", code, err, len(msgs), protocol.CloseSlowConsumer)
	}
	buffered := 0
	for _, m := range msgs {
		buffered += len(m)
	}
	chain(t, msgs, last)

	for range 3 { // the normal clients keep getting updates after the drop
		move()
	}
	checkFollowers(t, fs, moves)
	if got := metricValue(t, n, counterSlowClosed); got != dropped0+1 {
		t.Fatalf("%s = %v, want %v: only the slow client may be dropped", counterSlowClosed, got, dropped0+1)
	}
	p50, p99, worst := deliveryPercentiles(fs, sent)
	t.Logf("slow client dropped after %d snapshots it asked for, %d announcements and %d updates; released %v later; it then read %d frames (%.1f MB) and close %d (err %v); "+
		"%d other clients got all %d updates: delivery p50 %v p99 %v max %v; heap in use %+.1f MB",
		cycles, len(posts), len(moves)-3, released.Round(time.Millisecond), len(msgs), float64(buffered)/(1<<20), code, err,
		normals, len(moves), p50.Round(time.Microsecond), p99.Round(time.Microsecond), worst.Round(time.Microsecond),
		float64(heapInuse()-heap0)/(1<<20))

	// Resume: exactly the versions it missed, then live.
	resumeExactly(t, n, sched, last[sched], moves)
	resumeAnnouncements(t, n, last[ann], posts)
}

// resumeAnnouncements resumes announcements from since: the announcements posted after
// it as updates chained by prev or, when they weigh more than half the queue bound, one
// snapshot holding every announcement.
func resumeAnnouncements(t *testing.T, n *node, since uint64, posts []uint64) {
	t.Helper()
	w := mustDial(t, n)
	got := w.subscribe("announcements:"+demoEvent, &since)
	if got[0].Type != protocol.TypeSnapshot {
		resumeExactly(t, n, "announcements:"+demoEvent, since, posts)
		return
	}
	var snap struct{ Announcements []struct{ Version uint64 } }
	if err := json.Unmarshal(got[0].Data, &snap); err != nil {
		t.Fatal(err)
	}
	var versions []uint64
	for _, a := range snap.Announcements {
		versions = append(versions, a.Version)
	}
	end := posts[len(posts)-1]
	if len(got) != 2 || got[0].Version != end || !slices.Equal(versions, posts) {
		t.Fatalf("resume from %d: a snapshot at %d of %d announcements, want one at %d of all %d", since, got[0].Version, len(versions), end, len(posts))
	}
}

// dialSmallWindow dials with a 4 KB socket receive buffer, so that a client that does
// not read stops the server sooner.
func dialSmallWindow(t *testing.T, n *node) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{NetDialContext: (&net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}).DialContext}
	c, _, err := d.Dial(wsURL(n), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func heapInuse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

func totalAlloc() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

// TestRealtimeHalfOpenPeer is scenario 13: a peer that completed the upgrade and
// subscribed, then went silent (it never answers a ping), is reaped within the ping
// interval plus the idle timeout, and the connection gauge goes back down; a peer that
// answers pings stays connected however long it sends nothing.
func TestRealtimeHalfOpenPeer(t *testing.T) {
	const ping, idle = 200 * time.Millisecond, 600 * time.Millisecond
	n := startNode(t, "", nil, "--demo", "--ws-ping", ping.String(), "--ws-idle-timeout", idle.String())
	healthy := follow(t, n, "schedule:"+demoEvent) // its reader answers pings, as libraries do

	dead := mustDial(t, n)
	dead.subscribe("schedule:"+demoEvent, nil)
	pings := make(chan struct{}, 100)
	dead.c.SetPingHandler(func(string) error { // swallow pings: a peer that is gone
		select {
		case pings <- struct{}{}:
		default:
		}
		return nil
	})
	silent := time.Now()
	waitGauge(t, n, 2, 5*time.Second)

	msgs, code, err := readToClose(dead.c, silent.Add(10*time.Second))
	reaped := time.Since(silent)
	if err != nil || code != protocol.CloseNormal || len(msgs) != 0 {
		t.Fatalf("silent peer: close %d, err %v, %d frames; want close %d", code, err, len(msgs), protocol.CloseNormal)
	}
	if len(pings) == 0 {
		t.Fatalf("the server sent no ping in %v", reaped)
	}
	if limit := ping + idle + 500*time.Millisecond; reaped > limit {
		t.Fatalf("silent peer reaped after %v, want within ping %v + idle %v (+ slack)", reaped, ping, idle)
	}
	waitGauge(t, n, 1, time.Second)
	nc := dead.c.UnderlyingConn()
	_ = nc.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := nc.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the reaped peer's TCP connection: %v, want it closed by the server", err)
	}

	// The healthy peer has been as silent for as long, but answered pings: still served.
	if d := time.Until(silent.Add(3 * idle)); d > 0 {
		time.Sleep(d) // letting time pass is the point here, not synchronisation
	}
	checkFollowers(t, []*follower{healthy}, []uint64{moveSession(t, n, n.token("organizer"), pickSession(t, getSchedule(t, n), "panel").ID, "terraza-jardin")})
	t.Logf("silent peer reaped %v after its last frame (ping %v, idle timeout %v), after %d unanswered pings", reaped.Round(time.Millisecond), ping, idle, len(pings))
}

// rawFrameHeader is a client text frame header (masked, FIN) announcing size bytes.
func rawFrameHeader(size uint64, mask [4]byte) []byte {
	h := []byte{0x81, 0x80 | 127}
	h = wsbin.BigEndian.AppendUint64(h, size)
	return append(h, mask[:]...)
}

// TestRealtimeHugeFrame is scenario 14: a 10 MB frame, whether sent in one go, announced
// in a header and trickled, or fragmented, is refused with 1009 at once, without the
// server reading it into memory; permessage-deflate is never negotiated; others go on.
func TestRealtimeHugeFrame(t *testing.T) {
	const huge = 10 << 20
	n := startNode(t, "", nil, "--demo")
	bystander := mustDial(t, n)
	bystander.subscribe("schedule:"+demoEvent, nil)
	chunk := make([]byte, 64<<10)
	for i := range chunk {
		chunk[i] = 'a'
	}

	variants := []struct {
		name string
		send func(c *websocket.Conn) error
	}{
		{"one frame", func(c *websocket.Conn) error {
			nc := c.UnderlyingConn()
			if _, err := nc.Write(rawFrameHeader(huge, [4]byte{})); err != nil { // a zero mask: the body is sent as is
				return err
			}
			for sent := 0; sent < huge; sent += len(chunk) {
				if _, err := nc.Write(chunk); err != nil {
					return err
				}
			}
			return nil
		}},
		{"trickled body", func(c *websocket.Conn) error {
			nc := c.UnderlyingConn()
			if _, err := nc.Write(rawFrameHeader(huge, [4]byte{})); err != nil {
				return err
			}
			for range 200 { // a byte every 10 ms, until the server has closed
				time.Sleep(10 * time.Millisecond)
				if _, err := nc.Write(chunk[:1]); err != nil {
					return err
				}
			}
			return nil
		}},
		{"fragmented", func(c *websocket.Conn) error {
			w, err := c.NextWriter(websocket.TextMessage) // the client library sends 4 KB continuation frames
			if err != nil {
				return err
			}
			for sent := 0; sent < huge; sent += len(chunk) {
				if _, err := w.Write(chunk); err != nil {
					return err
				}
			}
			return w.Close()
		}},
	}
	for _, tc := range variants {
		t.Run(tc.name, func(t *testing.T) {
			w := mustDial(t, n)
			heap0, alloc0 := heapInuse(), totalAlloc()
			start := time.Now()
			go func() { _ = tc.send(w.c) }() // fails once the server has closed: expected
			_, code, err := readToClose(w.c, start.Add(5*time.Second))
			took := time.Since(start)
			if err != nil || code != protocol.CloseTooBig {
				t.Fatalf("close %d, err %v, want %d", code, err, protocol.CloseTooBig)
			}
			if took > time.Second {
				t.Fatalf("closed after %v, want at once (≤ 1s)", took)
			}
			w.c.Close()
			allocated, grew := totalAlloc()-alloc0, heapInuse()-heap0
			// Everything this process allocated meanwhile, node and test alike (the heap after
			// a GC would not show a buffer already dropped): reading the frame into memory
			// would be at least 10 MB.
			if allocated > 2<<20 || grew > 2<<20 {
				t.Fatalf("%.1f MB allocated and heap grew by %.1f MB while refusing a 10 MB frame, want < 2 MB", float64(allocated)/(1<<20), float64(grew)/(1<<20))
			}
			t.Logf("1009 after %v; %.0f KB allocated in the process meanwhile, heap %+.0f KB", took.Round(time.Microsecond), float64(allocated)/1024, float64(grew)/1024)
		})
	}

	t.Run("permessage-deflate", func(t *testing.T) {
		d := websocket.Dialer{EnableCompression: true} // offers permessage-deflate
		c, resp, err := d.Dial(wsURL(n), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if ext := resp.Header.Get("Sec-WebSocket-Extensions"); ext != "" {
			t.Fatalf("the server negotiated %q, want no extension", ext)
		}
		w := &wsConn{t: t, c: c}
		w.send(protocol.ClientFrame{Type: protocol.TypePing, ID: 5})
		if f := w.next(); f.Type != protocol.TypePong || f.ID != 5 {
			t.Fatalf("got %+v, want pong 5", f)
		}
	})

	// The subscriber from before all this still gets updates.
	v := moveSession(t, n, n.token("organizer"), pickSession(t, getSchedule(t, n), "panel").ID, "terraza-jardin")
	if f := bystander.next(); f.Type != protocol.TypeUpdate || f.Version != v {
		t.Fatalf("bystander got %+v, want update %d", f, v)
	}
	waitGauge(t, n, 1, 5*time.Second)
}

// TestRealtimeFlooder is scenario 17: a socket sending 1,000 frames/s is answered with
// rate_limited, then closed with 4429 within 2 s, again each time it reconnects, while
// 50 other subscribers get every update and stay connected.
func TestRealtimeFlooder(t *testing.T) {
	const rate, others, updates = 20, 50, 30 // rate is the default --ws-frame-rate: burst 40
	n := startNode(t, "", nil, "--demo", "--ws-frame-rate", strconv.Itoa(rate))
	tok := n.token("organizer")
	s := pickSession(t, getSchedule(t, n), "breakout")
	fs := make([]*follower, others)
	for i := range fs {
		fs[i] = follow(t, n, "schedule:"+demoEvent)
	}

	v := frames(t)
	type flood struct {
		sent, pongs, limited int
		code                 int
		err                  error
		took                 time.Duration
	}
	// floodOnce sends pings at 1,000/s (one a millisecond, catching up when late) until
	// the server closes the socket or 10 s pass.
	floodOnce := func() flood {
		c, _, err := websocket.DefaultDialer.Dial(wsURL(n), nil)
		if err != nil {
			return flood{err: err}
		}
		defer c.Close()
		var r flood
		closed := make(chan struct{})
		start := time.Now()
		go func() {
			defer close(closed)
			msgs, code, err := readToClose(c, start.Add(10*time.Second))
			r.took, r.code, r.err = time.Since(start), code, err
			for _, b := range msgs {
				var f protocol.ServerFrame
				if err := v.Server(b); err != nil {
					r.err = err
				}
				_ = json.Unmarshal(b, &f)
				switch {
				case f.Type == protocol.TypePong:
					r.pongs++
				case f.Type == protocol.TypeError && f.Code == protocol.ErrRateLimited:
					r.limited++
				default:
					r.err = fmt.Errorf("unexpected frame %.200s", b)
				}
			}
		}()
		next := start
		for sent := 1; ; sent++ {
			select {
			case <-closed:
				r.sent = sent - 1
				return r
			default:
			}
			if err := c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"ping","id":%d}`, sent)); err != nil {
				<-closed
				r.sent = sent - 1
				return r
			}
			next = next.Add(time.Millisecond)
			if d := time.Until(next); d > 0 {
				time.Sleep(d)
			}
		}
	}

	// Flood from one device (reconnecting after each 4429) while the updates are written.
	updatesDone := make(chan struct{})
	floodsDone := make(chan []flood, 1)
	go func() {
		var out []flood
		deadline := time.Now().Add(10 * time.Second)
		for {
			out = append(out, floodOnce())
			select {
			case <-updatesDone:
				floodsDone <- out
				return
			default:
			}
			if time.Now().After(deadline) {
				floodsDone <- out
				return
			}
		}
	}()
	sent := map[uint64]time.Time{}
	var moves []uint64
	rooms := []string{"terraza-jardin", "vestibulo"}
	for i := range updates {
		at := time.Now()
		v := moveSession(t, n, tok, s.ID, rooms[i%2])
		sent[v] = at
		moves = append(moves, v)
	}
	close(updatesDone)
	floods := <-floodsDone

	checkFollowers(t, fs, moves)
	for i, f := range floods {
		if f.err != nil || f.code != protocol.CloseRateLimited {
			t.Fatalf("flood %d: close %d, err %v; want %d", i, f.code, f.err, protocol.CloseRateLimited)
		}
		if f.took > 2*time.Second {
			t.Fatalf("flood %d closed after %v, want within 2s", i, f.took)
		}
		if f.limited == 0 {
			t.Fatalf("flood %d: no rate_limited error before the close", i)
		}
		// The configured limit: a burst of 2×rate, then rate per second.
		if max := 2*rate + int(rate*f.took.Seconds()) + 1; f.pongs > max {
			t.Fatalf("flood %d: %d frames answered in %v, want at most %d at %d/s", i, f.pongs, f.took, max, rate)
		}
	}
	p50, p99, worst := deliveryPercentiles(fs, sent)
	f0 := floods[0]
	t.Logf("%d flooding connections, each warned then closed with 4429 (first: %d frames sent in %v, %d answered, %d rate_limited); "+
		"%d other clients got all %d updates: delivery p50 %v p99 %v max %v",
		len(floods), f0.sent, f0.took.Round(time.Millisecond), f0.pongs, f0.limited, others, len(moves),
		p50.Round(time.Microsecond), p99.Round(time.Microsecond), worst.Round(time.Microsecond))
}

// TestRealtimeGracefulShutdown is scenario 3's shutdown, with many clients: stopping a
// node takes it out of readiness before its websocket clients are told to go, every
// client gets 4012 within 1 s, an upgrade after that is refused, run returns within 10 s,
// and no goroutine outlives it. Not parallel: it counts the process's goroutines.
func TestRealtimeGracefulShutdown(t *testing.T) {
	const clients = 20
	http.DefaultClient.CloseIdleConnections()
	baseline := runtime.NumGoroutine()
	n := startNode(t, "", nil, "--demo")

	type closed struct {
		code int
		err  error
		at   time.Time
	}
	ends := make(chan closed, clients)
	conns := make([]*websocket.Conn, clients)
	for i := range conns {
		w := mustDial(t, n)
		w.subscribe("schedule:"+demoEvent, nil)
		conns[i] = w.c
		go func() {
			_, code, err := readToClose(w.c, time.Now().Add(time.Minute))
			ends <- closed{code, err, time.Now()}
		}()
	}

	// Readiness is polled on a connection of its own until the node stops answering.
	type probe struct {
		sent   time.Time
		status int // 0: no answer
	}
	var probes []probe
	polled := make(chan struct{})
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{}}
	ready := func() int {
		resp, err := hc.Get(n.base + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := ready(); s != http.StatusOK {
		t.Fatalf("readyz %d before the shutdown", s)
	}
	go func() {
		defer close(polled)
		for {
			p := probe{sent: time.Now()}
			p.status = ready()
			probes = append(probes, p)
			if p.status == 0 {
				return
			}
		}
	}()

	stopAt := time.Now()
	returned := make(chan time.Duration, 1)
	go func() {
		n.stop()
		returned <- time.Since(stopAt)
	}()

	first := time.Time{}
	for i := range clients {
		select {
		case e := <-ends:
			if e.err != nil || e.code != protocol.CloseReconnect {
				t.Fatalf("client %d: close %d, err %v; want %d", i, e.code, e.err, protocol.CloseReconnect)
			}
			if d := e.at.Sub(stopAt); d > time.Second {
				t.Fatalf("a client got 4012 %v after the stop, want within 1s", d)
			}
			if first.IsZero() {
				first = e.at
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%d of %d clients got no close within 5s of the stop", clients-i, clients)
		}
	}
	last := time.Since(stopAt)

	// Shutdown has begun: a new client is refused, before or right after the upgrade.
	if c, _, err := websocket.DefaultDialer.Dial(wsURL(n), nil); err == nil {
		_, code, err := readToClose(c, time.Now().Add(5*time.Second))
		c.Close()
		if err != nil || code != protocol.CloseReconnect {
			t.Fatalf("an upgrade during shutdown was served: close %d, err %v", code, err)
		}
	}

	var took time.Duration
	select {
	case took = <-returned:
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return within 15s of the stop")
	}
	if took > 10*time.Second {
		t.Fatalf("run returned %v after the stop, want within 10s", took)
	}
	<-polled
	// Whoever asked after a client had been told to go was not told the node is ready.
	unready := 0
	for _, p := range probes {
		if p.status == http.StatusOK && p.sent.After(first) {
			t.Fatalf("readyz answered 200 to a request sent %v after the first 4012", p.sent.Sub(first))
		}
		if p.status == http.StatusServiceUnavailable {
			unready++
		}
	}

	for _, c := range conns {
		c.Close()
	}
	hc.CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if g := runtime.NumGoroutine(); g > baseline+5 {
			return fmt.Errorf("%d goroutines, %d before the node started", g, baseline)
		}
		return nil
	})
	t.Logf("%d clients got 4012 within %v of the stop; readyz answered 503 %d times before the node went away; run returned after %v; goroutines back to %d (baseline %d)",
		clients, last.Round(time.Millisecond), unready, took.Round(time.Millisecond), runtime.NumGoroutine(), baseline)
}

// TestRealtimeSnapshotOverQueueBound: a snapshot heavier than --ws-queue-bytes (the
// demo's schedule is 65 KB) still reaches a subscriber that reads: a subscription's
// first frames fit an empty queue as one unit. Before, every subscriber of a big event
// was closed as a slow consumer.
func TestRealtimeSnapshotOverQueueBound(t *testing.T) {
	n := startNode(t, "", nil, "--demo", "--ws-queue-bytes", "32768")
	for range 5 {
		got := mustDial(t, n).subscribe("schedule:"+demoEvent, nil)
		if len(got) != 2 || got[0].Type != protocol.TypeSnapshot || len(got[0].Data) <= 32768 {
			t.Fatalf("subscribe: %d frames, first %s of %d bytes; want a snapshot over 32 KB, then subscribed", len(got), got[0].Type, len(got[0].Data))
		}
	}
}

// TestRealtimeCloseKeepsEarlierReplies: a frame that closes the connection does not
// take the answers to the frames before it along: a ping sent in the same write as a
// binary or a non-UTF-8 frame still gets its pong, then the close. (Not yet for an
// oversized frame: wsabuse_bugs_test.go.)
func TestRealtimeCloseKeepsEarlierReplies(t *testing.T) {
	closeKeepsEarlierReplies(t, false)
}

// maskedFrame is a client frame masked with a zero key: the payload goes as is.
func maskedFrame(op byte, payload []byte) []byte {
	return append([]byte{0x80 | op, 0x80 | 126, byte(len(payload) >> 8), byte(len(payload)), 0, 0, 0, 0}, payload...)
}

func closeKeepsEarlierReplies(t *testing.T, tooBig bool) {
	n := startNode(t, "", nil, "--demo")
	ping := maskedFrame(websocket.TextMessage, []byte(`{"type":"ping","id":1}`))
	type closer struct {
		name  string
		after []byte
		code  int
	}
	cases := []closer{
		{"binary", maskedFrame(websocket.BinaryMessage, []byte{1, 2}), protocol.ClosePolicy},
		{"invalid utf-8", maskedFrame(websocket.TextMessage, []byte{'"', 0xff, '"'}), protocol.CloseInvalidData},
	}
	if tooBig {
		cases = []closer{{"too big", rawFrameHeader(protocol.MaxFrameBytes+1, [4]byte{}), protocol.CloseTooBig}}
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := mustDial(t, n)
			if _, err := w.c.UnderlyingConn().Write(append(slices.Clone(ping), tc.after...)); err != nil {
				t.Fatal(err)
			}
			msgs, code, err := readToClose(w.c, time.Now().Add(5*time.Second))
			if err != nil || code != tc.code || len(msgs) != 1 || string(msgs[0]) != `{"type":"pong","id":1}` {
				t.Fatalf("%q then close %d (%v), want the pong then %d", msgs, code, err, tc.code)
			}
		})
	}
}

// TestMetricsLabelsAreCopies: the request counter's labels are not fasthttp's request
// buffer, which the next request on the connection overwrites (a POST was counted as
// "GETT", and scrapes raced with request parsing).
func TestMetricsLabelsAreCopies(t *testing.T) {
	n := startNode(t, "", nil, "--demo")
	tok := n.token("organizer")
	c := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}} // one keep-alive connection
	defer c.CloseIdleConnections()
	send := func(method, path, body string) string {
		t.Helper()
		r, err := http.NewRequest(method, n.base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r.Header.Set("Authorization", "Bearer "+tok)
		r.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	send("POST", "/v1/events/"+demoEvent+"/announcements", `{"title":{"es":"x"}}`)
	send("GET", "/v1/events", "")
	want := `cabildo_http_requests_total{method="POST",route="/v1/events/:event/announcements",status="201"} 1`
	if metrics := send("GET", "/metrics", ""); !strings.Contains(metrics, want) {
		t.Fatalf("metrics lack %s:\n%s", want, regexp.MustCompile(`(?m)^cabildo_http_requests_total.*$`).FindAllString(metrics, -1))
	}
}
