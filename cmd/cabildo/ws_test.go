package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/cabildo/cabildo/internal/contract"
	"github.com/cabildo/cabildo/pkg/protocol"
)

// wsConn is a raw test client of GET /v1/ws, configured from the contract: a frame over
// the bound asyncapi.yaml states for server frames ends it (1009).
type wsConn struct {
	t *testing.T
	c *websocket.Conn
	// parts are the sizes of the frames of the last snapshot subscribe joined (one for a
	// whole snapshot).
	parts []int
}

func dialWS(t *testing.T, n *node, header http.Header) (*wsConn, *http.Response, error) {
	t.Helper()
	url := "ws" + strings.TrimPrefix(n.base, "http") + "/v1/ws"
	c, resp, err := websocket.DefaultDialer.Dial(url, header)
	if err != nil {
		return nil, resp, err
	}
	t.Cleanup(func() { c.Close() })
	c.SetReadLimit(int64(maxServerFrame(t)))
	return &wsConn{t: t, c: c}, resp, nil
}

// maxServerFrame is the most a server frame may weigh, as asyncapi.yaml states it.
func maxServerFrame(t testing.TB) int {
	t.Helper()
	limits, _ := frames(t).Document()["channels"].(map[string]any)["ws"].(map[string]any)["x-limits"].(map[string]any)
	n, err := limits["maxServerFrameBytes"].(json.Number).Int64()
	if err != nil || n <= 0 {
		t.Fatalf("asyncapi.yaml states no maxServerFrameBytes: %v", limits)
	}
	return int(n)
}

func mustDial(t *testing.T, n *node) *wsConn {
	t.Helper()
	w, _, err := dialWS(t, n, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return w
}

var (
	framesOnce sync.Once
	framesV    *contract.FrameValidator
	framesErr  error
)

// frames is the AsyncAPI contract; every frame the tests send or see is checked against it.
func frames(t testing.TB) *contract.FrameValidator {
	t.Helper()
	framesOnce.Do(func() { framesV, framesErr = contract.LoadFrames() })
	if framesErr != nil {
		t.Fatalf("load asyncapi: %v", framesErr)
	}
	return framesV
}

func (w *wsConn) send(f protocol.ClientFrame) {
	w.t.Helper()
	b, _ := json.Marshal(f)
	if err := frames(w.t).Client(b); err != nil {
		w.t.Errorf("a test frame breaks the contract: %v", err)
	}
	if err := w.c.WriteJSON(f); err != nil {
		w.t.Fatalf("send: %v", err)
	}
}

func (w *wsConn) next() protocol.ServerFrame {
	w.t.Helper()
	f, _ := w.nextSized()
	return f
}

// nextSized is next and the frame's size.
func (w *wsConn) nextSized() (protocol.ServerFrame, int) {
	w.t.Helper()
	_ = w.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := w.c.ReadMessage()
	if err != nil {
		w.t.Fatalf("read: %v", err)
	}
	var f protocol.ServerFrame
	if err := json.Unmarshal(b, &f); err != nil {
		w.t.Fatalf("frame %q: %v", b, err)
	}
	if err := frames(w.t).Server(b); err != nil {
		w.t.Errorf("contract: %v\nframe: %.300s", err, b)
	}
	return f, len(b)
}

// closeCode reads until the server closes and returns its close code.
func (w *wsConn) closeCode() int {
	w.t.Helper()
	_ = w.c.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		_, _, err := w.c.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		w.t.Fatalf("connection ended without a close frame: %v", err)
	}
}

// subscribe sends a subscribe in English and returns the frames up to and including
// subscribed, a snapshot in parts joined into one (checked against the contract too).
func (w *wsConn) subscribe(channel string, since *uint64) []protocol.ServerFrame {
	w.t.Helper()
	return w.subscribeIn(channel, since, "en")
}

