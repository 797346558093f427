package schedule_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/projection"
	"github.com/cabildo/cabildo/internal/schedule"
)

// logDouble is a test double of the log-of-record contract that schedule.Log states and
// natslog implements on the embedded (single-node) JetStream server. It is not a NATS fake:
// it keeps exactly what the use cases rely on, and the integration tests run the real thing.
//
//   - one global sequence, starting at 1;
//   - expect, when not nil, must equal the subject's last sequence (0: no entry yet),
//     otherwise the append fails with a *cabildo.Error CodeVersionConflict;
//   - a repeated msgID returns the first entry's sequence and duplicate=true, appending
//     nothing. As on a single JetStream node, the expected-sequence check runs first, so a
//     repeat carrying a stale expectation is a conflict, not a duplicate;
//   - appended entries reach the projection in order, on another goroutine, like the
//     node's consumer; hold/release delay that delivery.
type logDouble struct {
	mu      sync.Mutex
	seq     uint64
	last    map[string]uint64
	ids     map[string]uint64
	entries []logEntry
	calls   int // Append calls, whatever their outcome
	held    bool
	pending []logEntry
	feed    chan logEntry
	called  chan struct{} // closed and replaced on every Append call
	fed     chan struct{}
}

type logEntry struct {
	seq     uint64
	subject string
	at      time.Time
	data    []byte
}

var _ schedule.Log = (*logDouble)(nil)

var t0 = time.Date(2027, 4, 1, 12, 0, 0, 0, time.UTC)

func newLogDouble(t *testing.T, store *projection.Store) *logDouble {
	l := &logDouble{last: map[string]uint64{}, ids: map[string]uint64{},
		feed: make(chan logEntry, 1<<14), called: make(chan struct{}), fed: make(chan struct{})}
	go func() {
		defer close(l.fed)
		for e := range l.feed {
			store.Apply(e.seq, e.subject, e.at, e.data)
		}
	}()
	t.Cleanup(func() {
		l.mu.Lock()
		l.held = false
		for _, e := range l.pending {
			l.feed <- e
		}
		l.pending = nil
		close(l.feed)
		l.mu.Unlock()
		// Bounded, so a test that found a deadlock in the projection reports it instead
		// of hanging here behind the stuck consumer.
		select {
		case <-l.fed:
		case <-time.After(10 * time.Second):
			t.Error("log double: the projection did not take the remaining entries")
		}
	})
	return l
}

func (l *logDouble) Append(ctx context.Context, subject string, data []byte, expect *uint64, msgID string) (uint64, bool, error) {
	if err := ctx.Err(); err != nil {
		return 0, false, &cabildo.Error{Code: cabildo.CodeUnavailable, Message: "the log is unavailable", Err: err}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	close(l.called)
	l.called = make(chan struct{})
	if expect != nil && l.last[subject] != *expect {
		// Like natslog: a retry whose original is the first entry on the subject after
		// expect is a duplicate, not a conflict.
		if seq, ok := l.ids[msgID]; ok && msgID != "" && l.firstAfter(subject, *expect) == seq {
			return seq, true, nil
		}
		return 0, false, &cabildo.Error{Code: cabildo.CodeVersionConflict, Message: "someone else changed this first; reload and retry",
			Err: fmt.Errorf("wrong last sequence: %d", l.last[subject])}
	}
	if seq, ok := l.ids[msgID]; ok && msgID != "" {
		return seq, true, nil
	}
	l.seq++
	e := logEntry{seq: l.seq, subject: subject, at: t0.Add(time.Duration(l.seq) * time.Second), data: slices.Clone(data)}
	l.last[subject] = e.seq
	if msgID != "" {
		l.ids[msgID] = e.seq
	}
	l.entries = append(l.entries, e)
	if l.held {
		l.pending = append(l.pending, e)
	} else {
		l.feed <- e
	}
	return e.seq, false, nil
}

// firstAfter is the sequence of the first entry on subject after seq, 0 if none; l.mu held.
func (l *logDouble) firstAfter(subject string, seq uint64) uint64 {
	for _, e := range l.entries {
		if e.subject == subject && e.seq > seq {
			return e.seq
		}
	}
	return 0
}

// Len is the number of entries appended so far.
func (l *logDouble) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

// hold keeps appended entries from the projection until release.
func (l *logDouble) hold() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held = true
}

func (l *logDouble) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.held = false
	for _, e := range l.pending {
		l.feed <- e
	}
	l.pending = nil
}

// Calls is the number of Append calls so far, refused ones included.
func (l *logDouble) Calls() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls
}

// waitCalls blocks until Append has been called at least n times.
func (l *logDouble) waitCalls(ctx context.Context, n int) error {
	for {
		l.mu.Lock()
		ok, ch := l.calls >= n, l.called
		l.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("fewer than %d appends: %w", n, ctx.Err())
		}
	}
}

const ev = "ogp-test-2027"

type harness struct {
	svc   *schedule.Service
	store *projection.Store
	log   *logDouble
}

