// Package schedule holds the use cases that change an event's programme: validate a command
// against the projection, append one domain record to the log of record, wait until this
// node's projection has applied it, and answer from there (read-your-writes).
package schedule

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/projection"
)

// Log is the log of record as the use cases need it.
type Log interface {
	Append(ctx context.Context, subject string, data []byte, expect *uint64, msgID string) (seq uint64, duplicate bool, err error)
}

// Service runs the programme's write use cases.
type Service struct {
	log  Log
	view *projection.Store
	// CatchUp bounds how long a write waits for the local projection after the log
	// acknowledged it.
	CatchUp time.Duration
}

// New returns a Service writing to log and reading from view.
func New(log Log, view *projection.Store) *Service {
	return &Service{log: log, view: view, CatchUp: 5 * time.Second}
}

// Request is who asks, and how to recognise a retry of the same request.
type Request struct {
	Actor          string
	IdempotencyKey string
	// Hash identifies the request's content; a retry with the same key and another hash
	// is refused rather than silently answered with the first result.
	Hash string
}

// Result is what a write produced: the log sequence that holds it and the subject it
// changed. Replayed is true when an earlier request with the same key did the work.
type Result struct {
	Seq     uint64
	Subject string
	// ID is what the write created when it has a number of its own (a question's id).
	ID       int64
	Created  bool
	Replayed bool
}

// Builder inspects the event (nil when it does not exist) and returns the record to
// append and the subject sequence the log must still be at (AnyOrder: none); skip means
// nothing changes.
type Builder func(st *projection.EventState) (rec cabildo.Record, expect uint64, skip bool, err error)

// AnyOrder is the expected sequence of a record that needs no order with the others on
// its subject, such as a question asked: concurrent appends never conflict.
const AnyOrder = ^uint64(0)

// Commit builds a record against this node's projection, appends it to the log, and waits
// until the projection has applied it (read-your-writes). Other use-case packages commit
// through it.
func (s *Service) Commit(ctx context.Context, req Request, event string, build Builder) (Result, error) {
	return s.commit(ctx, req, event, build)
}

// Replay answers a request whose Idempotency-Key this node has applied already: with the
// first request's result if it is the same request, with idempotency_key_reused if its
// content differs. ok is false when the key is new (or the request has none).
func (s *Service) Replay(event string, req Request) (res Result, ok bool, err error) {
	if req.IdempotencyKey == "" {
		return Result{}, false, nil
	}
	r, ok := s.view.Idempotent(event, req.IdempotencyKey)
	switch {
	case !ok:
		return Result{}, false, nil
	case r.RequestHash != req.Hash:
		return Result{}, true, ErrKeyReused()
	}
	return Result{Seq: r.Seq, Subject: r.Subject, ID: r.Ref, Replayed: true}, true, nil
}

func (s *Service) commit(ctx context.Context, req Request, event string, build Builder) (Result, error) {
	if res, ok, err := s.Replay(event, req); ok {
		return res, err
	}
	var (
		rec    cabildo.Record
		expect uint64
		skip   bool
		err    error
	)
	if !s.view.Read(event, func(st *projection.EventState) { rec, expect, skip, err = build(st) }) {
		rec, expect, skip, err = build(nil)
	}
	if err != nil {
		return Result{}, err
	}
	subject := rec.Subject()
	if skip {
		return Result{Seq: expect, Subject: subject}, nil
	}
	rec.Event, rec.Actor = event, req.Actor
	rec.IdempotencyKey, rec.RequestHash = req.IdempotencyKey, req.Hash
	data, err := json.Marshal(rec)
	if err != nil {
		return Result{}, fmt.Errorf("schedule: encode %s: %w", rec.Type, err)
	}
	var msgID string
	if req.IdempotencyKey != "" {
		msgID = event + ":" + req.IdempotencyKey
	}
	exp := &expect
	if expect == AnyOrder {
		exp = nil
	}
	seq, dup, err := s.log.Append(ctx, subject, data, exp, msgID)
	if err != nil {
		return Result{}, err
	}
	wctx, cancel := context.WithTimeout(ctx, s.CatchUp)
	defer cancel()
	if err := s.view.WaitFor(wctx, seq); err != nil {
		return Result{}, err
	}
	res := Result{Seq: seq, Subject: subject, Created: expect == 0 || expect == AnyOrder}
	if dup {
		// The log already held this key's record, from a retry we raced with.
		r, ok, err := s.Replay(event, req)
		if !ok {
			err = ErrKeyReused()
		}
		if err != nil {
			return Result{}, err
		}
		res = r
	}
	return res, nil
}

