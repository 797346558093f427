package protocol

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Parts joins the frames of one channel's snapshot in parts back into the whole
// snapshot frame they stand for. The zero value is ready; one Parts serves one channel,
// for as long as the connection lasts.
//
// A client applies nothing until the last part: a connection that drops before it leaves
// the client where it was, so it calls Reset and resumes from the last version it
// applied, never from the parts' version.
type Parts struct {
	channel string
	version uint64
	parts   int
	next    int // the part expected next; 0 when none is pending
	chunks  strings.Builder
}

// Add takes the next frame of the channel. A whole snapshot (no Parts) comes back as is;
// a part comes back as the whole snapshot once it is the last one, with Data the joined
// chunks (whole is then true), else whole is false. A frame that breaks the sequence (a
// part that is not the next one, another version or count, a whole snapshot or any other
// frame between two parts) is an error and resets the assembly: the client should
// resubscribe from the last version it applied.
func (p *Parts) Add(f ServerFrame) (snapshot ServerFrame, whole bool, err error) {
	if f.Type != TypeSnapshot || f.Parts == 0 {
		if p.next != 0 {
			defer p.Reset()
			return ServerFrame{}, false, fmt.Errorf("protocol: %s frame of %s at %d before part %d of %d of the snapshot at %d",
				f.Type, f.Channel, f.Version, p.next, p.parts, p.version)
		}
		return f, f.Type == TypeSnapshot, nil
	}
	if p.next == 0 && f.Part == 1 && f.Parts >= 2 {
		p.channel, p.version, p.parts, p.next = f.Channel, f.Version, f.Parts, 1
	}
	if f.Part != p.next || f.Parts != p.parts || f.Version != p.version || f.Channel != p.channel || f.Data != nil {
		defer p.Reset()
		return ServerFrame{}, false, fmt.Errorf("protocol: snapshot part %d/%d of %s at %d, want part %d/%d at %d",
			f.Part, f.Parts, f.Channel, f.Version, max(p.next, 1), p.parts, p.version)
	}
	p.chunks.WriteString(f.Chunk)
	if p.next < p.parts {
		p.next++
		return ServerFrame{}, false, nil
	}
	data := json.RawMessage(p.chunks.String())
	p.Reset()
	if !json.Valid(data) {
		return ServerFrame{}, false, fmt.Errorf("protocol: the %d parts of the snapshot of %s at %d do not join into JSON", f.Parts, f.Channel, f.Version)
	}
	return ServerFrame{Type: TypeSnapshot, Channel: f.Channel, Version: f.Version, Data: data}, true, nil
}

// Pending reports whether some parts have come and the last has not.
func (p *Parts) Pending() bool { return p.next != 0 }

// Reset drops the parts received so far: the connection dropped, or they broke the
// sequence.
func (p *Parts) Reset() {
	p.channel, p.version, p.parts, p.next = "", 0, 0, 0
	p.chunks = strings.Builder{}
}
