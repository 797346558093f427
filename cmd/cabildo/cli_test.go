package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/google/go-cmp/cmp"

	"github.com/cabildo/cabildo/internal/config"
	"github.com/cabildo/cabildo/internal/token"
)

// The command line as a user meets it: what main would print and its exit status, got by
// calling run and exitCode exactly as main does.

type cliResult struct {
	code           int
	stdout, stderr string
}

func cabildoCLI(t *testing.T, args ...string) cliResult {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, func(string) string { return "" }, &out, &errb)
	code := exitCode(err, &errb)
	return cliResult{code, out.String(), errb.String()}
}

// TestCLIHelp: every way of asking for help prints it on stdout and exits 0, as `go help`
// and kubectl do, so `cabildo serve --help | less` works.
func TestCLIHelp(t *testing.T) {
	tests := []struct {
		args []string
		want []string // in stdout
	}{
		{[]string{"--help"}, []string{"usage: cabildo", "serve", "token create", "version", "rest, ws, townhall, peer), a cold start (coldstart) or the floor for reads (floor)"}},
		{[]string{"-h"}, []string{"usage: cabildo"}},
		{[]string{"help"}, []string{"usage: cabildo"}},
		{[]string{"help", "serve"}, []string{"usage: cabildo serve", "--addr"}},
		{[]string{"serve", "--help"}, []string{"usage: cabildo serve", "--addr", "--log-format", "--shutdown-grace", "(default 127.0.0.1:8080)"}},
		{[]string{"serve", "-h"}, []string{"usage: cabildo serve"}},
		{[]string{"token", "--help"}, []string{"usage: cabildo token create", "--event", "--subject", "--ttl", "--signing-key"}},
		{[]string{"token", "create", "--help"}, []string{"usage: cabildo token create", "--subject", "(default 72h0m0s)"}},
		{[]string{"loadgen", "--help"}, []string{"usage: cabildo loadgen", "rest", "ws", "townhall", "peer", "coldstart", "floor"}},
		{[]string{"loadgen", "rest", "--help"}, []string{"--url", "--concurrency"}},
		{[]string{"loadgen", "ws", "--help"}, []string{"clients"}},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			got := cabildoCLI(t, tc.args...)
			if got.code != 0 || got.stderr != "" {
				t.Fatalf("exit %d, stderr %q; want 0 and nothing on stderr", got.code, got.stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(got.stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, got.stdout)
				}
			}
		})
	}
}

