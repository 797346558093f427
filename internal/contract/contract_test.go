package contract

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/pkg/api"
)

const base = "http://127.0.0.1:8080"

const session = `{
	"id": 1,
	"guid": "3f1c2a9e-8b7d-4c1e-9a2b-5d6e7f8a9b0c",
	"title": "Datos abiertos para la rendición de cuentas",
	"kind": "breakout",
	"status": "scheduled",
	"language": "es",
	"interpretation": ["en"],
	"room": "sala-2",
	"day": "2025-10-02",
	"start": "2025-10-02T11:00:00-06:00",
	"end": "2025-10-02T12:30:00-06:00",
	"duration_minutes": 90,
	"speakers": ["ana-rojas"],
	"streamed": false,
	"version": 4790,
	"updated_at": "2025-10-02T14:02:11Z"
}`

const adminSession = `{
	"id": 1,
	"guid": "3f1c2a9e-8b7d-4c1e-9a2b-5d6e7f8a9b0c",
	"title": {"es": "Datos abiertos"},
	"kind": "breakout",
	"status": "cancelled",
	"cancellation": {"code": "speaker_unavailable", "text": {"en": "The speaker could not travel."}},
	"language": "es",
	"room": "sala-2",
	"start": "2025-10-02T11:00:00-06:00",
	"end": "2025-10-02T12:30:00-06:00",
	"day": "2025-10-02",
	"version": 4812
}`

func problem(status int, code string) string {
	return `{"type": "about:blank", "title": "` + http.StatusText(status) + `", "status": ` +
		strconv.Itoa(status) + `, "code": "` + code + `", "detail": "it went wrong", "instance": "/v1/events/x"}`
}

func publicHeaders() http.Header {
	return http.Header{
		"Content-Type":     {"application/json; charset=utf-8"},
		"Etag":             {`"4790-es"`},
		"Last-Modified":    {"Thu, 02 Oct 2025 14:02:11 GMT"},
		"Cache-Control":    {"public, no-cache"},
		"Vary":             {"Accept-Language"},
		"Content-Language": {"es"},
	}
}

func problemHeaders(extra ...string) http.Header {
	h := http.Header{"Content-Type": {"application/problem+json"}}
	for i := 0; i+1 < len(extra); i += 2 {
		h.Set(extra[i], extra[i+1])
	}
	return h
}

func with(h http.Header, key, value string) http.Header {
	h = h.Clone()
	if value == "" {
		h.Del(key)
	} else {
		h.Set(key, value)
	}
	return h
}

func mustLoad(t *testing.T) *Validator {
	t.Helper()
	v, err := Load()
	if err != nil {
		t.Fatalf("Load() = %v", err)
	}
	return v
}

func TestLoad(t *testing.T) {
	v := mustLoad(t)
	doc := v.Document()
	if got, want := doc.OpenAPI, "3.0.3"; got != want {
		t.Errorf("openapi = %q, want %q", got, want)
	}
	for _, path := range []string{"/v1/events", "/v1/events/{event}/schedule", "/v1/events/{event}/changes",
		"/v1/events/{event}/sessions/{session}", "/livez", "/readyz", "/metrics", "/openapi.yaml"} {
		if doc.Paths.Value(path) == nil {
			t.Errorf("path %s is missing", path)
		}
	}
}

