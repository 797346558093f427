package httpapi

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"os"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/fasthttp/websocket"
	fws "github.com/gofiber/contrib/websocket"
	"github.com/gofiber/fiber/v2"
	"golang.org/x/time/rate"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/realtime"
	"github.com/cabildo/cabildo/internal/token"
	"github.com/cabildo/cabildo/pkg/protocol"
)

// Realtime configures the websocket endpoint.
type Realtime struct {
	Hub      *realtime.Hub
	Channels *realtime.Channels
	// Origins browsers may connect from ("https://app.example.org"). A request without an
	// Origin header (a native app) always passes; a foreign browser origin gets 403
	// before the upgrade, so no page on another site can open a socket with a user's
	// cookies. ["*"] allows every origin, for development only.
	Origins []string

	MaxConnsPerIP int           // open sockets per client IP, default 5,000 (venue Wi-Fi is one IP)
	FrameRate     float64       // frames per second per connection, default 20
	FrameBurst    int           // default 40
	AuthTimeout   time.Duration // close an idle unauthenticated socket after this, default 5 s
	IdleTimeout   time.Duration // no frame and no pong for this long: dead peer, default 35 s (the hub pings)
	MaxSubs       int           // default protocol.MaxSubscriptions
	WriteDeadline time.Duration // one frame's write, default 10 s
}

func (r *Realtime) defaults() {
	if r.FrameRate == 0 {
		r.FrameRate = protocol.FramesPerSecond
	}
	if r.FrameBurst == 0 {
		r.FrameBurst = protocol.FrameBurst
	}
	if r.AuthTimeout == 0 {
		r.AuthTimeout = protocol.AuthTimeoutSeconds * time.Second
	}
	if r.MaxConnsPerIP == 0 {
		r.MaxConnsPerIP = 5000
	}
	if r.IdleTimeout == 0 {
		r.IdleTimeout = protocol.IdleTimeoutSeconds * time.Second
	}
	if r.MaxSubs == 0 {
		r.MaxSubs = protocol.MaxSubscriptions
	}
	if r.WriteDeadline == 0 {
		r.WriteDeadline = 10 * time.Second
	}
}

// checkOrigin runs before the upgrade (the websocket library's own Origins option would
// also refuse native apps, which send no Origin). Every refusal is logged with its reason:
// an operator whose users see a bare 403 must find why in the log.
func (s *Server) checkOrigin(c *fiber.Ctx) error {
	if !fws.IsWebSocketUpgrade(c) {
		s.refusals.log(s.log, "not a websocket upgrade", "ip", c.IP(), "user_agent", c.Get(fiber.HeaderUserAgent))
		return cabildo.Errorf(cabildo.CodeInvalidRequest, "this endpoint speaks websocket only: send an Upgrade request")
	}
	origin := c.Get(fiber.HeaderOrigin)
	if !s.originAllowed(c, origin) {
		s.refusals.log(s.log, "origin not allowed (add it to --allowed-origins)", "origin", origin, "ip", c.IP())
		return cabildo.Errorf(cabildo.CodeForbidden, "websocket connections from origin %q are not allowed here: the server's operator lists browser origins in --allowed-origins", shortOrigin(origin))
	}
	ip := c.IP()
	if !s.perIP.acquire(ip, s.opts.Realtime.MaxConnsPerIP) {
		s.refusals.log(s.log, "too many open websockets from one address (--ws-max-conns-per-ip)", "ip", ip, "limit", s.opts.Realtime.MaxConnsPerIP)
		return &cabildo.Error{Code: cabildo.CodeRateLimited, Message: "too many open connections from this address", RetryAfter: 5 * time.Second}
	}
	c.Locals(ipKey, ip)
	return c.Next()
}

// originAllowed: no Origin (a native app), the server's own origin (a page it served, or a
// client such as python's websocket-client that names the server it dials), or one the
// operator allowed. A page on another site sends its own origin, which matches none of
// these, so it cannot open a socket in a visitor's name (CSWSH).
func (s *Server) originAllowed(c *fiber.Ctx, origin string) bool {
	if origin == "" || slices.Contains(s.opts.Realtime.Origins, "*") {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, string(c.Request().Host())) && (u.Scheme == "http" || u.Scheme == "https") {
		return true
	}
	return slices.Contains(s.opts.Realtime.Origins, u.Scheme+"://"+u.Host)
}

