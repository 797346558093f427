package projection_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/projection"
)

// townHallLog is an event with one session and a town hall: asked, moderated, voted.
func townHallLog(t *testing.T) (*log, int64, int64, int64) {
	l := &log{t: t}
	l.add(eventPut(ev))
	l.add(roomPut(ev, "plenary"))
	sid := int64(l.add(sessionRec(cabildo.RecordSessionCreated, session(t, 1, "plenary", 10))))
	open, moderated := true, true
	l.add(cabildo.Record{Type: cabildo.RecordQAConfigured, Event: ev, QASettings: &cabildo.QASettings{Session: sid, Open: &open, Moderated: &moderated}})
	// Both questions in one entry, as a node's committer stores a burst: they are the
	// event's questions 1 and 2.
	l.add(cabildo.Record{Type: cabildo.RecordQuestionsAsked, Event: ev, Asked: []cabildo.Asked{
		asked(sid, "¿Primera pregunta de prueba?", ""), asked(sid, "¿Segunda pregunta de prueba?", "")}})
	a, b := int64(1), int64(2)
	for _, q := range []int64{a, b} {
		l.add(cabildo.Record{Type: cabildo.RecordQuestionModerated, Event: ev, Actor: "moderator:m",
			Moderation: &cabildo.Moderation{Session: sid, Action: cabildo.ActionApprove, Question: q}})
	}
	l.add(cabildo.Record{Type: cabildo.RecordVotesCast, Event: ev, Votes: []cabildo.VoteOp{
		{Session: sid, Question: a, Attendee: "v1", Up: true}, {Session: sid, Question: a, Attendee: "v2", Up: true},
		{Session: sid, Question: b, Attendee: "v2", Up: true}, {Session: sid, Question: a, Attendee: "v1", Up: true},
		{Session: sid + 1000, Question: a, Attendee: "v9", Up: true}, // no such session: skipped, the rest counts
	}})
	l.add(cabildo.Record{Type: cabildo.RecordQuestionModerated, Event: ev, Actor: "moderator:m",
		Moderation: &cabildo.Moderation{Session: sid, Action: cabildo.ActionMerge, Question: b, Into: a}})
	return l, sid, a, b
}

func asked(session int64, text, key string) cabildo.Asked {
	return cabildo.Asked{Question: cabildo.Question{Session: session, Text: text, Lang: cabildo.ES, Attendee: "a1"},
		IdempotencyKey: key, RequestHash: "h-" + text}
}

// Questions are numbered per event in log order, whatever entry holds them. An item
// whose key the projection has applied before (a retry that raced with its original, in
// the same entry or another node's) and an item for a session that does not exist are
// skipped, and the rest of their entry counts.
func TestApplyQuestionsAsked(t *testing.T) {
	l, sid, _, _ := townHallLog(t)
	first := l.add(cabildo.Record{Type: cabildo.RecordQuestionsAsked, Event: ev, Asked: []cabildo.Asked{
		asked(sid, "¿Tercera?", "a1/k1"),
		asked(sid+1000, "¿En qué sesión?", "a1/k2"), // no such session
		asked(sid, "¿Tercera?", "a1/k1"),            // the same request again, in the same entry
		asked(sid, "¿Cuarta?", ""),
	}})
	like := func(a cabildo.Asked, place int) cabildo.Asked { a.SimilarTo, a.Similarity = place, 0.8; return a }
	second := l.add(cabildo.Record{Type: cabildo.RecordQuestionsAsked, Event: ev, Asked: []cabildo.Asked{
		asked(sid, "¿Tercera?", "a1/k1"),         // its retry, stored by another node
		like(asked(sid, "¿Quinta?", "a1/k3"), 1), // like a question skipped: no flag
		like(asked(sid, "¿Quinta bis?", ""), 2),  // like the one before it: flagged with its id
	}})
	s := projection.New(projection.Options{})
	applyAll(s, l.entries)
	type got struct {
		id     int64
		stored uint64
		item   int
		text   string
	}
	var gotQs []got
	var last int64
	read(t, s, ev, func(st *projection.EventState) int {
		qa := st.QAOf(sid)
		for _, id := range qa.Order {
			q := qa.Questions[id]
			gotQs = append(gotQs, got{q.ID, q.Stored, q.Item, q.Text})
		}
		last = st.LastQuestion
		return 0
	})
	want := []got{{3, first, 0, "¿Tercera?"}, {4, first, 3, "¿Cuarta?"}, {5, second, 1, "¿Quinta?"}, {6, second, 2, "¿Quinta bis?"}}
	if len(gotQs) != 6 || !slices.Equal(gotQs[2:], want) || last != 6 {
		t.Fatalf("questions %+v (last %d), want 1, 2 then %+v (last 6)", gotQs, last, want)
	}
	read(t, s, ev, func(st *projection.EventState) int {
		qa := st.QAOf(sid)
		if f := qa.Questions[5].Flags; len(f) != 0 {
			t.Errorf("question 5 is like a skipped item, yet flagged %+v", f)
		}
		if f := qa.Questions[6].Flags; len(f) != 1 || f[0].Kind != cabildo.FlagNearDuplicate || f[0].Similar != 5 || f[0].Similarity != 0.8 {
			t.Errorf("question 6 flags %+v, want near_duplicate of 5", f)
		}
		return 0
	})
	for key, ref := range map[string]int64{"a1/k1": 3, "a1/k3": 5} {
		if r, ok := s.Idempotent(ev, key); !ok || r.Ref != ref || r.RequestHash == "" {
			t.Errorf("key %s remembered as %+v, %v; want question %d", key, r, ok, ref)
		}
	}
	if r, ok := s.Idempotent(ev, "a1/k2"); ok {
		t.Errorf("the skipped question's key is remembered: %+v", r)
	}
	read(t, s, ev, func(st *projection.EventState) int {
		qa := st.QAOf(sid)
		for _, c := range []struct {
			seq  uint64
			item int
			id   int64
		}{{first, 0, 3}, {first, 3, 4}, {second, 1, 5}, {first, 2, 0}, {second, 0, 0}, {first, 1, 0}} {
			q, ok := qa.StoredAt(c.seq, c.item)
			if (c.id == 0) == ok || (ok && q.ID != c.id) {
				t.Errorf("StoredAt(%d, %d) = %v, %v; want question %d", c.seq, c.item, q, ok, c.id)
			}
		}
		return 0
	})
}

