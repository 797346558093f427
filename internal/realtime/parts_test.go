package realtime

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/cabildo/cabildo/internal/contract"
	"github.com/cabildo/cabildo/pkg/api"
	"github.com/cabildo/cabildo/pkg/protocol"
)

// bigSchedule is a programme of n sessions with bilingual-length texts, as an event ten
// times the demo's would render.
func bigSchedule(n int) api.Schedule {
	s := api.Schedule{Event: api.Event{ID: "grande-2027", Name: "Encuentro \"grande\" 2027", TimeZone: "America/Costa_Rica",
		Days:    []api.Day{{Date: "2027-04-14", Kind: "conference", Start: "2027-04-14T08:00:00-06:00", End: "2027-04-14T20:00:00-06:00"}},
		Version: 9000}, Version: 9000, Lang: "es", Rooms: []api.Room{}, Tracks: []api.Track{}, Speakers: []api.Speaker{}}
	for i := range n {
		s.Sessions = append(s.Sessions, api.Session{ID: int64(i + 1), GUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i),
			Title: fmt.Sprintf("Sesión %d: participación ciudadana y datos abiertos en la región", i), Kind: "breakout", Status: "scheduled",
			Abstract: strings.Repeat("Cómo las organizaciones «ciudadanas» usan \"datos abiertos\" \\ para pedir cuentas 🎺. ", 8),
			Language: "es", Room: "sala-1", Day: "2027-04-14", Start: "2027-04-14T08:00:00-06:00", End: "2027-04-14T09:00:00-06:00",
			DurationMinutes: 60, Speakers: []string{"ana-rojas"}, Version: 9000})
	}
	return s
}

// TestSplitSnapshot: whatever the limit and the text (quotes, backslashes, accents, emoji
// cut anywhere), every frame is within the limit and the parts join back into the data,
// byte for byte; a snapshot that fits is the very frame encode makes.
func TestSplitSnapshot(t *testing.T) {
	data, err := json.Marshal(bigSchedule(40))
	if err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int{120, 121, 122, 123, 257, 1000, 4096, protocol.MaxServerFrameBytes, len(data) + 100} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			frames := splitSnapshot("schedule:grande-2027", 9000, data, limit)
			var p protocol.Parts
			for i, f := range frames {
				if len(f) > limit {
					t.Fatalf("frame %d of %d weighs %d bytes, over %d", i+1, len(frames), len(f), limit)
				}
				if !utf8.Valid(f) {
					t.Fatalf("frame %d is not UTF-8", i+1)
				}
				var sf protocol.ServerFrame
				if err := json.Unmarshal(f, &sf); err != nil {
					t.Fatalf("frame %d: %v", i+1, err)
				}
				got, whole, err := p.Add(sf)
				if err != nil {
					t.Fatal(err)
				}
				if whole != (i == len(frames)-1) {
					t.Fatalf("frame %d of %d: whole %v", i+1, len(frames), whole)
				}
				if whole && string(got.Data) != string(data) {
					t.Fatalf("the parts join into %d bytes that differ from the %d of the data", len(got.Data), len(data))
				}
			}
			if len(frames) == 1 {
				want := encode(protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: "schedule:grande-2027", Version: 9000}, json.RawMessage(data))
				if diff := cmp.Diff(string(want), string(frames[0])); diff != "" {
					t.Fatalf("a snapshot that fits is not encode's frame (-encode +split):\n%.500s", diff)
				}
			}
		})
	}
}

// TestSnapshotFramesContract: the frames of a big schedule's snapshot each validate
// against asyncapi.yaml, and so does the snapshot they join into.
func TestSnapshotFramesContract(t *testing.T) {
	v, err := contract.LoadFrames()
	if err != nil {
		t.Fatal(err)
	}
	sch := bigSchedule(800)
	frames := snapshotFrames("schedule:grande-2027", sch.Version, sch)
	if len(frames) < 2 {
		t.Fatalf("800 sessions fit one frame (%d bytes): the test proves nothing", len(frames[0]))
	}
	var p protocol.Parts
	for i, f := range frames {
		if err := v.Server(f); err != nil {
			t.Fatalf("part %d of %d: %v", i+1, len(frames), err)
		}
		var sf protocol.ServerFrame
		if err := json.Unmarshal(f, &sf); err != nil {
			t.Fatal(err)
		}
		if got, whole, err := p.Add(sf); err != nil {
			t.Fatal(err)
		} else if whole {
			if err := v.Snapshot(got); err != nil {
				t.Fatal(err)
			}
			var back api.Schedule
			if err := json.Unmarshal(got.Data, &back); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(sch, back); diff != "" {
				t.Fatalf("joined snapshot differs (-rendered +joined):\n%.1000s", diff)
			}
		}
	}
	if p.Pending() {
		t.Fatal("the last part did not complete the snapshot")
	}
}

// BenchmarkSnapshotFrames is the cost of encoding one snapshot (once per topic and
// version, however many subscribe): the demo's size and ten times it, whole or in parts.
func BenchmarkSnapshotFrames(b *testing.B) {
	for _, n := range []int{78, 800} {
		sch := bigSchedule(n)
		b.Run(fmt.Sprintf("%d sessions/encode whole", n), func(b *testing.B) {
			var size int
			for range b.N {
				size = len(encode(protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: "schedule:grande-2027", Version: 9000}, sch))
			}
			b.ReportMetric(float64(size), "bytes")
			b.ReportMetric(1, "frames")
		})
		b.Run(fmt.Sprintf("%d sessions/snapshotFrames", n), func(b *testing.B) {
			var frames []Frame
			for range b.N {
				frames = snapshotFrames("schedule:grande-2027", 9000, sch)
			}
			b.ReportMetric(float64(weight(frames)), "bytes")
			b.ReportMetric(float64(len(frames)), "frames")
		})
	}
}