// shortOrigin keeps an echoed Origin to a sane length.
func shortOrigin(o string) string {
	if len(o) > 100 || !utf8.ValidString(o) {
		return "(unreadable)"
	}
	return o
}

// refusalLog logs refused handshakes, at most a few a second, so that a flood of refusals
// cannot flood the log; the next line says how many were left out.
type refusalLog struct {
	limit      *rate.Limiter
	suppressed atomic.Int64
}

func newRefusalLog() *refusalLog { return &refusalLog{limit: rate.NewLimiter(5, 20)} }

func (r *refusalLog) log(l *slog.Logger, reason string, args ...any) {
	if !r.limit.Allow() {
		r.suppressed.Add(1)
		return
	}
	if n := r.suppressed.Swap(0); n > 0 {
		args = append(args, "refusals_not_logged", n)
	}
	l.Info("websocket refused: "+reason, args...)
}

const ipKey = "cabildo.ip"

// ipCounts counts open sockets per client address.
type ipCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func (p *ipCounts) acquire(ip string, limit int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n == nil {
		p.n = map[string]int{}
	}
	if p.n[ip] >= limit {
		return false
	}
	p.n[ip]++
	return true
}

func (p *ipCounts) release(ip string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.n[ip]--; p.n[ip] <= 0 {
		delete(p.n, ip)
	}
}

func (s *Server) websocketHandler() fiber.Handler {
	return fws.New(func(conn *fws.Conn) { s.serveSocket(conn) }, fws.Config{
		HandshakeTimeout: 10 * time.Second, EnableCompression: false,
		// The library's default would send the panic's text to the client.
		RecoverHandler: func(conn *fws.Conn) {
			if p := recover(); p != nil {
				s.logPanic(p)
				closeWith(conn, websocket.CloseInternalServerErr, "internal error", closeDeadline)
			}
		},
		// Small buffers and a shared write buffer pool: most sockets are idle most of the
		// time, and memory per connection is what bounds a node. Reads already pass
		// through the server's own 4 KiB buffer, which a hijacked connection keeps.
		ReadBufferSize: 512, WriteBufferSize: 4 << 10, WriteBufferPool: &writeBuffers,
	})
}

var writeBuffers sync.Pool

// logPanic records a websocket handler's panic for operators; the client only gets 1011.
func (s *Server) logPanic(p any) {
	s.log.Error("websocket handler panicked", "panic", p, "stack", string(debug.Stack()))
}

// socket is one websocket connection: its read loop (the connection's only goroutine
// while it is idle) and the realtime.Conn the hub writes through.
type socket struct {
	s        *Server
	rt       *Realtime
	conn     *fws.Conn
	client   *realtime.Client
	limiter  *rate.Limiter
	claims   atomic.Pointer[token.Claims]
	strikes  int           // frames refused for rate in a row
	overSubs int           // subscribes refused for the subscription limit
	aborted  atomic.Bool   // the hub gave up on this peer: stop writing
	torn     bool          // a write failed midway: the peer may hold part of a frame
	deadline time.Time     // the write deadline Write last set on the socket
	gone     chan struct{} // closed once the hub has closed the connection

	mu         sync.Mutex                  // guards the token-bound subscriptions
	restricted map[string]realtime.Channel // subscriptions a token allowed, by topic
	expiry     *time.Timer                 // ends them when the token expires
}

