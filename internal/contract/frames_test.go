package contract

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/oasdiff/yaml"

	"github.com/cabildo/cabildo/internal/cabildo"
	mobileapi "github.com/cabildo/cabildo/mobile-api"
	"github.com/cabildo/cabildo/pkg/api"
	"github.com/cabildo/cabildo/pkg/protocol"
)

// The constants of pkg/protocol, by name. protocolConstNames proves these lists complete, so
// a constant added there fails the tests until the contract documents it.
var (
	clientFrameTypes = map[string]string{
		"TypeAuth":        protocol.TypeAuth,
		"TypeSubscribe":   protocol.TypeSubscribe,
		"TypeUnsubscribe": protocol.TypeUnsubscribe,
		"TypePing":        protocol.TypePing,
	}
	serverFrameTypes = map[string]string{
		"TypeAuthOK":       protocol.TypeAuthOK,
		"TypeSnapshot":     protocol.TypeSnapshot,
		"TypeSubscribed":   protocol.TypeSubscribed,
		"TypeUpdate":       protocol.TypeUpdate,
		"TypeUnsubscribed": protocol.TypeUnsubscribed,
		"TypeError":        protocol.TypeError,
		"TypePong":         protocol.TypePong,
	}
	frameErrorCodes = map[string]string{
		"ErrBadFrame":             protocol.ErrBadFrame,
		"ErrUnknownType":          protocol.ErrUnknownType,
		"ErrUnknownChannel":       protocol.ErrUnknownChannel,
		"ErrChannelNameTooLong":   protocol.ErrChannelNameTooLong,
		"ErrUnauthorized":         protocol.ErrUnauthorized,
		"ErrForbidden":            protocol.ErrForbidden,
		"ErrTooManySubscriptions": protocol.ErrTooManySubscriptions,
		"ErrAlreadySubscribed":    protocol.ErrAlreadySubscribed,
		"ErrNotSubscribed":        protocol.ErrNotSubscribed,
		"ErrRateLimited":          protocol.ErrRateLimited,
		"ErrTokenExpired":         protocol.ErrTokenExpired,
	}
	closeCodes = map[string]int{
		"CloseNormal":       protocol.CloseNormal,
		"CloseInvalidData":  protocol.CloseInvalidData,
		"ClosePolicy":       protocol.ClosePolicy,
		"CloseTooBig":       protocol.CloseTooBig,
		"CloseReconnect":    protocol.CloseReconnect,
		"CloseUnauthorized": protocol.CloseUnauthorized,
		"CloseForbidden":    protocol.CloseForbidden,
		"CloseAuthTimeout":  protocol.CloseAuthTimeout,
		"CloseTooManySubs":  protocol.CloseTooManySubs,
		"CloseRateLimited":  protocol.CloseRateLimited,
		"CloseSlowConsumer": protocol.CloseSlowConsumer,
	}
)

// protocolConstNames lists the names of pkg/protocol's constants that start with prefix,
// read from its source.
func protocolConstNames(t *testing.T, prefix string) []string {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "../../pkg/protocol/protocol.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			for _, n := range s.(*ast.ValueSpec).Names {
				if strings.HasPrefix(n.Name, prefix) {
					names = append(names, n.Name)
				}
			}
		}
	}
	slices.Sort(names)
	return names
}

func mustLoadFrames(t *testing.T) *FrameValidator {
	t.Helper()
	v, err := LoadFrames()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// lookup walks the parsed document by keys, failing the test when one is missing.
func lookup(t *testing.T, doc map[string]any, keys ...string) any {
	t.Helper()
	var cur any = doc
	for i, k := range keys {
		m, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("asyncapi.yaml: %s is not an object", strings.Join(keys[:i], "."))
		}
		if cur, ok = m[k]; !ok {
			t.Fatalf("asyncapi.yaml: %s is missing", strings.Join(keys[:i+1], "."))
		}
	}
	return cur
}

