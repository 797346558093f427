package main

import (
	"fmt"
	"slices"
	"testing"

	"github.com/cabildo/cabildo/pkg/api"
)

// TestAnnouncementPages: GET /announcements
// answered every announcement ever posted (12.6 MB after 6,000). It now answers a page:
// the latest 50 by default, pages forward with since and backward with before, linked by
// next and prev, which together walk every announcement exactly once, in order.
func TestAnnouncementPages(t *testing.T) {
	t.Parallel()
	n := startNode(t, "", nil, "--demo")
	tok := n.token("organizer")
	ev := "/v1/events/" + demoEvent + "/announcements"
	const posted = 230
	for i := range posted {
		r := n.do(t, req{method: "POST", path: ev, header: auth(tok),
			body: map[string]any{"title": map[string]any{"es": fmt.Sprintf("Aviso %d", i)}}})
		if r.Status != 201 {
			t.Fatalf("post %d: %d %s", i, r.Status, r.Body)
		}
	}
	page := func(path string) api.AnnouncementList {
		t.Helper()
		r := n.do(t, req{method: "GET", path: path})
		if r.Status != 200 {
			t.Fatalf("GET %s: %d %s", path, r.Status, r.Body)
		}
		var l api.AnnouncementList
		r.json(t, &l)
		return l
	}
	ids := func(l api.AnnouncementList) []int64 {
		var out []int64
		for _, a := range l.Announcements {
			out = append(out, a.ID)
		}
		return out
	}

	// Backwards from the latest page: every announcement once, each page ascending.
	latest := page(ev + "?lang=en")
	if len(latest.Announcements) != 50 || latest.Next != "" || latest.Prev == "" {
		t.Fatalf("latest page: %d announcements, next %q, prev %q; want 50, none, a link", len(latest.Announcements), latest.Next, latest.Prev)
	}
	var back []int64
	for l := latest; ; l = page(l.Prev) {
		if !slices.IsSorted(ids(l)) || len(l.Announcements) > 50 {
			t.Fatalf("page %v: not ascending or over the limit", ids(l))
		}
		back = append(ids(l), back...)
		if l.Prev == "" {
			break
		}
	}
	total := len(back)
	if total < posted || !slices.IsSorted(back) || len(slices.Compact(slices.Clone(back))) != total {
		t.Fatalf("walking back: %d announcements (posted %d), sorted %v", total, posted, slices.IsSorted(back))
	}
	// Forwards from the start, 200 a page: the same announcements.
	var fwd []int64
	for l := page(ev + "?since=0&limit=200"); ; l = page(l.Next) {
		fwd = append(fwd, ids(l)...)
		if l.Next == "" {
			break
		}
	}
	if !slices.Equal(fwd, back) {
		t.Fatalf("forward walk %d announcements, backward %d: they differ", len(fwd), len(back))
	}
	// Catching up from the tenth-last: exactly the nine after it.
	if got := ids(page(fmt.Sprintf("%s?since=%d", ev, back[total-10]))); !slices.Equal(got, back[total-9:]) {
		t.Fatalf("since the tenth-last: %v, want %v", got, back[total-9:])
	}
	for _, bad := range []string{"?limit=0", "?limit=201", "?limit=x", "?since=-1", "?since=01", "?before=0",
		fmt.Sprintf("?since=1&before=%d", back[5])} {
		r := n.do(t, req{method: "GET", path: ev + bad})
		if r.Status != 400 || r.problemCode(t) != "invalid_request" {
			t.Errorf("GET %s: %d %s, want 400 invalid_request", bad, r.Status, truncate(r.Body))
		}
	}
}
