package projection_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/projection"
)

const ev = "ogp-test-2027"

var t0 = time.Date(2027, 4, 1, 12, 0, 0, 0, time.UTC)

// entry is one log entry as the consumer hands it to the store.
type entry struct {
	seq     uint64
	subject string
	at      time.Time
	data    []byte
}

func atSeq(seq uint64) time.Time { return t0.Add(time.Duration(seq) * time.Second) }

func encode(t testing.TB, seq uint64, rec cabildo.Record) entry {
	t.Helper()
	data, err := json.Marshal(rec)
	if err != nil {
		t.Fatalf("encode %s: %v", rec.Type, err)
	}
	return entry{seq: seq, subject: rec.Subject(), at: atSeq(seq), data: data}
}

func (e entry) applyTo(s *projection.Store) { s.Apply(e.seq, e.subject, e.at, e.data) }

// log is a sequence of records with consecutive sequences starting at 1.
type log struct {
	t       testing.TB
	entries []entry
}

func (l *log) add(rec cabildo.Record) uint64 {
	seq := uint64(len(l.entries) + 1)
	l.entries = append(l.entries, encode(l.t, seq, rec))
	return seq
}

func applyAll(s *projection.Store, es []entry) {
	for _, e := range es {
		e.applyTo(s)
	}
}

func costaRica(t testing.TB) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("America/Costa_Rica")
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func testEvent(id string) cabildo.Event {
	return cabildo.Event{ID: id, Name: cabildo.Text{ES: "Encuentro", EN: "Meeting"}, TimeZone: "America/Costa_Rica",
		Days: []cabildo.Day{
			{Date: "2027-04-13", Kind: cabildo.DayUnconference, Start: "08:00", End: "19:00"},
			{Date: "2027-04-14", Kind: cabildo.DayConference, Start: "08:00", End: "19:00"},
		}}
}

func eventPut(id string) cabildo.Record {
	e := testEvent(id)
	return cabildo.Record{Type: cabildo.RecordEventPut, Event: id, EventInfo: &e}
}

func roomPut(event, id string) cabildo.Record {
	return cabildo.Record{Type: cabildo.RecordRoomPut, Event: event, Room: &cabildo.Room{ID: id, Name: cabildo.Text{ES: id}}}
}

func guid(n int) string { return fmt.Sprintf("00000000-0000-4000-8000-%012d", n) }

func session(t testing.TB, n int, room string, hour int) cabildo.Session {
	start := time.Date(2027, 4, 14, hour, 0, 0, 0, costaRica(t))
	return cabildo.Session{GUID: guid(n), Title: cabildo.Text{ES: fmt.Sprintf("Sesión %d", n)}, Kind: cabildo.KindPanel,
		Status: cabildo.StatusScheduled, Language: cabildo.ES, Room: room, Start: start, End: start.Add(time.Hour)}
}

func sessionRec(typ cabildo.RecordType, s cabildo.Session) cabildo.Record {
	return cabildo.Record{Type: typ, Event: ev, Session: &s}
}

// read copies what a test needs out of an event's state.
func read[T any](t testing.TB, s *projection.Store, event string, fn func(*projection.EventState) T) T {
	t.Helper()
	var v T
	if !s.Read(event, func(st *projection.EventState) { v = fn(st) }) {
		t.Fatalf("event %q does not exist", event)
	}
	return v
}

// changesSince copies ChangesSince out of the store; it fails the test on an error.
func changesSince(t testing.TB, s *projection.Store, since uint64) []cabildo.Change {
	t.Helper()
	return read(t, s, ev, func(st *projection.EventState) []cabildo.Change {
		c, err := st.ChangesSince(since)
		if err != nil {
			t.Errorf("ChangesSince(%d): %v", since, err)
		}
		return slices.Clone(c)
	})
}

// since returns ChangesSince as (version type) pairs, or the error code.
func since(t testing.TB, s *projection.Store, v uint64) ([]string, cabildo.Code) {
	t.Helper()
	var (
		out  []string
		code cabildo.Code
	)
	read(t, s, ev, func(st *projection.EventState) bool {
		cs, err := st.ChangesSince(v)
		if err != nil {
			code = cabildo.ErrorCode(err)
			return false
		}
		for _, c := range cs {
			out = append(out, fmt.Sprintf("%d %s", c.Version, c.Type))
		}
		return true
	})
	return out, code
}

func TestApplyEntities(t *testing.T) {
	s := projection.New(projection.Options{})
	l := &log{t: t}
	l.add(eventPut(ev))
	l.add(roomPut(ev, "sala-1"))
	l.add(cabildo.Record{Type: cabildo.RecordTrackPut, Event: ev, Track: &cabildo.Track{ID: "datos", Name: cabildo.Text{ES: "Datos"}}})
	l.add(cabildo.Record{Type: cabildo.RecordSpeakerPut, Event: ev, Speaker: &cabildo.Speaker{ID: "ana", Name: "Ana"}})
	renamed := roomPut(ev, "sala-1")
	renamed.Room.Name = cabildo.Text{ES: "Sala Uno"}
	l.add(renamed)
	changed := eventPut(ev)
	changed.EventInfo.Name.EN = "The meeting"
	l.add(changed)
	applyAll(s, l.entries)

	type state struct {
		Version, EventVersion, Horizon uint64
		Updated                        time.Time
		Name                           cabildo.Text
		Room                           cabildo.Room
		Track                          string
		Speaker                        string
		Metas                          []projection.Meta
	}
	got := read(t, s, ev, func(st *projection.EventState) state {
		p := st.Programme
		return state{Version: st.Version, EventVersion: st.EventVersion, Horizon: st.Horizon, Updated: st.Updated,
			Name: p.Event.Name, Room: p.Rooms["sala-1"], Track: p.Tracks["datos"].ID, Speaker: p.Speakers["ana"].Name,
			Metas: []projection.Meta{st.Rooms["sala-1"], st.Tracks["datos"], st.Speakers["ana"]}}
	})
	want := state{Version: 6, EventVersion: 6, Horizon: 0, Updated: atSeq(6),
		Name: cabildo.Text{ES: "Encuentro", EN: "The meeting"},
		Room: cabildo.Room{ID: "sala-1", Name: cabildo.Text{ES: "Sala Uno"}}, Track: "datos", Speaker: "Ana",
		Metas: []projection.Meta{{Version: 5, Updated: atSeq(5)}, {Version: 3, Updated: atSeq(3)}, {Version: 4, Updated: atSeq(4)}}}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("state (-got +want):\n%s", diff)
	}
	if got, want := s.Seq(), uint64(6); got != want {
		t.Errorf("Seq = %d, want %d", got, want)
	}
	gotChanges, _ := since(t, s, 0)
	wantChanges := []string{"2 room_updated", "3 track_updated", "4 speaker_updated", "5 room_updated", "6 event_updated"}
	if diff := cmp.Diff(gotChanges, wantChanges); diff != "" {
		t.Errorf("changes (-got +want):\n%s", diff)
	}
	if s.Read("other-event", func(*projection.EventState) { t.Error("called for a missing event") }) {
		t.Error("Read of a missing event reported true")
	}
}

