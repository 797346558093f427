package protocol

import (
	"encoding/json"
	"testing"
)

func part(version uint64, i, n int, chunk string) ServerFrame {
	return ServerFrame{Type: TypeSnapshot, Channel: "schedule:abierta-2025", Version: version, Part: i, Parts: n, Chunk: chunk}
}

// TestPartsSequence: parts join only when they come 1 to parts, of one version; anything
// else between them breaks the sequence and resets it, so the next part 1 starts afresh.
func TestPartsSequence(t *testing.T) {
	prev := uint64(3)
	update := ServerFrame{Type: TypeUpdate, Channel: "schedule:abierta-2025", Version: 4, Prev: &prev, Data: json.RawMessage(`{}`)}
	whole := ServerFrame{Type: TypeSnapshot, Channel: "schedule:abierta-2025", Version: 4, Data: json.RawMessage(`{}`)}
	for _, tc := range []struct {
		name   string
		frames []ServerFrame
		want   string // the joined data; "" when the last frame must fail
	}{
		{"in order", []ServerFrame{part(5, 1, 3, `{"a":`), part(5, 2, 3, `"é`), part(5, 3, 3, `"}`)}, `{"a":"é"}`},
		{"a whole snapshot", []ServerFrame{whole}, `{}`},
		{"part skipped", []ServerFrame{part(5, 1, 3, `{"a":`), part(5, 3, 3, `"}`)}, ""},
		{"starts at 2", []ServerFrame{part(5, 2, 2, `{}`)}, ""},
		{"other version", []ServerFrame{part(5, 1, 2, `{"a":`), part(6, 2, 2, `1}`)}, ""},
		{"other count", []ServerFrame{part(5, 1, 2, `{"a":`), part(5, 2, 3, `1}`)}, ""},
		{"an update between", []ServerFrame{part(5, 1, 2, `{"a":`), update}, ""},
		{"a whole snapshot between", []ServerFrame{part(5, 1, 2, `{"a":`), whole}, ""},
		{"not JSON", []ServerFrame{part(5, 1, 2, `{"a":`), part(5, 2, 2, `1`)}, ""},
		{"again after a break", []ServerFrame{part(5, 1, 2, `{"a":`), part(6, 1, 2, `{"b":`), part(6, 1, 2, `{"c":`), part(6, 2, 2, `2}`)}, `{"c":2}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p Parts
			var (
				got  ServerFrame
				done bool
				err  error
			)
			for _, f := range tc.frames {
				if got, done, err = p.Add(f); err != nil {
					p.Reset()
				}
			}
			if tc.want == "" {
				if err == nil || done || p.Pending() {
					t.Fatalf("Add = %s, %v, %v, pending %v: want an error and nothing pending", got.Data, done, err, p.Pending())
				}
				return
			}
			if err != nil || !done || string(got.Data) != tc.want || got.Parts != 0 || got.Chunk != "" {
				t.Fatalf("Add = %+v, %v, %v: want data %s", got, done, err, tc.want)
			}
		})
	}
}
