package cabildo_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cabildo/cabildo/internal/cabildo"
)

func TestSessionChanges(t *testing.T) {
	start := time.Date(2027, 4, 14, 10, 0, 0, 0, time.FixedZone("CST", -6*3600))
	end := start.Add(time.Hour)
	prev := cabildo.Session{GUID: newGUID, ID: 42, Title: cabildo.Text{ES: "Datos", EN: "Data"},
		Abstract: cabildo.Text{ES: "Resumen"}, Kind: cabildo.KindPanel, Status: cabildo.StatusScheduled,
		Language: cabildo.ES, Interpretation: []cabildo.Lang{cabildo.EN}, Room: "sala-1", Track: "datos",
		Start: start, End: end, Speakers: []string{"ana"}, Tags: []string{"datos"}}
	ref := &cabildo.SessionRef{ID: 42, GUID: newGUID}
	reason := &cabildo.Reason{Code: cabildo.ReasonRunningLate, Text: cabildo.Text{ES: "Llueve"}}
	span := func(s, e time.Time) cabildo.Interval { return cabildo.Interval{Start: s, End: e} }

	tests := []struct {
		name   string
		typ    cabildo.RecordType
		noPrev bool
		edit   func(*cabildo.Session)
		reason *cabildo.Reason
		want   []cabildo.Change
	}{
		{name: "nothing changed", typ: cabildo.RecordSessionUpdated, want: nil},
		{name: "same instant in another zone is no change", typ: cabildo.RecordSessionUpdated,
			edit: func(s *cabildo.Session) { s.Start, s.End = s.Start.UTC(), s.End.UTC() }, want: nil},
		{name: "moved room", typ: cabildo.RecordSessionUpdated,
			edit: func(s *cabildo.Session) { s.Room = "sala-2" },
			want: []cabildo.Change{{Type: cabildo.ChangeSessionMoved, Session: ref,
				Room: &cabildo.RoomMove{From: "sala-1", To: "sala-2"}}}},
		{name: "delayed", typ: cabildo.RecordSessionUpdated,
			edit: func(s *cabildo.Session) { s.Start, s.End = start.Add(20*time.Minute), end.Add(20*time.Minute) },
			want: []cabildo.Change{{Type: cabildo.ChangeSessionDelayed, Session: ref, DelayMinutes: 20,
				Time: &cabildo.TimeChange{From: span(start, end), To: span(start.Add(20*time.Minute), end.Add(20*time.Minute))}}}},
		{name: "rescheduled shorter", typ: cabildo.RecordSessionUpdated,
			edit: func(s *cabildo.Session) { s.End = end.Add(-15 * time.Minute) },
			want: []cabildo.Change{{Type: cabildo.ChangeSessionRescheduled, Session: ref,
				Time: &cabildo.TimeChange{From: span(start, end), To: span(start, end.Add(-15*time.Minute))}}}},
		{name: "rescheduled earlier", typ: cabildo.RecordSessionUpdated,
			edit: func(s *cabildo.Session) { s.Start, s.End = start.Add(-30*time.Minute), end.Add(-30*time.Minute) },
			want: []cabildo.Change{{Type: cabildo.ChangeSessionRescheduled, Session: ref,
				Time: &cabildo.TimeChange{From: span(start, end), To: span(start.Add(-30*time.Minute), end.Add(-30*time.Minute))}}}},
		{name: "rescheduled later and longer", typ: cabildo.RecordSessionUpdated,
			edit: func(s *cabildo.Session) { s.Start, s.End = start.Add(10*time.Minute), end.Add(30*time.Minute) },
			want: []cabildo.Change{{Type: cabildo.ChangeSessionRescheduled, Session: ref,
				Time: &cabildo.TimeChange{From: span(start, end), To: span(start.Add(10*time.Minute), end.Add(30*time.Minute))}}}},
		{name: "speakers changed", typ: cabildo.RecordSessionUpdated,
			edit: func(s *cabildo.Session) { s.Speakers = []string{"ana", "luis"} },
			want: []cabildo.Change{{Type: cabildo.ChangeSessionSpeakersChanged, Session: ref,
				Speakers: &cabildo.SpeakersChange{From: []string{"ana"}, To: []string{"ana", "luis"}}}}},
		{name: "speakers removed", typ: cabildo.RecordSessionUpdated,
			edit: func(s *cabildo.Session) { s.Speakers = nil },
			want: []cabildo.Change{{Type: cabildo.ChangeSessionSpeakersChanged, Session: ref,
				Speakers: &cabildo.SpeakersChange{From: []string{"ana"}, To: []string{}}}}},
		{name: "speakers reordered", typ: cabildo.RecordSessionUpdated,
			edit: func(s *cabildo.Session) { s.Speakers = []string{"luis", "ana"} },
			want: []cabildo.Change{{Type: cabildo.ChangeSessionSpeakersChanged, Session: ref,
				Speakers: &cabildo.SpeakersChange{From: []string{"ana"}, To: []string{"luis", "ana"}}}}},
		{name: "details title", typ: cabildo.RecordSessionUpdated,
			edit: func(s *cabildo.Session) { s.Title.EN = "Open data" },
			want: []cabildo.Change{{Type: cabildo.ChangeSessionUpdated, Session: ref, Fields: []string{"title"}}}},
		{name: "details several", typ: cabildo.RecordSessionUpdated,
			edit: func(s *cabildo.Session) {
				s.Abstract, s.Kind, s.Track, s.Tags = cabildo.Text{}, cabildo.KindWorkshop, "", []string{"datos", "salud"}
			},
			want: []cabildo.Change{{Type: cabildo.ChangeSessionUpdated, Session: ref,
				Fields: []string{"abstract", "kind", "track", "tags"}}}},
		{name: "details interpretation", typ: cabildo.RecordSessionUpdated,
			edit: func(s *cabildo.Session) { s.Interpretation = nil },
			want: []cabildo.Change{{Type: cabildo.ChangeSessionUpdated, Session: ref, Fields: []string{"language"}}}},
		{name: "room and time at once", typ: cabildo.RecordSessionUpdated,
			edit: func(s *cabildo.Session) { s.Room, s.Start, s.End = "sala-2", start.Add(time.Hour), end.Add(time.Hour) },
			want: []cabildo.Change{
				{Type: cabildo.ChangeSessionMoved, Session: ref, Room: &cabildo.RoomMove{From: "sala-1", To: "sala-2"}},
				{Type: cabildo.ChangeSessionDelayed, Session: ref, DelayMinutes: 60,
					Time: &cabildo.TimeChange{From: span(start, end), To: span(start.Add(time.Hour), end.Add(time.Hour))}},
			}},
		{name: "everything at once keeps a fixed order", typ: cabildo.RecordSessionUpdated, reason: reason,
			edit: func(s *cabildo.Session) {
				s.Title.ES, s.Speakers, s.End, s.Room = "Otro", []string{"luis"}, end.Add(time.Hour), "sala-3"
			},
			want: []cabildo.Change{
				{Type: cabildo.ChangeSessionMoved, Session: ref, Reason: reason, Room: &cabildo.RoomMove{From: "sala-1", To: "sala-3"}},
				{Type: cabildo.ChangeSessionRescheduled, Session: ref, Reason: reason,
					Time: &cabildo.TimeChange{From: span(start, end), To: span(start, end.Add(time.Hour))}},
				{Type: cabildo.ChangeSessionSpeakersChanged, Session: ref, Reason: reason,
					Speakers: &cabildo.SpeakersChange{From: []string{"ana"}, To: []string{"luis"}}},
				{Type: cabildo.ChangeSessionUpdated, Session: ref, Reason: reason, Fields: []string{"title"}},
			}},
		{name: "status change in an update", typ: cabildo.RecordSessionUpdated,
			edit: func(s *cabildo.Session) { s.Status = cabildo.StatusCancelled },
			want: []cabildo.Change{{Type: cabildo.ChangeSessionCancelled, Session: ref}}},
		{name: "cancelled", typ: cabildo.RecordSessionCancelled, reason: reason,
			edit: func(s *cabildo.Session) { s.Status, s.Cancellation = cabildo.StatusCancelled, reason },
			want: []cabildo.Change{{Type: cabildo.ChangeSessionCancelled, Session: ref, Reason: reason}}},
		{name: "reinstated", typ: cabildo.RecordSessionReinstated,
			want: []cabildo.Change{{Type: cabildo.ChangeSessionReinstated, Session: ref}}},
		{name: "removed", typ: cabildo.RecordSessionDeleted, reason: reason,
			want: []cabildo.Change{{Type: cabildo.ChangeSessionRemoved, Session: ref, Reason: reason}}},
		{name: "added", typ: cabildo.RecordSessionCreated, noPrev: true,
			want: []cabildo.Change{{Type: cabildo.ChangeSessionAdded, Session: ref}}},
		{name: "update of a session not seen before counts as added", typ: cabildo.RecordSessionUpdated, noPrev: true,
			want: []cabildo.Change{{Type: cabildo.ChangeSessionAdded, Session: ref}}},
		{name: "reason carried", typ: cabildo.RecordSessionUpdated, reason: reason,
			edit: func(s *cabildo.Session) { s.Room = "sala-2" },
			want: []cabildo.Change{{Type: cabildo.ChangeSessionMoved, Session: ref, Reason: reason,
				Room: &cabildo.RoomMove{From: "sala-1", To: "sala-2"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			next := prev.Clone()
			if tt.edit != nil {
				tt.edit(&next)
			}
			p := &prev
			if tt.noPrev {
				p = nil
			}
			got := cabildo.SessionChanges(tt.typ, p, next, tt.reason)
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("SessionChanges (-got +want):\n%s", diff)
			}
		})
	}
}

func TestSessionClone(t *testing.T) {
	s := cabildo.Session{Speakers: []string{"ana"}, Tags: []string{"x"}, Interpretation: []cabildo.Lang{cabildo.EN},
		Cancellation: &cabildo.Reason{Code: cabildo.ReasonWeather}}
	c := s.Clone()
	c.Speakers[0], c.Tags[0], c.Interpretation[0], c.Cancellation.Code = "luis", "y", cabildo.ES, cabildo.ReasonOther
	want := cabildo.Session{Speakers: []string{"ana"}, Tags: []string{"x"}, Interpretation: []cabildo.Lang{cabildo.EN},
		Cancellation: &cabildo.Reason{Code: cabildo.ReasonWeather}}
	if diff := cmp.Diff(s, want); diff != "" {
		t.Errorf("original changed through its clone (-got +want):\n%s", diff)
	}
}