func TestApplySessions(t *testing.T) {
	s := projection.New(projection.Options{})
	l := &log{t: t}
	l.add(eventPut(ev))
	l.add(roomPut(ev, "sala-1"))
	l.add(roomPut(ev, "sala-2"))
	a := session(t, 1, "sala-1", 10)
	a.ID = 999                                         // the log gives ids, never the writer
	l.add(sessionRec(cabildo.RecordSessionCreated, a)) // 4
	b := session(t, 2, "sala-2", 10)
	l.add(sessionRec(cabildo.RecordSessionCreated, b)) // 5
	moved := a.Clone()
	moved.Room, moved.ID = "sala-2", 12345
	l.add(sessionRec(cabildo.RecordSessionUpdated, moved)) // 6
	l.add(sessionRec(cabildo.RecordSessionDeleted, b))     // 7
	applyAll(s, l.entries)

	type state struct {
		IDs      map[string]int64
		Rooms    map[string]string
		Meta     map[string]projection.Meta
		ByID     map[int64]string
		Versions []uint64
	}
	got := read(t, s, ev, func(st *projection.EventState) state {
		out := state{IDs: map[string]int64{}, Rooms: map[string]string{}, Meta: map[string]projection.Meta{}, ByID: map[int64]string{}}
		for g, x := range st.Programme.Sessions {
			out.IDs[g], out.Rooms[g] = x.ID, x.Room
		}
		for g, m := range st.Sessions {
			out.Meta[g] = m
		}
		for id, g := range st.ByID {
			out.ByID[id] = g
		}
		return out
	})
	want := state{
		IDs:   map[string]int64{guid(1): 4},
		Rooms: map[string]string{guid(1): "sala-2"},
		Meta:  map[string]projection.Meta{guid(1): {Version: 6, Updated: atSeq(6)}},
		ByID:  map[int64]string{4: guid(1), 5: guid(2)},
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("state (-got +want):\n%s", diff)
	}
	gotChanges, _ := since(t, s, 3)
	wantChanges := []string{"4 session_added", "5 session_added", "6 session_moved", "7 session_removed"}
	if diff := cmp.Diff(gotChanges, wantChanges); diff != "" {
		t.Errorf("changes (-got +want):\n%s", diff)
	}
	cs := changesSince(t, s, 6)
	if diff := cmp.Diff(cs, []cabildo.Change{{Version: 7, At: atSeq(7), Type: cabildo.ChangeSessionRemoved,
		Session: &cabildo.SessionRef{ID: 5, GUID: guid(2)}}}); diff != "" {
		t.Errorf("removal change (-got +want):\n%s", diff)
	}

	// The session's lookup helper agrees with the maps.
	read(t, s, ev, func(st *projection.EventState) bool {
		if _, m, ok := st.Session(guid(1)); !ok || m.Version != 6 {
			t.Errorf("Session(%s) = %v, %v; want version 6", guid(1), m, ok)
		}
		if _, _, ok := st.Session(guid(2)); ok {
			t.Errorf("deleted session %s still found", guid(2))
		}
		return true
	})
}