func (s *Server) serveSocket(conn *fws.Conn) {
	if ip, ok := conn.Locals(ipKey).(string); ok {
		defer s.perIP.release(ip)
	}
	s.m.sockets.Inc()
	defer s.m.sockets.Dec()
	rt := &s.opts.Realtime
	conn.SetReadLimit(protocol.MaxFrameBytes)
	sk := &socket{s: s, rt: rt, conn: conn, gone: make(chan struct{}),
		limiter: rate.NewLimiter(rate.Limit(rt.FrameRate), rt.FrameBurst)}
	client, err := rt.Hub.Register(sk)
	if err != nil {
		closeWith(conn, protocol.CloseReconnect, "server shutting down: reconnect", closeDeadline)
		return
	}
	sk.client = client
	// Anyone may hold public channels without a token; a socket that did neither is
	// closed, so idle sockets cannot pile up.
	auth := time.AfterFunc(rt.AuthTimeout, func() {
		if client.Subscriptions() == 0 && sk.claims.Load() == nil {
			client.Close(protocol.CloseAuthTimeout, "authenticate or subscribe within the time limit")
		}
	})
	defer auth.Stop()
	defer func() {
		if p := recover(); p != nil {
			s.logPanic(p)
			client.Close(websocket.CloseInternalServerErr, "internal error")
		}
		client.Close(protocol.CloseNormal, "")
		// The connection goes back to the server only once the hub's writer is done with it.
		<-sk.gone
		// Read on until the peer answers the close or the close deadline passes, so that
		// the close frame is not lost to a reset (closing a socket with unread input
		// resets it).
		for {
			if _, _, err := sk.conn.NextReader(); err != nil {
				return
			}
		}
	}()
	sk.readLoop()
}

// closeDeadline bounds the close frame's write: a peer that does not read must not hold
// a shutdown or a slow-consumer close back.
const closeDeadline = time.Second

var errAborted = errors.New("websocket: write aborted")

// Write implements realtime.Conn. The frames go out as whole websocket text frames,
// framed here rather than by the library's per-message writer, in as few writes to the
// socket as fit wireBatch bytes: one for a broadcast, one for a snapshot and the frames
// behind it. The library still writes the control frames (pings, pongs, the close); each
// of its frames, like each batch of ours, is a single write to the socket, and the runtime
// holds the socket's write lock for each, so neither can cut into the other.
func (sk *socket) Write(frames []realtime.Frame) error { return sk.write(frames, false) }

// WriteWithPing implements realtime.PingWriter: a ping ahead of the frames, in the same
// write.
func (sk *socket) WriteWithPing(frames []realtime.Frame) error { return sk.write(frames, true) }

func (sk *socket) write(frames []realtime.Frame, ping bool) error {
	nc := sk.conn.NetConn()
	if err := sk.armDeadline(nc, false); err != nil {
		return err
	}
	bp := wireBufs.Get().(*[]byte)
	b := (*bp)[:0]
	if ping {
		b = append(b, 0x80|websocket.PingMessage, 0) // an empty ping, as Ping sends
	}
	defer func() {
		if cap(b) <= 4*wireBatch {
			*bp = b[:0]
			wireBufs.Put(bp)
		}
	}()
	for i, f := range frames {
		b = appendTextFrame(b, f)
		if len(b) < wireBatch && i < len(frames)-1 {
			continue
		}
		if sk.aborted.Load() {
			return errAborted
		}
		if err := sk.writeWire(nc, b); err != nil {
			sk.torn = true
			return err
		}
		b = b[:0]
	}
	return nil
}

// armDeadline bounds Write's writes by WriteDeadline. Setting a socket's deadline costs a
// timer update in the runtime, so it is renewed only once half of it has passed: a write
// may block between half the deadline and all of it, never longer.
func (sk *socket) armDeadline(nc net.Conn, force bool) error {
	now := time.Now()
	if !force && now.Add(sk.rt.WriteDeadline/2).Before(sk.deadline) {
		return nil
	}
	sk.deadline = now.Add(sk.rt.WriteDeadline)
	return nc.SetWriteDeadline(sk.deadline)
}

// writeWire writes b. The library's control frames set the socket's deadline too (a pong
// answering the peer's ping, for a second): a write refused at once for a deadline that
// is not Write's own is made again under Write's, unless the hub has aborted the peer.
func (sk *socket) writeWire(nc net.Conn, b []byte) error {
	n, err := nc.Write(b)
	if err != nil && n == 0 && errors.Is(err, os.ErrDeadlineExceeded) && !sk.aborted.Load() && time.Now().Before(sk.deadline) {
		if err := sk.armDeadline(nc, true); err != nil {
			return err
		}
		if sk.aborted.Load() { // Abort's deadline may have just been replaced by ours
			return errAborted
		}
		_, err = nc.Write(b)
	}
	return err
}

