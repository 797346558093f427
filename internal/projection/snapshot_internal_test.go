package projection

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cabildo/cabildo/internal/cabildo"
)

// TestDumpJSONIsFormat2 pins DumpJSON's bytes to format 2 as encoding/json writes the
// whole state in one piece, which is how the previous versions wrote their snapshots:
// events encoded in parallel must change nothing, so a format-2 snapshot already in the
// cache still restores. A format-3 snapshot of the same store restores to the same state.
func TestDumpJSONIsFormat2(t *testing.T) {
	s := formatTestStore(t)
	_, got, err := s.DumpJSON()
	if err != nil {
		t.Fatal(err)
	}
	st := snapshotState{Version: 2, Seq: s.seq, Events: map[string]snapshotEvent{}, Subjects: s.subjects, Idem: s.idem}
	for id, e := range s.events {
		st.Events[id] = snapshotEvent{Event: e.Programme.Event, Rooms: e.Programme.Rooms,
			Tracks: e.Programme.Tracks, Speakers: e.Programme.Speakers, Sessions: e.Programme.Sessions,
			Version: e.Version, Updated: e.Updated, SessionMeta: e.Sessions, RoomMeta: e.Rooms,
			TrackMeta: e.Tracks, SpeakerMeta: e.Speakers, ByID: e.ByID, Changes: e.Changes, Horizon: e.Horizon, EventVer: e.EventVersion, Created: e.Created,
			Ann: e.Announcements, AnnVersion: e.AnnouncementsVersion, QA: e.QA}
	}
	want, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("snapshot differs from format 2 as encoding/json writes it:\ngot  %s\nwant %s", got, want)
	}
	// And the previous versions' bytes restore to the same state.
	r := New(Options{})
	if _, err := r.Restore(want); err != nil {
		t.Fatalf("Restore of format 2 written by encoding/json: %v", err)
	}
	if _, again, _ := r.DumpJSON(); string(again) != string(want) {
		t.Errorf("restored from encoding/json's bytes, the state differs")
	}
	_, bin, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(bin), snapshotMagic) {
		t.Fatalf("Snapshot writes %q..., want format 3", bin[:min(len(bin), 20)])
	}
	r3 := New(Options{})
	if _, err := r3.Restore(bin); err != nil {
		t.Fatalf("Restore of format 3: %v", err)
	}
	if _, again, _ := r3.DumpJSON(); string(again) != string(want) {
		t.Errorf("restored from format 3, the state differs:\ngot  %s\nwant %s", again, want)
	}
}

// snapshotState is format 2 as one value, as the versions before parallel encoding wrote it.
type snapshotState struct {
	Version  int                      `json:"format"`
	Seq      uint64                   `json:"seq"`
	Events   map[string]snapshotEvent `json:"events"`
	Subjects map[string]uint64        `json:"subjects"`
	Idem     map[string]Idempotent    `json:"idempotency"`
}

// formatTestStore holds three events with a programme, a change history, idempotency keys
// and a town hall each.
func formatTestStore(t *testing.T) *Store {
	t.Helper()
	s := New(Options{})
	at := time.Date(2027, 4, 13, 15, 0, 0, 0, time.UTC)
	seq := uint64(0)
	add := func(rec cabildo.Record) {
		seq++
		data, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		s.Apply(seq, rec.Subject(), at.Add(time.Duration(seq)*time.Second), data)
		if s.Seq() != seq {
			t.Fatalf("entry %d not applied", seq)
		}
	}
	loc, err := time.LoadLocation("America/Costa_Rica")
	if err != nil {
		t.Fatal(err)
	}
	yes, no := true, false
	for e := range 3 {
		ev := fmt.Sprintf("evento-%d", e)
		add(cabildo.Record{Type: cabildo.RecordEventPut, Event: ev, EventInfo: &cabildo.Event{ID: ev, Name: cabildo.Text{ES: "Evento <&>"},
			TimeZone: "America/Costa_Rica", Days: []cabildo.Day{{Date: "2027-04-13", Kind: cabildo.DayConference, Start: "08:00", End: "18:00"}}}})
		add(cabildo.Record{Type: cabildo.RecordRoomPut, Event: ev, Room: &cabildo.Room{ID: "sala-1", Name: cabildo.Text{ES: "Sala 1"}}})
		start := time.Date(2027, 4, 13, 9, 0, 0, 0, loc)
		sess := cabildo.Session{GUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", e), Title: cabildo.Text{ES: "Datos", EN: "Data"},
			Kind: cabildo.KindPanel, Status: cabildo.StatusScheduled, Language: cabildo.ES, Room: "sala-1",
			Start: start, End: start.Add(time.Hour), Speakers: []string{"ana"}}
		add(cabildo.Record{Type: cabildo.RecordSessionCreated, Event: ev, Session: &sess})
		id := int64(seq)
		sess.Start, sess.End = sess.Start.Add(30*time.Minute), sess.End.Add(30*time.Minute)
		add(cabildo.Record{Type: cabildo.RecordSessionUpdated, Event: ev, Session: &sess, Reason: &cabildo.Reason{Code: cabildo.ReasonRunningLate},
			IdempotencyKey: "k", RequestHash: "h"})
		add(cabildo.Record{Type: cabildo.RecordQAConfigured, Event: ev, QASettings: &cabildo.QASettings{Session: id, Open: &yes, Moderated: &no}})
		add(cabildo.Record{Type: cabildo.RecordQuestionsAsked, Event: ev, Asked: []cabildo.Asked{
			{Question: cabildo.Question{Session: id, Text: "¿Cuándo?", Lang: cabildo.ES, Attendee: "a1"}, IdempotencyKey: "q"},
			{Question: cabildo.Question{Session: id, Text: "¿Dónde?", Lang: cabildo.ES, Attendee: "a2"}}}})
		add(cabildo.Record{Type: cabildo.RecordVotesCast, Event: ev, Votes: []cabildo.VoteOp{
			{Session: id, Question: 1, Attendee: "a2", Up: true}, {Session: id, Question: 2, Attendee: "a1", Up: true}}})
	}
	return s
}

// TestSnapshotSplitsEvents: a format-3 snapshot cuts each event's change history into
// sections and gives each town hall its own, and puts them back together in order.
func TestSnapshotSplitsEvents(t *testing.T) {
	s := formatTestStore(t)
	defer func(n int) { changesPerSection = n }(changesPerSection)
	changesPerSection = 2
	_, data, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	_, want, err := s.DumpJSON()
	if err != nil {
		t.Fatal(err)
	}
	var h snapshotHeader
	rest := data[len(snapshotMagic):]
	n, k := binary.Uvarint(rest)
	if err := gob.NewDecoder(bytes.NewReader(rest[k+4 : k+4+int(n)])).Decode(&h); err != nil {
		t.Fatal(err)
	}
	kinds := map[sectionKind]int{}
	for _, sec := range h.Sections {
		kinds[sec.Kind]++
	}
	changes := 0
	for _, e := range s.events {
		changes += (len(e.Changes) + 1) / 2
	}
	if kinds[sectionEvent] != 3 || kinds[sectionQA] != 3 || kinds[sectionChanges] != changes {
		t.Fatalf("sections %v, want 3 events, 3 town halls and %d slices of history", kinds, changes)
	}
	r := New(Options{})
	if _, err := r.Restore(data); err != nil {
		t.Fatal(err)
	}
	if _, got, _ := r.DumpJSON(); string(got) != string(want) {
		t.Errorf("restored from sections, the state differs:\ngot  %s\nwant %s", got, want)
	}
}
