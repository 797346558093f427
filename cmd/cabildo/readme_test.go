package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cabildo/cabildo/internal/config"
)

// These tests keep README.md true: its flag table and synopses against the real flag sets,
// and its walkthroughs run, as written, against a node.

func readme(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// section returns the README from the heading to the next heading of the same level.
func section(t *testing.T, doc, heading string) string {
	t.Helper()
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("README has no %q", heading)
	}
	rest := doc[i+len(heading)+2:]
	if j := strings.Index(rest, "\n## "); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

var (
	flagRowRE  = regexp.MustCompile("(?m)^\\| (`--[^|]*) \\| ([^|]*) \\|")
	flagNameRE = regexp.MustCompile("--[a-z][a-z0-9-]*")
)

// TestREADMEServeFlags: every flag of `cabildo serve` has a row in the README's table, every
// row names a real flag, and the defaults the table states are the real ones.
func TestREADMEServeFlags(t *testing.T) {
	fs := config.ServeFlags()
	documented := map[string]string{} // flag → default cell
	for _, m := range flagRowRE.FindAllStringSubmatch(section(t, readme(t), "## Running for real"), -1) {
		for _, name := range flagNameRE.FindAllString(m[1], -1) {
			documented[strings.TrimPrefix(name, "--")] = strings.TrimSpace(m[2])
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := documented[f.Name]; !ok {
			t.Errorf("README's flag table lacks --%s", f.Name)
		}
	})
	for name, cell := range documented {
		f := fs.Lookup(name)
		if f == nil {
			t.Errorf("README documents --%s, which serve does not have", name)
			continue
		}
		if err := sameDefault(f.DefValue, strings.Trim(cell, "`")); err != nil {
			t.Errorf("README: --%s: %v", name, err)
		}
	}
}

// sameDefault compares a flag's default with the README's cell: durations by value, flags
// without a default value against the words that describe what happens instead.
func sameDefault(def, cell string) error {
	if def == "" || def == "false" {
		if slices.Contains([]string{"off", "none", "in-process", "built-in"}, cell) || strings.HasPrefix(cell, "<") {
			return nil
		}
		return fmt.Errorf("no default value, but the README says %q", cell)
	}
	d1, err1 := time.ParseDuration(def)
	d2, err2 := time.ParseDuration(cell)
	if (err1 == nil && err2 == nil && d1 == d2) || def == cell {
		return nil
	}
	return fmt.Errorf("default %q, README says %q", def, cell)
}

// TestREADMETokenSynopsis: the README's `cabildo token create …` synopsis names every flag
// of the command, and no other.
func TestREADMETokenSynopsis(t *testing.T) {
	m := regexp.MustCompile("`(cabildo token create [^`]*)`").FindStringSubmatch(readme(t))
	if m == nil {
		t.Fatal("README has no `cabildo token create …` synopsis")
	}
	var got, want []string
	for _, f := range flagNameRE.FindAllString(m[1], -1) {
		got = append(got, strings.TrimPrefix(f, "--"))
	}
	config.TokenFlags().VisitAll(func(f *flag.Flag) { want = append(want, f.Name) })
	slices.Sort(got)
	got = slices.Compact(got)
	if !slices.Equal(got, want) {
		t.Errorf("README's synopsis has flags %v, token create has %v", got, want)
	}
}

// TestREADMEGoVersion: the Go the README asks for is the one go.mod requires.
func TestREADMEGoVersion(t *testing.T) {
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	for _, v := range regexp.MustCompile(`\bGo (1\.[0-9.]*[0-9])`).FindAllStringSubmatch(readme(t), -1) {
		if v[1] != string(m[1]) {
			t.Errorf("README says Go %s, go.mod requires %s", v[1], m[1])
		}
	}
}

// cabildoCLIProcess makes the test binary act as the cabildo command, for shell scripts:
// `$TESTBIN -test.run=^TestCabildoCLIProcess$ -cabildo-cli -- token create …`.
var cabildoCLIProcess = flag.Bool("cabildo-cli", false, "run as the cabildo command (for the README walkthrough)")

func TestCabildoCLIProcess(t *testing.T) {
	if !*cabildoCLIProcess {
		t.Skip("only a helper process for TestREADMEWalkthrough")
	}
	err := run(context.Background(), flag.Args(), func(string) string { return "" }, os.Stdout, os.Stderr)
	os.Exit(exitCode(err, os.Stderr))
}

// TestREADMEWalkthrough runs the README's "Try it" and "Town hall" commands with bash, as
// written, against a node on a random port: every curl must succeed (HTTP 2xx) and every
// jq must get JSON and print something.
func TestREADMEWalkthrough(t *testing.T) {
	for _, tool := range []string{"bash", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			if config.ComponentsRequired() {
				t.Fatalf("%s is missing (scripts/test-deps installs it)", tool)
			}
			t.Skipf("%s is missing (scripts/test-deps installs it)", tool)
		}
	}
	doc := readme(t)
	dir := t.TempDir()
	n := startNode(t, filepath.Join(dir, "data"), nil, "--demo", "--log-level", "warn")
	host := strings.TrimPrefix(n.base, "http://")

	var script strings.Builder
	// curl fails on an HTTP error, jq on no JSON or a null; bin/cabildo (or go run
	// ./cmd/cabildo) is this test binary.
	fmt.Fprintf(&script, `set -euo pipefail
curl() { command curl --fail-with-body --max-time 10 "$@"; }
jq() { command jq -e "$@"; }
cabildo() { %q -test.run='^TestCabildoCLIProcess$' -cabildo-cli -- "$@"; }
set -x
`, os.Args[0])
	blocks := 0
	for _, heading := range []string{"## Try it", "## Town hall"} {
		for _, m := range regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(section(t, doc, heading), -1) {
			blocks++
			for line := range strings.SplitSeq(m[1], "\n") {
				if strings.TrimSpace(line) == "make run" { // the node is already running
					continue
				}
				line = strings.ReplaceAll(line, "localhost:8080", host)
				line = strings.ReplaceAll(line, "bin/cabildo ", "cabildo ")
				line = strings.ReplaceAll(line, "go run ./cmd/cabildo ", "cabildo ")
				script.WriteString(line + "\n")
			}
		}
	}
	if blocks < 2 {
		t.Fatalf("found %d sh blocks under Try it and Town hall, want at least 2", blocks)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script.String())
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's commands failed: %v\n%s", err, out)
	}
}