// wireBatch is the most bytes of frames one write to a socket carries (one frame may be
// bigger: a snapshot's, up to protocol.MaxServerFrameBytes).
const wireBatch = 32 << 10

// wireBufs are the writers' buffers for Write.
var wireBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// appendTextFrame appends f as one unmasked, unfragmented websocket text frame (RFC 6455,
// 5.2), as a server sends it.
func appendTextFrame(b, f []byte) []byte {
	const finText = 0x80 | websocket.TextMessage
	switch n := len(f); {
	case n < 126:
		b = append(b, finText, byte(n))
	case n <= 0xffff:
		b = append(b, finText, 126, byte(n>>8), byte(n))
	default:
		b = append(b, finText, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, f...)
}

// Ping implements realtime.Conn.
func (sk *socket) Ping() error {
	return sk.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(sk.rt.WriteDeadline))
}

// Abort implements realtime.Conn: a write blocked on a full socket returns now.
func (sk *socket) Abort() {
	sk.aborted.Store(true)
	_ = sk.conn.NetConn().SetWriteDeadline(time.Now())
}

// Close implements realtime.Conn: the close frame, then a second for the peer to answer
// it before the read loop gives up on the connection. After a write that failed midway
// (a slow consumer's aborted write, usually) a close frame would only follow a torn
// frame, so the connection just ends: the peer sees it drop (1006) and resumes, as it
// would after 4503. A peer whose socket is full could not read a close frame in time
// anyway.
func (sk *socket) Close(code int, text string) {
	if sk.torn {
		_ = sk.conn.SetReadDeadline(time.Now())
	} else {
		closeWith(sk.conn, code, text, closeDeadline)
		_ = sk.conn.SetReadDeadline(time.Now().Add(closeDeadline))
	}
	close(sk.gone)
}

func closeWith(conn interface {
	WriteControl(int, []byte, time.Time) error
}, code int, text string, d time.Duration) {
	_ = conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(d))
}

// closing reports whether the hub has closed this socket's client.
func (sk *socket) closing() bool {
	select {
	case <-sk.client.Done():
		return true
	default:
		return false
	}
}

func (sk *socket) readLoop() {
	idle := sk.rt.IdleTimeout
	extend := func() {
		if !sk.closing() { // once closing, the close deadline stands
			_ = sk.conn.SetReadDeadline(time.Now().Add(idle))
		}
	}
	extend()
	sk.conn.SetPongHandler(func(string) error { extend(); return nil })
	// The library would answer a peer's close at once, from this goroutine, while the
	// hub's writer may still be writing frames to the socket: data after a close frame,
	// which RFC 6455 forbids. The hub answers instead, after what it has queued, with the
	// peer's code (none if it sent none).
	sk.conn.SetCloseHandler(func(code int, _ string) error {
		sk.client.Close(code, "")
		return nil
	})
	for {
		typ, msg, err := sk.conn.ReadMessage()
		if err != nil {
			// The library has already sent 1009 when the frame's header announced more
			// than the limit (so a reply still queued in the hub may be cut off by it).
			if errors.Is(err, websocket.ErrReadLimit) {
				sk.client.Close(protocol.CloseTooBig, "frame too large")
			}
			return
		}
		if sk.closing() {
			return
		}
		extend()
		if typ != websocket.TextMessage {
			sk.client.Close(protocol.ClosePolicy, "send JSON text frames")
			return
		}
		if !utf8.Valid(msg) {
			sk.client.Close(protocol.CloseInvalidData, "frames must be UTF-8")
			return
		}
		if !sk.limiter.Allow() {
			sk.strikes++
			if sk.strikes > sk.rt.FrameBurst {
				sk.client.Close(protocol.CloseRateLimited, "too many frames")
				return
			}
			if sk.strikes == 1 {
				// One warning per streak: a flood must not fill its own queue with them.
				sk.reply(protocol.ServerFrame{Type: protocol.TypeError, Code: protocol.ErrRateLimited, Message: "too many frames: slow down"})
			}
			continue
		}
		sk.strikes = 0
		sk.handle(msg)
	}
}

