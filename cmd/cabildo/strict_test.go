package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/getkin/kin-openapi/openapi3"

	mobileapi "github.com/cabildo/cabildo/mobile-api"
	"github.com/cabildo/cabildo/pkg/api"
)

// strictCase is one valid request body for an operation of the contract. The test bends it
// in every way a sloppy or hostile client would and expects each bent copy to be refused
// with nothing changed, then sends it as it is and expects it to succeed: so a refusal is
// about the bend alone, never about a body that was wrong to begin with.
type strictCase struct {
	op     string // "METHOD /path/{template}" as in openapi.yaml
	path   func() string
	tok    func() string
	body   map[string]any
	status int // of the valid body
}

// strictWorld holds what the cases refer to; later cases use what earlier ones created.
type strictWorld struct {
	n                     *node
	org, mod, orgNew, att string
	townHall, created     int64
	question, merged      int64
	undoOf                uint64
}

func strictCases(w *strictWorld) []strictCase {
	ev := "/v1/events/" + demoEvent
	const newEvent = "prueba-estricta"
	text := func(es, en string) map[string]any { return map[string]any{"es": es, "en": en} }
	reason := map[string]any{"code": "capacity", "text": text("Más público", "More people")}
	org := func() string { return w.org }
	mod := func() string { return w.mod }
	att := func() string { return w.att }
	fixed := func(p string) func() string { return func() string { return p } }
	session := func() string { return fmt.Sprintf("%s/sessions/%d", ev, w.created) }
	townHall := func() string { return fmt.Sprintf("%s/sessions/%d", ev, w.townHall) }
	return []strictCase{
		{op: "PUT /v1/events/{event}", path: fixed("/v1/events/" + newEvent), tok: func() string { return w.orgNew }, status: 201,
			body: map[string]any{"name": text("Prueba", "Test"), "description": text("Una prueba", "A test"),
				"time_zone": "America/Costa_Rica", "venue": text("Teatro", "Theatre"), "city": "San José", "country": "CR",
				"url":  "https://example.org/prueba",
				"days": []any{map[string]any{"date": "2027-04-13", "kind": "conference", "title": text("Día uno", "Day one"), "start": "08:00", "end": "18:00"}}}},
		{op: "PUT /v1/events/{event}/rooms/{room}", path: fixed(ev + "/rooms/sala-estricta"), tok: org, status: 201,
			body: map[string]any{"name": text("Sala estricta", "Strict room"), "location": text("Piso 2", "Floor 2"),
				"capacity": 40, "streamed": true, "stream_url": "https://example.org/live"}},
		{op: "PUT /v1/events/{event}/tracks/{track}", path: fixed(ev + "/tracks/pista-estricta"), tok: org, status: 201,
			body: map[string]any{"name": text("Pista", "Track"), "color": "#1f6feb"}},
		{op: "PUT /v1/events/{event}/speakers/{speaker}", path: fixed(ev + "/speakers/ana-estricta"), tok: org, status: 201,
			body: map[string]any{"name": "Ana Estricta", "affiliation": text("Ministerio", "Ministry"), "bio": text("Bio", "Bio"), "country": "CR"}},
		{op: "POST /v1/events/{event}/sessions", path: fixed(ev + "/sessions?force=true"), tok: org, status: 201,
			body: map[string]any{"guid": "5b0e5b1e-6d0c-4d5e-9a43-0d7c1a2b3c4d", "title": text("Taller", "Workshop"),
				"abstract": text("Resumen", "Abstract"), "kind": "workshop", "language": "es", "interpretation": []any{"en"},
				"room": "sala-estricta", "track": "pista-estricta", "start": "2027-04-14T16:00:00-06:00", "end": "2027-04-14T16:45:00-06:00",
				"speakers": []any{"ana-estricta"}, "tags": []any{"datos"}}},
		{op: "PATCH /v1/events/{event}/sessions/{session}", path: session, tok: org, status: 200,
			body: map[string]any{"title": text("Taller nuevo", "New workshop"), "abstract": text("Otro", "Other"), "kind": "panel",
				"language": "en", "interpretation": []any{"es"}, "room": "sala-estricta", "track": "pista-estricta",
				"start": "2027-04-14T16:00:00-06:00", "end": "2027-04-14T16:50:00-06:00", "speakers": []any{"ana-estricta"},
				"tags": []any{"datos", "apertura"}, "reason": reason}},
		{op: "POST /v1/events/{event}/sessions/{session}/cancel", path: func() string { return session() + "/cancel" }, tok: org, status: 200,
			body: map[string]any{"reason": reason}},
		{op: "POST /v1/events/{event}/sessions/{session}/reinstate", path: func() string { return session() + "/reinstate" }, tok: org, status: 200,
			body: map[string]any{"reason": reason}},
		{op: "POST /v1/events/{event}/announcements", path: fixed(ev + "/announcements"), tok: org, status: 201,
			body: map[string]any{"title": text("Aviso", "Notice"), "body": text("Cambio de sala", "Room change"), "priority": "important", "session": 0}},
		{op: "POST /v1/events/{event}/attendees", path: fixed(ev + "/attendees"), tok: fixed(""), status: 201,
			body: map[string]any{"name": "Ana"}},
		{op: "PUT /v1/events/{event}/sessions/{session}/qa", path: func() string { return townHall() + "/qa" }, tok: mod, status: 200,
			body: map[string]any{"open": true, "moderated": true}},
		{op: "POST /v1/events/{event}/sessions/{session}/questions", path: func() string { return townHall() + "/questions" }, tok: att, status: 201,
			body: map[string]any{"text": "¿Cuándo se publican los datos de contratación?", "lang": "es", "anonymous": false, "name": "Ana"}},
		{op: "POST /v1/events/{event}/sessions/{session}/questions/{question}/actions",
			path: func() string { return fmt.Sprintf("%s/questions/%d/actions", townHall(), w.question) }, tok: mod, status: 200,
			body: map[string]any{"action": "edit", "text": "¿Cuándo publicará el gobierno los datos de contratación?"}},
		{op: "POST /v1/events/{event}/sessions/{session}/questions/{question}/actions",
			path: func() string { return fmt.Sprintf("%s/questions/%d/actions", townHall(), w.merged) }, tok: mod, status: 200,
			body: map[string]any{"action": "merge", "into": json.Number("0")}}, // into is filled in when the case runs
		{op: "POST /v1/events/{event}/sessions/{session}/moderation/undo", path: func() string { return townHall() + "/moderation/undo" }, tok: mod, status: 200,
			body: map[string]any{"undo_of": json.Number("0")}},
	}
}

