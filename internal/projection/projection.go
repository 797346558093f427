// Package projection builds the in-memory state of every event from the log of record.
// Every node runs one; the node that handled a write applies it only when it comes back
// from the log, like every other node, so all nodes agree on order. Reads and the use
// cases' validation go through it; only the log changes it.
package projection

import (
	"container/heap"
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/go-json-experiment/json"
	jsonv1 "github.com/go-json-experiment/json/v1"

	"github.com/cabildo/cabildo/internal/cabildo"
)

// recordOptions decode log records exactly as encoding/json does (field names matched
// without regard to case, a repeated name taking the last value, invalid UTF-8 replaced):
// every record a node ever applied must still apply the same way. The decoder is about
// twice as fast, which is most of a cold start's work.
var recordOptions = jsonv1.DefaultOptionsV1()

// decodeRecord decodes and checks one log record.
func decodeRecord(data []byte) (cabildo.Record, error) {
	var rec cabildo.Record
	if err := json.Unmarshal(data, &rec, recordOptions); err != nil {
		return rec, err
	}
	return rec, rec.Validate()
}

// Applied tells listeners what one log entry changed.
type Applied struct {
	Seq uint64
	// Prev is the event's version before this entry: what an update's prev is.
	Prev    uint64
	Event   string
	Record  cabildo.Record
	Changes []cabildo.Change
}

// Options configure a Store.
type Options struct {
	// MaxChanges bounds the change history kept per event; clients asking for changes
	// older than what is kept are told to reload. Default 100,000.
	MaxChanges int
	Logger     *slog.Logger
	// IdempotencyTTL is how long an Idempotency-Key is remembered after its write, far
	// beyond the log's own de-duplication window. Default 72 h: a whole event.
	IdempotencyTTL time.Duration
	// OnApply, when set, is called after each entry is applied, in log order, outside
	// the store's lock. It must not block for long: it runs on the consuming goroutine.
	OnApply func(Applied)
}

// Store is the projection of the whole log.
type Store struct {
	opts Options
	log  *slog.Logger

	mu       sync.RWMutex
	seq      uint64 // last applied log sequence
	events   map[string]*EventState
	subjects map[string]uint64 // last sequence per subject
	idem     map[string]Idempotent
	idemAges idemAges      // every key in idem by its time, for pruning without a full scan
	advanced chan struct{} // closed and replaced whenever seq moves
}

// EventState is one event as projected: its programme plus what the log adds (versions,
// times, change history). It is only valid inside a Read callback.
type EventState struct {
	Programme *cabildo.Programme
	// Version is the sequence of the last entry that changed this event: the version of
	// its schedule. Updated is that entry's time.
	Version uint64
	Updated time.Time
	// EventVersion is the sequence of the event's own last description (event.put).
	EventVersion uint64
	// Created is the sequence that created the event: its first version.
	Created uint64
	// Announcements are the event's announcements, oldest first, with their own channel
	// version (AnnouncementsVersion) so they never break the schedule's prev chain.
	Announcements        []cabildo.Announcement
	AnnouncementsVersion uint64
	// Sessions holds each session's own version and last change time.
	Sessions map[string]Meta
	// QA is each session's town hall, by session id, once anyone configured it or asked.
	// LastQuestion is the id of the event's last question: they count up from 1.
	QA           map[int64]*cabildo.QA
	LastQuestion int64
	Rooms        map[string]Meta
	Tracks       map[string]Meta
	Speakers     map[string]Meta
	// ByID maps every session id ever given to its guid; removed sessions stay here so
	// their ids resolve to "gone", never to something else.
	ByID map[int64]string
	// Changes is the retained change history, oldest first; every change after Horizon is
	// in it.
	Changes []cabildo.Change
	Horizon uint64

	subjects map[string]uint64 // the store's, read under its lock
}

// SubjectSeq returns the sequence of the last log entry on a subject: what the next write
// to it must expect.
func (st *EventState) SubjectSeq(subject string) uint64 { return st.subjects[subject] }

// Meta is the version and time of an entity's last change.
type Meta struct {
	Version uint64    `json:"version"`
	Updated time.Time `json:"updated"`
}

