package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/cabildo/cabildo/pkg/protocol"
)

// TestOpenLoopKeepsTheClock: a write that takes longer than the interval does not move
// the next changes' due times; they are made late, at once, and their latency counts
// from when they were due, not from when a late writer sent them.
func TestOpenLoopKeepsTheClock(t *testing.T) {
	const every = 20 * time.Millisecond
	start := time.Now().Add(5 * time.Millisecond)
	var (
		dues  []time.Time
		sent  []time.Time
		calls []int
	)
	late := openLoop(context.Background(), start, every, 10*every, func(i int, due time.Time) {
		calls = append(calls, i)
		dues = append(dues, due)
		sent = append(sent, time.Now())
		if i == 1 {
			time.Sleep(4 * every) // the writer falls behind by three intervals
		}
	})
	if len(calls) != 10 {
		t.Fatalf("%d changes in ten intervals, want 10 (calls %v)", len(calls), calls)
	}
	for i, d := range dues {
		if calls[i] != i || !d.Equal(start.Add(time.Duration(i)*every)) {
			t.Fatalf("change %d (call %d) due at +%v, want +%v", i, calls[i], d.Sub(start), time.Duration(i)*every)
		}
		if sent[i].Before(d) {
			t.Fatalf("change %d made %v before it was due", i, d.Sub(sent[i]))
		}
	}
	// Change 2 was due at +40 ms and could only be made after change 1 returned (+100 ms).
	if got := sent[2].Sub(dues[2]); got < 2*every {
		t.Fatalf("change 2 made %v after its due time; the slow write should have delayed it by about 60 ms", got)
	}
	if late < 2*every {
		t.Fatalf("late %v, want the delay of change 2 or more", late)
	}
	// Deliveries read 1 ms after each change was made: latency counts the writer's delay.
	due := map[uint64]time.Duration{}
	var got []wsRecv
	for i := range dues {
		due[uint64(i+1)] = dues[i].Sub(start)
		got = append(got, wsRecv{uint64(i + 1), sent[i].Sub(start) + time.Millisecond})
	}
	got = append(got, wsRecv{99, time.Second}) // a version nobody wrote is not a delivery
	lat := deliveryLatencies(nil, got, due)
	if len(lat) != 10 || lat[2] < 2*every+time.Millisecond {
		t.Fatalf("latencies %v: change 2's should include the writer's delay", lat)
	}
}

func TestOpenLoopStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	openLoop(ctx, time.Now(), time.Millisecond, time.Hour, func(int, time.Time) {
		if n++; n == 3 {
			cancel()
		}
	})
	if n != 3 {
		t.Fatalf("%d changes after the context ended at the third", n)
	}
}

// checkLean compares parseLean with encoding/json on one frame.
func checkLean(t *testing.T, b []byte) {
	t.Helper()
	var full protocol.ServerFrame
	if err := json.Unmarshal(b, &full); err != nil {
		t.Fatalf("frame %.100q: %v", b, err)
	}
	var f leanFrame
	// Only a type or channel with escapes in its JSON is left to the full decode.
	escaped := func(v string) bool { j, _ := json.Marshal(v); return bytes.IndexByte(j, '\\') >= 0 }
	if !parseLean(b, &f) && !escaped(full.Type) && !escaped(full.Channel) {
		t.Fatalf("lean parser refused %.200q", b)
	}
	if err := scanFrame(b, &f); err != nil {
		t.Fatal(err)
	}
	if string(f.typ) != full.Type || string(f.channel) != full.Channel || f.id != full.ID || f.version != full.Version ||
		f.hasPrev != (full.Prev != nil) || (full.Prev != nil && f.prev != *full.Prev) || f.part != full.Part || f.parts != full.Parts {
		t.Fatalf("lean %+v (type %q channel %q) differs from the full decode %+v of %.200q", f, f.typ, f.channel, full, b)
	}
}