func newHarness(t *testing.T) *harness {
	store := projection.New(projection.Options{})
	l := newLogDouble(t, store)
	return &harness{svc: schedule.New(l, store), store: store, log: l}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func testEvent() cabildo.Event {
	return cabildo.Event{ID: ev, Name: cabildo.Text{ES: "Encuentro", EN: "Meeting"}, TimeZone: "America/Costa_Rica",
		Days: []cabildo.Day{
			{Date: "2027-04-13", Kind: cabildo.DayUnconference, Start: "08:00", End: "19:00"},
			{Date: "2027-04-14", Kind: cabildo.DayConference, Start: "08:00", End: "19:00"},
		}}
}

// seeded returns a harness with the test event, rooms sala-1..3, a track and two speakers.
func seeded(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t)
	ctx := testCtx(t)
	must(t)(h.svc.PutEvent(ctx, schedule.Request{}, testEvent()))
	for _, r := range []string{"sala-1", "sala-2", "sala-3"} {
		must(t)(h.svc.PutRoom(ctx, schedule.Request{}, ev, cabildo.Room{ID: r, Name: cabildo.Text{ES: r}}))
	}
	must(t)(h.svc.PutTrack(ctx, schedule.Request{}, ev, cabildo.Track{ID: "datos", Name: cabildo.Text{ES: "Datos"}}))
	for _, sp := range []string{"ana", "luis"} {
		must(t)(h.svc.PutSpeaker(ctx, schedule.Request{}, ev, cabildo.Speaker{ID: sp, Name: sp}))
	}
	return h
}

func must(t *testing.T) func(schedule.Result, error) schedule.Result {
	return func(r schedule.Result, err error) schedule.Result {
		t.Helper()
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return r
	}
}

func wantCode(t *testing.T, err error, want cabildo.Code) {
	t.Helper()
	if got := cabildo.ErrorCode(err); got != want {
		t.Fatalf("error = %v (code %q), want code %q", err, got, want)
	}
}

func at(t *testing.T, s string) time.Time {
	t.Helper()
	loc, err := time.LoadLocation("America/Costa_Rica")
	if err != nil {
		t.Fatal(err)
	}
	v, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func newSession(t *testing.T, room, start string) cabildo.Session {
	s := at(t, "2027-04-14 "+start)
	return cabildo.Session{Title: cabildo.Text{ES: "Sesión en " + room}, Kind: cabildo.KindBreakout,
		Language: cabildo.ES, Room: room, Start: s, End: s.Add(time.Hour)}
}

// find returns the session as this node's projection has it.
func (h *harness) find(t *testing.T, ref string) (cabildo.Session, projection.Meta, error) {
	t.Helper()
	var (
		s   cabildo.Session
		m   projection.Meta
		err error
	)
	if !h.store.Read(ev, func(st *projection.EventState) { s, m, err = schedule.FindSession(st, ref); s = s.Clone() }) {
		t.Fatalf("event %s missing", ev)
	}
	return s, m, err
}

func (h *harness) session(t *testing.T, ref string) (cabildo.Session, projection.Meta) {
	t.Helper()
	s, m, err := h.find(t, ref)
	if err != nil {
		t.Fatalf("FindSession(%s): %v", ref, err)
	}
	return s, m
}

func (h *harness) create(t *testing.T, in cabildo.Session) cabildo.Session {
	t.Helper()
	res := must(t)(h.svc.CreateSession(testCtx(t), schedule.Request{}, ev, in, false))
	s, _ := h.session(t, fmt.Sprint(res.Seq))
	return s
}

func TestPutEvent(t *testing.T) {
	h := newHarness(t)
	ctx := testCtx(t)
	first := must(t)(h.svc.PutEvent(ctx, schedule.Request{Actor: "org"}, testEvent()))
	if diff := cmp.Diff(first, schedule.Result{Seq: 1, Subject: ev + ".event", Created: true}); diff != "" {
		t.Errorf("first put (-got +want):\n%s", diff)
	}
	changed := testEvent()
	changed.Name.EN = "  The meeting "
	second := must(t)(h.svc.PutEvent(ctx, schedule.Request{}, changed))
	if diff := cmp.Diff(second, schedule.Result{Seq: 2, Subject: ev + ".event", Created: false}); diff != "" {
		t.Errorf("second put (-got +want):\n%s", diff)
	}
	// Read-your-writes: the answer comes after this node applied it.
	var name string
	h.store.Read(ev, func(st *projection.EventState) { name = st.Programme.Event.Name.EN })
	if name != "The meeting" {
		t.Errorf("projected name = %q, want %q", name, "The meeting")
	}

	bad := testEvent()
	bad.TimeZone = "Mars/Olympus"
	_, err := h.svc.PutEvent(ctx, schedule.Request{}, bad)
	wantCode(t, err, cabildo.CodeValidation)
	if got := h.log.Len(); got != 2 {
		t.Errorf("log length = %d, want 2", got)
	}
}

func TestPutEntities(t *testing.T) {
	room := cabildo.Room{ID: "sala-9", Name: cabildo.Text{ES: "Sala 9"}}
	track := cabildo.Track{ID: "salud", Name: cabildo.Text{ES: "Salud"}}
	speaker := cabildo.Speaker{ID: "eva", Name: "Eva"}
	tests := []struct {
		name    string
		put     func(h *harness, event string) (schedule.Result, error)
		subject string
	}{
		{"room", func(h *harness, event string) (schedule.Result, error) {
			return h.svc.PutRoom(context.Background(), schedule.Request{}, event, room)
		}, ev + ".room.sala-9"},
		{"track", func(h *harness, event string) (schedule.Result, error) {
			return h.svc.PutTrack(context.Background(), schedule.Request{}, event, track)
		}, ev + ".track.salud"},
		{"speaker", func(h *harness, event string) (schedule.Result, error) {
			return h.svc.PutSpeaker(context.Background(), schedule.Request{}, event, speaker)
		}, ev + ".speaker.eva"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := seeded(t)
			n := h.log.Len()
			_, err := tt.put(h, "no-such-event")
			wantCode(t, err, cabildo.CodeNotFound)
			if got := h.log.Len(); got != n {
				t.Fatalf("log grew to %d on a missing event", got)
			}
			created := must(t)(tt.put(h, ev))
			if !created.Created || created.Subject != tt.subject || created.Seq != uint64(n+1) {
				t.Errorf("create = %+v, want Created on %s at %d", created, tt.subject, n+1)
			}
			updated := must(t)(tt.put(h, ev))
			if updated.Created || updated.Seq != uint64(n+2) {
				t.Errorf("update = %+v, want not Created at %d", updated, n+2)
			}
			if got := h.store.SubjectSeq(tt.subject); got != updated.Seq {
				t.Errorf("SubjectSeq = %d, want %d", got, updated.Seq)
			}
		})
	}
}

