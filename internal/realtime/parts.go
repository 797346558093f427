package realtime

import (
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/cabildo/cabildo/pkg/protocol"
)

// No server frame may weigh more than protocol.MaxServerFrameBytes, whatever the event's
// size: clients set their read limit to it. Every frame but a snapshot is small by
// construction (and an update that is not is replaced by a snapshot, see fits), so only
// snapshots are cut: the JSON text of their data into chunks, each carried as a string
// in a snapshot frame with part and parts, which the client joins and parses. Cutting the
// text rather than paging sessions or questions keeps the rule the same for every
// channel, and holds the bound even for one item bigger than a frame.

// snapshotFrames encodes a channel's snapshot at version: one frame when it fits, else its
// parts. It is the only place snapshots are encoded, so that none escapes the bound.
func snapshotFrames(channel string, version uint64, data any) []Frame {
	b, err := json.Marshal(data)
	if err != nil {
		panic(fmt.Sprintf("realtime: encode snapshot of %s: %v", channel, err)) // our own types always encode
	}
	return splitSnapshot(channel, version, b, protocol.MaxServerFrameBytes)
}

// splitSnapshot frames data, the snapshot's JSON, in frames of at most limit bytes. The
// whole frame is the one encode would have made, byte for byte.
func splitSnapshot(channel string, version uint64, data []byte, limit int) []Frame {
	head, err := json.Marshal(protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: channel, Version: version})
	if err != nil {
		panic(fmt.Sprintf("realtime: encode snapshot of %s: %v", channel, err))
	}
	head = head[:len(head)-1] // open again: the fields below follow
	if whole := len(head) + len(`,"data":`) + len(data) + len(`}`); whole <= limit {
		f := make(Frame, 0, whole)
		f = append(append(append(append(f, head...), `,"data":`...), data...), '}')
		return []Frame{f}
	}
	// There are never more parts than bytes of data, so its digits are enough for both
	// numbers: the room for chunks is known before the parts are counted.
	digits := len(strconv.Itoa(len(data)))
	room := limit - len(head) - len(`,"part":,"parts":,"chunk":""}`) - 2*digits
	if room < 2*utf8.UTFMax {
		panic(fmt.Sprintf("realtime: a frame limit of %d bytes leaves no room for a chunk", limit))
	}
	var cuts []int // where each chunk ends
	for i := 0; i < len(data); {
		j, n := i, 0
		for j < len(data) && n+escapedLen(data[j]) <= room {
			n += escapedLen(data[j])
			j++
		}
		for j < len(data) && !utf8.RuneStart(data[j]) {
			j-- // never inside a character: each chunk must be a valid JSON string
		}
		cuts = append(cuts, j)
		i = j
	}
	frames := make([]Frame, len(cuts))
	parts := strconv.Itoa(len(cuts))
	from := 0
	for p, to := range cuts {
		f := make(Frame, 0, limit)
		f = append(f, head...)
		f = append(f, `,"part":`...)
		f = strconv.AppendInt(f, int64(p+1), 10)
		f = append(f, `,"parts":`...)
		f = append(f, parts...)
		f = append(f, `,"chunk":"`...)
		f = appendEscaped(f, data[from:to])
		frames[p] = append(f, `"}`...)
		from = to
	}
	return frames
}

// escapedLen is how many bytes b takes inside a JSON string. Marshalled JSON has no
// control characters, but nothing here relies on it.
func escapedLen(b byte) int {
	switch {
	case b == '"' || b == '\\':
		return 2
	case b < 0x20:
		return len(`\u0000`)
	}
	return 1
}

func appendEscaped(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	for _, b := range s {
		switch {
		case b == '"' || b == '\\':
			dst = append(dst, '\\', b)
		case b < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xf])
		default:
			dst = append(dst, b)
		}
	}
	return dst
}

// fits reports whether every frame is within the bound. Updates are small by construction
// (a record changes one session; a flush a few questions), but one that is not (the vote
// counts of thousands of questions at once) is never cut: its subscribers get a snapshot
// in its place, which can be.
func fits(frames []Frame) bool {
	for _, f := range frames {
		if len(f) > protocol.MaxServerFrameBytes {
			return false
		}
	}
	return true
}