func TestApplyTownHall(t *testing.T) {
	l, sid, a, b := townHallLog(t)
	s := projection.New(projection.Options{})
	applyAll(s, l.entries)
	qa := read(t, s, ev, func(st *projection.EventState) cabildo.QA { return *st.QAOf(sid) })
	if qa.Questions[a].Votes != 2 || qa.Questions[b].State != cabildo.QuestionMerged || len(qa.Actions) != 3 {
		t.Fatalf("votes %d (want 2: v1 once, v2 through the merge), b %s, %d actions", qa.Questions[a].Votes,
			qa.Questions[b].State, len(qa.Actions))
	}
	if qa.Actions[0].Moderator != "moderator:m" || qa.Version != uint64(len(l.entries)) {
		t.Fatalf("moderator %q, version %d", qa.Actions[0].Moderator, qa.Version)
	}
	// The schedule's version and change history do not move for the town hall.
	sv := read(t, s, ev, func(st *projection.EventState) uint64 { return st.Version })
	if sv != uint64(sid) {
		t.Fatalf("schedule version %d, want %d (the session's creation)", sv, sid)
	}
}

// A moderation that does not apply (another moderator got there first on another node,
// in a log written by a buggy node) is skipped without stopping the projection.
func TestApplyTownHallSkipsImpossible(t *testing.T) {
	l, sid, a, _ := townHallLog(t)
	l.add(cabildo.Record{Type: cabildo.RecordQuestionModerated, Event: ev, Actor: "moderator:m",
		Moderation: &cabildo.Moderation{Session: sid, Action: cabildo.ActionReject, Question: a}}) // approved: cannot be rejected
	last := l.add(cabildo.Record{Type: cabildo.RecordQuestionModerated, Event: ev, Actor: "moderator:m",
		Moderation: &cabildo.Moderation{Session: sid, Action: cabildo.ActionPin, Question: a}})
	s := projection.New(projection.Options{})
	applyAll(s, l.entries)
	qa := read(t, s, ev, func(st *projection.EventState) cabildo.QA { return *st.QAOf(sid) })
	if qa.Questions[a].State != cabildo.QuestionPinned || s.Seq() != last {
		t.Fatalf("state %s at seq %d, want pinned at %d", qa.Questions[a].State, s.Seq(), last)
	}
}

