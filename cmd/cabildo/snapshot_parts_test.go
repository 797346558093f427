package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cabildo/cabildo/pkg/api"
	"github.com/cabildo/cabildo/pkg/client"
	"github.com/cabildo/cabildo/pkg/protocol"
)

// asyncapi.yaml bounds every frame at 64 KiB, and a client that takes
// it at its word (read limit = maxServerFrameBytes, as dialWS sets) must get every
// snapshot whole, however big the event: in parts when it does not fit one frame.

// restSchedule is GET …/schedule in lang.
func restSchedule(t *testing.T, n *node, event, lang string) api.Schedule {
	t.Helper()
	r := n.do(t, req{method: "GET", path: "/v1/events/" + event + "/schedule?lang=" + lang})
	if r.Status != 200 {
		t.Fatalf("schedule %s %s: %d %s", event, lang, r.Status, truncate(r.Body))
	}
	var s api.Schedule
	r.json(t, &s)
	return s
}

// checkScheduleSnapshot subscribes to event's schedule in lang with a client bound by the
// contract, and compares the joined snapshot with what REST serves at that version.
func checkScheduleSnapshot(t *testing.T, n *node, event, lang string) (parts []int) {
	t.Helper()
	w := mustDial(t, n)
	got := w.subscribeIn("schedule:"+event, nil, lang)
	if len(got) != 2 || got[0].Type != protocol.TypeSnapshot || got[1].Type != protocol.TypeSubscribed || got[1].Version != got[0].Version {
		t.Fatalf("subscribe answered %d frames (%v), want one snapshot, then subscribed at its version", len(got), got)
	}
	var snap api.Schedule
	if err := json.Unmarshal(got[0].Data, &snap); err != nil {
		t.Fatal(err)
	}
	rest := restSchedule(t, n, event, lang)
	if rest.Version != got[0].Version {
		t.Fatalf("REST is at %d, the snapshot at %d: nothing should have changed", rest.Version, got[0].Version)
	}
	if diff := cmp.Diff(rest, snap); diff != "" {
		t.Fatalf("the %s snapshot differs from GET …/schedule (-rest +socket):\n%.2000s", lang, diff)
	}
	// Still open and usable: not closed for a frame over the limit.
	w.send(protocol.ClientFrame{Type: protocol.TypePing, ID: 42})
	if f := w.next(); f.Type != protocol.TypePong || f.ID != 42 {
		t.Fatalf("after the snapshot: %+v, want pong 42", f)
	}
	return w.parts
}

// TestSnapshotPartsDemo: the demo's programme in both languages (its Spanish snapshot
// alone weighs 66,749 bytes, over the bound) reaches a client with a 64 KiB read limit.
func TestSnapshotPartsDemo(t *testing.T) {
	n := startNode(t, "", nil, "--demo")
	for _, lang := range []string{"es", "en"} {
		parts := checkScheduleSnapshot(t, n, demoEvent, lang)
		t.Logf("demo schedule in %s: frames of %v bytes", lang, parts)
	}
}

