package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cabildo/cabildo/pkg/api"
)

// The public wire types are the ones Go clients use.
type (
	pubSession   = api.Session
	scheduleBody = api.Schedule
	changesBody  = api.ChangeList
)

func getSchedule(t *testing.T, n *node) scheduleBody {
	t.Helper()
	r := n.do(t, req{method: "GET", path: "/v1/events/" + demoEvent + "/schedule?lang=en"})
	if r.Status != 200 {
		t.Fatalf("schedule: %d %s", r.Status, r.Body)
	}
	var s scheduleBody
	r.json(t, &s)
	return s
}

// freeRoomFor finds a room with nothing scheduled during s.
func freeRoomFor(t *testing.T, sch scheduleBody, s pubSession) string {
	t.Helper()
	for _, room := range sch.Rooms {
		if room.ID == s.Room {
			continue
		}
		free := true
		for _, o := range sch.Sessions {
			if o.Room == room.ID && o.Status == "scheduled" && o.Start < s.End && s.Start < o.End {
				free = false
				break
			}
		}
		if free {
			return room.ID
		}
	}
	t.Fatalf("no free room for session %d", s.ID)
	return ""
}

func pickSession(t *testing.T, sch scheduleBody, kind string) pubSession {
	t.Helper()
	for _, s := range sch.Sessions {
		if s.Kind == kind && s.Status == "scheduled" {
			return s
		}
	}
	t.Fatalf("no %s session in the demo", kind)
	return pubSession{}
}

// TestNewUserFlow is a new user's walk-through: run with the demo, read the schedule, move a
// session with an organizer token, see it in /changes, restart, still there.
func TestNewUserFlow(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir, nil, "--demo")
	sch := getSchedule(t, n)
	if len(sch.Sessions) < 47 || len(sch.Rooms) < 8 {
		t.Fatalf("demo has %d sessions in %d rooms, want ≥47 in ≥8", len(sch.Sessions), len(sch.Rooms))
	}
	s := pickSession(t, sch, "breakout")
	to := freeRoomFor(t, sch, s)
	tok := n.token("organizer")
	r := n.do(t, req{method: "PATCH", path: fmt.Sprintf("/v1/events/%s/sessions/%d", demoEvent, s.ID),
		body: map[string]any{"room": to, "reason": map[string]any{"code": "capacity",
			"text": map[string]string{"es": "Se espera más público", "en": "More people expected"}}},
		header: auth(tok)})
	if r.Status != 200 {
		t.Fatalf("move: %d %s", r.Status, r.Body)
	}
	var moved struct {
		Room    string `json:"room"`
		Version uint64 `json:"version"`
	}
	r.json(t, &moved)
	if moved.Room != to || r.Header.Get("ETag") != fmt.Sprintf(`"%d"`, moved.Version) {
		t.Fatalf("move answered room %q etag %q, want %q and the version", moved.Room, r.Header.Get("ETag"), to)
	}

	ch := n.do(t, req{method: "GET", path: fmt.Sprintf("/v1/events/%s/changes?since=%d&lang=en", demoEvent, sch.Version)})
	var cb changesBody
	ch.json(t, &cb)
	if len(cb.Changes) != 1 {
		t.Fatalf("changes since %d: %d, want 1: %s", sch.Version, len(cb.Changes), ch.Body)
	}
	c := cb.Changes[0]
	if c.Type != "session_moved" || c.Session.ID != s.ID || c.Room.From != s.Room || c.Room.To != to ||
		c.Reason == nil || c.Reason.Code != "capacity" || c.Reason.Text != "More people expected" || c.Version != moved.Version {
		t.Fatalf("change = %+v, want session_moved %d %s → %s with reason", c, s.ID, s.Room, to)
	}

	n.stop()
	n2 := startNode(t, dir, nil, "--demo")
	after := getSchedule(t, n2)
	if after.Version != moved.Version {
		t.Fatalf("after restart version %d, want %d", after.Version, moved.Version)
	}
	i := slices.IndexFunc(after.Sessions, func(x pubSession) bool { return x.GUID == s.GUID })
	if i < 0 || after.Sessions[i].ID != s.ID || after.Sessions[i].Room != to {
		t.Fatalf("after restart the session is %+v, want id %d in %s", after.Sessions[i], s.ID, to)
	}
	if len(after.Sessions) != len(sch.Sessions) {
		t.Fatalf("after restart %d sessions, want %d (the demo must not load twice)", len(after.Sessions), len(sch.Sessions))
	}
}

