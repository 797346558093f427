package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The floor serves exactly the node's bytes for each of the three loads it is compared
// on: plain 200, gzip 200 and 304, over one keep-alive connection.
func TestLoadgenFloorServesTheNodesBytes(t *testing.T) {
	n := startNode(t, "", nil, "--demo")
	src := n.base + "/v1/events/ogp-sanjose-2027/schedule"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f, err := fetchFloor(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go f.serve(ln)

	get := func(base string, hdr map[string]string) (int, http.Header, []byte) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/events/ogp-sanjose-2027/schedule", nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header, body
	}
	floorBase := "http://" + ln.Addr().String()
	_, nh, _ := get(n.base, nil)
	etag := nh.Get("Etag")
	for _, tc := range []struct {
		name string
		hdr  map[string]string
	}{
		{"plain", nil},
		{"gzip", map[string]string{"Accept-Encoding": "gzip"}},
		{"304", map[string]string{"If-None-Match": etag}},
	} {
		ws, wh, wb := get(n.base, tc.hdr)
		gs, gh, gb := get(floorBase, tc.hdr)
		if gs != ws || !bytes.Equal(gb, wb) || gh.Get("Etag") != wh.Get("Etag") || gh.Get("Content-Encoding") != wh.Get("Content-Encoding") {
			t.Errorf("%s: floor %d %q %d bytes, node %d %q %d bytes", tc.name, gs, gh.Get("Etag"), len(gb), ws, wh.Get("Etag"), len(wb))
		}
	}

	// Requests sent back to back on one connection are answered in order.
	c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reqs := "GET / HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + etag + "\r\n\r\n" + "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	if _, err := io.WriteString(c, reqs); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	want := len(f.notModified) + len(f.plain[0]) + len(f.plain[1])
	got := make([]byte, want)
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("two pipelined answers: %v", err)
	}
	if !strings.HasPrefix(string(got), "HTTP/1.1 304") || !strings.Contains(string(got[len(f.notModified):]), "HTTP/1.1 200 OK") {
		t.Errorf("pipelined answers out of order: %.40q…", got)
	}
}