func TestApplySkips(t *testing.T) {
	base := func(t *testing.T, opts projection.Options) *projection.Store {
		s := projection.New(opts)
		l := &log{t: t}
		l.add(eventPut(ev))
		l.add(roomPut(ev, "sala-1"))
		l.add(sessionRec(cabildo.RecordSessionCreated, session(t, 1, "sala-1", 10)))
		applyAll(s, l.entries)
		return s
	}
	tests := []struct {
		name    string
		seq     uint64
		subject string
		data    func(t *testing.T) []byte
		wantSeq uint64
	}{
		{"not json", 4, ev + ".session.x", func(*testing.T) []byte { return []byte("{not json") }, 4},
		{"empty", 4, ev + ".session.x", func(*testing.T) []byte { return nil }, 4},
		{"no payload", 4, ev + ".room.x", func(t *testing.T) []byte {
			return encode(t, 4, cabildo.Record{Type: cabildo.RecordRoomPut, Event: ev}).data
		}, 4},
		{"unknown type", 4, ev + ".room.x", func(t *testing.T) []byte {
			r := roomPut(ev, "sala-2")
			r.Type = "room.exploded"
			return encode(t, 4, r).data
		}, 4},
		{"bad event id", 4, "X.room.sala-2", func(t *testing.T) []byte { return encode(t, 4, roomPut("X", "sala-2")).data }, 4},
		{"missing event", 4, "nope.room.sala-2", func(t *testing.T) []byte { return encode(t, 4, roomPut("nope", "sala-2")).data }, 4},
		{"create of an existing session", 4, ev + ".session." + guid(1), func(t *testing.T) []byte {
			return encode(t, 4, sessionRec(cabildo.RecordSessionCreated, session(t, 1, "sala-2", 12))).data
		}, 4},
		{"update of a missing session", 4, ev + ".session." + guid(9), func(t *testing.T) []byte {
			return encode(t, 4, sessionRec(cabildo.RecordSessionUpdated, session(t, 9, "sala-2", 12))).data
		}, 4},
		{"sequence already applied", 3, ev + ".room.sala-9", func(t *testing.T) []byte { return encode(t, 3, roomPut(ev, "sala-9")).data }, 3},
		{"sequence far behind", 1, ev + ".room.sala-9", func(t *testing.T) []byte { return encode(t, 1, roomPut(ev, "sala-9")).data }, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var applied []uint64
			s := base(t, projection.Options{OnApply: func(a projection.Applied) { applied = append(applied, a.Seq) }})
			applied = nil
			_, before, err := s.DumpJSON()
			if err != nil {
				t.Fatal(err)
			}
			s.Apply(tt.seq, tt.subject, atSeq(tt.seq), tt.data(t))
			if got := s.Seq(); got != tt.wantSeq {
				t.Errorf("Seq = %d, want %d", got, tt.wantSeq)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := s.WaitFor(ctx, tt.wantSeq); err != nil {
				t.Errorf("WaitFor(%d) = %v", tt.wantSeq, err)
			}
			// Nothing but the sequences moved: the log counts a skipped entry on its
			// subject, so the next write there must expect it.
			wantSubject := s.SubjectSeq(tt.subject)
			if tt.seq > 3 {
				wantSubject = tt.seq
			}
			_, after, err := s.DumpJSON()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(withoutSeq(t, after), withoutSeq(t, before)); diff != "" {
				t.Errorf("state changed (-got +want):\n%s", diff)
			}
			if got := s.SubjectSeq(tt.subject); got != wantSubject {
				t.Errorf("SubjectSeq(%s) = %d after a skipped entry, want %d", tt.subject, got, wantSubject)
			}
			if len(applied) != 0 {
				t.Errorf("OnApply called for %v", applied)
			}
		})
	}
}

// withoutSeq decodes a snapshot and drops its sequence, to compare the rest.
func withoutSeq(t testing.TB, data []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	delete(m, "seq")
	delete(m, "subjects") // compared on their own: skipped entries count there
	return m
}

func TestApplySkippedEntryIsNotAnnounced(t *testing.T) {
	var got []uint64
	s := projection.New(projection.Options{OnApply: func(a projection.Applied) { got = append(got, a.Seq) }})
	l := &log{t: t}
	l.add(eventPut(ev))
	l.add(roomPut("nope", "sala-1")) // missing event
	l.add(roomPut(ev, "sala-1"))
	applyAll(s, l.entries)
	s.Apply(4, "x", atSeq(4), []byte("garbage"))
	l.entries[2].applyTo(s) // replay: ignored
	if diff := cmp.Diff(got, []uint64{1, 3}); diff != "" {
		t.Errorf("OnApply seqs (-got +want):\n%s", diff)
	}
}

func TestOnApply(t *testing.T) {
	var got []projection.Applied
	s := projection.New(projection.Options{OnApply: func(a projection.Applied) { got = append(got, a) }})
	l := &log{t: t}
	l.add(eventPut(ev))
	l.add(roomPut(ev, "sala-1"))
	l.add(roomPut(ev, "sala-2"))
	a := session(t, 1, "sala-1", 10)
	l.add(sessionRec(cabildo.RecordSessionCreated, a))
	moved := a.Clone()
	moved.Room, moved.Start, moved.End = "sala-2", a.Start.Add(30*time.Minute), a.End.Add(30*time.Minute)
	reason := &cabildo.Reason{Code: cabildo.ReasonRoomChange}
	upd := sessionRec(cabildo.RecordSessionUpdated, moved)
	upd.Reason = reason
	l.add(upd)
	applyAll(s, l.entries)

	type summary struct {
		Seq     uint64
		Event   string
		Type    cabildo.RecordType
		Changes []string
	}
	var sums []summary
	for _, x := range got {
		sm := summary{Seq: x.Seq, Event: x.Event, Type: x.Record.Type}
		for _, c := range x.Changes {
			if c.Version != x.Seq || !c.At.Equal(atSeq(x.Seq)) {
				t.Errorf("change %s of seq %d has version %d at %v", c.Type, x.Seq, c.Version, c.At)
			}
			sm.Changes = append(sm.Changes, string(c.Type))
		}
		sums = append(sums, sm)
	}
	want := []summary{
		{1, ev, cabildo.RecordEventPut, nil},
		{2, ev, cabildo.RecordRoomPut, []string{"room_updated"}},
		{3, ev, cabildo.RecordRoomPut, []string{"room_updated"}},
		{4, ev, cabildo.RecordSessionCreated, []string{"session_added"}},
		{5, ev, cabildo.RecordSessionUpdated, []string{"session_moved", "session_delayed"}},
	}
	if diff := cmp.Diff(sums, want); diff != "" {
		t.Errorf("OnApply (-got +want):\n%s", diff)
	}
	last := got[len(got)-1]
	for _, c := range last.Changes {
		if c.Reason == nil || *c.Reason != *reason {
			t.Errorf("change %s reason = %v, want %v", c.Type, c.Reason, reason)
		}
	}
	if got, want := last.Changes[1].DelayMinutes, 30; got != want {
		t.Errorf("delay = %d, want %d", got, want)
	}
	// What listeners got is what the history holds.
	hist := changesSince(t, s, 4)
	if diff := cmp.Diff(hist, last.Changes); diff != "" {
		t.Errorf("history vs OnApply (-got +want):\n%s", diff)
	}
}

