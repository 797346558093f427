package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fasthttp/websocket"
)

func TestPeerMessagesSplitsBatchedFrames(t *testing.T) {
	var got []string
	frame := []byte("{}\n{\"push\":{\"channel\":\"c\",\"pub\":{\"data\":{\"seq\":7}}}}\n\n{\"id\":2,\"subscribe\":{}}")
	if err := peerMessages(frame, func(l []byte) error { got = append(got, string(l)); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || !isPeerPing([]byte(got[0])) {
		t.Fatalf("messages %q", got)
	}
	var m peerMsg
	if err := json.Unmarshal([]byte(got[1]), &m); err != nil || m.Push == nil || m.Push.Pub == nil || m.Push.Pub.Data.Seq != 7 {
		t.Fatalf("push %+v %v", m, err)
	}
}

func TestLoadgenPeerRejectsNonLoopback(t *testing.T) {
	for _, args := range [][]string{
		{"--url", "ws://10.0.0.1:8000/connection/websocket", "--api-key", "k"},
		{"--api", "http://example.com/api", "--api-key", "k"},
	} {
		if err := loadgenPeer(context.Background(), args, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "loopback") {
			t.Fatalf("%v: err %v", args, err)
		}
	}
}

// fakePeer is a minimal server speaking the same JSON protocol: connect and subscribe
// replies, pings that must be answered, and publications from its HTTP API batched with a
// ping in one frame.
type fakePeer struct {
	mu    sync.Mutex
	conns []*fakeConn
	pongs atomic.Int64
}

type fakeConn struct {
	mu   sync.Mutex
	conn *websocket.Conn
}

func (c *fakeConn) send(s string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn.WriteMessage(websocket.TextMessage, []byte(s))
}

func (p *fakePeer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/api/publish":
		var body struct {
			Channel string          `json:"channel"`
			Data    json.RawMessage `json:"data"`
		}
		if r.Header.Get("X-API-Key") != "k" || json.NewDecoder(r.Body).Decode(&body) != nil {
			fmt.Fprint(w, `{"error":{"code":401,"message":"unauthorized"}}`)
			return
		}
		frame := fmt.Sprintf("{}\n{\"push\":{\"channel\":%q,\"pub\":{\"data\":%s}}}", body.Channel, body.Data)
		p.mu.Lock()
		conns := slices.Clone(p.conns)
		p.mu.Unlock()
		for _, c := range conns {
			_ = c.send(frame)
		}
		fmt.Fprint(w, `{"result":{}}`)
	case "/connection/websocket":
		ws, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return
		}
		c := &fakeConn{conn: ws}
		defer ws.Close()
		for {
			_, msg, err := ws.ReadMessage()
			if err != nil {
				return
			}
			switch {
			case bytes.Equal(msg, []byte("{}")):
				p.pongs.Add(1)
			case bytes.Contains(msg, []byte(`"connect"`)):
				_ = c.send(`{"id":1,"connect":{"client":"x","ping":25,"pong":true}}`)
			case bytes.Contains(msg, []byte(`"subscribe"`)):
				// Subscribed before the reply goes out, as a real server does: a
				// publication right after the client saw the reply must reach it.
				p.mu.Lock()
				p.conns = append(p.conns, c)
				p.mu.Unlock()
				_ = c.send(`{"id":2,"subscribe":{}}` + "\n{}")
			}
		}
	default:
		http.NotFound(w, r)
	}
}

func TestLoadgenPeerAgainstFakePeer(t *testing.T) {
	for _, mode := range []string{"lean", "full"} {
		t.Run(mode, func(t *testing.T) { testLoadgenPeer(t, mode) })
	}
}

func testLoadgenPeer(t *testing.T, mode string) {
	p := &fakePeer{}
	srv := httptest.NewServer(p)
	defer srv.Close()
	base := strings.TrimPrefix(srv.URL, "http://")
	var out, errb bytes.Buffer
	err := loadgenPeer(context.Background(), []string{
		"--url", "ws://" + base + "/connection/websocket", "--api", srv.URL + "/api", "--api-key", "k",
		"--channel", "c", "--clients", "5", "--rate", "20", "--duration", "300ms", "--client", mode,
	}, &out, &errb)
	if err != nil {
		t.Fatal(err, errb.String())
	}
	var res wsResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatal(err, out.String())
	}
	if res.Client != mode || res.Connected != 5 || res.Changes != 6 || res.LoadgenCPUPerFrameUs <= 0 || res.Delivered != res.Expected || res.Lost != 0 || res.Gaps != 0 || res.Duplicates != 0 {
		t.Fatalf("result %+v, stderr %s", res, errb.String())
	}
	if p.pongs.Load() < 5 {
		t.Fatalf("pings answered: %d", p.pongs.Load())
	}
	if !strings.HasPrefix(res.Scenario, "peer_centrifugo_5_clients") {
		t.Fatalf("scenario %q", res.Scenario)
	}
}

// TestPeerPushSeqMatchesDecode: the lean scan reads a publication's seq as encoding/json
// does, on the peer's frames as it writes them (captured from Centrifugo v6.9.1) and the
// fake peer's; everything else is left to the full decode, never misread.
func TestPeerPushSeqMatchesDecode(t *testing.T) {
	pad := strings.Repeat("x", 360)
	for _, line := range []string{
		`{"push":{"channel":"schedule","pub":{"data":{"seq":1,"pad":"` + pad + `"}}}}`,
		`{"push":{"channel":"schedule","pub":{"data":{"seq":9007199254740993,"pad":""},"offset":12,"epoch":"x"}}}`,
		`{"push":{"channel":"other","pub":{"data":{"seq":3}}}}`,
		`{"push":{"channel":"schedule","join":{"info":{"client":"x"}}}}`,
		`{"push":{"channel":"sched\"ule","pub":{"data":{"seq":3}}}}`,
		`{"push":{"channel":"schedule","pub":{"data":{"pad":"x","seq":4}}}}`,
		`{"push":{"channel":"schedule","pub":{"data":{"seq":4.5}}}}`,
		`{"id":2,"subscribe":{}}`,
	} {
		var m peerMsg
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			if _, _, ok := peerPushSeq([]byte(line), "schedule"); ok {
				t.Errorf("%q: the scan read what encoding/json refuses (%v)", line, err)
			}
			continue
		}
		wantPub := m.Push != nil && m.Push.Pub != nil && m.Push.Channel == "schedule"
		seq, pub, ok := peerPushSeq([]byte(line), "schedule")
		if !ok {
			if m.Push != nil && m.Push.Pub != nil && strings.HasPrefix(line, `{"push":{"channel":"schedule","pub":{"data":{"seq":`) {
				t.Errorf("%q: the scan left the peer's usual layout to the full decode", line)
			}
			continue
		}
		if pub != wantPub || (pub && seq != m.Push.Pub.Data.Seq) {
			t.Errorf("%q: scan says seq %d pub %v, the full decode %+v", line, seq, pub, m.Push)
		}
	}
}
