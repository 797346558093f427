package cabildo_test

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/cabildo/cabildo/internal/cabildo"
)

var t0 = time.Date(2027, 4, 14, 16, 0, 0, 0, time.UTC)

// townHall is a session's Q&A with a helper that stores records at increasing sequences.
type townHall struct {
	t   *testing.T
	qa  *cabildo.QA
	seq uint64
}

func newTownHall(t *testing.T, moderated bool) *townHall {
	qa := cabildo.NewQA(7)
	open := true
	qa.Configure(cabildo.QASettings{Session: 7, Open: &open, Moderated: &moderated}, 1)
	return &townHall{t: t, qa: qa, seq: 1}
}

func (h *townHall) next() (uint64, time.Time) {
	h.seq++
	return h.seq, t0.Add(time.Duration(h.seq) * time.Second)
}

func (h *townHall) ask(text string, flags ...cabildo.Flag) int64 {
	seq, at := h.next()
	return h.qa.Ask(cabildo.Question{Text: text, Lang: cabildo.ES, Attendee: "asker", Flags: flags}, int64(seq), seq, 0, at).ID
}

func (h *townHall) do(mod string, m cabildo.Moderation) error {
	h.t.Helper()
	m.Session = 7
	if err := h.qa.Check(m, mod); err != nil {
		return err
	}
	seq, at := h.next()
	_, err := h.qa.Moderate(m, mod, seq, at)
	if err != nil {
		h.t.Fatalf("Check passed but Moderate failed: %v", err)
	}
	return err
}

func (h *townHall) must(mod string, m cabildo.Moderation) {
	h.t.Helper()
	if err := h.do(mod, m); err != nil {
		h.t.Fatalf("%s %d: %v", m.Action, m.Question, err)
	}
}

func (h *townHall) vote(q int64, who string, up bool) bool {
	seq, _ := h.next()
	return h.qa.Vote(cabildo.VoteOp{Session: 7, Question: q, Attendee: who, Up: up}, seq)
}

func (h *townHall) state(id int64) cabildo.QuestionState { return h.qa.Questions[id].State }

func (h *townHall) votes(id int64) int { return h.qa.Questions[id].Votes }

func wantCode(t *testing.T, err error, code cabildo.Code) {
	t.Helper()
	if cabildo.ErrorCode(err) != code {
		t.Fatalf("got %v, want %s", err, code)
	}
}

func TestAskModeratedWaitsUnmoderatedPublishesUnlessFlagged(t *testing.T) {
	mod := newTownHall(t, true)
	if s := mod.state(mod.ask("¿Qué pasa con la ley de datos?")); s != cabildo.QuestionPending {
		t.Fatalf("moderated: %s, want pending", s)
	}
	open := newTownHall(t, false)
	if s := open.state(open.ask("¿Qué pasa con la ley de datos?")); s != cabildo.QuestionApproved {
		t.Fatalf("unmoderated: %s, want approved", s)
	}
	flagged := open.ask("¿Por qué son tan corruptos?", cabildo.Flag{Kind: cabildo.FlagWordList, Words: []string{"corruptos"}})
	if s := open.state(flagged); s != cabildo.QuestionPending {
		t.Fatalf("flagged in an unmoderated session: %s, want pending (flags never auto-publish)", s)
	}
}

