package cabildo

import "time"

// Priority says how prominently apps show an announcement.
type Priority string

const (
	PriorityInfo      Priority = "info"
	PriorityImportant Priority = "important"
	PriorityUrgent    Priority = "urgent"
)

// MaxAnnouncementBody bounds an announcement's text per language.
const MaxAnnouncementBody = 2000

// Announcement is a bilingual message organizers post to everyone at the event. Its ID is
// the log sequence that posted it.
type Announcement struct {
	GUID     string    `json:"guid"`
	ID       int64     `json:"id"`
	Title    Text      `json:"title"`
	Body     Text      `json:"body,omitzero"`
	Priority Priority  `json:"priority"`
	Session  int64     `json:"session,omitempty"` // the session it is about, if any
	At       time.Time `json:"at"`
}

// Normalize trims and validates an announcement.
func (a *Announcement) Normalize() error {
	var f Fields
	a.Title, a.Body = a.Title.trimmed(), a.Body.trimmed()
	checkText(&f, "title", a.Title, true, MaxShortText)
	checkText(&f, "body", a.Body, false, MaxAnnouncementBody)
	if a.Priority == "" {
		a.Priority = PriorityInfo
	}
	switch a.Priority {
	case PriorityInfo, PriorityImportant, PriorityUrgent:
	default:
		f.Add("priority", "invalid_enum", "priority must be info, important or urgent")
	}
	if a.Session < 0 {
		f.Add("session", "unknown_session", "session must be a session id")
	}
	if !ValidGUID(a.GUID) {
		f.Add("guid", "invalid_guid", "guid must be a UUID")
	}
	return f.Err()
}