// TestStrictBodies holds the rule for every body the server accepts:
// each operation of openapi.yaml that takes a JSON body gets, for every member name of a
// valid body (nested ones too), that name in other letter cases ("EN", "En", "Title"):
// each is 400 unknown_field naming the member, and the log does not move. encoding/json
// matched those names case-insensitively, so {"title":{"EN":"…"}} wrote the Spanish title.
// The same bodies then carry text that is not text (invalid UTF-8, a lone surrogate, NUL, an
// escape character) in every string, and are sent as null and as an array: all refused,
// nothing written. Last, each valid body is accepted.
func TestStrictBodies(t *testing.T) {
	t.Parallel()
	n := startNode(t, "", nil, "--demo", "--qa-asks-per-minute", "1000")
	w := &strictWorld{n: n, org: n.token("organizer"), mod: thMint(t, n.dataDir, demoEvent, "moderator", "strict"),
		orgNew: mint(t, n.dataDir, "prueba-estricta", "organizer"), townHall: thTownHall(t, n)}
	r := n.do(t, req{method: "POST", path: "/v1/events/" + demoEvent + "/attendees", body: map[string]any{}})
	var at api.AttendeeToken
	r.json(t, &at)
	w.att = at.Token

	cases := strictCases(w)
	covered := map[string]bool{}
	for _, c := range cases {
		covered[c.op] = true
	}
	doc, err := openapi3.NewLoader().LoadFromData(mobileapi.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.RequestBody == nil || op.RequestBody.Value.Content.Get("application/json") == nil {
				continue
			}
			if key := method + " " + path; !covered[key] {
				t.Errorf("%s takes a JSON body and has no case in strictCases: add one", key)
			}
		}
	}

	for i, c := range cases {
		// Bodies that refer to what earlier cases made.
		switch {
		case c.body["into"] != nil:
			c.body["into"] = w.question
		case c.body["undo_of"] != nil:
			c.body["undo_of"] = w.undoOf
		}
		t.Run(fmt.Sprintf("%02d %s", i, c.op), func(t *testing.T) {
			send := func(raw []byte) response {
				return n.do(t, req{method: strings.Fields(c.op)[0], path: c.path(), body: raw, header: strictAuth(c.tok())})
			}
			valid, err := json.Marshal(c.body)
			if err != nil {
				t.Fatal(err)
			}
			seq := projectionSeq(t, n)
			for _, v := range keyVariants(c.body, "") {
				raw, _ := json.Marshal(v.body)
				r := send(raw)
				if r.Status != 400 || r.problemCode(t) != "unknown_field" {
					t.Errorf("%s: %d %s, want 400 unknown_field", raw, r.Status, truncate(r.Body))
					continue
				}
				if !strictNames(t, r, v.field) {
					t.Errorf("%s: the problem does not name %q: %s", raw, v.field, r.Body)
				}
			}
			for _, bad := range []struct{ name, json string }{
				{"invalid UTF-8", "\"caf\xe9\""},
				{"lone surrogate", `"\ud800x"`},
				{"NUL", `"a\u0000b"`},
				{"escape character", `"a\u001b[31mb"`},
				{"C1 control", `"a\u0085b"`},
			} {
				for _, raw := range withEachString(c.body, bad.json) {
					if r := send(raw); r.Status != 400 {
						t.Errorf("%s: %s answered %d %s, want 400", bad.name, raw, r.Status, truncate(r.Body))
					}
				}
			}
			for _, raw := range []string{"null", "[]", `"x"`, "{} {}", `{"a":1,"a":1}`} {
				if r := send([]byte(raw)); r.Status != 400 {
					t.Errorf("body %s answered %d %s, want 400", raw, r.Status, truncate(r.Body))
				}
			}
			if got := projectionSeq(t, n); got != seq {
				t.Fatalf("refused requests moved the log from %d to %d", seq, got)
			}
			r := send(valid)
			if r.Status != c.status {
				t.Fatalf("the valid body %s answered %d %s, want %d", valid, r.Status, truncate(r.Body), c.status)
			}
			w.learn(t, c.op, r)
		})
	}
}

