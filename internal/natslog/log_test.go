package natslog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cabildo/cabildo/internal/cabildo"
)

// The conformance suite runs against a fresh node and against a log that was written, shut
// down and reopened on the same store dir: a log after a restart must behave like a new one.
func TestLog(t *testing.T) {
	t.Run("Fresh", func(t *testing.T) {
		testLog(t, func(t *testing.T) (*Log, func()) {
			n := startNode(t, t.TempDir(), "")
			l := n.open(Config{})
			return l, func() { n.restart(false); *l = *n.open(l.cfg) }
		})
	})
	t.Run("Reopened", func(t *testing.T) {
		testLog(t, func(t *testing.T) (*Log, func()) {
			n := startNode(t, t.TempDir(), "")
			l := n.open(Config{})
			for i := range 3 {
				mustAppend(t, l, fmt.Sprintf("pre.%d", i), []byte("before the restart"), nil, "")
			}
			n.restart(true)
			l = n.open(Config{})
			if info := mustInfo(t, l); info.LastSeq != 3 {
				t.Fatalf("reopened log: LastSeq = %d, want 3", info.LastSeq)
			}
			return l, func() { n.restart(false); *l = *n.open(l.cfg) }
		})
	})
}

// testLog is the conformance suite of the log of record. open returns a log on a node of
// its own and restart, which shuts that node down without draining its client, starts it
// again on the same store dir and reopens the log in place (the caller keeps its *Log).
// The log may already hold entries: every check is relative to Info at the start.
func testLog(t *testing.T, open func(t *testing.T) (*Log, func())) {
	t.Run("AppendSequences", func(t *testing.T) {
		l, restart := open(t)
		before := mustInfo(t, l)
		var got []uint64
		for i := range 5 {
			got = append(got, mustAppend(t, l, fmt.Sprintf("ev.session.%d", i%2), []byte{byte(i)}, nil, ""))
		}
		want := []uint64{before.LastSeq + 1, before.LastSeq + 2, before.LastSeq + 3, before.LastSeq + 4, before.LastSeq + 5}
		if diff := cmp.Diff(got, want); diff != "" {
			t.Errorf("sequences (-got +want):\n%s", diff)
		}
		after := mustInfo(t, l)
		if after.LastSeq != want[4] {
			t.Errorf("Info().LastSeq = %d, want %d", after.LastSeq, want[4])
		}
		if after.Identity == "" {
			t.Fatal("Info().Identity is empty")
		}
		restart()
		reopened := mustInfo(t, l)
		if diff := cmp.Diff(reopened, after); diff != "" {
			t.Errorf("Info after a restart on the same store dir (-got +want):\n%s", diff)
		}
	})

	t.Run("ExpectedVersion", func(t *testing.T) {
		l, _ := open(t)
		ctx := t.Context()
		const subj = "ev.session.x"
		zero := uint64(0)
		first := mustAppend(t, l, subj, []byte("created"), &zero, "")

		_, _, err := l.Append(ctx, subj, []byte("created again"), &zero, "")
		if err := checkCode(err, cabildo.CodeVersionConflict); err != nil {
			t.Errorf("expect=0 on a subject with a message: %v", err)
		}

		// Another subject moves the stream but not this subject's version.
		mustAppend(t, l, "ev.session.y", []byte("other"), nil, "")
		second := mustAppend(t, l, subj, []byte("moved"), &first, "")

		for _, tc := range []struct {
			name   string
			expect uint64
		}{
			{"stale", first},
			{"stream seq of another subject", second - 1},
			{"from the future", second + 100},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := mustInfo(t, l)
				_, _, err := l.Append(ctx, subj, []byte("lost"), &tc.expect, "")
				if err := checkCode(err, cabildo.CodeVersionConflict); err != nil {
					t.Error(err)
				}
				if after := mustInfo(t, l); after.LastSeq != before.LastSeq {
					t.Errorf("a conflicting append stored something: LastSeq %d -> %d", before.LastSeq, after.LastSeq)
				}
			})
		}
	})

	t.Run("ConcurrentExpect", func(t *testing.T) {
		l, _ := open(t)
		const subj, writers = "ev.session.room", 50
		zero := uint64(0)
		base := mustAppend(t, l, subj, []byte("room A"), &zero, "")
		before := mustInfo(t, l)

		type result struct {
			seq uint64
			err error
		}
		results := make([]result, writers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range writers {
			wg.Go(func() {
				expect := base
				<-start
				seq, _, err := l.Append(t.Context(), subj, fmt.Appendf(nil, "room %d", i), &expect, "")
				results[i] = result{seq, err}
			})
		}
		close(start)
		wg.Wait()

		winner, conflicts := -1, 0
		for i, r := range results {
			switch {
			case r.err == nil && winner >= 0:
				t.Errorf("writers %d and %d both won (seqs %d, %d)", winner, i, results[winner].seq, r.seq)
			case r.err == nil:
				winner = i
			case checkCode(r.err, cabildo.CodeVersionConflict) == nil:
				conflicts++
			default:
				t.Errorf("writer %d: %v", i, r.err)
			}
		}
		if winner < 0 || conflicts != writers-1 {
			t.Fatalf("winner %d, %d conflicts; want one winner and %d conflicts", winner, conflicts, writers-1)
		}
		after := mustInfo(t, l)
		if after.LastSeq != before.LastSeq+1 || results[winner].seq != after.LastSeq {
			t.Errorf("LastSeq %d -> %d, winner seq %d; want exactly one new entry, the winner's",
				before.LastSeq, after.LastSeq, results[winner].seq)
		}
		got := readEntries(t, l, after.LastSeq-1, 1)
		if want := fmt.Sprintf("room %d", winner); string(got[0].Data) != want {
			t.Errorf("last entry of %s = %q, want the winner's %q", subj, got[0].Data, want)
		}
	})

	t.Run("MsgIDDedupe", func(t *testing.T) {
		l, restart := open(t)
		const subj, id = "ev.question.q1", "E:key-1"
		before := mustInfo(t, l)

		type result struct {
			seq uint64
			dup bool
			err error
		}
		results := make([]result, 10)
		var wg sync.WaitGroup
		for i := range 5 {
			wg.Go(func() {
				seq, dup, err := l.Append(t.Context(), subj, []byte("question"), nil, id)
				results[i] = result{seq, dup, err}
			})
		}
		wg.Wait()
		for i := 5; i < 10; i++ {
			seq, dup, err := l.Append(t.Context(), subj, []byte("question"), nil, id)
			results[i] = result{seq, dup, err}
		}

		firsts := 0
		for i, r := range results {
			if r.err != nil {
				t.Fatalf("append %d: %v", i, r.err)
			}
			if r.seq != results[0].seq {
				t.Errorf("append %d: seq %d, want %d like the others", i, r.seq, results[0].seq)
			}
			if !r.dup {
				firsts++
			}
		}
		if firsts != 1 {
			t.Errorf("%d of 10 appends were not duplicates, want exactly 1", firsts)
		}
		after := mustInfo(t, l)
		if after.LastSeq != before.LastSeq+1 {
			t.Errorf("LastSeq %d -> %d, want one new entry", before.LastSeq, after.LastSeq)
		}

		// JetStream rebuilds its de-duplication window from the stored messages on start.
		restart()
		seq, dup, err := l.Append(t.Context(), subj, []byte("question"), nil, id)
		if err != nil || seq != results[0].seq || !dup {
			t.Errorf("retry after a restart = (%d, %t, %v), want (%d, true, nil)", seq, dup, err, results[0].seq)
		}
	})

	t.Run("RetryWithStaleExpect", func(t *testing.T) {
		// An idempotent retry repeats the request exactly, expect included. Once the first
		// attempt is stored the subject has moved on, so the retry's expect is always stale.
		l, _ := open(t)
		ctx := t.Context()
		const subj = "ev.session.retry"
		zero := uint64(0)
		seq := mustAppend(t, l, subj, []byte("v1"), &zero, "E:create")

		for _, tc := range []struct {
			name  string
			other bool // another writer moved the subject between the attempts
		}{
			{"plain retry", false},
			{"retry after another writer", true},
		} {
			t.Run(tc.name, func(t *testing.T) {
				if tc.other {
					last := seq
					mustAppend(t, l, subj, []byte("v2"), &last, "E:other")
				}
				before := mustInfo(t, l)
				got, dup, err := l.Append(ctx, subj, []byte("v1"), &zero, "E:create")
				if err != nil || got != seq || !dup {
					t.Errorf("retry = (%d, %t, %v), want (%d, true, nil)", got, dup, err, seq)
				}
				if after := mustInfo(t, l); after.LastSeq != before.LastSeq {
					t.Errorf("the retry stored something: LastSeq %d -> %d", before.LastSeq, after.LastSeq)
				}
			})
		}
	})

	// Past the de-duplication window JetStream stores a repeated message id again. Cabildo
	// relies on the projection's idempotency record for such late retries (docs/reliability.md,
	// scenario 5): the schedule service looks the key up there before it appends.
	t.Run("DedupeWindowExpires", func(t *testing.T) {
		l, _ := open(t)
		l = mustOpen(t, l.js.Conn(), Config{Dedupe: time.Second})
		if got := streamConfig(t, l).Duplicates; got != time.Second {
			t.Fatalf("stream Duplicates = %v after Open with Dedupe 1s, want 1s", got)
		}
		const subj, id = "ev.question.late", "E:key-late"
		first := mustAppend(t, l, subj, []byte("question"), nil, id)
		before := mustInfo(t, l)
		var again uint64
		checkFor(t, 10*time.Second, 100*time.Millisecond, func() error {
			seq, dup, err := l.Append(t.Context(), subj, []byte("question"), nil, id)
			switch {
			case err != nil:
				return err
			case dup && seq == first:
				return fmt.Errorf("still de-duplicated to seq %d", seq)
			case dup:
				return fmt.Errorf("duplicate of seq %d, want %d", seq, first)
			}
			again = seq
			return nil
		})
		if after := mustInfo(t, l); again <= first || after.LastSeq != before.LastSeq+1 {
			t.Errorf("after the window: seq %d (first %d), LastSeq %d -> %d; want one new entry",
				again, first, before.LastSeq, after.LastSeq)
		}
	})

	t.Run("Consume", func(t *testing.T) {
		l, _ := open(t)
		base := mustInfo(t, l).LastSeq
		var want []Entry
		for i := range 20 {
			subj := fmt.Sprintf("ev.session.%c", 'a'+i%3)
			data := fmt.Appendf(nil, `{"n":%d}`, i)
			want = append(want, Entry{Seq: mustAppend(t, l, subj, data, nil, ""), Subject: subj, Data: data})
		}
		ignoreTime := cmpopts.IgnoreFields(Entry{}, "Time")

		t.Run("from 0", func(t *testing.T) {
			got := readEntries(t, l, 0, int(base)+len(want))
			for i, e := range got {
				if e.Seq != uint64(i+1) || e.Time.IsZero() {
					t.Fatalf("entry %d: seq %d time %v, want seq %d and a time", i, e.Seq, e.Time, i+1)
				}
			}
			if diff := cmp.Diff(got[base:], want, ignoreTime); diff != "" {
				t.Errorf("entries (-got +want):\n%s", diff)
			}
		})
		t.Run("from the middle", func(t *testing.T) {
			from := want[11].Seq
			got := readEntries(t, l, from, 8)
			if diff := cmp.Diff(got, want[12:], ignoreTime); diff != "" {
				t.Errorf("entries after %d (-got +want):\n%s", from, diff)
			}
		})
		t.Run("fn error stops", func(t *testing.T) {
			stop := errors.New("enough")
			calls := 0
			err := l.Consume(t.Context(), 0, func(Entry) error { calls++; return stop })
			if !errors.Is(err, stop) || calls != 1 {
				t.Errorf("Consume = %v after %d calls, want %v after 1", err, calls, stop)
			}
		})
		t.Run("live and cancel", func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			last := want[len(want)-1].Seq
			entries := make(chan Entry, 100)
			done := make(chan error, 1)
			go func() {
				done <- l.Consume(ctx, last, func(e Entry) error { entries <- e; return nil })
			}()
			var live, got []Entry
			for i := range 10 {
				data := fmt.Appendf(nil, "live %d", i)
				live = append(live, Entry{Seq: mustAppend(t, l, "ev.live", data, nil, ""), Subject: "ev.live", Data: data})
			}
			timeout := time.After(10 * time.Second)
			for len(got) < len(live) {
				select {
				case e := <-entries:
					got = append(got, e)
				case err := <-done:
					t.Fatalf("Consume returned early: %v", err)
				case <-timeout:
					t.Fatalf("got %d of %d live entries within 10s", len(got), len(live))
				}
			}
			if diff := cmp.Diff(got, live, ignoreTime); diff != "" {
				t.Errorf("live entries (-got +want):\n%s", diff)
			}
			start := time.Now()
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Consume after cancel = %v, want context.Canceled", err)
				}
				if d := time.Since(start); d > 2*time.Second {
					t.Errorf("Consume returned %v after cancel, want < 2s", d)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("Consume did not return within 2s of cancel")
			}
			select {
			case e := <-entries:
				t.Errorf("unexpected entry %+v", e)
			default:
			}
		})
	})

	t.Run("SurvivesRestart", func(t *testing.T) {
		l, restart := open(t)
		base := mustInfo(t, l).LastSeq
		var want []Entry
		for i := range 200 {
			subj := fmt.Sprintf("ev.vote.%d", i%7)
			data := bytes.Repeat([]byte{byte('a' + i%26)}, 200)
			want = append(want, Entry{Seq: mustAppend(t, l, subj, data, nil, ""), Subject: subj, Data: data})
		}
		restart()
		got := readEntries(t, l, base, len(want))
		if diff := cmp.Diff(got, want, cmpopts.IgnoreFields(Entry{}, "Time")); diff != "" {
			t.Errorf("entries after the restart (-got +want):\n%s", diff)
		}
		if info := mustInfo(t, l); info.LastSeq != base+200 {
			t.Errorf("LastSeq after the restart = %d, want %d", info.LastSeq, base+200)
		}
	})

	t.Run("PayloadTooLarge", func(t *testing.T) {
		l, _ := open(t)
		before := mustInfo(t, l)
		_, _, err := l.Append(t.Context(), "ev.big", make([]byte, 1<<20+1), nil, "")
		if err := checkCode(err, cabildo.CodePayloadTooLarge); err != nil {
			t.Error(err)
		}
		if after := mustInfo(t, l); after.LastSeq != before.LastSeq {
			t.Errorf("LastSeq %d -> %d, want nothing stored", before.LastSeq, after.LastSeq)
		}
	})

	t.Run("InvalidSubject", func(t *testing.T) {
		l, _ := open(t)
		for _, subj := range []string{"", "ev..x", "ev.x.", ".ev", "ev.*", "ev.>", "ev.a b"} {
			t.Run(fmt.Sprintf("%q", subj), func(t *testing.T) {
				before := mustInfo(t, l)
				ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
				defer cancel()
				seq, _, err := l.Append(ctx, subj, []byte("x"), nil, "")
				switch {
				case err == nil:
					t.Errorf("stored as seq %d, want an error", seq)
				case cabildo.ErrorCode(err) == cabildo.CodeUnavailable:
					t.Errorf("a malformed subject is not an outage to retry: %v", err)
				}
				if after := mustInfo(t, l); after.LastSeq != before.LastSeq {
					t.Errorf("LastSeq %d -> %d, want nothing stored", before.LastSeq, after.LastSeq)
				}
			})
		}
	})

	t.Run("StreamSettings", func(t *testing.T) {
		l, _ := open(t)
		if diff := cmp.Diff(settingsOf(streamConfig(t, l)), streamSettings{
			Subjects:   []string{"cabildo.>"},
			Storage:    jetstream.FileStorage,
			Retention:  jetstream.LimitsPolicy,
			Duplicates: 10 * time.Minute,
			Replicas:   1,
			MaxAge:     0, // the whole event is kept
			MaxMsgs:    -1,
			MaxBytes:   -1,
			DenyDelete: true,
			DenyPurge:  true,
		}); diff != "" {
			t.Errorf("stream settings (-got +want):\n%s", diff)
		}
	})
}

