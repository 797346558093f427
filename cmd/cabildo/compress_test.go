package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/andybalholm/brotli"
)

// rawGet sends a GET exactly as given: a client that does not add Accept-Encoding on its
// own nor decompress behind the caller's back. The answer is checked against the contract,
// which decodes a compressed body before checking it.
func rawGet(t *testing.T, n *node, path string, header map[string]string) response {
	t.Helper()
	hr, err := http.NewRequest("GET", n.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		hr.Header.Set(k, v)
	}
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(hr)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if err := validator(t).Check(hr, resp.StatusCode, resp.Header, body); err != nil {
		t.Errorf("contract: %v", err)
	}
	return response{Status: resp.StatusCode, Header: resp.Header, Body: body}
}

func decompress(t *testing.T, coding string, b []byte) []byte {
	t.Helper()
	var r io.Reader
	switch coding {
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("gzip body: %v", err)
		}
		r = zr
	case "br":
		r = brotli.NewReader(bytes.NewReader(b))
	default:
		t.Fatalf("unexpected coding %q", coding)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("%s body: %v", coding, err)
	}
	return out
}

// TestCompressedReads: venue Wi-Fi and mobile data pay for every
// byte, so a client that sends Accept-Encoding gets the public reads compressed, each
// version compressed once, with validators of its own and a 304 for its copy.
func TestCompressedReads(t *testing.T) {
	t.Parallel()
	n := startNode(t, "", nil, "--demo")
	ev := "/v1/events/" + demoEvent
	path := ev + "/schedule?lang=en"

	plain := rawGet(t, n, path, nil)
	if plain.Status != 200 || plain.Header.Get("Content-Encoding") != "" {
		t.Fatalf("no Accept-Encoding: %d, Content-Encoding %q; want 200 plain", plain.Status, plain.Header.Get("Content-Encoding"))
	}
	tag := plain.Header.Get("ETag")
	if !strings.HasPrefix(tag, `"`) || !strings.HasSuffix(tag, `"`) {
		t.Fatalf("ETag %q is not a strong entity tag", tag)
	}
	for _, r := range []response{plain} {
		if v := r.Header.Get("Vary"); !strings.Contains(v, "Accept-Encoding") || !strings.Contains(v, "Accept-Language") {
			t.Errorf("Vary %q, want Accept-Language and Accept-Encoding", v)
		}
	}

	for _, tc := range []struct {
		accept, coding string
	}{
		{"", ""},
		{"identity", ""},
		{"gzip", "gzip"},
		{"x-gzip", "gzip"},
		{"br", "br"},
		{"gzip, deflate, br, zstd", "br"},
		{"gzip;q=1.0, br;q=0.5", "gzip"},
		{"br;q=0, gzip", "gzip"},
		{"gzip;q=0, br;q=0", ""},
		{"*;q=0.5, gzip;q=0.2", "br"},
		{"*", "br"},
		{"identity;q=0, gzip;q=0, br;q=0", ""}, // nothing acceptable: plain all the same
		{"deflate", ""},
		{"GZIP;Q=0.8", "gzip"},
	} {
		t.Run("accept "+tc.accept, func(t *testing.T) {
			h := map[string]string{}
			if tc.accept != "" {
				h["Accept-Encoding"] = tc.accept
			}
			r := rawGet(t, n, path, h)
			if r.Status != 200 {
				t.Fatalf("status %d", r.Status)
			}
			if got := r.Header.Get("Content-Encoding"); got != tc.coding {
				t.Fatalf("Content-Encoding %q, want %q", got, tc.coding)
			}
			body := r.Body
			wantTag := tag
			if tc.coding != "" {
				body = decompress(t, tc.coding, r.Body)
				if len(r.Body) >= len(plain.Body)/2 {
					t.Errorf("%s body is %d bytes for %d plain: not compressed", tc.coding, len(r.Body), len(plain.Body))
				}
				wantTag = tag[:len(tag)-1] + map[string]string{"gzip": "-gz", "br": "-br"}[tc.coding] + `"`
			}
			if !bytes.Equal(body, plain.Body) {
				t.Fatalf("body decodes to %d bytes that differ from the plain %d", len(body), len(plain.Body))
			}
			if got := r.Header.Get("ETag"); got != wantTag {
				t.Errorf("ETag %q, want %q", got, wantTag)
			}
			if cl := r.Header.Get("Content-Length"); cl != strconv.Itoa(len(r.Body)) {
				t.Errorf("Content-Length %q for a %d-byte body", cl, len(r.Body))
			}
			for _, k := range []string{"Last-Modified", "Cache-Control", "Content-Language"} {
				if r.Header.Get(k) != plain.Header.Get(k) {
					t.Errorf("%s %q, plain answer has %q", k, r.Header.Get(k), plain.Header.Get(k))
				}
			}
			if v := r.Header.Get("Vary"); !strings.Contains(v, "Accept-Encoding") {
				t.Errorf("Vary %q lacks Accept-Encoding", v)
			}
			// Its own ETag answers 304, in the coding it was given.
			h["If-None-Match"] = wantTag
			nm := rawGet(t, n, path, h)
			if nm.Status != 304 || nm.Header.Get("ETag") != wantTag || len(nm.Body) != 0 {
				t.Errorf("If-None-Match %s: %d, ETag %q, %d bytes; want 304 with that ETag", wantTag, nm.Status, nm.Header.Get("ETag"), len(nm.Body))
			}
		})
	}

	gz := rawGet(t, n, path, map[string]string{"Accept-Encoding": "gzip"})
	gzTag := gz.Header.Get("ETag")
	// A client holding the gzip copy that now asks for brotli (or for nothing) still has
	// the current version: 304, naming the copy it holds.
	for _, h := range []map[string]string{
		{"Accept-Encoding": "br", "If-None-Match": gzTag},
		{"If-None-Match": gzTag},
		{"Accept-Encoding": "gzip", "If-None-Match": "W/" + gzTag},
		{"Accept-Encoding": "gzip", "If-None-Match": `"1-es", ` + gzTag},
	} {
		r := rawGet(t, n, path, h)
		if r.Status != 304 || r.Header.Get("ETag") != gzTag {
			t.Errorf("%v: %d, ETag %q; want 304 with %s", h, r.Status, r.Header.Get("ETag"), gzTag)
		}
	}
	if r := rawGet(t, n, path, map[string]string{"Accept-Encoding": "gzip", "If-Modified-Since": gz.Header.Get("Last-Modified")}); r.Status != 304 {
		t.Errorf("If-Modified-Since its Last-Modified: %d, want 304", r.Status)
	}
	if r := rawGet(t, n, path, map[string]string{"Accept-Encoding": "gzip", "If-None-Match": `"1-en-gz"`}); r.Status != 200 {
		t.Errorf("If-None-Match of another version: %d, want 200", r.Status)
	}

	// Every public read that can be large goes the same way; small ones stay plain.
	for _, p := range []string{ev + "/sessions?lang=es", ev + "/changes?since=0", ev + "/speakers", ev + "/schedule?lang=es"} {
		r := rawGet(t, n, p, map[string]string{"Accept-Encoding": "gzip"})
		if r.Status != 200 || r.Header.Get("Content-Encoding") != "gzip" {
			t.Errorf("GET %s with gzip: %d, Content-Encoding %q; want gzip", p, r.Status, r.Header.Get("Content-Encoding"))
		}
	}
	one := rawGet(t, n, ev+"/rooms/sala-1", map[string]string{"Accept-Encoding": "gzip"})
	if one.Status != 200 || one.Header.Get("Content-Encoding") != "" || len(one.Body) >= 1024 {
		t.Errorf("one room (%d bytes) with gzip: %d, Content-Encoding %q; want a plain body under 1 KiB", len(one.Body), one.Status, one.Header.Get("Content-Encoding"))
	}

	// Reads of a schedule already rendered are answered before routing, the same way.
	f0 := metricValue(t, n, "cabildo_http_schedule_fast_reads_total")
	again := rawGet(t, n, path, map[string]string{"Accept-Encoding": "gzip"})
	if f := metricValue(t, n, "cabildo_http_schedule_fast_reads_total") - f0; f != 1 {
		t.Errorf("a read of the schedule already rendered: %v answered before routing, want 1", f)
	}
	if !bytes.Equal(again.Body, gz.Body) || again.Header.Get("ETag") != gzTag {
		t.Errorf("the schedule read before routing differs from the one through it")
	}

	// Rendered once per version and language, compressed once per coding.
	renders := func() float64 { return metricValue(t, n, "cabildo_http_rendered_bodies_total") }
	packs := func() float64 { return metricValue(t, n, "cabildo_http_compressed_bodies_total") }
	list := ev + "/sessions?lang=en&status=scheduled"
	r0, p0 := renders(), packs()
	for range 3 {
		rawGet(t, n, list, map[string]string{"Accept-Encoding": "gzip"})
		rawGet(t, n, list, nil)
	}
	if r, p := renders()-r0, packs()-p0; r != 1 || p != 1 {
		t.Errorf("six reads of one version: rendered %v times, compressed %v; want 1 and 1", r, p)
	}

	// A write makes the next read show the new version, rendered and compressed anew.
	sch := getSchedule(t, n)
	s := pickSession(t, sch, "breakout")
	to := freeRoomFor(t, sch, s)
	if w := n.do(t, req{method: "PATCH", path: fmt.Sprintf("%s/sessions/%d", ev, s.ID),
		body: map[string]any{"room": to}, header: auth(n.token("organizer"))}); w.Status != 200 {
		t.Fatalf("move: %d %s", w.Status, w.Body)
	}
	r1, p1 := renders(), packs()
	after := rawGet(t, n, path, map[string]string{"Accept-Encoding": "gzip", "If-None-Match": gzTag})
	if after.Status != 200 || after.Header.Get("ETag") == gzTag {
		t.Fatalf("after a write: %d, ETag %q; want 200 with a new ETag", after.Status, after.Header.Get("ETag"))
	}
	var moved scheduleBody
	if err := json.Unmarshal(decompress(t, "gzip", after.Body), &moved); err != nil {
		t.Fatal(err)
	}
	if moved.Version <= sch.Version {
		t.Errorf("after a write the schedule is at version %d, was %d", moved.Version, sch.Version)
	}
	found := false
	for _, ss := range moved.Sessions {
		if ss.ID == s.ID {
			found = ss.Room == to
		}
	}
	if !found {
		t.Errorf("the compressed schedule after the write does not show session %d in %s", s.ID, to)
	}
	if r, p := renders()-r1, packs()-p1; r != 1 || p != 1 {
		t.Errorf("first read of the new version: rendered %v times, compressed %v; want 1 and 1", r, p)
	}
}
