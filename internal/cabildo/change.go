package cabildo

import (
	"slices"
	"time"
)

// ChangeType is the kind of a programme change as apps show it.
type ChangeType string

const (
	ChangeSessionAdded           ChangeType = "session_added"
	ChangeSessionCancelled       ChangeType = "session_cancelled"
	ChangeSessionReinstated      ChangeType = "session_reinstated"
	ChangeSessionRemoved         ChangeType = "session_removed"
	ChangeSessionMoved           ChangeType = "session_moved"       // room A → B
	ChangeSessionDelayed         ChangeType = "session_delayed"     // same length, starts later
	ChangeSessionRescheduled     ChangeType = "session_rescheduled" // any other change of time
	ChangeSessionSpeakersChanged ChangeType = "session_speakers_changed"
	ChangeSessionUpdated         ChangeType = "session_updated" // title, abstract, track, ...
	ChangeRoomUpdated            ChangeType = "room_updated"
	ChangeTrackUpdated           ChangeType = "track_updated"
	ChangeSpeakerUpdated         ChangeType = "speaker_updated"
	ChangeEventUpdated           ChangeType = "event_updated"
)

// SessionRef identifies a session by both its stable keys.
type SessionRef struct {
	ID   int64  `json:"id"`
	GUID string `json:"guid"`
}

// EntityRef identifies a room, track or speaker.
type EntityRef struct {
	Kind string `json:"kind"` // room, track, speaker, event
	ID   string `json:"id"`
}

// Interval is a start and end instant.
type Interval struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// RoomMove is a room change.
type RoomMove struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// TimeChange is a change of a session's time.
type TimeChange struct {
	From Interval `json:"from"`
	To   Interval `json:"to"`
}

// SpeakersChange is a change of a session's speakers.
type SpeakersChange struct {
	From []string `json:"from"`
	To   []string `json:"to"`
}

// Change is one typed programme change, so no client ever diffs schedule files again.
// One record can yield several changes (a session moved and delayed at once); they share
// the record's version.
type Change struct {
	Version      uint64          `json:"version"`
	At           time.Time       `json:"at"`
	Type         ChangeType      `json:"type"`
	Session      *SessionRef     `json:"session,omitempty"`
	Entity       *EntityRef      `json:"entity,omitempty"`
	Room         *RoomMove       `json:"room,omitempty"`
	Time         *TimeChange     `json:"time,omitempty"`
	DelayMinutes int             `json:"delay_minutes,omitempty"`
	Speakers     *SpeakersChange `json:"speakers,omitempty"`
	Fields       []string        `json:"fields,omitempty"`
	Reason       *Reason         `json:"reason,omitempty"`
}

// SessionChanges derives the changes a session record makes. prev is nil when the session
// did not exist before.
func SessionChanges(typ RecordType, prev *Session, next Session, reason *Reason) []Change {
	ref := &SessionRef{ID: next.ID, GUID: next.GUID}
	one := func(t ChangeType) []Change { return []Change{{Type: t, Session: ref, Reason: reason}} }
	switch typ {
	case RecordSessionCreated:
		return one(ChangeSessionAdded)
	case RecordSessionCancelled:
		return one(ChangeSessionCancelled)
	case RecordSessionReinstated:
		return one(ChangeSessionReinstated)
	case RecordSessionDeleted:
		return one(ChangeSessionRemoved)
	}
	if prev == nil {
		return one(ChangeSessionAdded)
	}
	var out []Change
	add := func(c Change) {
		c.Session, c.Reason = ref, reason
		out = append(out, c)
	}
	if prev.Room != next.Room {
		add(Change{Type: ChangeSessionMoved, Room: &RoomMove{From: prev.Room, To: next.Room}})
	}
	if !prev.Start.Equal(next.Start) || !prev.End.Equal(next.End) {
		tc := &TimeChange{From: Interval{prev.Start, prev.End}, To: Interval{next.Start, next.End}}
		shift := next.Start.Sub(prev.Start)
		if shift > 0 && next.End.Sub(prev.End) == shift {
			add(Change{Type: ChangeSessionDelayed, Time: tc, DelayMinutes: int(shift / time.Minute)})
		} else {
			add(Change{Type: ChangeSessionRescheduled, Time: tc})
		}
	}
	if !slices.Equal(prev.Speakers, next.Speakers) {
		add(Change{Type: ChangeSessionSpeakersChanged, Speakers: &SpeakersChange{
			From: nonNil(prev.Speakers), To: nonNil(next.Speakers)}})
	}
	if f := detailFields(*prev, next); len(f) > 0 {
		add(Change{Type: ChangeSessionUpdated, Fields: f})
	}
	if prev.Status != next.Status {
		if next.Status == StatusCancelled {
			add(Change{Type: ChangeSessionCancelled})
		} else {
			add(Change{Type: ChangeSessionReinstated})
		}
	}
	return out
}

func detailFields(a, b Session) []string {
	var f []string
	if a.Title != b.Title {
		f = append(f, "title")
	}
	if a.Abstract != b.Abstract {
		f = append(f, "abstract")
	}
	if a.Kind != b.Kind {
		f = append(f, "kind")
	}
	if a.Language != b.Language || !slices.Equal(a.Interpretation, b.Interpretation) {
		f = append(f, "language")
	}
	if a.Track != b.Track {
		f = append(f, "track")
	}
	if !slices.Equal(a.Tags, b.Tags) {
		f = append(f, "tags")
	}
	return f
}

// CompleteChanges gives every speakers change in cs both sides as lists, [] for none, as
// SessionChanges makes them: for changes read back from an encoding that keeps an empty
// list as none (gob).
func CompleteChanges(cs []Change) {
	for i := range cs {
		if sc := cs[i].Speakers; sc != nil {
			sc.From, sc.To = nonNil(sc.From), nonNil(sc.To)
		}
	}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