func (w *wsConn) subscribeIn(channel string, since *uint64, lang string) []protocol.ServerFrame {
	w.t.Helper()
	w.send(protocol.ClientFrame{Type: protocol.TypeSubscribe, ID: 7, Channel: channel, Since: since, Lang: lang})
	var (
		out   []protocol.ServerFrame
		parts protocol.Parts
	)
	w.parts = nil
	for {
		f, size := w.nextSized()
		if f.Type == protocol.TypeSnapshot {
			w.parts = append(w.parts, size)
		}
		f, whole, err := parts.Add(f)
		if err != nil {
			w.t.Fatalf("subscribe %s: %v", channel, err)
		}
		if parts.Pending() {
			continue // a part, not the last
		}
		if whole {
			if err := frames(w.t).Snapshot(f); err != nil {
				w.t.Errorf("joined snapshot: %v", err)
			}
		}
		out = append(out, f)
		if f.Type == protocol.TypeError {
			w.t.Fatalf("subscribe %s: %s %s", channel, f.Code, f.Message)
		}
		if f.Type == protocol.TypeSubscribed {
			if f.ID != 7 {
				w.t.Fatalf("subscribed frame id %d, want 7", f.ID)
			}
			return out
		}
	}
}

func moveSession(t *testing.T, n *node, tok string, id int64, room string) uint64 {
	t.Helper()
	return versionOf(t, n, req{method: "PATCH", path: fmt.Sprintf("/v1/events/%s/sessions/%d?force=true", demoEvent, id),
		header: auth(tok), body: map[string]any{"room": room}}, 200)
}

// versionOf makes a write and returns the version its answer reports.
func versionOf(t *testing.T, n *node, r req, status int) uint64 {
	t.Helper()
	resp := n.do(t, r)
	if resp.Status != status {
		t.Fatalf("%s %s: %d %s", r.method, r.path, resp.Status, resp.Body)
	}
	var v struct{ Version uint64 }
	resp.json(t, &v)
	return v.Version
}

// TestRealtimeScheduleAndResume: a subscriber gets the snapshot, then each change live with
// prev chaining; a client that reconnects with since gets exactly what it missed, also
// across a server restart; a since from the future gets a fresh snapshot.
func TestRealtimeScheduleAndResume(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir, nil, "--demo")
	tok := n.token("organizer")
	sch := getSchedule(t, n)
	s := pickSession(t, sch, "breakout")
	channel := "schedule:" + demoEvent

	w := mustDial(t, n)
	frames := w.subscribe(channel, nil)
	if len(frames) != 2 || frames[0].Type != protocol.TypeSnapshot || frames[0].Version != sch.Version || frames[1].Version != sch.Version {
		t.Fatalf("subscribe answered %+v, want a snapshot at %d then subscribed", frames, sch.Version)
	}
	var snap scheduleBody
	if err := json.Unmarshal(frames[0].Data, &snap); err != nil || len(snap.Sessions) != len(sch.Sessions) || snap.Lang != "en" {
		t.Fatalf("snapshot data: %v (%d sessions, lang %q)", err, len(snap.Sessions), snap.Lang)
	}

	last := sch.Version
	rooms := []string{"terraza-jardin", "vestibulo", s.Room}
	for _, room := range rooms {
		v := moveSession(t, n, tok, s.ID, room)
		f := w.next()
		if f.Type != protocol.TypeUpdate || f.Version != v || f.Prev == nil || *f.Prev != last {
			t.Fatalf("after a move to %s: %+v, want update %d with prev %d", room, f, v, last)
		}
		var up struct {
			Changes []struct {
				Type string
				Room struct{ To string }
			}
		}
		if err := json.Unmarshal(f.Data, &up); err != nil || len(up.Changes) != 1 || up.Changes[0].Type != "session_moved" || up.Changes[0].Room.To != room {
			t.Fatalf("update data %s", f.Data)
		}
		last = v
	}

	// Resume from before the moves: exactly the three updates, in order, then live.
	since := sch.Version
	w2 := mustDial(t, n)
	got := w2.subscribe(channel, &since)
	if len(got) != 4 {
		t.Fatalf("resume from %d gave %d frames, want 3 updates and subscribed", since, len(got))
	}
	prev := since
	for _, f := range got[:3] {
		if f.Type != protocol.TypeUpdate || *f.Prev != prev {
			t.Fatalf("resumed frame %+v, want an update with prev %d", f, prev)
		}
		prev = f.Version
	}
	if prev != last || got[3].Version != last {
		t.Fatalf("resume ended at %d (subscribed %d), want %d", prev, got[3].Version, last)
	}

	// Up to date: nothing missed, just subscribed.
	w3 := mustDial(t, n)
	if got := w3.subscribe(channel, &last); len(got) != 1 {
		t.Fatalf("resume from the current version gave %d frames, want only subscribed", len(got))
	}
	// A version from the future: one snapshot, never an error.
	future := last + 1000
	w4 := mustDial(t, n)
	if got := w4.subscribe(channel, &future); len(got) != 2 || got[0].Type != protocol.TypeSnapshot {
		t.Fatalf("resume from the future gave %+v, want a snapshot", got)
	}

	// Shutdown: every client is told to reconnect.
	n.stop()
	if code := w.closeCode(); code != protocol.CloseReconnect {
		t.Fatalf("close code on shutdown %d, want %d", code, protocol.CloseReconnect)
	}
	n2 := startNode(t, dir, nil)
	moved := moveSession(t, n2, tok, s.ID, "terraza-jardin")
	w5 := mustDial(t, n2)
	got = w5.subscribe(channel, &last)
	if len(got) != 2 || got[0].Type != protocol.TypeUpdate || *got[0].Prev != last || got[0].Version != moved {
		t.Fatalf("resume across a restart: %+v, want the one update %d after %d", got, moved, last)
	}
}

