package projection

import (
	"bufio"
	"bytes"
	"container/heap"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"runtime"
	"runtime/debug"
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

// snapshotRaw is a format-2 (JSON) snapshot with each event left encoded, so that events
// are encoded and decoded in parallel: the same bytes, on every core.
type snapshotRaw struct {
	Version  int                       `json:"format"`
	Seq      uint64                    `json:"seq"`
	Events   map[string]jsontext.Value `json:"events"`
	Subjects map[string]uint64         `json:"subjects"`
	Idem     map[string]Idempotent     `json:"idempotency"`
}

// Formats: 2 is JSON (format 2 added the town hall); 3 holds the same state in gob, in
// sections (below) encoded and decoded on every core. Gob is Go's own binary encoding: a snapshot of a long log decodes about 2.7× as
// fast as JSON and is about half the size (docs/benchmarks.md). A node writes format 3
// and restores either, so a snapshot written before an upgrade still restores after it.
const (
	snapshotFormat     = 3
	snapshotFormatJSON = 2
)

// snapshotMagic opens a format-3 snapshot; a JSON snapshot opens with '{'.
const snapshotMagic = "cabildo snapshot 3\n"

// castagnoli is the CRC each format-3 section carries (before its bytes, after its
// length): a snapshot damaged in the cache is refused, never half restored.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// A format-3 snapshot is the magic, then sections, each its length (uvarint), its CRC
// and its bytes, each one gob value: first the header, then the idempotency keys, then
// what the header's Sections list. An event is split in pieces (its programme and the
// rest, its change history a slice at a time, each session's town hall), so that even a
// node with one event, the usual case, decodes on every core.
type snapshotHeader struct {
	Seq      uint64
	Subjects map[string]uint64
	Sections []snapshotSection
}

// snapshotSection says what one section after the idempotency keys holds.
type snapshotSection struct {
	Event string
	Kind  sectionKind
}

type sectionKind uint8

const (
	sectionEvent   sectionKind = iota + 1 // a snapshotEvent without changes and town halls
	sectionChanges                        // the next []cabildo.Change of its event's history
	sectionQA                             // one *cabildo.QA of its event
)

// changesPerSection is how many changes of an event's history one section holds.
var changesPerSection = 16384 // a variable for tests

// Snapshot serializes the whole store with the sequence it reflects, in format 3. It
// holds the store only to copy what entries change in place (maps, town halls); the
// encoding, most of the work, runs while entries go on being applied.
func (s *Store) Snapshot() (seq uint64, data []byte, err error) {
	s.mu.RLock()
	h := snapshotHeader{Seq: s.seq, Subjects: maps.Clone(s.subjects)}
	values := []any{&h, maps.Clone(s.idem)}
	events := make(map[string]*snapshotEvent, len(s.events))
	for id, e := range s.events {
		events[id] = e.snapshotCopy()
	}
	s.mu.RUnlock()
	for id, snap := range events {
		changes, qas := snap.Changes, snap.QA
		snap.Changes, snap.QA = nil, nil
		h.Sections = append(h.Sections, snapshotSection{id, sectionEvent})
		values = append(values, snap)
		for len(changes) > 0 {
			n := min(len(changes), changesPerSection)
			h.Sections = append(h.Sections, snapshotSection{id, sectionChanges})
			values = append(values, changes[:n])
			changes = changes[n:]
		}
		for _, qa := range qas {
			h.Sections = append(h.Sections, snapshotSection{id, sectionQA})
			values = append(values, qa)
		}
	}
	sections := make([][]byte, len(values))
	err = parallel(len(values), func(i int) error {
		var b bytes.Buffer
		if err := gob.NewEncoder(&b).Encode(values[i]); err != nil {
			return err
		}
		sections[i] = b.Bytes()
		return nil
	})
	if err != nil {
		return 0, nil, fmt.Errorf("projection: snapshot: %w", err)
	}
	size := len(snapshotMagic)
	for _, sec := range sections {
		size += binary.MaxVarintLen64 + 4 + len(sec)
	}
	data = make([]byte, 0, size)
	data = append(data, snapshotMagic...)
	for _, sec := range sections {
		data = binary.AppendUvarint(data, uint64(len(sec)))
		data = binary.BigEndian.AppendUint32(data, crc32.Checksum(sec, castagnoli))
		data = append(data, sec...)
	}
	return h.Seq, data, nil
}

// DumpJSON writes the whole store as format 2, the JSON one: deterministic (map keys
// sorted), so two stores hold the same state exactly when their dumps are equal, and
// readable by people and tools. Restore reads it too.
func (s *Store) DumpJSON() (seq uint64, data []byte, err error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	st := snapshotRaw{Version: snapshotFormatJSON, Seq: s.seq, Events: make(map[string]jsontext.Value, len(s.events)),
		Subjects: s.subjects, Idem: s.idem}
	ids := make([]string, 0, len(s.events))
	for id := range s.events {
		ids = append(ids, id)
	}
	enc := make([]jsontext.Value, len(ids))
	err = parallel(len(ids), func(i int) error {
		var err error
		enc[i], err = json.Marshal(s.events[ids[i]].snapshot(), recordOptions)
		return err
	})
	if err != nil {
		return 0, nil, fmt.Errorf("projection: dump: %w", err)
	}
	for i, id := range ids {
		st.Events[id] = enc[i]
	}
	data, err = json.Marshal(st, recordOptions)
	if err != nil {
		return 0, nil, fmt.Errorf("projection: dump: %w", err)
	}
	return s.seq, data, nil
}

// snapshot is an event's state as a snapshot holds it.
func (e *EventState) snapshot() *snapshotEvent {
	return &snapshotEvent{Event: e.Programme.Event, Rooms: e.Programme.Rooms,
		Tracks: e.Programme.Tracks, Speakers: e.Programme.Speakers, Sessions: e.Programme.Sessions,
		Version: e.Version, Updated: e.Updated, SessionMeta: e.Sessions, RoomMeta: e.Rooms,
		TrackMeta: e.Tracks, SpeakerMeta: e.Speakers, ByID: e.ByID, Changes: e.Changes, Horizon: e.Horizon, EventVer: e.EventVersion, Created: e.Created,
		Ann: e.Announcements, AnnVersion: e.AnnouncementsVersion, QA: e.QA}
}

// snapshotCopy is snapshot with its own copy of everything an entry changes in place: the
// maps and the town halls. The history and the announcements only grow by append, which
// never writes within a slice's length, so they are shared up to it.
func (e *EventState) snapshotCopy() *snapshotEvent {
	snap := e.snapshot()
	snap.Rooms, snap.Tracks = maps.Clone(snap.Rooms), maps.Clone(snap.Tracks)
	snap.Speakers, snap.Sessions = maps.Clone(snap.Speakers), maps.Clone(snap.Sessions)
	snap.SessionMeta, snap.RoomMeta = maps.Clone(snap.SessionMeta), maps.Clone(snap.RoomMeta)
	snap.TrackMeta, snap.SpeakerMeta = maps.Clone(snap.TrackMeta), maps.Clone(snap.SpeakerMeta)
	snap.ByID = maps.Clone(snap.ByID)
	snap.Changes = snap.Changes[:len(snap.Changes):len(snap.Changes)]
	snap.Ann = snap.Ann[:len(snap.Ann):len(snap.Ann)]
	snap.QA = make(map[int64]*cabildo.QA, len(e.QA))
	for sid, qa := range e.QA {
		snap.QA[sid] = qa.Clone()
	}
	return snap
}

// state is the event a snapshot holds, with what is derived from it rebuilt; rebuilt says
// its town halls are already (format 3 rebuilds each as it is decoded).
func (e *snapshotEvent) state(rebuilt bool) *EventState {
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
	// Gob gives back an empty slice as nil. Everywhere else the state holds nil and empty
	// alike; changes have their rule.
	cabildo.CompleteChanges(es.Changes)
	for sid, qa := range e.QA {
		if !rebuilt {
			qa.Rebuild()
		}
		es.QA[sid] = qa
		for qid := range qa.Questions {
			es.LastQuestion = max(es.LastQuestion, qid)
		}
	}
	return es
}

// Restore replaces an empty store's state with a snapshot of format 3 or 2. It refuses to
// restore over a store that has applied anything, and a snapshot of another format: its
// events are not even decoded.
func (s *Store) Restore(data []byte) (uint64, error) {
	return s.restore(data, nil)
}

// RestoreFrom is Restore for a snapshot read from r as it arrives (from the cache, a
// piece at a time): each section of a format-3 snapshot is decoded as soon as it is in,
// while the rest is still coming. A format-2 snapshot is read whole first.
func (s *Store) RestoreFrom(r io.Reader) (uint64, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(len(snapshotMagic))
	if err == nil && string(head) == snapshotMagic {
		_, _ = br.Discard(len(snapshotMagic))
		return s.restore(nil, br)
	}
	data, err := io.ReadAll(br)
	if err != nil {
		return 0, fmt.Errorf("projection: restore: %w", err)
	}
	return s.restore(data, nil)
}

// restore restores data, or a format-3 snapshot's sections read from stream.
func (s *Store) restore(data []byte, stream *bufio.Reader) (uint64, error) {
	var (
		seq      uint64
		ids      []string
		events   []*EventState
		subjects map[string]uint64
		idem     map[string]Idempotent
		err      error
	)
	// What a restore allocates is nearly all the state it returns. Collecting while the
	// heap grows from nothing to that size (a node's first seconds) would only mark the
	// same objects over and over, about a third of the restore: the collector waits until
	// it is done (or until a GOMEMLIMIT, when one is set, says otherwise).
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	switch {
	case stream != nil:
		seq, ids, events, subjects, idem, err = s.restoreGob(streamSections(stream))
	case bytes.HasPrefix(data, []byte(snapshotMagic)):
		seq, ids, events, subjects, idem, err = s.restoreGob(sliceSections(data[len(snapshotMagic):]))
	case len(data) > 0 && data[0] == '{':
		seq, ids, events, subjects, idem, err = s.restoreJSON(data)
	default:
		err = errors.New("unknown snapshot format: neither format 3 nor JSON")
	}
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
	fill(s.subjects, subjects)
	fill(s.idem, idem)
	s.idemAges = s.idemAges[:0]
	for k, r := range s.idem {
		s.idemAges = append(s.idemAges, idemAge{at: r.At, seq: r.Seq, key: k})
	}
	heap.Init(&s.idemAges)
	s.seq = seq
	close(s.advanced)
	s.advanced = make(chan struct{})
	return s.seq, nil
}

// sectionSource returns a format-3 snapshot's sections one by one, their checksums
// checked, and io.EOF after the last.
type sectionSource func() ([]byte, error)

// maxSection bounds one section's length as a snapshot states it, before anything is
// allocated for it.
const maxSection = 1 << 30

// sliceSections reads sections out of data without copying them.
func sliceSections(data []byte) sectionSource {
	i := 0
	return func() ([]byte, error) {
		if len(data) == 0 {
			return nil, io.EOF
		}
		n, k := binary.Uvarint(data)
		if k <= 0 || uint64(len(data)-k) < 4 || n > uint64(len(data)-k-4) {
			return nil, errors.New("a section overruns the snapshot")
		}
		sum, sec := binary.BigEndian.Uint32(data[k:]), data[k+4:k+4+int(n)]
		data = data[k+4+int(n):]
		i++
		return checked(sec, sum, i-1)
	}
}

// streamSections reads sections from r as they arrive.
func streamSections(r *bufio.Reader) sectionSource {
	i := 0
	return func() ([]byte, error) {
		n, err := binary.ReadUvarint(r)
		if err == io.EOF {
			return nil, io.EOF
		}
		if err != nil || n > maxSection {
			return nil, fmt.Errorf("section %d: bad length (%v)", i, err)
		}
		var sum [4]byte
		if _, err := io.ReadFull(r, sum[:]); err != nil {
			return nil, fmt.Errorf("section %d: %w", i, noEOF(err))
		}
		sec := make([]byte, n)
		if _, err := io.ReadFull(r, sec); err != nil {
			return nil, fmt.Errorf("section %d: %w", i, noEOF(err))
		}
		i++
		return checked(sec, binary.BigEndian.Uint32(sum[:]), i-1)
	}
}

// noEOF turns the end of the input inside a section into the error it is.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func checked(sec []byte, sum uint32, i int) ([]byte, error) {
	if crc32.Checksum(sec, castagnoli) != sum {
		return nil, fmt.Errorf("section %d is damaged (checksum)", i)
	}
	return sec, nil
}

