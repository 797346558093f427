package projection_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/projection"
)

// TestIdempotencyPruning checks which keys are forgotten and when: at every 1,024th entry,
// every key whose write is older than the retention by log time, whatever kind of write
// remembered it; a key remembered again is judged by its latest write; and a store restored
// from a snapshot forgets exactly what the store that applied everything forgets.
func TestIdempotencyPruning(t *testing.T) {
	const ttl = 500 * time.Second // entries are a second apart: seq n is at t0 + n s
	l := &log{t: t}
	l.add(eventPut(ev))
	l.add(roomPut(ev, "sala-1"))
	sess := session(t, 1, "sala-1", 9)
	created := l.add(sessionRec(cabildo.RecordSessionCreated, sess))
	yes, no := true, false
	l.add(cabildo.Record{Type: cabildo.RecordQAConfigured, Event: ev,
		QASettings: &cabildo.QASettings{Session: int64(created), Open: &yes, Moderated: &no}})
	keyed := func(key string) cabildo.Record {
		r := roomPut(ev, "sala-1")
		r.IdempotencyKey, r.RequestHash = key, "h-"+key
		return r
	}
	ask := func(keys ...string) cabildo.Record {
		r := cabildo.Record{Type: cabildo.RecordQuestionsAsked, Event: ev}
		for _, k := range keys {
			r.Asked = append(r.Asked, cabildo.Asked{IdempotencyKey: k, RequestHash: "h-" + k,
				Question: cabildo.Question{Session: int64(created), Text: "¿Qué datos se publican?", Lang: cabildo.ES, Attendee: "a-" + k}})
		}
		return r
	}
	// What each key's write is: seq -> record. Everything else is filler.
	writes := map[uint64]cabildo.Record{
		10:   keyed("old"),           // forgotten at 1024 (cutoff t0+524 s)
		20:   ask("q-old", "q-old2"), // questions' keys are forgotten too
		30:   keyed("again"),         // remembered again at 700: kept at 1024
		600:  keyed("recent"),        // kept at 1024, forgotten at 2048
		700:  keyed("again"),
		1600: ask("q-late"),
	}
	for seq := uint64(len(l.entries) + 1); seq <= 2100; seq++ {
		if rec, ok := writes[seq]; ok {
			l.add(rec)
			continue
		}
		l.add(roomPut(ev, fmt.Sprintf("sala-%d", 2+seq%5)))
	}
	type want struct {
		key string
		seq uint64 // 0: forgotten
	}
	check := func(t *testing.T, s *projection.Store, wants []want) {
		t.Helper()
		for _, w := range wants {
			r, ok := s.Idempotent(ev, w.key)
			if w.seq == 0 && ok {
				t.Errorf("at seq %d key %q is still remembered (from seq %d)", s.Seq(), w.key, r.Seq)
			}
			if w.seq != 0 && (!ok || r.Seq != w.seq) {
				t.Errorf("at seq %d key %q = %+v, %t; want the write at seq %d", s.Seq(), w.key, r, ok, w.seq)
			}
		}
	}
	at1023 := []want{{"old", 10}, {"q-old", 20}, {"q-old2", 20}, {"again", 700}, {"recent", 600}}
	at1024 := []want{{"old", 0}, {"q-old", 0}, {"q-old2", 0}, {"again", 700}, {"recent", 600}}
	at2100 := []want{{"old", 0}, {"q-old", 0}, {"again", 0}, {"recent", 0}, {"q-late", 1600}}

	full := projection.New(projection.Options{IdempotencyTTL: ttl})
	applyAll(full, l.entries[:1023])
	check(t, full, at1023)
	applyAll(full, l.entries[1023:1024])
	check(t, full, at1024)
	applyAll(full, l.entries[1024:])
	check(t, full, at2100)

	// Restored from snapshots taken before and after the first pruning, then fed the rest.
	for _, cut := range []int{900, 1500} {
		t.Run(fmt.Sprintf("restored at %d", cut), func(t *testing.T) {
			a := projection.New(projection.Options{IdempotencyTTL: ttl})
			applyAll(a, l.entries[:cut])
			_, data, err := a.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			b := projection.New(projection.Options{IdempotencyTTL: ttl})
			if _, err := b.Restore(data); err != nil {
				t.Fatal(err)
			}
			if cut < 1024 {
				applyAll(b, l.entries[cut:1024])
				check(t, b, at1024)
			}
			applyAll(b, l.entries[max(cut, 1024):])
			check(t, b, at2100)
			compareStores(t, b, full)
		})
	}
}

// TestFeederEqualsApply: entries decoded on one goroutine and applied on the feeder's end in
// the same state as entries applied one by one, announced in the same order, including a
// replay that overlaps what was already applied (a consumer restarting).
func TestFeederEqualsApply(t *testing.T) {
	g := newGen(t, 77)
	g.run(400)
	es := g.log.entries
	var direct, fed []uint64
	want := projection.New(projection.Options{MaxChanges: 60, OnApply: func(a projection.Applied) { direct = append(direct, a.Seq) }})
	applyAll(want, es)
	got := projection.New(projection.Options{MaxChanges: 60, OnApply: func(a projection.Applied) { fed = append(fed, a.Seq) }})
	f := got.Feeder(16)
	half := len(es) / 2
	for _, e := range es[:half] {
		f.Add(e.seq, e.subject, e.at, e.data)
	}
	for _, e := range es[half-20:] {
		f.Add(e.seq, e.subject, e.at, e.data)
	}
	f.Close()
	f.Close() // a second Close is harmless
	compareStores(t, got, want)
	if !slices.Equal(fed, direct) {
		t.Errorf("OnApply through the feeder: %d calls, directly %d; first difference at %d",
			len(fed), len(direct), firstDiff(fed, direct))
	}
}

func firstDiff(a, b []uint64) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestRestoreChecksFormatFirst: a snapshot of another format is refused by its format,
// before anything in it is decoded, and leaves the store empty, so the node rebuilds from
// the log instead of misreading it.
func TestRestoreChecksFormatFirst(t *testing.T) {
	for _, data := range []string{
		`{"format":1,"seq":9,"events":{"ogp":{"changes":"in a layout this version does not know"}}}`,
		`{"format":3,"seq":9,"events":{"ogp":{"sessions":[1,2,3]}},"subjects":{"x":9}}`,
		`{"seq":9,"events":{}}`,
	} {
		s := projection.New(projection.Options{})
		_, err := s.Restore([]byte(data))
		if err == nil || !strings.Contains(err.Error(), "snapshot format") {
			t.Errorf("Restore(%s) = %v; want it refused for its format", data, err)
		}
		if s.Seq() != 0 || s.SubjectSeq("x") != 0 {
			t.Errorf("a refused snapshot left seq %d", s.Seq())
		}
	}
}