// docs/reliability.md: an acknowledged write on a single node must survive power loss, so the
// embedded server fsyncs every message; this is the configuration test that asserts it.
func TestEmbeddedSyncAlways(t *testing.T) {
	for _, listen := range []string{"", "127.0.0.1:0"} {
		t.Run("listen="+listen, func(t *testing.T) {
			n := startNode(t, t.TempDir(), listen)
			if !n.emb.SyncAlways() {
				t.Error("SyncAlways() = false, want true")
			}
		})
	}
}

func TestIdentity(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir, "")
	l := n.open(Config{})
	mustAppend(t, l, "ev.a", []byte("x"), nil, "")
	first := mustInfo(t, l)

	t.Run("same store dir", func(t *testing.T) {
		n.restart(true)
		if got := mustInfo(t, n.open(Config{})); got != first {
			t.Errorf("Info after reopening the same store dir = %+v, want %+v", got, first)
		}
	})
	t.Run("new store dir", func(t *testing.T) {
		other := startNode(t, t.TempDir(), "")
		got := mustInfo(t, other.open(Config{}))
		if got.Identity == first.Identity {
			t.Errorf("a stream on a new store dir has the same Identity %q", got.Identity)
		}
		if got.LastSeq != 0 {
			t.Errorf("a new store dir has LastSeq %d, want 0", got.LastSeq)
		}
	})
}

