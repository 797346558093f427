package cabildo

import (
	"slices"
	"time"
	"unicode/utf8"
)

// Programme is one event with everything on it: the state every node projects from the log
// and the use cases validate against.
type Programme struct {
	Event    Event
	Rooms    map[string]Room
	Tracks   map[string]Track
	Speakers map[string]Speaker
	Sessions map[string]Session // by GUID; removed sessions are gone from here
}

// NewProgramme returns an empty programme for ev.
func NewProgramme(ev Event) *Programme {
	return &Programme{Event: ev, Rooms: map[string]Room{}, Tracks: map[string]Track{},
		Speakers: map[string]Speaker{}, Sessions: map[string]Session{}}
}

// CheckSession validates s against the programme: fields, references, the event's days and
// the room's other sessions. force allows two sessions in one room at once.
func (p *Programme) CheckSession(s *Session, force bool) error {
	var f Fields
	s.Title, s.Abstract = s.Title.trimmed(), s.Abstract.trimmed()
	checkText(&f, "title", s.Title, true, MaxShortText)
	checkText(&f, "abstract", s.Abstract, false, MaxLongText)
	if !validKind(s.Kind) {
		f.Add("kind", "invalid_enum", "kind must be one of the documented session kinds")
	}
	if s.Status != StatusScheduled && s.Status != StatusCancelled {
		f.Add("status", "invalid_enum", "status must be scheduled or cancelled")
	}
	if !validLang(s.Language) {
		f.Add("language", "invalid_enum", "language must be es or en")
	}
	for i, l := range s.Interpretation {
		if !validLang(l) || l == s.Language || slices.Index(s.Interpretation, l) != i {
			f.Add(fieldIndex("interpretation", i), "invalid_enum", "interpretation lists es or en, other than the session's language")
		}
	}
	if _, ok := p.Rooms[s.Room]; !ok {
		f.Add("room", "unknown_room", "room %q does not exist in this event", s.Room)
	}
	if _, ok := p.Tracks[s.Track]; s.Track != "" && !ok {
		f.Add("track", "unknown_track", "track %q does not exist in this event", s.Track)
	}
	if len(s.Speakers) > MaxSpeakers {
		f.Add("speakers", "too_many", "a session has at most %d speakers", MaxSpeakers)
	}
	for i, id := range s.Speakers {
		if _, ok := p.Speakers[id]; !ok {
			f.Add(fieldIndex("speakers", i), "unknown_speaker", "speaker %q does not exist in this event", id)
		} else if slices.Index(s.Speakers, id) != i {
			f.Add(fieldIndex("speakers", i), "duplicate", "speaker %q is listed twice", id)
		}
	}
	if len(s.Tags) > MaxTags {
		f.Add("tags", "too_many", "a session has at most %d tags", MaxTags)
	}
	for i, t := range s.Tags {
		before := len(f)
		CheckString(&f, fieldIndex("tags", i), t, false)
		if len(f) == before && (Visible(t) == 0 || utf8.RuneCountInString(t) > 40) {
			f.Add(fieldIndex("tags", i), "invalid_tag", "tags are 1 to 40 characters")
		}
	}
	switch {
	case s.Start.IsZero():
		f.Add("start", "required", "start is required")
	case s.End.IsZero():
		f.Add("end", "required", "end is required")
	case !s.End.After(s.Start):
		f.Add("end", "before_start", "end must be after start")
	case s.End.Sub(s.Start) > MaxSessionHours*time.Hour:
		f.Add("end", "too_long", "a session lasts at most %d hours", MaxSessionHours)
	default:
		if _, ok := p.Event.DayOf(s.Start, s.End); !ok {
			f.Add("start", "outside_event", "the session must fall within the opening hours of one of the event's days")
		} else if other, clash := p.RoomClash(*s); clash && !force && s.Status == StatusScheduled {
			f.Add("room", "room_occupied", "room %q already has session %d at that time (send force=true to allow it)", s.Room, other.ID)
		}
	}
	loc := p.Event.Location()
	s.Start, s.End = s.Start.In(loc), s.End.In(loc)
	return f.Err()
}

// RoomClash returns a scheduled session other than s that shares s's room and time.
func (p *Programme) RoomClash(s Session) (Session, bool) {
	var found []Session
	for _, o := range p.Sessions {
		if o.GUID != s.GUID && o.Room == s.Room && o.Status == StatusScheduled && o.Overlaps(s) {
			found = append(found, o)
		}
	}
	if len(found) == 0 {
		return Session{}, false
	}
	slices.SortFunc(found, func(a, b Session) int { return int(a.ID - b.ID) })
	return found[0], true
}

// Day returns the date (YYYY-MM-DD) a session falls on.
func (p *Programme) Day(s Session) string {
	if d, ok := p.Event.DayOf(s.Start, s.End); ok {
		return d.Date
	}
	return s.Start.In(p.Event.Location()).Format(time.DateOnly)
}

// SortedSessions returns the sessions by start, room, then id.
func (p *Programme) SortedSessions() []Session {
	out := make([]Session, 0, len(p.Sessions))
	for _, s := range p.Sessions {
		out = append(out, s)
	}
	SortSessions(out)
	return out
}

// SortSessions orders sessions by start, room, then id.
func SortSessions(ss []Session) {
	slices.SortFunc(ss, func(a, b Session) int {
		if c := a.Start.Compare(b.Start); c != 0 {
			return c
		}
		if a.Room != b.Room {
			if a.Room < b.Room {
				return -1
			}
			return 1
		}
		return int(a.ID - b.ID)
	})
}
