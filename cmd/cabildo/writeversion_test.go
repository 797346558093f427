package main

import (
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/cabildo/cabildo/pkg/api"
)

// TestWriteAnswersNameTheirWrite: two concurrent PATCHes of one
// session were both answered with version 2210 while the log held them at 2208 and 2210,
// so a client could not find its own write. Now every write's answer carries
// Cabildo-Write-Version, its own log position: here 12 concurrent PATCHes, each with its
// own reason text, get 12 distinct positions, and at each one /changes holds exactly the
// change that request asked for. The body's version is the state shown: never before the
// write, and after it when other writes landed in between.
func TestWriteAnswersNameTheirWrite(t *testing.T) {
	t.Parallel()
	n := startNode(t, "", nil, "--demo")
	sch := getSchedule(t, n)
	s := pickSession(t, sch, "breakout")
	tok := n.token("organizer")
	path := fmt.Sprintf("/v1/events/%s/sessions/%d", demoEvent, s.ID)
	const writers = 12
	type answer struct {
		write, body uint64
		label       string
	}
	answers := make([]answer, writers)
	var wg sync.WaitGroup
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			label := fmt.Sprintf("write-%02d", i)
			var (
				r   response
				err error
			)
			// Without If-Match a write that races another on the same session is refused
			// with 409 and retried, as a client would.
			for range 50 {
				r, err = tryDo(n, "PATCH", path, tok, map[string]any{
					"title":  map[string]any{"en": "Title " + label},
					"reason": map[string]any{"code": "other", "text": map[string]any{"en": label}}})
				if err != nil || r.Status != 409 {
					break
				}
			}
			if err != nil || r.Status != 200 {
				t.Errorf("%s: %v %d %s", label, err, r.Status, r.Body)
				return
			}
			w, err := strconv.ParseUint(r.Header.Get("Cabildo-Write-Version"), 10, 64)
			if err != nil {
				t.Errorf("%s: Cabildo-Write-Version %q: %v", label, r.Header.Get("Cabildo-Write-Version"), err)
				return
			}
			var body struct{ Version uint64 }
			r.json(t, &body)
			answers[i] = answer{write: w, body: body.Version, label: label}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	r := n.do(t, req{method: "GET", path: fmt.Sprintf("/v1/events/%s/changes?since=%d&lang=en", demoEvent, sch.Version)})
	var changes api.ChangeList
	r.json(t, &changes)
	byVersion := map[uint64]api.Change{}
	for _, ch := range changes.Changes {
		byVersion[ch.Version] = ch
	}
	seen := map[uint64]string{}
	later := 0
	for _, a := range answers {
		if other, dup := seen[a.write]; dup {
			t.Errorf("%s and %s were both answered with write version %d", a.label, other, a.write)
		}
		seen[a.write] = a.label
		ch, ok := byVersion[a.write]
		if !ok || ch.Reason == nil || ch.Reason.Text != a.label || ch.Session == nil || ch.Session.ID != s.ID {
			t.Errorf("%s: the change at its write version %d is %+v, not its own", a.label, a.write, ch)
		}
		if a.body < a.write {
			t.Errorf("%s: the body shows version %d, before its own write %d", a.label, a.body, a.write)
		}
		if a.body > a.write {
			later++
		}
	}
	if len(byVersion) != writers {
		t.Errorf("%d changes since %d, want %d", len(byVersion), sch.Version, writers)
	}
	t.Logf("%d of %d answers showed a state later than their own write", later, writers)
}
