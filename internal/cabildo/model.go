package cabildo

import (
	"slices"
	"sync"
	"time"
)

// DayKind says what a day of the event is for.
type DayKind string

const (
	DayUnconference DayKind = "unconference"
	DayConference   DayKind = "conference"
	DayWorkshops    DayKind = "workshops"
)

// Event is one live event (a conference, a meeting). One server hosts many.
type Event struct {
	ID          string `json:"id"`
	Name        Text   `json:"name"`
	Description Text   `json:"description,omitzero"`
	TimeZone    string `json:"time_zone"`
	Venue       Text   `json:"venue,omitzero"`
	City        string `json:"city,omitempty"`
	Country     string `json:"country,omitempty"`
	URL         string `json:"url,omitempty"`
	Days        []Day  `json:"days"`
}

// Day is one calendar day of an event with its opening hours, in the event's time zone.
type Day struct {
	Date  string  `json:"date"` // YYYY-MM-DD
	Kind  DayKind `json:"kind"` // unconference, conference, workshops
	Title Text    `json:"title,omitzero"`
	Start string  `json:"start"` // HH:MM
	End   string  `json:"end"`   // HH:MM
}

// Room is a place sessions happen in; a streamed room has a livestream.
type Room struct {
	ID        string `json:"id"`
	Name      Text   `json:"name"`
	Location  Text   `json:"location,omitzero"`
	Capacity  int    `json:"capacity,omitempty"`
	Streamed  bool   `json:"streamed"`
	StreamURL string `json:"stream_url,omitempty"`
}

// Track groups sessions by theme.
type Track struct {
	ID    string `json:"id"`
	Name  Text   `json:"name"`
	Color string `json:"color,omitempty"` // #rrggbb
}

// Speaker is a person on the programme.
type Speaker struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Affiliation Text   `json:"affiliation,omitzero"`
	Bio         Text   `json:"bio,omitzero"`
	Country     string `json:"country,omitempty"` // ISO 3166-1 alpha-2
}

// SessionKind is the format of a session.
type SessionKind string

const (
	KindPlenary          SessionKind = "plenary"
	KindKeynote          SessionKind = "keynote"
	KindBreakout         SessionKind = "breakout"
	KindWorkshop         SessionKind = "workshop"
	KindPanel            SessionKind = "panel"
	KindBookPresentation SessionKind = "book_presentation"
	KindDataExpedition   SessionKind = "data_expedition"
	KindTownHall         SessionKind = "town_hall"
	KindUnconference     SessionKind = "unconference"
	KindCeremony         SessionKind = "ceremony"
	KindBreak            SessionKind = "break"
)

// SessionKinds lists every kind, for validation and documentation.
var SessionKinds = []SessionKind{KindPlenary, KindKeynote, KindBreakout, KindWorkshop, KindPanel,
	KindBookPresentation, KindDataExpedition, KindTownHall, KindUnconference, KindCeremony, KindBreak}

// Status is where a session stands. A cancelled session stays on the programme.
type Status string

const (
	StatusScheduled Status = "scheduled"
	StatusCancelled Status = "cancelled"
)

// ReasonCode says why a change was made, so apps can show it in the reader's language.
type ReasonCode string

const (
	ReasonSpeakerUnavailable ReasonCode = "speaker_unavailable"
	ReasonSpeakerChange      ReasonCode = "speaker_change"
	ReasonRoomChange         ReasonCode = "room_change"
	ReasonCapacity           ReasonCode = "capacity"
	ReasonTechnical          ReasonCode = "technical"
	ReasonRunningLate        ReasonCode = "running_late"
	ReasonWeather            ReasonCode = "weather"
	ReasonSafety             ReasonCode = "safety"
	ReasonOrganizer          ReasonCode = "organizer_decision"
	ReasonCorrection         ReasonCode = "correction"
	ReasonOther              ReasonCode = "other"
)

// ReasonCodes lists every reason code.
var ReasonCodes = []ReasonCode{ReasonSpeakerUnavailable, ReasonSpeakerChange, ReasonRoomChange,
	ReasonCapacity, ReasonTechnical, ReasonRunningLate, ReasonWeather, ReasonSafety, ReasonOrganizer,
	ReasonCorrection, ReasonOther}

// Reason explains a change: a code for machines and optional text for people.
type Reason struct {
	Code ReasonCode `json:"code"`
	Text Text       `json:"text,omitzero"`
}

// Session is one item of the programme. GUID and ID are given at its first write and never
// change or get reused: schedule apps key favourites and change flags on them.
type Session struct {
	GUID           string      `json:"guid"`
	ID             int64       `json:"id"`
	Title          Text        `json:"title"`
	Abstract       Text        `json:"abstract,omitzero"`
	Kind           SessionKind `json:"kind"`
	Status         Status      `json:"status"`
	Cancellation   *Reason     `json:"cancellation,omitempty"`
	Language       Lang        `json:"language"`
	Interpretation []Lang      `json:"interpretation,omitempty"`
	Room           string      `json:"room"`
	Track          string      `json:"track,omitempty"`
	Start          time.Time   `json:"start"`
	End            time.Time   `json:"end"`
	Speakers       []string    `json:"speakers,omitempty"`
	Tags           []string    `json:"tags,omitempty"`
}

// Clone returns a deep copy.
func (s Session) Clone() Session {
	s.Interpretation = slices.Clone(s.Interpretation)
	s.Speakers = slices.Clone(s.Speakers)
	s.Tags = slices.Clone(s.Tags)
	if s.Cancellation != nil {
		c := *s.Cancellation
		s.Cancellation = &c
	}
	return s
}

// Overlaps reports whether two sessions share any instant.
func (s Session) Overlaps(o Session) bool {
	return s.Start.Before(o.End) && o.Start.Before(s.End)
}

// Speaks reports whether a listener of lang can follow the session.
func (s Session) Speaks(lang Lang) bool {
	return s.Language == lang || slices.Contains(s.Interpretation, lang)
}

// Location returns the event's time zone; Normalize has made sure it loads.
func (e Event) Location() *time.Location {
	if loc, ok := locations.Load(e.TimeZone); ok {
		return loc.(*time.Location)
	}
	loc, err := time.LoadLocation(e.TimeZone)
	if err != nil {
		return time.UTC
	}
	locations.Store(e.TimeZone, loc)
	return loc
}

// locations caches loaded time zones: loading one parses tzdata, and every rendered
// session asks for its event's zone.
var locations sync.Map

// DayOf returns the day of the event whose opening hours contain [start, end].
func (e Event) DayOf(start, end time.Time) (Day, bool) {
	loc := e.Location()
	for _, d := range e.Days {
		open, close, err := d.Window(loc)
		if err != nil {
			continue
		}
		if !start.Before(open) && !end.After(close) {
			return d, true
		}
	}
	return Day{}, false
}

// Window returns the opening and closing instants of the day in loc.
func (d Day) Window(loc *time.Location) (open, close time.Time, err error) {
	open, err = time.ParseInLocation("2006-01-02 15:04", d.Date+" "+d.Start, loc)
	if err != nil {
		return
	}
	close, err = time.ParseInLocation("2006-01-02 15:04", d.Date+" "+d.End, loc)
	return
}
