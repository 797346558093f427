package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/cabildo/cabildo/pkg/protocol"
)

// TestRealtimeWritesAfterPong: the server answers a websocket ping from the client (as
// OkHttp and others send) with a pong written under a one-second deadline; a broadcast
// written later must not trip on that deadline and drop the subscriber.
func TestRealtimeWritesAfterPong(t *testing.T) {
	n := startNode(t, "", nil, "--demo")
	w := mustDial(t, n)
	got := w.subscribe("schedule:"+demoEvent, nil)
	version := got[len(got)-1].Version
	pong := make(chan struct{}, 1)
	w.c.SetPongHandler(func(string) error { pong <- struct{}{}; return nil })
	if err := w.c.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	// The pong handler runs inside a read: read until the change arrives, below.
	lg := &restLoad{client: &http.Client{Timeout: 10 * time.Second}, base: n.base, event: demoEvent, token: n.token("organizer")}
	sessions, _, err := lg.prepare(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // past the pong's deadline
	for i := range 2 {
		v, err := lg.nudgeVersion(context.Background(), sessions[0], i)
		if err != nil {
			t.Fatal(err)
		}
		f := w.next()
		if f.Type != protocol.TypeUpdate || f.Version != v || f.Prev == nil || *f.Prev != version {
			t.Fatalf("change %d: got %+v, want the update to %d after %d", i, f, v, version)
		}
		version = v
	}
	select {
	case <-pong:
	default:
		t.Fatal("the server never answered the ping")
	}
}
