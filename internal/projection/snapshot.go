package projection

import (
	"container/heap"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

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

// snapshotRaw is snapshotState with each event left encoded, so that events are encoded and
// decoded in parallel: the same bytes, on every core.
type snapshotRaw struct {
	Version  int                       `json:"format"`
	Seq      uint64                    `json:"seq"`
	Events   map[string]jsontext.Value `json:"events"`
	Subjects map[string]uint64         `json:"subjects"`
	Idem     map[string]Idempotent     `json:"idempotency"`
}

// Format 2 added the town hall.
const snapshotFormat = 2

// Snapshot serializes the whole store with the sequence it reflects.
func (s *Store) Snapshot() (seq uint64, data []byte, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := snapshotRaw{Version: snapshotFormat, Seq: s.seq, Events: make(map[string]jsontext.Value, len(s.events)),
		Subjects: s.subjects, Idem: s.idem}
	ids := make([]string, 0, len(s.events))
	for id := range s.events {
		ids = append(ids, id)
	}
	enc := make([]jsontext.Value, len(ids))
	err = parallel(len(ids), func(i int) error {
		e := s.events[ids[i]]
		var err error
		enc[i], err = json.Marshal(snapshotEvent{Event: e.Programme.Event, Rooms: e.Programme.Rooms,
			Tracks: e.Programme.Tracks, Speakers: e.Programme.Speakers, Sessions: e.Programme.Sessions,
			Version: e.Version, Updated: e.Updated, SessionMeta: e.Sessions, RoomMeta: e.Rooms,
			TrackMeta: e.Tracks, SpeakerMeta: e.Speakers, ByID: e.ByID, Changes: e.Changes, Horizon: e.Horizon, EventVer: e.EventVersion, Created: e.Created,
			Ann: e.Announcements, AnnVersion: e.AnnouncementsVersion, QA: e.QA}, recordOptions)
		return err
	})
	if err != nil {
		return 0, nil, fmt.Errorf("projection: snapshot: %w", err)
	}
	for i, id := range ids {
		st.Events[id] = enc[i]
	}
	data, err = json.Marshal(st, recordOptions)
	if err != nil {
		return 0, nil, fmt.Errorf("projection: snapshot: %w", err)
	}
	return s.seq, data, nil
}

// Restore replaces an empty store's state with a snapshot. It refuses to restore over a
// store that has applied anything, and a snapshot of another format: its events are not
// even decoded.
func (s *Store) Restore(data []byte) (uint64, error) {
	var st snapshotRaw
	if err := json.Unmarshal(data, &st, recordOptions); err != nil {
		return 0, fmt.Errorf("projection: restore: %w", err)
	}
	if st.Version != snapshotFormat {
		return 0, fmt.Errorf("projection: restore: snapshot format %d, want %d", st.Version, snapshotFormat)
	}
	if s.Seq() != 0 {
		return 0, fmt.Errorf("projection: restore over a store at seq %d", s.Seq())
	}
	ids := make([]string, 0, len(st.Events))
	for id := range st.Events {
		ids = append(ids, id)
	}
	events := make([]*EventState, len(ids))
	err := parallel(len(ids), func(i int) error {
		var e snapshotEvent
		if err := json.Unmarshal(st.Events[ids[i]], &e, recordOptions); err != nil {
			return err
		}
		p := cabildo.NewProgramme(e.Event)
		fill(p.Rooms, e.Rooms)
		fill(p.Tracks, e.Tracks)
		fill(p.Speakers, e.Speakers)
		fill(p.Sessions, e.Sessions)
		es := &EventState{Programme: p, Version: e.Version, Updated: e.Updated,
			Sessions: orEmpty(e.SessionMeta), Rooms: orEmpty(e.RoomMeta), Tracks: orEmpty(e.TrackMeta),
			Speakers: orEmpty(e.SpeakerMeta), ByID: orEmptyIDs(e.ByID), Changes: e.Changes, Horizon: e.Horizon, EventVersion: e.EventVer,
			Created: e.Created, Announcements: e.Ann, AnnouncementsVersion: e.AnnVersion,
			QA: map[int64]*cabildo.QA{}}
		for sid, qa := range e.QA {
			qa.Rebuild()
			es.QA[sid] = qa
			for qid := range qa.Questions {
				es.LastQuestion = max(es.LastQuestion, qid)
			}
		}
		events[i] = es
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("projection: restore: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seq != 0 {
		return 0, fmt.Errorf("projection: restore over a store at seq %d", s.seq)
	}
	for i, id := range ids {
		events[i].subjects = s.subjects
		s.events[id] = events[i]
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

// parallel runs fn(0..n-1) on up to GOMAXPROCS goroutines and returns the first error.
func parallel(n int, fn func(i int) error) error {
	errs := make([]error, n)
	var (
		wg   sync.WaitGroup
		next atomic.Int64
	)
	for range min(n, runtime.GOMAXPROCS(0)) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				errs[i] = fn(i)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
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
