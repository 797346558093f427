package cabildo_test

import (
	"fmt"
	"testing"

	"github.com/cabildo/cabildo/internal/cabildo"
)

// benchHall is a town hall with one approved question holding after votes, and, when
// merged, a duplicate merged into it holding after/2 more (half of them the same voters).
func benchHall(b *testing.B, after int, merged bool) (*cabildo.QA, int64, uint64) {
	qa := cabildo.NewQA(7)
	open, moderated := true, false
	qa.Configure(cabildo.QASettings{Session: 7, Open: &open, Moderated: &moderated}, 1)
	q := qa.Ask(cabildo.Question{Text: "the question everyone votes for", Attendee: "asker"}, 1, 2, 0, t0).ID
	seq := uint64(3)
	// The votes are put in place as a snapshot restore does, so that setting up costs
	// the same whichever way votes are counted.
	voters := func(n, step int) map[string]bool {
		m := make(map[string]bool, n)
		for i := range n {
			m[fmt.Sprint("v", i*step)] = true
		}
		return m
	}
	qa.Questions[q].Voters = voters(after, 1)
	if merged {
		d := qa.Ask(cabildo.Question{Text: "the same question again", Attendee: "asker"}, 2, seq, 0, t0).ID
		seq++
		qa.Questions[d].Voters = voters(after/2, 2)
		qa.Rebuild()
		if _, err := qa.Moderate(cabildo.Moderation{Session: 7, Action: cabildo.ActionMerge, Question: d, Into: q}, "m", seq, t0); err != nil {
			b.Fatal(err)
		}
		seq++
	}
	qa.Rebuild()
	if qa.Questions[q].Votes != after {
		b.Fatalf("setup: %d votes, want %d", qa.Questions[q].Votes, after)
	}
	return qa, q, seq
}

// BenchmarkVote is one vote on a question that holds `after` votes already, and its
// withdrawal (so that every operation starts from the same count): a vote must cost the
// same whatever came before it. /merged: the question has a duplicate merged into it.
func BenchmarkVote(b *testing.B) {
	for _, merged := range []bool{false, true} {
		for _, after := range []int{100, 100_000} {
			name := fmt.Sprintf("after=%d", after)
			if merged {
				name += "/merged"
			}
			b.Run(name, func(b *testing.B) {
				qa, q, seq := benchHall(b, after, merged)
				who := make([]string, 1024)
				for i := range who {
					who[i] = fmt.Sprint("new", i)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					a := who[i%len(who)]
					if !qa.Vote(cabildo.VoteOp{Session: 7, Question: q, Attendee: a, Up: true}, seq) ||
						!qa.Vote(cabildo.VoteOp{Session: 7, Question: q, Attendee: a, Up: false}, seq+1) {
						b.Fatal("a vote or its withdrawal changed nothing")
					}
					seq += 2
				}
			})
		}
	}
}

// BenchmarkReplay applies n votes to a fresh town hall, as a node replaying the log does:
// the time per vote must not grow with n.
func BenchmarkReplay(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		who := make([]string, n)
		for i := range who {
			who[i] = fmt.Sprint("v", i)
		}
		b.Run(fmt.Sprintf("votes=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				qa := cabildo.NewQA(7)
				open, moderated := true, false
				qa.Configure(cabildo.QASettings{Session: 7, Open: &open, Moderated: &moderated}, 1)
				q := qa.Ask(cabildo.Question{Text: "the question everyone votes for", Attendee: "asker"}, 1, 2, 0, t0).ID
				for j, a := range who {
					qa.Vote(cabildo.VoteOp{Session: 7, Question: q, Attendee: a, Up: true}, uint64(3+j))
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/vote")
		})
	}
}
