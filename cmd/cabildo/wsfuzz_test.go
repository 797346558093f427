package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fasthttp/websocket"

	"github.com/cabildo/cabildo/internal/contract"
	"github.com/cabildo/cabildo/pkg/protocol"
)

// Scenario 15: whatever a client sends, the gateway answers with frames of the contract
// or closes with the code the contract gives for it, and keeps serving.

// fuzzBinary as an input's first byte sends the rest as a binary frame.
const fuzzBinary = 0x02

// mustClose is the close code the contract gives a frame, or 0 for one it must answer.
func mustClose(typ int, payload []byte) int {
	switch {
	case len(payload) > protocol.MaxFrameBytes:
		return protocol.CloseTooBig
	case typ == websocket.BinaryMessage:
		return protocol.ClosePolicy
	case !utf8.Valid(payload):
		return protocol.CloseInvalidData
	}
	return 0
}

var knownCodes = []string{protocol.ErrBadFrame, protocol.ErrUnknownType, protocol.ErrUnknownChannel,
	protocol.ErrChannelNameTooLong, protocol.ErrUnauthorized, protocol.ErrForbidden, protocol.ErrTooManySubscriptions,
	protocol.ErrAlreadySubscribed, protocol.ErrNotSubscribed, protocol.ErrRateLimited}

// replyChecker checks server frames against the contract, remembering frames it has
// passed (most answers repeat byte for byte) so that 100,000 of them stay cheap.
type replyChecker struct {
	v    *contract.FrameValidator
	seed maphash.Seed
	mu   sync.Mutex
	ok   map[uint64]bool
}

func newReplyChecker(t testing.TB) *replyChecker {
	return &replyChecker{v: frames(t), seed: maphash.MakeSeed(), ok: map[uint64]bool{}}
}

// check validates b and says whether it ends the answer to one client frame (error,
// pong, auth_ok, subscribed, unsubscribed) rather than leading up to it (snapshot, update).
func (rc *replyChecker) check(b []byte) (f protocol.ServerFrame, final bool, err error) {
	if err := json.Unmarshal(b, &f); err != nil {
		return f, false, fmt.Errorf("not a JSON frame: %.200q", b)
	}
	h := maphash.Bytes(rc.seed, b)
	rc.mu.Lock()
	known := rc.ok[h]
	rc.mu.Unlock()
	if !known {
		if err := rc.v.Server(b); err != nil {
			return f, false, err
		}
		rc.mu.Lock()
		if len(rc.ok) < 100_000 {
			rc.ok[h] = true
		}
		rc.mu.Unlock()
	}
	switch f.Type {
	case protocol.TypeError:
		if !slices.Contains(knownCodes, f.Code) {
			return f, false, fmt.Errorf("error code %q is not one of pkg/protocol's", f.Code)
		}
		return f, true, nil
	case protocol.TypePong, protocol.TypeAuthOK, protocol.TypeSubscribed, protocol.TypeUnsubscribed:
		return f, true, nil
	case protocol.TypeSnapshot, protocol.TypeUpdate:
		return f, false, nil
	}
	return f, false, fmt.Errorf("unexpected frame type %q", f.Type)
}

// prober sends one frame at a time over a websocket it keeps open across frames.
type prober struct {
	n     *node
	rc    *replyChecker
	c     *websocket.Conn
	probe uint64 // id of the next ping that marks the end of an answer
}

func (p *prober) conn() (*websocket.Conn, error) {
	if p.c == nil {
		c, _, err := websocket.DefaultDialer.Dial(wsURL(p.n), nil)
		if err != nil {
			return nil, fmt.Errorf("dial: %w", err)
		}
		p.c = c
	}
	return p.c, nil
}

func (p *prober) drop() {
	if p.c != nil {
		p.c.Close()
		p.c = nil
	}
}

// send sends one frame and checks the answer: a frame the contract closes on gets that
// close code and nothing else happens; any other frame gets exactly one final reply
// (after a snapshot or updates, for a subscribe), and a ping after it still gets its pong.
func (p *prober) send(typ int, payload []byte) error {
	err := p.exchange(typ, payload)
	if err != nil {
		p.drop()
	}
	return err
}

