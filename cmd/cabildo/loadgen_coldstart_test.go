package main

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
)

// TestLoadgenColdStart writes a small cold-start log, reads it back, and refuses to write
// over it: the mix holds every kind of entry, and the rebuild in --measure applies them all
// (a question or vote the projection skipped would show as fewer than written).
func TestLoadgenColdStart(t *testing.T) {
	dir := t.TempDir()
	run := func(args ...string) (coldStartResult, error) {
		var out bytes.Buffer
		err := loadgenColdStart(t.Context(), args, &out, io.Discard)
		var res coldStartResult
		if err == nil {
			if err := json.Unmarshal(out.Bytes(), &res); err != nil {
				t.Fatalf("output %q: %v", out.String(), err)
			}
		}
		return res, err
	}
	w, err := run("--data-dir", dir, "--entries", "3000", "--events", "2", "--sessions", "40")
	if err != nil {
		t.Fatal(err)
	}
	if w.Entries != 3000 || w.Programme == 0 || w.Announce == 0 || w.Questions == 0 || w.Votes == 0 {
		t.Errorf("written: %+v; want 3,000 entries of every kind", w)
	}
	m, err := run("--data-dir", dir, "--measure")
	if err != nil {
		t.Fatal(err)
	}
	if m.Entries != 3000 || m.Bytes != w.Bytes || m.BuildSeconds <= 0 || m.SnapBytes == 0 || m.Questions != w.Questions || m.Votes == 0 {
		t.Errorf("measured: %+v; written: %+v", m, w)
	}
	if _, err := run("--data-dir", dir, "--entries", "10"); err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Errorf("writing over an existing log: %v", err)
	}
}