func TestSubjectSeqAndIdempotent(t *testing.T) {
	s := projection.New(projection.Options{})
	l := &log{t: t}
	l.add(eventPut(ev))
	l.add(eventPut("otro-2027"))
	r := roomPut(ev, "sala-1")
	r.IdempotencyKey, r.RequestHash = "k1", "h1"
	l.add(r) // 3
	l.add(roomPut(ev, "sala-2"))
	r2 := roomPut(ev, "sala-1")
	r2.IdempotencyKey, r2.RequestHash = "k2", "h2"
	l.add(r2) // 5
	x := roomPut("otro-2027", "sala-1")
	x.IdempotencyKey, x.RequestHash = "k1", "other"
	l.add(x) // 6
	applyAll(s, l.entries)

	subjects := []struct {
		subject string
		want    uint64
	}{
		{cabildo.EventSubject(ev), 1},
		{cabildo.EventSubject("otro-2027"), 2},
		{ev + ".room.sala-1", 5},
		{ev + ".room.sala-2", 4},
		{"otro-2027.room.sala-1", 6},
		{ev + ".room.sala-3", 0},
		{"", 0},
	}
	for _, tt := range subjects {
		if got := s.SubjectSeq(tt.subject); got != tt.want {
			t.Errorf("SubjectSeq(%q) = %d, want %d", tt.subject, got, tt.want)
		}
	}

	idem := []struct {
		event, key string
		want       projection.Idempotent
		ok         bool
	}{
		{ev, "k1", projection.Idempotent{Seq: 3, RequestHash: "h1", Subject: ev + ".room.sala-1", At: atSeq(3).UTC()}, true},
		{ev, "k2", projection.Idempotent{Seq: 5, RequestHash: "h2", Subject: ev + ".room.sala-1", At: atSeq(5).UTC()}, true},
		{"otro-2027", "k1", projection.Idempotent{Seq: 6, RequestHash: "other", Subject: "otro-2027.room.sala-1", At: atSeq(6).UTC()}, true},
		{"otro-2027", "k2", projection.Idempotent{}, false},
		{ev, "k3", projection.Idempotent{}, false},
		{ev, "", projection.Idempotent{}, false},
	}
	for _, tt := range idem {
		got, ok := s.Idempotent(tt.event, tt.key)
		if ok != tt.ok || got != tt.want {
			t.Errorf("Idempotent(%q, %q) = %+v, %v; want %+v, %v", tt.event, tt.key, got, ok, tt.want, tt.ok)
		}
	}

	var events []string
	if got := s.Each(func(st *projection.EventState) { events = append(events, st.Programme.Event.ID) }); got != 6 {
		t.Errorf("Each returned seq %d, want 6", got)
	}
	slices.Sort(events)
	if diff := cmp.Diff(events, []string{ev, "otro-2027"}); diff != "" {
		t.Errorf("Each events (-got +want):\n%s", diff)
	}
	// Nothing of an event created later was ever dropped: every since is still served.
	if got := read(t, s, "otro-2027", func(st *projection.EventState) uint64 { return st.Horizon }); got != 0 {
		t.Errorf("Horizon of an event created at seq 2 = %d, want 0", got)
	}
	if got := read(t, s, ev, func(st *projection.EventState) uint64 { return st.Meta() }); got != 1 {
		t.Errorf("Meta = %d, want 1", got)
	}
}

// historyLog is a small log with a record yielding two changes (version 5).
func historyLog(t *testing.T) *log {
	l := &log{t: t}
	l.add(eventPut(ev))          // 1: no change
	l.add(roomPut(ev, "sala-1")) // 2: room_updated
	l.add(roomPut(ev, "sala-2")) // 3: room_updated
	a := session(t, 1, "sala-1", 10)
	l.add(sessionRec(cabildo.RecordSessionCreated, a)) // 4: added
	moved := a.Clone()
	moved.Room, moved.Start, moved.End = "sala-2", a.Start.Add(time.Hour), a.End.Add(time.Hour)
	l.add(sessionRec(cabildo.RecordSessionUpdated, moved)) // 5: moved + delayed
	cancelled := moved.Clone()
	cancelled.Status = cabildo.StatusCancelled
	l.add(sessionRec(cabildo.RecordSessionCancelled, cancelled)) // 6: cancelled
	l.add(sessionRec(cabildo.RecordSessionDeleted, cancelled))   // 7: removed
	return l
}

func TestChangesSince(t *testing.T) {
	s := projection.New(projection.Options{})
	applyAll(s, historyLog(t).entries)
	all := []string{"2 room_updated", "3 room_updated", "4 session_added", "5 session_moved",
		"5 session_delayed", "6 session_cancelled", "7 session_removed"}
	tests := []struct {
		since uint64
		want  []string
		code  cabildo.Code
	}{
		{0, all, ""},
		{1, all, ""},
		{4, all[3:], ""},
		{5, all[5:], ""},
		{6, all[6:], ""},
		{7, nil, ""},
		{8, nil, cabildo.CodeVersionUnknown},
		{1 << 40, nil, cabildo.CodeVersionUnknown},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.since), func(t *testing.T) {
			got, code := since(t, s, tt.since)
			if code != tt.code {
				t.Fatalf("ChangesSince(%d) code = %q, want %q", tt.since, code, tt.code)
			}
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("ChangesSince(%d) (-got +want):\n%s", tt.since, diff)
			}
		})
	}
}