// TestSnapshotPartsBigEvent: an event ten times the demo's size (800 sessions, bilingual
// titles and abstracts of a realistic length, 300 speakers with biographies), written
// through the REST API, reaches a client bound by the contract in both languages; then a
// change still chains from the snapshot's version.
func TestSnapshotPartsBigEvent(t *testing.T) {
	n := startNode(t, "", nil, "--ws-frame-rate", "1000")
	const event = "grande-2027"
	tok := mint(t, n.dataDir, event, "organizer")
	put := func(path string, body any) {
		t.Helper()
		r, err := tryDo(n, "PUT", "/v1/events/"+event+path, tok, body)
		if err != nil || (r.Status != 200 && r.Status != 201) {
			t.Fatalf("PUT %s: %v %d %s", path, err, r.Status, truncate(r.Body))
		}
	}
	text := func(es, en string) map[string]string { return map[string]string{"es": es, "en": en} }
	days := []string{"2027-04-14", "2027-04-15", "2027-04-16"}
	var dayList []map[string]string
	for _, d := range days {
		dayList = append(dayList, map[string]string{"date": d, "kind": "conference", "start": "08:00", "end": "20:00"})
	}
	put("", map[string]any{"name": text("Encuentro Regional de Gobierno Abierto, edición grande", "Regional Open Government Meeting, large edition"),
		"description": text(strings.Repeat("Tres días de gobierno abierto en la región. ", 10), strings.Repeat("Three days of open government in the region. ", 10)),
		"time_zone":   "America/Costa_Rica", "days": dayList})
	const rooms, speakers, sessions = 20, 300, 800
	// Writes go a few at a time, as an organizers' import would: fast, and the log keeps
	// them in order per subject anyway.
	parallel := func(count int, write func(i int) error) {
		t.Helper()
		var (
			next atomic.Int64
			wg   sync.WaitGroup
			mu   sync.Mutex
			errs []error
		)
		for range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1)) - 1; i < count; i = int(next.Add(1)) - 1 {
					if err := write(i); err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
						return
					}
				}
			}()
		}
		wg.Wait()
		if len(errs) > 0 {
			t.Fatal(errs[0])
		}
	}
	write := func(method, path string, body any) error {
		r, err := tryDo(n, method, "/v1/events/"+event+path, tok, body)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		if r.Status != 200 && r.Status != 201 {
			return fmt.Errorf("%s %s: %d %s", method, path, r.Status, truncate(r.Body))
		}
		return nil
	}
	parallel(rooms, func(i int) error {
		return write("PUT", fmt.Sprintf("/rooms/sala-%02d", i), map[string]any{"name": text(fmt.Sprintf("Sala %d", i), fmt.Sprintf("Room %d", i)), "capacity": 80})
	})
	parallel(speakers, func(i int) error {
		return write("PUT", fmt.Sprintf("/speakers/ponente-%03d", i), map[string]any{"name": fmt.Sprintf("Ponente Número %d", i),
			"affiliation": text("Observatorio Ciudadano de Datos", "Citizen Data Observatory"),
			"bio": text(strings.Repeat("Investigadora en transparencia y participación. ", 6),
				strings.Repeat("Researcher in transparency and participation. ", 6)), "country": "CR"})
	})
	// 800 sessions: 20 rooms × 14 slots of 45 minutes × 3 days holds 840.
	parallel(sessions, func(i int) error {
		room, slot := i%rooms, i/rooms
		start := time.Date(2027, 4, 14+slot/14, 8, 0, 0, 0, time.FixedZone("CST", -6*3600)).Add(time.Duration(slot%14) * 50 * time.Minute)
		return write("POST", "/sessions", map[string]any{
			"title": text(fmt.Sprintf("Sesión %d: datos abiertos y rendición de cuentas municipal", i),
				fmt.Sprintf("Session %d: open data and municipal accountability", i)),
			"abstract": text(strings.Repeat("Cómo usan las organizaciones ciudadanas los datos abiertos para pedir cuentas a sus gobiernos locales. ", 6),
				strings.Repeat("How civil society organizations use open data to hold their local governments to account. ", 6)),
			"kind": "breakout", "language": "es", "interpretation": []string{"en"}, "room": fmt.Sprintf("sala-%02d", room),
			"start": start.Format(time.RFC3339), "end": start.Add(45 * time.Minute).Format(time.RFC3339),
			"speakers": []string{fmt.Sprintf("ponente-%03d", i%speakers), fmt.Sprintf("ponente-%03d", (i+1)%speakers)},
			"tags":     []string{"datos-abiertos", "municipios"}})
	})

	for _, lang := range []string{"es", "en"} {
		parts := checkScheduleSnapshot(t, n, event, lang)
		total := 0
		for _, p := range parts {
			total += p
		}
		if len(parts) < 2 {
			t.Fatalf("the %s snapshot of %d sessions came in %d frame(s): the test proves nothing", lang, sessions, len(parts))
		}
		t.Logf("%d sessions in %s: %d frames, %d bytes in all, the largest %d", sessions, lang, len(parts), total, largest(parts))
	}

	// Live after parts: the next change chains from the snapshot's version.
	w := mustDial(t, n)
	got := w.subscribeIn("schedule:"+event, nil, "es")
	rest := restSchedule(t, n, event, "es")
	s := rest.Sessions[0]
	v := versionOf(t, n, req{method: "PATCH", path: fmt.Sprintf("/v1/events/%s/sessions/%d?force=true", event, s.ID),
		header: auth(tok), body: map[string]any{"room": "sala-19"}}, 200)
	if f := w.next(); f.Type != protocol.TypeUpdate || f.Version != v || f.Prev == nil || *f.Prev != got[0].Version {
		t.Fatalf("after a move: %+v, want update %d with prev %d", f, v, got[0].Version)
	}
}

