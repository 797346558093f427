package townhall

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/projection"
	"github.com/cabildo/cabildo/internal/schedule"
)

// voted reports whether who's vote counts for question id.
func (n *node) voted(ref string, id int64, who string) (v bool) {
	n.store.Read("th", func(st *projection.EventState) {
		s, _, _ := schedule.FindSession(st, ref)
		qa := st.QAOf(s.ID)
		v = qa.Voted(qa.Questions[id], who)
	})
	return v
}

// shedOutcome casts votes from voters prefix-0… at once and sorts them into acknowledged
// and shed; any other answer fails the test.
type shedOutcome struct {
	mu          sync.Mutex
	acked, shed []string
}

func (o *shedOutcome) vote(t *testing.T, svc *Service, ref string, q int64, who string) {
	_, err := svc.Vote(bg, "th", ref, q, who, true)
	o.mu.Lock()
	defer o.mu.Unlock()
	switch ce, _ := err.(*cabildo.Error); {
	case err == nil:
		o.acked = append(o.acked, who)
	case ce != nil && ce.Code == cabildo.CodeUnavailable && ce.RetryAfter > 0:
		o.shed = append(o.shed, who)
	default:
		t.Errorf("vote by %s: %v; want it stored, or shed as unavailable with a Retry-After", who, err)
	}
}

// check holds every acknowledged vote counted once and no shed vote counted at all.
func (o *shedOutcome) check(t *testing.T, n *node, ref string, q int64) {
	t.Helper()
	for _, who := range o.acked {
		if !n.voted(ref, q, who) {
			t.Fatalf("%s's vote was acknowledged but is not counted", who)
		}
	}
	for _, who := range o.shed {
		if n.voted(ref, q, who) {
			t.Fatalf("%s's vote was shed but is counted", who)
		}
	}
	if got := n.question(ref, q).Votes; got != len(o.acked) {
		t.Fatalf("%d votes counted, %d acknowledged", got, len(o.acked))
	}
}

// With its vote queue full a node sheds further votes at once: 503 unavailable with a
// Retry-After, nothing stored. The queued votes are stored once the log takes them; every
// acknowledged vote counts exactly once, and no shed one counts.
func TestVotesBeyondTheQueueAreShed(t *testing.T) {
	n := newNode(t)
	ref := n.session(t)
	q := n.ask(t, ref, "asker", "¿Cuándo habrá datos abiertos de contratación?")
	g := &gatedLog{Log: n.log, gate: make(chan struct{}), held: make(chan struct{})}
	const bound = 10
	svc := New(n.sched, g, n.store, Options{VoteQueue: bound, VoteWait: -1})
	t.Cleanup(svc.Close)

	var o shedOutcome
	var wg sync.WaitGroup
	wg.Go(func() { o.vote(t, svc, ref, q, "first") }) // its append is held
	<-g.held
	const more = 40
	for i := range more {
		wg.Go(func() { o.vote(t, svc, ref, q, fmt.Sprint("voter-", i)) })
	}
	for deadline := time.Now().Add(5 * time.Second); ; {
		if st, _ := svc.Stats(); st.Shed == more-bound {
			break
		}
		if time.Now().After(deadline) {
			st, _ := svc.Stats()
			t.Fatalf("%d votes shed while the log held the first, want %d", st.Shed, more-bound)
		}
		time.Sleep(time.Millisecond)
	}
	close(g.gate)
	wg.Wait()
	if len(o.acked) != bound+1 || len(o.shed) != more-bound {
		t.Fatalf("%d acknowledged and %d shed, want %d and %d", len(o.acked), len(o.shed), bound+1, more-bound)
	}
	o.check(t, n, ref, q)
	// Once the queue drains, a shed voter's retry is stored.
	o.vote(t, svc, ref, q, o.shed[0])
	o.shed = o.shed[1:]
	o.check(t, n, ref, q)
}

