package townhall

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/schedule"
)

// slowLog confirms every append after delay, or gives up when the append's context ends
// first, as the log does when it does not hear back in time.
type slowLog struct {
	Log
	delay time.Duration
}

func (s slowLog) Append(ctx context.Context, subject string, data []byte, expect *uint64, msgID string) (uint64, bool, error) {
	select {
	case <-time.After(s.delay):
		return s.Log.Append(ctx, subject, data, expect, msgID)
	case <-ctx.Done():
		return 0, false, &cabildo.Error{Code: cabildo.CodeUnavailable, Err: ctx.Err(), Message: "not confirmed in time"}
	}
}

// A write queued behind a slow append is answered within AnswerWithin of its arrival,
// not after the append ahead of it and then its own: that is what lets a client sending
// as the log goes away hear "retry" within the append timeout. The first write of each
// kind is confirmed (slow, in time); the second, sent just after it, is refused in time
// and never stored.
func TestWritesAreAnsweredWithinTheirDeadline(t *testing.T) {
	n := newNode(t)
	ref := n.session(t)
	q := n.ask(t, ref, "asker", "¿Habrá traducción simultánea en la plenaria?")
	const within = 600 * time.Millisecond
	svc := New(n.sched, slowLog{Log: n.log, delay: within * 3 / 4}, n.store,
		Options{VoteQueue: -1, VoteWait: -1, AnswerWithin: within})
	t.Cleanup(svc.Close)

	type answer struct {
		what string
		took time.Duration
		err  error
	}
	answers := make(chan answer, 4)
	var wg sync.WaitGroup
	send := func(what string, do func() error) {
		wg.Go(func() {
			start := time.Now()
			err := do()
			answers <- answer{what, time.Since(start), err}
		})
	}
	for i, who := range []string{"first", "second"} {
		if i > 0 {
			time.Sleep(within / 10) // queued behind the first's append
		}
		send("vote "+who, func() error {
			_, err := svc.Vote(bg, "th", ref, q, "voter-"+who, true)
			return err
		})
		send("question "+who, func() error {
			_, err := svc.Ask(bg, schedule.Request{Actor: "attendee:" + who}, "th", ref,
				Ask{Text: fmt.Sprintf("Pregunta de %s sobre el presupuesto abierto", who)})
			return err
		})
	}
	wg.Wait()
	close(answers)
	const slack = 250 * time.Millisecond // scheduling under -race on a busy machine
	for a := range answers {
		if a.took > within+slack {
			t.Errorf("%s answered after %v (%v), want within %v", a.what, a.took.Round(time.Millisecond), a.err, within)
		}
		first := a.what == "vote first" || a.what == "question first"
		switch {
		case first && a.err != nil:
			t.Errorf("%s: %v, want stored (its append is slow but in time)", a.what, a.err)
		case !first && cabildo.ErrorCode(a.err) != cabildo.CodeUnavailable:
			t.Errorf("%s: %v, want unavailable", a.what, a.err)
		}
	}
	if v, qs := svc.Stats(); v.Stored != 1 || qs.Stored != 1 || v.Failed != 1 || qs.Failed != 1 {
		t.Fatalf("commit stats: votes %+v, questions %+v; want one of each stored and one failed", v, qs)
	}
}