// Every action from every state: exactly the documented transitions succeed, the rest
// are invalid_transition and change nothing.
func TestTransitionMatrix(t *testing.T) {
	allowed := map[cabildo.Action]map[cabildo.QuestionState]cabildo.QuestionState{
		cabildo.ActionApprove: {cabildo.QuestionPending: cabildo.QuestionApproved},
		cabildo.ActionReject:  {cabildo.QuestionPending: cabildo.QuestionRejected},
		cabildo.ActionPin:     {cabildo.QuestionApproved: cabildo.QuestionPinned},
		cabildo.ActionUnpin:   {cabildo.QuestionPinned: cabildo.QuestionApproved},
		cabildo.ActionAnswer:  {cabildo.QuestionApproved: cabildo.QuestionAnswered, cabildo.QuestionPinned: cabildo.QuestionAnswered},
		cabildo.ActionArchive: {cabildo.QuestionApproved: cabildo.QuestionArchived, cabildo.QuestionPinned: cabildo.QuestionArchived,
			cabildo.QuestionAnswered: cabildo.QuestionArchived},
		cabildo.ActionEdit: {cabildo.QuestionPending: cabildo.QuestionPending, cabildo.QuestionApproved: cabildo.QuestionApproved,
			cabildo.QuestionPinned: cabildo.QuestionPinned, cabildo.QuestionAnswered: cabildo.QuestionAnswered},
		cabildo.ActionMerge: {cabildo.QuestionPending: cabildo.QuestionMerged, cabildo.QuestionApproved: cabildo.QuestionMerged,
			cabildo.QuestionPinned: cabildo.QuestionMerged},
	}
	// How to bring a fresh pending question into each state.
	reach := map[cabildo.QuestionState][]cabildo.Action{
		cabildo.QuestionPending:  nil,
		cabildo.QuestionApproved: {cabildo.ActionApprove},
		cabildo.QuestionRejected: {cabildo.ActionReject},
		cabildo.QuestionPinned:   {cabildo.ActionApprove, cabildo.ActionPin},
		cabildo.QuestionAnswered: {cabildo.ActionApprove, cabildo.ActionAnswer},
		cabildo.QuestionArchived: {cabildo.ActionApprove, cabildo.ActionArchive},
		cabildo.QuestionMerged:   {cabildo.ActionMerge},
	}
	for _, action := range cabildo.Actions {
		for from, path := range reach {
			t.Run(string(action)+"/"+string(from), func(t *testing.T) {
				h := newTownHall(t, true)
				target := h.ask("a question that takes merges")
				h.must("m", cabildo.Moderation{Action: cabildo.ActionApprove, Question: target})
				q := h.ask("the question under test")
				for _, a := range path {
					h.must("m", cabildo.Moderation{Action: a, Question: q, Into: target})
				}
				if h.state(q) != from {
					t.Fatalf("setup reached %s, want %s", h.state(q), from)
				}
				err := h.do("m", cabildo.Moderation{Action: action, Question: q, Into: target, Text: "a corrected question"})
				want, ok := allowed[action][from]
				switch {
				case ok && err != nil:
					t.Fatalf("refused: %v", err)
				case ok && h.state(q) != want:
					t.Fatalf("state %s, want %s", h.state(q), want)
				case !ok:
					wantCode(t, err, cabildo.CodeInvalidTransition)
					if h.state(q) != from {
						t.Fatalf("a refused action changed the state to %s", h.state(q))
					}
				}
			})
		}
	}
}

func TestPinUnpinsThePreviousOne(t *testing.T) {
	h := newTownHall(t, true)
	a, b := h.ask("first question here"), h.ask("second question here")
	for _, q := range []int64{a, b} {
		h.must("m", cabildo.Moderation{Action: cabildo.ActionApprove, Question: q})
	}
	h.must("m", cabildo.Moderation{Action: cabildo.ActionPin, Question: a})
	h.must("n", cabildo.Moderation{Action: cabildo.ActionPin, Question: b})
	if h.state(a) != cabildo.QuestionApproved || h.state(b) != cabildo.QuestionPinned || h.qa.Pinned != b {
		t.Fatalf("after pinning b: a %s, b %s, pinned %d", h.state(a), h.state(b), h.qa.Pinned)
	}
	// Undoing n's pin restores both: a pinned again, b approved.
	h.must("n", cabildo.Moderation{Action: cabildo.ActionUndo})
	if h.state(a) != cabildo.QuestionPinned || h.state(b) != cabildo.QuestionApproved || h.qa.Pinned != a {
		t.Fatalf("after undo: a %s, b %s, pinned %d", h.state(a), h.state(b), h.qa.Pinned)
	}
}