func TestRealtimeBadInput(t *testing.T) {
	n := startNode(t, "", nil, "--demo", "--allowed-origins", "https://app.example.org")
	t.Run("foreign origin", func(t *testing.T) {
		_, resp, err := dialWS(t, n, http.Header{"Origin": {"https://evil.example"}})
		if err == nil || resp == nil || resp.StatusCode != 403 {
			t.Fatalf("evil origin: err %v, status %v", err, resp)
		}
	})
	t.Run("allowed origin", func(t *testing.T) {
		if _, _, err := dialWS(t, n, http.Header{"Origin": {"https://app.example.org"}}); err != nil {
			t.Fatal(err)
		}
	})
	tests := []struct {
		name  string
		frame string
		code  string
	}{
		{"not json", `{"type":`, protocol.ErrBadFrame},
		{"unknown field", `{"type":"ping","votes":1}`, protocol.ErrBadFrame},
		{"unknown type", `{"type":"dance"}`, protocol.ErrUnknownType},
		{"unknown channel", `{"type":"subscribe","channel":"secrets:x"}`, protocol.ErrUnknownChannel},
		{"no such event", `{"type":"subscribe","channel":"schedule:nope-nope"}`, protocol.ErrUnknownChannel},
		{"long channel", `{"type":"subscribe","channel":"schedule:` + strings.Repeat("a", 300) + `"}`, protocol.ErrChannelNameTooLong},
		{"bad token", `{"type":"auth","token":"x.y.z"}`, protocol.ErrUnauthorized},
		{"not subscribed", `{"type":"unsubscribe","channel":"schedule:` + demoEvent + `"}`, protocol.ErrNotSubscribed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := mustDial(t, n)
			if err := w.c.WriteMessage(websocket.TextMessage, []byte(tc.frame)); err != nil {
				t.Fatal(err)
			}
			f := w.next()
			if f.Type != protocol.TypeError || f.Code != tc.code {
				t.Fatalf("got %+v, want error %s", f, tc.code)
			}
			w.send(protocol.ClientFrame{Type: protocol.TypePing, ID: 3})
			if f := w.next(); f.Type != protocol.TypePong || f.ID != 3 {
				t.Fatalf("connection unusable after an error: %+v", f)
			}
		})
	}
	closes := []struct {
		name string
		send func(w *wsConn) error
		code int
	}{
		{"oversized frame", func(w *wsConn) error {
			return w.c.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping","id":1,"x":"`+strings.Repeat("a", protocol.MaxFrameBytes)+`"}`))
		}, protocol.CloseTooBig},
		{"binary frame", func(w *wsConn) error { return w.c.WriteMessage(websocket.BinaryMessage, []byte{1, 2}) }, protocol.ClosePolicy},
		{"invalid utf-8", func(w *wsConn) error { return w.c.WriteMessage(websocket.TextMessage, []byte{'"', 0xff, '"'}) }, protocol.CloseInvalidData},
		{"frame flood", func(w *wsConn) error {
			for range 500 {
				if err := w.c.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"}`)); err != nil {
					return nil // already closed
				}
			}
			return nil
		}, protocol.CloseRateLimited},
	}
	for _, tc := range closes {
		t.Run(tc.name, func(t *testing.T) {
			w := mustDial(t, n)
			if err := tc.send(w); err != nil {
				t.Fatal(err)
			}
			if code := w.closeCode(); code != tc.code {
				t.Fatalf("close code %d, want %d", code, tc.code)
			}
		})
	}
	t.Run("still serving", func(t *testing.T) {
		w := mustDial(t, n)
		w.subscribe("schedule:"+demoEvent, nil)
	})
}