func TestPutEntityValidation(t *testing.T) {
	h := seeded(t)
	n := h.log.Len()
	ctx := testCtx(t)
	_, err := h.svc.PutRoom(ctx, schedule.Request{}, ev, cabildo.Room{ID: "Sala", Name: cabildo.Text{ES: "x"}})
	wantCode(t, err, cabildo.CodeValidation)
	_, err = h.svc.PutTrack(ctx, schedule.Request{}, ev, cabildo.Track{ID: "datos"})
	wantCode(t, err, cabildo.CodeValidation)
	_, err = h.svc.PutSpeaker(ctx, schedule.Request{}, ev, cabildo.Speaker{ID: "eva", Name: "Eva", Country: "xx"})
	wantCode(t, err, cabildo.CodeValidation)
	if got := h.log.Len(); got != n {
		t.Errorf("log grew from %d to %d on invalid input", n, got)
	}
}

func TestCreateSession(t *testing.T) {
	h := seeded(t)
	ctx := testCtx(t)
	in := newSession(t, "sala-1", "10:00")
	in.Title.ES = "  Datos abiertos  "
	in.ID, in.Status = 777, cabildo.StatusCancelled // the server's to give
	in.Cancellation = &cabildo.Reason{Code: cabildo.ReasonOther}
	res := must(t)(h.svc.CreateSession(ctx, schedule.Request{Actor: "org"}, ev, in, false))
	if !res.Created || !strings.HasPrefix(res.Subject, ev+".session.") {
		t.Errorf("result = %+v", res)
	}
	got, meta := h.session(t, fmt.Sprint(res.Seq))
	guid := strings.TrimPrefix(res.Subject, ev+".session.")
	if !cabildo.ValidGUID(guid) || got.GUID != guid {
		t.Errorf("guid = %q, subject %q", got.GUID, res.Subject)
	}
	want := in
	want.GUID, want.ID, want.Status, want.Cancellation, want.Title.ES = guid, int64(res.Seq), cabildo.StatusScheduled, nil, "Datos abiertos"
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("session (-got +want):\n%s", diff)
	}
	if meta.Version != res.Seq {
		t.Errorf("meta version = %d, want %d", meta.Version, res.Seq)
	}
}

func TestCreateSessionValidation(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(t *testing.T, s *cabildo.Session)
		event  string
		code   cabildo.Code
		fields []string
	}{
		{"unknown room", func(t *testing.T, s *cabildo.Session) { s.Room = "sala-9" }, ev, cabildo.CodeValidation, []string{"room unknown_room"}},
		{"outside days", func(t *testing.T, s *cabildo.Session) {
			s.Start, s.End = s.Start.AddDate(0, 0, 5), s.End.AddDate(0, 0, 5)
		},
			ev, cabildo.CodeValidation, []string{"start outside_event"}},
		{"end before start", func(t *testing.T, s *cabildo.Session) { s.End = s.Start.Add(-time.Minute) }, ev,
			cabildo.CodeValidation, []string{"end before_start"}},
		{"room occupied", func(t *testing.T, s *cabildo.Session) { s.Room = "sala-2" }, ev, cabildo.CodeValidation, []string{"room room_occupied"}},
		{"unknown speaker", func(t *testing.T, s *cabildo.Session) { s.Speakers = []string{"ana", "nadie"} }, ev,
			cabildo.CodeValidation, []string{"speakers[1] unknown_speaker"}},
		{"bad guid", func(t *testing.T, s *cabildo.Session) { s.GUID = "not-a-guid" }, ev, cabildo.CodeValidation, []string{"guid invalid_guid"}},
		{"missing event", func(t *testing.T, s *cabildo.Session) {}, "no-such-event", cabildo.CodeNotFound, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := seeded(t)
			h.create(t, newSession(t, "sala-2", "10:30"))
			n := h.log.Len()
			in := newSession(t, "sala-1", "10:00")
			tt.edit(t, &in)
			_, err := h.svc.CreateSession(testCtx(t), schedule.Request{}, tt.event, in, false)
			wantCode(t, err, tt.code)
			var got []string
			if e := (*cabildo.Error)(nil); errors.As(err, &e) {
				for _, f := range e.Fields {
					got = append(got, f.Field+" "+f.Code)
				}
			}
			if diff := cmp.Diff(got, tt.fields); diff != "" {
				t.Errorf("fields (-got +want):\n%s", diff)
			}
			if got := h.log.Len(); got != n {
				t.Errorf("log grew from %d to %d", n, got)
			}
		})
	}
}

