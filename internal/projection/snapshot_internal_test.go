package projection

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/cabildo/cabildo/internal/cabildo"
)

// TestSnapshotIsFormat2 pins the snapshot bytes to format 2 as encoding/json writes the
// whole state in one piece, which is how the previous versions wrote it: events encoded in
// parallel must change nothing, so a snapshot already in the cache still restores and one
// written now restores in a node of the previous version.
func TestSnapshotIsFormat2(t *testing.T) {
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
	_, got, err := s.Snapshot()
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
	if _, again, _ := r.Snapshot(); string(again) != string(want) {
		t.Errorf("restored from encoding/json's bytes, the snapshot differs")
	}
}
