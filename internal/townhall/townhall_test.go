package townhall

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
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
	batches int    // votes.cast entries applied
	asked   int    // questions.asked entries applied
	seen    uint64 // the last sequence OnApply saw
}

// counts returns the entries counted so far, once OnApply has seen everything the
// projection applied: it runs after the projection shows an entry, so a use case's answer
// can come before the count.
func (n *node) counts(t *testing.T) (batches, asked int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n.mu.Lock()
		batches, asked, seen := n.batches, n.asked, n.seen
		n.mu.Unlock()
		if seen >= n.store.Seq() {
			return batches, asked
		}
		if time.Now().After(deadline) {
			t.Fatalf("OnApply saw %d, the projection is at %d", seen, n.store.Seq())
		}
		time.Sleep(time.Millisecond)
	}
}

// unbounded is a node that never sheds votes: the tests here are about what a vote does
// once taken, and shedding (shed_test.go) would make them depend on the machine's speed.
var unbounded = Options{VoteQueue: -1, VoteWait: -1}

func newNode(t testing.TB) *node {
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
		n.mu.Lock()
		n.seen = a.Seq
		switch a.Record.Type {
		case cabildo.RecordVotesCast:
			n.batches++
		case cabildo.RecordQuestionsAsked:
			n.asked++
		}
		n.mu.Unlock()
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
	n.svc = New(n.sched, lg, n.store, unbounded)
	t.Cleanup(n.svc.Close)
	return n
}

var bg = context.Background()

