package townhall

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/natslog"
	"github.com/cabildo/cabildo/internal/projection"
	"github.com/cabildo/cabildo/internal/schedule"
)

// node is a log on an embedded NATS server, a projection consuming it, and the town hall.
type node struct {
	emb   *natslog.Embedded
	log   *natslog.Log
	store *projection.Store
	svc   *Service
	sched *schedule.Service

	mu      sync.Mutex
	batches int // votes.cast entries applied
}

func newNode(t *testing.T) *node {
	t.Helper()
	emb, err := natslog.StartEmbedded(natslog.EmbeddedOptions{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	nc, err := emb.Connect("test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	lg, err := natslog.Open(context.Background(), nc, natslog.Config{AppendTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	n := &node{emb: emb, log: lg}
	n.store = projection.New(projection.Options{OnApply: func(a projection.Applied) {
		if a.Record.Type == cabildo.RecordVotesCast {
			n.mu.Lock()
			n.batches++
			n.mu.Unlock()
		}
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = lg.Consume(ctx, 0, func(e natslog.Entry) error {
			n.store.Apply(e.Seq, e.Subject, e.Time, e.Data)
			return nil
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	n.sched = schedule.New(lg, n.store)
	n.svc = New(n.sched, lg, n.store, Options{})
	t.Cleanup(n.svc.Close)
	return n
}

var bg = context.Background()

// session creates an event with one session whose Q&A is open and unmoderated.
func (n *node) session(t *testing.T) string {
	t.Helper()
	req := schedule.Request{Actor: "organizer:test"}
	ev := cabildo.Event{ID: "th", Name: cabildo.Text{EN: "Town hall"}, TimeZone: "America/Costa_Rica",
		Days: []cabildo.Day{{Date: "2027-04-14", Kind: cabildo.DayConference, Start: "08:00", End: "18:00"}}}
	if _, err := n.sched.PutEvent(bg, req, ev); err != nil {
		t.Fatal(err)
	}
	if _, err := n.sched.PutRoom(bg, req, "th", cabildo.Room{ID: "plenary", Name: cabildo.Text{EN: "Plenary"}}); err != nil {
		t.Fatal(err)
	}
	start := time.Date(2027, 4, 14, 16, 0, 0, 0, time.UTC)
	res, err := n.sched.CreateSession(bg, req, "th", cabildo.Session{Title: cabildo.Text{EN: "Town hall"},
		Kind: cabildo.KindTownHall, Language: cabildo.ES, Room: "plenary", Start: start, End: start.Add(time.Hour)}, false)
	if err != nil {
		t.Fatal(err)
	}
	ref := fmt.Sprint(res.Seq)
	open, moderated := true, false
	if _, err := n.svc.Configure(bg, req, "th", ref, cabildo.QASettings{Open: &open, Moderated: &moderated}); err != nil {
		t.Fatal(err)
	}
	return ref
}

func (n *node) ask(t *testing.T, ref, who, text string) int64 {
	t.Helper()
	res, err := n.svc.Ask(bg, schedule.Request{Actor: "attendee:" + who}, "th", ref, Ask{Text: text})
	if err != nil {
		t.Fatal(err)
	}
	return int64(res.Seq)
}

func (n *node) question(ref string, id int64) (q cabildo.Question) {
	n.store.Read("th", func(st *projection.EventState) {
		s, _, _ := schedule.FindSession(st, ref)
		q = *st.QAOf(s.ID).Questions[id]
	})
	return q
}

// A burst of votes is group-committed: far fewer log entries than votes, every vote
// counted once, and a second round of the same votes changes nothing.
func TestVotesAreGroupCommitted(t *testing.T) {
	n := newNode(t)
	ref := n.session(t)
	q := n.ask(t, ref, "asker", "¿Cuándo habrá datos abiertos de contratación?")
	const voters = 2000
	var wg sync.WaitGroup
	errs := make(chan error, voters)
	for round := range 2 {
		for i := range voters {
			wg.Go(func() {
				if _, err := n.svc.Vote(bg, "th", ref, q, fmt.Sprintf("voter-%d", i), true); err != nil {
					errs <- fmt.Errorf("round %d voter %d: %w", round, i, err)
				}
			})
		}
		wg.Wait()
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := n.question(ref, q).Votes; got != voters {
		t.Fatalf("%d votes counted, want %d", got, voters)
	}
	n.mu.Lock()
	batches := n.batches
	n.mu.Unlock()
	if batches >= voters {
		t.Fatalf("%d log entries for %d votes: not group-committed", batches, 2*voters)
	}
	t.Logf("%d votes (twice) in %d log entries", voters, batches)
}

// With the log gone, a vote fails as unavailable within the append timeout: never a hang,
// never an acknowledgement for something not stored.
func TestVoteFailsWhenTheLogIsGone(t *testing.T) {
	n := newNode(t)
	ref := n.session(t)
	q := n.ask(t, ref, "asker", "¿Cuándo habrá datos abiertos de contratación?")
	n.emb.Shutdown()
	start := time.Now()
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	_, err := n.svc.Vote(ctx, "th", ref, q, "voter", true)
	if code := cabildo.ErrorCode(err); code != cabildo.CodeUnavailable {
		t.Fatalf("vote with NATS down: %v, want unavailable", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("vote failed after %v, want within the 1 s append timeout (+ slack)", d)
	}
}

func TestVoteChecksTheQuestion(t *testing.T) {
	n := newNode(t)
	ref := n.session(t)
	if _, err := n.svc.Vote(bg, "th", ref, 999999, "v", true); cabildo.ErrorCode(err) != cabildo.CodeNotFound {
		t.Fatalf("vote for a missing question: %v", err)
	}
	q := n.ask(t, ref, "asker", "¿Por qué son tan corruptos?") // flagged: waits for a moderator
	if s := n.question(ref, q).State; s != cabildo.QuestionPending {
		t.Fatalf("flagged question is %s, want pending", s)
	}
	// A hidden question does not exist for voters: its state is the moderators' business.
	if _, err := n.svc.Vote(bg, "th", ref, q, "v", true); cabildo.ErrorCode(err) != cabildo.CodeNotFound {
		t.Fatalf("vote for a pending question: %v, want not_found", err)
	}
}

func TestAskNeedsOpenQA(t *testing.T) {
	n := newNode(t)
	ref := n.session(t)
	closed := false
	if _, err := n.svc.Configure(bg, schedule.Request{Actor: "moderator:m"}, "th", ref, cabildo.QASettings{Open: &closed}); err != nil {
		t.Fatal(err)
	}
	_, err := n.svc.Ask(bg, schedule.Request{Actor: "attendee:a"}, "th", ref, Ask{Text: "a question for nobody"})
	if cabildo.ErrorCode(err) != cabildo.CodeQAClosed {
		t.Fatalf("ask while closed: %v, want qa_closed", err)
	}
}

// Moderators acting at once on one session conflict on its subject; the loser is
// re-checked and retried, so both actions land when both still make sense.
func TestConcurrentModeratorsBothLand(t *testing.T) {
	n := newNode(t)
	ref := n.session(t)
	moderated := true
	if _, err := n.svc.Configure(bg, schedule.Request{Actor: "moderator:m"}, "th", ref, cabildo.QASettings{Moderated: &moderated}); err != nil {
		t.Fatal(err)
	}
	ids := make([]int64, 20)
	for i := range ids {
		ids[i] = n.ask(t, ref, "asker", fmt.Sprintf("question number %d about open data", i))
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(ids))
	for i, id := range ids {
		wg.Go(func() {
			_, err := n.svc.Moderate(bg, schedule.Request{Actor: fmt.Sprintf("moderator:m%d", i%5)}, "th", ref,
				cabildo.Moderation{Action: cabildo.ActionApprove, Question: id})
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, id := range ids {
		if s := n.question(ref, id).State; s != cabildo.QuestionApproved {
			t.Fatalf("question %d is %s after 20 concurrent approvals", id, s)
		}
	}
}

func TestRecordsAreJSON(t *testing.T) {
	// The log's records must survive encoding: a vote batch decodes to the same ops.
	rec := cabildo.Record{Type: cabildo.RecordVotesCast, Event: "th", Votes: []cabildo.VoteOp{{Session: 1, Question: 2, Attendee: "a", Up: true}}}
	b, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	var back cabildo.Record
	if err := json.Unmarshal(b, &back); err != nil || back.Validate() != nil || back.Votes[0] != rec.Votes[0] {
		t.Fatalf("round trip: %+v %v", back, err)
	}
}