func (p *prober) exchange(typ int, payload []byte) error {
	c, err := p.conn()
	if err != nil {
		return err
	}
	want := mustClose(typ, payload)
	if err := c.WriteMessage(typ, payload); err != nil && want == 0 {
		return fmt.Errorf("write: %w", err)
	}
	p.probe++
	id := 1<<62 + p.probe
	if want == 0 {
		if err := c.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"type":"ping","id":%d}`, id)); err != nil {
			return fmt.Errorf("write ping: %w", err)
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	finals := 0
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				return fmt.Errorf("connection ended without a close frame: %w", err)
			}
			if ce.Code != want || want == 0 {
				return fmt.Errorf("closed with %d, want %s", ce.Code, map[bool]string{true: "an answer", false: fmt.Sprint(want)}[want == 0])
			}
			p.drop()
			return p.alive()
		}
		f, final, err := p.rc.check(b)
		if err != nil {
			return err
		}
		if want != 0 {
			return fmt.Errorf("a frame the contract closes on (%d) was answered: %.200s", want, b)
		}
		if f.Type == protocol.TypePong && f.ID == id {
			if finals != 1 {
				return fmt.Errorf("%d replies, want exactly one", finals)
			}
			return nil
		}
		if final {
			finals++
		}
	}
}

// alive checks on a fresh connection that the node still answers a ping.
func (p *prober) alive() error {
	if err := p.exchange(websocket.TextMessage, []byte(`{"type":"ping","id":1}`)); err != nil {
		return fmt.Errorf("after a close, on a fresh connection: %w", err)
	}
	return nil
}

func fuzzSeeds() [][]byte {
	ch := "schedule:" + demoEvent
	seeds := []string{
		// Bad JSON.
		`{"type":`, `{`, `}`, `[]`, `""`, `null`, `1`, ``, ` `, `{"type":"ping",}`, `{"type":"ping"}{"type":"ping"}`,
		`{'type':'ping'}`, `{"type":"ping"`, "\ufeff" + `{"type":"ping"}`,
		// Unknown types and fields.
		`{"type":"dance"}`, `{"type":""}`, `{"type":"PING"}`, `{"type":"update","channel":"` + ch + `"}`,
		`{"type":"ping","votes":1}`, `{"type":"subscribe","channel":"` + ch + `","admin":true}`, `{"type":"ping","Type":"ping"}`,
		// Deep nesting: over the frame limit, and under it but past the decoder's depth limit.
		strings.Repeat("[", 100_000), `{"type":"ping","id":` + strings.Repeat("[", 60_000),
		strings.Repeat(`{"a":`, 12_000), `{"type":"subscribe","channel":` + strings.Repeat(`{"x":`, 11_000),
		// Invalid UTF-8.
		"{\"type\":\"ping\xff\"}", "\xc3\x28", "\xed\xa0\x80", "\xc0\xaf", "{\"type\":\"subscribe\",\"channel\":\"schedule:\xfe\"}",
		// Huge and odd numbers.
		`{"type":"ping","id":18446744073709551616}`, `{"type":"ping","id":1e400}`, `{"type":"ping","id":-1}`,
		`{"type":"ping","id":1.5}`, `{"type":"ping","id":18446744073709551615}`,
		`{"type":"subscribe","channel":"` + ch + `","since":99999999999999999999999}`,
		`{"type":"subscribe","channel":"` + ch + `","since":-1}`, `{"type":"subscribe","channel":"` + ch + `","since":0}`,
		`{"type":"subscribe","channel":"` + ch + `","since":18446744073709551615}`,
		// Null bytes and escapes.
		`{"type":"ping\u0000"}`, "{\"type\":\"pi\x00ng\"}", `{"type":"ping","id":1}` + "\x00", "\x00\x00\x00",
		`{"type":"ping\ud800"}`, `{"type":"subscribe","channel":"schedule:\u0000"}`,
		// Duplicate keys.
		`{"type":"ping","type":"dance"}`, `{"type":"subscribe","channel":"schedule:x","channel":"` + ch + `"}`,
		`{"id":1,"id":2,"type":"ping"}`,
		// Every frame type with fields of the wrong type.
		`{"type":1}`, `{"type":null}`, `{"type":["ping"]}`, `{"type":{"type":"ping"}}`,
		`{"type":"auth","token":1}`, `{"type":"auth","token":null}`, `{"type":"auth","token":[]}`, `{"type":"auth","token":"x.y.z"}`,
		`{"type":"subscribe","channel":1}`, `{"type":"subscribe","channel":{}}`, `{"type":"subscribe","channel":"` + ch + `","since":"1"}`,
		`{"type":"subscribe","channel":"` + ch + `","since":true}`, `{"type":"subscribe","channel":"` + ch + `","lang":5}`,
		`{"type":"subscribe","channel":"` + ch + `","lang":"fr"}`, `{"type":"unsubscribe","channel":false}`,
		`{"type":"ping","id":"1"}`, `{"type":"ping","id":true}`,
		// Channel names: 10 KB, multi-byte, at and over the 255-byte limit.
		`{"type":"subscribe","channel":"schedule:` + strings.Repeat("a", 10<<10) + `"}`,
		`{"type":"unsubscribe","channel":"schedule:` + strings.Repeat("a", 10<<10) + `"}`,
		`{"type":"subscribe","channel":"announcements:` + strings.Repeat("é", 5<<10) + `"}`,
		`{"type":"subscribe","channel":"schedule:` + strings.Repeat("a", protocol.MaxChannelName-len("schedule:")) + `"}`,
		`{"type":"subscribe","channel":"schedule:` + strings.Repeat("a", protocol.MaxChannelName-len("schedule:")+1) + `"}`,
		`{"type":"subscribe","channel":"secrets:x"}`, `{"type":"subscribe","channel":"schedule:"}`, `{"type":"subscribe","channel":":"}`,
		// Valid frames, in an order that subscribes, resumes and unsubscribes.
		`{"type":"ping"}`, `{"type":"ping","id":7}`,
		`{"type":"subscribe","id":1,"channel":"` + ch + `","lang":"en"}`, `{"type":"subscribe","id":2,"channel":"` + ch + `"}`,
		`{"type":"unsubscribe","id":3,"channel":"` + ch + `"}`, `{"type":"unsubscribe","id":4,"channel":"` + ch + `"}`,
		`{"type":"subscribe","id":5,"channel":"` + ch + `","since":1,"lang":"es"}`,
		`{"type":"subscribe","id":6,"channel":"announcements:` + demoEvent + `"}`, `{"type":"subscribe","channel":"schedule:nope-nope"}`,
		// Size limits: exactly 64 KiB is answered, one byte more closes.
		`{"type":"ping"}` + strings.Repeat(" ", protocol.MaxFrameBytes-len(`{"type":"ping"}`)),
		`{"type":"ping"}` + strings.Repeat(" ", protocol.MaxFrameBytes-len(`{"type":"ping"}`)+1),
		// Binary frames.
		string(rune(fuzzBinary)) + `{"type":"ping"}`, string(rune(fuzzBinary)),
	}
	out := make([][]byte, len(seeds))
	for i, s := range seeds {
		out[i] = []byte(s)
	}
	return out
}

// fuzzNodeFlags start the node that random frames go to (one per fuzzing process,
// reused by every input): no rate limit and a deep queue, so every answer is the answer
// to the frame itself, and no auth deadline, since its connections live long without
// subscribing.
var fuzzNodeFlags = []string{"--demo", "--ws-frame-rate", "100000", "--ws-queue-bytes", "16777216", "--ws-auth-timeout", "1h"}

// FuzzClientFrames sends each input as one frame (binary when its first byte is
// fuzzBinary) over a websocket to one node, kept open across inputs, and checks the
// contract's answer. `go test` replays the seeds and testdata/fuzz; a panic anywhere in
// the node fails the run, and one the websocket library recovers shows as a broken frame.
// Fuzz with a short minimization time: inputs can be 100 KB and each candidate costs a
// connection, so the default minute per new input leaves little time for fuzzing:
//
//	go test -run '^$' -fuzz FuzzClientFrames -fuzztime 60s -fuzzminimizetime 2s ./cmd/cabildo
func FuzzClientFrames(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	n := startNode(f, "", nil, fuzzNodeFlags...)
	p := &prober{n: n, rc: newReplyChecker(f)}
	f.Cleanup(p.drop)
	f.Fuzz(func(t *testing.T, in []byte) {
		typ, payload := websocket.TextMessage, in
		if len(in) > 0 && in[0] == fuzzBinary {
			typ, payload = websocket.BinaryMessage, in[1:]
		}
		if err := p.send(typ, payload); err != nil {
			t.Fatalf("frame %.200q: %v", payload, err)
		}
	})
}

// frameGen makes random client frames: valid ones mutated, random text, random JSON,
// and rarely random bytes, binary frames and oversized frames.
type frameGen struct {
	r *rand.Rand
}

var genTokens = []string{`null`, `true`, `-1`, `0`, `1e999`, `18446744073709551616`, `""`, `"\u0000"`, `{}`, `[]`, `[[[[`,
	`"type"`, `"ping"`, `"subscribe"`, `"channel"`, `:`, `,`, `"`, `\`, `{"id":1}`, `"schedule:` + demoEvent + `"`, `"é"`, `"🎺"`}

func (g *frameGen) valid() []byte {
	r := g.r
	id := r.Uint64N(1 << 20)
	channels := []string{"schedule:" + demoEvent, "announcements:" + demoEvent, "schedule:nope", "secrets:x", "", "schedule:" + strings.Repeat("x", 256)}
	ch := channels[r.IntN(len(channels))]
	switch r.IntN(5) {
	case 0:
		return fmt.Appendf(nil, `{"type":"ping","id":%d}`, id)
	case 1:
		return fmt.Appendf(nil, `{"type":"auth","id":%d,"token":"eyJ%x.%x.%x"}`, id, r.Uint64(), r.Uint64(), r.Uint64())
	case 2:
		langs := []string{"es", "en", "fr", ""}
		return fmt.Appendf(nil, `{"type":"subscribe","id":%d,"channel":%q,"lang":%q}`, id, ch, langs[r.IntN(len(langs))])
	case 3:
		return fmt.Appendf(nil, `{"type":"subscribe","id":%d,"channel":%q,"since":%d}`, id, ch, r.Uint64N(200))
	default:
		return fmt.Appendf(nil, `{"type":"unsubscribe","id":%d,"channel":%q}`, id, ch)
	}
}

func (g *frameGen) mutate(b []byte) []byte {
	r := g.r
	for range 1 + r.IntN(3) {
		if len(b) == 0 {
			b = append(b, genTokens[r.IntN(len(genTokens))]...)
			continue
		}
		i := r.IntN(len(b))
		switch r.IntN(7) {
		case 0: // a byte becomes another printable one
			b[i] = byte(' ' + r.IntN(95))
		case 1: // a token is inserted
			b = slices.Insert(b, i, []byte(genTokens[r.IntN(len(genTokens))])...)
		case 2: // a span goes
			b = slices.Delete(b, i, i+r.IntN(len(b)-i+1))
		case 3: // a span repeats
			j := i + r.IntN(len(b)-i+1)
			b = slices.Insert(b, j, slices.Clone(b[i:j])...)
		case 4: // cut short
			b = b[:i]
		case 5: // any rune
			b = slices.Insert(b, i, []byte(string(rune(r.IntN(0x10FFFF))))...)
		case 6: // any byte, rarely: mostly it breaks UTF-8 and costs a reconnection
			if r.IntN(10) == 0 {
				b[i] = byte(r.IntN(256))
			}
		}
	}
	return b
}

func (g *frameGen) randomJSON(depth int) []byte {
	r := g.r
	if depth > 4 {
		return []byte(genTokens[r.IntN(len(genTokens))])
	}
	switch r.IntN(4) {
	case 0:
		var b []byte
		b = append(b, '{')
		for i := range r.IntN(4) {
			if i > 0 {
				b = append(b, ',')
			}
			keys := []string{"type", "id", "channel", "since", "lang", "token", "x"}
			b = fmt.Appendf(b, "%q:", keys[r.IntN(len(keys))])
			b = append(b, g.randomJSON(depth+1)...)
		}
		return append(b, '}')
	case 1:
		b := []byte{'['}
		for i := range r.IntN(4) {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, g.randomJSON(depth+1)...)
		}
		return append(b, ']')
	case 2:
		return fmt.Appendf(nil, "%d", r.Int64()-r.Int64())
	default:
		return []byte(genTokens[r.IntN(len(genTokens))])
	}
}

// next returns a frame's type and payload.
func (g *frameGen) next() (int, []byte) {
	r := g.r
	switch n := r.IntN(10_000); {
	case n < 5: // oversized
		return websocket.TextMessage, []byte(`{"type":"ping"}` + strings.Repeat(" ", protocol.MaxFrameBytes))
	case n < 15: // binary
		return websocket.BinaryMessage, g.valid()
	case n < 100: // random bytes
		b := make([]byte, r.IntN(64))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return websocket.TextMessage, b
	case n < 1_100: // random text
		var b []byte
		for range r.IntN(64) {
			b = utf8.AppendRune(b, rune(r.IntN(0x800)))
		}
		return websocket.TextMessage, b
	case n < 2_500:
		return websocket.TextMessage, g.randomJSON(0)
	case n < 3_000:
		return websocket.TextMessage, g.valid()
	default:
		return websocket.TextMessage, g.mutate(g.valid())
	}
}

// TestRealtimeRandomFrames is scenario 15's load: random frames over a few connections,
// pipelined, each checked like FuzzClientFrames checks one: every frame the contract
// closes on gets its close code (and the sender reconnects), every other frame exactly
// one final reply, every frame sent back valid. 0 panics, and the node serves on.
// Answers are pipelined (16 frames in flight per connection), so 100,000 frames take
// about 10 s under -race.
func TestRealtimeRandomFrames(t *testing.T) {
	const total, conns, window = 100_000, 4, 16
	n := startNode(t, "", nil, fuzzNodeFlags...)
	rc := newReplyChecker(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("generator seed %d", seed)

	var (
		frames, closes, answers atomic.Int64
		wg                      sync.WaitGroup
		mu                      sync.Mutex
		failures                []error
	)
	fail := func(err error) {
		mu.Lock()
		failures = append(failures, err)
		mu.Unlock()
	}
	start := time.Now()
	for w := range conns {
		wg.Go(func() {
			g := &frameGen{r: rand.New(rand.NewPCG(seed, uint64(w)))}
			if err := pipeline(n, rc, g, total/conns, window, &frames, &closes, &answers); err != nil {
				fail(fmt.Errorf("connection %d: %w", w, err))
			}
		})
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatal(errors.Join(failures...))
	}
	if got := frames.Load(); got != total {
		t.Fatalf("%d frames sent, want %d", got, total)
	}
	// Still serving: a fresh client subscribes and gets its snapshot.
	mustDial(t, n).subscribe("schedule:"+demoEvent, nil)
	if r := n.do(t, req{method: "GET", path: "/livez"}); r.Status != 200 {
		t.Fatalf("livez %d", r.Status)
	}
	waitGauge(t, n, 1, 5*time.Second)
	t.Logf("%d random frames in %v over %d connections: %d closed as the contract says (reconnected), %d answered with a valid reply",
		total, time.Since(start).Round(time.Millisecond), conns, closes.Load(), answers.Load())
}

// pipeline sends count frames from g over one connection at a time, at most window of
// them awaiting their reply.
func pipeline(n *node, rc *replyChecker, g *frameGen, count, window int, frames, closes, answers *atomic.Int64) error {
	for count > 0 {
		c, _, err := websocket.DefaultDialer.Dial(wsURL(n), nil)
		if err != nil {
			return fmt.Errorf("dial: %w", err)
		}
		sent, closed, err := pipelineConn(c, rc, g, count, window, answers)
		c.Close()
		frames.Add(int64(sent))
		count -= sent
		if err != nil {
			return err
		}
		if closed {
			closes.Add(1)
		}
	}
	return nil
}

// pipelineConn sends frames until one the contract closes on has got its close code
// (closed) or count are sent and answered.
func pipelineConn(c *websocket.Conn, rc *replyChecker, g *frameGen, count, window int, answers *atomic.Int64) (sent int, closed bool, err error) {
	slots := make(chan struct{}, window) // one per frame awaiting its final reply
	type end struct {
		code int
		err  error
	}
	ended := make(chan end, 1)
	go func() {
		for {
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, b, err := c.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					ended <- end{code: ce.Code}
				} else {
					ended <- end{err: err}
				}
				return
			}
			_, final, err := rc.check(b)
			if err != nil {
				ended <- end{err: err}
				return
			}
			if final {
				select {
				case <-slots:
					answers.Add(1)
				default:
					ended <- end{err: fmt.Errorf("a reply to no frame: %.200s", b)}
					return
				}
			}
		}
	}()
	// drain waits until every frame sent has its reply.
	drain := func() error {
		for range window {
			select {
			case slots <- struct{}{}:
			case e := <-ended:
				return fmt.Errorf("closed with %d (%v) while frames awaited replies", e.code, e.err)
			}
		}
		for range window {
			<-slots
		}
		return nil
	}
	for sent < count {
		typ, payload := g.next()
		want := mustClose(typ, payload)
		if want != 0 {
			if err := drain(); err != nil {
				return sent, false, err
			}
			_ = c.WriteMessage(typ, payload) // may fail once the server has closed
			sent++
			e := <-ended
			if e.err != nil || e.code != want {
				return sent, false, fmt.Errorf("frame %.100q: closed with %d (%v), want %d", payload, e.code, e.err, want)
			}
			return sent, true, nil
		}
		select {
		case slots <- struct{}{}:
		case e := <-ended:
			return sent, false, fmt.Errorf("closed with %d (%v) after a frame it must answer", e.code, e.err)
		}
		if err := c.WriteMessage(typ, payload); err != nil {
			return sent, false, fmt.Errorf("write: %w", err)
		}
		sent++
	}
	return sent, false, drain()
}