func docInt(t *testing.T, v any) int {
	t.Helper()
	n, ok := v.(json.Number)
	if !ok {
		t.Fatalf("%v is not a number", v)
	}
	i, err := strconv.Atoi(n.String())
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func TestLoadFrames(t *testing.T) {
	v := mustLoadFrames(t)
	if got, want := sortedKeys(v.client), slices.Sorted(maps.Values(clientFrameTypes)); !slices.Equal(got, want) {
		t.Errorf("client frame types in the contract = %v, pkg/protocol has %v", got, want)
	}
	if got, want := sortedKeys(v.server), slices.Sorted(maps.Values(serverFrameTypes)); !slices.Equal(got, want) {
		t.Errorf("server frame types in the contract = %v, pkg/protocol has %v", got, want)
	}
	for _, typ := range []string{protocol.TypeSnapshot, protocol.TypeUpdate} {
		var prefixes, parts []string
		for _, fs := range v.server[typ] {
			if fs.part {
				parts = append(parts, fs.message)
				continue
			}
			prefixes = append(prefixes, fs.prefix)
		}
		if want := map[string][]string{protocol.TypeSnapshot: {"snapshotPart"}}[typ]; !slices.Equal(parts, want) {
			t.Errorf("%s messages for parts: %q, want %q", typ, parts, want)
		}
		slices.Sort(prefixes)
		if want := []string{"announcements:", "moderation:", "questions:", "schedule:"}; !slices.Equal(prefixes, want) {
			t.Errorf("%s messages are for channels %q, want %q", typ, prefixes, want)
		}
	}

	// A format the validator does not know would check nothing; loading must refuse it.
	broken := bytes.Replace(mobileapi.AsyncAPI, []byte("format: date-time"), []byte("format: date_time"), 1)
	if _, err := loadFrames(broken); err == nil || !strings.Contains(err.Error(), "date_time") {
		t.Errorf("a document with format date_time loaded: %v", err)
	}
}

// TestProtocolConstantsDocumented keeps pkg/protocol and asyncapi.yaml from drifting apart:
// every frame type, error code, close code and limit of the code is in the document, with the
// same value, and the document has none the code lacks.
func TestProtocolConstantsDocumented(t *testing.T) {
	types := append(sortedKeys(clientFrameTypes), sortedKeys(serverFrameTypes)...)
	slices.Sort(types)
	for prefix, names := range map[string][]string{
		"Type":  types,
		"Err":   sortedKeys(frameErrorCodes),
		"Close": sortedKeys(closeCodes),
	} {
		if got := protocolConstNames(t, prefix); !slices.Equal(got, names) {
			t.Errorf("pkg/protocol's %s constants are %v; this test lists %v: document the new ones in asyncapi.yaml and list them here", prefix, got, names)
		}
	}

	doc := mustLoadFrames(t).Document()
	description := lookup(t, doc, "info", "description").(string)

	var enum []string
	for _, e := range lookup(t, doc, "components", "schemas", "FrameErrorCode", "enum").([]any) {
		enum = append(enum, e.(string))
	}
	slices.Sort(enum)
	if want := slices.Sorted(maps.Values(frameErrorCodes)); !slices.Equal(enum, want) {
		t.Errorf("FrameErrorCode enum = %v, pkg/protocol has %v", enum, want)
	}
	for name, code := range frameErrorCodes {
		if !strings.Contains(description, "`"+code+"`") {
			t.Errorf("info.description does not explain error code %s (%s)", code, name)
		}
	}

	documented := map[string]int{}
	names := map[string]bool{}
	for i, e := range lookup(t, doc, "channels", "ws", "x-close-codes").([]any) {
		entry := e.(map[string]any)
		constant, _ := entry["constant"].(string)
		name, _ := entry["name"].(string)
		meaning, _ := entry["meaning"].(string)
		action, _ := entry["action"].(string)
		if constant == "" || name == "" || meaning == "" || action == "" {
			t.Errorf("x-close-codes[%d] needs a constant, name, meaning and action: %v", i, entry)
		}
		if names[name] {
			t.Errorf("x-close-codes: name %q twice", name)
		}
		names[name] = true
		code := docInt(t, entry["code"])
		documented[constant] = code
		if !strings.Contains(description, "| "+strconv.Itoa(code)+" | "+name+" |") {
			t.Errorf("info.description's close code table has no row for %d %s", code, name)
		}
	}
	if !maps.Equal(documented, closeCodes) {
		t.Errorf("x-close-codes = %v, pkg/protocol has %v", documented, closeCodes)
	}

	limits := lookup(t, doc, "channels", "ws", "x-limits").(map[string]any)
	for key, want := range map[string]int{
		"maxFrameBytes":       protocol.MaxFrameBytes,
		"maxChannelNameBytes": protocol.MaxChannelName,
		"maxSubscriptions":    protocol.MaxSubscriptions,
		"framesPerSecond":     protocol.FramesPerSecond,
		"frameBurst":          protocol.FrameBurst,
		"authTimeoutSeconds":  protocol.AuthTimeoutSeconds,
		"pingIntervalSeconds": protocol.PingIntervalSeconds,
		"idleTimeoutSeconds":  protocol.IdleTimeoutSeconds,
		"overSubscribes":      protocol.OverSubscribes,
		"maxServerFrameBytes": protocol.MaxServerFrameBytes,
	} {
		if got := docInt(t, limits[key]); got != want {
			t.Errorf("x-limits.%s = %d, pkg/protocol says %d", key, got, want)
		}
	}
	if got := docInt(t, lookup(t, doc, "components", "schemas", "ChannelName", "maxLength")); got != protocol.MaxChannelName {
		t.Errorf("ChannelName maxLength = %d, pkg/protocol.MaxChannelName = %d", got, protocol.MaxChannelName)
	}

	var langs, want []string
	for _, l := range lookup(t, doc, "components", "schemas", "Lang", "enum").([]any) {
		langs = append(langs, l.(string))
	}
	for _, l := range cabildo.Langs {
		want = append(want, string(l))
	}
	if !slices.Equal(langs, want) {
		t.Errorf("Lang enum = %v, the domain publishes %v", langs, want)
	}
	if def := lookup(t, doc, "components", "schemas", "SubscribeFrame", "properties", "lang", "default"); def != string(cabildo.Langs[0]) {
		t.Errorf("subscribe's lang defaults to %v, the domain's first language is %s", def, cabildo.Langs[0])
	}
}

// TestCopiedSchemasMatchOpenAPI proves the data schemas asyncapi.yaml copied from openapi.yaml
// (a snapshot's Schedule, an update's changes) are still the REST API's, word for word but for
// descriptions and examples.
func TestCopiedSchemasMatchOpenAPI(t *testing.T) {
	js, err := yaml.YAMLToJSON(mobileapi.OpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	var openapi map[string]any
	if err := json.Unmarshal(js, &openapi); err != nil {
		t.Fatal(err)
	}
	rest := lookup(t, openapi, "components", "schemas").(map[string]any)
	// Normalize numbers the same way on both sides.
	js, err = json.Marshal(lookup(t, mustLoadFrames(t).Document(), "components", "schemas"))
	if err != nil {
		t.Fatal(err)
	}
	var ws map[string]any
	if err := json.Unmarshal(js, &ws); err != nil {
		t.Fatal(err)
	}
	shared := 0
	for _, name := range sortedKeys(ws) {
		r, ok := rest[name]
		if !ok {
			continue
		}
		shared++
		if diff := cmp.Diff(stripDocs(r, false), stripDocs(ws[name], false)); diff != "" {
			t.Errorf("schema %s differs between openapi.yaml and asyncapi.yaml (-openapi +asyncapi):\n%s", name, diff)
		}
	}
	for _, name := range []string{"Schedule", "EventDetail", "PublicSession", "PublicChange", "Version", "Lang", "Slug"} {
		if _, ok := ws[name]; !ok {
			t.Errorf("asyncapi.yaml has no schema %s", name)
		}
		if _, ok := rest[name]; !ok {
			t.Errorf("openapi.yaml has no schema %s", name)
		}
	}
	if shared < 20 {
		t.Errorf("only %d schemas are shared; the copy is incomplete", shared)
	}
}

// stripDocs drops the keywords that only document (description, example, examples) from a
// schema and its subschemas; props says v is a properties map, whose keys are field names.
func stripDocs(v any, props bool) any {
	switch v := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range v {
			if !props && (k == "description" || k == "example" || k == "examples") {
				continue
			}
			out[k] = stripDocs(e, !props && k == "properties")
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = stripDocs(e, false)
		}
		return out
	}
	return v
}

// TestFrameExamples keeps the document's examples honest: each validates as its message.
func TestFrameExamples(t *testing.T) {
	v := mustLoadFrames(t)
	messages := lookup(t, v.Document(), "components", "messages").(map[string]any)
	for side, byType := range map[string]map[string][]frameSchema{"client": v.client, "server": v.server} {
		check := v.Client
		if side == "server" {
			check = v.Server
		}
		for _, list := range byType {
			for _, fs := range list {
				examples, _ := messages[fs.message].(map[string]any)["examples"].([]any)
				if len(examples) == 0 {
					t.Errorf("message %s has no example", fs.message)
				}
				for i, e := range examples {
					frame, err := json.Marshal(e.(map[string]any)["payload"])
					if err != nil {
						t.Fatal(err)
					}
					if err := check(frame); err != nil {
						t.Errorf("message %s example %d: %v", fs.message, i, err)
					}
				}
			}
		}
	}
}

func u64(v uint64) *uint64 { return &v }

func frameJSON(t *testing.T, f any) []byte {
	t.Helper()
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// serverFrame encodes f with data as the server does: data first, then the frame.
func serverFrame(t *testing.T, f protocol.ServerFrame, data any) []byte {
	t.Helper()
	if data != nil {
		f.Data = frameJSON(t, data)
	}
	return frameJSON(t, f)
}

// sizedPart is a frame of a snapshot in parts that weighs exactly n bytes.
func sizedPart(t *testing.T, n int) []byte {
	t.Helper()
	f := protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: moderationChannel, Version: 1, Part: 1, Parts: 9, Chunk: "x"}
	f.Chunk = strings.Repeat("x", n-len(frameJSON(t, f))+1)
	return frameJSON(t, f)
}

// mutateFrame decodes frame, lets change edit it and encodes it again.
func mutateFrame(t *testing.T, frame []byte, change func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(frame, &m); err != nil {
		t.Fatal(err)
	}
	change(m)
	return frameJSON(t, m)
}

var updatedAt = time.Date(2025, 10, 2, 15, 14, 3, 0, time.UTC)

func testSchedule() api.Schedule {
	return api.Schedule{
		Event: api.Event{
			ID: "abierta-2025", Name: "Encuentro Regional de Gobierno Abierto 2025",
			Description: "Gobierno abierto en la región.", TimeZone: "America/Costa_Rica",
			Venue: "Centro de Convenciones", City: "San José", Country: "CR", URL: "https://abierta.example.org",
			Days: []api.Day{
				{Date: "2025-10-01", Kind: "unconference", Title: "Desconferencia", Start: "2025-10-01T09:00:00-06:00", End: "2025-10-01T17:00:00-06:00"},
				{Date: "2025-10-02", Kind: "conference", Start: "2025-10-02T08:30:00-06:00", End: "2025-10-02T18:00:00-06:00"},
			},
			Version: 4812, UpdatedAt: updatedAt,
		},
		Version: 4812,
		Lang:    "es",
		Rooms: []api.Room{
			{ID: "plenaria", Name: "Sala Plenaria", Location: "Planta baja", Capacity: 800, Streamed: true, StreamURL: "https://abierta.example.org/en-vivo/plenaria"},
			{ID: "sala-2", Name: "Sala 2", Streamed: false},
		},
		Tracks:   []api.Track{{ID: "datos", Name: "Datos abiertos", Color: "#1f6feb"}},
		Speakers: []api.Speaker{{ID: "ana-rojas", Name: "Ana Rojas", Affiliation: "Observatorio Ciudadano", Bio: "Investigadora.", Country: "CR"}},
		Sessions: []api.Session{
			{
				ID: 12, GUID: "3f1c2a9e-8b7d-4c1e-9a2b-5d6e7f8a9b0c", Title: "Datos abiertos para la rendición de cuentas",
				Abstract: "Cómo usan los datos abiertos las organizaciones ciudadanas.", Kind: "breakout", Status: "scheduled",
				Language: "es", Interpretation: []string{"en"}, Room: "sala-2", Track: "datos", Day: "2025-10-02",
				Start: "2025-10-02T11:30:00-06:00", End: "2025-10-02T13:00:00-06:00", DurationMinutes: 90,
				Speakers: []string{"ana-rojas"}, Tags: []string{"datos-abiertos"}, Version: 4812, UpdatedAt: updatedAt,
			},
			{
				ID: 13, GUID: "0b7e9c52-1d2a-4f3b-8c4d-5e6f7a8b9c0d", Title: "Apertura", Kind: "plenary", Status: "cancelled",
				Language: "es", Cancellation: &api.Reason{Code: "speaker_unavailable", Text: "La ponente no pudo viajar."},
				Room: "plenaria", Day: "2025-10-02", Start: "2025-10-02T08:30:00-06:00",
				End: "2025-10-02T09:00:00-06:00", DurationMinutes: 30, Speakers: []string{}, Streamed: true,
				Version: 4700, UpdatedAt: updatedAt,
			},
		},
	}
}

func testChanges() []api.Change {
	ref := &api.SessionRef{ID: 12, GUID: "3f1c2a9e-8b7d-4c1e-9a2b-5d6e7f8a9b0c"}
	return []api.Change{
		{Version: 4812, At: updatedAt, Type: "session_moved", Session: ref, Room: &api.RoomMove{From: "plenaria", To: "sala-2"},
			Reason: &api.Reason{Code: "room_change"}},
		{Version: 4812, At: updatedAt, Type: "session_delayed", Session: ref, DelayMinutes: 30,
			Time: &api.TimeChange{
				From: api.Interval{Start: "2025-10-02T11:00:00-06:00", End: "2025-10-02T12:30:00-06:00"},
				To:   api.Interval{Start: "2025-10-02T11:30:00-06:00", End: "2025-10-02T13:00:00-06:00"},
			},
			Reason: &api.Reason{Code: "running_late", Text: "La plenaria anterior terminó tarde."}},
		{Version: 4812, At: updatedAt, Type: "session_speakers_changed", Session: ref,
			Speakers: &api.SpeakersChange{From: []string{}, To: []string{"ana-rojas"}}},
		{Version: 4812, At: updatedAt, Type: "session_updated", Session: ref, Fields: []string{"title", "tags"}},
		{Version: 4812, At: updatedAt, Type: "room_updated", Entity: &api.EntityRef{Kind: "room", ID: "sala-2"}},
	}
}

// scheduleUpdate is the data of an update on schedule:<event>; pkg/api has no type for it.
type scheduleUpdate struct {
	Changes []api.Change `json:"changes"`
}

// announcement is the contract's Announcement; pkg/api has no type for it yet.
type announcement struct {
	ID       int64     `json:"id"`
	Version  uint64    `json:"version"`
	At       time.Time `json:"at"`
	Title    string    `json:"title"`
	Body     string    `json:"body"`
	Priority string    `json:"priority"`
	Session  int64     `json:"session,omitempty"`
}

type announcementsSnapshot struct {
	Announcements []announcement `json:"announcements"`
}

type announcementsUpdate struct {
	Announcement announcement `json:"announcement"`
}

func testAnnouncements() []announcement {
	return []announcement{
		{ID: 3, Version: 4801, At: updatedAt, Title: "Almuerzo", Body: "En el patio central.", Priority: "info"},
		{ID: 4, Version: 4815, At: updatedAt, Title: "Cambio de sala", Body: "", Priority: "urgent", Session: 12},
	}
}

const (
	scheduleChannel      = "schedule:abierta-2025"
	announcementsChannel = "announcements:abierta-2025"
)

func TestValidFrames(t *testing.T) {
	v := mustLoadFrames(t)
	client := map[string][]byte{
		"auth":                 frameJSON(t, protocol.ClientFrame{Type: protocol.TypeAuth, ID: 1, Token: "eyJhbGciOiJFZERTQSJ9.e30.c2ln"}),
		"auth without id":      frameJSON(t, protocol.ClientFrame{Type: protocol.TypeAuth, Token: "t"}),
		"subscribe":            frameJSON(t, protocol.ClientFrame{Type: protocol.TypeSubscribe, ID: 2, Channel: scheduleChannel}),
		"subscribe en":         frameJSON(t, protocol.ClientFrame{Type: protocol.TypeSubscribe, Channel: scheduleChannel, Lang: "en"}),
		"subscribe since":      frameJSON(t, protocol.ClientFrame{Type: protocol.TypeSubscribe, ID: 3, Channel: announcementsChannel, Since: u64(4790), Lang: "es"}),
		"subscribe since 0":    frameJSON(t, protocol.ClientFrame{Type: protocol.TypeSubscribe, Channel: scheduleChannel, Since: u64(0)}),
		"unsubscribe":          frameJSON(t, protocol.ClientFrame{Type: protocol.TypeUnsubscribe, ID: 4, Channel: announcementsChannel}),
		"ping":                 frameJSON(t, protocol.ClientFrame{Type: protocol.TypePing}),
		"ping with id":         frameJSON(t, protocol.ClientFrame{Type: protocol.TypePing, ID: 1<<64 - 1}),
		"longest channel name": frameJSON(t, protocol.ClientFrame{Type: protocol.TypeUnsubscribe, Channel: "schedule:a" + strings.Repeat("b", 62)}),
	}
	for name, frame := range client {
		if err := v.Client(frame); err != nil {
			t.Errorf("client %s: %v\n%s", name, err, frame)
		}
	}

	server := map[string][]byte{
		"auth_ok":         serverFrame(t, protocol.ServerFrame{Type: protocol.TypeAuthOK, ID: 1}, nil),
		"auth_ok no id":   serverFrame(t, protocol.ServerFrame{Type: protocol.TypeAuthOK}, nil),
		"schedule":        serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: scheduleChannel, Version: 4812}, testSchedule()),
		"empty schedule":  serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: scheduleChannel, Version: 1}, api.Schedule{Event: api.Event{ID: "vacio", Name: "Vacío", TimeZone: "UTC", Days: []api.Day{}, Version: 1, UpdatedAt: updatedAt}, Version: 1, Lang: "en", Rooms: []api.Room{}, Tracks: []api.Track{}, Speakers: []api.Speaker{}, Sessions: []api.Session{}}),
		"announcements":   serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: announcementsChannel, Version: 4815}, announcementsSnapshot{Announcements: testAnnouncements()}),
		"no announcement": serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: announcementsChannel, Version: 7}, announcementsSnapshot{Announcements: []announcement{}}),
		"subscribed":      serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSubscribed, ID: 2, Channel: scheduleChannel, Version: 4812}, nil),
		"subscribed ann.": serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSubscribed, Channel: announcementsChannel, Version: 4815}, nil),
		"schedule update": serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: scheduleChannel, Version: 4812, Prev: u64(4790)}, scheduleUpdate{Changes: testChanges()}),
		"update prev 0":   serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: scheduleChannel, Version: 3, Prev: u64(0)}, scheduleUpdate{Changes: []api.Change{{Version: 3, At: updatedAt, Type: "event_updated", Entity: &api.EntityRef{Kind: "event", ID: "abierta-2025"}}}}),
		"announcement":    serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: announcementsChannel, Version: 4815, Prev: u64(4801)}, announcementsUpdate{Announcement: testAnnouncements()[1]}),
		"unsubscribed":    serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUnsubscribed, ID: 4, Channel: announcementsChannel}, nil),
		"access ended":    serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUnsubscribed, Channel: scheduleChannel}, nil),
		"pong":            serverFrame(t, protocol.ServerFrame{Type: protocol.TypePong, ID: 9}, nil),
		"pong no id":      serverFrame(t, protocol.ServerFrame{Type: protocol.TypePong}, nil),
		// An error echoes the channel as the client sent it, however malformed, up to 255
		// bytes; a longer one is left out.
		"error bad channel":  serverFrame(t, protocol.ServerFrame{Type: protocol.TypeError, ID: 5, Channel: "streams:" + strings.Repeat("<", 247), Code: protocol.ErrUnknownChannel, Message: "unknown channel"}, nil),
		"error long channel": serverFrame(t, protocol.ServerFrame{Type: protocol.TypeError, ID: 5, Code: protocol.ErrChannelNameTooLong, Message: "channel names are at most 255 bytes"}, nil),
		"first part":         serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: scheduleChannel, Version: 4812, Part: 1, Parts: 2, Chunk: `{"event":{"id":"abie`}, nil),
		"last part":          serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: questionsChannel, Version: 5188, Part: 2, Parts: 2, Chunk: `"é"]}`}, nil),
		"largest frame":      sizedPart(t, protocol.MaxServerFrameBytes),
	}
	for name, code := range frameErrorCodes {
		server["error "+name] = serverFrame(t, protocol.ServerFrame{Type: protocol.TypeError, ID: 7, Channel: scheduleChannel, Code: code, Message: "it went wrong"}, nil)
		server["error "+name+" bare"] = serverFrame(t, protocol.ServerFrame{Type: protocol.TypeError, Code: code, Message: "it went wrong"}, nil)
	}
	for name, frame := range server {
		if err := v.Server(frame); err != nil {
			t.Errorf("server %s: %v\n%s", name, err, frame)
		}
	}
}