// learn keeps what a case created for the cases after it.
func (w *strictWorld) learn(t *testing.T, op string, r response) {
	switch {
	case strings.HasSuffix(op, "/sessions"):
		var s struct{ ID int64 }
		r.json(t, &s)
		w.created = s.ID
	case strings.HasSuffix(op, "/attendees"):
		// A question of another attendee, to merge into the first.
		var at api.AttendeeToken
		r.json(t, &at)
		q := w.n.do(t, req{method: "POST", path: fmt.Sprintf("/v1/events/%s/sessions/%d/questions", demoEvent, w.townHall),
			body: map[string]any{"text": "¿Qué datos de compras públicas se abrirán este año?"}, header: strictAuth(at.Token)})
		var qq api.Question
		q.json(t, &qq)
		w.merged = qq.ID
	case strings.HasSuffix(op, "/questions"):
		var q api.Question
		r.json(t, &q)
		w.question = q.ID
	case strings.HasSuffix(op, "/actions"):
		var m api.ModerationResult
		r.json(t, &m)
		w.undoOf = m.Action.Version
	}
}

func strictAuth(tok string) map[string]string {
	if tok == "" {
		return nil
	}
	return auth(tok)
}

func strictNames(t *testing.T, r response, field string) bool {
	var p struct {
		Errors []struct{ Field string } `json:"errors"`
	}
	r.json(t, &p)
	return slices.ContainsFunc(p.Errors, func(e struct{ Field string }) bool { return e.Field == field })
}

type keyVariant struct {
	body  any
	field string // the bent member as the problem names it
}

// keyVariants returns copies of v with one member name, at any depth, in another letter
// case: upper case and title case ("EN", "En"; "TITLE", "Title"), and camel case for
// snake_case names ("timeZone").
func keyVariants(v any, at string) []keyVariant {
	var out []keyVariant
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			field := k
			if at != "" {
				field = at + "." + k
			}
			for _, bent := range bends(k) {
				cp := copyMap(v)
				delete(cp, k)
				cp[bent] = child
				bentField := bent
				if at != "" {
					bentField = at + "." + bent
				}
				out = append(out, keyVariant{body: cp, field: bentField})
			}
			for _, inner := range keyVariants(child, field) {
				cp := copyMap(v)
				cp[k] = inner.body
				out = append(out, keyVariant{body: cp, field: inner.field})
			}
		}
	case []any:
		for i, child := range v {
			for _, inner := range keyVariants(child, at+"["+strconv.Itoa(i)+"]") {
				cp := slices.Clone(v)
				cp[i] = inner.body
				out = append(out, keyVariant{body: cp, field: inner.field})
			}
		}
	}
	return out
}