func TestPublicReads(t *testing.T) {
	n := startNode(t, "", nil, "--demo")
	sch := getSchedule(t, n)
	s := sch.Sessions[0]
	ev := "/v1/events/" + demoEvent
	tests := []struct {
		path   string
		status int
	}{
		{"/v1/events", 200},
		{ev, 200},
		{ev + "/schedule", 200},
		{ev + "/schedule?lang=es", 200},
		{ev + "/sessions", 200},
		{ev + "/sessions?day=2027-04-14&kind=panel", 200},
		{ev + "/sessions?room=sala-1&language=en&status=scheduled", 200},
		{ev + "/sessions?track=datos-abiertos", 200},
		{fmt.Sprintf("%s/sessions/%d", ev, s.ID), 200},
		{ev + "/sessions/" + s.GUID, 200},
		{ev + "/sessions/" + strings.ToUpper(s.GUID), 200},
		{ev + "/rooms", 200},
		{ev + "/rooms/sala-1", 200},
		{ev + "/tracks", 200},
		{ev + "/speakers", 200},
		{ev + "/changes?since=0", 200},
		{fmt.Sprintf("%s/changes?since=%d", ev, sch.Version), 200},
		{"/v1/events/no-such-event", 404},
		{"/v1/events/no-such-event/schedule", 404},
		{ev + "/sessions/999999", 404},
		{ev + "/sessions/not-a-session", 404},
		{ev + "/rooms/no-room", 404},
		{ev + "/speakers/nobody", 404},
		{ev + "/sessions?day=tomorrow", 400},
		{ev + "/sessions?kind=party", 400},
		{ev + "/sessions?language=fr", 400},
		{ev + "/schedule?lang=fr", 400},
		{ev + "/changes", 400},
		{ev + "/changes?since=-1", 400},
		{ev + "/changes?since=abc", 400},
		{fmt.Sprintf("%s/changes?since=%d", ev, sch.Version+1000), 410},
		{"/v1/nothing-here", 404},
		{"/livez", 200},
		{"/readyz", 200},
		{"/openapi.yaml", 200},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			r := n.do(t, req{method: "GET", path: tc.path})
			if r.Status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.Status, tc.status, truncate(r.Body))
			}
			if tc.status >= 400 && r.problemCode(t) == "" {
				t.Fatal("problem without code")
			}
		})
	}

	t.Run("filters", func(t *testing.T) {
		var got struct{ Sessions []pubSession }
		n.do(t, req{method: "GET", path: ev + "/sessions?day=2027-04-14&room=auditorio-nacional"}).json(t, &got)
		if len(got.Sessions) == 0 {
			t.Fatal("no sessions in the plenary hall on day 2")
		}
		for _, s := range got.Sessions {
			if s.Day != "2027-04-14" || s.Room != "auditorio-nacional" {
				t.Errorf("filter let through %+v", s)
			}
		}
		var unconf struct{ Sessions []pubSession }
		n.do(t, req{method: "GET", path: ev + "/sessions?kind=unconference"}).json(t, &unconf)
		for _, s := range unconf.Sessions {
			if s.Kind != "unconference" || s.Day != "2027-04-13" {
				t.Errorf("kind filter let through %+v", s)
			}
		}
		if len(unconf.Sessions) == 0 {
			t.Fatal("no unconference sessions")
		}
	})

	t.Run("language", func(t *testing.T) {
		path := fmt.Sprintf("%s/sessions/%d", ev, s.ID)
		var es, en, accept pubSession
		rEs := n.do(t, req{method: "GET", path: path + "?lang=es"})
		rEs.json(t, &es)
		n.do(t, req{method: "GET", path: path + "?lang=en"}).json(t, &en)
		rAcc := n.do(t, req{method: "GET", path: path, header: map[string]string{"Accept-Language": "fr;q=1, en-US;q=0.8, es;q=0.5"}})
		rAcc.json(t, &accept)
		if es.Title == "" || en.Title == "" || es.Title == en.Title {
			t.Fatalf("titles es %q en %q: want two different texts", es.Title, en.Title)
		}
		if accept.Title != en.Title || rAcc.Header.Get("Content-Language") != "en" || rEs.Header.Get("Content-Language") != "es" {
			t.Fatalf("Accept-Language picked %q (%s), want the English title", accept.Title, rAcc.Header.Get("Content-Language"))
		}
	})

	t.Run("conditional", func(t *testing.T) {
		for _, path := range []string{"/v1/events", ev, ev + "/schedule", ev + "/sessions?room=sala-1",
			fmt.Sprintf("%s/sessions/%d", ev, s.ID), ev + "/changes?since=0", ev + "/rooms"} {
			r := n.do(t, req{method: "GET", path: path})
			etag, lm := r.Header.Get("ETag"), r.Header.Get("Last-Modified")
			if r.Status != 200 || etag == "" || lm == "" {
				t.Fatalf("%s: status %d etag %q last-modified %q", path, r.Status, etag, lm)
			}
			if r2 := n.do(t, req{method: "GET", path: path, header: map[string]string{"If-None-Match": etag}}); r2.Status != 304 || len(r2.Body) != 0 {
				t.Errorf("%s If-None-Match: %d %q, want 304 and no body", path, r2.Status, r2.Body)
			}
			if r3 := n.do(t, req{method: "GET", path: path, header: map[string]string{"If-Modified-Since": lm}}); r3.Status != 304 {
				t.Errorf("%s If-Modified-Since: %d, want 304", path, r3.Status)
			}
			if r4 := n.do(t, req{method: "GET", path: path, header: map[string]string{"If-None-Match": `"0-es"`, "If-Modified-Since": lm}}); r4.Status != 200 {
				t.Errorf("%s stale If-None-Match with current If-Modified-Since: %d, want 200 (If-None-Match wins)", path, r4.Status)
			}
			// Another language is another representation.
			if r5 := n.do(t, req{method: "GET", path: path + sep(path) + "lang=en", header: map[string]string{"If-None-Match": etag}}); r5.Status != 200 {
				t.Errorf("%s in English with the Spanish ETag: %d, want 200", path, r5.Status)
			}
		}
	})

	t.Run("etag changes with the programme", func(t *testing.T) {
		r := n.do(t, req{method: "GET", path: ev + "/schedule"})
		etag := r.Header.Get("ETag")
		tok := n.token("organizer")
		w := n.do(t, req{method: "POST", path: fmt.Sprintf("%s/sessions/%d/cancel", ev, s.ID), header: auth(tok),
			body: map[string]any{"reason": map[string]any{"code": "speaker_unavailable"}}})
		if w.Status != 200 {
			t.Fatalf("cancel: %d %s", w.Status, w.Body)
		}
		r2 := n.do(t, req{method: "GET", path: ev + "/schedule", header: map[string]string{"If-None-Match": etag}})
		if r2.Status != 200 || r2.Header.Get("ETag") == etag {
			t.Fatalf("after a change: %d etag %q (was %q), want 200 and a new ETag", r2.Status, r2.Header.Get("ETag"), etag)
		}
	})
}