// Scenario 4: with the server gone, writes fail fast with a retryable error; when it comes
// back on the same dir and port writes succeed again, and consumers carry on without a gap or
// a duplicate, whether they ran across the outage or started during it.
func TestUnavailable(t *testing.T) {
	n := startListening(t)
	l := mustOpen(t, connectURL(t, n, serveOptions...), Config{})

	across := consume(t, l, 0)
	cancelled := consume(t, l, 0)
	for i := range 10 {
		mustAppend(t, l, "ev.question", fmt.Appendf(nil, "before %d", i), nil, "")
	}
	checkFor(t, 5*time.Second, 20*time.Millisecond, across.has(10))

	n.emb.Shutdown()
	for _, tc := range []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"Append", func(ctx context.Context) error {
			_, _, err := l.Append(ctx, "ev.question", []byte("during the outage"), nil, "")
			return err
		}},
		{"Info", func(ctx context.Context) error { _, err := l.Info(ctx); return err }},
	} {
		t.Run(tc.name+" during the outage", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			start := time.Now()
			err := tc.call(ctx)
			took := time.Since(start)
			t.Logf("%s failed after %v: %v", tc.name, took, err)
			if err := checkCode(err, cabildo.CodeUnavailable); err != nil {
				t.Error(err)
			}
			var ce *cabildo.Error
			if errors.As(err, &ce) && ce.RetryAfter <= 0 {
				t.Errorf("RetryAfter = %v, want > 0", ce.RetryAfter)
			}
			if took > 2*time.Second {
				t.Errorf("failed after %v, want within 2s", took)
			}
		})
	}
	t.Run("Consume cancelled during the outage", func(t *testing.T) {
		if err := cancelled.stop(2 * time.Second); err != nil {
			t.Error(err)
		}
	})
	during := consume(t, l, 0)

	back := time.Now()
	n.start()
	checkFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		_, _, err := l.Append(ctx, "ev.question", []byte("after 0"), nil, "")
		return err
	})
	t.Logf("appends succeed again %v after the server is back", time.Since(back))
	for i := 1; i < 10; i++ {
		mustAppend(t, l, "ev.question", fmt.Appendf(nil, "after %d", i), nil, "")
	}
	last := mustInfo(t, l).LastSeq
	want := make([]uint64, last)
	for i := range want {
		want[i] = uint64(i + 1)
	}
	for _, c := range []struct {
		name string
		c    *consumer
	}{{"running across the outage", across}, {"started during the outage", during}} {
		t.Run("Consume "+c.name, func(t *testing.T) {
			checkFor(t, 15*time.Second, 50*time.Millisecond, c.c.has(int(last)))
			t.Logf("caught up %v after the server is back", time.Since(back))
			if diff := cmp.Diff(c.c.seqs(), want); diff != "" {
				t.Errorf("sequences (-got +want):\n%s", diff)
			}
			if err := c.c.stop(2 * time.Second); err != nil {
				t.Error(err)
			}
		})
	}
	// Even an append made before the client noticed the server was gone stays failed.
	for _, e := range readEntries(t, l, 0, int(last)) {
		if string(e.Data) == "during the outage" {
			t.Errorf("the append that failed during the outage was stored as seq %d", e.Seq)
		}
	}
}