func (sk *socket) reply(f protocol.ServerFrame) {
	b, err := json.Marshal(f)
	if err == nil {
		sk.client.Enqueue(b)
	}
}

func (sk *socket) fail(id uint64, channel, code, msg string) {
	if len(channel) > protocol.MaxChannelName {
		// Echoed, a name near the client's frame limit could come back over the server's
		// (escaping makes a "<" six bytes): no server frame may pass MaxServerFrameBytes.
		channel = ""
	}
	sk.reply(protocol.ServerFrame{Type: protocol.TypeError, ID: id, Channel: channel, Code: code, Message: msg})
}

func (sk *socket) handle(msg []byte) {
	var f protocol.ClientFrame
	// The same strict rules as request bodies: {"TYPE":"ping"} is not a ping.
	if err := decodeStrict(msg, &f); err != nil {
		sk.fail(0, "", protocol.ErrBadFrame, "a frame is one JSON object with a known type and fields, named exactly as documented")
		return
	}
	switch f.Type {
	case protocol.TypePing:
		sk.reply(protocol.ServerFrame{Type: protocol.TypePong, ID: f.ID})
	case protocol.TypeAuth:
		claims, err := sk.s.opts.Tokens.Verify(f.Token)
		if err != nil {
			// The token package's message is written for clients ("signed with a different
			// key than this server's"); anything else stays a plain refusal.
			msg := "the token is not valid"
			var ce *cabildo.Error
			if errors.As(err, &ce) && ce.Code == cabildo.CodeUnauthorized {
				msg = ce.Message
			}
			sk.fail(f.ID, "", protocol.ErrUnauthorized, msg)
			return
		}
		sk.claims.Store(&claims)
		sk.reauthorized(&claims)
		sk.reply(protocol.ServerFrame{Type: protocol.TypeAuthOK, ID: f.ID})
	case protocol.TypeSubscribe:
		sk.subscribe(f)
	case protocol.TypeUnsubscribe:
		ch, err := realtime.ParseChannel(f.Channel)
		if err != nil {
			sk.frameError(f, err)
			return
		}
		found := false
		for _, key := range ch.Keys() {
			if sk.client.Subscribed(key) {
				sk.rt.Hub.Unsubscribe(sk.client, key)
				sk.untrack(key)
				found = true
			}
		}
		if !found {
			sk.fail(f.ID, f.Channel, protocol.ErrNotSubscribed, "not subscribed to this channel")
			return
		}
		sk.reply(protocol.ServerFrame{Type: protocol.TypeUnsubscribed, ID: f.ID, Channel: f.Channel})
	default:
		sk.fail(f.ID, "", protocol.ErrUnknownType, "unknown frame type")
	}
}

func (sk *socket) frameError(f protocol.ClientFrame, err error) {
	var fe *realtime.FrameError
	if errors.As(err, &fe) {
		sk.fail(f.ID, f.Channel, fe.Code, fe.Message)
		return
	}
	sk.s.log.Error("websocket subscribe failed", "err", err)
	sk.fail(f.ID, f.Channel, protocol.ErrUnknownChannel, "the channel is not available")
}