func TestCreateSessionForce(t *testing.T) {
	h := seeded(t)
	h.create(t, newSession(t, "sala-1", "10:00"))
	res := must(t)(h.svc.CreateSession(testCtx(t), schedule.Request{}, ev, newSession(t, "sala-1", "10:30"), true))
	s, _ := h.session(t, fmt.Sprint(res.Seq))
	if s.Room != "sala-1" {
		t.Errorf("room = %q", s.Room)
	}
}

func TestCreateSessionGUID(t *testing.T) {
	h := seeded(t)
	ctx := testCtx(t)
	const upper = "6F1C2B1E-8D5A-4F6B-9C3D-2A1B0C9D8E7F"
	in := newSession(t, "sala-1", "10:00")
	in.GUID = upper
	res := must(t)(h.svc.CreateSession(ctx, schedule.Request{}, ev, in, false))
	if got, want := res.Subject, ev+".session."+strings.ToLower(upper); got != want {
		t.Errorf("subject = %q, want %q", got, want)
	}
	n := h.log.Len()

	again := newSession(t, "sala-3", "15:00") // a different slot: only the guid clashes
	for _, g := range []string{upper, strings.ToLower(upper)} {
		again.GUID = g
		_, err := h.svc.CreateSession(ctx, schedule.Request{}, ev, again, false)
		wantCode(t, err, cabildo.CodeAlreadyExists)
	}
	// Deleted, the guid still may not come back.
	must(t)(h.svc.ChangeSession(ctx, schedule.Request{}, ev, schedule.Change{Ref: upper, Type: cabildo.RecordSessionDeleted}))
	_, err := h.svc.CreateSession(ctx, schedule.Request{}, ev, again, false)
	wantCode(t, err, cabildo.CodeAlreadyExists)
	if got, want := h.log.Len(), n+1; got != want {
		t.Errorf("log length = %d, want %d", got, want)
	}
}

func TestFindSession(t *testing.T) {
	h := seeded(t)
	s := h.create(t, newSession(t, "sala-1", "10:00"))
	tests := []struct {
		ref  string
		want bool
	}{
		{fmt.Sprint(s.ID), true},
		{s.GUID, true},
		{strings.ToUpper(s.GUID), true},
		// One id, one spelling: a leading zero or sign names no session.
		{"0" + fmt.Sprint(s.ID), false},
		{"+" + fmt.Sprint(s.ID), false},
		{" " + fmt.Sprint(s.ID), false},
		{fmt.Sprint(s.ID + 1), false},
		{"0", false},
		{"-1", false},
		{"", false},
		{"00000000-0000-4000-8000-000000000000", false},
		{"sala-1", false},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			got, _, err := h.find(t, tt.ref)
			if !tt.want {
				wantCode(t, err, cabildo.CodeNotFound)
				return
			}
			if err != nil {
				t.Fatalf("FindSession(%q): %v", tt.ref, err)
			}
			if got.GUID != s.GUID || got.ID != s.ID {
				t.Errorf("FindSession(%q) = %d %s, want %d %s", tt.ref, got.ID, got.GUID, s.ID, s.GUID)
			}
		})
	}
}

func TestChangeSessionUpdate(t *testing.T) {
	h := seeded(t)
	ctx := testCtx(t)
	s := h.create(t, newSession(t, "sala-1", "10:00"))
	_, meta := h.session(t, s.GUID)
	v := meta.Version
	reason := &cabildo.Reason{Code: cabildo.ReasonRoomChange, Text: cabildo.Text{ES: " Más espacio "}}
	res := must(t)(h.svc.ChangeSession(ctx, schedule.Request{}, ev, schedule.Change{
		Ref: fmt.Sprint(s.ID), IfMatch: &v, Reason: reason, Type: cabildo.RecordSessionUpdated,
		Patch: func(x *cabildo.Session) {
			x.Room = "sala-2"
			x.ID, x.GUID, x.Status = 1, "00000000-0000-4000-8000-000000000000", cabildo.StatusCancelled // ignored
		}}))
	if res.Created || res.Seq != v+1 || res.Subject != ev+".session."+s.GUID {
		t.Errorf("result = %+v", res)
	}
	got, meta := h.session(t, s.GUID)
	if got.Room != "sala-2" || got.ID != s.ID || got.Status != cabildo.StatusScheduled || meta.Version != res.Seq {
		t.Errorf("session after move: room %s id %d status %s version %d", got.Room, got.ID, got.Status, meta.Version)
	}
	var changes []cabildo.Change
	h.store.Read(ev, func(st *projection.EventState) {
		cs, err := st.ChangesSince(v)
		if err != nil {
			t.Error(err)
		}
		changes = slices.Clone(cs)
	})
	want := []cabildo.Change{{Version: res.Seq, At: t0.Add(time.Duration(res.Seq) * time.Second), Type: cabildo.ChangeSessionMoved,
		Session: &cabildo.SessionRef{ID: s.ID, GUID: s.GUID}, Room: &cabildo.RoomMove{From: "sala-1", To: "sala-2"},
		Reason: &cabildo.Reason{Code: cabildo.ReasonRoomChange, Text: cabildo.Text{ES: "Más espacio"}}}}
	if diff := cmp.Diff(changes, want); diff != "" {
		t.Errorf("changes (-got +want):\n%s", diff)
	}
}