func TestChangesSinceTrimmed(t *testing.T) {
	s := projection.New(projection.Options{MaxChanges: 3})
	applyAll(s, historyLog(t).entries)
	tests := []struct {
		since uint64
		want  []string
		code  cabildo.Code
	}{
		{0, nil, cabildo.CodeVersionTooOld},
		{4, nil, cabildo.CodeVersionTooOld},
		{5, []string{"6 session_cancelled", "7 session_removed"}, ""},
		{7, nil, ""},
		{8, nil, cabildo.CodeVersionUnknown},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.since), func(t *testing.T) {
			got, code := since(t, s, tt.since)
			if code != tt.code {
				t.Fatalf("ChangesSince(%d) code = %q, want %q", tt.since, code, tt.code)
			}
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("ChangesSince(%d) (-got +want):\n%s", tt.since, diff)
			}
		})
	}
}

// TestTrimmingKeepsWholeVersions checks, after every entry and for every small bound, that
// any version a trimmed store still answers for gets exactly what an untrimmed store gives,
// and that anything older is refused rather than answered in part.
func TestTrimmingKeepsWholeVersions(t *testing.T) {
	g := newGen(t, 7)
	g.run(60)
	logs := map[string]*log{"history": historyLog(t), "generated": g.log}
	for _, name := range []string{"history", "generated"} {
		l := logs[name]
		for _, max := range []int{1, 2, 3, 5, 8} {
			t.Run(fmt.Sprintf("%s/max%d", name, max), func(t *testing.T) {
				full := projection.New(projection.Options{})
				trimmed := projection.New(projection.Options{MaxChanges: max})
				for _, e := range l.entries {
					e.applyTo(full)
					e.applyTo(trimmed)
					if !full.Read(ev, func(*projection.EventState) {}) {
						continue
					}
					type view struct {
						Version, Horizon uint64
						N                int
					}
					tv := read(t, trimmed, ev, func(st *projection.EventState) view {
						return view{st.Version, st.Horizon, len(st.Changes)}
					})
					if tv.N > max {
						t.Fatalf("seq %d: %d changes kept, max %d", e.seq, tv.N, max)
					}
					for v := uint64(0); v <= tv.Version+1; v++ {
						got, gotCode := since(t, trimmed, v)
						want, wantCode := since(t, full, v)
						if v < tv.Horizon {
							want, wantCode = nil, cabildo.CodeVersionTooOld
						}
						if gotCode != wantCode || !slices.Equal(got, want) {
							t.Fatalf("seq %d horizon %d: ChangesSince(%d) = %v %q, want %v %q",
								e.seq, tv.Horizon, v, got, gotCode, want, wantCode)
						}
					}
				}
			})
		}
	}
}

func TestWaitFor(t *testing.T) {
	s := projection.New(projection.Options{})
	l := historyLog(t)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- s.WaitFor(ctx, 3) }()
	applyAll(s, l.entries[:2])
	select {
	case err := <-errc:
		t.Fatalf("WaitFor(3) returned %v at seq 2", err)
	default:
	}
	l.entries[2].applyTo(s)
	if err := <-errc; err != nil {
		t.Fatalf("WaitFor(3) = %v", err)
	}

	// Already reached: immediate, even with a done context.
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	for _, seq := range []uint64{0, 1, 3} {
		if err := s.WaitFor(done, seq); err != nil {
			t.Errorf("WaitFor(%d) at seq 3 = %v", seq, err)
		}
	}

	// Not reached: times out with the context and says so with a code.
	short, cancelShort := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancelShort()
	err := s.WaitFor(short, 4)
	if got, want := cabildo.ErrorCode(err), cabildo.CodeTimeout; got != want {
		t.Errorf("WaitFor(4) code = %q (%v), want %q", got, err, want)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitFor(4) = %v, want it to wrap context.DeadlineExceeded", err)
	}

	// Many waiters on different sequences all wake up.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for _, seq := range []uint64{4, 5, 6, 7} {
		wg.Go(func() {
			if err := s.WaitFor(ctx, seq); err != nil {
				errs <- fmt.Errorf("WaitFor(%d): %w", seq, err)
			}
		})
	}
	applyAll(s, l.entries[3:])
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestWaitForSkippedEntry(t *testing.T) {
	s := projection.New(projection.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- s.WaitFor(ctx, 1) }()
	s.Apply(1, "x", atSeq(1), []byte("not a record"))
	if err := <-errc; err != nil {
		t.Fatalf("WaitFor on a skipped entry = %v", err)
	}
}

func TestSnapshotRestore(t *testing.T) {
	g := newGen(t, 3)
	g.run(80)
	src := projection.New(projection.Options{})
	applyAll(src, g.log.entries)
	seq, data, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if want := uint64(len(g.log.entries)); seq != want {
		t.Fatalf("Snapshot seq = %d, want %d", seq, want)
	}
	dst := projection.New(projection.Options{})
	got, err := dst.Restore(data)
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got != seq || dst.Seq() != seq {
		t.Errorf("Restore = %d, Seq = %d; want %d", got, dst.Seq(), seq)
	}
	compareStores(t, dst, src)

	// A restored store wakes waiters and takes the tail.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := dst.WaitFor(ctx, seq); err != nil {
		t.Errorf("WaitFor(%d) after Restore = %v", seq, err)
	}
}