func (sk *socket) subscribe(f protocol.ClientFrame) {
	ch, err := realtime.ParseChannel(f.Channel)
	if err != nil {
		sk.frameError(f, err)
		return
	}
	lang := cabildo.ES
	if f.Lang != "" {
		l, ok := cabildo.ParseLang(f.Lang)
		if !ok {
			sk.fail(f.ID, f.Channel, protocol.ErrBadFrame, "lang must be es or en")
			return
		}
		lang = l
	}
	claims := sk.claims.Load()
	if err := authorize(claims, ch, time.Now()); err != nil {
		sk.frameError(f, err)
		return
	}
	for _, key := range ch.Keys() {
		if sk.client.Subscribed(key) {
			sk.fail(f.ID, f.Channel, protocol.ErrAlreadySubscribed, "already subscribed; unsubscribe first")
			return
		}
	}
	if sk.client.Subscriptions() >= sk.rt.MaxSubs {
		if sk.overSubs++; sk.overSubs > protocol.OverSubscribes {
			sk.client.Close(protocol.CloseTooManySubs, "too many subscriptions")
			return
		}
		sk.fail(f.ID, f.Channel, protocol.ErrTooManySubscriptions, "too many subscriptions on this connection")
		return
	}
	if needsToken(ch) {
		// Under the socket's lock, so the token's expiry cannot slip in between the
		// subscription and its tracking.
		sk.mu.Lock()
		defer sk.mu.Unlock()
	}
	err = sk.rt.Channels.Subscribe(sk.client, ch, lang, f.Since, f.ID)
	if err != nil && !errors.Is(err, realtime.ErrClosed) {
		sk.frameError(f, err)
		return
	}
	if err == nil && needsToken(ch) {
		sk.trackLocked(ch, claims)
	}
}

// needsToken reports whether a channel needs a token: moderation channels do.
func needsToken(ch realtime.Channel) bool { return ch.Kind == realtime.KindModeration }

// authorize is the one place that says who may subscribe to what. Programme and audience
// channels are public; a moderation channel needs a live moderator token for its event.
func authorize(claims *token.Claims, ch realtime.Channel, now time.Time) error {
	if !needsToken(ch) {
		return nil
	}
	if claims == nil {
		return &realtime.FrameError{Code: protocol.ErrUnauthorized, Message: "authenticate first: send an auth frame with a moderator token"}
	}
	if claims.ExpiresAt == nil || !now.Before(claims.ExpiresAt.Add(token.Leeway)) {
		return &realtime.FrameError{Code: protocol.ErrTokenExpired, Message: "the token has expired: authenticate again"}
	}
	if claims.Event != ch.Event || claims.Type != token.Moderator {
		return &realtime.FrameError{Code: protocol.ErrForbidden, Message: "this channel needs a moderator token for its event"}
	}
	return nil
}

// trackLocked remembers a subscription its token allowed, and arms the token's expiry.
func (sk *socket) trackLocked(ch realtime.Channel, claims *token.Claims) {
	if sk.restricted == nil {
		sk.restricted = map[string]realtime.Channel{}
	}
	sk.restricted[ch.Key("")] = ch
	if sk.expiry == nil {
		sk.expiry = time.AfterFunc(time.Until(claims.ExpiresAt.Add(token.Leeway)), func() {
			sk.revoke(func(realtime.Channel) bool { return true }, protocol.ErrTokenExpired,
				"your token expired: authenticate again and resubscribe with since")
		})
	}
}

func (sk *socket) untrack(key string) {
	sk.mu.Lock()
	defer sk.mu.Unlock()
	delete(sk.restricted, key)
}

// revoke ends the token-bound subscriptions drop selects. The unsubscribed frame is queued
// after everything the channel sent before, and nothing of it follows.
func (sk *socket) revoke(drop func(realtime.Channel) bool, code, message string) {
	sk.mu.Lock()
	defer sk.mu.Unlock()
	for key, ch := range sk.restricted {
		if !drop(ch) {
			continue
		}
		sk.rt.Hub.Unsubscribe(sk.client, key)
		delete(sk.restricted, key)
		sk.reply(protocol.ServerFrame{Type: protocol.TypeUnsubscribed, Channel: ch.Name(), Code: code, Message: message})
	}
	if len(sk.restricted) == 0 && sk.expiry != nil {
		sk.expiry.Stop()
		sk.expiry = nil
	}
}

// reauthorized applies a new auth frame's claims to the token-bound subscriptions: the
// ones the new token does not allow end, and the expiry follows the new token.
func (sk *socket) reauthorized(claims *token.Claims) {
	now := time.Now()
	sk.revoke(func(ch realtime.Channel) bool { return authorize(claims, ch, now) != nil }, protocol.ErrForbidden,
		"the new token does not allow this channel")
	sk.mu.Lock()
	defer sk.mu.Unlock()
	if sk.expiry != nil {
		sk.expiry.Reset(time.Until(claims.ExpiresAt.Add(token.Leeway)))
	}
}