func largest(sizes []int) int {
	m := 0
	for _, s := range sizes {
		m = max(m, s)
	}
	return m
}

// TestSnapshotPartsTownHall: a town hall with enough questions that its snapshots pass the
// bound, on the public channel and the moderators', reaches clients bound by the contract,
// equal to what REST serves.
func TestSnapshotPartsTownHall(t *testing.T) {
	n := startNode(t, "", nil, "--demo", "--qa-asks-per-minute", "100000", "--qa-asks-per-ip-per-minute", "1000000",
		"--qa-attendees-per-ip-per-minute", "10000")
	session := townHallSession(t, n)
	mod := n.token("moderator")
	base := fmt.Sprintf("/v1/events/%s/sessions/%d", demoEvent, session)
	if r := n.do(t, req{method: "PUT", path: base + "/qa", header: auth(mod), body: map[string]any{"open": true, "moderated": false}}); r.Status != 200 {
		t.Fatalf("open the Q&A: %d %s", r.Status, r.Body)
	}
	const questions = 300 // about 300 bytes each on the public list: over 64 KiB
	attendees := make([]string, 10)
	for i := range attendees {
		attendees[i] = mintAttendee(t, n)
	}
	// Made-up words, so that no two questions look alike to the screener (a near duplicate
	// waits for a moderator even where the Q&A is not moderated).
	rng := rand.New(rand.NewPCG(11, 5))
	texts := make([]string, questions)
	for i := range texts {
		words := make([]string, 20)
		for j := range words {
			w := make([]byte, 4+rng.IntN(6))
			for k := range w {
				w[k] = byte('a' + rng.IntN(26))
			}
			words[j] = string(w)
		}
		texts[i] = "¿" + strings.Join(words, " ") + "?"
	}
	var wg sync.WaitGroup
	errs := make(chan error, questions)
	for a := range attendees {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := a; i < questions; i += len(attendees) {
				q := texts[i]
				r, err := tryDo(n, "POST", base+"/questions", attendees[a], map[string]any{"text": q})
				if err != nil || r.Status != 201 {
					errs <- fmt.Errorf("ask %d: %v %d %s", i, err, r.Status, truncate(r.Body))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	qch := fmt.Sprintf("questions:%s:%d", demoEvent, session)
	w := mustDial(t, n)
	got := w.subscribeIn(qch, nil, "")
	var list api.QuestionList
	if err := json.Unmarshal(got[0].Data, &list); err != nil {
		t.Fatal(err)
	}
	var rest api.QuestionList
	n.do(t, req{method: "GET", path: base + "/questions"}).json(t, &rest)
	if len(w.parts) < 2 || len(list.Questions) != questions {
		t.Fatalf("questions snapshot: %d questions in %d frame(s), want %d in parts", len(list.Questions), len(w.parts), questions)
	}
	if diff := cmp.Diff(rest, list); diff != "" {
		t.Fatalf("questions snapshot differs from REST (-rest +socket):\n%.2000s", diff)
	}
	t.Logf("questions channel, %d questions: frames of %v bytes", questions, w.parts)

	m := mustDial(t, n)
	m.send(protocol.ClientFrame{Type: protocol.TypeAuth, ID: 1, Token: mod})
	if f := m.next(); f.Type != protocol.TypeAuthOK {
		t.Fatalf("auth: %+v", f)
	}
	got = m.subscribeIn(fmt.Sprintf("moderation:%s:%d", demoEvent, session), nil, "")
	var view, restView api.Moderation
	if err := json.Unmarshal(got[0].Data, &view); err != nil {
		t.Fatal(err)
	}
	n.do(t, req{method: "GET", path: base + "/moderation", header: auth(mod)}).json(t, &restView)
	if len(m.parts) < 2 || len(view.Questions) != questions {
		t.Fatalf("moderation snapshot: %d questions in %d frame(s), want %d in parts", len(view.Questions), len(m.parts), questions)
	}
	// server_time is each answer's own clock.
	if diff := cmp.Diff(restView, view, cmpopts.IgnoreFields(api.Moderation{}, "ServerTime")); diff != "" {
		t.Fatalf("moderation snapshot differs from REST (-rest +socket):\n%.2000s", diff)
	}
	t.Logf("moderation channel, %d questions: frames of %v bytes", questions, m.parts)
}

// cutProxy forwards TCP to a node; the first connection through it is cut once cut bytes
// have gone from the node to the client, in the middle of whatever frame that is.
type cutProxy struct {
	l    net.Listener
	to   string
	cut  int64
	conn atomic.Int64 // connections accepted
}

func startCutProxy(t *testing.T, to string, cut int64) *cutProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{l: l, to: to, cut: cut}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.serve(c, p.conn.Add(1) == 1)
		}
	}()
	return p
}