// serveOptions are the options cmd/cabildo connects to an external NATS with.
var serveOptions = []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(250 * time.Millisecond),
	nats.ReconnectBufSize(-1)}

// An append that returned an error because the server was gone must not be stored when the
// server comes back: the caller was told it failed and may do something else instead. With
// nats.go's default reconnect buffer it would be: the publish waits in the buffer and goes
// out on reconnect, which is why cmd/cabildo turns the buffer off.
func TestFailedAppendNotStoredLater(t *testing.T) {
	n := startListening(t)
	nc := connectURL(t, n, serveOptions...)
	l := mustOpen(t, nc, Config{})
	mustAppend(t, l, "ev.question", []byte("before"), nil, "")

	n.emb.Shutdown()
	waitDisconnected(t, nc)
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	_, _, err := l.Append(ctx, "ev.question", []byte("failed"), nil, "")
	cancel()
	if err := checkCode(err, cabildo.CodeUnavailable); err != nil {
		t.Fatal(err)
	}

	n.start()
	checkFor(t, 5*time.Second, 50*time.Millisecond, func() error {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		_, _, err := l.Append(ctx, "ev.question", []byte("after"), nil, "")
		return err
	})
	for _, e := range readEntries(t, l, 0, int(mustInfo(t, l).LastSeq)) {
		if string(e.Data) == "failed" {
			t.Errorf("the append that failed during the outage was stored as seq %d", e.Seq)
		}
	}
}