// ErrKeyReused is the answer to an Idempotency-Key sent again with another request.
func ErrKeyReused() error {
	return cabildo.Errorf(cabildo.CodeIdempotencyKeyReused,
		"this Idempotency-Key was already used for a different request")
}

func errNoEvent(event string) error {
	return cabildo.Errorf(cabildo.CodeNotFound, "event %q does not exist", event)
}

// FindSession resolves a session reference, its integer id or its guid.
func FindSession(st *projection.EventState, ref string) (cabildo.Session, projection.Meta, error) {
	guid := strings.ToLower(ref)
	if id, ok := cabildo.ParseID(ref); ok {
		guid = st.ByID[id]
	}
	s, m, ok := st.Session(guid)
	if !ok {
		return cabildo.Session{}, projection.Meta{}, cabildo.Errorf(cabildo.CodeNotFound, "session %q does not exist in this event", ref)
	}
	return s, m, nil
}

// PutEvent creates or replaces an event's own description and days.
func (s *Service) PutEvent(ctx context.Context, req Request, ev cabildo.Event) (Result, error) {
	if err := ev.Normalize(); err != nil {
		return Result{}, err
	}
	return s.commit(ctx, req, ev.ID, func(st *projection.EventState) (cabildo.Record, uint64, bool, error) {
		rec := cabildo.Record{Type: cabildo.RecordEventPut, Event: ev.ID, EventInfo: &ev}
		if st == nil {
			return rec, 0, false, nil
		}
		return rec, st.SubjectSeq(rec.Subject()), false, nil
	})
}

// PutRoom creates or replaces a room.
func (s *Service) PutRoom(ctx context.Context, req Request, event string, r cabildo.Room) (Result, error) {
	if err := r.Normalize(); err != nil {
		return Result{}, err
	}
	return s.putEntity(ctx, req, event, cabildo.Record{Type: cabildo.RecordRoomPut, Room: &r})
}

// PutTrack creates or replaces a track.
func (s *Service) PutTrack(ctx context.Context, req Request, event string, t cabildo.Track) (Result, error) {
	if err := t.Normalize(); err != nil {
		return Result{}, err
	}
	return s.putEntity(ctx, req, event, cabildo.Record{Type: cabildo.RecordTrackPut, Track: &t})
}

// PutSpeaker creates or replaces a speaker.
func (s *Service) PutSpeaker(ctx context.Context, req Request, event string, sp cabildo.Speaker) (Result, error) {
	if err := sp.Normalize(); err != nil {
		return Result{}, err
	}
	return s.putEntity(ctx, req, event, cabildo.Record{Type: cabildo.RecordSpeakerPut, Speaker: &sp})
}

func (s *Service) putEntity(ctx context.Context, req Request, event string, rec cabildo.Record) (Result, error) {
	rec.Event = event
	return s.commit(ctx, req, event, func(st *projection.EventState) (cabildo.Record, uint64, bool, error) {
		if st == nil {
			return rec, 0, false, errNoEvent(event)
		}
		return rec, st.SubjectSeq(rec.Subject()), false, nil
	})
}

// CreateSession adds a session. It gets its guid now (unless the organizer brought one)
// and its integer id when the log stores it.
func (s *Service) CreateSession(ctx context.Context, req Request, event string, in cabildo.Session, force bool) (Result, error) {
	if in.GUID == "" {
		in.GUID = uuid.NewString()
	} else if in.GUID = strings.ToLower(in.GUID); !cabildo.ValidGUID(in.GUID) {
		var f cabildo.Fields
		f.Add("guid", "invalid_guid", "guid must be a UUID")
		return Result{}, f.Err()
	}
	in.ID, in.Status, in.Cancellation = 0, cabildo.StatusScheduled, nil
	return s.commit(ctx, req, event, func(st *projection.EventState) (cabildo.Record, uint64, bool, error) {
		rec := cabildo.Record{Type: cabildo.RecordSessionCreated, Event: event, Session: &in}
		if st == nil {
			return rec, 0, false, errNoEvent(event)
		}
		if guidTaken(st, in.GUID) {
			return rec, 0, false, cabildo.Errorf(cabildo.CodeAlreadyExists, "a session with guid %s exists or existed", in.GUID)
		}
		return rec, 0, false, st.Programme.CheckSession(&in, force)
	})
}