func TestChangeSessionErrors(t *testing.T) {
	stale := uint64(1)
	tests := []struct {
		name  string
		event string
		c     func(s cabildo.Session) schedule.Change
		code  cabildo.Code
	}{
		{"stale if-match", ev, func(s cabildo.Session) schedule.Change {
			return schedule.Change{Ref: s.GUID, IfMatch: &stale, Type: cabildo.RecordSessionUpdated,
				Patch: func(x *cabildo.Session) { x.Room = "sala-2" }}
		}, cabildo.CodeVersionConflict},
		{"stale if-match on cancel", ev, func(s cabildo.Session) schedule.Change {
			return schedule.Change{Ref: s.GUID, IfMatch: &stale, Type: cabildo.RecordSessionCancelled}
		}, cabildo.CodeVersionConflict},
		{"missing session", ev, func(s cabildo.Session) schedule.Change {
			return schedule.Change{Ref: "424242", Type: cabildo.RecordSessionCancelled}
		}, cabildo.CodeNotFound},
		{"missing event", "no-such-event", func(s cabildo.Session) schedule.Change {
			return schedule.Change{Ref: s.GUID, Type: cabildo.RecordSessionCancelled}
		}, cabildo.CodeNotFound},
		{"bad reason", ev, func(s cabildo.Session) schedule.Change {
			return schedule.Change{Ref: s.GUID, Type: cabildo.RecordSessionCancelled, Reason: &cabildo.Reason{Code: "bored"}}
		}, cabildo.CodeValidation},
		{"invalid patch", ev, func(s cabildo.Session) schedule.Change {
			return schedule.Change{Ref: s.GUID, Type: cabildo.RecordSessionUpdated, Patch: func(x *cabildo.Session) { x.Room = "sala-9" }}
		}, cabildo.CodeValidation},
		{"move into an occupied room", ev, func(s cabildo.Session) schedule.Change {
			return schedule.Change{Ref: s.GUID, Type: cabildo.RecordSessionUpdated, Patch: func(x *cabildo.Session) { x.Room = "sala-3" }}
		}, cabildo.CodeValidation},
		{"unknown change type", ev, func(s cabildo.Session) schedule.Change {
			return schedule.Change{Ref: s.GUID, Type: cabildo.RecordRoomPut}
		}, cabildo.CodeInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := seeded(t)
			h.create(t, newSession(t, "sala-3", "10:00"))
			s := h.create(t, newSession(t, "sala-1", "10:00"))
			n := h.log.Len()
			_, err := h.svc.ChangeSession(testCtx(t), schedule.Request{}, tt.event, tt.c(s))
			wantCode(t, err, tt.code)
			if got := h.log.Len(); got != n {
				t.Errorf("log grew from %d to %d", n, got)
			}
		})
	}
}

func TestChangeSessionConcurrentIfMatch(t *testing.T) {
	h := seeded(t)
	ctx := testCtx(t)
	s := h.create(t, newSession(t, "sala-1", "10:00"))
	_, meta := h.session(t, s.GUID)
	v := meta.Version
	const n = 50
	start := make(chan struct{})
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			_, errs[i] = h.svc.ChangeSession(ctx, schedule.Request{}, ev, schedule.Change{
				Ref: s.GUID, IfMatch: &v, Type: cabildo.RecordSessionUpdated, Force: true,
				Patch: func(x *cabildo.Session) {
					x.Room = []string{"sala-2", "sala-3"}[i%2]
					x.Title.EN = fmt.Sprint("move ", i)
				}})
		})
	}
	close(start)
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case cabildo.ErrorCode(err) != cabildo.CodeVersionConflict:
			t.Errorf("move %d: %v, want success or %s", i, err, cabildo.CodeVersionConflict)
		}
	}
	if ok != 1 {
		t.Errorf("%d moves succeeded, want exactly 1", ok)
	}
	if got, want := h.log.Len(), int(v)+1; got != want {
		t.Errorf("log length = %d, want %d", got, want)
	}
}