// TestRealtimeAcrossNodes: two nodes on one NATS, neither knowing the other; a change
// written on node A reaches a websocket client on node B.
func TestRealtimeAcrossNodes(t *testing.T) {
	a := startNode(t, "", nil, "--demo", "--nats-listen", "127.0.0.1:0")
	m := regexp.MustCompile(`in-process NATS accepts clients.*url=(nats://\S+)`).FindStringSubmatch(a.stderr.String())
	if m == nil {
		t.Fatalf("node A did not say where its NATS listens:\n%s", a.stderr.String())
	}
	b := startNode(t, "", nil, "--nats-url", m[1])
	sch := getSchedule(t, b)
	s := pickSession(t, sch, "panel")

	w := mustDial(t, b)
	w.subscribe("schedule:"+demoEvent, nil)
	v := moveSession(t, a, a.token("organizer"), s.ID, "terraza-jardin")
	f := w.next()
	if f.Type != protocol.TypeUpdate || f.Version != v || *f.Prev != sch.Version {
		t.Fatalf("node B's client got %+v, want update %d after %d", f, v, sch.Version)
	}
}

// TestRealtimeConnectionLimits is scenario 18 in small: a socket that neither
// authenticates nor subscribes is closed with 4408; one holding a public subscription is
// kept; a client address over its cap is refused before the upgrade with 429.
func TestRealtimeConnectionLimits(t *testing.T) {
	n := startNode(t, "", nil, "--demo", "--ws-auth-timeout", "300ms", "--ws-max-conns-per-ip", "3")
	idle := mustDial(t, n)
	busy := mustDial(t, n)
	busy.subscribe("schedule:"+demoEvent, nil)
	if code := idle.closeCode(); code != protocol.CloseAuthTimeout {
		t.Fatalf("idle socket closed with %d, want %d", code, protocol.CloseAuthTimeout)
	}
	// The idle one is gone: two more fit under the cap of three, a third does not.
	mustDial(t, n)
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		_, _, err := dialWS(t, n, nil)
		return err
	})
	_, resp, err := dialWS(t, n, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("4th socket from one address: err %v, response %v", err, resp)
	}
	busy.send(protocol.ClientFrame{Type: protocol.TypePing, ID: 9})
	if f := busy.next(); f.Type != protocol.TypePong {
		t.Fatalf("subscribed socket after the idle timeout: %+v", f)
	}
}

