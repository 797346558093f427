// Package client is the Go SDK of Cabildo's realtime protocol: one websocket per client,
// authentication, subscriptions with typed callbacks, and automatic reconnects with
// exponential backoff and jitter that resume every subscription from the last version it
// saw, so no update is missed or seen twice. It also checks the protocol's continuity
// promise as it goes: every update's prev must equal the last version seen.
//
// A snapshot too big for one frame comes in parts; the client joins them and delivers one
// snapshot once the last has come. A connection lost before then delivers nothing: the
// client resumes from the last version it delivered, as after any drop.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fasthttp/websocket"

	"github.com/cabildo/cabildo/pkg/protocol"
)

// Options configure a Client.
type Options struct {
	// URL of the websocket endpoint, e.g. ws://127.0.0.1:8080/v1/ws.
	URL string
	// Token, when set, is sent in an auth frame on every connection (never in the URL).
	Token string
	// Header is sent with the upgrade request (an Origin, for instance).
	Header http.Header
	// MinBackoff and MaxBackoff bound the wait between reconnects; each wait is drawn
	// with full jitter from an exponentially growing range. Defaults 100 ms and 10 s.
	MinBackoff, MaxBackoff time.Duration
	// OnConnect is called after each (re)connection; OnDisconnect with the close code
	// (0 when the connection broke without one).
	OnConnect    func()
	OnDisconnect func(code int, err error)
	// Dialer dials the websocket; nil uses a default with a 10 s handshake timeout.
	Dialer *websocket.Dialer
	// IdleTimeout ends a connection on which nothing (no frame, no ping) arrived for this
	// long, and reconnects: a server that vanished without closing the connection (power
	// loss, a partition) is noticed. The server pings every 25 s; default 60 s.
	IdleTimeout time.Duration
	// ReadLimit is the largest frame accepted: a bigger one ends the connection (1009)
	// and the client reconnects. Default protocol.MaxServerFrameBytes, the most the
	// protocol lets a server send; negative for no limit.
	ReadLimit int64
}

// Handler receives one subscription's frames, in order, on the client's read goroutine.
type Handler struct {
	// OnSnapshot delivers the channel's whole state at version: on the first subscribe,
	// and whenever continuity cannot be given (the client was away too long).
	OnSnapshot func(version uint64, data json.RawMessage)
	// OnUpdate delivers one update; prev is the version before it.
	OnUpdate func(version, prev uint64, data json.RawMessage)
	// OnError delivers error frames about this subscription, and the server ending it:
	// code token_expired when the token that allowed it expired (call SetToken with a
	// fresh one and the subscription resumes where it stopped), forbidden when a new token
	// does not allow it.
	OnError func(code, message string)
}

// Stats count what the client saw.
type Stats struct {
	Connects   uint64 // successful connections, the first included
	Snapshots  uint64
	Updates    uint64
	Gaps       uint64 // updates whose prev was not the last version seen, or snapshot parts out of sequence: must stay 0
	Duplicates uint64 // updates at or below the last version seen: must stay 0
}

// Client is a connection that keeps itself up.
type Client struct {
	opts   Options
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu   sync.Mutex
	conn *websocket.Conn
	subs map[string]*Subscription
	err  error // why the client stopped for good

	connects, snapshots, updates, gaps, dups atomic.Uint64
	nextID                                   atomic.Uint64
}

// Subscription is one channel the client keeps subscribed across reconnects.
type Subscription struct {
	Channel string
	lang    string
	h       Handler
	// last is the last version delivered; has says whether there is one.
	last uint64
	has  bool
	// ended: the server ended it (its token expired); SetToken resumes it.
	ended bool
	// parts joins a snapshot in parts; only the read goroutine touches it.
	parts protocol.Parts
}

// ErrUnauthorized stops the client: the server refused the token, and reconnecting with
// the same token cannot help.
var ErrUnauthorized = errors.New("client: token refused")

// Dial starts a client. It returns once the first connection is up (or ctx ends); the
// client then reconnects by itself until Close.
func Dial(ctx context.Context, opts Options) (*Client, error) {
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 10 * time.Second
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 60 * time.Second
	}
	if opts.Dialer == nil {
		opts.Dialer = &websocket.Dialer{HandshakeTimeout: 10 * time.Second, Proxy: http.ProxyFromEnvironment}
	}
	if opts.ReadLimit == 0 {
		opts.ReadLimit = protocol.MaxServerFrameBytes
	}
	c := &Client{opts: opts, subs: map[string]*Subscription{}, done: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	conn, err := c.dial(ctx)
	if err != nil {
		c.cancel()
		return nil, err
	}
	go c.run(conn)
	return c, nil
}