func TestRestoreRefuses(t *testing.T) {
	src := projection.New(projection.Options{})
	applyAll(src, historyLog(t).entries)
	_, data, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	_, dump, err := src.DumpJSON()
	if err != nil {
		t.Fatal(err)
	}
	var wrongFormat map[string]any
	if err := json.Unmarshal(dump, &wrongFormat); err != nil {
		t.Fatal(err)
	}
	wrongFormat["format"] = 99
	other, err := json.Marshal(wrongFormat)
	if err != nil {
		t.Fatal(err)
	}
	empty := func(*testing.T) *projection.Store { return projection.New(projection.Options{}) }
	// Format 3 damaged: cut short, a byte flipped in the last event, a section length
	// that overruns, and the header alone.
	flipped := bytes.Clone(data)
	flipped[len(flipped)-10] ^= 0xff
	magic := data[:bytes.IndexByte(data, '\n')+1]
	overrun := append(bytes.Clone(magic), 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3)
	tests := []struct {
		name  string
		store func(t *testing.T) *projection.Store
		data  []byte
	}{
		{"non-empty store", func(t *testing.T) *projection.Store {
			s := projection.New(projection.Options{})
			historyLog(t).entries[0].applyTo(s)
			return s
		}, data},
		{"non-empty store, format 2", func(t *testing.T) *projection.Store {
			s := projection.New(projection.Options{})
			historyLog(t).entries[0].applyTo(s)
			return s
		}, dump},
		{"store that only skipped an entry", func(t *testing.T) *projection.Store {
			s := projection.New(projection.Options{})
			s.Apply(1, "x", atSeq(1), []byte("junk"))
			return s
		}, data},
		{"not json", empty, []byte("{")},
		{"other format", empty, other},
		{"empty", empty, nil},
		{"format 3 cut short", empty, data[:len(data)/2]},
		{"format 3 with a byte flipped", empty, flipped},
		{"format 3 section overruns", empty, overrun},
		{"format 3 magic alone", empty, magic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.store(t)
			before := s.Seq()
			if _, err := s.Restore(tt.data); err == nil {
				t.Fatal("Restore succeeded")
			}
			if got := s.Seq(); got != before {
				t.Errorf("Seq after a refused Restore = %d, want %d", got, before)
			}
			if tt.name != "non-empty store" && tt.name != "non-empty store, format 2" && tt.name != "store that only skipped an entry" {
				n := 0
				s.Each(func(*projection.EventState) { n++ })
				if n != 0 {
					t.Errorf("a refused Restore left %d events", n)
				}
			}
		})
	}
}

// compareStores checks that two stores hold the same state: same snapshot bytes, same
// programmes and change histories.
func compareStores(t *testing.T, got, want *projection.Store) {
	t.Helper()
	gseq, gdata, err := got.DumpJSON()
	if err != nil {
		t.Fatal(err)
	}
	wseq, wdata, err := want.DumpJSON()
	if err != nil {
		t.Fatal(err)
	}
	if gseq != wseq {
		t.Errorf("seq = %d, want %d", gseq, wseq)
	}
	if string(gdata) != string(wdata) {
		var g, w map[string]any
		_ = json.Unmarshal(gdata, &g)
		_ = json.Unmarshal(wdata, &w)
		t.Errorf("snapshots differ (-got +want):\n%s", cmp.Diff(g, w))
	}
	var events []string
	want.Each(func(st *projection.EventState) { events = append(events, st.Programme.Event.ID) })
	if len(events) == 0 {
		t.Fatal("no events to compare")
	}
	for _, id := range events {
		want.Read(id, func(w *projection.EventState) {
			if !got.Read(id, func(g *projection.EventState) {
				if diff := cmp.Diff(g.Programme, w.Programme); diff != "" {
					t.Errorf("event %s programme (-got +want):\n%s", id, diff)
				}
				gc, gerr := g.ChangesSince(g.Horizon)
				wc, werr := w.ChangesSince(w.Horizon)
				if gerr != nil || werr != nil {
					t.Errorf("event %s: ChangesSince(horizon) errors %v, %v", id, gerr, werr)
				}
				if diff := cmp.Diff(gc, wc); diff != "" {
					t.Errorf("event %s changes (-got +want):\n%s", id, diff)
				}
				if diff := cmp.Diff(g.ByID, w.ByID); diff != "" {
					t.Errorf("event %s ByID (-got +want):\n%s", id, diff)
				}
			}) {
				t.Errorf("event %s missing", id)
			}
		})
	}
}

// TestRestoreThenTailEqualsReplay is the property that makes snapshots safe: a store
// restored from a snapshot taken at any sequence N, then fed N+1..., ends where a store
// that applied everything from scratch ends.
func TestRestoreThenTailEqualsReplay(t *testing.T) {
	g := newGen(t, 20270413)
	g.run(300)
	es := g.log.entries
	for _, max := range []int{0, 40} {
		full := projection.New(projection.Options{MaxChanges: max})
		applyAll(full, es)
		cuts := []int{1, 2, 5, 17, len(es) / 3, len(es) / 2, len(es) - 1, len(es)}
		for _, n := range cuts {
			t.Run(fmt.Sprintf("max%d/at%d", max, n), func(t *testing.T) {
				a := projection.New(projection.Options{MaxChanges: max})
				applyAll(a, es[:n])
				seq, data, err := a.Snapshot()
				if err != nil {
					t.Fatal(err)
				}
				if seq != uint64(n) {
					t.Fatalf("snapshot seq = %d, want %d", seq, n)
				}
				b := projection.New(projection.Options{MaxChanges: max})
				if _, err := b.Restore(data); err != nil {
					t.Fatalf("Restore: %v", err)
				}
				if n > 1 {
					compareStores(t, b, a)
				}
				applyAll(b, es[max0(n-3):]) // overlapping replay, as after a reconnect
				compareStores(t, b, full)
			})
		}
	}
}

func max0(n int) int { return max(n, 0) }

