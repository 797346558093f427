package main

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// TestOwnOriginAndLoggedRefusals: a client that names the
// server it dials as its Origin (python's websocket-client does; so does a page the server
// served) got a bare 403 from a default node, and nothing in the log said why. The server's
// own origin now passes with no --allowed-origins; another site's origin still gets 403
// before the upgrade (CSWSH), and each refusal is logged with its reason.
func TestOwnOriginAndLoggedRefusals(t *testing.T) {
	t.Parallel()
	n := startNode(t, "", nil, "--demo")
	url := wsURL(n)
	host := strings.TrimPrefix(n.base, "http://")
	port := host[strings.LastIndexByte(host, ':'):]
	tests := []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{n.base, true},
		{"https://" + host, true},
		{"http://" + strings.ToUpper(host), true},
		{"https://evil.example", false},
		{"http://evil.example" + port, false},
		{"http://localhost:1", false},
		{"null", false},
		{"file://" + host, false},
	}
	for _, tc := range tests {
		t.Run(tc.origin, func(t *testing.T) {
			h := http.Header{}
			if tc.origin != "" {
				h.Set("Origin", tc.origin)
			}
			c, resp, err := websocket.DefaultDialer.Dial(url, h)
			if tc.ok {
				if err != nil {
					t.Fatalf("Origin %q refused: %v (%v)", tc.origin, err, resp)
				}
				c.Close()
				return
			}
			if err == nil {
				c.Close()
				t.Fatalf("Origin %q was let in", tc.origin)
			}
			if resp == nil || resp.StatusCode != 403 {
				t.Fatalf("Origin %q: %v, want 403", tc.origin, resp)
			}
			r := response{Status: resp.StatusCode, Header: resp.Header, Body: []byte(readAll(t, resp))}
			if code := r.problemCode(t); code != "forbidden" {
				t.Fatalf("Origin %q: code %q, want forbidden", tc.origin, code)
			}
		})
	}
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		logs := n.stderr.String()
		if !strings.Contains(logs, "websocket refused: origin not allowed") || !strings.Contains(logs, "evil.example") {
			return fmt.Errorf("the refusals are not in the log:\n%s", logs)
		}
		return nil
	})
	// A plain GET is refused too, and logged.
	// (asyncapi.yaml, not openapi.yaml, documents /v1/ws, so no REST contract check here.)
	resp, err := http.Get(n.base + "/v1/ws")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("GET /v1/ws without upgrade: %d", resp.StatusCode)
	}
	checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
		if !strings.Contains(n.stderr.String(), "websocket refused: not a websocket upgrade") {
			return fmt.Errorf("a request without upgrade is not in the log")
		}
		return nil
	})
}