// restoreGob decodes the sections of a format-3 snapshot on every core, each as soon as
// next returns it, then puts each event together from its pieces.
func (s *Store) restoreGob(next sectionSource) (seq uint64, ids []string, events []*EventState, subjects map[string]uint64, idem map[string]Idempotent, err error) {
	fail := func(format string, a ...any) (uint64, []string, []*EventState, map[string]uint64, map[string]Idempotent, error) {
		return 0, nil, nil, nil, nil, fmt.Errorf("snapshot format 3: "+format, a...)
	}
	first, err := next()
	if err == io.EOF {
		return fail("header missing")
	}
	if err != nil {
		return fail("%w", err)
	}
	var h snapshotHeader
	if err := gob.NewDecoder(bytes.NewReader(first)).Decode(&h); err != nil {
		return fail("header: %w", err)
	}
	if s.Seq() != 0 {
		return 0, nil, nil, nil, nil, fmt.Errorf("restore over a store at seq %d", s.Seq())
	}
	// Section 1 is the idempotency keys, then one for each of h.Sections.
	values := make([]any, len(h.Sections))
	decode := func(i int, sec []byte) error {
		dec := gob.NewDecoder(bytes.NewReader(sec))
		if i == 1 {
			return dec.Decode(&idem)
		}
		what := h.Sections[i-2]
		var err error
		switch what.Kind {
		case sectionEvent:
			var e snapshotEvent
			err = dec.Decode(&e)
			values[i-2] = &e
		case sectionChanges:
			var c []cabildo.Change
			err = dec.Decode(&c)
			values[i-2] = c
		case sectionQA:
			var qa *cabildo.QA
			if err = dec.Decode(&qa); err == nil && qa != nil {
				qa.Rebuild()
			}
			values[i-2] = qa
		default:
			return fmt.Errorf("section %d: unknown kind %d", i, what.Kind)
		}
		if err != nil {
			return fmt.Errorf("section %d (event %s): %w", i, what.Event, err)
		}
		return nil
	}
	type job struct {
		i   int
		sec []byte
	}
	jobs := make(chan job, runtime.GOMAXPROCS(0))
	errs := make([]error, len(h.Sections)+2)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for j := range jobs {
				errs[j.i] = decode(j.i, j.sec)
			}
		})
	}
	n := 1
	for ; ; n++ {
		sec, err := next()
		if err == io.EOF {
			break
		}
		if err == nil && n >= len(errs) {
			err = fmt.Errorf("more sections than the %d listed", len(h.Sections))
		}
		if err != nil {
			close(jobs)
			wg.Wait()
			return fail("%w", err)
		}
		jobs <- job{n, sec}
	}
	close(jobs)
	wg.Wait()
	if n != len(errs) {
		return fail("%d sections listed, %d stored", len(h.Sections), n-2)
	}
	if err := errors.Join(errs...); err != nil {
		return fail("%w", err)
	}
	// Put the events together: every piece follows its event's own section.
	byID := map[string]*snapshotEvent{}
	for i, sec := range h.Sections {
		e := byID[sec.Event]
		if (e == nil) != (sec.Kind == sectionEvent) {
			return fail("section %d: event %s out of order", i+2, sec.Event)
		}
		switch v := values[i].(type) {
		case *snapshotEvent:
			v.QA = map[int64]*cabildo.QA{}
			byID[sec.Event] = v
			ids = append(ids, sec.Event)
		case []cabildo.Change:
			e.Changes = append(e.Changes, v...)
		case *cabildo.QA:
			if v == nil {
				return fail("section %d: an empty town hall", i+2)
			}
			e.QA[v.Session] = v
		}
	}
	events = make([]*EventState, len(ids))
	for i, id := range ids {
		events[i] = byID[id].state(true)
	}
	return h.Seq, ids, events, h.Subjects, idem, nil
}

// restoreJSON decodes a format-2 snapshot, its events in parallel.
func (s *Store) restoreJSON(data []byte) (seq uint64, ids []string, events []*EventState, subjects map[string]uint64, idem map[string]Idempotent, err error) {
	var st snapshotRaw
	if err := json.Unmarshal(data, &st, recordOptions); err != nil {
		return 0, nil, nil, nil, nil, err
	}
	if st.Version != snapshotFormatJSON {
		return 0, nil, nil, nil, nil, fmt.Errorf("snapshot format %d, want %d or %d", st.Version, snapshotFormat, snapshotFormatJSON)
	}
	if s.Seq() != 0 {
		return 0, nil, nil, nil, nil, fmt.Errorf("restore over a store at seq %d", s.Seq())
	}
	ids = make([]string, 0, len(st.Events))
	for id := range st.Events {
		ids = append(ids, id)
	}
	events = make([]*EventState, len(ids))
	err = parallel(len(ids), func(i int) error {
		var e snapshotEvent
		if err := json.Unmarshal(st.Events[ids[i]], &e, recordOptions); err != nil {
			return err
		}
		events[i] = e.state(false)
		return nil
	})
	return st.Seq, ids, events, st.Subjects, st.Idem, err
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
