package cabildo_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cabildo/cabildo/internal/cabildo"
)

// naiveVoters is the full recount the vote counts once were: a question's voters together
// with those of every question merged into it, however deep, built from scratch.
func naiveVoters(qa *cabildo.QA, q *cabildo.Question, depth int) map[string]bool {
	all := map[string]bool{}
	for a := range q.Voters {
		all[a] = true
	}
	if depth > 64 {
		return all
	}
	for _, id := range q.Merged {
		if m, ok := qa.Questions[id]; ok {
			for a := range naiveVoters(qa, m, depth+1) {
				all[a] = true
			}
		}
	}
	return all
}

// checkCounts compares every question's count, and every attendee's vote, with the full
// recount.
func checkCounts(t *testing.T, qa *cabildo.QA, attendees []string, what string) {
	t.Helper()
	for id, q := range qa.Questions {
		want := naiveVoters(qa, q, 0)
		if q.Votes != len(want) {
			t.Fatalf("%s: question %d counts %d votes, a full recount %d (voters %v)", what, id, q.Votes, len(want), want)
		}
		for _, a := range attendees {
			if got := qa.Voted(q, a); got != want[a] {
				t.Fatalf("%s: question %d: Voted(%s) = %v, a full recount says %v", what, id, a, got, want[a])
			}
		}
	}
}

// Random sequences of asks, votes, withdrawals, moderation (merges and their undos among
// it) keep the incremental counts equal to a full recount after every step, and a
// snapshot round trip restores the same counts.
func TestVoteCountsMatchAFullRecount(t *testing.T) {
	attendees := []string{"ana", "luis", "sofia", "pedro", "marta", "juan", "eva", "raul"}
	mods := []string{"m1", "m2"}
	actions := []cabildo.Action{cabildo.ActionApprove, cabildo.ActionApprove, cabildo.ActionReject, cabildo.ActionPin,
		cabildo.ActionUnpin, cabildo.ActionAnswer, cabildo.ActionArchive, cabildo.ActionMerge, cabildo.ActionMerge, cabildo.ActionMerge}
	for seed := range uint64(400) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			h := newTownHall(t, seed%2 == 0)
			var ids []int64
			for step := range 120 {
				var what string
				switch r := rng.IntN(100); {
				case r < 8 || len(ids) < 2:
					ids = append(ids, h.ask(fmt.Sprintf("question number %d", len(ids))))
					what = "ask"
				case r < 55:
					q, a, up := ids[rng.IntN(len(ids))], attendees[rng.IntN(len(attendees))], rng.IntN(3) > 0
					h.vote(q, a, up)
					what = fmt.Sprintf("vote %d %s %v", q, a, up)
				case r < 85:
					m := cabildo.Moderation{Action: actions[rng.IntN(len(actions))], Question: ids[rng.IntN(len(ids))]}
					if m.Action == cabildo.ActionMerge {
						m.Into = ids[rng.IntN(len(ids))]
					}
					err := h.do(mods[rng.IntN(len(mods))], m)
					what = fmt.Sprintf("%s %d into %d: %v", m.Action, m.Question, m.Into, err)
				default:
					err := h.do(mods[rng.IntN(len(mods))], cabildo.Moderation{Action: cabildo.ActionUndo})
					what = fmt.Sprintf("undo: %v", err)
				}
				checkCounts(t, h.qa, attendees, fmt.Sprintf("step %d (%s)", step, what))
			}
			back := roundTrip(t, h.qa)
			checkCounts(t, back, attendees, "after a snapshot round trip")
			for id, q := range h.qa.Questions {
				if back.Questions[id].Votes != q.Votes {
					t.Fatalf("question %d: %d votes live, %d restored", id, q.Votes, back.Questions[id].Votes)
				}
			}
		})
	}
}

// A merge undone after its target was itself merged away takes the duplicate's votes off
// the question that now counts them too.
func TestUndoMergeAfterTheTargetWasMerged(t *testing.T) {
	h := newTownHall(t, true)
	a, b, c := h.ask("first question here"), h.ask("second question here"), h.ask("third question here")
	for _, q := range []int64{a, b, c} {
		h.must("m", cabildo.Moderation{Action: cabildo.ActionApprove, Question: q})
	}
	h.vote(a, "ana", true)
	h.vote(b, "luis", true)
	h.vote(c, "sofia", true)
	h.must("m1", cabildo.Moderation{Action: cabildo.ActionMerge, Question: a, Into: b}) // b: ana, luis
	h.must("m2", cabildo.Moderation{Action: cabildo.ActionMerge, Question: b, Into: c}) // c: ana, luis, sofia
	if h.votes(c) != 3 {
		t.Fatalf("c counts %d, want 3", h.votes(c))
	}
	h.must("m1", cabildo.Moderation{Action: cabildo.ActionUndo}) // a is back on its own
	if h.votes(a) != 1 || h.votes(b) != 1 || h.votes(c) != 2 {
		t.Fatalf("after the undo: a %d b %d c %d; want 1 (ana), 1 (luis), 2 (luis, sofia)", h.votes(a), h.votes(b), h.votes(c))
	}
	checkCounts(t, h.qa, []string{"ana", "luis", "sofia"}, "after the undo")
}