func TestInvalidFrames(t *testing.T) {
	v := mustLoadFrames(t)
	update := serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: scheduleChannel, Version: 4812, Prev: u64(4790)}, scheduleUpdate{Changes: testChanges()})
	snapshot := serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: scheduleChannel, Version: 4812}, testSchedule())
	for _, f := range [][]byte{update, snapshot} {
		if err := v.Server(f); err != nil {
			t.Fatalf("the base frames must be valid: %v", err)
		}
	}
	server := map[string][]byte{
		"update without prev": serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: scheduleChannel, Version: 4812}, scheduleUpdate{Changes: testChanges()}),
		"update without data": serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: scheduleChannel, Version: 4812, Prev: u64(1)}, nil),
		"update no changes":   serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: scheduleChannel, Version: 4812, Prev: u64(1)}, scheduleUpdate{Changes: []api.Change{}}),
		"update with id":      mutateFrame(t, update, func(m map[string]any) { m["id"] = 3 }),
		"update extra":        mutateFrame(t, update, func(m map[string]any) { m["epoch"] = 2 }),
		"update bad at": mutateFrame(t, update, func(m map[string]any) {
			m["data"].(map[string]any)["changes"].([]any)[0].(map[string]any)["at"] = "2025-10-02 15:14"
		}),
		"update change extra": mutateFrame(t, update, func(m map[string]any) { m["data"].(map[string]any)["changes"].([]any)[0].(map[string]any)["votes"] = 1 }),
		"schedule as ann.":    mutateFrame(t, update, func(m map[string]any) { m["channel"] = announcementsChannel }),
		"snapshot as list":    serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: scheduleChannel, Version: 4812}, api.ChangeList{Event: "abierta-2025", Since: 1, Version: 4812, Lang: "es", Changes: testChanges()}),
		"snapshot ann. data":  serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: scheduleChannel, Version: 4812}, announcementsSnapshot{Announcements: testAnnouncements()}),
		"snapshot on ann.":    mutateFrame(t, snapshot, func(m map[string]any) { m["channel"] = announcementsChannel }),
		"snapshot no version": serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: scheduleChannel}, testSchedule()),
		"snapshot with prev":  mutateFrame(t, snapshot, func(m map[string]any) { m["prev"] = 1 }),
		"snapshot bad lang":   mutateFrame(t, snapshot, func(m map[string]any) { m["data"].(map[string]any)["lang"] = "fr" }),
		"snapshot bad start": mutateFrame(t, snapshot, func(m map[string]any) {
			m["data"].(map[string]any)["sessions"].([]any)[0].(map[string]any)["start"] = "11:30"
		}),
		"snapshot bad guid": mutateFrame(t, snapshot, func(m map[string]any) {
			m["data"].(map[string]any)["sessions"].([]any)[0].(map[string]any)["guid"] = "not-a-guid"
		}),
		"snapshot other channel": mutateFrame(t, snapshot, func(m map[string]any) { m["channel"] = "streams:abierta-2025" }),
		"announcement bad priority": serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: announcementsChannel, Version: 5, Prev: u64(4)},
			announcementsUpdate{Announcement: announcement{ID: 1, Version: 5, At: updatedAt, Title: "t", Body: "b", Priority: "loud"}}),
		"announcement no title": serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: announcementsChannel, Version: 5, Prev: u64(4)},
			announcementsUpdate{Announcement: announcement{ID: 1, Version: 5, At: updatedAt, Body: "b", Priority: "info"}}),
		"prev not below": serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: scheduleChannel, Version: 4812, Prev: u64(4812)}, scheduleUpdate{Changes: testChanges()}),
		"change of another version": mutateFrame(t, update, func(m map[string]any) {
			m["data"].(map[string]any)["changes"].([]any)[1].(map[string]any)["version"] = 4811
		}),
		"snapshot data version": mutateFrame(t, snapshot, func(m map[string]any) { m["version"] = 4813 }),
		"error long channel": serverFrame(t, protocol.ServerFrame{Type: protocol.TypeError, ID: 5, Channel: "streams:" + strings.Repeat("x", 300),
			Code: protocol.ErrChannelNameTooLong, Message: "channel names are at most 255 bytes"}, nil),
		"frame over the bound": sizedPart(t, protocol.MaxServerFrameBytes+1),
		"part past parts":      serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: scheduleChannel, Version: 4812, Part: 3, Parts: 2, Chunk: "{"}, nil),
		"one part":             serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: scheduleChannel, Version: 4812, Part: 1, Parts: 1, Chunk: "{}"}, nil),
		"part 0":               serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: scheduleChannel, Version: 4812, Parts: 2, Chunk: "{"}, nil),
		"part without parts":   serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: scheduleChannel, Version: 4812, Part: 1, Chunk: "{"}, nil),
		"empty chunk":          []byte(`{"type":"snapshot","channel":"schedule:abierta-2025","version":4812,"part":1,"parts":2,"chunk":""}`),
		"part with data":       mutateFrame(t, snapshot, func(m map[string]any) { m["part"], m["parts"] = 1, 2 }),
		"chunk with data":      mutateFrame(t, snapshot, func(m map[string]any) { m["chunk"] = "{" }),
		"part of an update":    serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: scheduleChannel, Version: 4812, Prev: u64(4790), Part: 1, Parts: 2, Chunk: "{"}, nil),
		"part of a stream":     serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: "streams:abierta-2025", Version: 4812, Part: 1, Parts: 2, Chunk: "{"}, nil),
		"announcement version": serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: announcementsChannel, Version: 6, Prev: u64(4)},
			announcementsUpdate{Announcement: announcement{ID: 1, Version: 5, At: updatedAt, Title: "t", Body: "b", Priority: "info"}}),
		"subscribed no channel": serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSubscribed, ID: 1, Version: 3}, nil),
		"pong extra":            []byte(`{"type":"pong","id":1,"extra":true}`),
		"auth_ok with channel":  serverFrame(t, protocol.ServerFrame{Type: protocol.TypeAuthOK, Channel: scheduleChannel}, nil),
		"error without code":    serverFrame(t, protocol.ServerFrame{Type: protocol.TypeError, Message: "oops"}, nil),
		"error unknown code":    serverFrame(t, protocol.ServerFrame{Type: protocol.TypeError, Code: "oops", Message: "oops"}, nil),
		"error no message":      serverFrame(t, protocol.ServerFrame{Type: protocol.TypeError, Code: protocol.ErrBadFrame}, nil),
		"unknown type":          serverFrame(t, protocol.ServerFrame{Type: "hello"}, nil),
		"client type":           serverFrame(t, protocol.ServerFrame{Type: protocol.TypePing}, nil),
		"no type":               []byte(`{"id":1}`),
		"type not a string":     []byte(`{"type":1}`),
		"array":                 []byte(`[{"type":"pong"}]`),
		"two values":            []byte(`{"type":"pong"} {"type":"pong"}`),
		"not json":              []byte(`{"type":"pong"`),
	}
	// Some cases must fail for exactly their reason, not just fail.
	reasons := map[string]string{
		"update without prev":    "missing property 'prev'",
		"update extra":           "additional properties 'epoch' not allowed",
		"pong extra":             "additional properties 'extra' not allowed",
		"snapshot ann. data":     "at '/data': missing properties 'event'",
		"snapshot bad start":     "is not valid date-time",
		"update bad at":          "is not valid date-time",
		"unknown type":           `type "hello" is not in the contract`,
		"snapshot other channel": `channel "streams:abierta-2025"`,
		"prev not below":         "prev 4812 is not below version 4812",
		"snapshot data version":  "data carries version 4812, the frame 4813",
		"error long channel":     "at '/channel': maxLength",
		"frame over the bound":   "frame of 65537 bytes is over the 65536 the contract allows",
		"part past parts":        "part 3 of 2",
		"part with data":         "additional properties 'data' not allowed",
		"part of an update":      "with part, parts or chunk: the contract has no such message",
	}
	for name, frame := range server {
		err := v.Server(frame)
		if err == nil {
			t.Errorf("server %s passed:\n%s", name, frame)
			continue
		}
		if want, ok := reasons[name]; ok && !strings.Contains(err.Error(), want) {
			t.Errorf("server %s failed for another reason than %q: %v", name, want, err)
		}
	}

	client := map[string][]byte{
		"unknown type":        frameJSON(t, protocol.ClientFrame{Type: "publish", Channel: scheduleChannel}),
		"server type":         frameJSON(t, protocol.ClientFrame{Type: protocol.TypePong}),
		"auth without token":  frameJSON(t, protocol.ClientFrame{Type: protocol.TypeAuth, ID: 1}),
		"subscribe token":     frameJSON(t, protocol.ClientFrame{Type: protocol.TypeSubscribe, Channel: scheduleChannel, Token: "t"}),
		"subscribe no chan":   frameJSON(t, protocol.ClientFrame{Type: protocol.TypeSubscribe, Lang: "es"}),
		"subscribe bad lang":  frameJSON(t, protocol.ClientFrame{Type: protocol.TypeSubscribe, Channel: scheduleChannel, Lang: "fr"}),
		"subscribe streams":   frameJSON(t, protocol.ClientFrame{Type: protocol.TypeSubscribe, Channel: "streams:abierta-2025"}),
		"subscribe long name": frameJSON(t, protocol.ClientFrame{Type: protocol.TypeSubscribe, Channel: "schedule:" + strings.Repeat("a", protocol.MaxChannelName)}),
		"since negative":      []byte(`{"type":"subscribe","channel":"schedule:abierta-2025","since":-1}`),
		"since fraction":      []byte(`{"type":"subscribe","channel":"schedule:abierta-2025","since":1.5}`),
		"since string":        []byte(`{"type":"subscribe","channel":"schedule:abierta-2025","since":"5"}`),
		"id too big":          []byte(`{"type":"ping","id":18446744073709551616}`),
		"ping with channel":   frameJSON(t, protocol.ClientFrame{Type: protocol.TypePing, Channel: scheduleChannel}),
		"unsubscribe since":   frameJSON(t, protocol.ClientFrame{Type: protocol.TypeUnsubscribe, Channel: scheduleChannel, Since: u64(3)}),
		"extra property":      []byte(`{"type":"ping","hello":1}`),
	}
	reasons = map[string]string{
		"unknown type":   `type "publish" is not in the contract`,
		"server type":    "not a client frame",
		"extra property": "additional properties 'hello' not allowed",
	}
	for name, frame := range client {
		err := v.Client(frame)
		if err == nil {
			t.Errorf("client %s passed:\n%s", name, frame)
			continue
		}
		if want, ok := reasons[name]; ok && !strings.Contains(err.Error(), want) {
			t.Errorf("client %s failed for another reason than %q: %v", name, want, err)
		}
	}
}