func (p *cutProxy) serve(c net.Conn, cut bool) {
	defer c.Close()
	up, err := net.Dial("tcp", p.to)
	if err != nil {
		return
	}
	defer up.Close()
	go func() { _, _ = io.Copy(up, c); up.Close() }()
	if cut {
		_, _ = io.CopyN(c, up, p.cut)
		return // both ends close: the client sees the connection drop (1006)
	}
	_, _ = io.Copy(c, up)
}

// TestSDKResumesMidSnapshot: the SDK's connection drops after the first part of the
// demo's Spanish snapshot and in the middle of the second; it delivers nothing of it,
// reconnects, gets a whole snapshot (equal to REST) and then every change, chained.
func TestSDKResumesMidSnapshot(t *testing.T) {
	n := startNode(t, "", nil, "--demo")
	tok := n.token("organizer")
	// The upgrade's answer, one whole part of 64 KiB, then a little of the next.
	proxy := startCutProxy(t, strings.TrimPrefix(n.base, "http://"), int64(protocol.MaxServerFrameBytes)+2000)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var disconnects atomic.Int64
	c, err := client.Dial(ctx, client.Options{URL: "ws://" + proxy.l.Addr().String() + "/v1/ws",
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
		OnDisconnect: func(int, error) { disconnects.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var (
		mu        sync.Mutex
		snapshots []api.Schedule
		updates   []uint64
	)
	sub, err := c.Subscribe("schedule:"+demoEvent, "es", client.Handler{
		OnSnapshot: func(_ uint64, d json.RawMessage) {
			var s api.Schedule
			if err := json.Unmarshal(d, &s); err != nil {
				t.Errorf("snapshot: %v", err)
			}
			mu.Lock()
			snapshots = append(snapshots, s)
			mu.Unlock()
		},
		OnUpdate: func(v, _ uint64, _ json.RawMessage) { mu.Lock(); updates = append(updates, v); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	rest := restSchedule(t, n, demoEvent, "es")
	checkFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		if last, ok := sub.Last(c); !ok || last < rest.Version {
			return fmt.Errorf("the client is at %d (%v), want %d", last, ok, rest.Version)
		}
		return nil
	})
	s := pickSession(t, getSchedule(t, n), "breakout")
	var written []uint64
	for _, room := range []string{"terraza-jardin", "vestibulo", s.Room} {
		written = append(written, moveSession(t, n, tok, s.ID, room))
	}
	checkFor(t, 15*time.Second, 10*time.Millisecond, func() error {
		if last, _ := sub.Last(c); last < written[len(written)-1] {
			return fmt.Errorf("the client is at %d, want %d", last, written[len(written)-1])
		}
		return nil
	})

	mu.Lock()
	defer mu.Unlock()
	if disconnects.Load() < 1 || proxy.conn.Load() < 2 {
		t.Fatalf("%d disconnects over %d connections: the cut did not happen", disconnects.Load(), proxy.conn.Load())
	}
	if len(snapshots) != 1 {
		t.Fatalf("%d snapshots delivered, want exactly the one whole", len(snapshots))
	}
	if diff := cmp.Diff(rest, snapshots[0]); diff != "" {
		t.Fatalf("the snapshot delivered differs from GET …/schedule (-rest +sdk):\n%.2000s", diff)
	}
	if diff := cmp.Diff(written, updates); diff != "" {
		t.Fatalf("updates (-written +delivered):\n%s", diff)
	}
	if st := c.Stats(); st.Gaps != 0 || st.Duplicates != 0 || st.Snapshots != 1 {
		t.Fatalf("stats %+v: want one snapshot, no gap, no duplicate", st)
	}
}