func sep(path string) string {
	if strings.Contains(path, "?") {
		return "&"
	}
	return "?"
}

func TestOrganizerLifecycle(t *testing.T) {
	n := startNode(t, "", nil)
	const ev = "/v1/events/gobierno-2028"
	tok := mint(t, n.dataDir, "gobierno-2028", "organizer")
	h := auth(tok)
	put := func(path string, body any, want int) response {
		t.Helper()
		r := n.do(t, req{method: "PUT", path: path, body: body, header: h})
		if r.Status != want {
			t.Fatalf("PUT %s: %d, want %d: %s", path, r.Status, want, r.Body)
		}
		return r
	}
	event := map[string]any{"name": map[string]string{"es": "Gobierno Abierto 2028"}, "time_zone": "America/Costa_Rica",
		"days": []map[string]string{{"date": "2028-05-02", "kind": "conference", "start": "08:00", "end": "18:00"}}}
	put(ev, event, 201)
	event["city"] = "San José"
	put(ev, event, 200)
	put(ev+"/rooms/sala-a", map[string]any{"name": map[string]string{"es": "Sala A", "en": "Room A"}, "capacity": 80}, 201)
	put(ev+"/rooms/sala-b", map[string]any{"name": map[string]string{"es": "Sala B"}, "streamed": true, "stream_url": "https://live.example.org/b"}, 201)
	put(ev+"/tracks/datos", map[string]any{"name": map[string]string{"es": "Datos", "en": "Data"}, "color": "#1f6feb"}, 201)
	put(ev+"/speakers/ana", map[string]any{"name": "Ana Solís", "country": "CR"}, 201)
	put(ev+"/speakers/luis", map[string]any{"name": "Luis Mora"}, 201)

	session := map[string]any{"title": map[string]string{"es": "Datos abiertos", "en": "Open data"}, "kind": "panel",
		"language": "es", "interpretation": []string{"en"}, "room": "sala-a", "track": "datos",
		"start": "2028-05-02T09:00:00-06:00", "end": "2028-05-02T10:00:00-06:00", "speakers": []string{"ana"}}
	r := n.do(t, req{method: "POST", path: ev + "/sessions", body: session, header: h})
	if r.Status != 201 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	var created struct {
		ID      int64  `json:"id"`
		GUID    string `json:"guid"`
		Version uint64 `json:"version"`
		Status  string `json:"status"`
	}
	r.json(t, &created)
	if created.ID <= 0 || created.GUID == "" || created.Status != "scheduled" {
		t.Fatalf("created %+v", created)
	}
	if loc := r.Header.Get("Location"); loc != fmt.Sprintf("%s/sessions/%d", ev, created.ID) {
		t.Fatalf("Location %q", loc)
	}
	sessPath := fmt.Sprintf("%s/sessions/%d", ev, created.ID)

	steps := []struct {
		name   string
		method string
		path   string
		body   any
		want   int
		change string
	}{
		{"move room", "PATCH", sessPath, map[string]any{"room": "sala-b"}, 200, "session_moved"},
		{"delay 15 min", "PATCH", sessPath, map[string]any{"start": "2028-05-02T09:15:00-06:00", "end": "2028-05-02T10:15:00-06:00",
			"reason": map[string]any{"code": "running_late"}}, 200, "session_delayed"},
		{"shorten", "PATCH", sessPath, map[string]any{"end": "2028-05-02T10:00:00-06:00"}, 200, "session_rescheduled"},
		{"speakers", "PATCH", sessPath, map[string]any{"speakers": []string{"ana", "luis"}}, 200, "session_speakers_changed"},
		{"retitle", "PATCH", sessPath, map[string]any{"title": map[string]string{"es": "Datos abiertos hoy", "en": "Open data today"}}, 200, "session_updated"},
		{"no-op patch", "PATCH", sessPath, map[string]any{"room": "sala-b"}, 200, ""},
		{"cancel", "POST", sessPath + "/cancel", map[string]any{"reason": map[string]any{"code": "speaker_unavailable",
			"text": map[string]string{"es": "La ponente no pudo viajar"}}}, 200, "session_cancelled"},
		{"cancel again", "POST", sessPath + "/cancel", map[string]any{"reason": map[string]any{"code": "other"}}, 200, ""},
		{"reinstate", "POST", sessPath + "/reinstate", nil, 200, "session_reinstated"},
		{"delete", "DELETE", sessPath, nil, 204, "session_removed"},
	}
	var wantChanges []string
	for _, st := range steps {
		r := n.do(t, req{method: st.method, path: st.path, body: st.body, header: h})
		if r.Status != st.want {
			t.Fatalf("%s: %d, want %d: %s", st.name, r.Status, st.want, r.Body)
		}
		if st.change != "" {
			wantChanges = append(wantChanges, st.change)
		}
		if st.name == "cancel" {
			// A cancelled session stays on the programme with its reason.
			var got pubSession
			n.do(t, req{method: "GET", path: sessPath + "?lang=en"}).json(t, &got)
			if got.Status != "cancelled" || got.Cancellation == nil || got.Cancellation.Code != "speaker_unavailable" ||
				got.Cancellation.Text != "La ponente no pudo viajar" {
				t.Fatalf("cancelled session reads %+v", got)
			}
		}
	}
	if r := n.do(t, req{method: "GET", path: sessPath}); r.Status != 404 {
		t.Fatalf("deleted session: %d, want 404", r.Status)
	}
	var cb changesBody
	n.do(t, req{method: "GET", path: fmt.Sprintf("%s/changes?since=%d", ev, created.Version)}).json(t, &cb)
	var got []string
	for _, c := range cb.Changes {
		got = append(got, c.Type)
		if c.Session == nil || c.Session.ID != created.ID || c.Session.GUID != created.GUID {
			t.Errorf("change %s names session %+v, want %d", c.Type, c.Session, created.ID)
		}
	}
	if !slices.Equal(got, wantChanges) {
		t.Fatalf("changes %v, want %v", got, wantChanges)
	}
	if cb.Changes[1].DelayMinutes != 15 {
		t.Errorf("delay_minutes %d, want 15", cb.Changes[1].DelayMinutes)
	}

	// A new session never reuses a deleted one's id or guid.
	session["guid"] = created.GUID
	if r := n.do(t, req{method: "POST", path: ev + "/sessions", body: session, header: h}); r.Status != 409 || r.problemCode(t) != "already_exists" {
		t.Fatalf("re-create with a deleted guid: %d %s", r.Status, r.Body)
	}
	delete(session, "guid")
	r = n.do(t, req{method: "POST", path: ev + "/sessions", body: session, header: h})
	var again struct {
		ID int64 `json:"id"`
	}
	r.json(t, &again)
	if r.Status != 201 || again.ID <= created.ID {
		t.Fatalf("new session: %d id %d, want 201 and an id above %d", r.Status, again.ID, created.ID)
	}
}

