package projection_test

import (
	"encoding/json"
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
	ask := func(text string) int64 {
		return int64(l.add(cabildo.Record{Type: cabildo.RecordQuestionAsked, Event: ev,
			Question: &cabildo.Question{Session: sid, Text: text, Lang: cabildo.ES, Attendee: "a1"}}))
	}
	a, b := ask("¿Primera pregunta de prueba?"), ask("¿Segunda pregunta de prueba?")
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
}