// TestConcurrentReads runs readers against a store that another goroutine is applying to;
// run with -race. Readers also check that what they see only moves forward.
func TestConcurrentReads(t *testing.T) {
	g := newGen(t, 11)
	g.run(200)
	s := projection.New(projection.Options{MaxChanges: 50})
	done := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	reader := func(read func() (uint64, error)) {
		defer wg.Done()
		var last uint64
		for {
			select {
			case <-done:
				return
			default:
			}
			v, err := read()
			if err != nil {
				errs <- err
				return
			}
			if v < last {
				errs <- fmt.Errorf("went back from %d to %d", last, v)
				return
			}
			last = v
		}
	}
	wg.Add(6)
	go reader(func() (uint64, error) { return s.Seq(), nil })
	go reader(func() (uint64, error) {
		var v uint64
		var err error
		s.Read(ev, func(st *projection.EventState) {
			v = st.Version
			for _, x := range st.Programme.SortedSessions() {
				if st.ByID[x.ID] != x.GUID {
					err = fmt.Errorf("session %d not in ByID", x.ID)
				}
			}
			cs, cerr := st.ChangesSince(st.Horizon)
			if cerr != nil {
				err = cerr
			}
			for i := 1; i < len(cs); i++ {
				if cs[i].Version < cs[i-1].Version {
					err = fmt.Errorf("changes out of order at %d", i)
				}
			}
		})
		return v, err
	})
	go reader(func() (uint64, error) {
		n := 0
		seq := s.Each(func(st *projection.EventState) { n += len(st.Programme.Sessions) + len(st.Programme.Rooms) })
		return seq, nil
	})
	go reader(func() (uint64, error) { return s.SubjectSeq(cabildo.EventSubject(ev)), nil })
	go reader(func() (uint64, error) {
		_, _ = s.Idempotent(ev, "key-1")
		return 0, nil
	})
	go reader(func() (uint64, error) {
		seq, _, err := s.Snapshot()
		return seq, err
	})
	applyAll(s, g.log.entries)
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	want := projection.New(projection.Options{MaxChanges: 50})
	applyAll(want, g.log.entries)
	compareStores(t, s, want)
}

// gen builds a random but valid programme history through the domain: every session
// operation is checked with Programme.CheckSession against the state the log has built so
// far, like the use cases do, and only valid ones are appended.
type gen struct {
	t     testing.TB
	rng   *rand.Rand
	log   *log
	truth *projection.Store
	n     int // guids handed out
	keys  int
}

var (
	genRooms    = []string{"sala-1", "sala-2", "sala-3"}
	genSpeakers = []string{"ana", "luis", "eva", "max"}
)

func newGen(t testing.TB, seed uint64) *gen {
	g := &gen{t: t, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), log: &log{t: t},
		truth: projection.New(projection.Options{})}
	g.add(eventPut(ev))
	g.add(eventPut("otro-2027")) // a second event, so histories start at different places
	for _, r := range genRooms {
		g.add(roomPut(ev, r))
	}
	g.add(roomPut("otro-2027", "sala-1"))
	g.add(cabildo.Record{Type: cabildo.RecordTrackPut, Event: ev, Track: &cabildo.Track{ID: "datos", Name: cabildo.Text{ES: "Datos"}}})
	for _, sp := range genSpeakers {
		g.add(cabildo.Record{Type: cabildo.RecordSpeakerPut, Event: ev, Speaker: &cabildo.Speaker{ID: sp, Name: sp}})
	}
	return g
}

func (g *gen) add(rec cabildo.Record) {
	if g.rng.IntN(5) == 0 {
		g.keys++
		rec.IdempotencyKey, rec.RequestHash = fmt.Sprintf("key-%d", g.keys), fmt.Sprintf("hash-%d", g.rng.IntN(1000))
	}
	seq := g.log.add(rec)
	g.log.entries[seq-1].applyTo(g.truth)
	if g.truth.Seq() != seq {
		g.t.Fatalf("generator: entry %d not applied", seq)
	}
}

// run appends ops valid session operations.
func (g *gen) run(ops int) {
	for done, tries := 0, 0; done < ops; tries++ {
		if tries > 50*ops {
			g.t.Fatalf("generator: only %d of %d operations after %d tries", done, ops, tries)
		}
		var rec *cabildo.Record
		g.truth.Read(ev, func(st *projection.EventState) { rec = g.op(st) })
		if rec != nil {
			g.add(*rec)
			done++
		}
		if g.rng.IntN(25) == 0 { // now and then a speaker's details change
			sp := genSpeakers[g.rng.IntN(len(genSpeakers))]
			g.add(cabildo.Record{Type: cabildo.RecordSpeakerPut, Event: ev, Speaker: &cabildo.Speaker{ID: sp, Name: sp,
				Affiliation: cabildo.Text{ES: fmt.Sprint("Org ", g.rng.IntN(100))}}})
		}
	}
}

var genReasons = []cabildo.ReasonCode{cabildo.ReasonRunningLate, cabildo.ReasonRoomChange, cabildo.ReasonWeather}

func (g *gen) reason() *cabildo.Reason {
	if g.rng.IntN(2) == 0 {
		return nil
	}
	return &cabildo.Reason{Code: genReasons[g.rng.IntN(len(genReasons))]}
}