// TestAnnouncements: organizers post bilingual announcements over REST; subscribers of
// announcements:<event> get them live in their language; a resuming client gets the ones
// it missed; the schedule channel's prev chain is not disturbed by them.
func TestAnnouncements(t *testing.T) {
	n := startNode(t, "", nil, "--demo")
	tok := n.token("organizer")
	ev := "/v1/events/" + demoEvent
	sch := getSchedule(t, n)

	ann := mustDial(t, n)
	first := ann.subscribe("announcements:"+demoEvent, nil)
	if first[0].Type != protocol.TypeSnapshot {
		t.Fatalf("first frame %+v, want a snapshot", first[0])
	}
	sched := mustDial(t, n)
	sched.subscribe("schedule:"+demoEvent, nil)

	post := func(body map[string]any) uint64 {
		t.Helper()
		r := n.do(t, req{method: "POST", path: ev + "/announcements", header: auth(tok), body: body})
		if r.Status != 201 {
			t.Fatalf("post: %d %s", r.Status, r.Body)
		}
		var a struct{ Version uint64 }
		r.json(t, &a)
		return a.Version
	}
	v1 := post(map[string]any{"title": map[string]string{"es": "Cambio de sala", "en": "Room change"},
		"body": map[string]string{"es": "La plenaria pasa al auditorio.", "en": "The plenary moves to the auditorium."}, "priority": "important"})
	f := ann.next()
	var up struct {
		Announcement struct{ Title, Priority string }
	}
	if err := json.Unmarshal(f.Data, &up); err != nil || f.Type != protocol.TypeUpdate || f.Version != v1 ||
		*f.Prev != first[0].Version || up.Announcement.Title != "Room change" || up.Announcement.Priority != "important" {
		t.Fatalf("live announcement %+v (%s), want update %d after %d in English", f, f.Data, v1, first[0].Version)
	}
	v2 := post(map[string]any{"title": map[string]string{"es": "Café en el vestíbulo"}})
	ann.next()

	// The schedule subscriber saw nothing, and its next update chains from the schedule's version.
	s := pickSession(t, sch, "workshop")
	moved := moveSession(t, n, tok, s.ID, "terraza-jardin")
	if g := sched.next(); g.Type != protocol.TypeUpdate || *g.Prev != sch.Version || g.Version != moved {
		t.Fatalf("schedule update after announcements: %+v, want prev %d", g, sch.Version)
	}

	w := mustDial(t, n)
	got := w.subscribe("announcements:"+demoEvent, &v1)
	if len(got) != 2 || got[0].Type != protocol.TypeUpdate || got[0].Version != v2 || *got[0].Prev != v1 {
		t.Fatalf("resume from %d: %+v, want the one announcement %d", v1, got, v2)
	}

	var list struct {
		Version       uint64
		Announcements []struct{ Title string }
	}
	n.do(t, req{method: "GET", path: ev + "/announcements?lang=en"}).json(t, &list)
	if list.Version != v2 || len(list.Announcements) != 2 || list.Announcements[1].Title != "Café en el vestíbulo" {
		t.Fatalf("announcements list %+v", list)
	}
	for _, tc := range []struct {
		body map[string]any
		code string
	}{
		{map[string]any{"title": map[string]string{}}, "validation_failed"},
		{map[string]any{"title": map[string]string{"es": "x"}, "priority": "loud"}, "validation_failed"},
		{map[string]any{"title": map[string]string{"es": "x"}, "session": 999999}, "validation_failed"},
		{map[string]any{"title": map[string]string{"es": "x"}, "id": 3}, "unknown_field"},
	} {
		r := n.do(t, req{method: "POST", path: ev + "/announcements", header: auth(tok), body: tc.body})
		if r.Status != 400 || r.problemCode(t) != tc.code {
			t.Errorf("post %v: %d %s, want 400 %s", tc.body, r.Status, r.Body, tc.code)
		}
	}
	if r := n.do(t, req{method: "POST", path: ev + "/announcements", body: map[string]any{"title": map[string]string{"es": "x"}}}); r.Status != 401 {
		t.Errorf("anonymous post: %d", r.Status)
	}
}