func TestAuthorization(t *testing.T) {
	n := startNode(t, "", nil, "--demo")
	ev := "/v1/events/" + demoEvent
	org := n.token("organizer")
	other := mint(t, n.dataDir, "otro-evento", "organizer")
	mod := n.token("moderator")
	// Signed with another key: token create never makes one up, so name it.
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"token", "create", "--event", demoEvent, "--role", "organizer",
		"--signing-key", strings.Repeat("ab", 32)}, func(string) string { return "" }, &out, &errb); err != nil {
		t.Fatalf("token create: %v: %s", err, errb.String())
	}
	foreign := strings.TrimSpace(out.String())
	body := map[string]any{"name": map[string]string{"es": "Sala X"}}
	tests := []struct {
		name   string
		header map[string]string
		status int
		code   string
	}{
		{"no token", nil, 401, "unauthorized"},
		{"not bearer", map[string]string{"Authorization": "Basic YTpi"}, 401, "unauthorized"},
		{"garbage", auth("not-a-token"), 401, "unauthorized"},
		{"alg none", auth(noneToken(t)), 401, "unauthorized"},
		{"other key", auth(foreign), 401, "unauthorized"},
		{"other event", auth(other), 403, "forbidden"},
		{"moderator", auth(mod), 403, "forbidden"},
		{"cross-site", map[string]string{"Authorization": "Bearer " + org, "Sec-Fetch-Site": "cross-site"}, 403, "forbidden"},
		{"organizer", auth(org), 201, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := getSchedule(t, n).Version
			r := n.do(t, req{method: "PUT", path: ev + "/rooms/sala-x-" + strconv.Itoa(len(tc.name)), body: body, header: tc.header})
			if r.Status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.Status, tc.status, r.Body)
			}
			if tc.code != "" {
				if got := r.problemCode(t); got != tc.code {
					t.Fatalf("code %q, want %q", got, tc.code)
				}
				if after := getSchedule(t, n).Version; after != before {
					t.Fatalf("refused write changed the version %d → %d", before, after)
				}
			}
			if tc.status == 401 && r.Header.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
}