// TestEnumsMatchDomain keeps the contract's enums and the domain's constants in step: a code
// the server can send but the contract does not list would fail every response carrying it.
func TestEnumsMatchDomain(t *testing.T) {
	doc := mustLoad(t).Document()
	enum := func(name string) []string {
		s := doc.Components.Schemas[name]
		if s == nil {
			t.Fatalf("schema %s is missing", name)
		}
		var out []string
		for _, e := range s.Value.Enum {
			out = append(out, e.(string))
		}
		slices.Sort(out)
		return out
	}
	strs := func(xs ...string) []string {
		out := slices.Clone(xs)
		slices.Sort(out)
		return out
	}
	var kinds, reasons []string
	for _, k := range cabildo.SessionKinds {
		kinds = append(kinds, string(k))
	}
	for _, r := range cabildo.ReasonCodes {
		reasons = append(reasons, string(r))
	}
	codes := []cabildo.Code{cabildo.CodeInvalidRequest, cabildo.CodeUnknownField, cabildo.CodeValidation,
		cabildo.CodeNotFound, cabildo.CodeAlreadyExists, cabildo.CodeVersionConflict,
		cabildo.CodeIdempotencyKeyReused, cabildo.CodeInvalidTransition, cabildo.CodeQAClosed,
		cabildo.CodeUnauthorized, cabildo.CodeForbidden,
		cabildo.CodePayloadTooLarge, cabildo.CodeHeadersTooLarge, cabildo.CodeRequestTimeout,
		cabildo.CodeUnsupportedMedia, cabildo.CodeMethodNotAllowed,
		cabildo.CodeVersionTooOld, cabildo.CodeVersionUnknown, cabildo.CodeRateLimited,
		cabildo.CodeUnavailable, cabildo.CodeTimeout, cabildo.CodeInternal}
	var codeStrs []string
	for _, c := range codes {
		codeStrs = append(codeStrs, string(c))
	}
	changes := []cabildo.ChangeType{cabildo.ChangeSessionAdded, cabildo.ChangeSessionCancelled,
		cabildo.ChangeSessionReinstated, cabildo.ChangeSessionRemoved, cabildo.ChangeSessionMoved,
		cabildo.ChangeSessionDelayed, cabildo.ChangeSessionRescheduled,
		cabildo.ChangeSessionSpeakersChanged, cabildo.ChangeSessionUpdated, cabildo.ChangeRoomUpdated,
		cabildo.ChangeTrackUpdated, cabildo.ChangeSpeakerUpdated, cabildo.ChangeEventUpdated}
	var changeStrs []string
	for _, c := range changes {
		changeStrs = append(changeStrs, string(c))
	}
	var actions []string
	for _, a := range cabildo.Actions {
		actions = append(actions, string(a))
	}
	states := []cabildo.QuestionState{cabildo.QuestionPending, cabildo.QuestionApproved, cabildo.QuestionRejected,
		cabildo.QuestionPinned, cabildo.QuestionAnswered, cabildo.QuestionArchived, cabildo.QuestionMerged}
	var stateStrs []string
	for _, s := range states {
		stateStrs = append(stateStrs, string(s))
	}
	tests := []struct {
		schema string
		want   []string
	}{
		{"SessionKind", strs(kinds...)},
		{"ReasonCode", strs(reasons...)},
		{"ErrorCode", strs(codeStrs...)},
		{"ChangeType", strs(changeStrs...)},
		{"SessionStatus", strs(string(cabildo.StatusScheduled), string(cabildo.StatusCancelled))},
		{"DayKind", strs(string(cabildo.DayUnconference), string(cabildo.DayConference), string(cabildo.DayWorkshops))},
		{"Lang", strs(string(cabildo.ES), string(cabildo.EN))},
		{"QuestionState", strs(stateStrs...)},
		{"ModerationAction", strs(actions...)},
		{"ModActionKind", strs(append(actions, string(cabildo.ActionUndo))...)},
		{"FlagKind", strs(cabildo.FlagWordList, cabildo.FlagNearDuplicate)},
	}
	for _, tt := range tests {
		t.Run(tt.schema, func(t *testing.T) {
			if got := enum(tt.schema); !slices.Equal(got, tt.want) {
				t.Errorf("enum = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	v := mustLoad(t)
	tests := []struct {
		name    string
		method  string
		path    string
		status  int
		header  http.Header
		body    string
		wantErr string // "" means valid; otherwise a fragment of the error
	}{
		{name: "public session", method: "GET", path: "/v1/events/x/sessions/1", status: 200,
			header: publicHeaders(), body: session},
		{name: "session by guid with lang", method: "GET",
			path:   "/v1/events/abierta-2025/sessions/3f1c2a9e-8b7d-4c1e-9a2b-5d6e7f8a9b0c?lang=es",
			status: 200, header: publicHeaders(), body: session},
		{name: "extra property", method: "GET", path: "/v1/events/x/sessions/1", status: 200,
			header: publicHeaders(), body: strings.Replace(session, `"id": 1,`, `"id": 1, "color": "red",`, 1),
			wantErr: `property "color" is unsupported`},
		{name: "missing required property", method: "GET", path: "/v1/events/x/sessions/1", status: 200,
			header: publicHeaders(), body: strings.Replace(session, `"streamed": false,`, ``, 1),
			wantErr: `property "streamed" is missing`},
		{name: "bad date-time", method: "GET", path: "/v1/events/x/sessions/1", status: 200,
			header: publicHeaders(), body: strings.Replace(session, `"2025-10-02T11:00:00-06:00"`, `"2025-10-02 11:00"`, 1),
			wantErr: "/start"},
		{name: "bad uuid", method: "GET", path: "/v1/events/x/sessions/1", status: 200,
			header: publicHeaders(), body: strings.Replace(session, `"3f1c2a9e-8b7d-4c1e-9a2b-5d6e7f8a9b0c"`, `"not-a-guid"`, 1),
			wantErr: "/guid"},
		{name: "missing ETag", method: "GET", path: "/v1/events/x/sessions/1", status: 200,
			header: with(publicHeaders(), "ETag", ""), body: session, wantErr: `"ETag" missing`},
		{name: "bad Content-Language", method: "GET", path: "/v1/events/x/sessions/1", status: 200,
			header: with(publicHeaders(), "Content-Language", "fr"), body: session, wantErr: "Content-Language"},
		{name: "not modified", method: "GET", path: "/v1/events/x/sessions/1", status: 304,
			header: http.Header{"Etag": {`"4790-es"`}, "Cache-Control": {"public, no-cache"}, "Vary": {"Accept-Language"}}},
		{name: "not modified with a body", method: "GET", path: "/v1/events/x/sessions/1", status: 304,
			header: http.Header{"Etag": {`"4790-es"`}, "Cache-Control": {"public, no-cache"}, "Vary": {"Accept-Language"}},
			body:   session, wantErr: "without a body"},
		{name: "not modified without ETag", method: "GET", path: "/v1/events/x/sessions/1", status: 304,
			header: http.Header{"Cache-Control": {"public, no-cache"}, "Vary": {"Accept-Language"}}, wantErr: `"ETag" missing`},
		{name: "not found", method: "GET", path: "/v1/events/x/sessions/1", status: 404,
			header: problemHeaders(), body: problem(404, "not_found")},
		{name: "problem with unknown code", method: "GET", path: "/v1/events/x/sessions/1", status: 404,
			header: problemHeaders(), body: problem(404, "no_such_thing"), wantErr: "/code"},
		{name: "problem with extra property", method: "GET", path: "/v1/events/x/sessions/1", status: 404,
			header: problemHeaders(), body: strings.Replace(problem(404, "not_found"), `{`, `{"stack": "main.go:1",`, 1),
			wantErr: `property "stack" is unsupported`},
		{name: "problem as plain JSON", method: "GET", path: "/v1/events/x/sessions/1", status: 404,
			header: http.Header{"Content-Type": {"application/json"}}, body: problem(404, "not_found"),
			wantErr: "Content-Type"},
		{name: "problem status differs", method: "GET", path: "/v1/events/x/sessions/1", status: 404,
			header: problemHeaders(), body: problem(400, "not_found"), wantErr: "differs"},
		{name: "undocumented status", method: "GET", path: "/v1/events/x/sessions/1", status: 409,
			header: problemHeaders(), body: problem(409, "version_conflict"), wantErr: "not documented"},
		{name: "undocumented success", method: "GET", path: "/v1/events/x/sessions/1", status: 201,
			header: publicHeaders(), body: session, wantErr: "not documented"},
		{name: "internal error falls back to default", method: "GET", path: "/v1/events/x/sessions/1", status: 500,
			header: problemHeaders(), body: problem(500, "internal")},
		{name: "rate limited", method: "GET", path: "/v1/events/x/sessions/1", status: 429,
			header: problemHeaders("Retry-After", "2"), body: problem(429, "rate_limited")},
		{name: "rate limited without Retry-After", method: "GET", path: "/v1/events/x/sessions/1", status: 429,
			header: problemHeaders(), body: problem(429, "rate_limited"), wantErr: `"Retry-After" missing`},
		{name: "gone", method: "GET", path: "/v1/events/x/changes?since=3", status: 410,
			header: problemHeaders(), body: problem(410, "version_too_old")},
		{name: "session created", method: "POST", path: "/v1/events/x/sessions", status: 201,
			header: http.Header{"Content-Type": {"application/json"}, "Location": {"/v1/events/x/sessions/1"}, "Etag": {`"4812"`}, "Cabildo-Write-Version": {"4812"}},
			body:   adminSession},
		{name: "session created without Location", method: "POST", path: "/v1/events/x/sessions", status: 201,
			header: http.Header{"Content-Type": {"application/json"}, "Etag": {`"4812"`}, "Cabildo-Write-Version": {"4812"}},
			body:   adminSession, wantErr: `"Location" missing`},
		{name: "session created without its write version", method: "POST", path: "/v1/events/x/sessions", status: 201,
			header: http.Header{"Content-Type": {"application/json"}, "Location": {"/v1/events/x/sessions/1"}, "Etag": {`"4812"`}},
			body:   adminSession, wantErr: `"Cabildo-Write-Version" missing`},
		{name: "localized text in an admin response", method: "POST", path: "/v1/events/x/sessions", status: 201,
			header: http.Header{"Content-Type": {"application/json"}, "Location": {"/v1/events/x/sessions/1"}, "Etag": {`"4812"`}, "Cabildo-Write-Version": {"4812"}},
			body:   strings.Replace(adminSession, `{"es": "Datos abiertos"}`, `"Datos abiertos"`, 1), wantErr: "/title"},
		{name: "session deleted", method: "DELETE", path: "/v1/events/x/sessions/1", status: 204,
			header: http.Header{"Cabildo-Write-Version": {"4813"}}},
		{name: "write refused", method: "PATCH", path: "/v1/events/x/sessions/1", status: 412,
			header: problemHeaders(), body: problem(412, "version_conflict")},
		{name: "write unavailable", method: "PUT", path: "/v1/events/x/rooms/sala-2", status: 503,
			header: problemHeaders("Retry-After", "1"), body: problem(503, "unavailable")},
		{name: "no 304 for writes", method: "PUT", path: "/v1/events/x/rooms/sala-2", status: 304,
			header: http.Header{"Etag": {`"1"`}}, wantErr: "not documented"},
		{name: "unknown path answered 404", method: "GET", path: "/v2/nothing", status: 404,
			header: problemHeaders(), body: problem(404, "not_found")},
		{name: "unknown path answered 200", method: "GET", path: "/v2/nothing", status: 200,
			header: publicHeaders(), body: `{}`, wantErr: "no such operation"},
		{name: "unknown method answered 404", method: "DELETE", path: "/v1/events/x/schedule", status: 404,
			header: problemHeaders(), body: problem(404, "not_found"), wantErr: "must be a 405"},
		{name: "method not allowed", method: "DELETE", path: "/v1/events/x/schedule", status: 405,
			header: problemHeaders(), body: problem(405, "method_not_allowed")},
		{name: "readiness", method: "GET", path: "/readyz", status: 503,
			header: http.Header{"Content-Type": {"application/json"}},
			body:   `{"status": "not_ready", "checks": {"log": "down", "projection": "catching_up", "cache": "memory"}}`},
		{name: "liveness", method: "GET", path: "/livez", status: 200,
			header: http.Header{"Content-Type": {"application/json"}}, body: `{"status": "ok"}`},
		{name: "metrics", method: "GET", path: "/metrics", status: 200,
			header: http.Header{"Content-Type": {"text/plain; version=0.0.4; charset=utf-8"}}, body: "up 1\n"},
		{name: "the document itself", method: "GET", path: "/openapi.yaml", status: 200,
			header: http.Header{"Content-Type": {"application/yaml"}}, body: "openapi: 3.0.3\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // the Validator is shared; -race checks it can be
			req, err := http.NewRequest(tt.method, base+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = v.Check(req, tt.status, tt.header, []byte(tt.body))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Check() = %v, want nil", err)
			case tt.wantErr != "" && err == nil:
				t.Errorf("Check() = nil, want an error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("Check() = %v, want an error containing %q", err, tt.wantErr)
			case err != nil && !strings.Contains(err.Error(), tt.method+" "):
				t.Errorf("Check() = %v, want it to name the method and path", err)
			}
		})
	}
}

func TestCheckRequest(t *testing.T) {
	v := mustLoad(t)
	const input = `{"title": {"es": "Datos abiertos"}, "kind": "breakout", "language": "es", "room": "sala-2",
		"start": "2025-10-02T11:00:00-06:00", "end": "2025-10-02T12:30:00-06:00"}`
	jsonCT := http.Header{"Content-Type": {"application/json"}}
	tests := []struct {
		name    string
		method  string
		path    string
		header  http.Header
		body    string
		wantErr string
	}{
		{name: "create session", method: "POST", path: "/v1/events/abierta-2025/sessions?force=true",
			header: jsonCT, body: input},
		{name: "unknown field", method: "POST", path: "/v1/events/abierta-2025/sessions", header: jsonCT,
			body: strings.Replace(input, `{`, `{"colour": "red",`, 1), wantErr: `property "colour" is unsupported`},
		{name: "missing title", method: "POST", path: "/v1/events/abierta-2025/sessions", header: jsonCT,
			body: strings.Replace(input, `"title": {"es": "Datos abiertos"},`, ``, 1), wantErr: `"title" is missing`},
		{name: "empty text", method: "POST", path: "/v1/events/abierta-2025/sessions", header: jsonCT,
			body: strings.Replace(input, `{"es": "Datos abiertos"}`, `{}`, 1), wantErr: "/title"},
		{name: "bad force", method: "POST", path: "/v1/events/abierta-2025/sessions?force=maybe",
			header: jsonCT, body: input, wantErr: "force"},
		{name: "move as merge patch", method: "PATCH", path: "/v1/events/abierta-2025/sessions/12",
			header: http.Header{"Content-Type": {"application/merge-patch+json"}, "If-Match": {`"4812"`}},
			body:   `{"room": "sala-3", "track": null, "reason": {"code": "capacity"}}`},
		{name: "patch cannot null the title", method: "PATCH", path: "/v1/events/abierta-2025/sessions/12",
			header: jsonCT, body: `{"title": null}`, wantErr: "/title"},
		{name: "bad session key", method: "PATCH", path: "/v1/events/abierta-2025/sessions/twelve",
			header: jsonCT, body: `{"room": "sala-3"}`, wantErr: "session"},
		{name: "cancel without reason", method: "POST", path: "/v1/events/abierta-2025/sessions/12/cancel",
			header: jsonCT, body: `{}`, wantErr: `"reason" is missing`},
		{name: "reinstate without body", method: "POST", path: "/v1/events/abierta-2025/sessions/12/reinstate"},
		{name: "put event", method: "PUT", path: "/v1/events/abierta-2025", header: jsonCT,
			body: `{"name": {"es": "Abierta"}, "time_zone": "America/Costa_Rica",
				"days": [{"date": "2025-10-01", "kind": "conference", "start": "08:30", "end": "18:00"}]}`},
		{name: "put event with a bad clock", method: "PUT", path: "/v1/events/abierta-2025", header: jsonCT,
			body: `{"name": {"es": "Abierta"}, "time_zone": "America/Costa_Rica",
				"days": [{"date": "2025-10-01", "kind": "conference", "start": "8:30", "end": "18:00"}]}`,
			wantErr: "/days/0/start"},
		{name: "changes", method: "GET", path: "/v1/events/abierta-2025/changes?since=0&lang=en"},
		{name: "changes without since", method: "GET", path: "/v1/events/abierta-2025/changes", wantErr: "since"},
		{name: "unsupported lang", method: "GET", path: "/v1/events?lang=fr", wantErr: "lang"},
		{name: "bad filter", method: "GET", path: "/v1/events/abierta-2025/sessions?day=tomorrow", wantErr: "day"},
		{name: "bad slug", method: "GET", path: "/v1/events/Abierta_2025/schedule", wantErr: "event"},
		{name: "no such operation", method: "GET", path: "/v1/events/abierta-2025/tracks/datos", wantErr: "no such operation"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequest(tt.method, base+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, vs := range tt.header {
				req.Header[k] = vs
			}
			err = v.CheckRequest(req, []byte(tt.body))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("CheckRequest() = %v, want nil", err)
			case tt.wantErr != "" && err == nil:
				t.Errorf("CheckRequest() = nil, want an error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("CheckRequest() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

// The town hall's bodies, built from pkg/api's wire types so that the schemas are proven
// to match the structs the server encodes.

var askedAt = time.Date(2025, 10, 2, 17, 41, 9, 0, time.UTC)

func townHallQuestion(id int64, state string, votes int) api.Question {
	q := api.Question{ID: id, Session: 12, Text: "¿Cómo se publicarán los datos del presupuesto?", Lang: "es",
		State: state, Votes: votes, AskedAt: askedAt}
	if state == "answered" {
		t := askedAt.Add(20 * time.Minute)
		q.AnsweredAt = &t
	}
	return q
}

func townHallModQuestion(id int64, state string) api.ModQuestion {
	q := api.ModQuestion{Question: townHallQuestion(id, state, 3), Attendee: "9b37e4ed-f494-478c-b841-454c7cf79933",
		Flags: []api.Flag{}, Merged: []int64{}}
	if state != "pending" {
		t, w := askedAt.Add(48*time.Second), 48.2
		q.DecidedAt, q.DecidedBy, q.WaitSeconds = &t, "moderator:lucia", &w
	}
	return q
}

func townHallAction() api.ModAction {
	return api.ModAction{Version: 5188, Action: "pin", Moderator: "moderator:lucia", At: askedAt.Add(time.Minute), Question: 5120,
		Effects: []api.Effect{{Question: 5102, From: "pinned", To: "approved"}, {Question: 5120, From: "approved", To: "pinned"}}}
}

func townHallQueue() api.QueueStats {
	t := askedAt
	return api.QueueStats{Pending: 1, OldestPendingAt: &t, Decided: 4, MedianWaitSeconds: 30.5, P90WaitSeconds: 61}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCheckTownHall(t *testing.T) {
	v := mustLoad(t)
	jsonCT := http.Header{"Content-Type": {"application/json"}}
	private := http.Header{"Content-Type": {"application/json"}, "Cache-Control": {"private, no-store"}}
	const sess = "/v1/events/abierta-2025/sessions/12"

	edited := townHallQuestion(5133, "approved", 12)
	edited.Edited, edited.Name = true, "María"
	list := api.QuestionList{Event: "abierta-2025", Session: 12, Version: 5188, Open: true, Moderated: true,
		Questions: []api.Question{townHallQuestion(5120, "pinned", 37), edited, townHallQuestion(5101, "answered", 50)}}
	leaky := list
	leaky.Questions = append(slices.Clone(list.Questions), townHallQuestion(5190, "pending", 0))
	empty := api.QuestionList{Event: "abierta-2025", Session: 12, Moderated: true, Questions: []api.Question{}}
	nullList := `{"event":"abierta-2025","session":12,"version":0,"open":false,"moderated":true,"questions":null}`

	merged := townHallQuestion(5190, "merged", 0)
	merged.MergedInto = 5120
	mine := api.MyQuestions{Event: "abierta-2025", Session: 12, Version: 5190,
		Questions: []api.Question{townHallQuestion(5180, "pending", 0), townHallQuestion(5181, "rejected", 0), merged},
		Voted:     []int64{5120}}

	flagged := townHallModQuestion(5190, "pending")
	flagged.Flags = []api.Flag{{Kind: "near_duplicate", Similar: 5120, Similarity: 0.82}, {Kind: "word_list", Words: []string{"tonto"}}}
	editedMod := townHallModQuestion(5133, "approved")
	editedMod.Edited, editedMod.Original = true, "¿Como se publicaran los datos?"
	target := townHallModQuestion(5120, "pinned")
	target.Merged = []int64{5104}
	moderation := api.Moderation{Event: "abierta-2025", Session: 12, Version: 5190, Open: true, Moderated: true,
		ServerTime: askedAt.Add(time.Hour), Queue: townHallQueue(),
		Questions: []api.ModQuestion{target, editedMod, flagged}, Actions: []api.ModAction{townHallAction()}}
	undone := townHallAction()
	undone.UndoneBy = 5200
	undo := api.ModAction{Version: 5200, Action: "undo", Moderator: "moderator:lucia", At: askedAt.Add(2 * time.Minute), Question: 5120,
		UndoOf: 5188, Effects: []api.Effect{{Question: 5120, From: "pinned", To: "approved"}, {Question: 5102, From: "approved", To: "pinned"}}}
	edit := api.ModAction{Version: 5201, Action: "edit", Moderator: "moderator:lucia", At: askedAt.Add(3 * time.Minute), Question: 5133,
		Effects: []api.Effect{{Question: 5133, From: "approved", To: "approved", FromText: "¿Como se publicaran los datos?", ToText: edited.Text}}}
	result := api.ModerationResult{Action: townHallAction(), Questions: []api.ModQuestion{townHallModQuestion(5102, "approved"), target}}
	export := api.QuestionExport{Event: "abierta-2025", Session: 12, Title: "Datos abiertos", Version: 5201,
		ExportedAt: askedAt.Add(2 * time.Hour), Open: false, Moderated: true, Queue: api.QueueStats{},
		Questions: []api.ModQuestion{target, editedMod, flagged}, Actions: []api.ModAction{undone, undo, edit}}
	token := api.AttendeeToken{Attendee: "9b37e4ed-f494-478c-b841-454c7cf79933", Name: "María", Token: "eyJhbGciOiJIUzI1NiJ9.e30.c2ln", ExpiresAt: askedAt.Add(7 * 24 * time.Hour)}

	publicQ := http.Header{"Content-Type": {"application/json"}, "Etag": {`"5188-q"`}, "Cache-Control": {"public, max-age=0, must-revalidate"}}
	asked := http.Header{"Content-Type": {"application/json"}, "Location": {sess + "/questions/mine#5180"}, "Cabildo-Write-Version": {"5180"}}
	written := with(jsonCT, "Cabildo-Write-Version", "5191")
	csvHeader := http.Header{"Content-Type": {"text/csv; charset=utf-8"}, "Cache-Control": {"private, no-store"},
		"Content-Disposition": {`attachment; filename="abierta-2025-session-12-questions.csv"`}}
	jsonExport := with(csvHeader, "Content-Type", "application/json")
	tests := []struct {
		name, method, path string
		status             int
		header             http.Header
		body               string
		wantErr            string
	}{
		{name: "attendee token", method: "POST", path: "/v1/events/abierta-2025/attendees", status: 201, header: jsonCT, body: mustJSON(t, token)},
		{name: "anonymous token", method: "POST", path: "/v1/events/abierta-2025/attendees", status: 201, header: jsonCT,
			body: mustJSON(t, api.AttendeeToken{Attendee: "a", Token: "t", ExpiresAt: askedAt})},
		{name: "minting limited", method: "POST", path: "/v1/events/abierta-2025/attendees", status: 429,
			header: problemHeaders("Retry-After", "20"), body: problem(429, "rate_limited")},
		{name: "public questions", method: "GET", path: sess + "/questions", status: 200, header: publicQ, body: mustJSON(t, list)},
		{name: "no questions yet", method: "GET", path: sess + "/questions", status: 200, header: publicQ, body: mustJSON(t, empty)},
		{name: "questions as null", method: "GET", path: sess + "/questions", status: 200, header: publicQ, body: nullList, wantErr: "/questions"},
		{name: "pending question in public", method: "GET", path: sess + "/questions", status: 200, header: publicQ,
			body: mustJSON(t, leaky), wantErr: "/questions/3"},
		{name: "attendee id in public", method: "GET", path: sess + "/questions", status: 200, header: publicQ,
			body: strings.Replace(mustJSON(t, list), `"votes":37,`, `"votes":37,"attendee":"9b37e4ed-f494-478c-b841-454c7cf79933",`, 1), wantErr: `"attendee" is unsupported`},
		{name: "questions without ETag", method: "GET", path: sess + "/questions", status: 200,
			header: with(publicQ, "ETag", ""), body: mustJSON(t, list), wantErr: `"ETag" missing`},
		{name: "questions not modified", method: "GET", path: sess + "/questions", status: 304,
			header: http.Header{"Etag": {`"5188-q"`}, "Cache-Control": {"public, max-age=0, must-revalidate"}}},
		{name: "asked", method: "POST", path: sess + "/questions", status: 201, header: asked, body: mustJSON(t, townHallQuestion(5180, "pending", 0))},
		{name: "asked without Location", method: "POST", path: sess + "/questions", status: 201, header: with(jsonCT, "Cabildo-Write-Version", "5180"),
			body: mustJSON(t, townHallQuestion(5180, "pending", 0)), wantErr: `"Location" missing`},
		{name: "asking closed", method: "POST", path: sess + "/questions", status: 409, header: problemHeaders(), body: problem(409, "qa_closed")},
		{name: "asking by session guid", method: "POST", path: "/v1/events/abierta-2025/sessions/3f1c2a9e-8b7d-4c1e-9a2b-5d6e7f8a9b0c/questions",
			status: 422, header: problemHeaders(), body: problem(422, "idempotency_key_reused")},
		{name: "asking too often", method: "POST", path: sess + "/questions", status: 429, header: problemHeaders("Retry-After", "12"), body: problem(429, "rate_limited")},
		{name: "mine", method: "GET", path: sess + "/questions/mine", status: 200, header: private, body: mustJSON(t, mine)},
		{name: "mine cacheable", method: "GET", path: sess + "/questions/mine", status: 200,
			header: with(private, "Cache-Control", "public"), body: mustJSON(t, mine), wantErr: "Cache-Control"},
		{name: "mine with an organizer token", method: "GET", path: sess + "/questions/mine", status: 403, header: problemHeaders(), body: problem(403, "forbidden")},
		{name: "vote without its write version", method: "PUT", path: sess + "/questions/5190/vote", status: 200, header: jsonCT,
			body: mustJSON(t, api.Vote{Question: 5120, Votes: 38, Voted: true, Version: 5191}), wantErr: `"Cabildo-Write-Version" missing`},
		{name: "vote", method: "PUT", path: sess + "/questions/5190/vote", status: 200, header: written,
			body: mustJSON(t, api.Vote{Question: 5120, Votes: 38, Voted: true, Version: 5191})},
		{name: "withdraw", method: "DELETE", path: sess + "/questions/5120/vote", status: 200, header: written,
			body: mustJSON(t, api.Vote{Question: 5120, Votes: 37, Voted: false, Version: 5192})},
		{name: "vote for an answered question", method: "PUT", path: sess + "/questions/5101/vote", status: 409,
			header: problemHeaders(), body: problem(409, "invalid_transition")},
		{name: "votes unavailable", method: "PUT", path: sess + "/questions/5101/vote", status: 503,
			header: problemHeaders("Retry-After", "1"), body: problem(503, "unavailable")},
		{name: "moderation", method: "GET", path: sess + "/moderation", status: 200, header: private, body: mustJSON(t, moderation)},
		{name: "moderation of nothing", method: "GET", path: sess + "/moderation", status: 200, header: private,
			body: mustJSON(t, api.Moderation{Event: "x1", Session: 12, Moderated: true, ServerTime: askedAt, Questions: []api.ModQuestion{}, Actions: []api.ModAction{}})},
		{name: "moderation with null flags", method: "GET", path: sess + "/moderation", status: 200, header: private,
			body: strings.Replace(mustJSON(t, moderation), `"flags":[]`, `"flags":null`, 1), wantErr: "/flags"},
		{name: "moderation with a bad flag", method: "GET", path: sess + "/moderation", status: 200, header: private,
			body: strings.Replace(mustJSON(t, moderation), `"near_duplicate"`, `"rude"`, 1), wantErr: "/kind"},
		{name: "action", method: "POST", path: sess + "/questions/5120/actions", status: 200, header: written, body: mustJSON(t, result)},
		{name: "impossible action", method: "POST", path: sess + "/questions/5120/actions", status: 409, header: problemHeaders(), body: problem(409, "invalid_transition")},
		{name: "action lost a race", method: "POST", path: sess + "/questions/5120/actions", status: 409, header: problemHeaders(), body: problem(409, "version_conflict")},
		{name: "undo", method: "POST", path: sess + "/moderation/undo", status: 200, header: written,
			body: mustJSON(t, api.ModerationResult{Action: undo, Questions: []api.ModQuestion{target}})},
		{name: "undo of nothing", method: "POST", path: sess + "/moderation/undo", status: 409, header: problemHeaders(), body: problem(409, "invalid_transition")},
		{name: "settings", method: "PUT", path: sess + "/qa", status: 200, header: written,
			body: mustJSON(t, api.QASettings{Session: 12, Open: true, Moderated: false, Version: 5300})},
		{name: "export", method: "GET", path: sess + "/questions/export", status: 200, header: jsonExport, body: mustJSON(t, export)},
		{name: "export as CSV", method: "GET", path: sess + "/questions/export?format=csv", status: 200, header: csvHeader,
			body: "\ufeffid,state,text,original_text,lang,name,attendee,votes,asked_at,decided_at,decided_by,wait_seconds,answered_at,merged_into,flags,history\n"},
		{name: "export inline", method: "GET", path: sess + "/questions/export", status: 200,
			header: with(jsonExport, "Content-Disposition", "inline"), body: mustJSON(t, export), wantErr: "Content-Disposition"},
		{name: "export bad format", method: "GET", path: sess + "/questions/export?format=xml", status: 400, header: problemHeaders(), body: problem(400, "invalid_request")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequest(tt.method, base+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = v.Check(req, tt.status, tt.header, []byte(tt.body))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Check() = %v, want nil", err)
			case tt.wantErr != "" && err == nil:
				t.Errorf("Check() = nil, want an error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("Check() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestCheckRequestTownHall(t *testing.T) {
	v := mustLoad(t)
	jsonCT := http.Header{"Content-Type": {"application/json"}}
	const sess = "/v1/events/abierta-2025/sessions/12"
	tests := []struct {
		name, method, path string
		header             http.Header
		body               string
		wantErr            string
	}{
		{name: "mint without body", method: "POST", path: "/v1/events/abierta-2025/attendees"},
		{name: "mint with a name", method: "POST", path: "/v1/events/abierta-2025/attendees", header: jsonCT, body: `{"name": "María"}`},
		{name: "mint with a long name", method: "POST", path: "/v1/events/abierta-2025/attendees", header: jsonCT,
			body: `{"name": "` + strings.Repeat("ñ", 61) + `"}`, wantErr: "/name"},
		{name: "ask", method: "POST", path: sess + "/questions", header: with(jsonCT, "Idempotency-Key", "k1"),
			body: `{"text": "¿Y el presupuesto?", "lang": "es", "anonymous": false, "name": "María"}`},
		{name: "ask by guid", method: "POST", path: "/v1/events/abierta-2025/sessions/3f1c2a9e-8b7d-4c1e-9a2b-5d6e7f8a9b0c/questions",
			header: jsonCT, body: `{"text": "¿Y el presupuesto?"}`},
		{name: "ask too short", method: "POST", path: sess + "/questions", header: jsonCT, body: `{"text": "¿?"}`, wantErr: "/text"},
		{name: "ask too long", method: "POST", path: sess + "/questions", header: jsonCT,
			body: `{"text": "` + strings.Repeat("á", 301) + `"}`, wantErr: "/text"},
		{name: "ask in French", method: "POST", path: sess + "/questions", header: jsonCT, body: `{"text": "Pourquoi?", "lang": "fr"}`, wantErr: "/lang"},
		{name: "ask with a state", method: "POST", path: sess + "/questions", header: jsonCT,
			body: `{"text": "¿Y el presupuesto?", "state": "approved"}`, wantErr: `"state" is unsupported`},
		{name: "vote", method: "PUT", path: sess + "/questions/5120/vote"},
		{name: "withdraw", method: "DELETE", path: sess + "/questions/5120/vote"},
		{name: "vote for a word", method: "PUT", path: sess + "/questions/abc/vote", wantErr: "question"},
		{name: "approve", method: "POST", path: sess + "/questions/5120/actions", header: jsonCT, body: `{"action": "approve"}`},
		{name: "edit", method: "POST", path: sess + "/questions/5120/actions", header: with(jsonCT, "Idempotency-Key", "m1"),
			body: `{"action": "edit", "text": "¿Cómo se publicarán los datos?"}`},
		{name: "merge", method: "POST", path: sess + "/questions/5190/actions", header: jsonCT, body: `{"action": "merge", "into": 5120}`},
		{name: "undo by action", method: "POST", path: sess + "/questions/5190/actions", header: jsonCT, body: `{"action": "undo"}`, wantErr: "/action"},
		{name: "unknown action", method: "POST", path: sess + "/questions/5190/actions", header: jsonCT, body: `{"action": "delete"}`, wantErr: "/action"},
		{name: "undo", method: "POST", path: sess + "/moderation/undo"},
		{name: "undo of", method: "POST", path: sess + "/moderation/undo", header: jsonCT, body: `{"undo_of": 5188}`},
		{name: "settings", method: "PUT", path: sess + "/qa", header: jsonCT, body: `{"open": true, "moderated": false}`},
		{name: "settings as strings", method: "PUT", path: sess + "/qa", header: jsonCT, body: `{"open": "yes"}`, wantErr: "/open"},
		{name: "export csv", method: "GET", path: sess + "/questions/export?format=csv"},
		{name: "export xml", method: "GET", path: sess + "/questions/export?format=xml", wantErr: "format"},
		{name: "moderation", method: "GET", path: sess + "/moderation"},
		{name: "mine", method: "GET", path: sess + "/questions/mine"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequest(tt.method, base+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			for k, vs := range tt.header {
				req.Header[k] = vs
			}
			err = v.CheckRequest(req, []byte(tt.body))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("CheckRequest() = %v, want nil", err)
			case tt.wantErr != "" && err == nil:
				t.Errorf("CheckRequest() = nil, want an error containing %q", tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("CheckRequest() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