func TestIdempotency(t *testing.T) {
	h := seeded(t)
	ctx := testCtx(t)
	req := schedule.Request{Actor: "org", IdempotencyKey: "k-1", Hash: "h-1"}
	first := must(t)(h.svc.CreateSession(ctx, req, ev, newSession(t, "sala-1", "10:00"), false))
	n := h.log.Len()

	again := must(t)(h.svc.CreateSession(ctx, req, ev, newSession(t, "sala-1", "10:00"), false))
	if diff := cmp.Diff(again, schedule.Result{Seq: first.Seq, Subject: first.Subject, Replayed: true}); diff != "" {
		t.Errorf("replay (-got +want):\n%s", diff)
	}
	if got := h.log.Len(); got != n {
		t.Errorf("log grew from %d to %d on a replay", n, got)
	}

	other := req
	other.Hash = "h-2"
	_, err := h.svc.CreateSession(ctx, other, ev, newSession(t, "sala-2", "10:00"), false)
	wantCode(t, err, cabildo.CodeIdempotencyKeyReused)

	// The key stays taken whatever the request: a change reusing it is refused.
	_, err = h.svc.ChangeSession(ctx, other, ev, schedule.Change{Ref: fmt.Sprint(first.Seq), Type: cabildo.RecordSessionCancelled})
	wantCode(t, err, cabildo.CodeIdempotencyKeyReused)
	if got := h.log.Len(); got != n {
		t.Errorf("log grew from %d to %d", n, got)
	}

	// Keys are per event.
	otro := testEvent()
	otro.ID = "otro-2027"
	res := must(t)(h.svc.PutEvent(ctx, schedule.Request{IdempotencyKey: "k-1", Hash: "event"}, otro))
	if !res.Created || res.Replayed {
		t.Errorf("same key in another event = %+v, want a new write", res)
	}
}

// A replay is answered from the projection even when the log's own de-duplication window
// has long passed (here: the double forgot the message id).
func TestIdempotencyOutlivesLogDedupe(t *testing.T) {
	h := seeded(t)
	ctx := testCtx(t)
	req := schedule.Request{IdempotencyKey: "k-1", Hash: "h-1"}
	first := must(t)(h.svc.PutRoom(ctx, req, ev, cabildo.Room{ID: "sala-9", Name: cabildo.Text{ES: "Sala 9"}}))
	h.log.mu.Lock()
	clear(h.log.ids)
	h.log.mu.Unlock()
	n := h.log.Len()
	again := must(t)(h.svc.PutRoom(ctx, req, ev, cabildo.Room{ID: "sala-9", Name: cabildo.Text{ES: "Sala 9"}}))
	if !again.Replayed || again.Seq != first.Seq || h.log.Len() != n {
		t.Errorf("replay = %+v with log at %d, want Replayed seq %d with log at %d", again, h.log.Len(), first.Seq, n)
	}
}

// Two requests with one key and different bodies racing each other: the log keeps the
// first, and the second learns its key was used for something else.
func TestIdempotencyKeyReusedWhileInFlight(t *testing.T) {
	h := seeded(t)
	ctx := testCtx(t)
	n := h.log.Len()
	h.log.hold()
	calls := h.log.Calls()
	errc := make(chan error, 1)
	go func() {
		_, err := h.svc.PutRoom(ctx, schedule.Request{IdempotencyKey: "k", Hash: "a"}, ev, cabildo.Room{ID: "sala-8", Name: cabildo.Text{ES: "8"}})
		errc <- err
	}()
	if err := h.log.waitCalls(ctx, calls+1); err != nil {
		t.Fatal(err)
	}
	// Not applied yet, so the projection does not know the key; a different subject, so
	// the expectation holds and the log reports the message id as a duplicate.
	second := make(chan error, 1)
	go func() {
		_, err := h.svc.PutRoom(ctx, schedule.Request{IdempotencyKey: "k", Hash: "b"}, ev, cabildo.Room{ID: "sala-9", Name: cabildo.Text{ES: "9"}})
		second <- err
	}()
	if err := h.log.waitCalls(ctx, calls+2); err != nil {
		t.Fatal(err)
	}
	h.log.release()
	if err := <-errc; err != nil {
		t.Fatalf("first: %v", err)
	}
	wantCode(t, <-second, cabildo.CodeIdempotencyKeyReused)
	if got := h.log.Len(); got != n+1 {
		t.Errorf("log length = %d, want %d", got, n+1)
	}
}

// A client retries (same key, same body) while its first request is stored but not yet
// applied on the node that gets the retry. The retry must be answered as a replay.
func TestIdempotentRetryRacingItsOriginal(t *testing.T) {
	h := seeded(t)
	ctx := testCtx(t)
	s := h.create(t, newSession(t, "sala-1", "10:00"))
	n := h.log.Len()
	req := schedule.Request{IdempotencyKey: "cancel-1", Hash: "h"}
	change := schedule.Change{Ref: s.GUID, Type: cabildo.RecordSessionCancelled, Reason: &cabildo.Reason{Code: cabildo.ReasonWeather}}
	h.log.hold()
	calls := h.log.Calls()
	type out struct {
		res schedule.Result
		err error
	}
	first, retry := make(chan out, 1), make(chan out, 1)
	go func() {
		r, err := h.svc.ChangeSession(ctx, req, ev, change)
		first <- out{r, err}
	}()
	if err := h.log.waitCalls(ctx, calls+1); err != nil {
		t.Fatal(err)
	}
	go func() {
		r, err := h.svc.ChangeSession(ctx, req, ev, change)
		retry <- out{r, err}
	}()
	// Deliver only once the retry has reached the log; a fixed retry may wait for this.
	if err := h.log.waitCalls(ctx, calls+2); err != nil {
		t.Fatal(err)
	}
	h.log.release()
	f, r := <-first, <-retry
	if f.err != nil {
		t.Fatalf("first: %v", f.err)
	}
	if r.err != nil {
		t.Fatalf("retry: %v", r.err)
	}
	if !r.res.Replayed || r.res.Seq != f.res.Seq {
		t.Errorf("retry = %+v, want a replay of seq %d", r.res, f.res.Seq)
	}
	if got := h.log.Len(); got != n+1 {
		t.Errorf("log length = %d, want %d", got, n+1)
	}
}

