// Package demo holds the fictional event `cabildo serve --demo` loads when the log is
// empty: the Americas Regional Open Government Meeting 2027 in San José, Costa Rica
// (event id ogp-sanjose-2027), a bilingual unconference day followed by two conference
// days. The people, institutions and positions in it are made up.
//
// The programme is embedded as JSON and decoded strictly, so a typo in the file is an
// error rather than a silently missing field.
package demo

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/cabildo/cabildo/internal/cabildo"
)

//go:embed ogp-sanjose-2027.json
var programmeJSON []byte

// Programme is a whole event ready to be written through the use cases.
type Programme struct {
	Event    cabildo.Event
	Rooms    []cabildo.Room
	Tracks   []cabildo.Track
	Speakers []cabildo.Speaker
	Sessions []cabildo.Session
}

// file is the shape of the embedded JSON.
type file struct {
	Event    cabildo.Event     `json:"event"`
	Rooms    []cabildo.Room    `json:"rooms"`
	Tracks   []cabildo.Track   `json:"tracks"`
	Speakers []cabildo.Speaker `json:"speakers"`
	Sessions []session         `json:"sessions"`
}

// session is a cabildo.Session as the file writes it: without guid, id, status or
// cancellation, which are the server's to give. Leaving them out of the struct makes
// them unknown fields, so the strict decoder refuses a file that sets them.
type session struct {
	Title          cabildo.Text        `json:"title"`
	Abstract       cabildo.Text        `json:"abstract"`
	Kind           cabildo.SessionKind `json:"kind"`
	Language       cabildo.Lang        `json:"language"`
	Interpretation []cabildo.Lang      `json:"interpretation"`
	Room           string              `json:"room"`
	Track          string              `json:"track"`
	Start          time.Time           `json:"start"`
	End            time.Time           `json:"end"`
	Speakers       []string            `json:"speakers"`
	Tags           []string            `json:"tags"`
}

// Load decodes the embedded demo event (strict: unknown fields are an error); sessions
// come back with Status cabildo.StatusScheduled and no GUID/ID. Every call returns a
// fresh copy that the caller may change.
func Load() (Programme, error) {
	return decode(programmeJSON)
}

func decode(data []byte) (Programme, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f file
	if err := dec.Decode(&f); err != nil {
		return Programme{}, fmt.Errorf("demo: decode programme: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Programme{}, errors.New("demo: decode programme: data after the top-level object")
	}
	p := Programme{Event: f.Event, Rooms: f.Rooms, Tracks: f.Tracks, Speakers: f.Speakers,
		Sessions: make([]cabildo.Session, len(f.Sessions))}
	for i, s := range f.Sessions {
		p.Sessions[i] = cabildo.Session{
			Title:          s.Title,
			Abstract:       s.Abstract,
			Kind:           s.Kind,
			Status:         cabildo.StatusScheduled,
			Language:       s.Language,
			Interpretation: s.Interpretation,
			Room:           s.Room,
			Track:          s.Track,
			Start:          s.Start,
			End:            s.End,
			Speakers:       s.Speakers,
			Tags:           s.Tags,
		}
	}
	return p, nil
}