// Idempotent remembers a write made with an Idempotency-Key.
type Idempotent struct {
	Seq         uint64    `json:"seq"`
	RequestHash string    `json:"hash"`
	Subject     string    `json:"subject"`
	At          time.Time `json:"at"`
	// Ref is what the write created when it has a number of its own (a question's id),
	// for writes that share their log entry with others.
	Ref int64 `json:"ref,omitempty"`
}

// pruneIdempotency forgets keys older than the retention, judged by log time so every
// node forgets the same keys at the same entry. The keys wait in a heap by time, so an
// entry costs the keys it forgets, not a scan of every key remembered.
func (s *Store) pruneIdempotency(seq uint64, at time.Time) {
	if seq%1024 != 0 {
		return
	}
	cutoff := at.Add(-s.opts.IdempotencyTTL)
	for len(s.idemAges) > 0 && s.idemAges[0].at.Before(cutoff) {
		a := heap.Pop(&s.idemAges).(idemAge)
		// A key remembered again since has a later entry of its own in the heap.
		if r, ok := s.idem[a.key]; ok && r.Seq == a.seq {
			delete(s.idem, a.key)
		}
	}
}

// aged puts the keys that the entry at seq remembered into the pruning heap.
func (s *Store) aged(rec cabildo.Record, seq uint64) {
	add := func(key string) {
		if key == "" {
			return
		}
		k := idemKey(rec.Event, key)
		if r, ok := s.idem[k]; ok && r.Seq == seq {
			heap.Push(&s.idemAges, idemAge{at: r.At, seq: seq, key: k})
		}
	}
	add(rec.IdempotencyKey)
	for _, a := range rec.Asked {
		add(a.IdempotencyKey)
	}
}

// idemAge is one remembered key's time, in the pruning heap.
type idemAge struct {
	at  time.Time
	seq uint64
	key string
}

// idemAges is a min-heap of remembered keys by time.
type idemAges []idemAge

func (h idemAges) Len() int           { return len(h) }
func (h idemAges) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h idemAges) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *idemAges) Push(x any)        { *h = append(*h, x.(idemAge)) }
func (h *idemAges) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// New returns an empty store.
func New(opts Options) *Store {
	if opts.MaxChanges <= 0 {
		opts.MaxChanges = 100_000
	}
	if opts.IdempotencyTTL <= 0 {
		opts.IdempotencyTTL = 72 * time.Hour
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Store{opts: opts, log: opts.Logger, events: map[string]*EventState{},
		subjects: map[string]uint64{}, idem: map[string]Idempotent{}, advanced: make(chan struct{})}
}

// Seq returns the last applied log sequence.
func (s *Store) Seq() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.seq
}

// WaitFor blocks until the store has applied seq, or ctx ends.
func (s *Store) WaitFor(ctx context.Context, seq uint64) error {
	for {
		s.mu.RLock()
		done, ch := s.seq >= seq, s.advanced
		s.mu.RUnlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return &cabildo.Error{Code: cabildo.CodeTimeout,
				Message: "the write is stored but this node has not caught up yet", RetryAfter: time.Second, Err: ctx.Err()}
		}
	}
}

// Read calls fn with the state of one event under the read lock; fn must not keep it.
// It reports whether the event exists.
func (s *Store) Read(event string, fn func(*EventState)) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st, ok := s.events[event]
	if ok {
		fn(st)
	}
	return ok
}

// Each calls fn for every event under the read lock, in no particular order.
func (s *Store) Each(fn func(*EventState)) (seq uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, st := range s.events {
		fn(st)
	}
	return s.seq
}

// SubjectSeq returns the sequence of the last entry on a subject, 0 when there is none.
func (s *Store) SubjectSeq(subject string) uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.subjects[subject]
}

// Idempotent returns what a write with this key in this event did, if one was applied.
func (s *Store) Idempotent(event, key string) (Idempotent, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.idem[idemKey(event, key)]
	return r, ok
}

// Apply applies one log entry. Entries must come in log order; one at or below the
// current sequence is ignored, so replays after a reconnect are harmless. A record that
// cannot be decoded or does not apply is logged and skipped: the log is the truth, and
// one bad entry must not stop a node.
func (s *Store) Apply(seq uint64, subject string, at time.Time, data []byte) {
	s.ApplyEntry(Decode(seq, subject, at, data))
}

