// Package api holds the JSON wire types of Cabildo's public REST API (see
// mobile-api/openapi.yaml), for Go clients: apps' backends, tools and Cabildo's own load
// generator and tests. It uses only the standard library. Text fields are in the language
// the request chose (?lang= or Accept-Language), with the other language as fallback.
package api

import "time"

// EventList is GET /v1/events.
type EventList struct {
	Events  []EventSummary `json:"events"`
	Version uint64         `json:"version"`
}

// EventSummary is one event in the list.
type EventSummary struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	City      string `json:"city,omitempty"`
	Country   string `json:"country,omitempty"`
	TimeZone  string `json:"time_zone"`
	StartDate string `json:"start_date"`
	EndDate   string `json:"end_date"`
	Version   uint64 `json:"version"`
}

// Event is GET /v1/events/{event}.
type Event struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	TimeZone    string    `json:"time_zone"`
	Venue       string    `json:"venue,omitempty"`
	City        string    `json:"city,omitempty"`
	Country     string    `json:"country,omitempty"`
	URL         string    `json:"url,omitempty"`
	Days        []Day     `json:"days"`
	Version     uint64    `json:"version"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Day is one day of an event with its opening hours (RFC 3339, the event's offset).
type Day struct {
	Date  string `json:"date"`
	Kind  string `json:"kind"`
	Title string `json:"title,omitempty"`
	Start string `json:"start"`
	End   string `json:"end"`
}

// Room is a place sessions happen in.
type Room struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Location  string `json:"location,omitempty"`
	Capacity  int    `json:"capacity,omitempty"`
	Streamed  bool   `json:"streamed"`
	StreamURL string `json:"stream_url,omitempty"`
}

// Track groups sessions by theme.
type Track struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Color string `json:"color,omitempty"`
}

// Speaker is a person on the programme.
type Speaker struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Affiliation string `json:"affiliation,omitempty"`
	Bio         string `json:"bio,omitempty"`
	Country     string `json:"country,omitempty"`
}

// Reason says why something changed: a stable code and optional text.
type Reason struct {
	Code string `json:"code"`
	Text string `json:"text,omitempty"`
}

// Session is one item of the programme. ID and GUID never change or get reused.
type Session struct {
	ID              int64     `json:"id"`
	GUID            string    `json:"guid"`
	Title           string    `json:"title"`
	Abstract        string    `json:"abstract,omitempty"`
	Kind            string    `json:"kind"`
	Status          string    `json:"status"` // scheduled or cancelled
	Cancellation    *Reason   `json:"cancellation,omitempty"`
	Language        string    `json:"language"`
	Interpretation  []string  `json:"interpretation,omitempty"`
	Room            string    `json:"room"`
	Track           string    `json:"track,omitempty"`
	Day             string    `json:"day"`
	Start           string    `json:"start"`
	End             string    `json:"end"`
	DurationMinutes int       `json:"duration_minutes"`
	Speakers        []string  `json:"speakers"`
	Tags            []string  `json:"tags,omitempty"`
	Streamed        bool      `json:"streamed"`
	Version         uint64    `json:"version"`
	UpdatedAt       time.Time `json:"updated_at"`
}

// Schedule is GET /v1/events/{event}/schedule: the whole programme at one version.
type Schedule struct {
	Event    Event     `json:"event"`
	Version  uint64    `json:"version"`
	Lang     string    `json:"lang"`
	Rooms    []Room    `json:"rooms"`
	Tracks   []Track   `json:"tracks"`
	Speakers []Speaker `json:"speakers"`
	Sessions []Session `json:"sessions"`
}

// SessionList is GET /v1/events/{event}/sessions.
type SessionList struct {
	Event    string    `json:"event"`
	Version  uint64    `json:"version"`
	Lang     string    `json:"lang"`
	Sessions []Session `json:"sessions"`
}

// RoomList is GET /v1/events/{event}/rooms.
type RoomList struct {
	Event   string `json:"event"`
	Version uint64 `json:"version"`
	Lang    string `json:"lang"`
	Rooms   []Room `json:"rooms"`
}

// TrackList is GET /v1/events/{event}/tracks.
type TrackList struct {
	Event   string  `json:"event"`
	Version uint64  `json:"version"`
	Lang    string  `json:"lang"`
	Tracks  []Track `json:"tracks"`
}

// SpeakerList is GET /v1/events/{event}/speakers.
type SpeakerList struct {
	Event    string    `json:"event"`
	Version  uint64    `json:"version"`
	Lang     string    `json:"lang"`
	Speakers []Speaker `json:"speakers"`
}

// ChangeList is GET /v1/events/{event}/changes?since=V.
type ChangeList struct {
	Event   string   `json:"event"`
	Since   uint64   `json:"since"`
	Version uint64   `json:"version"`
	Lang    string   `json:"lang"`
	Changes []Change `json:"changes"`
}

// Change is one typed programme change. Several changes may share a version (a session
// moved and delayed at once).
type Change struct {
	Version      uint64          `json:"version"`
	At           time.Time       `json:"at"`
	Type         string          `json:"type"`
	Session      *SessionRef     `json:"session,omitempty"`
	Entity       *EntityRef      `json:"entity,omitempty"`
	Room         *RoomMove       `json:"room,omitempty"`
	Time         *TimeChange     `json:"time,omitempty"`
	DelayMinutes int             `json:"delay_minutes,omitempty"`
	Speakers     *SpeakersChange `json:"speakers,omitempty"`
	Fields       []string        `json:"fields,omitempty"`
	Reason       *Reason         `json:"reason,omitempty"`
}

// SessionRef names a session by both its keys.
type SessionRef struct {
	ID   int64  `json:"id"`
	GUID string `json:"guid"`
}

// EntityRef names a room, track, speaker or the event itself.
type EntityRef struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
}

// RoomMove is a session's move from one room to another.
type RoomMove struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// Interval is a start and an end (RFC 3339, the event's offset).
type Interval struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// TimeChange is a session's old and new time.
type TimeChange struct {
	From Interval `json:"from"`
	To   Interval `json:"to"`
}

// SpeakersChange is a session's old and new speaker ids.
type SpeakersChange struct {
	From []string `json:"from"`
	To   []string `json:"to"`
}

// Problem is an RFC 9457 problem detail; switch on Code (docs/errors.md).
type Problem struct {
	Type     string       `json:"type"`
	Title    string       `json:"title"`
	Status   int          `json:"status"`
	Code     string       `json:"code"`
	Detail   string       `json:"detail,omitempty"`
	Instance string       `json:"instance,omitempty"`
	Errors   []FieldError `json:"errors,omitempty"`
}

// FieldError names one offending field of a request.
type FieldError struct {
	Field   string `json:"field"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Announcement is a message from the organizers to everyone at the event.
type Announcement struct {
	ID       int64     `json:"id"`
	Version  uint64    `json:"version"`
	At       time.Time `json:"at"`
	Title    string    `json:"title"`
	Body     string    `json:"body"`
	Priority string    `json:"priority"` // info, important or urgent
	Session  int64     `json:"session,omitempty"`
}

// AnnouncementList is GET /v1/events/{event}/announcements, oldest first.
type AnnouncementList struct {
	Event         string         `json:"event"`
	Version       uint64         `json:"version"`
	Lang          string         `json:"lang"`
	Announcements []Announcement `json:"announcements"`
	// Next and Prev are the paths of the pages after and before this one, when there are.
	Next string `json:"next,omitempty"`
	Prev string `json:"prev,omitempty"`
}

// ScheduleUpdate is the data of an update on schedule:<event>: every change of one version.
type ScheduleUpdate struct {
	Changes []Change `json:"changes"`
}

// AnnouncementsSnapshot is the data of a snapshot on announcements:<event>.
type AnnouncementsSnapshot struct {
	Announcements []Announcement `json:"announcements"`
}

// AnnouncementsUpdate is the data of an update on announcements:<event>.
type AnnouncementsUpdate struct {
	Announcement Announcement `json:"announcement"`
}