// noneToken is an unsigned token claiming to be an organizer of the demo event.
func noneToken(t *testing.T) string {
	t.Helper()
	enc := func(s string) string { return strings.TrimRight(b64(s), "=") }
	exp := time.Now().Add(time.Hour).Unix()
	return enc(`{"alg":"none","typ":"JWT"}`) + "." +
		enc(fmt.Sprintf(`{"event":%q,"typ":"organizer","iss":"cabildo","aud":["cabildo-api"],"exp":%d,"iat":%d}`, demoEvent, exp, time.Now().Unix())) + "."
}

func TestBadInput(t *testing.T) {
	n := startNode(t, "", nil, "--demo")
	ev := "/v1/events/" + demoEvent
	sch := getSchedule(t, n)
	s := pickSession(t, sch, "breakout")
	h := auth(n.token("organizer"))
	sessPath := fmt.Sprintf("%s/sessions/%d", ev, s.ID)
	valid := func(over map[string]any) map[string]any {
		m := map[string]any{"title": map[string]string{"es": "Nueva"}, "kind": "workshop", "language": "es",
			"room": "sala-1", "start": "2027-04-14T18:00:00-06:00", "end": "2027-04-14T18:45:00-06:00"}
		for k, v := range over {
			if v == nil {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		return m
	}
	tests := []struct {
		name   string
		method string
		path   string
		body   any
		header map[string]string
		status int
		code   string
		field  string
	}{
		{"malformed json", "POST", ev + "/sessions", `{"title": `, nil, 400, "invalid_request", ""},
		{"headers over 4 KiB", "GET", ev + "/schedule", nil, map[string]string{"X-Padding": strings.Repeat("a", 5000)}, 431, "headers_too_large", ""},
		{"not an object", "POST", ev + "/sessions", `[1,2]`, nil, 400, "invalid_request", ""},
		{"two values", "POST", ev + "/sessions", `{} {}`, nil, 400, "invalid_request", ""},
		{"empty body", "POST", ev + "/sessions", ``, map[string]string{"Content-Type": "application/json"}, 400, "invalid_request", ""},
		{"unknown field", "POST", ev + "/sessions", valid(map[string]any{"votes": 5}), nil, 400, "unknown_field", "votes"},
		{"mass assignment status", "POST", ev + "/sessions", valid(map[string]any{"status": "cancelled"}), nil, 400, "unknown_field", "status"},
		{"mass assignment id", "PATCH", sessPath, map[string]any{"id": 1}, nil, 400, "unknown_field", "id"},
		{"mass assignment event", "PATCH", sessPath, map[string]any{"event_id": "x"}, nil, 400, "unknown_field", "event_id"},
		{"unknown language in text", "POST", ev + "/sessions", valid(map[string]any{"title": map[string]string{"fr": "x"}}), nil, 400, "unknown_field", "title.fr"},
		{"wrong type", "POST", ev + "/sessions", valid(map[string]any{"room": 12}), nil, 400, "invalid_request", "room"},
		{"wrong type array", "PATCH", sessPath, map[string]any{"speakers": "ana"}, nil, 400, "invalid_request", "speakers"},
		{"end before start", "POST", ev + "/sessions", valid(map[string]any{"end": "2027-04-14T17:00:00-06:00"}), nil, 400, "validation_failed", "end"},
		{"not a time", "POST", ev + "/sessions", valid(map[string]any{"start": "tomorrow at nine"}), nil, 400, "validation_failed", "start"},
		{"no offset", "POST", ev + "/sessions", valid(map[string]any{"start": "2027-04-14T18:00:00"}), nil, 400, "validation_failed", "start"},
		{"outside the event", "POST", ev + "/sessions", valid(map[string]any{"start": "2027-05-01T10:00:00-06:00", "end": "2027-05-01T11:00:00-06:00"}), nil, 400, "validation_failed", "start"},
		{"at night", "POST", ev + "/sessions", valid(map[string]any{"start": "2027-04-14T22:00:00-06:00", "end": "2027-04-14T23:00:00-06:00"}), nil, 400, "validation_failed", "start"},
		{"unknown room", "POST", ev + "/sessions", valid(map[string]any{"room": "sala-99"}), nil, 400, "validation_failed", "room"},
		{"unknown speaker", "POST", ev + "/sessions", valid(map[string]any{"speakers": []string{"nadie"}}), nil, 400, "validation_failed", "speakers[0]"},
		{"missing title", "POST", ev + "/sessions", valid(map[string]any{"title": nil}), nil, 400, "validation_failed", "title"},
		{"bad kind", "POST", ev + "/sessions", valid(map[string]any{"kind": "party"}), nil, 400, "validation_failed", "kind"},
		{"bad guid", "POST", ev + "/sessions", valid(map[string]any{"guid": "nope"}), nil, 400, "validation_failed", "guid"},
		{"room occupied", "PATCH", sessPath, map[string]any{"room": occupiedRoom(t, sch, s)}, nil, 400, "validation_failed", "room"},
		{"bad force", "PATCH", sessPath + "?force=maybe", map[string]any{"room": "sala-1"}, nil, 400, "invalid_request", "force"},
		{"bad reason", "POST", sessPath + "/cancel", map[string]any{"reason": map[string]any{"code": "because"}}, nil, 400, "validation_failed", "reason.code"},
		{"cancel without reason", "POST", sessPath + "/cancel", map[string]any{}, nil, 400, "validation_failed", "reason"},
		{"bad if-match", "PATCH", sessPath, map[string]any{"room": "sala-1"}, map[string]string{"If-Match": `"abc"`}, 400, "invalid_request", "If-Match"},
		{"bad idempotency key", "PATCH", sessPath, map[string]any{"room": "sala-1"}, map[string]string{"Idempotency-Key": strings.Repeat("k", 300)}, 400, "invalid_request", "Idempotency-Key"},
		{"unknown session", "PATCH", ev + "/sessions/424242", map[string]any{"room": "sala-1"}, nil, 404, "not_found", ""},
		{"unknown event", "PATCH", "/v1/events/nope-nope/sessions/1", map[string]any{"room": "sala-1"}, map[string]string{"Authorization": "Bearer " + mint(t, n.dataDir, "nope-nope", "organizer")}, 404, "not_found", ""},
		{"form body", "POST", ev + "/sessions", `a=b`, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type", ""},
		{"too large", "POST", ev + "/sessions", valid(map[string]any{"abstract": map[string]string{"es": strings.Repeat("a", 300<<10)}}), nil, 413, "payload_too_large", ""},
		{"abstract too long", "POST", ev + "/sessions", valid(map[string]any{"abstract": map[string]string{"es": strings.Repeat("a", 9000)}}), nil, 400, "validation_failed", "abstract.es"},
		{"bad event time zone", "PUT", ev, map[string]any{"name": map[string]string{"es": "x"}, "time_zone": "Mars/Olympus",
			"days": []map[string]string{{"date": "2027-04-13", "kind": "conference", "start": "08:00", "end": "18:00"}}}, nil, 400, "validation_failed", "time_zone"},
		{"bad room id", "PUT", ev + "/rooms/Sala_1", map[string]any{"name": map[string]string{"es": "x"}}, nil, 400, "validation_failed", "id"},
		{"method not allowed", "POST", ev + "/schedule", map[string]any{}, nil, 405, "method_not_allowed", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := getSchedule(t, n)
			hdr := map[string]string{}
			for k, v := range h {
				hdr[k] = v
			}
			for k, v := range tc.header {
				hdr[k] = v
			}
			r := n.do(t, req{method: tc.method, path: tc.path, body: tc.body, header: hdr})
			if r.Status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.Status, tc.status, truncate(r.Body))
			}
			if got := r.problemCode(t); got != tc.code {
				t.Fatalf("code %q, want %q: %s", got, tc.code, r.Body)
			}
			if tc.field != "" {
				var p struct {
					Errors []struct{ Field string } `json:"errors"`
				}
				r.json(t, &p)
				if !slices.ContainsFunc(p.Errors, func(e struct{ Field string }) bool { return e.Field == tc.field }) {
					t.Fatalf("errors %+v do not name field %q", p.Errors, tc.field)
				}
			}
			after := getSchedule(t, n)
			if after.Version != before.Version || len(after.Sessions) != len(before.Sessions) {
				t.Fatalf("a refused request changed the programme: version %d → %d", before.Version, after.Version)
			}
		})
	}

	t.Run("force allows a shared room", func(t *testing.T) {
		room := occupiedRoom(t, sch, s)
		r := n.do(t, req{method: "PATCH", path: sessPath + "?force=true", body: map[string]any{"room": room}, header: h})
		if r.Status != 200 {
			t.Fatalf("forced move: %d %s", r.Status, r.Body)
		}
	})
}