// op returns a valid record for a random operation, or nil when the one it tried is not.
func (g *gen) op(st *projection.EventState) *cabildo.Record {
	p := st.Programme
	sessions := p.SortedSessions()
	pick := func(status cabildo.Status) (cabildo.Session, bool) {
		var c []cabildo.Session
		for _, s := range sessions {
			if status == "" || s.Status == status {
				c = append(c, s)
			}
		}
		if len(c) == 0 {
			return cabildo.Session{}, false
		}
		return c[g.rng.IntN(len(c))].Clone(), true
	}
	force := g.rng.IntN(8) == 0
	switch k := g.rng.IntN(10); {
	case len(sessions) < 4 || k < 3:
		g.n++
		s := g.randomSession(g.n)
		if p.CheckSession(&s, force) != nil {
			return nil
		}
		return &cabildo.Record{Type: cabildo.RecordSessionCreated, Event: ev, Session: &s}
	case k < 7:
		s, ok := pick("")
		if !ok {
			return nil
		}
		g.mutate(&s)
		if p.CheckSession(&s, force) != nil {
			return nil
		}
		return &cabildo.Record{Type: cabildo.RecordSessionUpdated, Event: ev, Session: &s, Reason: g.reason()}
	case k < 8:
		s, ok := pick(cabildo.StatusScheduled)
		if !ok {
			return nil
		}
		r := g.reason()
		s.Status, s.Cancellation = cabildo.StatusCancelled, r
		if p.CheckSession(&s, force) != nil {
			return nil
		}
		return &cabildo.Record{Type: cabildo.RecordSessionCancelled, Event: ev, Session: &s, Reason: r}
	case k < 9:
		s, ok := pick(cabildo.StatusCancelled)
		if !ok {
			return nil
		}
		s.Status, s.Cancellation = cabildo.StatusScheduled, nil
		if p.CheckSession(&s, force) != nil {
			return nil
		}
		return &cabildo.Record{Type: cabildo.RecordSessionReinstated, Event: ev, Session: &s}
	default:
		s, ok := pick("")
		if !ok {
			return nil
		}
		return &cabildo.Record{Type: cabildo.RecordSessionDeleted, Event: ev, Session: &s, Reason: g.reason()}
	}
}

func (g *gen) randomSession(n int) cabildo.Session {
	loc := costaRica(g.t)
	day := 13 + g.rng.IntN(2)
	start := time.Date(2027, 4, day, 8, 0, 0, 0, loc).Add(time.Duration(g.rng.IntN(20)) * 30 * time.Minute)
	s := cabildo.Session{GUID: guid(n), Title: cabildo.Text{ES: fmt.Sprintf("Sesión %d", n), EN: fmt.Sprintf("Session %d", n)},
		Kind: cabildo.SessionKinds[g.rng.IntN(len(cabildo.SessionKinds))], Status: cabildo.StatusScheduled,
		Language: cabildo.Langs[g.rng.IntN(2)], Room: genRooms[g.rng.IntN(len(genRooms))],
		Start: start, End: start.Add(time.Duration(1+g.rng.IntN(4)) * 30 * time.Minute)}
	if g.rng.IntN(2) == 0 {
		s.Track = "datos"
	}
	if s.Language == cabildo.ES && g.rng.IntN(2) == 0 {
		s.Interpretation = []cabildo.Lang{cabildo.EN}
	}
	s.Speakers = g.speakers()
	return s
}

func (g *gen) speakers() []string {
	perm := g.rng.Perm(len(genSpeakers))
	var out []string
	for _, i := range perm[:g.rng.IntN(len(genSpeakers)+1)] {
		out = append(out, genSpeakers[i])
	}
	return out
}

func (g *gen) mutate(s *cabildo.Session) {
	for range 1 + g.rng.IntN(3) {
		switch g.rng.IntN(6) {
		case 0:
			s.Room = genRooms[g.rng.IntN(len(genRooms))]
		case 1:
			d := time.Duration(g.rng.IntN(5)-2) * 15 * time.Minute
			s.Start, s.End = s.Start.Add(d), s.End.Add(d)
		case 2:
			s.End = s.End.Add(time.Duration(g.rng.IntN(3)-1) * 15 * time.Minute)
		case 3:
			s.Title.EN = fmt.Sprintf("Session %d, take %d", s.ID, g.rng.IntN(100))
		case 4:
			s.Speakers = g.speakers()
		case 5:
			s.Tags = []string{fmt.Sprint("tag-", g.rng.IntN(4))}
		}
	}
}

// RestoreFrom restores a snapshot that arrives a few bytes at a time to the same state as
// Restore, for both formats; one cut short, or damaged, is refused and leaves the store
// empty.
func TestRestoreFromPieces(t *testing.T) {
	g := newGen(t, 5)
	g.run(120)
	src := projection.New(projection.Options{})
	applyAll(src, g.log.entries)
	seq, bin, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	_, dump, err := src.DumpJSON()
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{"format 3": bin, "format 2": dump} {
		for _, pieces := range []func(io.Reader) io.Reader{iotest.OneByteReader, iotest.HalfReader, iotest.DataErrReader} {
			dst := projection.New(projection.Options{})
			got, err := dst.RestoreFrom(pieces(bytes.NewReader(data)))
			if err != nil || got != seq {
				t.Fatalf("%s: RestoreFrom = %d, %v; want %d", name, got, err, seq)
			}
			compareStores(t, dst, src)
		}
	}
	flipped := bytes.Clone(bin)
	flipped[len(flipped)/2] ^= 0x20
	for name, data := range map[string][]byte{"cut short": bin[:len(bin)*2/3], "damaged": flipped,
		"cut in a length": bin[:len("cabildo snapshot 3\n")+1]} {
		dst := projection.New(projection.Options{})
		if _, err := dst.RestoreFrom(iotest.HalfReader(bytes.NewReader(data))); err == nil {
			t.Errorf("%s: RestoreFrom succeeded", name)
		}
		n := 0
		dst.Each(func(*projection.EventState) { n++ })
		if dst.Seq() != 0 || n != 0 {
			t.Errorf("%s: a refused RestoreFrom left seq %d and %d events", name, dst.Seq(), n)
		}
	}
	// A reader that fails passes its error on.
	boom := errors.New("connection reset")
	dst := projection.New(projection.Options{})
	if _, err := dst.RestoreFrom(io.MultiReader(bytes.NewReader(bin[:len(bin)/2]), iotest.ErrReader(boom))); !errors.Is(err, boom) {
		t.Errorf("a failing reader: %v, want %v", err, boom)
	}
}
