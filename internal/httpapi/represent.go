package httpapi

import (
	"slices"
	"time"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/projection"
	"github.com/cabildo/cabildo/pkg/api"
)

// Public representations (package api) carry text in one language, chosen by ?lang= or
// Accept-Language, with the other language as fallback. Admin representations, answered to
// organizer writes, carry both languages as written.

// localizer renders one event's state in one language.
type localizer struct {
	st   *projection.EventState
	lang cabildo.Lang
	loc  *time.Location
}

func newLocalizer(st *projection.EventState, lang cabildo.Lang) localizer {
	return localizer{st: st, lang: lang, loc: st.Programme.Event.Location()}
}

func (l localizer) instant(t time.Time) string { return t.In(l.loc).Format(time.RFC3339) }

func (l localizer) event() api.Event {
	e := l.st.Programme.Event
	out := api.Event{ID: e.ID, Name: e.Name.In(l.lang), Description: e.Description.In(l.lang),
		TimeZone: e.TimeZone, Venue: e.Venue.In(l.lang), City: e.City, Country: e.Country, URL: e.URL,
		Days: make([]api.Day, 0, len(e.Days)), Version: l.st.Version, UpdatedAt: l.st.Updated}
	for _, d := range e.Days {
		open, close, _ := d.Window(l.loc)
		out.Days = append(out.Days, api.Day{Date: d.Date, Kind: string(d.Kind), Title: d.Title.In(l.lang),
			Start: l.instant(open), End: l.instant(close)})
	}
	return out
}

func summary(st *projection.EventState, lang cabildo.Lang) api.EventSummary {
	e := st.Programme.Event
	out := api.EventSummary{ID: e.ID, Name: e.Name.In(lang), City: e.City, Country: e.Country,
		TimeZone: e.TimeZone, Version: st.Version}
	if n := len(e.Days); n > 0 {
		out.StartDate, out.EndDate = e.Days[0].Date, e.Days[n-1].Date
	}
	return out
}

func (l localizer) room(r cabildo.Room) api.Room {
	return api.Room{ID: r.ID, Name: r.Name.In(l.lang), Location: r.Location.In(l.lang), Capacity: r.Capacity,
		Streamed: r.Streamed, StreamURL: r.StreamURL}
}

func (l localizer) track(t cabildo.Track) api.Track {
	return api.Track{ID: t.ID, Name: t.Name.In(l.lang), Color: t.Color}
}

func (l localizer) speaker(s cabildo.Speaker) api.Speaker {
	return api.Speaker{ID: s.ID, Name: s.Name, Affiliation: s.Affiliation.In(l.lang), Bio: s.Bio.In(l.lang), Country: s.Country}
}

func (l localizer) reason(r *cabildo.Reason) *api.Reason {
	if r == nil {
		return nil
	}
	return &api.Reason{Code: string(r.Code), Text: r.Text.In(l.lang)}
}

func (l localizer) session(s cabildo.Session) api.Session {
	meta := l.st.Sessions[s.GUID]
	speakers := s.Speakers
	if speakers == nil {
		speakers = []string{}
	}
	var interp []string
	for _, lang := range s.Interpretation {
		interp = append(interp, string(lang))
	}
	return api.Session{ID: s.ID, GUID: s.GUID, Title: s.Title.In(l.lang), Abstract: s.Abstract.In(l.lang),
		Kind: string(s.Kind), Status: string(s.Status), Cancellation: l.reason(s.Cancellation), Language: string(s.Language),
		Interpretation: interp, Room: s.Room, Track: s.Track, Day: l.st.Programme.Day(s),
		Start: l.instant(s.Start), End: l.instant(s.End), DurationMinutes: int(s.End.Sub(s.Start) / time.Minute),
		Speakers: speakers, Tags: s.Tags, Streamed: l.st.Programme.Rooms[s.Room].Streamed,
		Version: meta.Version, UpdatedAt: meta.Updated}
}

func (l localizer) change(c cabildo.Change) api.Change {
	out := api.Change{Version: c.Version, At: c.At, Type: string(c.Type), DelayMinutes: c.DelayMinutes,
		Fields: c.Fields, Reason: l.reason(c.Reason)}
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

// localizeAll renders every entity of a map, ordered by id.
func localizeAll[V, O any](m map[string]V, f func(V) O) []O {
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

// Admin representations.

type adminEvent struct {
	cabildo.Event
	Version uint64 `json:"version"`
}

type adminRoom struct {
	cabildo.Room
	Version uint64 `json:"version"`
}

type adminTrack struct {
	cabildo.Track
	Version uint64 `json:"version"`
}

type adminSpeaker struct {
	cabildo.Speaker
	Version uint64 `json:"version"`
}

type adminSession struct {
	cabildo.Session
	Day     string `json:"day"`
	Version uint64 `json:"version"`
}