func TestCancelReinstateNoops(t *testing.T) {
	h := seeded(t)
	ctx := testCtx(t)
	s := h.create(t, newSession(t, "sala-1", "10:00"))
	reason := &cabildo.Reason{Code: cabildo.ReasonSpeakerUnavailable}
	cancel := schedule.Change{Ref: s.GUID, Type: cabildo.RecordSessionCancelled, Reason: reason}
	first := must(t)(h.svc.ChangeSession(ctx, schedule.Request{}, ev, cancel))
	got, _ := h.session(t, s.GUID)
	if got.Status != cabildo.StatusCancelled || got.Cancellation == nil || got.Cancellation.Code != reason.Code {
		t.Fatalf("after cancel: status %s cancellation %v", got.Status, got.Cancellation)
	}
	n := h.log.Len()
	again := must(t)(h.svc.ChangeSession(ctx, schedule.Request{}, ev, cancel))
	if again.Seq != first.Seq || again.Replayed || h.log.Len() != n {
		t.Errorf("second cancel = %+v, log %d; want seq %d and nothing appended", again, h.log.Len(), first.Seq)
	}
	// Nothing changed in an update either: nothing appended.
	same := must(t)(h.svc.ChangeSession(ctx, schedule.Request{}, ev, schedule.Change{Ref: s.GUID, Type: cabildo.RecordSessionUpdated,
		Patch: func(x *cabildo.Session) { x.Title.ES = " " + x.Title.ES + " " }}))
	if same.Seq != first.Seq || h.log.Len() != n {
		t.Errorf("no-op update = %+v, log %d; want seq %d and nothing appended", same, h.log.Len(), first.Seq)
	}
	must(t)(h.svc.ChangeSession(ctx, schedule.Request{}, ev, schedule.Change{Ref: s.GUID, Type: cabildo.RecordSessionReinstated}))
	n = h.log.Len()
	must(t)(h.svc.ChangeSession(ctx, schedule.Request{}, ev, schedule.Change{Ref: s.GUID, Type: cabildo.RecordSessionReinstated}))
	if got := h.log.Len(); got != n {
		t.Errorf("reinstating a scheduled session appended (log %d, want %d)", got, n)
	}
	got, _ = h.session(t, s.GUID)
	if got.Status != cabildo.StatusScheduled || got.Cancellation != nil {
		t.Errorf("after reinstate: status %s cancellation %v", got.Status, got.Cancellation)
	}
}

func TestReinstateChecksRoom(t *testing.T) {
	h := seeded(t)
	ctx := testCtx(t)
	a := h.create(t, newSession(t, "sala-1", "10:00"))
	must(t)(h.svc.ChangeSession(ctx, schedule.Request{}, ev, schedule.Change{Ref: a.GUID, Type: cabildo.RecordSessionCancelled}))
	// The freed room is taken: a cancelled session does not block it.
	b := h.create(t, newSession(t, "sala-1", "10:30"))
	n := h.log.Len()
	_, err := h.svc.ChangeSession(ctx, schedule.Request{}, ev, schedule.Change{Ref: a.GUID, Type: cabildo.RecordSessionReinstated})
	var e *cabildo.Error
	if !errors.As(err, &e) || e.Code != cabildo.CodeValidation || len(e.Fields) != 1 ||
		e.Fields[0].Field != "room" || e.Fields[0].Code != "room_occupied" {
		t.Fatalf("reinstate into a taken room = %v, want room room_occupied", err)
	}
	if !strings.Contains(e.Fields[0].Message, fmt.Sprint(b.ID)) {
		t.Errorf("message %q does not name session %d", e.Fields[0].Message, b.ID)
	}
	if h.log.Len() != n {
		t.Errorf("log grew on a refused reinstate")
	}
	must(t)(h.svc.ChangeSession(ctx, schedule.Request{}, ev, schedule.Change{Ref: a.GUID, Type: cabildo.RecordSessionReinstated, Force: true}))
	got, _ := h.session(t, a.GUID)
	if got.Status != cabildo.StatusScheduled {
		t.Errorf("status = %s after a forced reinstate", got.Status)
	}
}