func TestMergeCombinesVotesOnce(t *testing.T) {
	h := newTownHall(t, true)
	a, b := h.ask("¿Cuándo habrá datos abiertos?"), h.ask("¿Cuándo publicarán datos abiertos?")
	for _, q := range []int64{a, b} {
		h.must("m", cabildo.Moderation{Action: cabildo.ActionApprove, Question: q})
	}
	h.vote(a, "ana", true)
	h.vote(a, "luis", true)
	h.vote(b, "luis", true) // luis voted for both: after the merge he counts once
	h.vote(b, "sofia", true)
	h.must("m", cabildo.Moderation{Action: cabildo.ActionMerge, Question: b, Into: a})
	if got := h.votes(a); got != 3 {
		t.Fatalf("merged votes %d, want 3 (ana, luis, sofia)", got)
	}
	// A vote for the duplicate counts for its target; a second vote by a counted voter
	// changes nothing.
	if h.vote(b, "sofia", true) {
		t.Fatal("sofia's second vote (through the duplicate) changed the count")
	}
	if !h.vote(b, "pedro", true) || h.votes(a) != 4 {
		t.Fatalf("pedro's vote through the duplicate: %d, want 4", h.votes(a))
	}
	// Withdrawing takes luis off both questions: nothing lingers through the merge.
	if !h.vote(a, "luis", false) || h.votes(a) != 3 {
		t.Fatalf("after luis withdraws: %d, want 3", h.votes(a))
	}
	// Undoing the merge gives b back its own voters, without luis.
	h.must("m", cabildo.Moderation{Action: cabildo.ActionUndo})
	// Pedro's vote went to a (votes through a duplicate count for its target).
	if h.state(b) != cabildo.QuestionApproved || h.votes(a) != 2 || h.votes(b) != 1 {
		t.Fatalf("after undoing the merge: b %s, votes a %d b %d; want approved, 2 (ana, pedro), 1 (sofia)",
			h.state(b), h.votes(a), h.votes(b))
	}
}

func TestVotesAreSetOperations(t *testing.T) {
	h := newTownHall(t, true)
	q := h.ask("one question to vote on")
	if h.vote(q, "ana", true) {
		t.Fatal("a vote for a pending question counted")
	}
	h.must("m", cabildo.Moderation{Action: cabildo.ActionApprove, Question: q})
	for range 1000 {
		h.vote(q, "ana", true)
	}
	if h.votes(q) != 1 {
		t.Fatalf("1,000 votes by one attendee: %d, want 1", h.votes(q))
	}
	h.vote(q, "ana", false)
	h.vote(q, "ana", true)
	if h.votes(q) != 1 {
		t.Fatalf("withdraw then vote: %d, want 1", h.votes(q))
	}
	h.must("m", cabildo.Moderation{Action: cabildo.ActionAnswer, Question: q})
	if h.vote(q, "luis", true) || h.votes(q) != 1 {
		t.Fatalf("a vote for an answered question counted: %d", h.votes(q))
	}
}

func TestEditKeepsTheOriginal(t *testing.T) {
	h := newTownHall(t, true)
	q := h.ask("¿Cuando se publica el presupuesto?")
	h.must("m", cabildo.Moderation{Action: cabildo.ActionEdit, Question: q, Text: "¿Cuándo se publica el presupuesto?"})
	h.must("m", cabildo.Moderation{Action: cabildo.ActionEdit, Question: q, Text: "¿Cuándo se publicará el presupuesto?"})
	got := h.qa.Questions[q]
	if got.Text != "¿Cuándo se publicará el presupuesto?" || got.Original != "¿Cuando se publica el presupuesto?" {
		t.Fatalf("text %q original %q", got.Text, got.Original)
	}
	wantCode(t, h.do("m", cabildo.Moderation{Action: cabildo.ActionEdit, Question: q, Text: got.Text}), cabildo.CodeInvalidTransition)
	wantCode(t, h.do("m", cabildo.Moderation{Action: cabildo.ActionEdit, Question: q, Text: "x"}), cabildo.CodeValidation)
	h.must("m", cabildo.Moderation{Action: cabildo.ActionUndo})
	h.must("m", cabildo.Moderation{Action: cabildo.ActionUndo})
	if got.Text != "¿Cuando se publica el presupuesto?" || got.Original != "" {
		t.Fatalf("after undoing both edits: text %q original %q", got.Text, got.Original)
	}
}

