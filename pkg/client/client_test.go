package client

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fasthttp/websocket"
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