// TestCLIUsageErrors: a mistake on the command line is one line on stderr, naming the flag
// and what it wants, and exit status 2; nothing on stdout.
func TestCLIUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string // the whole of stderr
	}{
		{[]string{"serve", "--foo"}, "cabildo serve: unknown flag --foo (see 'cabildo serve --help')\n"},
		{[]string{"serve", "--addr"}, "cabildo serve: --addr needs a value (see 'cabildo serve --help')\n"},
		{[]string{"serve", "stray"}, "cabildo serve: unexpected argument \"stray\" (see 'cabildo serve --help')\n"},
		{[]string{"serve", "--ws-ping", "0"}, "cabildo serve: --ws-ping must be > 0\n"},
		{[]string{"serve", "--ws-ping", "40s"}, "cabildo serve: --ws-idle-timeout must be longer than --ws-ping\n"},
		{[]string{"serve", "--shutdown-grace", "10"}, "cabildo serve: --shutdown-grace: \"10\" is not a duration; use a unit, such as 72h or 30m\n"},
		{[]string{"serve", "--demo=maybe"}, "cabildo serve: --demo: \"maybe\" is not true or false\n"},
		{[]string{"token", "create", "--event", "e1", "--ttl", "5"}, "cabildo token create: --ttl: \"5\" is not a duration; use a unit, such as 72h or 30m\n"},
		{[]string{"token", "create", "--ttl", "1h"}, "cabildo token create: --event is required\n"},
		{[]string{"token", "create", "--event", "e1", "--role", "admin"}, "cabildo token create: --role must be organizer or moderator\n"},
		{[]string{"token", "create", "--event", "e1", "--frob"}, "cabildo token create: unknown flag --frob (see 'cabildo token create --help')\n"},
		{[]string{"token"}, "cabildo token: missing command: cabildo token create (see 'cabildo token --help')\n"},
		{[]string{"token", "list"}, "cabildo token: unknown command \"list\": only create (see 'cabildo token --help')\n"},
		{[]string{"loadgen", "http"}, "cabildo loadgen: unknown mode \"http\": rest, ws, townhall, peer, coldstart or floor (see 'cabildo loadgen --help')\n"},
		{[]string{"loadgen", "rest", "--url"}, "cabildo loadgen rest: --url needs a value (see 'cabildo loadgen rest --help')\n"},
		{[]string{"loadgen", "ws", "--bogus"}, "cabildo loadgen ws: unknown flag --bogus (see 'cabildo loadgen ws --help')\n"},
		{[]string{"loadgen", "townhall", "--duration", "5"}, "cabildo loadgen townhall: --duration: \"5\" is not a duration; use a unit, such as 72h or 30m\n"},
		{[]string{"loadgen", "peer", "--clients", "many"}, "cabildo loadgen peer: --clients: \"many\" is not a whole number\n"},
		{[]string{"frobnicate"}, "cabildo: unknown command \"frobnicate\" (see 'cabildo --help')\n"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			got := cabildoCLI(t, tc.args...)
			if diff := cmp.Diff(cliResult{2, "", tc.want}, got, cmp.AllowUnexported(cliResult{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestCLINoCommand: bare `cabildo` shows what there is, on stderr, and exits 2, as `go` does.
func TestCLINoCommand(t *testing.T) {
	got := cabildoCLI(t)
	if got.code != 2 || got.stdout != "" || !strings.Contains(got.stderr, "usage: cabildo <command>") {
		t.Fatalf("got %+v", got)
	}
}

func TestCLIVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		got := cabildoCLI(t, arg)
		if got.code != 0 || got.stderr != "" || !strings.HasPrefix(got.stdout, "cabildo ") ||
			!strings.Contains(got.stdout, runtime.Version()) || strings.Count(got.stdout, "\n") != 1 {
			t.Errorf("cabildo %s: %+v; want one line on stdout naming the version and %s", arg, got, runtime.Version())
		}
	}
}

// TestTokenCreateNeedsTheServersKey: token create never makes up a signing key (a token
// signed with it would be refused by every server); it says how to get the right one.
func TestTokenCreateNeedsTheServersKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	got := cabildoCLI(t, "token", "create", "--event", demoEvent, "--data-dir", dir)
	want := "cabildo: no signing key at " + filepath.Join(dir, "signing.key") + ": start 'cabildo serve --data-dir " + dir +
		"' once (it creates the key), or pass the cluster's key with --signing-key or --signing-key-file\n"
	if diff := cmp.Diff(cliResult{1, "", want}, got, cmp.AllowUnexported(cliResult{})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := os.Stat(filepath.Join(dir, "signing.key")); !os.IsNotExist(err) {
		t.Errorf("token create left a key file behind (stat: %v)", err)
	}
	file := filepath.Join(t.TempDir(), "cluster.key")
	got = cabildoCLI(t, "token", "create", "--event", demoEvent, "--signing-key-file", file)
	if got.code != 1 || !strings.Contains(got.stderr, "start 'cabildo serve --signing-key-file "+file+"' once") {
		t.Errorf("missing --signing-key-file: %+v", got)
	}
}

// TestTokenCreateOutput: the token alone on stdout (TOKEN=$(…) works), and on stderr what
// it is for; an organizer is told that the token can create the event.
func TestTokenCreateOutput(t *testing.T) {
	key := hex.EncodeToString(bytes.Repeat([]byte{7}, 32))
	tokenRE := regexp.MustCompile(`^[\w-]+\.[\w-]+\.[\w-]+\n$`)
	for _, tc := range []struct {
		role       string
		wantStderr []string
		notStderr  string
	}{
		{"organizer", []string{"organizer token for event gobierno-2028", "valid until", "PUT /v1/events/gobierno-2028"}, ""},
		{"moderator", []string{"moderator token for event gobierno-2028 (subject ana)", "valid until"}, "PUT"},
	} {
		got := cabildoCLI(t, "token", "create", "--event", "gobierno-2028", "--role", tc.role, "--subject", "ana", "--ttl", "2h", "--signing-key", key)
		if got.code != 0 || !tokenRE.MatchString(got.stdout) {
			t.Fatalf("%s: exit %d, stdout %q; want 0 and one token", tc.role, got.code, got.stdout)
		}
		for _, w := range tc.wantStderr {
			if !strings.Contains(got.stderr, w) {
				t.Errorf("%s: stderr lacks %q: %q", tc.role, w, got.stderr)
			}
		}
		if tc.notStderr != "" && strings.Contains(got.stderr, tc.notStderr) {
			t.Errorf("%s: stderr says %q: %q", tc.role, tc.notStderr, got.stderr)
		}
	}
}

// TestForeignKeyIsExplained: a token signed with another key than the server's is refused
// (401 unauthorized) with a detail that says so, and not a bare "not valid".
func TestForeignKeyIsExplained(t *testing.T) {
	n := startNode(t, "", nil, "--demo", "--log-level", "warn")
	foreign := cabildoCLI(t, "token", "create", "--event", demoEvent, "--signing-key", hex.EncodeToString(bytes.Repeat([]byte{9}, 32)))
	if foreign.code != 0 {
		t.Fatalf("token create: %+v", foreign)
	}
	r := n.do(t, req{method: "POST", path: "/v1/events/" + demoEvent + "/announcements",
		header: auth(strings.TrimSpace(foreign.stdout)), body: map[string]any{"title": map[string]string{"es": "Hola", "en": "Hello"}}})
	var p struct{ Code, Detail string }
	if err := json.Unmarshal(r.Body, &p); err != nil || r.Status != 401 || p.Code != "unauthorized" {
		t.Fatalf("status %d body %s; want 401 unauthorized", r.Status, r.Body)
	}
	if p.Detail != token.ForeignKeyMessage || !strings.Contains(p.Detail, "signed with a different key") {
		t.Errorf("detail %q; want it to say the token was signed with a different key", p.Detail)
	}
	// The websocket's auth frame says the same.
	c, _, err := websocket.DefaultDialer.Dial(wsURL(n), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteJSON(map[string]any{"type": "auth", "id": 1, "token": strings.TrimSpace(foreign.stdout)}); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var f struct{ Type, Code, Message string }
	if err := c.ReadJSON(&f); err != nil || f.Type != "error" || f.Code != "unauthorized" || f.Message != token.ForeignKeyMessage {
		t.Errorf("auth frame with a foreign token answered %+v (%v); want an unauthorized error saying so", f, err)
	}
}

// TestServeExitsCleanly: SIGINT or SIGTERM (main cancels ctx) ends serve with nil, exit 0,
// which is what lets `make run` end without "Error 1".
func TestServeExitsCleanly(t *testing.T) {
	n := startNode(t, "", nil, "--log-level", "warn")
	n.cancel()
	n.cancel = nil // stopped here, not by the cleanup
	err := <-n.done
	if code := exitCode(err, &bytes.Buffer{}); err != nil || code != 0 {
		t.Fatalf("serve after cancel: %v (exit %d), want nil (exit 0)", err, code)
	}
}

// TestServeListensOnLoopbackByDefault: a node started by hand is for this machine only.
func TestServeListensOnLoopbackByDefault(t *testing.T) {
	addr := config.ServeFlags().Lookup("addr").DefValue
	if addr != "127.0.0.1:8080" {
		t.Errorf("serve --addr defaults to %q, want 127.0.0.1:8080", addr)
	}
	c, err := config.LoadServe(nil, func(string) string { return "" })
	if err != nil || c.Addr != "127.0.0.1:8080" {
		t.Errorf("LoadServe: addr %q, %v", c.Addr, err)
	}
}

// TestMakeRun: `make run` builds, then execs the binary on loopback. With `go run` the server
// was a grandchild of make: Ctrl-C ended in "make: *** Error 1", and a SIGTERM to make left
// it running. (The signals themselves were checked by hand; see the Makefile.)
func TestMakeRun(t *testing.T) {
	b, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	mk := string(b)
	if !regexp.MustCompile(`(?m)^ADDR\s*\?=\s*127\.0\.0\.1:8080\s*$`).MatchString(mk) {
		t.Error("Makefile: ADDR must default to 127.0.0.1:8080")
	}
	recipe := regexp.MustCompile(`(?m)^run:(.*)\n((?:\t.*\n)+)`).FindStringSubmatch(mk)
	if recipe == nil {
		t.Fatal("Makefile: no run target")
	}
	if !strings.Contains(recipe[1], "build") {
		t.Errorf("run must depend on build, got %q", recipe[1])
	}
	if lines := strings.Split(strings.TrimSpace(recipe[2]), "\n"); len(lines) != 1 ||
		!strings.HasPrefix(strings.TrimSpace(lines[0]), "exec bin/cabildo serve ") || !strings.Contains(lines[0], "--addr $(ADDR)") {
		t.Errorf("run's recipe must be one line, exec bin/cabildo serve … --addr $(ADDR); got %q", recipe[2])
	}
}
