package projection

import (
	"container/heap"
	"fmt"
	"time"

	"github.com/go-json-experiment/json"

	"github.com/cabildo/cabildo/internal/cabildo"
)

type snapshotEvent struct {
	Event    cabildo.Event              `json:"event"`
	Rooms    map[string]cabildo.Room    `json:"rooms"`
	Tracks   map[string]cabildo.Track   `json:"tracks"`
	Speakers map[string]cabildo.Speaker `json:"speakers"`
	Sessions map[string]cabildo.Session `json:"sessions"`

	Version     uint64                 `json:"version"`
	Updated     time.Time              `json:"updated"`
	SessionMeta map[string]Meta        `json:"session_meta"`
	RoomMeta    map[string]Meta        `json:"room_meta"`
	TrackMeta   map[string]Meta        `json:"track_meta"`
	SpeakerMeta map[string]Meta        `json:"speaker_meta"`
	ByID        map[int64]string       `json:"by_id"`
	Changes     []cabildo.Change       `json:"changes"`
	Horizon     uint64                 `json:"horizon"`
	EventVer    uint64                 `json:"event_version"`
	Created     uint64                 `json:"created"`
	Ann         []cabildo.Announcement `json:"announcements,omitempty"`
	AnnVersion  uint64                 `json:"announcements_version,omitempty"`
	QA          map[int64]*cabildo.QA  `json:"qa,omitempty"`
}

type snapshotState struct {
	Version  int                      `json:"format"`
	Seq      uint64                   `json:"seq"`
	Events   map[string]snapshotEvent `json:"events"`
	Subjects map[string]uint64        `json:"subjects"`
	Idem     map[string]Idempotent    `json:"idempotency"`
}

// Format 2 added the town hall.
const snapshotFormat = 2

// Snapshot serializes the whole store with the sequence it reflects.
func (s *Store) Snapshot() (seq uint64, data []byte, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := snapshotState{Version: snapshotFormat, Seq: s.seq, Events: map[string]snapshotEvent{},
		Subjects: s.subjects, Idem: s.idem}
	for id, e := range s.events {
		st.Events[id] = snapshotEvent{Event: e.Programme.Event, Rooms: e.Programme.Rooms,
			Tracks: e.Programme.Tracks, Speakers: e.Programme.Speakers, Sessions: e.Programme.Sessions,
			Version: e.Version, Updated: e.Updated, SessionMeta: e.Sessions, RoomMeta: e.Rooms,
			TrackMeta: e.Tracks, SpeakerMeta: e.Speakers, ByID: e.ByID, Changes: e.Changes, Horizon: e.Horizon, EventVer: e.EventVersion, Created: e.Created,
			Ann: e.Announcements, AnnVersion: e.AnnouncementsVersion, QA: e.QA}
	}
	data, err = json.Marshal(st, recordOptions)
	if err != nil {
		return 0, nil, fmt.Errorf("projection: snapshot: %w", err)
	}
	return s.seq, data, nil
}

// Restore replaces an empty store's state with a snapshot. It refuses to restore over a
// store that has applied anything.
func (s *Store) Restore(data []byte) (uint64, error) {
	var st snapshotState
	if err := json.Unmarshal(data, &st, recordOptions); err != nil {
		return 0, fmt.Errorf("projection: restore: %w", err)
	}
	if st.Version != snapshotFormat {
		return 0, fmt.Errorf("projection: restore: snapshot format %d, want %d", st.Version, snapshotFormat)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seq != 0 {
		return 0, fmt.Errorf("projection: restore over a store at seq %d", s.seq)
	}
	for id, e := range st.Events {
		p := cabildo.NewProgramme(e.Event)
		fill(p.Rooms, e.Rooms)
		fill(p.Tracks, e.Tracks)
		fill(p.Speakers, e.Speakers)
		fill(p.Sessions, e.Sessions)
		s.events[id] = &EventState{Programme: p, Version: e.Version, Updated: e.Updated,
			Sessions: orEmpty(e.SessionMeta), Rooms: orEmpty(e.RoomMeta), Tracks: orEmpty(e.TrackMeta),
			Speakers: orEmpty(e.SpeakerMeta), ByID: orEmptyIDs(e.ByID), Changes: e.Changes, Horizon: e.Horizon, EventVersion: e.EventVer,
			Created: e.Created, Announcements: e.Ann, AnnouncementsVersion: e.AnnVersion, subjects: s.subjects,
			QA: map[int64]*cabildo.QA{}}
		for sid, qa := range e.QA {
			qa.Rebuild()
			s.events[id].QA[sid] = qa
			for qid := range qa.Questions {
				s.events[id].LastQuestion = max(s.events[id].LastQuestion, qid)
			}
		}
	}
	fill(s.subjects, st.Subjects)
	fill(s.idem, st.Idem)
	s.idemAges = s.idemAges[:0]
	for k, r := range s.idem {
		s.idemAges = append(s.idemAges, idemAge{at: r.At, seq: r.Seq, key: k})
	}
	heap.Init(&s.idemAges)
	s.seq = st.Seq
	close(s.advanced)
	s.advanced = make(chan struct{})
	return s.seq, nil
}

func fill[K comparable, V any](dst, src map[K]V) {
	for k, v := range src {
		dst[k] = v
	}
}

func orEmpty(m map[string]Meta) map[string]Meta {
	if m == nil {
		return map[string]Meta{}
	}
	return m
}

func orEmptyIDs(m map[int64]string) map[int64]string {
	if m == nil {
		return map[int64]string{}
	}
	return m
}