func (c *Client) dial(ctx context.Context) (*websocket.Conn, error) {
	conn, resp, err := c.opts.Dialer.DialContext(ctx, c.opts.URL, c.opts.Header)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("client: dial %s: %w", c.opts.URL, err)
	}
	if c.opts.ReadLimit > 0 {
		conn.SetReadLimit(c.opts.ReadLimit)
	}
	c.mu.Lock()
	tok := c.opts.Token
	c.mu.Unlock()
	if tok != "" {
		if err := conn.WriteJSON(protocol.ClientFrame{Type: protocol.TypeAuth, Token: tok}); err != nil {
			conn.Close()
			return nil, fmt.Errorf("client: auth: %w", err)
		}
	}
	c.mu.Lock()
	c.conn = conn
	var again []*Subscription
	for _, s := range c.subs {
		if !s.ended {
			again = append(again, s)
		}
	}
	c.mu.Unlock()
	// Resubscribe where each subscription left off.
	for _, s := range again {
		if err := c.sendSubscribe(conn, s); err != nil {
			conn.Close()
			return nil, err
		}
	}
	c.connects.Add(1)
	if c.opts.OnConnect != nil {
		c.opts.OnConnect()
	}
	return conn, nil
}

func (c *Client) sendSubscribe(conn *websocket.Conn, s *Subscription) error {
	f := protocol.ClientFrame{Type: protocol.TypeSubscribe, ID: c.nextID.Add(1), Channel: s.Channel, Lang: s.lang}
	c.mu.Lock()
	if s.has {
		v := s.last
		f.Since = &v
	}
	err := conn.WriteJSON(f)
	c.mu.Unlock()
	return err
}

// run reads frames and reconnects until Close or a refused token.
func (c *Client) run(conn *websocket.Conn) {
	defer close(c.done)
	attempt := 0
	for {
		code, err := c.read(conn)
		conn.Close()
		// Parts of a snapshot cut short are never delivered: the resubscribe resumes from
		// the last version delivered, and brings the updates or a whole snapshot.
		c.mu.Lock()
		for _, s := range c.subs {
			s.parts.Reset()
		}
		c.mu.Unlock()
		if c.opts.OnDisconnect != nil && c.ctx.Err() == nil {
			c.opts.OnDisconnect(code, err)
		}
		if code == protocol.CloseUnauthorized {
			c.stop(ErrUnauthorized)
			return
		}
		for {
			if c.ctx.Err() != nil {
				c.stop(c.ctx.Err())
				return
			}
			wait := backoff(c.opts.MinBackoff, c.opts.MaxBackoff, attempt)
			attempt++
			select {
			case <-c.ctx.Done():
				c.stop(c.ctx.Err())
				return
			case <-time.After(wait):
			}
			if conn, err = c.dial(c.ctx); err == nil {
				attempt = 0
				break
			}
		}
	}
}

// backoff draws a wait with full jitter from [0, min(max, base·2^attempt)], never below
// base, so a thousand clients dropped at once do not come back at once.
func backoff(base, limit time.Duration, attempt int) time.Duration {
	ceil := base << min(attempt, 20)
	if ceil > limit || ceil <= 0 {
		ceil = limit
	}
	return base + rand.N(ceil)
}

func (c *Client) stop(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
}

// read dispatches frames until the connection ends; it returns the close code.
func (c *Client) read(conn *websocket.Conn) (int, error) {
	idle := c.opts.IdleTimeout
	_ = conn.SetReadDeadline(time.Now().Add(idle))
	conn.SetPingHandler(func(data string) error {
		_ = conn.SetReadDeadline(time.Now().Add(idle))
		err := conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		if errors.Is(err, websocket.ErrCloseSent) {
			return nil
		}
		return err
	})
	for {
		_, b, err := conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, err
			}
			return 0, err
		}
		_ = conn.SetReadDeadline(time.Now().Add(idle))
		var f protocol.ServerFrame
		if err := json.Unmarshal(b, &f); err != nil {
			continue
		}
		if err := c.dispatch(f); err != nil {
			return 0, err
		}
	}
}

