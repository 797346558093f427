package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cabildo/cabildo/internal/contract"
)

// This file starts whole Cabildo nodes in-process through run, exactly as main does, and
// talks to them over loopback HTTP. Every response is checked against the OpenAPI contract.

var (
	contractOnce sync.Once
	contractV    *contract.Validator
	contractErr  error
)

func validator(t testing.TB) *contract.Validator {
	t.Helper()
	contractOnce.Do(func() { contractV, contractErr = contract.Load() })
	if contractErr != nil {
		t.Fatalf("load contract: %v", contractErr)
	}
	return contractV
}

// syncBuffer is a bytes.Buffer safe for a writer and a poller.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// checkFor polls f until it returns nil or the deadline passes.
func checkFor(t testing.TB, total, every time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(every)
	}
	t.Fatalf("condition not met within %v: %v", total, err)
}

type node struct {
	t       testing.TB
	dataDir string
	env     map[string]string
	base    string
	cancel  context.CancelFunc
	done    chan error
	stdout  *syncBuffer
	stderr  *syncBuffer
}

var listenRE = regexp.MustCompile(`cabildo listening on (http://\S+)`)

// startNode runs `cabildo serve` on a random loopback port with its own data directory
// (or the one given in the environment map under "dir").
func startNode(t testing.TB, dataDir string, env map[string]string, extra ...string) *node {
	t.Helper()
	if dataDir == "" {
		dataDir = t.TempDir()
	}
	n := &node{t: t, dataDir: dataDir, env: env, done: make(chan error, 1), stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel = cancel
	args := append([]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dataDir, "--log-level", "debug"}, extra...)
	go func() { n.done <- run(ctx, args, n.getenv, n.stdout, n.stderr) }()
	checkFor(t, 60*time.Second, 20*time.Millisecond, func() error {
		select {
		case err := <-n.done:
			t.Fatalf("node exited early: %v\nstderr:\n%s", err, n.stderr.String())
		default:
		}
		m := listenRE.FindStringSubmatch(n.stdout.String())
		if m == nil {
			return fmt.Errorf("not listening yet")
		}
		n.base = m[1]
		return nil
	})
	t.Cleanup(func() { n.stop() })
	return n
}

func (n *node) getenv(k string) string { return n.env[k] }

// stop shuts the node down and waits for run to return.
func (n *node) stop() {
	if n.cancel == nil {
		return
	}
	n.cancel()
	n.cancel = nil
	select {
	case err := <-n.done:
		if err != nil {
			n.t.Errorf("node stopped with error: %v", err)
		}
	case <-time.After(30 * time.Second):
		n.t.Errorf("node did not stop within 30s")
	}
	n.checkLogs()
}

// checkLogs enforces that no token (every JWT starts "eyJ") and no signing key ever
// reaches the logs, at debug level included.
func (n *node) checkLogs() {
	logs := n.stderr.String()
	secrets := []string{"eyJ"}
	if key, err := os.ReadFile(filepath.Join(n.dataDir, "signing.key")); err == nil {
		secrets = append(secrets, strings.TrimSpace(string(key)))
	}
	for _, bad := range secrets {
		if strings.Contains(logs, bad) {
			n.t.Errorf("node logs contain a secret (%.6s…)", bad)
		}
	}
}

// token mints a token with the CLI against the node's data directory.
func (n *node) token(role string) string {
	n.t.Helper()
	return mint(n.t, n.dataDir, demoEvent, role)
}

func mint(t testing.TB, dataDir, event, role string) string {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"token", "create", "--event", event, "--role", role, "--data-dir", dataDir},
		func(string) string { return "" }, &out, &errb)
	if err != nil {
		t.Fatalf("token create: %v: %s", err, errb.String())
	}
	return strings.TrimSpace(out.String())
}

const demoEvent = "ogp-sanjose-2027"

type response struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r response) json(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %d body %q: %v", r.Status, r.Body, err)
	}
}

// problemCode returns the code of a problem+json body.
func (r response) problemCode(t testing.TB) string {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("status %d: content type %q, want application/problem+json; body %s", r.Status, ct, r.Body)
	}
	var p struct {
		Code string `json:"code"`
	}
	r.json(t, &p)
	return p.Code
}

type req struct {
	method, path string
	body         any // string or []byte sent raw; anything else as JSON
	header       map[string]string
}

// do sends one request and validates the response against the contract.
func (n *node) do(t testing.TB, r req) response {
	t.Helper()
	var body io.Reader
	var raw []byte
	switch b := r.body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			t.Fatal(err)
		}
	}
	if raw != nil {
		body = bytes.NewReader(raw)
	}
	hr, err := http.NewRequest(r.method, n.base+r.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if raw != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	for k, v := range r.header {
		if v == "" {
			hr.Header.Del(k)
		} else {
			hr.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := response{Status: resp.StatusCode, Header: resp.Header, Body: got}
	if resp.StatusCode >= 500 && resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("%s %s: status %d: %s", r.method, r.path, resp.StatusCode, got)
	}
	if bytes.Contains(got, []byte(".go:")) || bytes.Contains(got, []byte("goroutine ")) {
		t.Errorf("%s %s: body leaks internals: %s", r.method, r.path, got)
	}
	if err := validator(t).Check(hr, resp.StatusCode, resp.Header, got); err != nil {
		t.Errorf("contract: %v\nbody: %s", err, truncate(got))
	}
	return out
}

func truncate(b []byte) string {
	if len(b) > 600 {
		return string(b[:600]) + "…"
	}
	return string(b)
}

func auth(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}