// A vote that waited longer than the budget for its log entry is shed when its turn
// comes, never appended; the votes after it are stored as usual.
func TestVotesThatWaitTooLongAreShed(t *testing.T) {
	n := newNode(t)
	ref := n.session(t)
	q := n.ask(t, ref, "asker", "¿Cuándo habrá datos abiertos de contratación?")
	g := &gatedLog{Log: n.log, gate: make(chan struct{}), held: make(chan struct{})}
	svc := New(n.sched, g, n.store, Options{VoteQueue: -1, VoteWait: 20 * time.Millisecond})
	t.Cleanup(svc.Close)

	var o shedOutcome
	var wg sync.WaitGroup
	wg.Go(func() { o.vote(t, svc, ref, q, "first") })
	<-g.held
	for i := range 5 {
		wg.Go(func() { o.vote(t, svc, ref, q, fmt.Sprint("late-", i)) })
	}
	time.Sleep(100 * time.Millisecond) // longer than the budget: they are late
	close(g.gate)
	wg.Wait()
	if len(o.acked) != 1 || len(o.shed) != 5 {
		t.Fatalf("%v acknowledged and %v shed; want first, and the 5 late ones", o.acked, o.shed)
	}
	for i := range 5 {
		o.vote(t, svc, ref, q, fmt.Sprint("on-time-", i))
	}
	if len(o.acked) != 6 {
		t.Fatalf("after the queue drained: %v acknowledged, %v shed", o.acked, o.shed)
	}
	o.check(t, n, ref, q)
	if st, _ := svc.Stats(); st.Shed != 5 || st.Stored != 6 {
		t.Fatalf("stats %+v, want 5 shed and 6 stored", st)
	}
}

// admitNow asks AdmitVote and, when admitted, ends the request at once.
func admitNow(svc *Service) error {
	if err := svc.AdmitVote(); err != nil {
		return err
	}
	svc.VoteDone()
	return nil
}

// While the vote queue is full, AdmitVote refuses (the HTTP layer's early check), and
// stops once it drains.
func TestVotesOverloadedWhileTheQueueIsFull(t *testing.T) {
	n := newNode(t)
	ref := n.session(t)
	q := n.ask(t, ref, "asker", "¿Cuándo habrá datos abiertos de contratación?")
	g := &gatedLog{Log: n.log, gate: make(chan struct{}), held: make(chan struct{})}
	svc := New(n.sched, g, n.store, Options{VoteQueue: 2, VoteWait: -1})
	t.Cleanup(svc.Close)
	if err := admitNow(svc); err != nil {
		t.Fatalf("an idle node is overloaded: %v", err)
	}
	var o shedOutcome
	var wg sync.WaitGroup
	wg.Go(func() { o.vote(t, svc, ref, q, "first") })
	<-g.held
	for i := range 2 {
		wg.Go(func() { o.vote(t, svc, ref, q, fmt.Sprint("voter-", i)) })
	}
	for deadline := time.Now().Add(5 * time.Second); admitNow(svc) == nil; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a full vote queue is not overloaded")
		}
	}
	err := admitNow(svc)
	if ce, _ := err.(*cabildo.Error); ce == nil || ce.Code != cabildo.CodeUnavailable || ce.RetryAfter <= 0 {
		t.Fatalf("overloaded: %v, want unavailable with a Retry-After", err)
	}
	close(g.gate)
	wg.Wait()
	if err := admitNow(svc); err != nil {
		t.Fatalf("drained, still overloaded: %v", err)
	}
	o.check(t, n, ref, q)
}

// At most VoteConcurrency vote requests are in progress: one more is refused at once, as
// unavailable with a Retry-After, and admitted again once one of them is answered.
func TestVotesBeyondTheConcurrencyAreShed(t *testing.T) {
	n := newNode(t)
	svc := New(n.sched, n.log, n.store, Options{VoteQueue: -1, VoteWait: -1, VoteConcurrency: 3})
	t.Cleanup(svc.Close)
	for i := range 3 {
		if err := svc.AdmitVote(); err != nil {
			t.Fatalf("vote request %d of 3 refused: %v", i+1, err)
		}
	}
	err := svc.AdmitVote()
	if ce, _ := err.(*cabildo.Error); ce == nil || ce.Code != cabildo.CodeUnavailable || ce.RetryAfter <= 0 {
		t.Fatalf("a fourth vote request: %v, want unavailable with a Retry-After", err)
	}
	if v, _ := svc.Stats(); v.Shed != 1 {
		t.Fatalf("votes shed %d, want 1", v.Shed)
	}
	svc.VoteDone()
	if err := svc.AdmitVote(); err != nil {
		t.Fatalf("one answered, the next is still refused: %v", err)
	}
	unbound := New(n.sched, n.log, n.store, Options{VoteQueue: -1, VoteWait: -1, VoteConcurrency: -1})
	t.Cleanup(unbound.Close)
	for i := range 1000 {
		if err := unbound.AdmitVote(); err != nil {
			t.Fatalf("without a bound, vote request %d refused: %v", i+1, err)
		}
	}
}