// session creates an event with one session whose Q&A is open and unmoderated.
func (n *node) session(t testing.TB) string {
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

func (n *node) ask(t testing.TB, ref, who, text string) int64 {
	t.Helper()
	res, err := n.svc.Ask(bg, schedule.Request{Actor: "attendee:" + who}, "th", ref, Ask{Text: text})
	if err != nil {
		t.Fatal(err)
	}
	return res.ID
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
	errs := make(chan error, 2*voters)
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
	batches, _ := n.counts(t)
	if batches >= voters {
		t.Fatalf("%d log entries for %d votes: not group-committed", batches, 2*voters)
	}
	t.Logf("%d votes (twice) in %d log entries", voters, batches)
}

// A swarm's questions are group-committed: fewer log entries than questions, and each
// asker gets their own question back, numbered in the order the log holds them.
func TestAsksAreGroupCommitted(t *testing.T) {
	n := newNode(t)
	ref := n.session(t)
	const askers = 300
	ids := make([]int64, askers)
	var wg sync.WaitGroup
	errs := make(chan error, askers)
	for i := range askers {
		wg.Go(func() {
			res, err := n.svc.Ask(bg, schedule.Request{Actor: fmt.Sprintf("attendee:a%d", i)}, "th", ref,
				Ask{Text: fmt.Sprintf("Pregunta %d: ¿cuándo se publican los datos del presupuesto?", i)})
			if err != nil {
				errs <- fmt.Errorf("asker %d: %w", i, err)
				return
			}
			ids[i] = res.ID
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	for i, id := range ids {
		q := n.question(ref, id)
		if want := fmt.Sprintf("Pregunta %d:", i); len(q.Text) < len(want) || q.Text[:len(want)] != want || q.Attendee != fmt.Sprintf("a%d", i) {
			t.Fatalf("asker %d got question %d: %q by %q", i, id, q.Text, q.Attendee)
		}
		if seen[id] {
			t.Fatalf("question %d given to two askers", id)
		}
		seen[id] = true
	}
	var order []int64
	n.store.Read("th", func(st *projection.EventState) {
		s, _, _ := schedule.FindSession(st, ref)
		order = st.QAOf(s.ID).Order
	})
	for i, id := range order {
		if id != int64(i+1) {
			t.Fatalf("question ids in log order: %v, want 1, 2, 3...", order)
		}
	}
	_, entries := n.counts(t)
	if len(order) != askers || entries >= askers {
		t.Fatalf("%d questions stored in %d log entries, want %d in fewer entries", len(order), entries, askers)
	}
	// The node's own count (for its metrics) agrees: the session's first question came
	// before the burst.
	if _, st := n.svc.Stats(); st.Stored != askers || int(st.Entries) != entries || st.Failed != 0 {
		t.Fatalf("commit stats %+v, want %d stored in %d entries, none failed", st, askers, entries)
	}
	t.Logf("%d questions in %d log entries", askers, entries)
}

// A burst of the same question, worded a little differently each time, reaches the
// moderators flagged: every copy but the first names an earlier one to merge into, though
// they travel in one log entry and have no ids when they are screened.
func TestBurstOfNearDuplicatesIsFlagged(t *testing.T) {
	n := newNode(t)
	ref := n.session(t)
	// Something else first, held in its append until the burst has queued behind it, so
	// that the burst is one entry: none of it is in the projection when it is screened.
	gate := &gatedLog{Log: n.log, gate: make(chan struct{}), held: make(chan struct{})}
	svc := New(n.sched, gate, n.store, unbounded)
	t.Cleanup(svc.Close)
	const askers = 40
	var wg sync.WaitGroup
	errs := make(chan error, askers+1)
	wg.Go(func() {
		if _, err := svc.Ask(bg, schedule.Request{Actor: "attendee:first"}, "th", ref, Ask{Text: "¿Habrá transporte nocturno?"}); err != nil {
			errs <- err
		}
	})
	<-gate.held
	for i := range askers {
		wg.Go(func() {
			text := []string{"¿Cuándo se publicará el presupuesto municipal de este año?",
				"¿Cuándo publicarán el presupuesto municipal de este año?",
				"cuando se publicara el presupuesto municipal de este año"}[i%3]
			if _, err := svc.Ask(bg, schedule.Request{Actor: fmt.Sprintf("attendee:a%d", i)}, "th", ref, Ask{Text: text}); err != nil {
				errs <- err
			}
		})
	}
	for queued := 0; queued < askers; time.Sleep(time.Millisecond) {
		svc.asks.mu.Lock()
		queued = len(svc.asks.pending["th"])
		svc.asks.mu.Unlock()
	}
	close(gate.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var qa *cabildo.QA
	n.store.Read("th", func(st *projection.EventState) {
		s, _, _ := schedule.FindSession(st, ref)
		qa = st.QAOf(s.ID)
	})
	_, entries := n.counts(t)
	if len(qa.Order) != askers+1 || entries != 2 {
		t.Fatalf("%d questions in %d entries: want %d in 2", len(qa.Order), entries, askers+1)
	}
	var burst []int64
	for _, id := range qa.Order {
		if q := qa.Questions[id]; q.Attendee != "first" {
			burst = append(burst, id)
		}
	}
	siblings := 0 // flagged as like a question of the same entry
	for _, id := range burst[1:] {
		q := qa.Questions[id]
		var near []cabildo.Flag
		for _, f := range q.Flags {
			if f.Kind == cabildo.FlagNearDuplicate {
				near = append(near, f)
			}
		}
		if len(near) != 1 || near[0].Similar >= id || !slices.Contains(burst, near[0].Similar) || near[0].Similarity < 0.6 {
			t.Fatalf("question %d (%q) flags %+v: want one near_duplicate naming an earlier question", id, q.Text, q.Flags)
		}
		if qa.Questions[near[0].Similar].Stored == q.Stored {
			siblings++
		}
	}
	if f := qa.Questions[burst[0]].Flags; len(f) != 0 {
		t.Fatalf("the burst's first question is flagged %+v", f)
	}
	if siblings != askers-1 {
		t.Fatalf("%d of the entry's %d questions flagged as like another of it, want %d", siblings, askers, askers-1)
	}
}

// gatedLog holds its first append until gate is closed.
type gatedLog struct {
	Log
	gate chan struct{}
	held chan struct{} // closed once the first append waits
	once sync.Once
}

func (g *gatedLog) Append(ctx context.Context, subject string, data []byte, expect *uint64, msgID string) (uint64, bool, error) {
	g.once.Do(func() {
		close(g.held)
		<-g.gate
	})
	return g.Log.Append(ctx, subject, data, expect, msgID)
}

// Sends of one Idempotency-Key give one question, whether they wait together for the
// same entry or come after it; the same key with another text is refused.
func TestAskIdempotencyKey(t *testing.T) {
	n := newNode(t)
	ref := n.session(t)
	req := schedule.Request{Actor: "attendee:a", IdempotencyKey: "a/k1", Hash: "h1"}
	in := Ask{Text: "¿Quién decide qué preguntas llegan al presidente?"}
	results := make([]schedule.Result, 10)
	var wg sync.WaitGroup
	errs := make(chan error, len(results))
	for i := range results {
		wg.Go(func() {
			res, err := n.svc.Ask(bg, req, "th", ref, in)
			if err != nil {
				errs <- err
			}
			results[i] = res
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	created := 0
	for _, r := range results {
		if r.ID != results[0].ID || r.ID == 0 {
			t.Fatalf("concurrent sends of one key got questions %+v", results)
		}
		if !r.Replayed {
			created++
		}
	}
	if created != 1 {
		t.Fatalf("%d of %d concurrent sends say they created the question, want 1", created, len(results))
	}
	later, err := n.svc.Ask(bg, req, "th", ref, in)
	if err != nil || later.ID != results[0].ID || !later.Replayed {
		t.Fatalf("a later send: %+v, %v; want question %d replayed", later, err, results[0].ID)
	}
	other := req
	other.Hash = "h2"
	if _, err := n.svc.Ask(bg, other, "th", ref, Ask{Text: "another question entirely, same key"}); cabildo.ErrorCode(err) != cabildo.CodeIdempotencyKeyReused {
		t.Fatalf("the key with another question: %v, want idempotency_key_reused", err)
	}
	var count int
	n.store.Read("th", func(st *projection.EventState) {
		s, _, _ := schedule.FindSession(st, ref)
		count = len(st.QAOf(s.ID).Order)
	})
	if count != 1 {
		t.Fatalf("%d questions stored, want 1", count)
	}
}

// Two nodes' committers cannot see each other's keys: both entries reach the log, and
// the projection keeps the first question only, so both callers get the same one.
func TestAskKeyRaceInTheLog(t *testing.T) {
	n := newNode(t)
	ref := n.session(t)
	other := New(n.sched, n.log, n.store, unbounded) // a second committer on the same log
	t.Cleanup(other.Close)
	req := schedule.Request{Actor: "attendee:a", IdempotencyKey: "a/k1", Hash: "h1"}
	in := Ask{Text: "¿Habrá intérpretes de lengua de señas en la plenaria?"}
	var (
		wg   sync.WaitGroup
		a, b schedule.Result
		ea   error
		eb   error
	)
	wg.Go(func() { a, ea = n.svc.Ask(bg, req, "th", ref, in) })
	wg.Go(func() { b, eb = other.Ask(bg, req, "th", ref, in) })
	wg.Wait()
	if ea != nil || eb != nil || a.ID != b.ID || a.ID == 0 || a.Replayed == b.Replayed {
		t.Fatalf("node A %+v %v, node B %+v %v: want one question, created by exactly one", a, ea, b, eb)
	}
}

// A vote already counted, or a withdrawal of one that is not, changes nothing and adds
// nothing to the log; the version it answers still shows the count that includes it.
func TestRepeatedVoteIsNotStoredAgain(t *testing.T) {
	n := newNode(t)
	ref := n.session(t)
	q := n.ask(t, ref, "asker", "¿Cuándo habrá datos abiertos de contratación?")
	// Entries are counted by the log position the projection has reached: Vote returns
	// once its entry is applied, whereas OnApply's count may lag that by a moment.
	base := n.store.Seq()
	entries := func() int { return int(n.store.Seq() - base) }
	for _, step := range []struct {
		up      bool
		entries int
		votes   int
	}{{true, 1, 1}, {true, 1, 1}, {true, 1, 1}, {false, 2, 0}, {false, 2, 0}, {true, 3, 1}} {
		v, err := n.svc.Vote(bg, "th", ref, q, "voter", step.up)
		if err != nil {
			t.Fatal(err)
		}
		got := n.question(ref, q)
		if entries() != step.entries || got.Votes != step.votes || v == 0 || v > got.Version {
			t.Fatalf("vote %v: %d log entries, %d votes, version %d (question at %d); want %d entries, %d votes",
				step.up, entries(), got.Votes, v, got.Version, step.entries, step.votes)
		}
	}
}

// With the log gone, questions and votes fail as unavailable within the append timeout,
// those queued behind the failing append too: never a hang, never an acknowledgement for
// something not stored.
func TestWritesFailWhenTheLogIsGone(t *testing.T) {
	n := newNode(t)
	ref := n.session(t)
	q := n.ask(t, ref, "asker", "¿Cuándo habrá datos abiertos de contratación?")
	n.emb.Shutdown()
	start := time.Now()
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	codes := make(chan string, 40)
	for i := range 20 {
		wg.Go(func() {
			_, err := n.svc.Ask(ctx, schedule.Request{Actor: fmt.Sprintf("attendee:a%d", i)}, "th", ref,
				Ask{Text: fmt.Sprintf("Pregunta %d sin registro", i)})
			codes <- "question: " + string(cabildo.ErrorCode(err))
		})
		wg.Go(func() {
			_, err := n.svc.Vote(ctx, "th", ref, q, fmt.Sprintf("voter-%d", i), true)
			codes <- "vote: " + string(cabildo.ErrorCode(err))
		})
	}
	wg.Wait()
	close(codes)
	for code := range codes {
		if !strings.HasSuffix(code, ": "+string(cabildo.CodeUnavailable)) {
			t.Fatalf("%s with NATS down, want unavailable", code)
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("20 questions and 20 votes failed after %v, want within the 1 s append timeout (+ slack)", d)
	}
	if v, q := n.svc.Stats(); v.Failed != 20 || q.Failed != 20 || v.Stored != 0 || q.Stored != 1 {
		t.Fatalf("commit stats: votes %+v, questions %+v; want 20 failed of each and only the first question stored", v, q)
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
