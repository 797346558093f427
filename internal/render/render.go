// Package render presents the projected programme as the public wire types of pkg/api, in
// one language with the other as fallback: one rendering shared by REST responses and
// realtime frames.
package render

import (
	"slices"
	"time"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/projection"
	"github.com/cabildo/cabildo/pkg/api"
)

// Localizer renders one event's projected state in one language. It is only valid inside
// the projection's Read callback that gave it the state.
type Localizer struct {
	St   *projection.EventState
	Lang cabildo.Lang
	loc  *time.Location
}

// New returns a Localizer for st in lang.
func New(st *projection.EventState, lang cabildo.Lang) Localizer {
	return Localizer{St: st, Lang: lang, loc: st.Programme.Event.Location()}
}

func (l Localizer) instant(t time.Time) string { return t.In(l.loc).Format(time.RFC3339) }

// Event renders the event with its days.
func (l Localizer) Event() api.Event {
	e := l.St.Programme.Event
	out := api.Event{ID: e.ID, Name: e.Name.In(l.Lang), Description: e.Description.In(l.Lang),
		TimeZone: e.TimeZone, Venue: e.Venue.In(l.Lang), City: e.City, Country: e.Country, URL: e.URL,
		Days: make([]api.Day, 0, len(e.Days)), Version: l.St.Version, UpdatedAt: l.St.Updated}
	for _, d := range e.Days {
		open, close, _ := d.Window(l.loc)
		out.Days = append(out.Days, api.Day{Date: d.Date, Kind: string(d.Kind), Title: d.Title.In(l.Lang),
			Start: l.instant(open), End: l.instant(close)})
	}
	return out
}

// Summary renders an event for the list of events.
func Summary(st *projection.EventState, lang cabildo.Lang) api.EventSummary {
	e := st.Programme.Event
	out := api.EventSummary{ID: e.ID, Name: e.Name.In(lang), City: e.City, Country: e.Country,
		TimeZone: e.TimeZone, Version: st.Version}
	if n := len(e.Days); n > 0 {
		out.StartDate, out.EndDate = e.Days[0].Date, e.Days[n-1].Date
	}
	return out
}

// Room renders a room.
func (l Localizer) Room(r cabildo.Room) api.Room {
	return api.Room{ID: r.ID, Name: r.Name.In(l.Lang), Location: r.Location.In(l.Lang), Capacity: r.Capacity,
		Streamed: r.Streamed, StreamURL: r.StreamURL}
}

// Track renders a track.
func (l Localizer) Track(t cabildo.Track) api.Track {
	return api.Track{ID: t.ID, Name: t.Name.In(l.Lang), Color: t.Color}
}

// Speaker renders a speaker.
func (l Localizer) Speaker(s cabildo.Speaker) api.Speaker {
	return api.Speaker{ID: s.ID, Name: s.Name, Affiliation: s.Affiliation.In(l.Lang), Bio: s.Bio.In(l.Lang), Country: s.Country}
}

// Reason renders a reason, nil for none.
func (l Localizer) Reason(r *cabildo.Reason) *api.Reason {
	if r == nil {
		return nil
	}
	return &api.Reason{Code: string(r.Code), Text: r.Text.In(l.Lang)}
}

// Session renders a session with its own version.
func (l Localizer) Session(s cabildo.Session) api.Session {
	meta := l.St.Sessions[s.GUID]
	speakers := s.Speakers
	if speakers == nil {
		speakers = []string{}
	}
	var interp []string
	for _, lang := range s.Interpretation {
		interp = append(interp, string(lang))
	}
	return api.Session{ID: s.ID, GUID: s.GUID, Title: s.Title.In(l.Lang), Abstract: s.Abstract.In(l.Lang),
		Kind: string(s.Kind), Status: string(s.Status), Cancellation: l.Reason(s.Cancellation), Language: string(s.Language),
		Interpretation: interp, Room: s.Room, Track: s.Track, Day: l.St.Programme.Day(s),
		Start: l.instant(s.Start), End: l.instant(s.End), DurationMinutes: int(s.End.Sub(s.Start) / time.Minute),
		Speakers: speakers, Tags: s.Tags, Streamed: l.St.Programme.Rooms[s.Room].Streamed,
		Version: meta.Version, UpdatedAt: meta.Updated}
}

// Change renders one typed change.
func (l Localizer) Change(c cabildo.Change) api.Change {
	out := api.Change{Version: c.Version, At: c.At, Type: string(c.Type), DelayMinutes: c.DelayMinutes,
		Fields: c.Fields, Reason: l.Reason(c.Reason)}
	if c.Session != nil {
		out.Session = &api.SessionRef{ID: c.Session.ID, GUID: c.Session.GUID}
	}
	if c.Entity != nil {
		out.Entity = &api.EntityRef{Kind: c.Entity.Kind, ID: c.Entity.ID}
	}
	if c.Room != nil {
		out.Room = &api.RoomMove{From: c.Room.From, To: c.Room.To}
	}
	if c.Speakers != nil {
		out.Speakers = &api.SpeakersChange{From: c.Speakers.From, To: c.Speakers.To}
	}
	if c.Time != nil {
		out.Time = &api.TimeChange{
			From: api.Interval{Start: l.instant(c.Time.From.Start), End: l.instant(c.Time.From.End)},
			To:   api.Interval{Start: l.instant(c.Time.To.Start), End: l.instant(c.Time.To.End)}}
	}
	return out
}

// All renders every entity of a map, ordered by id.
func All[V, O any](m map[string]V, f func(V) O) []O {
	out := make([]O, 0, len(m))
	for _, v := range sortedValues(m) {
		out = append(out, f(v))
	}
	return out
}

func sortedValues[V any](m map[string]V) []V {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]V, 0, len(m))
	for _, k := range keys {
		out = append(out, m[k])
	}
	return out
}

// Schedule renders the whole programme: every room, track, speaker and session.
func (l Localizer) Schedule() api.Schedule {
	p := l.St.Programme
	sessions := make([]api.Session, 0, len(p.Sessions))
	for _, ss := range p.SortedSessions() {
		sessions = append(sessions, l.Session(ss))
	}
	return api.Schedule{Event: l.Event(), Version: l.St.Version, Lang: string(l.Lang),
		Rooms: All(p.Rooms, l.Room), Tracks: All(p.Tracks, l.Track),
		Speakers: All(p.Speakers, l.Speaker), Sessions: sessions}
}

// Announcement renders an announcement; its version is the entry that posted it.
func (l Localizer) Announcement(a cabildo.Announcement) api.Announcement {
	return api.Announcement{ID: a.ID, Version: uint64(a.ID), At: a.At, Title: a.Title.In(l.Lang), Body: a.Body.In(l.Lang),
		Priority: string(a.Priority), Session: a.Session}
}

// Announcements renders the announcements after version since, oldest first.
func (l Localizer) Announcements(since uint64) []api.Announcement {
	out := []api.Announcement{}
	for _, a := range l.St.Announcements {
		if uint64(a.ID) > since {
			out = append(out, l.Announcement(a))
		}
	}
	return out
}