const (
	questionsChannel  = "questions:abierta-2025:12"
	moderationChannel = "moderation:abierta-2025:12"
)

// TestTownHallFrames checks the town hall's channels with pkg/api's wire types: what the
// server sends must validate, and the mistakes the contract exists to catch (a pending
// question on the public channel, moderation data on it) must not.
func TestTownHallFrames(t *testing.T) {
	v := mustLoadFrames(t)
	at := time.Date(2025, 10, 2, 17, 41, 9, 0, time.UTC)
	question := func(id int64, state string, votes int) api.Question {
		return api.Question{ID: id, Session: 12, Text: "¿Cómo se publicarán los datos?", Lang: "es", State: state, Votes: votes, AskedAt: at}
	}
	modQuestion := func(id int64, state string) api.ModQuestion {
		return api.ModQuestion{Question: question(id, state, 0), Attendee: "9b37e4ed-f494-478c-b841-454c7cf79933", Flags: []api.Flag{}, Merged: []int64{}}
	}
	list := api.QuestionList{Event: "abierta-2025", Session: 12, Version: 5188, Open: true, Moderated: true,
		Questions: []api.Question{question(5120, "pinned", 37), question(5133, "approved", 12)}}
	closed := false
	flagged := modQuestion(5190, "pending")
	flagged.Flags = []api.Flag{{Kind: "word_list", Words: []string{"tonto"}}}
	moderation := api.Moderation{Event: "abierta-2025", Session: 12, Version: 5190, Open: true, Moderated: true,
		ServerTime: at.Add(time.Hour), Queue: api.QueueStats{Pending: 1, OldestPendingAt: &at},
		Questions: []api.ModQuestion{modQuestion(5120, "pinned"), flagged},
		Actions: []api.ModAction{{Version: 5188, Action: "pin", Moderator: "moderator:lucia", At: at, Question: 5120,
			Effects: []api.Effect{{Question: 5120, From: "approved", To: "pinned"}}}}}
	reject := api.ModerationUpdate{Questions: []api.ModQuestion{modQuestion(5190, "rejected")},
		Actions: []api.ModAction{{Version: 5195, Action: "reject", Moderator: "moderator:lucia", At: at, Question: 5190,
			Effects: []api.Effect{{Question: 5190, From: "pending", To: "rejected"}}}}, Queue: api.QueueStats{Decided: 2, MedianWaitSeconds: 3.5, P90WaitSeconds: 9}}

	qSnapshot := serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: questionsChannel, Version: 5188}, list)
	qUpdate := serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: questionsChannel, Version: 5201, Prev: u64(5188)},
		api.QuestionsUpdate{Questions: []api.Question{question(5133, "approved", 15)}, Removed: []int64{5120}})
	mSnapshot := serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: moderationChannel, Version: 5190}, moderation)
	valid := map[string][]byte{
		"questions snapshot": qSnapshot,
		"empty questions": serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: questionsChannel, Version: 1},
			api.QuestionList{Event: "abierta-2025", Session: 12, Moderated: true, Questions: []api.Question{}}),
		"questions update": qUpdate,
		"vote counts": serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: questionsChannel, Version: 5202, Prev: u64(5201)},
			api.QuestionsUpdate{Votes: map[int64]int{5133: 16, 5141: 0}}),
		"moderation vote counts": serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: moderationChannel, Version: 5196, Prev: u64(5195)},
			api.ModerationUpdate{Votes: map[int64]int{5133: 16}, Queue: reject.Queue}),
		"questions closed": serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: questionsChannel, Version: 5240, Prev: u64(5201)},
			api.QuestionsUpdate{Open: &closed}),
		"moderation snapshot": mSnapshot,
		"moderation update":   serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: moderationChannel, Version: 5195, Prev: u64(5190)}, reject),
		"subscribed":          serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSubscribed, ID: 8, Channel: moderationChannel, Version: 5190}, nil),
		"token expired": serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUnsubscribed, Channel: moderationChannel,
			Code: protocol.ErrTokenExpired, Message: "your token expired: authenticate again and resubscribe with since"}, nil),
		"token replaced": serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUnsubscribed, Channel: moderationChannel,
			Code: protocol.ErrForbidden, Message: "the new token does not allow this channel"}, nil),
		"subscribe refused": serverFrame(t, protocol.ServerFrame{Type: protocol.TypeError, ID: 8, Channel: moderationChannel,
			Code: protocol.ErrTokenExpired, Message: "the token has expired: authenticate again"}, nil),
	}
	for name, frame := range valid {
		if err := v.Server(frame); err != nil {
			t.Errorf("server %s: %v\n%s", name, err, frame)
		}
	}
	for name, frame := range map[string][]byte{
		"subscribe questions":   frameJSON(t, protocol.ClientFrame{Type: protocol.TypeSubscribe, ID: 2, Channel: questionsChannel}),
		"resume moderation":     frameJSON(t, protocol.ClientFrame{Type: protocol.TypeSubscribe, Channel: moderationChannel, Since: u64(5190)}),
		"unsubscribe questions": frameJSON(t, protocol.ClientFrame{Type: protocol.TypeUnsubscribe, Channel: questionsChannel}),
	} {
		if err := v.Client(frame); err != nil {
			t.Errorf("client %s: %v\n%s", name, err, frame)
		}
	}

	leaky := list
	leaky.Questions = append(slices.Clone(list.Questions), question(5190, "pending", 0))
	invalid := map[string]struct {
		frame  []byte
		reason string
	}{
		"pending question on the public channel": {serverFrame(t, protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: questionsChannel, Version: 5190}, leaky), "/data/questions/2"},
		"rejected question in an update": {serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: questionsChannel, Version: 5195, Prev: u64(5190)},
			api.QuestionsUpdate{Questions: []api.Question{question(5190, "rejected", 0)}}), "/data/questions/0"},
		"moderation data on the public channel":    {mutateFrame(t, mSnapshot, func(m map[string]any) { m["channel"] = questionsChannel }), "/data"},
		"questions data on the moderation channel": {mutateFrame(t, qSnapshot, func(m map[string]any) { m["channel"] = moderationChannel }), "/data"},
		"attendee id on the public channel": {mutateFrame(t, qSnapshot, func(m map[string]any) {
			m["data"].(map[string]any)["questions"].([]any)[0].(map[string]any)["attendee"] = "9b37e4ed-f494-478c-b841-454c7cf79933"
		}), "additional properties 'attendee'"},
		"questions as null": {mutateFrame(t, qSnapshot, func(m map[string]any) { m["data"].(map[string]any)["questions"] = nil }), "/data/questions"},
		"session by guid": {mutateFrame(t, qSnapshot, func(m map[string]any) {
			m["channel"] = "questions:abierta-2025:3f1c2a9e-8b7d-4c1e-9a2b-5d6e7f8a9b0c"
		}), "/channel"},
		"update without prev": {mutateFrame(t, qUpdate, func(m map[string]any) { delete(m, "prev") }), "missing property 'prev'"},
		"moderation update without queue": {serverFrame(t, protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: moderationChannel, Version: 5195, Prev: u64(5190)},
			map[string]any{"questions": reject.Questions}), "missing property 'queue'"},
		"vote count keyed by guid": {[]byte(`{"type":"update","channel":"questions:abierta-2025:12","version":5202,"prev":5201,` +
			`"data":{"votes":{"3f1c2a9e-8b7d-4c1e-9a2b-5d6e7f8a9b0c":3}}}`), "does not match pattern"},
		"negative vote count": {[]byte(`{"type":"update","channel":"questions:abierta-2025:12","version":5202,"prev":5201,` +
			`"data":{"votes":{"5133":-1}}}`), "/data/votes/5133"},
		"empty vote counts": {[]byte(`{"type":"update","channel":"questions:abierta-2025:12","version":5202,"prev":5201,"data":{"votes":{}}}`), "/data/votes"},
		"unknown flag": {mutateFrame(t, mSnapshot, func(m map[string]any) {
			m["data"].(map[string]any)["questions"].([]any)[1].(map[string]any)["flags"].([]any)[0].(map[string]any)["kind"] = "rude"
		}), "/kind"},
		"unsubscribed code without message": {[]byte(`{"type":"unsubscribed","channel":"moderation:abierta-2025:12","code":"token_expired"}`), "message"},
		"unsubscribed unknown code":         {[]byte(`{"type":"unsubscribed","channel":"moderation:abierta-2025:12","code":"bored","message":"m"}`), "/code"},
	}
	for name, tt := range invalid {
		err := v.Server(tt.frame)
		if err == nil {
			t.Errorf("server %s passed:\n%s", name, tt.frame)
		} else if !strings.Contains(err.Error(), tt.reason) {
			t.Errorf("server %s failed for another reason than %q: %v", name, tt.reason, err)
		}
	}
	if err := v.Client(frameJSON(t, protocol.ClientFrame{Type: protocol.TypeSubscribe, Channel: "questions:abierta-2025"})); err == nil {
		t.Error("client subscribe to a questions channel without a session passed")
	}
}