// TestRealtimeSubscriptionLimit is scenario 16: the 129th subscription on one connection
// is refused with too_many_subscriptions and the others keep receiving.
func TestRealtimeSubscriptionLimit(t *testing.T) {
	n := startNode(t, "", nil, "--ws-frame-rate", "1000") // 129 subscribes in a burst
	w := mustDial(t, n)
	var events []string
	for i := range protocol.MaxSubscriptions/2 + 1 {
		id := fmt.Sprintf("evento-%03d", i)
		r := n.do(t, req{method: "PUT", path: "/v1/events/" + id, header: auth(mint(t, n.dataDir, id, "organizer")),
			body: map[string]any{"name": map[string]string{"es": id}, "time_zone": "America/Costa_Rica",
				"days": []map[string]string{{"date": "2027-04-14", "kind": "conference", "start": "08:00", "end": "18:00"}}}})
		if r.Status != 201 {
			t.Fatalf("create %s: %d %s", id, r.Status, r.Body)
		}
		events = append(events, id)
	}
	for _, id := range events[:protocol.MaxSubscriptions/2] {
		w.subscribe("schedule:"+id, nil)
		w.subscribe("announcements:"+id, nil)
	}
	w.send(protocol.ClientFrame{Type: protocol.TypeSubscribe, ID: 99, Channel: "schedule:" + events[len(events)-1]})
	if f := w.next(); f.Type != protocol.TypeError || f.Code != protocol.ErrTooManySubscriptions || f.ID != 99 {
		t.Fatalf("subscription %d: %+v, want too_many_subscriptions", protocol.MaxSubscriptions+1, f)
	}
	r := n.do(t, req{method: "POST", path: "/v1/events/" + events[0] + "/announcements", header: auth(mint(t, n.dataDir, events[0], "organizer")),
		body: map[string]any{"title": map[string]string{"es": "Sigue aquí"}}})
	if r.Status != 201 {
		t.Fatalf("post: %d", r.Status)
	}
	if f := w.next(); f.Type != protocol.TypeUpdate || f.Channel != "announcements:"+events[0] {
		t.Fatalf("existing subscription after the refusal: %+v", f)
	}
	// A client that keeps trying is closed: OverSubscribes refusals in all, then 4409.
	for i := 1; i < protocol.OverSubscribes; i++ {
		w.send(protocol.ClientFrame{Type: protocol.TypeSubscribe, ID: uint64(100 + i), Channel: "schedule:" + events[len(events)-1]})
		if f := w.next(); f.Type != protocol.TypeError || f.Code != protocol.ErrTooManySubscriptions {
			t.Fatalf("refusal %d: %+v", i+1, f)
		}
	}
	w.send(protocol.ClientFrame{Type: protocol.TypeSubscribe, ID: 200, Channel: "schedule:" + events[len(events)-1]})
	if code := w.closeCode(); code != protocol.CloseTooManySubs {
		t.Fatalf("close code %d, want %d", code, protocol.CloseTooManySubs)
	}
}

// Behind a trusted proxy, the per-address cap counts the forwarded client address.
func TestRealtimeCapBehindProxy(t *testing.T) {
	n := startNode(t, "", nil, "--demo", "--trusted-proxies", "127.0.0.1", "--ws-max-conns-per-ip", "1")
	from := func(ip string) http.Header { return http.Header{"X-Forwarded-For": {ip}} }
	if _, _, err := dialWS(t, n, from("203.0.113.7")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := dialWS(t, n, from("203.0.113.8")); err != nil {
		t.Fatalf("another client behind the same proxy was refused: %v", err)
	}
	if _, resp, err := dialWS(t, n, from("203.0.113.7")); err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("second socket of one client: %v %v", err, resp)
	}
}