// Entry is a log entry decoded ahead of being applied.
type Entry struct {
	Seq     uint64
	Subject string
	At      time.Time
	rec     cabildo.Record
	err     error
}

// Decode decodes a log entry for ApplyEntry. It reads no state of any store, so it may run
// on another goroutine than the one applying: decoding is most of a replay's work.
func Decode(seq uint64, subject string, at time.Time, data []byte) Entry {
	rec, err := decodeRecord(data)
	return Entry{Seq: seq, Subject: subject, At: at, rec: rec, err: err}
}

// ApplyEntry applies a decoded log entry, exactly as Apply applies it undecoded.
func (s *Store) ApplyEntry(e Entry) {
	seq, subject, at, rec, err := e.Seq, e.Subject, e.At, e.rec, e.err
	s.mu.Lock()
	if seq <= s.seq {
		s.mu.Unlock()
		return
	}
	var (
		changes []cabildo.Change
		prev    uint64
	)
	if err == nil {
		if st, ok := s.events[rec.Event]; ok {
			prev = st.Version
			if rec.Type == cabildo.RecordAnnouncementPosted {
				prev = max(st.AnnouncementsVersion, st.Created)
			}
		}
		changes, err = s.apply(seq, subject, at, rec)
		s.aged(rec, seq)
	}
	// The log counts a skipped entry on its subject too; so must the expected sequence
	// of the next write there, or that aggregate could never be written again.
	s.subjects[subject] = seq
	s.pruneIdempotency(seq, at)
	s.seq = seq
	close(s.advanced)
	s.advanced = make(chan struct{})
	s.mu.Unlock()
	if err != nil {
		s.log.Warn("projection: skipped log entry", "seq", seq, "subject", subject, "err", err)
		return
	}
	if s.opts.OnApply != nil {
		s.opts.OnApply(Applied{Seq: seq, Prev: prev, Event: rec.Event, Record: rec, Changes: changes})
	}
}

// Feeder applies log entries on a goroutine of its own while its caller decodes the next
// ones, so that replaying a long log keeps two cores busy rather than one. Entries are
// applied in the order they are added; OnApply runs on the feeder's goroutine. A node
// consumes the log through one.
type Feeder struct {
	ch    chan Entry
	done  chan struct{}
	close sync.Once
}

// Feeder starts a feeder that holds up to buffer decoded entries waiting to be applied.
func (s *Store) Feeder(buffer int) *Feeder {
	f := &Feeder{ch: make(chan Entry, buffer), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		for e := range f.ch {
			s.ApplyEntry(e)
		}
	}()
	return f
}

// Add decodes an entry on the caller's goroutine and queues it to be applied. It must not
// be called after Close.
func (f *Feeder) Add(seq uint64, subject string, at time.Time, data []byte) {
	f.ch <- Decode(seq, subject, at, data)
}

// Close applies every entry added and stops the feeder. Calling it again does nothing.
func (f *Feeder) Close() {
	f.close.Do(func() { close(f.ch) })
	<-f.done
}