// TestParseLeanOnRealFrames: every frame a node sends while a client subscribes (a whole
// snapshot, a snapshot in parts, subscribed), follows changes (updates), pings and makes
// mistakes (pong, errors) reads the same with the lean parser as with a full decode.
func TestParseLeanOnRealFrames(t *testing.T) {
	n := startNode(t, "", nil, "--demo")
	w := mustDial(t, n)
	var kinds = map[string]int{}
	read := func() protocol.ServerFrame {
		t.Helper()
		_ = w.c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := w.c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		checkLean(t, b)
		var f protocol.ServerFrame
		_ = json.Unmarshal(b, &f)
		k := f.Type
		if f.Parts > 0 {
			k += " in parts"
		}
		kinds[k]++
		return f
	}
	sendRaw := func(s string) {
		t.Helper()
		if err := w.c.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	for _, sub := range []string{
		`{"type":"subscribe","id":1,"channel":"schedule:` + demoEvent + `","lang":"es"}`, // 66 KiB: in parts
		`{"type":"subscribe","id":2,"channel":"announcements:` + demoEvent + `","lang":"en"}`,
	} {
		sendRaw(sub)
		for read().Type != protocol.TypeSubscribed {
		}
	}
	sendRaw(`{"type":"ping","id":3}`)
	read()
	sendRaw(`{"type":"subscribe","id":4,"channel":"nonsense:\"x\u00e9"}`)
	read()
	sendRaw(`{"type":"bogus"}`)
	read()
	lg := &restLoad{client: &http.Client{Timeout: 10 * time.Second}, base: n.base, event: demoEvent, token: n.token("organizer")}
	sessions, _, err := lg.prepare(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := lg.nudgeVersion(context.Background(), sessions[0], i); err != nil {
			t.Fatal(err)
		}
		for read().Type != protocol.TypeUpdate {
		}
	}
	for _, k := range []string{"snapshot", "snapshot in parts", "subscribed", "update", "pong", "error"} {
		if kinds[k] == 0 {
			t.Errorf("no %s frame seen (%v): the comparison does not cover it", k, kinds)
		}
	}
}

// TestParseLeanEdges: what is inside data (keys named like the frame's, brackets and
// quotes in strings) never reaches the frame's fields, and whatever the lean parser would
// read differently from encoding/json is refused, not misread.
func TestParseLeanEdges(t *testing.T) {
	for _, b := range []string{
		`{"type":"update","channel":"schedule:e","version":12,"prev":9,"data":{"version":99,"prev":1,"s":"}\"{[","a":[{"version":3}]}}`,
		`{"data":{"type":"snapshot","version":5},"type":"update","prev":0,"version":7,"channel":"c"}`,
		` { "type" : "snapshot" , "channel" : "c" , "version" : 4812 , "part" : 2 , "parts" : 3 , "chunk" : "{\"a\\\":" } `,
		`{"type":"error","code":"bad_frame","message":"a \"quoted\" word, and } too"}`,
		`{"type":"subscribed","id":18446744073709551615,"channel":"c","version":1}`,
		`{"type":"update","channel":"c","version":2,"prev":1,"data":null}`,
	} {
		checkLean(t, []byte(b))
	}
	for _, b := range []string{
		``, `[]`, `{"type":"update"`, `{"type":"upd\u0061te","version":1}`, `{"type":"update","channel":"a\"b"}`,
		`{"type":"update","version":-1}`, `{"type":"update","version":1.5}`, `{"type":"update","version":1e3}`,
		`{"type":"update","version":18446744073709551616}`, `{"type":"update","version":01}`, `{"type":"update","prev":null}`,
		`{"type":"update","version":1,"version":2}`, `{"type":"update"} x`, `{"version":1}`, `{"type":"update","data":"unterminated}`,
	} {
		var f leanFrame
		if parseLean([]byte(b), &f) {
			t.Errorf("lean parser read %q as %+v; it must refuse it", b, f)
		}
	}
}

func TestLeanPartsSequence(t *testing.T) {
	var p leanParts
	add := func(version uint64, part, parts int) (uint64, bool, error) {
		return p.add(&leanFrame{typ: []byte("snapshot"), version: version, part: part, parts: parts})
	}
	if v, whole, err := add(5, 0, 0); err != nil || !whole || v != 5 {
		t.Fatalf("whole snapshot: %d %v %v", v, whole, err)
	}
	for part := 1; part <= 3; part++ {
		v, whole, err := add(9, part, 3)
		if err != nil || whole != (part == 3) || (whole && v != 9) {
			t.Fatalf("part %d: %d %v %v", part, v, whole, err)
		}
	}
	for _, bad := range [][3]int{{9, 2, 3}, {9, 1, 1}} {
		if _, _, err := add(uint64(bad[0]), bad[1], bad[2]); err == nil {
			t.Fatalf("part %v accepted", bad)
		}
		p = leanParts{}
	}
	_, _, _ = add(9, 1, 3)
	if _, _, err := add(10, 2, 3); err == nil {
		t.Fatal("a part of another version accepted")
	}
	p = leanParts{}
	_, _, _ = add(9, 1, 3)
	if _, _, err := add(10, 0, 0); err == nil {
		t.Fatal("a whole snapshot between two parts accepted")
	}
}

// TestLeanReadsAllocateNothing: the lean clients' per-frame work allocates nothing, so
// their CPU per frame stays near the peer client's.
func TestLeanReadsAllocateNothing(t *testing.T) {
	upd := []byte(`{"type":"update","channel":"schedule:ogp-sanjose-2027","version":1234,"prev":1200,"data":{"sessions":[{"id":12,"title":"Datos abiertos","start":"2027-05-02T10:00:00-06:00"}],"removed":[]}}`)
	push := []byte(`{"push":{"channel":"schedule","pub":{"data":{"seq":77,"pad":"` + strings.Repeat("x", 360) + `"}}}}`)
	var f leanFrame
	if a := testing.AllocsPerRun(100, func() { parseLean(upd, &f) }); a != 0 {
		t.Errorf("parseLean: %v allocations per frame", a)
	}
	if a := testing.AllocsPerRun(100, func() { peerPushSeq(push, "schedule") }); a != 0 {
		t.Errorf("peerPushSeq: %v allocations per frame", a)
	}
}

// TestLoadgenWSAgainstNode runs both client modes against a real node, in the language
// whose snapshot comes in parts: everything delivered, chained, and the tool's own cost
// reported.
func TestLoadgenWSAgainstNode(t *testing.T) {
	n := startNode(t, "", nil, "--demo")
	tok := n.token("organizer")
	for _, mode := range []string{"lean", "sdk"} {
		var out, errb bytes.Buffer
		err := loadgenWS(context.Background(), []string{"--url", n.base, "--token", tok, "--clients", "6", "--rate", "10",
			"--duration", "600ms", "--client", mode, "--lang", "es"}, &out, &errb)
		if err != nil {
			t.Fatal(mode, err, errb.String())
		}
		var res wsResult
		if err := json.Unmarshal(out.Bytes(), &res); err != nil {
			t.Fatal(err, out.String())
		}
		if res.Client != mode || res.Connected != 6 || res.Changes != 6 || res.Delivered != res.Expected || res.Lost != 0 ||
			res.Gaps != 0 || res.Duplicates != 0 || res.Dropped != 0 || res.LoadgenCPUPerFrameUs <= 0 || res.P99ms <= 0 {
			t.Fatalf("%s: result %+v, stderr %s", mode, res, errb.String())
		}
		if mode == "lean" && (res.FrameBytes < 100 || res.FrameBytes > 2000) {
			t.Fatalf("lean: mean update frame of %.0f bytes", res.FrameBytes)
		}
	}
}

// TestLeanClientCountsGaps: a lean client checks prev chaining on its own; a server that
// skips an update or repeats one is caught.
func TestLeanClientCountsGaps(t *testing.T) {
	srv := startFrames(t, func(c *websocket.Conn) {
		for _, s := range []string{
			`{"type":"snapshot","channel":"schedule:e","version":10,"part":1,"parts":2,"chunk":"{\"a\":"}`,
			`{"type":"snapshot","channel":"schedule:e","version":10,"part":2,"parts":2,"chunk":"1}"}`,
			`{"type":"subscribed","id":1,"channel":"schedule:e","version":10}`,
			`{"type":"update","channel":"schedule:e","version":12,"prev":10,"data":{}}`,
			`{"type":"update","channel":"other:e","version":13,"prev":12,"data":{}}`,
			`{"type":"update","channel":"schedule:e","version":15,"prev":13,"data":{}}`, // 13 never came: a gap
			`{"type":"update","channel":"schedule:e","version":15,"prev":12,"data":{}}`, // again: a duplicate
			`{"type":"update","channel":"schedule:e","version":16,"prev":15,"data":{}}`,
		} {
			_ = c.WriteMessage(websocket.TextMessage, []byte(s))
		}
	})
	f := &leanFleet{url: srv, channel: "schedule:e", lang: "en", origin: time.Now(), capacity: 4}
	if !f.dial(context.Background(), 0) {
		t.Fatal("dial")
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.behind(16) > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	var res wsResult
	lat, frames := f.collect(&res, map[uint64]time.Duration{12: 0, 15: 0, 16: 0})
	if len(lat) != 3 || frames != 5 || res.Gaps != 1 || res.Duplicates != 1 || res.Dropped != 0 {
		t.Fatalf("latencies %v, frames %d, result %+v", lat, frames, res)
	}
}

// startFrames serves a websocket that reads the client's subscribe, runs script, then
// reads until the client leaves; it returns the ws:// URL.
func startFrames(t *testing.T, script func(*websocket.Conn)) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		if _, _, err := c.ReadMessage(); err != nil {
			return
		}
		script(c)
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http")
}