// Config.AppendTimeout bounds an append whose context has no deadline, so a caller that
// forgot one still hears "unavailable" instead of hanging while NATS is away. The connection
// keeps nats.go's reconnect buffer here, so the publish waits rather than failing at once.
func TestAppendTimeout(t *testing.T) {
	n := startListening(t)
	nc := connectURL(t, n, nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	l := mustOpen(t, nc, Config{AppendTimeout: 500 * time.Millisecond})
	n.emb.Shutdown()
	waitDisconnected(t, nc)
	start := time.Now()
	_, _, err := l.Append(context.Background(), "ev.question", []byte("x"), nil, "")
	took := time.Since(start)
	if err := checkCode(err, cabildo.CodeUnavailable); err != nil {
		t.Error(err)
	}
	if took > 1500*time.Millisecond {
		t.Errorf("append without a deadline failed after %v, want about the 500ms AppendTimeout", took)
	}
}

// Scenario 8: a store dir restored from a copy taken earlier is a log that went backwards.
// As Info documents, Identity stays the same (the copy keeps the stream's creation time); what
// tells it is LastSeq falling below what gateways and clients have seen.
func TestRestoredBackup(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir, "")
	l := n.open(Config{})
	for i := range 5 {
		mustAppend(t, l, "ev.a", fmt.Appendf(nil, "original %d", i), nil, "")
	}
	n.emb.Shutdown()
	backup := filepath.Join(t.TempDir(), "backup")
	if err := os.CopyFS(backup, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	n.start()
	l = n.open(Config{})
	for i := range 10 {
		mustAppend(t, l, "ev.a", fmt.Appendf(nil, "lost %d", i), nil, "")
	}
	before := mustInfo(t, l)

	n.emb.Shutdown()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(dir, os.DirFS(backup)); err != nil {
		t.Fatal(err)
	}
	n.start()
	after := mustInfo(t, n.open(Config{}))
	if diff := cmp.Diff(after, Info{LastSeq: 5, FirstSeq: 1, Identity: before.Identity}); diff != "" {
		t.Errorf("Info after restoring the backup (-got +want):\n%s", diff)
	}
}

// BenchmarkAppend measures individually acknowledged appends of 200-byte records under
// SyncAlways: one fsync each, so it reports the disk's fsync rate more than the code's.
func BenchmarkAppend(b *testing.B) {
	l := startNode(b, b.TempDir(), "").open(Config{})
	data := bytes.Repeat([]byte("x"), 200)
	ctx := b.Context()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, _, err := l.Append(ctx, "bench.session", data, nil, ""); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendParallel(b *testing.B) {
	l := startNode(b, b.TempDir(), "").open(Config{})
	data := bytes.Repeat([]byte("x"), 200)
	ctx := b.Context()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, _, err := l.Append(ctx, "bench.session", data, nil, ""); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// node is an embedded server on a store dir that tests can stop and start again.
type node struct {
	t      testing.TB
	dir    string
	listen string // "" for in-process connections only
	emb    *Embedded
	nc     *nats.Conn
}

func startNode(t testing.TB, dir, listen string) *node {
	t.Helper()
	n := &node{t: t, dir: dir, listen: listen}
	n.start()
	return n
}

func (n *node) start() {
	n.t.Helper()
	emb, err := StartEmbedded(EmbeddedOptions{StoreDir: n.dir, Listen: n.listen})
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(emb.Shutdown)
	nc, err := emb.Connect("test")
	if err != nil {
		n.t.Fatal(err)
	}
	// Cleanups run last-in first-out: the client closes before its server shuts down.
	n.t.Cleanup(nc.Close)
	n.emb, n.nc = emb, nc
}

// restart shuts the server down, after draining its client or without (as if the server
// had gone away under it), and starts it again on the same store dir.
func (n *node) restart(drain bool) {
	n.t.Helper()
	if drain {
		closed := make(chan struct{})
		n.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
		if err := n.nc.Drain(); err != nil {
			n.t.Fatal(err)
		}
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			n.t.Fatal("client not drained within 10s")
		}
	}
	n.emb.Shutdown()
	n.start()
}

// startListening starts a node that listens on a random port and keeps that port across
// restarts, so clients connected by URL see the server go away and come back.
func startListening(t testing.TB) *node {
	t.Helper()
	n := startNode(t, t.TempDir(), "127.0.0.1:0")
	u, err := url.Parse(n.emb.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	n.listen = net.JoinHostPort(u.Hostname(), u.Port())
	return n
}

// waitDisconnected waits until the client has noticed that its server is gone.
func waitDisconnected(t testing.TB, nc *nats.Conn) {
	t.Helper()
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if s := nc.Status(); s == nats.CONNECTED {
			return fmt.Errorf("client still %v", s)
		}
		return nil
	})
}

// connectURL connects to a listening node over TCP, as another process would.
func connectURL(t testing.TB, n *node, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(n.emb.ClientURL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func (n *node) open(cfg Config) *Log {
	n.t.Helper()
	return mustOpen(n.t, n.nc, cfg)
}

func mustOpen(t testing.TB, nc *nats.Conn, cfg Config) *Log {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := Open(ctx, nc, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func mustAppend(t testing.TB, l *Log, subject string, data []byte, expect *uint64, msgID string) uint64 {
	t.Helper()
	seq, dup, err := l.Append(context.Background(), subject, data, expect, msgID)
	if err != nil {
		t.Fatalf("append %s: %v", subject, err)
	}
	if dup {
		t.Fatalf("append %s: unexpected duplicate of seq %d", subject, seq)
	}
	return seq
}

func mustInfo(t testing.TB, l *Log) Info {
	t.Helper()
	info, err := l.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// readEntries consumes exactly n entries after from, failing if they do not come in 10s.
func readEntries(t testing.TB, l *Log, from uint64, n int) []Entry {
	t.Helper()
	var got []Entry
	if n == 0 {
		return got
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	enough := errors.New("enough")
	err := l.Consume(ctx, from, func(e Entry) error {
		got = append(got, e)
		if len(got) == n {
			return enough
		}
		return nil
	})
	if !errors.Is(err, enough) {
		t.Fatalf("consume from %d: got %d of %d entries: %v", from, len(got), n, err)
	}
	return got
}

// consumer runs Consume in the background and records what it delivers.
type consumer struct {
	cancel context.CancelFunc
	done   chan error
	mu     sync.Mutex
	got    []uint64
}

func consume(t testing.TB, l *Log, from uint64) *consumer {
	ctx, cancel := context.WithCancel(context.Background())
	c := &consumer{cancel: cancel, done: make(chan error, 1)}
	go func() {
		c.done <- l.Consume(ctx, from, func(e Entry) error {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.got = append(c.got, e.Seq)
			return nil
		})
	}()
	t.Cleanup(func() { cancel(); <-c.done })
	return c
}

func (c *consumer) seqs() []uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]uint64(nil), c.got...)
}

// has is a checkFor condition: the consumer delivered at least n entries.
func (c *consumer) has(n int) func() error {
	return func() error {
		select {
		case err := <-c.done:
			c.done <- err
			return fmt.Errorf("Consume returned %v", err)
		default:
		}
		if got := len(c.seqs()); got < n {
			return fmt.Errorf("consumer has %d of %d entries", got, n)
		}
		return nil
	}
}

// stop cancels the consumer and checks that Consume returns context.Canceled within max.
func (c *consumer) stop(max time.Duration) error {
	start := time.Now()
	c.cancel()
	select {
	case err := <-c.done:
		c.done <- err
		if !errors.Is(err, context.Canceled) {
			return fmt.Errorf("Consume = %v after cancel, want context.Canceled", err)
		}
		return nil
	case <-time.After(max):
		return fmt.Errorf("Consume did not return within %v of cancel (waited since %v)", max, start.Format(time.StampMilli))
	}
}

// streamSettings are the stream settings the log of record depends on.
type streamSettings struct {
	Subjects   []string
	Storage    jetstream.StorageType
	Retention  jetstream.RetentionPolicy
	Duplicates time.Duration
	Replicas   int
	MaxAge     time.Duration
	MaxMsgs    int64
	MaxBytes   int64
	DenyDelete bool
	DenyPurge  bool
}

func settingsOf(c jetstream.StreamConfig) streamSettings {
	return streamSettings{Subjects: c.Subjects, Storage: c.Storage, Retention: c.Retention,
		Duplicates: c.Duplicates, Replicas: c.Replicas, MaxAge: c.MaxAge, MaxMsgs: c.MaxMsgs,
		MaxBytes: c.MaxBytes, DenyDelete: c.DenyDelete, DenyPurge: c.DenyPurge}
}

// streamConfig reads the stream's configuration as the server has it.
func streamConfig(t testing.TB, l *Log) jetstream.StreamConfig {
	t.Helper()
	ctx := context.Background()
	s, err := l.js.Stream(ctx, "CABILDO")
	if err != nil {
		t.Fatal(err)
	}
	si, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return si.Config
}

// checkCode reports whether err is a *cabildo.Error with the code want.
func checkCode(err error, want cabildo.Code) error {
	var ce *cabildo.Error
	switch {
	case err == nil:
		return fmt.Errorf("no error, want %s", want)
	case !errors.As(err, &ce):
		return fmt.Errorf("error %q (%T) is not a *cabildo.Error, want code %s", err, err, want)
	case cabildo.ErrorCode(err) != want:
		return fmt.Errorf("error code %s (%v), want %s", cabildo.ErrorCode(err), err, want)
	}
	return nil
}

// checkFor polls f until it returns nil, failing with f's last error after totalWait; like
// nats-server's helper of the same name, it replaces sleeping as a way to wait.
func checkFor(t testing.TB, totalWait, sleepDur time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(totalWait)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(sleepDur)
	}
	t.Fatalf("not true within %v: %v", totalWait, err)
}