// occupiedRoom returns a room with a scheduled session overlapping s.
func occupiedRoom(t *testing.T, sch scheduleBody, s pubSession) string {
	t.Helper()
	for _, o := range sch.Sessions {
		if o.ID != s.ID && o.Room != s.Room && o.Status == "scheduled" && o.Start < s.End && s.Start < o.End {
			return o.Room
		}
	}
	t.Fatalf("no room busy during session %d", s.ID)
	return ""
}

// TestConcurrentEdits is scenario 6: 50 organizers move one session at once with the same
// If-Match; exactly one wins and the log holds exactly one new change.
func TestConcurrentEdits(t *testing.T) {
	n := startNode(t, "", nil, "--demo")
	ev := "/v1/events/" + demoEvent
	sch := getSchedule(t, n)
	s := pickSession(t, sch, "workshop")
	h := auth(n.token("organizer"))
	path := fmt.Sprintf("%s/sessions/%d", ev, s.ID)
	first := n.do(t, req{method: "GET", path: path})
	etag := first.Header.Get("ETag")
	rooms := []string{}
	for _, r := range sch.Rooms {
		rooms = append(rooms, r.ID)
	}

	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		status = map[int]int{}
		codes  = map[string]int{}
	)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hdr := map[string]string{"If-Match": etag, "Authorization": h["Authorization"]}
			r := n.do(t, req{method: "PATCH", path: path + "?force=true", body: map[string]any{"room": rooms[i%len(rooms)]}, header: hdr})
			mu.Lock()
			defer mu.Unlock()
			status[r.Status]++
			if r.Status != 200 {
				var p struct{ Code string }
				r.json(t, &p)
				codes[p.Code]++
			}
		}()
	}
	wg.Wait()
	// A move to the session's own room is a no-op answered 200 without a write; the
	// table above never asks for that more than twice.
	noop := 0
	for i := range 50 {
		if rooms[i%len(rooms)] == s.Room {
			noop++
		}
	}
	if status[200] < 1 || status[200] > 1+noop || status[200]+status[412] != 50 || codes["version_conflict"] != status[412] {
		t.Fatalf("statuses %v codes %v, want exactly one winner (+%d no-ops) and the rest 412 version_conflict", status, codes, noop)
	}
	var cb changesBody
	n.do(t, req{method: "GET", path: fmt.Sprintf("%s/changes?since=%d", ev, sch.Version)}).json(t, &cb)
	if len(cb.Changes) != 1 || cb.Changes[0].Type != "session_moved" {
		t.Fatalf("log has %d new changes, want exactly 1 session_moved: %+v", len(cb.Changes), cb.Changes)
	}

	// Without If-Match, racing writers still never silently overwrite: each either wins
	// against the version it read or gets 409.
	status = map[int]int{}
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Date(2027, 4, 14, 18, 0, 0, 0, time.FixedZone("CST", -6*3600)).Add(time.Duration(i) * time.Minute)
			r := n.do(t, req{method: "PATCH", path: path + "?force=true", header: h, body: map[string]any{
				"start": start.Format(time.RFC3339), "end": start.Add(30 * time.Minute).Format(time.RFC3339)}})
			mu.Lock()
			status[r.Status]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	var cb2 changesBody
	n.do(t, req{method: "GET", path: fmt.Sprintf("%s/changes?since=%d", ev, cb.Version)}).json(t, &cb2)
	if status[200]+status[409] != 20 || len(cb2.Changes) != status[200] {
		t.Fatalf("statuses %v and %d changes: every 200 must be exactly one change, every loser a 409", status, len(cb2.Changes))
	}
}