func bends(k string) []string {
	var out []string
	add := func(s string) {
		if s != k && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	add(strings.ToUpper(k))
	add(strings.ToUpper(k[:1]) + k[1:])
	if parts := strings.Split(k, "_"); len(parts) > 1 {
		camel := parts[0]
		for _, p := range parts[1:] {
			camel += strings.ToUpper(p[:1]) + p[1:]
		}
		add(camel)
	}
	return out
}

func copyMap(m map[string]any) map[string]any {
	cp := make(map[string]any, len(m))
	for k, v := range m {
		cp[k] = v
	}
	return cp
}

// withEachString returns the body encoded once per string value in it, that string
// replaced by the raw JSON bad.
func withEachString(body map[string]any, bad string) [][]byte {
	const mark = "\x01strict-mark\x01"
	var out [][]byte
	var walk func(v any, set func(any)) // set puts a value where v was
	walk = func(v any, set func(any)) {
		switch v := v.(type) {
		case string:
			set(mark)
			raw, _ := json.Marshal(body)
			out = append(out, bytes.Replace(raw, []byte(`"\u0001strict-mark\u0001"`), []byte(bad), 1))
			set(v)
		case map[string]any:
			for k, child := range v {
				walk(child, func(x any) { v[k] = x })
			}
		case []any:
			for i, child := range v {
				walk(child, func(x any) { v[i] = x })
			}
		}
	}
	walk(body, func(any) {})
	return out
}

// projectionSeq is the last log sequence the node applied (its metric): a refused request
// must not move it.
func projectionSeq(t *testing.T, n *node) uint64 {
	t.Helper()
	return uint64(metricValue(t, n, "cabildo_projection_sequence"))
}

// TestStrictFrames is the same rule for websocket frames: a member name in another case is
// not the member, so {"TYPE":"ping"} is a bad frame, not a ping.
func TestStrictFrames(t *testing.T) {
	t.Parallel()
	n := startNode(t, "", nil, "--demo")
	url := wsURL(n)
	c, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	valid := []map[string]any{
		{"type": "ping", "id": 1},
		{"type": "subscribe", "id": 2, "channel": "schedule:" + demoEvent, "since": 1, "lang": "en"},
		{"type": "unsubscribe", "id": 3, "channel": "schedule:" + demoEvent},
		{"type": "auth", "id": 4, "token": n.token("organizer")},
	}
	for _, f := range valid {
		for _, v := range keyVariants(f, "") {
			raw, _ := json.Marshal(v.body)
			if err := c.WriteMessage(websocket.TextMessage, raw); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, got, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("after %s: %v", raw, err)
			}
			var e struct{ Type, Code string }
			if err := json.Unmarshal(got, &e); err != nil || e.Type != "error" || e.Code != "bad_frame" {
				t.Errorf("%s answered %s, want an error frame bad_frame", raw, got)
			}
			if err := frames(t).Server(got); err != nil {
				t.Errorf("contract: %v", err)
			}
		}
	}
}