// dispatch delivers one frame. An error ends the connection: the client resumes on a
// new one.
func (c *Client) dispatch(f protocol.ServerFrame) error {
	c.mu.Lock()
	s := c.subs[f.Channel]
	c.mu.Unlock()
	if s == nil {
		return nil
	}
	if f.Parts != 0 || s.parts.Pending() {
		whole, done, err := s.parts.Add(f)
		if err != nil {
			// A server that breaks the sequence cannot be trusted with this connection's
			// state: start again from the last version delivered.
			c.gaps.Add(1)
			return fmt.Errorf("client: %s: %w", f.Channel, err)
		}
		if !done {
			return nil
		}
		f = whole
	}
	switch f.Type {
	case protocol.TypeSnapshot:
		c.snapshots.Add(1)
		c.mu.Lock()
		s.last, s.has = f.Version, true
		c.mu.Unlock()
		if s.h.OnSnapshot != nil {
			s.h.OnSnapshot(f.Version, f.Data)
		}
	case protocol.TypeUpdate:
		c.updates.Add(1)
		c.mu.Lock()
		last, has := s.last, s.has
		switch {
		case has && f.Version <= last:
			c.mu.Unlock()
			c.dups.Add(1)
			return nil
		case has && (f.Prev == nil || *f.Prev != last):
			c.gaps.Add(1)
		}
		s.last, s.has = f.Version, true
		c.mu.Unlock()
		prev := uint64(0)
		if f.Prev != nil {
			prev = *f.Prev
		}
		if s.h.OnUpdate != nil {
			s.h.OnUpdate(f.Version, prev, f.Data)
		}
	case protocol.TypeError:
		switch f.Code {
		case protocol.ErrUnauthorized, protocol.ErrTokenExpired, protocol.ErrForbidden:
			// The server refused the (re)subscribe for the token in force: like a
			// subscription it ended, it waits for SetToken to resume it.
			c.mu.Lock()
			s.ended = true
			c.mu.Unlock()
		}
		if s.h.OnError != nil {
			s.h.OnError(f.Code, f.Message)
		}
	case protocol.TypeUnsubscribed:
		if f.Code == "" {
			return nil // an unsubscribe this client asked for
		}
		c.mu.Lock()
		s.ended = true
		c.mu.Unlock()
		if s.h.OnError != nil {
			s.h.OnError(f.Code, f.Message)
		}
	}
	return nil
}

// SetToken replaces the client's token: it authenticates the current connection with it
// (and every later one), then resumes the subscriptions the server ended when the old
// token expired, each from the last version it delivered.
func (c *Client) SetToken(tok string) error {
	c.mu.Lock()
	c.opts.Token = tok
	conn := c.conn
	var ended []*Subscription
	for _, s := range c.subs {
		if s.ended {
			s.ended = false
			ended = append(ended, s)
		}
	}
	var err error
	if conn != nil {
		err = conn.WriteJSON(protocol.ClientFrame{Type: protocol.TypeAuth, ID: c.nextID.Add(1), Token: tok})
	}
	c.mu.Unlock()
	if conn == nil || err != nil {
		return err // the next connection authenticates and resubscribes
	}
	for _, s := range ended {
		if err := c.sendSubscribe(conn, s); err != nil {
			return err
		}
	}
	return nil
}

// Subscribe subscribes to a channel in lang ("es" or "en", "" for the server's default)
// and keeps it subscribed across reconnects.
func (c *Client) Subscribe(channel, lang string, h Handler) (*Subscription, error) {
	s := &Subscription{Channel: channel, lang: lang, h: h}
	c.mu.Lock()
	if _, dup := c.subs[channel]; dup {
		c.mu.Unlock()
		return nil, fmt.Errorf("client: already subscribed to %s", channel)
	}
	c.subs[channel] = s
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		// A failed send is retried by the next reconnect's resubscribe.
		_ = c.sendSubscribe(conn, s)
	}
	return s, nil
}

// Last returns the last version the subscription delivered.
func (s *Subscription) Last(c *Client) (uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return s.last, s.has
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{Connects: c.connects.Load(), Snapshots: c.snapshots.Load(), Updates: c.updates.Load(),
		Gaps: c.gaps.Load(), Duplicates: c.dups.Load()}
}

// Err says why the client stopped, once Done is closed.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Done is closed when the client has stopped for good.
func (c *Client) Done() <-chan struct{} { return c.done }

// Close stops the client and closes its connection.
func (c *Client) Close() error {
	c.cancel()
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn != nil {
		_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(protocol.CloseNormal, ""), time.Now().Add(time.Second))
		conn.Close()
	}
	<-c.done
	return nil
}