func TestSnapshotRestoreTownHall(t *testing.T) {
	l, sid, a, _ := townHallLog(t)
	src := projection.New(projection.Options{})
	applyAll(src, l.entries)
	_, data, err := src.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	dst := projection.New(projection.Options{})
	if _, err := dst.Restore(data); err != nil {
		t.Fatal(err)
	}
	// A vote after the restore still knows who voted before it.
	vote := encode(t, uint64(len(l.entries)+1), cabildo.Record{Type: cabildo.RecordVotesCast, Event: ev,
		Votes: []cabildo.VoteOp{{Session: sid, Question: a, Attendee: "v1", Up: true}, {Session: sid, Question: a, Attendee: "v3", Up: true}}})
	vote.applyTo(src)
	vote.applyTo(dst)
	want := read(t, src, ev, func(st *projection.EventState) []byte { b, _ := json.Marshal(st.QAOf(sid)); return b })
	got := read(t, dst, ev, func(st *projection.EventState) []byte { b, _ := json.Marshal(st.QAOf(sid)); return b })
	if string(got) != string(want) {
		t.Fatalf("restored town hall differs:\n got %s\nwant %s", got, want)
	}
	if n := read(t, dst, ev, func(st *projection.EventState) int { return st.QAOf(sid).Questions[a].Votes }); n != 3 {
		t.Fatalf("votes after restore and one more voter: %d, want 3", n)
	}
	// Question ids go on counting after a restore.
	next := encode(t, uint64(len(l.entries)+2), cabildo.Record{Type: cabildo.RecordQuestionsAsked, Event: ev,
		Asked: []cabildo.Asked{asked(sid, "¿Después de restaurar?", "")}})
	next.applyTo(src)
	next.applyTo(dst)
	for name, s := range map[string]*projection.Store{"source": src, "restored": dst} {
		if id := read(t, s, ev, func(st *projection.EventState) int64 { return st.LastQuestion }); id != 3 {
			t.Errorf("%s: the question asked after the restore is %d, want 3", name, id)
		}
	}
}

// Snapshots taken while entries are being applied each hold exactly the state at their
// sequence: a snapshot copies what entries change in place and encodes after letting go
// of the store, so this also runs under the race detector against votes, merges, undos,
// edits and programme writes landing meanwhile.
func TestSnapshotWhileApplying(t *testing.T) {
	l, sid, _, _ := townHallLog(t)
	rng := rand.New(rand.NewPCG(7, 8))
	questions := int64(2)
	var last uint64 // the last moderation entry, for undo
	for range 600 {
		switch k := rng.IntN(10); {
		case k < 2:
			questions++
			l.add(cabildo.Record{Type: cabildo.RecordQuestionsAsked, Event: ev, Asked: []cabildo.Asked{
				asked(sid, fmt.Sprintf("¿Pregunta número %d sobre datos abiertos?", questions), "")}})
		case k < 6:
			var votes []cabildo.VoteOp
			for range 1 + rng.IntN(8) {
				votes = append(votes, cabildo.VoteOp{Session: sid, Question: 1 + rng.Int64N(questions),
					Attendee: fmt.Sprintf("v%d", rng.IntN(40)), Up: rng.IntN(5) != 0})
			}
			l.add(cabildo.Record{Type: cabildo.RecordVotesCast, Event: ev, Votes: votes})
		case k < 9:
			m := cabildo.Moderation{Session: sid, Question: 1 + rng.Int64N(questions)}
			switch rng.IntN(5) {
			case 0:
				m.Action, m.Into = cabildo.ActionMerge, 1+rng.Int64N(questions)
			case 1:
				m.Action, m.UndoOf = cabildo.ActionUndo, last
			case 2:
				m.Action, m.Text = cabildo.ActionEdit, fmt.Sprintf("¿Texto corregido %d?", rng.IntN(100))
			default:
				m.Action = cabildo.ActionApprove
			}
			last = l.add(cabildo.Record{Type: cabildo.RecordQuestionModerated, Event: ev, Actor: "moderator:m", Moderation: &m})
		default:
			r := roomPut(ev, fmt.Sprintf("sala-%d", rng.IntN(4)))
			r.IdempotencyKey, r.RequestHash = fmt.Sprintf("k-%d", rng.IntN(50)), "h"
			l.add(r)
		}
	}
	live := projection.New(projection.Options{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, e := range l.entries {
			e.applyTo(live)
			if rng := e.seq % 7; rng == 0 {
				runtime.Gosched()
			}
		}
	}()
	type taken struct {
		seq  uint64
		data []byte
	}
	var snaps []taken
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		seq, data, err := live.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, taken{seq, data})
	}
	ref := projection.New(projection.Options{})
	next, checked := 0, 0
	for _, sn := range snaps {
		if sn.seq == 0 || (checked > 0 && sn.seq == ref.Seq()) {
			continue
		}
		for next < len(l.entries) && l.entries[next].seq <= sn.seq {
			l.entries[next].applyTo(ref)
			next++
		}
		got := projection.New(projection.Options{})
		if _, err := got.Restore(sn.data); err != nil {
			t.Fatalf("snapshot at %d: %v", sn.seq, err)
		}
		compareStores(t, got, ref)
		if t.Failed() {
			t.Fatalf("the snapshot taken at %d differs from the state at %d", sn.seq, sn.seq)
		}
		checked++
	}
	if checked < 3 {
		t.Fatalf("only %d distinct snapshots were taken while %d entries were applied", checked, len(l.entries))
	}
	t.Logf("%d snapshots checked against the state at their sequence", checked)
}
