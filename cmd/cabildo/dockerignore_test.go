package main

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// dockerIgnore is the exclusion part of .dockerignore: Docker's patterns are filepath.Match
// patterns on slash paths from the context root, where ** matches any number of
// directories, and excluding a directory excludes everything in it.
type dockerIgnore []*regexp.Regexp

func loadDockerIgnore(t *testing.T) dockerIgnore {
	t.Helper()
	f, err := os.Open("../../.dockerignore")
	if err != nil {
		t.Fatalf("no .dockerignore: %v", err)
	}
	defer f.Close()
	var d dockerIgnore
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.TrimSpace(sc.Text())
		if p == "" || strings.HasPrefix(p, "#") {
			continue
		}
		if strings.HasPrefix(p, "!") {
			t.Fatalf(".dockerignore: exceptions (%q) are not understood by this test", p)
		}
		p = strings.Trim(path.Clean(p), "/")
		re := regexp.QuoteMeta(p)
		re = strings.ReplaceAll(re, `\*\*/`, `(.*/)?`)
		re = strings.ReplaceAll(re, `\*`, `[^/]*`)
		re = strings.ReplaceAll(re, `\?`, `[^/]`)
		d = append(d, regexp.MustCompile(`^`+re+`(/.*)?$`))
	}
	return d
}

func (d dockerIgnore) excludes(p string) bool {
	for _, re := range d {
		if re.MatchString(p) {
			return true
		}
	}
	return false
}

// TestDockerIgnore: the build context leaves out history, binaries, data and secrets, and
// keeps everything the Dockerfile copies and the build reads: go.mod, go.sum, and every Go
// and embedded file of the packages cabildo is built from.
func TestDockerIgnore(t *testing.T) {
	d := loadDockerIgnore(t)
	for _, p := range []string{
		".git/HEAD", "bin/cabildo", "cabildo", "data/signing.key", "data/jetstream/x", ".bench/run.json",
		"deploy/compose/.env", "cmd/cabildo/data/signing.key", "somewhere/signing.key", "cmd/cabildo/cabildo.test",
	} {
		if !d.excludes(p) {
			t.Errorf(".dockerignore lets %s into the build context", p)
		}
	}

	needed := []string{"go.mod", "go.sum"}
	df, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^COPY\s+(.*)$`).FindAllStringSubmatch(string(df), -1) {
		if strings.Contains(m[1], "--from=") {
			continue
		}
		f := strings.Fields(m[1])
		for _, src := range f[:len(f)-1] {
			if src != "." {
				needed = append(needed, src)
			}
		}
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "list", "-deps", "-json=Dir,Module,GoFiles,EmbedFiles", "./cmd/cabildo")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p struct {
			Dir                 string
			Module              *struct{ Path string }
			GoFiles, EmbedFiles []string
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if p.Module == nil || p.Module.Path != "github.com/cabildo/cabildo" {
			continue
		}
		rel, err := filepath.Rel(root, p.Dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range append(p.GoFiles, p.EmbedFiles...) {
			needed = append(needed, filepath.ToSlash(filepath.Join(rel, f)))
		}
	}
	if len(needed) < 10 {
		t.Fatalf("found only %v to check", needed)
	}
	for _, p := range needed {
		if d.excludes(p) {
			t.Errorf(".dockerignore leaves out %s, which the image build needs", p)
		}
	}
}
