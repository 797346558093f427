package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
	"github.com/google/go-cmp/cmp"

	"github.com/cabildo/cabildo/pkg/protocol"
)

// TestIdleTimeoutReconnects: a server that accepts the connection and then falls silent
// (no frames, no pings), like a host that lost power, is left after IdleTimeout and the
// client connects again. A server that pings keeps the connection.
func TestIdleTimeoutReconnects(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ping      bool
		reconnect bool
	}{
		{"silent server", false, true},
		{"pinging server", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var accepted atomic.Int64
			up := websocket.Upgrader{}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				conn, err := up.Upgrade(w, r, nil)
				if err != nil {
					return
				}
				defer conn.Close()
				accepted.Add(1)
				go func() { // read, so pongs and closes are processed
					for {
						if _, _, err := conn.ReadMessage(); err != nil {
							return
						}
					}
				}()
				for i := 0; i < 40; i++ {
					time.Sleep(50 * time.Millisecond)
					if tc.ping {
						if err := conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(time.Second)); err != nil {
							return
						}
					}
				}
			}))
			defer srv.Close()
			var disconnects atomic.Int64
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := Dial(ctx, Options{URL: "ws" + strings.TrimPrefix(srv.URL, "http"), IdleTimeout: 300 * time.Millisecond,
				MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
				OnDisconnect: func(int, error) { disconnects.Add(1) }})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			time.Sleep(1200 * time.Millisecond) // four idle timeouts
			got := c.Stats().Connects
			if tc.reconnect && (got < 2 || disconnects.Load() < 1) {
				t.Fatalf("connects %d, disconnects %d: a silent server was not left", got, disconnects.Load())
			}
			if !tc.reconnect && (got != 1 || disconnects.Load() != 0) {
				t.Fatalf("connects %d, disconnects %d: a pinging server was left", got, disconnects.Load())
			}
		})
	}
}

// scriptServer accepts websockets and hands each to the test, which plays the server.
// dialScript connects a client with short backoffs to a new scripted server.
func dialScript(t *testing.T) (*Client, <-chan *websocket.Conn) {
	t.Helper()
	url, conns := scriptServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, Options{URL: url, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, conns
}

func scriptServer(t *testing.T) (url string, conns <-chan *websocket.Conn) {
	t.Helper()
	ch := make(chan *websocket.Conn, 8)
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		ch <- conn
	}))
	t.Cleanup(srv.Close)
	return "ws" + strings.TrimPrefix(srv.URL, "http"), ch
}

// played is one connection of a scriptServer, as the test drives it.
type played struct {
	t    *testing.T
	conn *websocket.Conn
}

func accept(t *testing.T, conns <-chan *websocket.Conn) played {
	t.Helper()
	select {
	case c := <-conns:
		t.Cleanup(func() { c.Close() })
		return played{t, c}
	case <-time.After(10 * time.Second):
		t.Fatal("the client did not connect")
		return played{}
	}
}

// subscribed reads the client's subscribe frame and returns its since.
func (p played) subscribe() *uint64 {
	p.t.Helper()
	_ = p.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var f protocol.ClientFrame
	if err := p.conn.ReadJSON(&f); err != nil || f.Type != protocol.TypeSubscribe {
		p.t.Fatalf("want a subscribe: %+v, %v", f, err)
	}
	return f.Since
}

func (p played) send(frames ...protocol.ServerFrame) {
	p.t.Helper()
	for _, f := range frames {
		if err := p.conn.WriteJSON(f); err != nil {
			p.t.Fatal(err)
		}
	}
}

// inParts cuts data into n snapshot frames at version, as the server does.
func inParts(channel string, version uint64, data string, n int) []protocol.ServerFrame {
	var out []protocol.ServerFrame
	size := (len(data) + n - 1) / n
	for i := range n {
		chunk := data[i*size : min((i+1)*size, len(data))]
		out = append(out, protocol.ServerFrame{Type: protocol.TypeSnapshot, Channel: channel, Version: version, Part: i + 1, Parts: n, Chunk: chunk})
	}
	return out
}

func u64(v uint64) *uint64 { return &v }