func TestUndoIsOwnLastActionOnly(t *testing.T) {
	h := newTownHall(t, true)
	q := h.ask("a question to decide on")
	wantCode(t, h.do("ana", cabildo.Moderation{Action: cabildo.ActionUndo}), cabildo.CodeInvalidTransition)
	h.must("ana", cabildo.Moderation{Action: cabildo.ActionApprove, Question: q})
	approve := h.seq
	// Luis has nothing to undo; Ana's approve is hers only.
	wantCode(t, h.do("luis", cabildo.Moderation{Action: cabildo.ActionUndo}), cabildo.CodeInvalidTransition)
	// Once someone else changed the question, Ana's undo would overwrite their work.
	h.must("luis", cabildo.Moderation{Action: cabildo.ActionPin, Question: q})
	wantCode(t, h.do("ana", cabildo.Moderation{Action: cabildo.ActionUndo}), cabildo.CodeInvalidTransition)
	h.must("luis", cabildo.Moderation{Action: cabildo.ActionUndo})
	// A stale undo_of is refused; the right one goes through.
	wantCode(t, h.do("ana", cabildo.Moderation{Action: cabildo.ActionUndo, UndoOf: approve + 100}), cabildo.CodeInvalidTransition)
	h.must("ana", cabildo.Moderation{Action: cabildo.ActionUndo, UndoOf: approve})
	if s := h.state(q); s != cabildo.QuestionPending || !h.qa.Questions[q].DecidedAt.IsZero() {
		t.Fatalf("after undoing the approve: %s, decided %v; want pending, waiting again", s, h.qa.Questions[q].DecidedAt)
	}
	var undone int
	for _, a := range h.qa.Actions {
		if a.UndoneBy != 0 {
			undone++
		}
	}
	if len(h.qa.Actions) != 4 || undone != 2 {
		t.Fatalf("history has %d actions, %d undone; want 4 logged (approve, pin, undo, undo), 2 undone", len(h.qa.Actions), undone)
	}
}

func TestRankedOrder(t *testing.T) {
	h := newTownHall(t, true)
	ids := make([]int64, 5)
	for i := range ids {
		ids[i] = h.ask("question number " + string(rune('a'+i)))
		h.must("m", cabildo.Moderation{Action: cabildo.ActionApprove, Question: ids[i]})
	}
	h.vote(ids[2], "x", true)
	h.vote(ids[2], "y", true)
	h.vote(ids[3], "x", true)
	h.vote(ids[1], "x", true)
	h.must("m", cabildo.Moderation{Action: cabildo.ActionPin, Question: ids[4]})
	h.must("m", cabildo.Moderation{Action: cabildo.ActionAnswer, Question: ids[0]})
	pending := h.ask("not public yet")
	var got []int64
	for _, q := range h.qa.Ranked() {
		got = append(got, q.ID)
	}
	// Pinned, then 2 votes, then 1 vote asked earlier before 1 vote asked later, answered last.
	want := []int64{ids[4], ids[2], ids[1], ids[3], ids[0]}
	if !slices.Equal(got, want) || slices.Contains(got, pending) {
		t.Fatalf("ranked %v, want %v", got, want)
	}
}