func TestDeleteNeverReusesIDs(t *testing.T) {
	h := seeded(t)
	ctx := testCtx(t)
	a := h.create(t, newSession(t, "sala-1", "10:00"))
	must(t)(h.svc.ChangeSession(ctx, schedule.Request{}, ev, schedule.Change{Ref: fmt.Sprint(a.ID), Type: cabildo.RecordSessionDeleted}))
	for _, ref := range []string{fmt.Sprint(a.ID), a.GUID} {
		_, _, err := h.find(t, ref)
		wantCode(t, err, cabildo.CodeNotFound)
	}
	// A second delete, or any change, finds nothing.
	_, err := h.svc.ChangeSession(ctx, schedule.Request{}, ev, schedule.Change{Ref: a.GUID, Type: cabildo.RecordSessionDeleted})
	wantCode(t, err, cabildo.CodeNotFound)

	seen := map[int64]bool{a.ID: true}
	for i := range 5 {
		s := h.create(t, newSession(t, "sala-1", fmt.Sprintf("%02d:00", 10+i)))
		if seen[s.ID] {
			t.Fatalf("id %d given twice", s.ID)
		}
		seen[s.ID] = true
		if s.ID <= a.ID {
			t.Errorf("id %d not after the deleted %d", s.ID, a.ID)
		}
	}
	_, _, err = h.find(t, fmt.Sprint(a.ID))
	wantCode(t, err, cabildo.CodeNotFound)
}

func TestCatchUpTimeout(t *testing.T) {
	h := seeded(t)
	h.svc.CatchUp = 20 * time.Millisecond
	h.log.hold()
	n := h.log.Len()
	_, err := h.svc.PutRoom(testCtx(t), schedule.Request{}, ev, cabildo.Room{ID: "sala-9", Name: cabildo.Text{ES: "9"}})
	wantCode(t, err, cabildo.CodeTimeout)
	if got := h.log.Len(); got != n+1 {
		t.Errorf("log length = %d, want %d: the write is stored even if the node is behind", got, n+1)
	}
}

// Many creates at once while the node's consumer applies entries. CreateSession's check
// runs inside projection.Store.Read and calls Store.SubjectSeq, which read-locks the
// same RWMutex again; with a writer (Apply) queued in between, both wait forever.
func TestConcurrentCreates(t *testing.T) {
	h := seeded(t)
	ctx := testCtx(t)
	const workers, each = 8, 40
	done := make(chan struct{})
	errs := make(chan error, workers*each)
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					in := newSession(t, []string{"sala-1", "sala-2", "sala-3"}[w%3], fmt.Sprintf("%02d:%02d", 8+i%10, w))
					if _, err := h.svc.CreateSession(ctx, schedule.Request{}, ev, in, true); err != nil {
						errs <- err
					}
				}
			})
		}
		wg.Wait()
	}()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("creates did not finish: deadlock")
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var n int
	h.store.Read(ev, func(st *projection.EventState) { n = len(st.Programme.Sessions) })
	if n != workers*each {
		t.Errorf("%d sessions, want %d", n, workers*each)
	}
}

// A log entry this node cannot apply (say, a record type from a newer version) still
// counts on its subject; the next write there must expect it, not conflict forever.
func TestWriteAfterSkippedEntry(t *testing.T) {
	h := seeded(t)
	ctx := testCtx(t)
	s := h.create(t, newSession(t, "sala-1", "09:00"))
	subject := cabildo.SessionSubject(ev, s.GUID)
	seq, _, err := h.log.Append(ctx, subject, []byte(`{"type":"session.renamed_in_the_future","event":"`+ev+`"}`), nil, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.store.WaitFor(ctx, seq); err != nil {
		t.Fatal(err)
	}
	must(t)(h.svc.ChangeSession(ctx, schedule.Request{}, ev, schedule.Change{Ref: fmt.Sprint(s.ID),
		Type: cabildo.RecordSessionUpdated, Patch: func(x *cabildo.Session) { x.Room = "sala-2" }}))
	if got, _ := h.session(t, fmt.Sprint(s.ID)); got.Room != "sala-2" {
		t.Fatalf("room %q after the move, want sala-2", got.Room)
	}
}

// Shrinking the event's days can leave sessions outside its hours; they can still be
// cancelled and deleted (both only take something off the programme).
func TestCancelSessionOutsideChangedDays(t *testing.T) {
	h := seeded(t)
	ctx := testCtx(t)
	s := h.create(t, newSession(t, "sala-1", "09:00"))
	shorter := testEvent()
	shorter.Days = shorter.Days[:1] // the session's day is gone
	must(t)(h.svc.PutEvent(ctx, schedule.Request{}, shorter))
	reason := &cabildo.Reason{Code: cabildo.ReasonOrganizer}
	must(t)(h.svc.ChangeSession(ctx, schedule.Request{}, ev, schedule.Change{Ref: fmt.Sprint(s.ID),
		Type: cabildo.RecordSessionCancelled, Reason: reason}))
	if got, _ := h.session(t, fmt.Sprint(s.ID)); got.Status != cabildo.StatusCancelled {
		t.Fatalf("status %q, want cancelled", got.Status)
	}
	_, err := h.svc.ChangeSession(ctx, schedule.Request{}, ev, schedule.Change{Ref: fmt.Sprint(s.ID),
		Type: cabildo.RecordSessionReinstated})
	wantCode(t, err, cabildo.CodeValidation)
	must(t)(h.svc.ChangeSession(ctx, schedule.Request{}, ev, schedule.Change{Ref: fmt.Sprint(s.ID),
		Type: cabildo.RecordSessionDeleted}))
}
