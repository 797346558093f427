package httpapi

import (
	"github.com/cabildo/cabildo/internal/cabildo"
)

// Admin representations, answered to organizer writes, carry both languages as written.

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

type adminAnnouncement struct {
	cabildo.Announcement
	Version uint64 `json:"version"`
}