// Change is a change to one session: patch edits a copy of it.
type Change struct {
	Ref     string
	IfMatch *uint64 // the session version the client saw, when it sent one
	Force   bool
	Reason  *cabildo.Reason
	Type    cabildo.RecordType // session.updated, .cancelled, .reinstated or .deleted
	Patch   func(*cabildo.Session)
}

// ChangeSession updates, cancels, reinstates or deletes a session under optimistic
// concurrency: the log refuses the append if anyone changed the session since it was read.
func (s *Service) ChangeSession(ctx context.Context, req Request, event string, c Change) (Result, error) {
	var f cabildo.Fields
	cabildo.CheckReason(&f, c.Reason)
	if err := f.Err(); err != nil {
		return Result{}, err
	}
	return s.commit(ctx, req, event, func(st *projection.EventState) (cabildo.Record, uint64, bool, error) {
		rec := cabildo.Record{Type: c.Type, Event: event, Reason: c.Reason}
		if st == nil {
			return rec, 0, false, errNoEvent(event)
		}
		cur, meta, err := FindSession(st, c.Ref)
		if err != nil {
			return rec, 0, false, err
		}
		next := cur.Clone()
		rec.Session = &next
		expect := st.SubjectSeq(rec.Subject())
		if c.IfMatch != nil && *c.IfMatch != meta.Version {
			return rec, 0, false, &cabildo.Error{Code: cabildo.CodeVersionConflict,
				Message: fmt.Sprintf("the session is at version %d, not %d; reload and retry", meta.Version, *c.IfMatch)}
		}
		switch c.Type {
		case cabildo.RecordSessionCancelled:
			if cur.Status == cabildo.StatusCancelled {
				return rec, meta.Version, true, nil
			}
			// Cancelling needs no other check: it frees a room, and it must work even for
			// a session the event's changed days left outside its hours.
			next.Status, next.Cancellation = cabildo.StatusCancelled, c.Reason
			return rec, expect, false, nil
		case cabildo.RecordSessionReinstated:
			if cur.Status == cabildo.StatusScheduled {
				return rec, meta.Version, true, nil
			}
			next.Status, next.Cancellation = cabildo.StatusScheduled, nil
		case cabildo.RecordSessionUpdated:
			if c.Patch != nil {
				c.Patch(&next)
			}
			next.GUID, next.ID, next.Status, next.Cancellation = cur.GUID, cur.ID, cur.Status, cur.Cancellation
		case cabildo.RecordSessionDeleted:
			return rec, expect, false, nil
		default:
			return rec, 0, false, fmt.Errorf("schedule: unknown session change %q", c.Type)
		}
		if err := st.Programme.CheckSession(&next, c.Force); err != nil {
			return rec, 0, false, err
		}
		if c.Type == cabildo.RecordSessionUpdated && sameSession(cur, next) {
			return rec, meta.Version, true, nil
		}
		return rec, expect, false, nil
	})
}

func sameSession(a, b cabildo.Session) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// PostAnnouncement publishes an announcement to everyone at the event.
func (s *Service) PostAnnouncement(ctx context.Context, req Request, event string, a cabildo.Announcement) (Result, error) {
	a.GUID, a.ID, a.At = uuid.NewString(), 0, time.Time{}
	if err := a.Normalize(); err != nil {
		return Result{}, err
	}
	return s.commit(ctx, req, event, func(st *projection.EventState) (cabildo.Record, uint64, bool, error) {
		rec := cabildo.Record{Type: cabildo.RecordAnnouncementPosted, Event: event, Announcement: &a}
		if st == nil {
			return rec, 0, false, errNoEvent(event)
		}
		if _, ok := st.ByID[a.Session]; a.Session != 0 && !ok {
			var f cabildo.Fields
			f.Add("session", "unknown_session", "session %d does not exist in this event", a.Session)
			return rec, 0, false, f.Err()
		}
		return rec, 0, false, nil
	})
}

// guidTaken reports whether a session with guid exists or existed in the event: removed
// sessions keep their id in ByID. It runs inside projection.Store.Read, so it must not call
// back into the Store (a second read lock deadlocks against a waiting Apply).
func guidTaken(st *projection.EventState, guid string) bool {
	for _, g := range st.ByID {
		if g == guid {
			return true
		}
	}
	return false
}