// A town hall survives a JSON round trip (the projection's snapshot) with its vote counts.
func TestQASnapshotRoundTrip(t *testing.T) {
	h := newTownHall(t, true)
	a, b := h.ask("first question here"), h.ask("second question here")
	for _, q := range []int64{a, b} {
		h.must("m", cabildo.Moderation{Action: cabildo.ActionApprove, Question: q})
	}
	h.vote(a, "ana", true)
	h.vote(b, "ana", true)
	h.vote(b, "luis", true)
	h.must("m", cabildo.Moderation{Action: cabildo.ActionMerge, Question: b, Into: a})
	back := roundTrip(t, h.qa)
	if back.Questions[a].Votes != 2 || back.Pinned != h.qa.Pinned || len(back.Actions) != len(h.qa.Actions) {
		t.Fatalf("restored votes %d (want 2), pinned %d, %d actions", back.Questions[a].Votes, back.Pinned, len(back.Actions))
	}
}

func TestNormalizeAsk(t *testing.T) {
	long := make([]rune, cabildo.MaxQuestionText+1)
	for i := range long {
		long[i] = 'á'
	}
	tests := []struct {
		name string
		q    cabildo.Question
		code string
	}{
		{"fine", cabildo.Question{Text: "  ¿Qué   opina   del acceso a la información? "}, ""},
		{"too short", cabildo.Question{Text: " ¿? "}, "too_short"},
		{"too long in runes", cabildo.Question{Text: string(long)}, "too_long"},
		{"max length in runes", cabildo.Question{Text: string(long[1:])}, ""},
		{"bad lang", cabildo.Question{Text: "a fine question", Lang: "fr"}, "invalid_enum"},
		{"regional lang", cabildo.Question{Text: "a fine question", Lang: "en-GB"}, ""},
		{"long name", cabildo.Question{Text: "a fine question", Name: string(long[:cabildo.MaxDisplayName+1])}, "too_long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.q.NormalizeAsk()
			if tt.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var e *cabildo.Error
			if !errors.As(err, &e) || len(e.Fields) == 0 || e.Fields[0].Code != tt.code {
				t.Fatalf("got %v, want field code %s", err, tt.code)
			}
		})
	}
	q := cabildo.Question{Text: "  ¿Qué   opina? ", Lang: "en-GB"}
	_ = q.NormalizeAsk()
	if q.Text != "¿Qué opina?" || q.Lang != cabildo.EN {
		t.Fatalf("normalized to %q %q", q.Text, q.Lang)
	}
}

// roundTrip is a town hall as a projection snapshot stores and restores it.
func roundTrip(t *testing.T, qa *cabildo.QA) *cabildo.QA {
	t.Helper()
	data, err := json.Marshal(qa)
	if err != nil {
		t.Fatal(err)
	}
	var back cabildo.QA
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	back.Rebuild()
	return &back
}

// A clone keeps the town hall as it was while the original goes on: votes, a withdrawal,
// a merge and its undo (which marks the merge undone in place) change nothing in it.
func TestCloneSharesNothingThatChanges(t *testing.T) {
	h := newTownHall(t, true)
	a, b := h.ask("¿Cuándo habrá datos abiertos?"), h.ask("¿Cuándo publicarán datos abiertos?")
	for _, q := range []int64{a, b} {
		h.must("m", cabildo.Moderation{Action: cabildo.ActionApprove, Question: q})
	}
	h.vote(a, "ana", true)
	h.must("m", cabildo.Moderation{Action: cabildo.ActionMerge, Question: b, Into: a})
	before, err := json.Marshal(h.qa)
	if err != nil {
		t.Fatal(err)
	}
	clone := h.qa.Clone()
	h.vote(a, "luis", true)
	h.vote(a, "ana", false)
	h.must("m", cabildo.Moderation{Action: cabildo.ActionUndo})
	h.must("m", cabildo.Moderation{Action: cabildo.ActionReject, Question: h.ask("¿Otra pregunta?")})
	after, err := json.Marshal(clone)
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(before) {
		t.Fatalf("the clone changed with the original:\nbefore %s\nafter  %s", before, after)
	}
	if now, _ := json.Marshal(h.qa); string(now) == string(before) {
		t.Fatal("the original did not change: the test checks nothing")
	}
}
