package httpapi

import (
	"slices"
	"time"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/projection"
)

// Public representations carry text in one language, chosen by ?lang= or Accept-Language,
// with the other language as fallback. Admin representations, answered to organizer
// writes, carry both languages as written.

type pubEventSummary struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	City      string `json:"city,omitempty"`
	Country   string `json:"country,omitempty"`
	TimeZone  string `json:"time_zone"`
	StartDate string `json:"start_date"`
	EndDate   string `json:"end_date"`
	Version   uint64 `json:"version"`
}

type pubDay struct {
	Date  string          `json:"date"`
	Kind  cabildo.DayKind `json:"kind"`
	Title string          `json:"title,omitempty"`
	Start string          `json:"start"`
	End   string          `json:"end"`
}

type pubEvent struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	TimeZone    string    `json:"time_zone"`
	Venue       string    `json:"venue,omitempty"`
	City        string    `json:"city,omitempty"`
	Country     string    `json:"country,omitempty"`
	URL         string    `json:"url,omitempty"`
	Days        []pubDay  `json:"days"`
	Version     uint64    `json:"version"`
	UpdatedAt   time.Time `json:"updated_at"`
}

type pubRoom struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Location  string `json:"location,omitempty"`
	Capacity  int    `json:"capacity,omitempty"`
	Streamed  bool   `json:"streamed"`
	StreamURL string `json:"stream_url,omitempty"`
}

type pubTrack struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Color string `json:"color,omitempty"`
}

type pubSpeaker struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Affiliation string `json:"affiliation,omitempty"`
	Bio         string `json:"bio,omitempty"`
	Country     string `json:"country,omitempty"`
}

type pubReason struct {
	Code cabildo.ReasonCode `json:"code"`
	Text string             `json:"text,omitempty"`
}

type pubSession struct {
	ID              int64               `json:"id"`
	GUID            string              `json:"guid"`
	Title           string              `json:"title"`
	Abstract        string              `json:"abstract,omitempty"`
	Kind            cabildo.SessionKind `json:"kind"`
	Status          cabildo.Status      `json:"status"`
	Cancellation    *pubReason          `json:"cancellation,omitempty"`
	Language        cabildo.Lang        `json:"language"`
	Interpretation  []cabildo.Lang      `json:"interpretation,omitempty"`
	Room            string              `json:"room"`
	Track           string              `json:"track,omitempty"`
	Day             string              `json:"day"`
	Start           string              `json:"start"`
	End             string              `json:"end"`
	DurationMinutes int                 `json:"duration_minutes"`
	Speakers        []string            `json:"speakers"`
	Tags            []string            `json:"tags,omitempty"`
	Streamed        bool                `json:"streamed"`
	Version         uint64              `json:"version"`
	UpdatedAt       time.Time           `json:"updated_at"`
}

type pubInterval struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

type pubTimeChange struct {
	From pubInterval `json:"from"`
	To   pubInterval `json:"to"`
}

type pubChange struct {
	Version      uint64                  `json:"version"`
	At           time.Time               `json:"at"`
	Type         cabildo.ChangeType      `json:"type"`
	Session      *cabildo.SessionRef     `json:"session,omitempty"`
	Entity       *cabildo.EntityRef      `json:"entity,omitempty"`
	Room         *cabildo.RoomMove       `json:"room,omitempty"`
	Time         *pubTimeChange          `json:"time,omitempty"`
	DelayMinutes int                     `json:"delay_minutes,omitempty"`
	Speakers     *cabildo.SpeakersChange `json:"speakers,omitempty"`
	Fields       []string                `json:"fields,omitempty"`
	Reason       *pubReason              `json:"reason,omitempty"`
}

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

func (l localizer) event() pubEvent {
	e := l.st.Programme.Event
	out := pubEvent{ID: e.ID, Name: e.Name.In(l.lang), Description: e.Description.In(l.lang),
		TimeZone: e.TimeZone, Venue: e.Venue.In(l.lang), City: e.City, Country: e.Country, URL: e.URL,
		Days: make([]pubDay, 0, len(e.Days)), Version: l.st.Version, UpdatedAt: l.st.Updated}
	for _, d := range e.Days {
		open, close, _ := d.Window(l.loc)
		out.Days = append(out.Days, pubDay{Date: d.Date, Kind: d.Kind, Title: d.Title.In(l.lang),
			Start: l.instant(open), End: l.instant(close)})
	}
	return out
}

func summary(st *projection.EventState, lang cabildo.Lang) pubEventSummary {
	e := st.Programme.Event
	out := pubEventSummary{ID: e.ID, Name: e.Name.In(lang), City: e.City, Country: e.Country,
		TimeZone: e.TimeZone, Version: st.Version}
	if n := len(e.Days); n > 0 {
		out.StartDate, out.EndDate = e.Days[0].Date, e.Days[n-1].Date
	}
	return out
}

func (l localizer) room(r cabildo.Room) pubRoom {
	return pubRoom{ID: r.ID, Name: r.Name.In(l.lang), Location: r.Location.In(l.lang), Capacity: r.Capacity,
		Streamed: r.Streamed, StreamURL: r.StreamURL}
}

func (l localizer) track(t cabildo.Track) pubTrack {
	return pubTrack{ID: t.ID, Name: t.Name.In(l.lang), Color: t.Color}
}

func (l localizer) speaker(s cabildo.Speaker) pubSpeaker {
	return pubSpeaker{ID: s.ID, Name: s.Name, Affiliation: s.Affiliation.In(l.lang), Bio: s.Bio.In(l.lang), Country: s.Country}
}

func (l localizer) reason(r *cabildo.Reason) *pubReason {
	if r == nil {
		return nil
	}
	return &pubReason{Code: r.Code, Text: r.Text.In(l.lang)}
}

func (l localizer) session(s cabildo.Session) pubSession {
	meta := l.st.Sessions[s.GUID]
	speakers := s.Speakers
	if speakers == nil {
		speakers = []string{}
	}
	return pubSession{ID: s.ID, GUID: s.GUID, Title: s.Title.In(l.lang), Abstract: s.Abstract.In(l.lang),
		Kind: s.Kind, Status: s.Status, Cancellation: l.reason(s.Cancellation), Language: s.Language,
		Interpretation: s.Interpretation, Room: s.Room, Track: s.Track, Day: l.st.Programme.Day(s),
		Start: l.instant(s.Start), End: l.instant(s.End), DurationMinutes: int(s.End.Sub(s.Start) / time.Minute),
		Speakers: speakers, Tags: s.Tags, Streamed: l.st.Programme.Rooms[s.Room].Streamed,
		Version: meta.Version, UpdatedAt: meta.Updated}
}

func (l localizer) change(c cabildo.Change) pubChange {
	out := pubChange{Version: c.Version, At: c.At, Type: c.Type, Session: c.Session, Entity: c.Entity,
		Room: c.Room, DelayMinutes: c.DelayMinutes, Speakers: c.Speakers, Fields: c.Fields, Reason: l.reason(c.Reason)}
	if c.Time != nil {
		out.Time = &pubTimeChange{
			From: pubInterval{Start: l.instant(c.Time.From.Start), End: l.instant(c.Time.From.End)},
			To:   pubInterval{Start: l.instant(c.Time.To.Start), End: l.instant(c.Time.To.End)}}
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