// TestIdempotentRetries is scenario 5 for programme writes.
func TestIdempotentRetries(t *testing.T) {
	n := startNode(t, "", nil, "--demo", "--dedupe-window", "1s")
	ev := "/v1/events/" + demoEvent
	h := auth(n.token("organizer"))
	h["Idempotency-Key"] = "7d1c2f4e-retry-test"
	body := map[string]any{"title": map[string]string{"es": "Sesión reintentada"}, "kind": "workshop", "language": "es",
		"room": "sala-1", "start": "2027-04-14T18:00:00-06:00", "end": "2027-04-14T18:45:00-06:00"}
	before := getSchedule(t, n)

	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		ids = map[int64]int{}
	)
	send := func() {
		r := n.do(t, req{method: "POST", path: ev + "/sessions?force=true", body: body, header: h})
		var got struct {
			ID int64 `json:"id"`
		}
		if r.Status == 201 {
			r.json(t, &got)
		}
		mu.Lock()
		ids[got.ID]++
		mu.Unlock()
		if r.Status != 201 {
			t.Errorf("retry: %d %s", r.Status, r.Body)
		}
	}
	for range 5 {
		wg.Add(1)
		go func() { defer wg.Done(); send() }()
	}
	wg.Wait()
	for range 4 {
		send()
	}
	// After the log's own de-duplication window, the projection still remembers the key.
	time.Sleep(1500 * time.Millisecond)
	send()
	if len(ids) != 1 {
		t.Fatalf("10 retries gave ids %v, want one id", ids)
	}
	after := getSchedule(t, n)
	if len(after.Sessions) != len(before.Sessions)+1 {
		t.Fatalf("%d sessions after 10 retries, want %d", len(after.Sessions), len(before.Sessions)+1)
	}
	body["kind"] = "panel"
	r := n.do(t, req{method: "POST", path: ev + "/sessions?force=true", body: body, header: h})
	if r.Status != 422 || r.problemCode(t) != "idempotency_key_reused" {
		t.Fatalf("same key, other body: %d %s", r.Status, r.Body)
	}
}

