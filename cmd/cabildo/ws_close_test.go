package main

import (
	wsbin "encoding/binary"
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
)

// serverFrame is one frame as the server put it on the wire.
type serverFrame struct {
	op      byte
	payload []byte
}

// readServerFrames reads unmasked server frames from r until it ends or stops for a
// while (RFC 6455, 5.2; the server never fragments).
func readServerFrames(t *testing.T, c interface {
	io.Reader
	SetReadDeadline(time.Time) error
}) []serverFrame {
	t.Helper()
	var frames []serverFrame
	for {
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		var h [2]byte
		if _, err := io.ReadFull(c, h[:]); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Logf("reading frames: %v", err)
			}
			return frames
		}
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(c, b[:]); err != nil {
				t.Fatal(err)
			}
			n = uint64(wsbin.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(c, b[:]); err != nil {
				t.Fatal(err)
			}
			n = wsbin.BigEndian.Uint64(b[:])
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(c, p); err != nil {
			t.Fatalf("a frame of %d bytes cut short: %v", n, err)
		}
		frames = append(frames, serverFrame{op: h[0] & 0x0f, payload: p})
	}
}

// maskedControl is a client control frame (payload under 126 bytes) masked with a zero key.
func maskedControl(op byte, payload []byte) []byte {
	return append([]byte{0x80 | op, 0x80 | byte(len(payload)), 0, 0, 0, 0}, payload...)
}

// A client that closes while frames are still going to it (here, the parts of its
// snapshot) gets the frames the server was writing, then exactly one close frame echoing
// its code, and nothing after it (RFC 6455, 5.5.1: no data after a close). The close is
// answered by the writer that sends the frames, not by the reader beside it.
func TestPeerCloseIsAnsweredOnceAfterTheFrames(t *testing.T) {
	n := startNode(t, "", nil, "--demo")
	for round := range 5 {
		w := mustDial(t, n)
		nc := w.c.UnderlyingConn()
		msg := append(maskedFrame(websocket.TextMessage, []byte(`{"type":"subscribe","id":1,"channel":"schedule:`+demoEvent+`"}`)),
			maskedControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"))...)
		if _, err := nc.Write(msg); err != nil {
			t.Fatal(err)
		}
		frames := readServerFrames(t, nc)
		w.c.Close()
		closes, last := 0, -1
		for i, f := range frames {
			if f.op == websocket.CloseMessage {
				closes++
				last = i
			}
		}
		if closes != 1 || last != len(frames)-1 {
			ops := make([]byte, len(frames))
			for i, f := range frames {
				ops[i] = f.op
			}
			t.Fatalf("round %d: frames by opcode %v (close payload %q): want exactly one close (8), and last", round, ops, frames[max(last, 0)].payload)
		}
		if code := wsbin.BigEndian.Uint16(frames[last].payload); code != websocket.CloseNormalClosure {
			t.Fatalf("round %d: close %d, want the client's %d echoed", round, code, websocket.CloseNormalClosure)
		}
	}
}