// TestTextThatIsNotText is the rule on text at the HTTP surface: text that shows
// nothing (zero-width spaces only) or carries control characters was stored with 200, and
// ids with a sign or a leading zero named the same session as the plain id. All are
// refused now, and the refusals change nothing.
func TestTextThatIsNotText(t *testing.T) {
	t.Parallel()
	n := startNode(t, "", nil, "--demo", "--qa-asks-per-minute", "1000")
	e := thEnvOf(t, n)
	sch := getSchedule(t, n)
	s := pickSession(t, sch, "breakout")
	org := auth(n.token("organizer"))
	sess := fmt.Sprintf("/v1/events/%s/sessions/%d", demoEvent, s.ID)
	asker := e.attendee(t, "")
	townHall := fmt.Sprintf("/v1/events/%s/sessions/%d", demoEvent, thTownHall(t, n))
	const zw = "\u200b\u200b\u200b\u200b\u200b\u200b\u200b\u200b\u200b\u200b\u200b\u200b"
	tests := []struct {
		name, method, path string
		header             map[string]string
		body               any
		status             int
		field              string
	}{
		{"title of zero-width spaces", "PATCH", sess, org, map[string]any{"title": map[string]any{"es": zw, "en": nil}}, 400, "title"},
		{"title with NUL", "PATCH", sess, org, map[string]any{"title": map[string]any{"es": "a\x00b"}}, 400, "title.es"},
		{"title with a line break", "PATCH", sess, org, map[string]any{"title": map[string]any{"es": "a\nb"}}, 400, "title.es"},
		{"abstract with escape", "PATCH", sess, org, map[string]any{"abstract": map[string]any{"en": "x\x1b[2Jy"}}, 400, "abstract.en"},
		{"abstract noncharacter", "PATCH", sess, org, map[string]any{"abstract": map[string]any{"en": "x\uffffy"}}, 400, "abstract.en"},
		{"tag of zero-width", "PATCH", sess, org, map[string]any{"tags": []string{"\u200b"}}, 400, "tags[0]"},
		{"question of zero-width spaces", "POST", townHall + "/questions", auth(asker.Token), map[string]any{"text": zw}, 400, "text"},
		{"question padded to length", "POST", townHall + "/questions", auth(asker.Token), map[string]any{"text": "a" + zw}, 400, "text"},
		{"question with a bell", "POST", townHall + "/questions", auth(asker.Token), map[string]any{"text": "¿Por qué?\a\a\a"}, 400, "text"},
		{"id with a plus", "PATCH", fmt.Sprintf("/v1/events/%s/sessions/+%d", demoEvent, s.ID), org, map[string]any{"room": s.Room}, 404, ""},
		{"id with a leading zero", "GET", fmt.Sprintf("/v1/events/%s/sessions/0%d", demoEvent, s.ID), nil, nil, 404, ""},
		{"question id with a leading zero", "PUT", townHall + "/questions/01/vote", auth(asker.Token), nil, 404, ""},
		{"since with a leading zero", "GET", fmt.Sprintf("/v1/events/%s/changes?since=0%d", demoEvent, sch.Version), nil, nil, 400, "since"},
		{"patch of null", "PATCH", sess, org, "null", 400, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seq := projectionSeq(t, n)
			r := n.do(t, req{method: tc.method, path: tc.path, body: tc.body, header: tc.header})
			if r.Status != tc.status {
				t.Fatalf("%d %s, want %d", r.Status, truncate(r.Body), tc.status)
			}
			if tc.field != "" && !strictNames(t, r, tc.field) {
				t.Fatalf("the problem does not name %s: %s", tc.field, r.Body)
			}
			if got := projectionSeq(t, n); got != seq {
				t.Fatalf("a refused request moved the log from %d to %d", seq, got)
			}
		})
	}
	// Inside a text, invisible characters people use stay: a zero-width joiner in an emoji.
	family := "Familias 👩\u200d👩\u200d👧"
	r := n.do(t, req{method: "PATCH", path: sess, header: org, body: map[string]any{"title": map[string]any{"es": family}}})
	var got struct{ Title struct{ ES string } }
	if r.json(t, &got); r.Status != 200 || got.Title.ES != family {
		t.Fatalf("a title with a joined emoji: %d, stored %q", r.Status, got.Title.ES)
	}
}

// TestTextMergePatch: a bilingual text in a merge patch changes only the languages it
// names: a string sets one, null removes one, and the other language stays.
func TestTextMergePatch(t *testing.T) {
	t.Parallel()
	n := startNode(t, "", nil, "--demo")
	s := pickSession(t, getSchedule(t, n), "breakout")
	org := auth(n.token("organizer"))
	path := fmt.Sprintf("/v1/events/%s/sessions/%d", demoEvent, s.ID)
	type texts struct{ Title, Abstract struct{ ES, EN string } }
	patch := func(body map[string]any) texts {
		t.Helper()
		r := n.do(t, req{method: "PATCH", path: path, header: org, body: body})
		if r.Status != 200 {
			t.Fatalf("PATCH %v: %d %s", body, r.Status, r.Body)
		}
		var got texts
		r.json(t, &got)
		return got
	}
	both := patch(map[string]any{"title": map[string]any{"es": "Título", "en": "Title"},
		"abstract": map[string]any{"es": "Resumen", "en": "Abstract"}})
	if both.Title.ES != "Título" || both.Title.EN != "Title" || both.Abstract.ES != "Resumen" || both.Abstract.EN != "Abstract" {
		t.Fatalf("both languages set: %+v", both)
	}
	got := patch(map[string]any{"title": map[string]any{"en": "New title"}, "abstract": map[string]any{"es": nil}})
	if got.Title.ES != "Título" || got.Title.EN != "New title" || got.Abstract.ES != "" || got.Abstract.EN != "Abstract" {
		t.Fatalf("one language set and one removed: %+v", got)
	}
}