func (s *Store) apply(seq uint64, subject string, at time.Time, rec cabildo.Record) ([]cabildo.Change, error) {
	at = at.UTC()
	st, ok := s.events[rec.Event]
	if !ok && rec.Type != cabildo.RecordEventPut {
		return nil, fmt.Errorf("event %q does not exist", rec.Event)
	}
	if rec.Type.TownHall() {
		if err := s.applyTownHall(st, seq, subject, at, rec); err != nil {
			return nil, err
		}
		s.remember(rec, seq, subject, at)
		// Not a programme change: the schedule's version and history stay as they are.
		return nil, nil
	}
	meta := Meta{Version: seq, Updated: at}
	var changes []cabildo.Change
	entity := func(kind, id string) {
		changes = append(changes, cabildo.Change{Type: cabildo.ChangeType(kind + "_updated"),
			Entity: &cabildo.EntityRef{Kind: kind, ID: id}, Reason: rec.Reason})
	}
	switch rec.Type {
	case cabildo.RecordEventPut:
		if !ok {
			st = &EventState{Programme: cabildo.NewProgramme(*rec.EventInfo), Sessions: map[string]Meta{}, QA: map[int64]*cabildo.QA{},
				Rooms: map[string]Meta{}, Tracks: map[string]Meta{}, Speakers: map[string]Meta{},
				ByID: map[int64]string{}, subjects: s.subjects, Created: seq}
			s.events[rec.Event] = st
		} else {
			st.Programme.Event = *rec.EventInfo
			entity("event", rec.Event)
		}
		st.EventVersion = seq
	case cabildo.RecordRoomPut:
		st.Programme.Rooms[rec.Room.ID] = *rec.Room
		st.Rooms[rec.Room.ID] = meta
		entity("room", rec.Room.ID)
	case cabildo.RecordTrackPut:
		st.Programme.Tracks[rec.Track.ID] = *rec.Track
		st.Tracks[rec.Track.ID] = meta
		entity("track", rec.Track.ID)
	case cabildo.RecordSpeakerPut:
		st.Programme.Speakers[rec.Speaker.ID] = *rec.Speaker
		st.Speakers[rec.Speaker.ID] = meta
		entity("speaker", rec.Speaker.ID)
	case cabildo.RecordSessionCreated, cabildo.RecordSessionUpdated, cabildo.RecordSessionCancelled,
		cabildo.RecordSessionReinstated, cabildo.RecordSessionDeleted:
		next := rec.Session.Clone()
		prev, existed := st.Programme.Sessions[next.GUID]
		switch {
		case rec.Type == cabildo.RecordSessionCreated && existed:
			return nil, fmt.Errorf("session %s already exists", next.GUID)
		case rec.Type != cabildo.RecordSessionCreated && !existed:
			return nil, fmt.Errorf("session %s does not exist", next.GUID)
		}
		if existed {
			next.ID = prev.ID
			changes = cabildo.SessionChanges(rec.Type, &prev, next, rec.Reason)
		} else {
			// The creating entry's sequence is the session's integer id: positive, unique
			// across the whole log, and never reused.
			next.ID = int64(seq)
			changes = cabildo.SessionChanges(rec.Type, nil, next, rec.Reason)
		}
		if rec.Type == cabildo.RecordSessionDeleted {
			delete(st.Programme.Sessions, next.GUID)
			delete(st.Sessions, next.GUID)
		} else {
			st.Programme.Sessions[next.GUID] = next
			st.Sessions[next.GUID] = meta
		}
		st.ByID[next.ID] = next.GUID
	case cabildo.RecordAnnouncementPosted:
		a := *rec.Announcement
		a.ID, a.At = int64(seq), at
		st.Announcements = append(st.Announcements, a)
		st.AnnouncementsVersion = seq
		s.remember(rec, seq, subject, at)
		// Not a programme change: the schedule's version and history stay as they are.
		return nil, nil
	default:
		return nil, fmt.Errorf("unknown record type %q", rec.Type)
	}
	for i := range changes {
		changes[i].Version, changes[i].At = seq, at
	}
	st.Version, st.Updated = seq, at
	st.Changes = append(st.Changes, changes...)
	if over := len(st.Changes) - s.opts.MaxChanges; over > 0 {
		// Drop whole versions only, so a client is never handed half of one record.
		cut := st.Changes[over-1].Version
		i := over
		for i < len(st.Changes) && st.Changes[i].Version == cut {
			i++
		}
		st.Horizon = cut
		// Resliced, not copied: append moves the kept changes to a new array only when
		// the old one is full, so trimming costs O(1) per change however long the history.
		st.Changes = st.Changes[i:]
	}
	s.remember(rec, seq, subject, at)
	return changes, nil
}

// remember records what a write made with an Idempotency-Key did, so a retry long after
// the log's own de-duplication window gets the same answer.
func (s *Store) remember(rec cabildo.Record, seq uint64, subject string, at time.Time) {
	if rec.IdempotencyKey != "" {
		s.idem[idemKey(rec.Event, rec.IdempotencyKey)] = Idempotent{Seq: seq, RequestHash: rec.RequestHash, Subject: subject, At: at}
	}
}

// idemKey is where an event's Idempotency-Key is remembered.
func idemKey(event, key string) string { return event + "\x00" + key }