func TestChangeHistoryTooOld(t *testing.T) {
	n := startNode(t, "", nil, "--demo", "--change-history", "10")
	ev := "/v1/events/" + demoEvent
	r := n.do(t, req{method: "GET", path: ev + "/changes?since=0"})
	if r.Status != 410 || r.problemCode(t) != "version_too_old" {
		t.Fatalf("since=0 with a short history: %d %s", r.Status, r.Body)
	}
	sch := getSchedule(t, n)
	var cb changesBody
	n.do(t, req{method: "GET", path: fmt.Sprintf("%s/changes?since=%d", ev, sch.Version-3)}).json(t, &cb)
	if len(cb.Changes) != 3 {
		t.Fatalf("recent changes: %d, want 3", len(cb.Changes))
	}
	if r := n.do(t, req{method: "GET", path: fmt.Sprintf("%s/changes?since=%d", ev, sch.Version+1)}); r.Status != 410 || r.problemCode(t) != "version_unknown" {
		t.Fatalf("future since: %d %s", r.Status, r.Body)
	}
}

func TestReadyAndMetrics(t *testing.T) {
	n := startNode(t, "", nil)
	r := n.do(t, req{method: "GET", path: "/readyz"})
	if r.Status != 200 || !strings.Contains(string(r.Body), `"cache":"memory"`) {
		t.Fatalf("readyz: %d %s", r.Status, r.Body)
	}
	resp, err := http.Get(n.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, _ = fmt.Fprint(&b, readAll(t, resp))
	for _, want := range []string{"cabildo_http_requests_total", "cabildo_projection_sequence", "go_goroutines"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