// TestResumeMidSnapshot: a connection that drops in the middle of a snapshot in parts
// delivers nothing of it. The client resubscribes from the last version it delivered
// (none, then 12, never the version of the parts it dropped) and gets whole snapshots,
// joined, and every update once, chained.
func TestResumeMidSnapshot(t *testing.T) {
	const channel = "schedule:abierta-2025"
	first := `{"sessions":[{"id":1,"title":"Datos \"abiertos\" en la región 🎺"},{"id":2}],"version":10}`
	later := `{"sessions":[],"version":20}`
	c, conns := dialScript(t)
	var (
		mu        sync.Mutex
		snapshots []string
		updates   []uint64
	)
	if _, err := c.Subscribe(channel, "es", Handler{
		OnSnapshot: func(v uint64, d json.RawMessage) {
			mu.Lock()
			snapshots = append(snapshots, fmt.Sprint(v, " ", string(d)))
			mu.Unlock()
		},
		OnUpdate: func(v, _ uint64, _ json.RawMessage) { mu.Lock(); updates = append(updates, v); mu.Unlock() },
	}); err != nil {
		t.Fatal(err)
	}

	// Two parts of three, then the connection is lost (no close frame).
	p := accept(t, conns)
	if since := p.subscribe(); since != nil {
		t.Fatalf("first subscribe with since %d", *since)
	}
	p.send(inParts(channel, 10, first, 3)[:2]...)
	p.conn.Close()

	// Nothing was delivered: a fresh subscribe, a whole snapshot, an update, then part of
	// a snapshot at 20 (one sent in place of an update too big for a frame) and a drop.
	p = accept(t, conns)
	if since := p.subscribe(); since != nil {
		t.Fatalf("resubscribed with since %d after a snapshot cut short; want none", *since)
	}
	p.send(inParts(channel, 10, first, 3)...)
	p.send(protocol.ServerFrame{Type: protocol.TypeSubscribed, Channel: channel, Version: 10},
		protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: channel, Version: 12, Prev: u64(10), Data: json.RawMessage(`{}`)})
	p.send(inParts(channel, 20, later, 2)[0])
	p.conn.Close()

	// The last version delivered is 12: the parts of 20 count for nothing.
	p = accept(t, conns)
	if since := p.subscribe(); since == nil || *since != 12 {
		t.Fatalf("resubscribed with since %v, want 12", since)
	}
	p.send(protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: channel, Version: 15, Prev: u64(12), Data: json.RawMessage(`{}`)},
		protocol.ServerFrame{Type: protocol.TypeSubscribed, Channel: channel, Version: 15})
	p.send(inParts(channel, 20, later, 2)...)

	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(snapshots)
		mu.Unlock()
		if n == 2 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff([]string{"10 " + first, "20 " + later}, snapshots); diff != "" {
		t.Errorf("snapshots delivered (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]uint64{12, 15}, updates); diff != "" {
		t.Errorf("updates delivered (-want +got):\n%s", diff)
	}
	if st := c.Stats(); st.Gaps != 0 || st.Duplicates != 0 || st.Snapshots != 2 || st.Connects != 3 {
		t.Errorf("stats %+v, want 2 snapshots, 3 connections, no gap or duplicate", st)
	}
}

// TestPartsOutOfSequence: parts that skip one are never joined into a snapshot; the
// client counts a gap and starts again on a new connection.
func TestPartsOutOfSequence(t *testing.T) {
	const channel = "questions:abierta-2025:12"
	data := `{"questions":[],"version":7}`
	c, conns := dialScript(t)
	got := make(chan string, 4)
	if _, err := c.Subscribe(channel, "", Handler{OnSnapshot: func(_ uint64, d json.RawMessage) { got <- string(d) }}); err != nil {
		t.Fatal(err)
	}
	p := accept(t, conns)
	p.subscribe()
	parts := inParts(channel, 7, data, 3)
	p.send(parts[0], parts[2])
	p = accept(t, conns) // the client left the first connection
	if since := p.subscribe(); since != nil {
		t.Fatalf("resubscribed with since %d", *since)
	}
	p.send(parts...)
	select {
	case d := <-got:
		if d != data {
			t.Fatalf("snapshot %s, want %s", d, data)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no snapshot")
	}
	if st := c.Stats(); st.Gaps != 1 || st.Snapshots != 1 {
		t.Fatalf("stats %+v, want the one gap and one snapshot", st)
	}
}
