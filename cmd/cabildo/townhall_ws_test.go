package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/cabildo/cabildo/internal/contract"
	"github.com/cabildo/cabildo/internal/token"
	"github.com/cabildo/cabildo/pkg/api"
	"github.com/cabildo/cabildo/pkg/client"
	"github.com/cabildo/cabildo/pkg/protocol"
)

// This file is the websocket suite of the town hall's two live channels,
// questions:<event>:<session> (the audience: public questions only, vote counts coalesced)
// and moderation:<event>:<session> (moderators of the event: everything), driven black-box
// through GET /v1/ws and the REST routes of nodes run in-process. Every client records
// every frame it receives (each checked against asyncapi.yaml as it arrives) and every
// frame it sends; when the test ends, the prev chain of every channel it held is checked
// over the whole record (thwsClient.verify), whatever the test asserted on the way.

// thwsFlags lift the per-address limits: every attendee of these tests shares 127.0.0.1.
func thwsFlags(extra ...string) []string {
	return append([]string{"--demo",
		"--qa-attendees-per-ip-per-minute", "100000",
		"--qa-asks-per-minute", "1000",
		"--qa-asks-per-ip-per-minute", "100000",
	}, extra...)
}

// thwsEnv is a node with the demo event and its town hall.
type thwsEnv struct {
	n    *node
	http *http.Client // for the bulk helpers, which run on many goroutines and must not call t.Fatal
	sess int64
	mod  string // a moderator token of the demo event
	qch  string // questions:<event>:<session>
	mch  string // moderation:<event>:<session>
}

func thwsStart(t *testing.T, extra ...string) *thwsEnv {
	t.Helper()
	return thwsEnvOf(t, startNode(t, "", nil, thwsFlags(extra...)...))
}

func thwsEnvOf(t *testing.T, n *node) *thwsEnv {
	t.Helper()
	r := n.do(t, req{method: "GET", path: "/v1/events/" + demoEvent + "/sessions?kind=town_hall"})
	if r.Status != 200 {
		t.Fatalf("list town halls: %d %s", r.Status, r.Body)
	}
	var list api.SessionList
	r.json(t, &list)
	if len(list.Sessions) != 1 || list.Sessions[0].Kind != "town_hall" {
		t.Fatalf("the demo event has %d town halls (%+v), want exactly 1", len(list.Sessions), list.Sessions)
	}
	s := list.Sessions[0].ID
	// Its own pool, emptied before the node stops: with parallel requests the transport may
	// dial a connection it never uses, and the server's shutdown waits its whole grace
	// (10 s) for a connection that never sent a request.
	cl := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConns: 512, MaxIdleConnsPerHost: 512}}
	t.Cleanup(cl.CloseIdleConnections)
	return &thwsEnv{n: n, http: cl, sess: s, mod: n.token("moderator"),
		qch: fmt.Sprintf("questions:%s:%d", demoEvent, s), mch: fmt.Sprintf("moderation:%s:%d", demoEvent, s)}
}

func (e *thwsEnv) path(suffix string) string {
	return fmt.Sprintf("/v1/events/%s/sessions/%d%s", demoEvent, e.sess, suffix)
}

func (e *thwsEnv) attendee(t *testing.T) string {
	t.Helper()
	r := e.n.do(t, req{method: "POST", path: "/v1/events/" + demoEvent + "/attendees"})
	var a api.AttendeeToken
	r.json(t, &a)
	if r.Status != 201 || a.Token == "" {
		t.Fatalf("mint attendee: %d %s", r.Status, r.Body)
	}
	return a.Token
}

func (e *thwsEnv) send(n *node, method, path, tok string, body any) (response, error) {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return response{}, err
		}
	}
	return thSend(e.http, method, n.base+path, tok, b)
}

// attendees mints k attendee tokens, a few at a time.
func (e *thwsEnv) attendees(t *testing.T, k int) []string {
	t.Helper()
	toks := make([]string, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range k {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			r, err := e.send(e.n, "POST", "/v1/events/"+demoEvent+"/attendees", "", nil)
			var a api.AttendeeToken
			if err == nil && r.Status == 201 {
				err = json.Unmarshal(r.Body, &a)
			} else if err == nil {
				err = fmt.Errorf("status %d: %s", r.Status, r.Body)
			}
			toks[i], errs[i] = a.Token, err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil || toks[i] == "" {
			t.Fatalf("mint attendee %d: %v", i, err)
		}
	}
	return toks
}

func (e *thwsEnv) ask(t *testing.T, tok, text string) api.Question {
	t.Helper()
	r := e.n.do(t, req{method: "POST", path: e.path("/questions"), header: auth(tok),
		body: map[string]any{"text": text, "lang": "en"}})
	if r.Status != 201 {
		t.Fatalf("ask %q: %d %s", text, r.Status, r.Body)
	}
	var q api.Question
	r.json(t, &q)
	if q.Text != text || q.State != "pending" {
		t.Fatalf("asked %q in a moderated session, got %+v", text, q)
	}
	return q
}

// act runs a moderator action and returns the logged action's version.
func (e *thwsEnv) act(t *testing.T, q int64, action string) uint64 {
	t.Helper()
	r := e.n.do(t, req{method: "POST", path: e.path(fmt.Sprintf("/questions/%d/actions", q)), header: auth(e.mod),
		body: map[string]any{"action": action}})
	if r.Status != 200 {
		t.Fatalf("%s %d: %d %s", action, q, r.Status, r.Body)
	}
	var res api.ModerationResult
	r.json(t, &res)
	if res.Action.Action != action || res.Action.Version == 0 {
		t.Fatalf("%s %d answered %+v", action, q, res.Action)
	}
	return res.Action.Version
}

// vote is safe to call from any goroutine.
func (e *thwsEnv) vote(n *node, tok string, q int64) (api.Vote, error) {
	r, err := e.send(n, "PUT", e.path(fmt.Sprintf("/questions/%d/vote", q)), tok, nil)
	if err != nil {
		return api.Vote{}, err
	}
	if r.Status != 200 {
		return api.Vote{}, fmt.Errorf("vote for %d: %d %s", q, r.Status, r.Body)
	}
	var v api.Vote
	if err := json.Unmarshal(r.Body, &v); err != nil {
		return api.Vote{}, err
	}
	if !v.Voted || v.Question != q || v.Votes < 1 {
		return v, fmt.Errorf("vote for %d answered %+v", q, v)
	}
	return v, nil
}

// votes casts one vote per (node, token, question) concurrently, the i-th sent at
// i × pace (all at once when pace is 0), and returns the log version of each once every
// answer is in.
func (e *thwsEnv) votes(t *testing.T, ballots []thwsBallot, pace time.Duration) []uint64 {
	t.Helper()
	versions := make([]uint64, len(ballots))
	errs := make(chan error, len(ballots))
	var wg sync.WaitGroup
	start := time.Now()
	for i, b := range ballots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Until(start.Add(time.Duration(i) * pace)))
			v, err := e.vote(b.n, b.tok, b.q)
			if err != nil {
				errs <- err
			}
			versions[i] = v.Version
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	return versions
}

type thwsBallot struct {
	n   *node
	tok string
	q   int64
}

func (e *thwsEnv) public(t *testing.T, n *node) api.QuestionList {
	t.Helper()
	r := n.do(t, req{method: "GET", path: e.path("/questions")})
	if r.Status != 200 {
		t.Fatalf("questions: %d %s", r.Status, r.Body)
	}
	var l api.QuestionList
	r.json(t, &l)
	return l
}

func (e *thwsEnv) moderation(t *testing.T) api.Moderation {
	t.Helper()
	r := e.n.do(t, req{method: "GET", path: e.path("/moderation"), header: auth(e.mod)})
	if r.Status != 200 {
		t.Fatalf("moderation: %d %s", r.Status, r.Body)
	}
	var m api.Moderation
	r.json(t, &m)
	return m
}

// --- the recording websocket client -------------------------------------------------------

// thwsEntry is one frame of a client's record: received (raw set) or sent (sent set).
type thwsEntry struct {
	at   time.Time
	raw  []byte
	f    protocol.ServerFrame
	sent *protocol.ClientFrame
}

type thwsClient struct {
	t    *testing.T
	name string
	w    *wsConn
	v    *contract.FrameValidator

	mu        sync.Mutex
	log       []thwsEntry
	bad       []string // frames that broke the contract or were not JSON
	end       error    // why reading stopped
	lastID    uint64
	malformed bool // the frames sent now break the contract on purpose
}

// thwsDial connects a recording client: a goroutine reads every frame into the record.
func thwsDial(t *testing.T, n *node, name string) *thwsClient {
	t.Helper()
	w := mustDial(t, n)
	c := &thwsClient{t: t, name: name, w: w, v: frames(t)}
	go c.read()
	// Cleanups run last-registered first: this runs while the connection is still open.
	t.Cleanup(c.verify)
	return c
}

func (c *thwsClient) read() {
	for {
		_, b, err := c.w.c.ReadMessage()
		at := time.Now()
		c.mu.Lock()
		if err != nil {
			c.end = err
			c.mu.Unlock()
			return
		}
		e := thwsEntry{at: at, raw: b}
		if err := json.Unmarshal(b, &e.f); err != nil {
			c.bad = append(c.bad, fmt.Sprintf("not JSON: %v: %.200s", err, b))
		}
		if err := c.v.Server(b); err != nil {
			c.bad = append(c.bad, fmt.Sprintf("contract: %v: %.300s", err, b))
		}
		c.log = append(c.log, e)
		c.mu.Unlock()
	}
}

func (c *thwsClient) id() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastID++
	return c.lastID
}

// send records f, then sends it (checked against the contract unless it is meant to
// break it: malformed channel names); it returns f's position in the record.
func (c *thwsClient) send(f protocol.ClientFrame) int {
	c.t.Helper()
	c.mu.Lock()
	pos := len(c.log)
	c.log = append(c.log, thwsEntry{at: time.Now(), sent: &f})
	malformed := c.malformed
	c.mu.Unlock()
	if !malformed {
		c.w.send(f)
	} else if err := c.w.c.WriteJSON(f); err != nil {
		c.t.Fatalf("%s: send: %v", c.name, err)
	}
	return pos
}

func (c *thwsClient) mark() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.log)
}

func (c *thwsClient) entries() []thwsEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.log)
}

// await waits for the first received frame at or after position from that matches.
func (c *thwsClient) await(from int, within time.Duration, what string, match func(protocol.ServerFrame) bool) (int, thwsEntry) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		c.mu.Lock()
		for i := from; i < len(c.log); i++ {
			if e := c.log[i]; e.sent == nil && match(e.f) {
				c.mu.Unlock()
				return i, e
			}
		}
		from = max(from, len(c.log))
		end := c.end
		c.mu.Unlock()
		if end != nil {
			c.t.Fatalf("%s: connection ended waiting for %s: %v\n%s", c.name, what, end, c.dump(8))
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: no %s within %v\n%s", c.name, what, within, c.dump(8))
		}
		time.Sleep(3 * time.Millisecond)
	}
}

func (c *thwsClient) dump(last int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "%s's last frames:\n", c.name)
	for _, e := range c.log[max(0, len(c.log)-last):] {
		if e.sent != nil {
			s, _ := json.Marshal(e.sent)
			fmt.Fprintf(&b, "  → %.200s\n", s)
		} else {
			fmt.Fprintf(&b, "  ← %.300s\n", e.raw)
		}
	}
	return b.String()
}

// call sends f with a fresh id and returns the frames received from then on up to the
// one that answers it (for a subscribe: subscribed or error; else any frame with the id).
func (c *thwsClient) call(f protocol.ClientFrame) (answer protocol.ServerFrame, before []thwsEntry) {
	c.t.Helper()
	f.ID = c.id()
	from := c.send(f)
	end, e := c.await(from, 10*time.Second, f.Type+" answer", func(g protocol.ServerFrame) bool {
		if g.ID != f.ID {
			return false
		}
		return f.Type != protocol.TypeSubscribe || g.Type == protocol.TypeSubscribed || g.Type == protocol.TypeError
	})
	for _, x := range c.entries()[from+1 : end] {
		if x.sent == nil {
			before = append(before, x)
		}
	}
	return e.f, before
}

// auth sends an auth frame and returns its answer, auth_ok or error.
func (c *thwsClient) auth(tok string) protocol.ServerFrame {
	c.t.Helper()
	f, _ := c.call(protocol.ClientFrame{Type: protocol.TypeAuth, Token: tok})
	return f
}

// trySubscribe returns the frames of channel that answered the subscribe (a snapshot or
// updates, then subscribed), or the error frame.
func (c *thwsClient) trySubscribe(channel string, since *uint64, lang ...string) ([]thwsEntry, *protocol.ServerFrame) {
	c.t.Helper()
	ans, before := c.call(protocol.ClientFrame{Type: protocol.TypeSubscribe, Channel: channel, Since: since, Lang: strings.Join(lang, "")})
	if ans.Type == protocol.TypeError {
		return nil, &ans
	}
	var out []thwsEntry
	for _, e := range before {
		if e.f.Channel == channel {
			out = append(out, e)
		}
	}
	all := c.entries()
	for i := len(all) - 1; i >= 0; i-- {
		if all[i].sent == nil && all[i].f.Type == protocol.TypeSubscribed && all[i].f.ID == ans.ID {
			out = append(out, all[i])
			break
		}
	}
	return out, nil
}

func (c *thwsClient) subscribe(channel string, since *uint64) []thwsEntry {
	c.t.Helper()
	got, ef := c.trySubscribe(channel, since)
	if ef != nil {
		c.t.Fatalf("%s: subscribe %s (since %v): error %s %s", c.name, channel, thwsSince(since), ef.Code, ef.Message)
	}
	return got
}

func thwsSince(s *uint64) string {
	if s == nil {
		return "none"
	}
	return fmt.Sprint(*s)
}

// subscribeError subscribes expecting an error frame with code.
func (c *thwsClient) subscribeError(channel string, since *uint64, code string) {
	c.t.Helper()
	got, ef := c.trySubscribe(channel, since)
	if ef == nil {
		c.t.Fatalf("%s: subscribe %s was accepted (%d frames), want error %s", c.name, channel, len(got), code)
	}
	if ef.Code != code || ef.Channel != channel {
		c.t.Fatalf("%s: subscribe %s: error %+v, want code %s for that channel", c.name, channel, ef, code)
	}
}

// sync is a round trip: every frame queued for the client before the pong has arrived.
func (c *thwsClient) sync() {
	c.t.Helper()
	if f, _ := c.call(protocol.ClientFrame{Type: protocol.TypePing}); f.Type != protocol.TypePong {
		c.t.Fatalf("%s: ping answered %+v", c.name, f)
	}
}

// on returns the frames received on channel, from position from on.
func (c *thwsClient) on(channel string, from int) []thwsEntry {
	var out []thwsEntry
	for _, e := range c.entries()[from:] {
		if e.sent == nil && e.f.Channel == channel {
			out = append(out, e)
		}
	}
	return out
}

// thwsHolds reports whether f is a snapshot or update that brings question id whole.
func thwsHolds(t *testing.T, f protocol.ServerFrame, id int64) bool {
	if f.Type != protocol.TypeUpdate && f.Type != protocol.TypeSnapshot {
		return false
	}
	return slices.ContainsFunc(thwsDecode(t, f.Data).Questions, func(r json.RawMessage) bool { qid, _ := thwsIDOf(t, r); return qid == id })
}

// thwsCounts reports whether f is an update that brings question id to n votes.
func thwsCounts(t *testing.T, f protocol.ServerFrame, id int64, n int) bool {
	if f.Type != protocol.TypeUpdate {
		return false
	}
	got, ok := thwsDecode(t, f.Data).votesOf(t, id)
	return ok && got == n
}

func thwsOfType(es []thwsEntry, typ string) []thwsEntry {
	var out []thwsEntry
	for _, e := range es {
		if e.f.Type == typ {
			out = append(out, e)
		}
	}
	return out
}

func thwsTypes(es []thwsEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.f.Type)
	}
	return out
}

// last is the version of the last snapshot or update received on channel.
func (c *thwsClient) last(channel string) uint64 {
	var v uint64
	for _, e := range c.on(channel, 0) {
		if e.f.Type == protocol.TypeSnapshot || e.f.Type == protocol.TypeUpdate {
			v = e.f.Version
		}
	}
	return v
}

// thwsChain is one channel's state while verify replays a record.
type thwsChain struct {
	active  bool   // a subscribe was sent and nothing ended it
	pending uint64 // the id of the subscribe not answered yet
	has     bool   // last is a version the client holds
	last    uint64
}

// verify replays the whole record and reports every broken promise: a frame that broke
// the contract, an update whose prev is not the last version seen, a version that does not
// increase, a subscribed at another version than the one reached, and any frame of a
// channel the client does not hold (never subscribed, refused, or ended by unsubscribed).
func (c *thwsClient) verify() {
	c.t.Helper()
	c.mu.Lock()
	log, bad := slices.Clone(c.log), slices.Clone(c.bad)
	c.mu.Unlock()
	for _, b := range bad {
		c.t.Errorf("%s: %s", c.name, b)
	}
	chains := map[string]*thwsChain{}
	get := func(ch string) *thwsChain {
		if chains[ch] == nil {
			chains[ch] = &thwsChain{}
		}
		return chains[ch]
	}
	fail := func(i int, format string, args ...any) {
		c.t.Errorf("%s, frame %d: %s: %.300s", c.name, i, fmt.Sprintf(format, args...), log[i].raw)
	}
	for i, e := range log {
		if s := e.sent; s != nil {
			if s.Type == protocol.TypeSubscribe {
				if st := get(s.Channel); !st.active {
					st.active, st.pending, st.has, st.last = true, s.ID, s.Since != nil, 0
					if s.Since != nil {
						st.last = *s.Since
					}
				}
			}
			continue
		}
		f := e.f
		if f.Channel == "" || (f.Type != protocol.TypeSnapshot && f.Type != protocol.TypeUpdate &&
			f.Type != protocol.TypeSubscribed && f.Type != protocol.TypeUnsubscribed && f.Type != protocol.TypeError) {
			continue
		}
		st := get(f.Channel)
		if f.Type == protocol.TypeError {
			if st.active && st.pending != 0 && f.ID == st.pending {
				st.active, st.pending = false, 0 // the subscribe was refused
			}
			continue
		}
		if !st.active {
			fail(i, "a %s frame on %s, which the client does not hold", f.Type, f.Channel)
			continue
		}
		switch f.Type {
		case protocol.TypeSnapshot:
			if st.pending == 0 {
				fail(i, "a snapshot outside a subscribe")
			}
			st.has, st.last = true, f.Version
		case protocol.TypeUpdate:
			switch {
			case !st.has:
				fail(i, "an update before any snapshot")
			case f.Prev == nil:
				fail(i, "an update without prev")
			case *f.Prev != st.last:
				fail(i, "prev %d, want the last version seen, %d", *f.Prev, st.last)
			case f.Version <= st.last:
				fail(i, "version %d after %d", f.Version, st.last)
			}
			st.has, st.last = true, f.Version
		case protocol.TypeSubscribed:
			if !st.has || f.Version != st.last {
				fail(i, "subscribed at %d, the client holds %d (has %v)", f.Version, st.last, st.has)
			}
			if f.ID != st.pending {
				fail(i, "subscribed with id %d, the subscribe had %d", f.ID, st.pending)
			}
			st.pending = 0
		case protocol.TypeUnsubscribed:
			st.active, st.pending = false, 0
		}
	}
}

// --- models of the channels -----------------------------------------------------------------

// thwsModel is what a client holds of a town-hall channel after applying its frames:
// each question (and, on moderation, each action) as last received, encoded.
type thwsModel struct {
	version   uint64
	open      bool
	moderated bool
	questions map[int64]json.RawMessage
	actions   map[uint64]json.RawMessage
	snapshots int
	updates   int
}

type thwsData struct {
	Version   uint64            `json:"version"`
	Open      *bool             `json:"open"`
	Moderated *bool             `json:"moderated"`
	Questions []json.RawMessage `json:"questions"`
	Votes     map[int64]int     `json:"votes"`
	Actions   []json.RawMessage `json:"actions"`
	Removed   []int64           `json:"removed"`
	Queue     *api.QueueStats   `json:"queue"`
}

// votesOf is question id's count in an update, whichever way it came (whole or as a count).
func (d thwsData) votesOf(t *testing.T, id int64) (int, bool) {
	t.Helper()
	if n, ok := d.Votes[id]; ok {
		return n, true
	}
	for _, raw := range d.Questions {
		var q api.Question
		if err := json.Unmarshal(raw, &q); err != nil {
			t.Fatal(err)
		}
		if q.ID == id {
			return q.Votes, true
		}
	}
	return 0, false
}

var thwsVotesField = regexp.MustCompile(`"votes":[0-9]+`)

// thwsSetVotes applies an update's counts to the questions a client holds, as the contract
// says: each must be one the client has and not also come whole in the same update.
func thwsSetVotes(t *testing.T, questions map[int64]json.RawMessage, d thwsData, version uint64) {
	t.Helper()
	for id, n := range d.Votes {
		raw, ok := questions[id]
		if !ok {
			t.Errorf("update %d counts votes of question %d, which the client does not have", version, id)
			continue
		}
		if slices.ContainsFunc(d.Questions, func(r json.RawMessage) bool { qid, _ := thwsIDOf(t, r); return qid == id }) {
			t.Errorf("update %d has question %d both whole and in votes", version, id)
		}
		// Patched in place, so the bytes still compare with the server's rendering.
		patched := thwsVotesField.ReplaceAll(raw, fmt.Appendf(nil, `"votes":%d`, n))
		if bytes.Equal(patched, raw) && !bytes.Contains(raw, fmt.Appendf(nil, `"votes":%d`, n)) {
			t.Fatalf("question %d has no votes field: %s", id, raw)
		}
		questions[id] = patched
	}
}

func thwsDecode(t *testing.T, raw json.RawMessage) thwsData {
	t.Helper()
	var d thwsData
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("town-hall data %.200s: %v", raw, err)
	}
	return d
}

func thwsIDOf(t *testing.T, raw json.RawMessage) (id int64, version uint64) {
	t.Helper()
	var x struct {
		ID      int64  `json:"id"`
		Version uint64 `json:"version"`
	}
	if err := json.Unmarshal(raw, &x); err != nil {
		t.Fatal(err)
	}
	return x.ID, x.Version
}

// thwsApply applies a channel's snapshots and updates in order.
func thwsApply(t *testing.T, es []thwsEntry) thwsModel {
	t.Helper()
	m := thwsModel{questions: map[int64]json.RawMessage{}, actions: map[uint64]json.RawMessage{}}
	for _, e := range es {
		switch e.f.Type {
		case protocol.TypeSnapshot:
			m = thwsModel{questions: map[int64]json.RawMessage{}, actions: map[uint64]json.RawMessage{},
				snapshots: m.snapshots + 1, updates: m.updates}
			d := thwsDecode(t, e.f.Data)
			if d.Version != e.f.Version {
				t.Errorf("snapshot at %d has data.version %d", e.f.Version, d.Version)
			}
			m.open, m.moderated = *d.Open, *d.Moderated
			for _, q := range d.Questions {
				id, _ := thwsIDOf(t, q)
				m.questions[id] = q
			}
			for _, a := range d.Actions {
				_, v := thwsIDOf(t, a)
				m.actions[v] = a
			}
		case protocol.TypeUpdate:
			m.updates++
			d := thwsDecode(t, e.f.Data)
			if d.Open != nil {
				m.open = *d.Open
			}
			if d.Moderated != nil {
				m.moderated = *d.Moderated
			}
			thwsSetVotes(t, m.questions, d, e.f.Version)
			for _, q := range d.Questions {
				id, _ := thwsIDOf(t, q)
				m.questions[id] = q
			}
			for _, a := range d.Actions {
				_, v := thwsIDOf(t, a)
				m.actions[v] = a
			}
			for _, id := range d.Removed {
				if _, ok := m.questions[id]; !ok {
					t.Errorf("update %d removes question %d, which the client does not have", e.f.Version, id)
				}
				delete(m.questions, id)
			}
		default:
			continue
		}
		m.version = e.f.Version
	}
	return m
}

func (m thwsModel) question(t *testing.T, id int64) api.Question {
	t.Helper()
	raw, ok := m.questions[id]
	if !ok {
		t.Fatalf("the client does not hold question %d", id)
	}
	var q api.Question
	if err := json.Unmarshal(raw, &q); err != nil {
		t.Fatal(err)
	}
	return q
}

// thwsSameQuestions compares two models' questions, encoded.
func thwsSameQuestions(a, b map[int64]json.RawMessage) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d questions against %d", len(a), len(b))
	}
	for id, x := range a {
		if y, ok := b[id]; !ok || !bytes.Equal(x, y) {
			return fmt.Errorf("question %d: %s against %s", id, x, y)
		}
	}
	return nil
}

// thwsAudienceOrder is QuestionList's order, written from the contract: the pinned one,
// the approved ones by votes then earliest asked (lowest id), then the answered ones,
// most recently answered first.
func thwsAudienceOrder(a, b api.Question) int {
	rank := map[string]int{"pinned": 0, "approved": 1, "answered": 2}
	if c := cmp.Compare(rank[a.State], rank[b.State]); c != 0 {
		return c
	}
	if a.State == "answered" {
		return b.AnsweredAt.Compare(*a.AnsweredAt)
	}
	return cmp.Or(cmp.Compare(b.Votes, a.Votes), cmp.Compare(a.ID, b.ID))
}

func thwsIDs(qs []api.Question) []int64 {
	out := make([]int64, len(qs))
	for i, q := range qs {
		out[i] = q.ID
	}
	return out
}

func thwsVersions(es []thwsEntry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.f.Version
	}
	return out
}

// --- 1. the audience never sees hidden text ------------------------------------------------

// TestTownHallWSAudienceNeverSeesHidden: three questions, one approved, one rejected, one
// left pending. Moderators see all three, pending first and then each decision, with flags
// and the queue; the audience sees exactly the approved one, and not one byte of any frame
// it gets carries the other two's text. Archiving the approved one removes it.
func TestTownHallWSAudienceNeverSeesHidden(t *testing.T) {
	e := thwsStart(t)
	aud := thwsDial(t, e.n, "audience")
	first := aud.subscribe(e.qch, nil)
	if got := thwsTypes(first); !slices.Equal(got, []string{"snapshot", "subscribed"}) {
		t.Fatalf("audience subscribe answered %v", got)
	}
	snap := thwsDecode(t, first[0].f.Data)
	if len(snap.Questions) != 0 || !*snap.Open || !*snap.Moderated {
		t.Fatalf("the demo's town hall: %s, want open, moderated and no questions", first[0].f.Data)
	}
	mod := thwsDial(t, e.n, "moderator")
	if f := mod.auth(e.mod); f.Type != protocol.TypeAuthOK {
		t.Fatalf("moderator auth: %+v", f)
	}
	msnap := mod.subscribe(e.mch, nil)
	if d := thwsDecode(t, msnap[0].f.Data); msnap[0].f.Type != protocol.TypeSnapshot || len(d.Questions) != 0 ||
		d.Queue == nil || d.Queue.Pending != 0 || msnap[0].f.Version != first[0].f.Version {
		t.Fatalf("moderation snapshot %s at %d, want no questions at the audience's version %d",
			msnap[0].f.Data, msnap[0].f.Version, first[0].f.Version)
	}

	texts := []string{
		"APPROVED-kestrel-4471: how will the municipal budget data be published each month?",
		"REJECTED-marmot-9032: why is the corrupt minister still in charge of the tenders?",
		"PENDING-ocelot-2265: when will the full transit contracts appear on the open data portal?",
	}
	var (
		qs   []api.Question
		askV []uint64 // the version of each ask on the moderation channel
	)
	modFrom := mod.mark()
	for i, text := range texts {
		q := e.ask(t, e.attendee(t), text)
		qs = append(qs, q)
		_, up := mod.await(modFrom, 5*time.Second, "the asked question", func(f protocol.ServerFrame) bool {
			return f.Type == protocol.TypeUpdate && thwsHolds(t, f, q.ID)
		})
		askV = append(askV, up.f.Version)
		d := thwsDecode(t, up.f.Data)
		var got api.ModQuestion
		if len(d.Questions) != 1 || json.Unmarshal(d.Questions[0], &got) != nil || got.ID != q.ID || got.State != "pending" ||
			got.Text != text || got.Attendee == "" || len(d.Actions) != 0 || d.Queue == nil || d.Queue.Pending != i+1 || d.Queue.Decided != 0 {
			t.Fatalf("moderation update for question %d: %s", q.ID, up.f.Data)
		}
		wantFlags := 0
		if i == 1 {
			wantFlags = 1 // "corrupt" is on the built-in word list
		}
		if len(got.Flags) != wantFlags || (wantFlags == 1 && (got.Flags[0].Kind != "word_list" || !slices.Contains(got.Flags[0].Words, "corrupt"))) {
			t.Fatalf("question %d flags %+v, want %d word_list flag(s)", q.ID, got.Flags, wantFlags)
		}
	}
	approved, rejected, pending := qs[0], qs[1], qs[2]
	vApprove := e.act(t, approved.ID, "approve")
	vReject := e.act(t, rejected.ID, "reject")
	vArchive := e.act(t, approved.ID, "archive")
	mod.await(modFrom, 5*time.Second, "the archive", func(f protocol.ServerFrame) bool { return f.Version == vArchive })
	aud.await(0, 5*time.Second, "the archive", func(f protocol.ServerFrame) bool { return f.Version == vArchive })
	aud.sync()
	mod.sync()

	// The audience: exactly the approved question, then its removal.
	got := aud.on(e.qch, 0)
	if types := thwsTypes(got); !slices.Equal(types, []string{"snapshot", "subscribed", "update", "update"}) {
		t.Fatalf("audience frames %v, want snapshot, subscribed and 2 updates", types)
	}
	if vs := thwsVersions(got[2:]); !slices.Equal(vs, []uint64{vApprove, vArchive}) {
		t.Fatalf("audience updates at %v, want the approval %d and the archive %d", vs, vApprove, vArchive)
	}
	if *got[2].f.Prev != first[0].f.Version || *got[3].f.Prev != vApprove {
		t.Fatalf("audience prevs %d, %d; want %d, %d", *got[2].f.Prev, *got[3].f.Prev, first[0].f.Version, vApprove)
	}
	up := thwsDecode(t, got[2].f.Data)
	var pub api.Question
	if len(up.Questions) != 1 || json.Unmarshal(up.Questions[0], &pub) != nil || pub.ID != approved.ID ||
		pub.State != "approved" || pub.Text != texts[0] || len(up.Removed) != 0 || up.Queue != nil || up.Actions != nil {
		t.Fatalf("approval on the audience channel: %s", got[2].f.Data)
	}
	if rm := thwsDecode(t, got[3].f.Data); len(rm.Questions) != 0 || !slices.Equal(rm.Removed, []int64{approved.ID}) {
		t.Fatalf("archive on the audience channel: %s, want removed [%d] only", got[3].f.Data, approved.ID)
	}
	if m := thwsApply(t, got); len(m.questions) != 0 {
		t.Fatalf("the audience still holds %d questions", len(m.questions))
	}

	// The moderators: the three asks, then each decision, with the actions and the queue.
	mgot := mod.on(e.mch, modFrom)
	want := []uint64{askV[0], askV[1], askV[2], vApprove, vReject, vArchive}
	if vs := thwsVersions(mgot); !slices.Equal(vs, want) || len(thwsOfType(mgot, protocol.TypeUpdate)) != len(want) {
		t.Fatalf("moderation updates %v (%v), want exactly %v", vs, thwsTypes(mgot), want)
	}
	decisions := []struct {
		q     int64
		state string
		queue [2]int
	}{{approved.ID, "approved", [2]int{2, 1}}, {rejected.ID, "rejected", [2]int{1, 2}}, {approved.ID, "archived", [2]int{1, 2}}}
	for i, dec := range decisions {
		d := thwsDecode(t, mgot[3+i].f.Data)
		var q api.ModQuestion
		var a api.ModAction
		if len(d.Questions) != 1 || json.Unmarshal(d.Questions[0], &q) != nil || q.ID != dec.q || q.State != dec.state ||
			len(d.Actions) != 1 || json.Unmarshal(d.Actions[0], &a) != nil || a.Version != mgot[3+i].f.Version || a.Question != dec.q ||
			a.Moderator != "moderator:cli" || d.Queue.Pending != dec.queue[0] || d.Queue.Decided != dec.queue[1] {
			t.Fatalf("moderation update %d: %s", i, mgot[3+i].f.Data)
		}
	}
	mm := thwsApply(t, mod.on(e.mch, 0))
	if len(mm.questions) != 3 || len(mm.actions) != 3 {
		t.Fatalf("the moderator holds %d questions and %d actions, want 3 and 3", len(mm.questions), len(mm.actions))
	}

	// Not one byte of hidden text, ever, on the audience's socket; nor on a newcomer's.
	late := thwsDial(t, e.n, "late audience")
	ls := late.subscribe(e.qch, nil)
	if d := thwsDecode(t, ls[0].f.Data); ls[0].f.Type != protocol.TypeSnapshot || len(d.Questions) != 0 || ls[0].f.Version != vArchive {
		t.Fatalf("a late audience snapshot: %s at %d, want no questions at %d", ls[0].f.Data, ls[0].f.Version, vArchive)
	}
	for _, c := range []*thwsClient{aud, late} {
		for _, fr := range c.entries() {
			for _, hidden := range []string{"REJECTED-marmot-9032", "PENDING-ocelot-2265", "corrupt", "transit contracts", "attendee"} {
				if bytes.Contains(fr.raw, []byte(hidden)) {
					t.Errorf("%s got a frame containing %q: %s", c.name, hidden, fr.raw)
				}
			}
		}
	}
	// The REST views agree.
	if l := e.public(t, e.n); len(l.Questions) != 0 {
		t.Fatalf("public list %+v, want empty", l.Questions)
	}
	mv := e.moderation(t)
	states := map[int64]string{}
	for _, q := range mv.Questions {
		states[q.ID] = q.State
	}
	if len(states) != 3 || states[approved.ID] != "archived" || states[rejected.ID] != "rejected" || states[pending.ID] != "pending" || mv.Queue.Pending != 1 {
		t.Fatalf("moderation view states %v, queue %+v", states, mv.Queue)
	}
}

// --- 2. order and prev chain -----------------------------------------------------------------

// TestTownHallWSOrderAndChain: an audience client follows a session through approvals,
// votes, a pin and two answers; every update chains on the one before and versions
// increase. A newcomer's snapshot is in QuestionList's order: pinned, approved by votes
// then id, answered most recent first; it equals what the first client built from its
// updates, and the REST list.
func TestTownHallWSOrderAndChain(t *testing.T) {
	e := thwsStart(t)
	aud := thwsDial(t, e.n, "audience")
	aud.subscribe(e.qch, nil)
	mod := thwsDial(t, e.n, "moderator")
	mod.auth(e.mod)
	mod.subscribe(e.mch, nil)

	topics := []string{"library opening hours", "bus route twelve", "school meals budget", "street lighting repairs",
		"park maintenance contracts", "water quality reports", "public wifi coverage"}
	q := make([]int64, len(topics))
	for i, topic := range topics {
		q[i] = e.ask(t, e.attendee(t), fmt.Sprintf("Question %d: what is the plan for %s this year?", i+1, topic)).ID
	}
	hidden := e.ask(t, e.attendee(t), "Still pending: who audits the procurement of ambulances?").ID
	from := aud.mark()
	var approvals []uint64
	for _, id := range q {
		approvals = append(approvals, e.act(t, id, "approve"))
	}
	aud.await(from, 5*time.Second, "the last approval", func(f protocol.ServerFrame) bool { return f.Version == approvals[len(approvals)-1] })
	if vs := thwsVersions(aud.on(e.qch, from)); !slices.Equal(vs, approvals) {
		t.Fatalf("approvals reached the audience at %v, want one update each: %v", vs, approvals)
	}

	// Votes: q2 and q4 three each (a tie, broken by id), q1 one, q6 five (answered later).
	voters := e.attendees(t, 5)
	var ballots []thwsBallot
	for _, v := range voters[:3] {
		ballots = append(ballots, thwsBallot{e.n, v, q[1]}, thwsBallot{e.n, v, q[3]})
	}
	ballots = append(ballots, thwsBallot{e.n, voters[0], q[0]})
	for _, v := range voters {
		ballots = append(ballots, thwsBallot{e.n, v, q[5]})
	}
	e.votes(t, ballots, 0)
	wantVotes := map[int64]int{q[0]: 1, q[1]: 3, q[2]: 0, q[3]: 3, q[4]: 0, q[5]: 5, q[6]: 0}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		m := thwsApply(t, aud.on(e.qch, 0))
		for id, n := range wantVotes {
			if got := m.question(t, id).Votes; got != n {
				return fmt.Errorf("question %d has %d votes on the audience channel, want %d", id, got, n)
			}
		}
		return nil
	})
	from = aud.mark()
	vPin := e.act(t, q[4], "pin")
	vAns1 := e.act(t, q[5], "answer")
	vAns2 := e.act(t, q[6], "answer")
	aud.await(from, 5*time.Second, "the last answer", func(f protocol.ServerFrame) bool { return f.Version == vAns2 })
	if vs := thwsVersions(aud.on(e.qch, from)); !slices.Equal(vs, []uint64{vPin, vAns1, vAns2}) {
		t.Fatalf("pin and answers reached the audience at %v, want %v", vs, []uint64{vPin, vAns1, vAns2})
	}

	newcomer := thwsDial(t, e.n, "newcomer")
	ns := newcomer.subscribe(e.qch, nil)
	if len(ns) != 2 || ns[0].f.Type != protocol.TypeSnapshot || ns[0].f.Version != vAns2 {
		t.Fatalf("newcomer got %v at %d, want a snapshot at %d", thwsTypes(ns), ns[0].f.Version, vAns2)
	}
	var list api.QuestionList
	if err := json.Unmarshal(ns[0].f.Data, &list); err != nil {
		t.Fatal(err)
	}
	wantOrder := []int64{q[4], q[1], q[3], q[0], q[2], q[6], q[5]}
	if got := thwsIDs(list.Questions); !slices.Equal(got, wantOrder) {
		t.Fatalf("snapshot order %v, want %v (pinned, approved by votes then id, answered newest first)", got, wantOrder)
	}
	if !slices.IsSortedFunc(list.Questions, thwsAudienceOrder) {
		t.Fatalf("snapshot not in QuestionList order: %+v", list.Questions)
	}
	if slices.Contains(thwsIDs(list.Questions), hidden) {
		t.Fatal("the pending question is in the audience snapshot")
	}
	// The first client's updates built exactly the newcomer's snapshot, and REST agrees.
	if err := thwsSameQuestions(thwsApply(t, aud.on(e.qch, 0)).questions, thwsApply(t, ns).questions); err != nil {
		t.Fatalf("updates and snapshot disagree: %v", err)
	}
	rest := e.public(t, e.n)
	if got := thwsIDs(rest.Questions); !slices.Equal(got, wantOrder) {
		t.Fatalf("REST order %v, want %v", got, wantOrder)
	}
	for i, rq := range rest.Questions {
		a, _ := json.Marshal(rq)
		b, _ := json.Marshal(list.Questions[i])
		if !bytes.Equal(a, b) {
			t.Fatalf("REST and snapshot disagree on question %d: %s against %s", rq.ID, a, b)
		}
	}
	// Versions strictly increase and chain on both channels (verify checks prev); count them.
	ups := thwsOfType(aud.on(e.qch, 0), protocol.TypeUpdate)
	if !slices.IsSorted(thwsVersions(ups)) || len(ups) < len(q)+3+1 {
		t.Fatalf("audience got %d updates %v", len(ups), thwsVersions(ups))
	}
	mm := thwsApply(t, mod.on(e.mch, 0))
	if len(mm.questions) != len(q)+1 || mm.version != vAns2 {
		t.Fatalf("moderator holds %d questions at %d, want %d at %d", len(mm.questions), mm.version, len(q)+1, vAns2)
	}
	t.Logf("audience: %d updates, moderators: %d", len(ups), mm.updates)
}

// --- 3. vote coalescing ----------------------------------------------------------------------

// TestTownHallWSVoteCoalescing: 200 attendees vote for one question at once; the audience
// ends at exactly 200 through a handful of updates, at most one per vote interval. With an
// interval of 1 s, consecutive vote updates are at least ~0.9 s apart.
func TestTownHallWSVoteCoalescing(t *testing.T) {
	t.Run("200 votes, 250ms", func(t *testing.T) {
		const voters, interval = 200, 250 * time.Millisecond
		e := thwsStart(t)
		qid := e.ask(t, e.attendee(t), "Will the council publish every vote of the budget committee?").ID
		aud := thwsDial(t, e.n, "audience")
		aud.subscribe(e.qch, nil)
		mod := thwsDial(t, e.n, "moderator")
		mod.auth(e.mod)
		mod.subscribe(e.mch, nil)
		vApprove := e.act(t, qid, "approve")
		aud.await(0, 5*time.Second, "the approval", func(f protocol.ServerFrame) bool { return f.Version == vApprove })
		toks := e.attendees(t, voters)
		from, mfrom := aud.mark(), mod.mark()
		ballots := make([]thwsBallot, voters)
		for i, tok := range toks {
			ballots[i] = thwsBallot{e.n, tok, qid}
		}
		start := time.Now()
		versions := e.votes(t, ballots, time.Second/voters) // 200 votes within ~1 s
		sent := time.Since(start)
		slices.Sort(versions)
		batches := len(slices.Compact(versions))
		_, done := aud.await(from, 10*time.Second, "200 votes", func(f protocol.ServerFrame) bool {
			return thwsCounts(t, f, qid, voters)
		})
		mod.await(mfrom, 10*time.Second, "200 votes", func(f protocol.ServerFrame) bool {
			return thwsCounts(t, f, qid, voters)
		})
		time.Sleep(2 * interval) // anything left would come now
		aud.sync()
		elapsed := done.at.Sub(start)
		ups := aud.on(e.qch, from)
		bound := int(elapsed/interval) + 3
		last := 0
		for i, u := range ups {
			// A count alone travels as a count, not as the whole question.
			d := thwsDecode(t, u.f.Data)
			n, ok := d.Votes[qid]
			if u.f.Type != protocol.TypeUpdate || len(d.Votes) != 1 || !ok || n <= last ||
				len(d.Questions) != 0 || len(d.Removed) != 0 {
				t.Fatalf("vote update %d: %s, want only the count of question %d, above %d", i, u.f.Data, qid, last)
			}
			last = n
		}
		if last != voters || len(ups) > bound || len(ups) == 0 {
			t.Fatalf("audience: %d updates in %v (bound %d) for %d vote batches, final count %d; want ≤ %d updates ending at %d",
				len(ups), elapsed, bound, batches, last, bound, voters)
		}
		// Otherwise the bound would only measure the log's group commit, not the feed.
		if batches <= 2*bound {
			t.Fatalf("the 200 votes were stored in only %d log entries: too few to tell coalesced updates (bound %d)", batches, bound)
		}
		mups := mod.on(e.mch, mfrom)
		if m := thwsApply(t, mod.on(e.mch, 0)); len(mups) > bound || m.question(t, qid).Votes != voters {
			t.Fatalf("moderators: %d updates (bound %d), final count %d", len(mups), bound, m.question(t, qid).Votes)
		}
		if l := e.public(t, e.n); len(l.Questions) != 1 || l.Questions[0].Votes != voters {
			t.Fatalf("REST list after the votes: %+v", l.Questions)
		}
		t.Logf("%d votes sent in %v, stored in %d log entries; the audience got %d updates (moderators %d) in %v",
			voters, sent, batches, len(ups), len(mups), elapsed)
	})
	t.Run("1s interval spacing", func(t *testing.T) {
		const voters, interval = 40, time.Second
		e := thwsStart(t, "--qa-vote-interval", "1s")
		qid := e.ask(t, e.attendee(t), "How many new bike lanes will open before the rainy season?").ID
		aud := thwsDial(t, e.n, "audience")
		aud.subscribe(e.qch, nil)
		vApprove := e.act(t, qid, "approve")
		aud.await(0, 5*time.Second, "the approval", func(f protocol.ServerFrame) bool { return f.Version == vApprove })
		toks := e.attendees(t, voters)
		from := aud.mark()
		start := time.Now()
		for i, tok := range toks { // a steady trickle over ~3 s
			if _, err := e.vote(e.n, tok, qid); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Until(start.Add(time.Duration(i+1) * 75 * time.Millisecond)))
		}
		_, done := aud.await(from, 5*time.Second, "the last vote", func(f protocol.ServerFrame) bool {
			return thwsCounts(t, f, qid, voters)
		})
		ups := aud.on(e.qch, from)
		elapsed := done.at.Sub(start)
		var gaps []time.Duration
		for i := 1; i < len(ups); i++ {
			gap := ups[i].at.Sub(ups[i-1].at)
			gaps = append(gaps, gap.Round(time.Millisecond))
			if gap < 900*time.Millisecond {
				t.Errorf("vote updates %d and %d arrived %v apart, want ≥ 900ms", i-1, i, gap)
			}
		}
		if bound := int(elapsed/interval) + 2; len(ups) > bound || len(ups) < 2 {
			t.Fatalf("%d vote updates in %v, want between 2 and %d", len(ups), elapsed, bound)
		}
		if got := thwsApply(t, aud.on(e.qch, 0)).question(t, qid).Votes; got != voters {
			t.Fatalf("final count %d, want %d", got, voters)
		}
		t.Logf("%d votes over %v: %d updates, gaps %v", voters, elapsed, len(ups), gaps)
	})
}

// --- 4. resume -----------------------------------------------------------------------------------

// TestTownHallWSResume: since = a version the client saw brings exactly the updates it
// missed (the very frames a client that stayed got, chained from since) and no snapshot;
// since = the current version brings only subscribed; a since the channel never had (1, a
// hidden version, the future, or older than the 64 updates kept) brings one snapshot.
func TestTownHallWSResume(t *testing.T) {
	e := thwsStart(t)
	stay := thwsDial(t, e.n, "stayer")
	stay.subscribe(e.qch, nil)
	mstay := thwsDial(t, e.n, "moderator stayer")
	mstay.auth(e.mod)
	mstay.subscribe(e.mch, nil)
	var q []int64
	for i, topic := range []string{"the harbour", "the old market", "the rail yard"} {
		q = append(q, e.ask(t, e.attendee(t), fmt.Sprintf("Resume %d: what will happen to %s?", i, topic)).ID)
	}
	v1 := e.act(t, q[0], "approve")

	c := thwsDial(t, e.n, "resumer")
	got := c.subscribe(e.qch, nil)
	if len(got) != 2 || got[0].f.Version != v1 {
		t.Fatalf("first subscribe: %v at %d, want a snapshot at %d", thwsTypes(got), got[0].f.Version, v1)
	}
	mv1 := c.last(e.qch)
	if ans, _ := c.call(protocol.ClientFrame{Type: protocol.TypeUnsubscribe, Channel: e.qch}); ans.Type != protocol.TypeUnsubscribed || ans.Channel != e.qch || ans.Code != "" {
		t.Fatalf("unsubscribe answered %+v", ans)
	}
	// Missed while away: three public changes and a hidden one.
	v2 := e.act(t, q[1], "approve")
	hidden := e.ask(t, e.attendee(t), "Resume hidden: is the ferry tender rigged?").ID
	v3 := e.act(t, q[2], "approve")
	v4 := e.act(t, q[0], "pin")
	stay.await(0, 5*time.Second, "the pin", func(f protocol.ServerFrame) bool { return f.Version == v4 })
	mstay.await(0, 5*time.Second, "the pin", func(f protocol.ServerFrame) bool { return f.Version == v4 })
	stayed := thwsOfType(stay.on(e.qch, 0), protocol.TypeUpdate)
	if vs := thwsVersions(stayed); !slices.Equal(vs, []uint64{v1, v2, v3, v4}) {
		t.Fatalf("the stayer got updates %v, want %v", vs, []uint64{v1, v2, v3, v4})
	}

	check := func(c *thwsClient, since uint64, wantUpdates []thwsEntry, wantAt uint64) {
		t.Helper()
		got := c.subscribe(e.qch, &since)
		if len(got) != len(wantUpdates)+1 {
			t.Fatalf("resume from %d: %v, want %d updates then subscribed", since, thwsTypes(got), len(wantUpdates))
		}
		for i, w := range wantUpdates {
			if !bytes.Equal(got[i].raw, w.raw) {
				t.Fatalf("resume from %d, update %d: %s, want the frame the stayer got: %s", since, i, got[i].raw, w.raw)
			}
		}
		if len(wantUpdates) > 0 && *got[0].f.Prev != since {
			t.Fatalf("resume from %d starts with prev %d", since, *got[0].f.Prev)
		}
		if sub := got[len(got)-1]; sub.f.Type != protocol.TypeSubscribed || sub.f.Version != wantAt {
			t.Fatalf("resume from %d ended with %s at %d, want subscribed at %d", since, sub.f.Type, sub.f.Version, wantAt)
		}
	}
	check(c, mv1, stayed[1:], v4)                            // the same connection, after unsubscribe
	check(thwsDial(t, e.n, "resumer 2"), v2, stayed[2:], v4) // a new connection, from the middle
	check(thwsDial(t, e.n, "up to date"), v4, nil, v4)       // nothing missed: just subscribed
	snapshotFrom := func(name string, since uint64) thwsModel {
		t.Helper()
		got := thwsDial(t, e.n, name).subscribe(e.qch, &since)
		if !slices.Equal(thwsTypes(got), []string{"snapshot", "subscribed"}) || got[0].f.Version != v4 || got[1].f.Version != v4 {
			t.Fatalf("resume from %d (%s): %v at %d, want one snapshot at %d then subscribed", since, name, thwsTypes(got), got[0].f.Version, v4)
		}
		m := thwsApply(t, got)
		if err := thwsSameQuestions(m.questions, thwsApply(t, stay.on(e.qch, 0)).questions); err != nil {
			t.Fatalf("the snapshot from %d disagrees with the stayer: %v", since, err)
		}
		return m
	}
	snapshotFrom("since 1", 1)
	snapshotFrom("since the future", 1<<62)
	if m := snapshotFrom("since a hidden version", uint64(hidden)); m.questions[hidden] != nil {
		t.Fatal("the hidden question is in the snapshot")
	}

	// Moderators resume the same way.
	mups := thwsOfType(mstay.on(e.mch, 0), protocol.TypeUpdate)
	mres := thwsDial(t, e.n, "moderator resumer")
	mres.auth(e.mod)
	mgot := mres.subscribe(e.mch, &v1)
	var mwant []thwsEntry
	for _, u := range mups {
		if u.f.Version > v1 {
			mwant = append(mwant, u)
		}
	}
	if len(mgot) != len(mwant)+1 || len(mwant) != 4 {
		t.Fatalf("moderation resume from %d: %v, want the 4 updates after it", v1, thwsTypes(mgot))
	}
	for i, w := range mwant {
		if !bytes.Equal(mgot[i].raw, w.raw) {
			t.Fatalf("moderation resume, update %d: %s, want %s", i, mgot[i].raw, w.raw)
		}
	}

	// The feed keeps the last 64 updates: 66 more pins, then a resume 64 back is exact and
	// one 65 back gets a snapshot.
	from := stay.mark()
	var pins []uint64
	for i := range 66 {
		pins = append(pins, e.act(t, q[1+i%2], "pin"))
	}
	stay.await(from, 10*time.Second, "the last pin", func(f protocol.ServerFrame) bool { return f.Version == pins[65] })
	recent := stay.on(e.qch, from)
	if vs := thwsVersions(recent); !slices.Equal(vs, pins) {
		t.Fatalf("the stayer got %d updates for 66 pins", len(recent))
	}
	check(thwsDial(t, e.n, "64 back"), pins[1], recent[2:], pins[65])
	far := thwsDial(t, e.n, "65 back").subscribe(e.qch, &pins[0])
	if !slices.Equal(thwsTypes(far), []string{"snapshot", "subscribed"}) || far[0].f.Version != pins[65] {
		t.Fatalf("resume 65 updates back: %v at %d, want a snapshot at %d", thwsTypes(far), far[0].f.Version, pins[65])
	}
}

// --- 5. moderation channel authorization (scenario 21) ----------------------------------------

// thwsForge signs moderator claims for the demo event, edited, with any method and key.
func thwsForge(t *testing.T, m jwt.SigningMethod, key any, edit func(jwt.MapClaims)) string {
	t.Helper()
	now := time.Now()
	c := jwt.MapClaims{"event": demoEvent, "typ": "moderator", "sub": "forger", "iss": "cabildo", "aud": []string{"cabildo-api"},
		"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Hour).Unix(), "jti": "thws"}
	if edit != nil {
		edit(c)
	}
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func thwsNodeKey(t *testing.T, n *node) []byte {
	t.Helper()
	key, err := token.LoadOrCreateKeyFile(filepath.Join(n.dataDir, token.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// TestTownHallWSModerationAuth is scenario 21's refusals: no token, an attendee token, a
// moderator token of another event, an organizer token, an expired token, alg none, another
// key, HS512, wrong typ, aud or iss. Each is refused (the auth frame with unauthorized,
// else the subscribe with unauthorized or forbidden) and none of those sockets gets a
// single frame of the channel while questions are asked. A well-formed token signed with
// the node's key (the control) gets the snapshot; a bad auth leaves the good token in
// force; an attendee token sent over a moderator's subscription ends it with forbidden.
func TestTownHallWSModerationAuth(t *testing.T) {
	e := thwsStart(t)
	key := thwsNodeKey(t, e.n)
	other := []byte(strings.Repeat("x", 32))
	hs256 := jwt.SigningMethodHS256
	set := func(k string, v any) func(jwt.MapClaims) { return func(c jwt.MapClaims) { c[k] = v } }
	cases := []struct {
		name     string
		tok      string // "" sends no auth
		authOK   bool
		subError string
	}{
		{"no auth", "", false, protocol.ErrUnauthorized},
		{"attendee", e.attendee(t), true, protocol.ErrForbidden},
		{"moderator of another event", mint(t, e.n.dataDir, "otro-evento", "moderator"), true, protocol.ErrForbidden},
		{"organizer of the event", e.n.token("organizer"), true, protocol.ErrForbidden},
		{"attendee typ signed by the node", thwsForge(t, hs256, key, set("typ", "attendee")), true, protocol.ErrForbidden},
		{"expired", thwsForge(t, hs256, key, set("exp", time.Now().Add(-time.Minute).Unix())), false, protocol.ErrUnauthorized},
		{"alg none", thwsForge(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, nil), false, protocol.ErrUnauthorized},
		{"alg none, hand-made", noneToken(t), false, protocol.ErrUnauthorized},
		{"HS256 with another key", thwsForge(t, hs256, other, nil), false, protocol.ErrUnauthorized},
		{"HS512 with the node key", thwsForge(t, jwt.SigningMethodHS512, key, nil), false, protocol.ErrUnauthorized},
		{"wrong typ", thwsForge(t, hs256, key, set("typ", "admin")), false, protocol.ErrUnauthorized},
		{"wrong aud", thwsForge(t, hs256, key, set("aud", []string{"other-api"})), false, protocol.ErrUnauthorized},
		{"wrong iss", thwsForge(t, hs256, key, set("iss", "someone")), false, protocol.ErrUnauthorized},
		{"no exp", thwsForge(t, hs256, key, func(c jwt.MapClaims) { delete(c, "exp") }), false, protocol.ErrUnauthorized},
	}
	var refused []*thwsClient
	for _, tc := range cases {
		c := thwsDial(t, e.n, tc.name)
		if tc.tok != "" {
			f := c.auth(tc.tok)
			if ok := f.Type == protocol.TypeAuthOK; ok != tc.authOK || (!ok && (f.Type != protocol.TypeError || f.Code != protocol.ErrUnauthorized)) {
				t.Fatalf("%s: auth answered %+v, want accepted %v (else error unauthorized)", tc.name, f, tc.authOK)
			}
		}
		c.subscribeError(e.mch, nil, tc.subError)
		// A refusal is not a loop: the same socket still serves the public channel.
		c.subscribe(e.qch, nil)
		refused = append(refused, c)
	}

	// The control: the same claims, signed right, are a moderator.
	good := thwsDial(t, e.n, "control")
	if f := good.auth(thwsForge(t, hs256, key, nil)); f.Type != protocol.TypeAuthOK {
		t.Fatalf("the well-formed forged token was refused (%+v): the negative cases prove nothing", f)
	}
	if got := good.subscribe(e.mch, nil); got[0].f.Type != protocol.TypeSnapshot {
		t.Fatalf("a moderator got %v", thwsTypes(got))
	}
	// A bad token later leaves the good one in force.
	if f := good.auth("not.a.token"); f.Type != protocol.TypeError || f.Code != protocol.ErrUnauthorized {
		t.Fatalf("garbage auth answered %+v", f)
	}
	// An attendee token over a moderator's subscription ends it, with forbidden.
	demoted := thwsDial(t, e.n, "demoted")
	demoted.auth(e.mod)
	demoted.subscribe(e.mch, nil)
	demoted.subscribe(e.qch, nil)
	dfrom := demoted.mark()
	if f := demoted.auth(e.attendee(t)); f.Type != protocol.TypeAuthOK {
		t.Fatalf("attendee auth over a moderator: %+v", f)
	}
	ended := demoted.on(e.mch, dfrom)
	if len(ended) != 1 || ended[0].f.Type != protocol.TypeUnsubscribed || ended[0].f.Code != protocol.ErrForbidden || ended[0].f.ID != 0 {
		t.Fatalf("after an attendee token the moderation channel got %v, want one unsubscribed (forbidden, no id)", thwsTypes(ended))
	}

	// Something to leak: a question asked, seen by the moderator.
	from := good.mark()
	q := e.ask(t, e.attendee(t), "Leak check: who signed the waste collection contract?")
	good.await(from, 5*time.Second, "the question", func(f protocol.ServerFrame) bool { return thwsHolds(t, f, q.ID) })
	for _, c := range append(refused, good, demoted) {
		c.sync()
	}
	for _, c := range refused {
		for _, fr := range c.on(e.mch, 0) {
			if fr.f.Type != protocol.TypeError {
				t.Errorf("%s: got a %s frame of %s", c.name, fr.f.Type, e.mch)
			}
		}
		if got := len(c.on(e.mch, 0)); got != 1 {
			t.Errorf("%s: %d frames of %s, want only the refusal", c.name, got, e.mch)
		}
		for _, fr := range c.entries() {
			if bytes.Contains(fr.raw, []byte("waste collection")) {
				t.Errorf("%s: the pending question leaked: %s", c.name, fr.raw)
			}
		}
	}
	if after := demoted.on(e.mch, dfrom); len(after) != 1 {
		t.Fatalf("the demoted moderator got %d frames of %s after its subscription ended", len(after)-1, e.mch)
	}
	if got := good.on(e.mch, from); len(got) != 1 || got[0].f.Type != protocol.TypeUpdate {
		t.Fatalf("the moderator got %v for the question", thwsTypes(got))
	}
}

// TestTownHallWSTokenExpiry is the end of scenario 21: a moderator token of 3 s ends its
// subscription with unsubscribed token_expired within 1 s after exp + 5 s of leeway, and
// nothing of the channel follows although questions keep coming; the socket's public
// subscription goes on. A subscribe with the expired token is refused with token_expired;
// a fresh token and since resume without a gap. A moderator who renewed in time is not cut.
func TestTownHallWSTokenExpiry(t *testing.T) {
	e := thwsStart(t)
	keys, err := token.New(thwsNodeKey(t, e.n))
	if err != nil {
		t.Fatal(err)
	}
	mintFor := func(ttl time.Duration) (string, time.Time) {
		tok, claims, err := keys.Mint(demoEvent, token.Moderator, "lucia", ttl)
		if err != nil {
			t.Fatal(err)
		}
		return tok, claims.ExpiresAt.Time
	}
	stay := thwsDial(t, e.n, "moderator with a long token")
	stay.auth(e.mod)
	stay.subscribe(e.mch, nil)

	short, exp := mintFor(3 * time.Second)
	deadline := exp.Add(token.Leeway)
	x := thwsDial(t, e.n, "moderator with a 3s token")
	if f := x.auth(short); f.Type != protocol.TypeAuthOK {
		t.Fatalf("auth: %+v", f)
	}
	x.subscribe(e.mch, nil)
	x.subscribe(e.qch, nil)
	renewed := thwsDial(t, e.n, "moderator who renews")
	short2, _ := mintFor(3 * time.Second)
	renewed.auth(short2)
	renewed.subscribe(e.mch, nil)
	long, _ := mintFor(time.Hour)
	if f := renewed.auth(long); f.Type != protocol.TypeAuthOK {
		t.Fatalf("renewal: %+v", f)
	}

	asker := e.attendee(t)
	type asked struct {
		id          int64
		start, done time.Time
	}
	var asks []asked
	for i := 0; time.Now().Before(deadline.Add(1500 * time.Millisecond)); i++ {
		start := time.Now()
		q := e.ask(t, asker, fmt.Sprintf("Expiry tick %d: which neighbourhood gets the next clinic?", i))
		asks = append(asks, asked{q.ID, start, time.Now()})
		time.Sleep(400 * time.Millisecond)
	}
	_, end := x.await(0, 5*time.Second, "unsubscribed token_expired", func(f protocol.ServerFrame) bool {
		return f.Type == protocol.TypeUnsubscribed && f.Channel == e.mch
	})
	lateness := end.at.Sub(deadline)
	if end.f.Code != protocol.ErrTokenExpired || end.f.ID != 0 || end.f.Message == "" {
		t.Fatalf("the subscription ended with %s, want code token_expired, a message and no id", end.raw)
	}
	if lateness < -20*time.Millisecond || lateness > time.Second {
		t.Fatalf("token_expired came %v after exp + leeway, want within [0, 1s]", lateness)
	}
	stay.await(0, 5*time.Second, "the last question", func(f protocol.ServerFrame) bool { return thwsHolds(t, f, asks[len(asks)-1].id) })
	x.sync()

	// Before the end: exactly the moderator's updates; after it: nothing of the channel.
	xs := x.on(e.mch, 0)
	var xups []thwsEntry
	for i, f := range xs {
		if f.f.Type == protocol.TypeUnsubscribed {
			if i != len(xs)-1 {
				t.Fatalf("%d frames of %s followed token_expired: %v", len(xs)-1-i, e.mch, thwsTypes(xs[i+1:]))
			}
			break
		}
		if f.f.Type == protocol.TypeUpdate {
			xups = append(xups, f)
		}
	}
	sups := thwsOfType(stay.on(e.mch, 0), protocol.TypeUpdate)
	if len(xups) > len(sups) {
		t.Fatalf("the expiring moderator got %d updates, the long-lived one %d", len(xups), len(sups))
	}
	for i, u := range xups {
		if !bytes.Equal(u.raw, sups[i].raw) {
			t.Fatalf("update %d differs between the moderators: %s against %s", i, u.raw, sups[i].raw)
		}
	}
	before, after := 0, 0
	for _, a := range asks {
		switch {
		case a.done.Before(deadline.Add(-300 * time.Millisecond)):
			before++
			if !slices.ContainsFunc(xups, func(u thwsEntry) bool { return thwsHolds(t, u.f, a.id) }) {
				t.Errorf("question %d, asked well before the expiry, never reached the moderator", a.id)
			}
		case a.start.After(end.at):
			after++
		}
	}
	if after < 2 || before < 8 {
		t.Fatalf("%d questions asked before the expiry and %d after it; the test needs ≥ 8 and ≥ 2", before, after)
	}
	lastX := xups[len(xups)-1].f.Version

	// The public subscription of the same socket goes on.
	xfrom := x.mark()
	vApprove := e.act(t, asks[0].id, "approve")
	x.await(xfrom, 5*time.Second, "the approval on the public channel", func(f protocol.ServerFrame) bool {
		return f.Channel == e.qch && f.Version == vApprove
	})
	stay.await(0, 5*time.Second, "the approval", func(f protocol.ServerFrame) bool { return f.Version == vApprove })
	// The expired token in force: token_expired. A fresh one and since: no gap.
	x.subscribeError(e.mch, &lastX, protocol.ErrTokenExpired)
	fresh, _ := mintFor(time.Hour)
	if f := x.auth(fresh); f.Type != protocol.TypeAuthOK {
		t.Fatalf("fresh auth: %+v", f)
	}
	resumed := x.subscribe(e.mch, &lastX)
	var missed []thwsEntry
	for _, u := range thwsOfType(stay.on(e.mch, 0), protocol.TypeUpdate) {
		if u.f.Version > lastX {
			missed = append(missed, u)
		}
	}
	if len(resumed) != len(missed)+1 || len(missed) < after+1 {
		t.Fatalf("resume from %d: %v; want the %d updates missed, then subscribed", lastX, thwsTypes(resumed), len(missed))
	}
	for i, m := range missed {
		if !bytes.Equal(resumed[i].raw, m.raw) {
			t.Fatalf("resumed update %d: %s, want %s", i, resumed[i].raw, m.raw)
		}
	}
	if *resumed[0].f.Prev != lastX || resumed[len(resumed)-1].f.Version != vApprove {
		t.Fatalf("resume chain starts at prev %d and ends at %d; want %d and %d", *resumed[0].f.Prev, resumed[len(resumed)-1].f.Version, lastX, vApprove)
	}

	// The renewed moderator was never cut off: it got every update the long-lived one did.
	renewed.await(0, 5*time.Second, "the approval", func(f protocol.ServerFrame) bool { return f.Version == vApprove })
	renewed.sync()
	all := thwsOfType(stay.on(e.mch, 0), protocol.TypeUpdate)
	rups := thwsOfType(renewed.on(e.mch, 0), protocol.TypeUpdate)
	if len(thwsOfType(renewed.on(e.mch, 0), protocol.TypeUnsubscribed)) != 0 || len(rups) != len(all) {
		t.Fatalf("the renewed moderator got %v (%d updates), the long-lived one %d updates",
			thwsTypes(renewed.on(e.mch, 0)), len(rups), len(all))
	}
	for i, u := range rups {
		if !bytes.Equal(u.raw, all[i].raw) {
			t.Fatalf("renewed moderator's update %d: %s, want %s", i, u.raw, all[i].raw)
		}
	}
	t.Logf("token_expired %v after exp+leeway; %d questions before, %d after; resumed %d updates", lateness, before, after, len(missed))
}

// --- updates against REST -------------------------------------------------------------------

// actBody runs a moderator action (or, with q 0, an undo) with a body and returns the
// logged action's version.
func (e *thwsEnv) actBody(t *testing.T, q int64, body map[string]any) uint64 {
	t.Helper()
	path := e.path("/moderation/undo")
	if q != 0 {
		path = e.path(fmt.Sprintf("/questions/%d/actions", q))
	}
	r := e.n.do(t, req{method: "POST", path: path, header: auth(e.mod), body: body})
	if r.Status != 200 {
		t.Fatalf("POST %s %v: %d %s", path, body, r.Status, r.Body)
	}
	var res api.ModerationResult
	r.json(t, &res)
	return res.Action.Version
}

// thwsRaw is a REST view with its items as the server encoded them.
type thwsRaw struct {
	Version   uint64            `json:"version"`
	Questions []json.RawMessage `json:"questions"`
	Actions   []json.RawMessage `json:"actions"`
	Queue     json.RawMessage   `json:"queue"`
}

func (e *thwsEnv) raw(t *testing.T, suffix, tok string) thwsRaw {
	t.Helper()
	r := e.n.do(t, req{method: "GET", path: e.path(suffix), header: auth(tok)})
	if r.Status != 200 {
		t.Fatalf("GET %s: %d %s", suffix, r.Status, r.Body)
	}
	var v thwsRaw
	r.json(t, &v)
	return v
}

func thwsByID(t *testing.T, items []json.RawMessage) map[int64]json.RawMessage {
	t.Helper()
	out := map[int64]json.RawMessage{}
	for _, it := range items {
		id, _ := thwsIDOf(t, it)
		out[id] = it
	}
	return out
}

// TestTownHallWSMatchesREST: after edits, a merge of a voted duplicate, a withdrawn vote, an
// undo, pins, an answer, an archive and more than 100 actions in all, what each channel's
// subscriber built from its updates is, byte for byte, what REST says; a fresh moderation
// snapshot carries exactly REST's 100 most recent actions, and its queue.
func TestTownHallWSMatchesREST(t *testing.T) {
	e := thwsStart(t)
	aud := thwsDial(t, e.n, "audience")
	aud.subscribe(e.qch, nil)
	mod := thwsDial(t, e.n, "moderator")
	mod.auth(e.mod)
	mod.subscribe(e.mch, nil)

	var q []int64
	for _, text := range []string{"Match 1: when will the river walk be finished?", "Match 2: when does the riverside walkway open?",
		"Match 3: who pays for the new stadium lights?", "Match 4: will the night market stay on Fridays?",
		"Match 5: how are the school zones kept safe at rush hour?"} {
		q = append(q, e.ask(t, e.attendee(t), text).ID)
	}
	for _, id := range q[:4] {
		e.act(t, id, "approve")
	}
	v := e.attendees(t, 4)
	var ballots []thwsBallot
	for _, tok := range v[:3] {
		ballots = append(ballots, thwsBallot{e.n, tok, q[0]})
	}
	ballots = append(ballots, thwsBallot{e.n, v[0], q[1]}, thwsBallot{e.n, v[3], q[1]})
	// agree waits until both subscribers hold, byte for byte, the questions REST lists.
	agree := func(step string) {
		t.Helper()
		checkFor(t, 5*time.Second, 20*time.Millisecond, func() error {
			if err := thwsSameQuestions(thwsApply(t, aud.on(e.qch, 0)).questions, thwsByID(t, e.raw(t, "/questions", "").Questions)); err != nil {
				return fmt.Errorf("after %s, the audience: %w", step, err)
			}
			if err := thwsSameQuestions(thwsApply(t, mod.on(e.mch, 0)).questions, thwsByID(t, e.raw(t, "/moderation", e.mod).Questions)); err != nil {
				return fmt.Errorf("after %s, the moderator: %w", step, err)
			}
			return nil
		})
	}
	e.votes(t, ballots, 0)
	agree("the votes")
	e.actBody(t, q[2], map[string]any{"action": "edit", "text": "Match 3: who pays for the stadium lights?"})
	e.actBody(t, q[1], map[string]any{"action": "merge", "into": q[0]})
	agree("the merge")
	if r := e.n.do(t, req{method: "DELETE", path: e.path(fmt.Sprintf("/questions/%d/vote", q[0])), header: auth(v[3])}); r.Status != 200 {
		t.Fatalf("withdraw: %d %s", r.Status, r.Body)
	}
	agree("a withdrawn vote")
	e.actBody(t, 0, map[string]any{}) // undo the merge
	agree("the undo")
	e.act(t, q[2], "pin")
	e.act(t, q[2], "unpin")
	e.act(t, q[3], "pin")
	e.act(t, q[3], "answer")
	e.act(t, q[0], "archive")
	e.act(t, q[4], "reject")
	var last uint64
	for i := range 92 { // past the 100 actions a moderation view carries
		last = e.act(t, q[1+i%2], "pin")
	}
	for _, c := range []*thwsClient{aud, mod} {
		c.await(0, 10*time.Second, "the last pin", func(f protocol.ServerFrame) bool { return f.Version == last })
	}

	pub := e.raw(t, "/questions", "")
	if am := thwsApply(t, aud.on(e.qch, 0)); am.version != last || pub.Version != last {
		t.Fatalf("audience at %d, REST at %d, want %d", am.version, pub.Version, last)
	} else if err := thwsSameQuestions(am.questions, thwsByID(t, pub.Questions)); err != nil {
		t.Fatalf("the audience's questions are not REST's: %v", err)
	}
	rm := e.raw(t, "/moderation", e.mod)
	mm := thwsApply(t, mod.on(e.mch, 0))
	if err := thwsSameQuestions(mm.questions, thwsByID(t, rm.Questions)); err != nil {
		t.Fatalf("the moderator's questions are not REST's: %v", err)
	}
	if len(rm.Actions) != 100 {
		t.Fatalf("REST carries %d actions, want 100", len(rm.Actions))
	}
	for _, a := range rm.Actions {
		_, av := thwsIDOf(t, a)
		if got := mm.actions[av]; !bytes.Equal(got, a) {
			t.Fatalf("action %d: the moderator holds %s, REST says %s", av, got, a)
		}
	}
	fresh := thwsDial(t, e.n, "fresh moderator")
	fresh.auth(e.mod)
	fs := fresh.subscribe(e.mch, nil)
	var snap thwsRaw
	if err := json.Unmarshal(fs[0].f.Data, &snap); err != nil || fs[0].f.Version != last {
		t.Fatalf("fresh moderation snapshot at %d (%v), want %d", fs[0].f.Version, err, last)
	}
	if len(snap.Actions) != len(rm.Actions) || !bytes.Equal(snap.Queue, rm.Queue) {
		t.Fatalf("snapshot: %d actions, queue %s; REST: %d actions, queue %s", len(snap.Actions), snap.Queue, len(rm.Actions), rm.Queue)
	}
	for i := range snap.Actions {
		if !bytes.Equal(snap.Actions[i], rm.Actions[i]) {
			t.Fatalf("snapshot action %d: %s, REST %s", i, snap.Actions[i], rm.Actions[i])
		}
	}
	for i := range snap.Questions {
		if !bytes.Equal(snap.Questions[i], rm.Questions[i]) {
			t.Fatalf("snapshot question %d: %s, REST %s", i, snap.Questions[i], rm.Questions[i])
		}
	}
	// The merge, the withdrawn vote and the undo as the audience saw them.
	var sawRemoved, sawBack bool
	for _, u := range thwsOfType(aud.on(e.qch, 0), protocol.TypeUpdate) {
		d := thwsDecode(t, u.f.Data)
		if slices.Contains(d.Removed, q[1]) && !sawRemoved {
			sawRemoved = true
			if n, ok := d.votesOf(t, q[0]); !ok || n != 4 {
				t.Fatalf("the merge reached the audience as %s, want question %d removed and %d at 4 votes", u.f.Data, q[1], q[0])
			}
		}
		if sawRemoved && !sawBack && slices.ContainsFunc(d.Questions, func(r json.RawMessage) bool { id, _ := thwsIDOf(t, r); return id == q[1] }) {
			sawBack = true
		}
	}
	if !sawRemoved || !sawBack {
		t.Fatalf("the audience saw the merge %v and its undo %v", sawRemoved, sawBack)
	}
}

// qa changes a session's Q&A settings and returns the version REST reports.
func (e *thwsEnv) qa(t *testing.T, session int64, body map[string]any) uint64 {
	t.Helper()
	r := e.n.do(t, req{method: "PUT", path: fmt.Sprintf("/v1/events/%s/sessions/%d/qa", demoEvent, session),
		header: auth(e.mod), body: body})
	if r.Status != 200 {
		t.Fatalf("PUT qa %v: %d %s", body, r.Status, r.Body)
	}
	var qs api.QASettings
	r.json(t, &qs)
	return qs.Version
}

// TestTownHallWSSettings: closing, reopening and unmoderating a session reach both channels
// as open/moderated changes chained like any update; in an unmoderated session a question
// is public at once, but a flagged one still waits, unseen by the audience. A session
// whose Q&A nobody opened serves a snapshot (closed, moderated) and then its opening.
func TestTownHallWSSettings(t *testing.T) {
	e := thwsStart(t)
	aud := thwsDial(t, e.n, "audience")
	aud.subscribe(e.qch, nil)
	mod := thwsDial(t, e.n, "moderator")
	mod.auth(e.mod)
	mod.subscribe(e.mch, nil)
	settings := func(c *thwsClient, ch string, v uint64) thwsData {
		t.Helper()
		_, f := c.await(0, 5*time.Second, "the settings change", func(f protocol.ServerFrame) bool {
			return f.Type == protocol.TypeUpdate && f.Channel == ch && f.Version == v
		})
		return thwsDecode(t, f.f.Data)
	}
	vClose := e.qa(t, e.sess, map[string]any{"open": false})
	for _, c := range []*thwsClient{aud, mod} {
		ch := map[*thwsClient]string{aud: e.qch, mod: e.mch}[c]
		if d := settings(c, ch, vClose); d.Open == nil || *d.Open || d.Moderated != nil || len(d.Questions) != 0 {
			t.Fatalf("%s: closing reached it as %+v, want open false only", c.name, d)
		}
	}
	if r := e.n.do(t, req{method: "POST", path: e.path("/questions"), header: auth(e.attendee(t)),
		body: map[string]any{"text": "Closed: may I still ask this?"}}); r.Status != 409 || r.problemCode(t) != "qa_closed" {
		t.Fatalf("asking in a closed session: %d %s", r.Status, r.Body)
	}
	vOpen := e.qa(t, e.sess, map[string]any{"open": true, "moderated": false})
	d := settings(aud, e.qch, vOpen)
	if d.Open == nil || !*d.Open || d.Moderated == nil || *d.Moderated {
		t.Fatalf("reopening unmoderated reached the audience as %+v", d)
	}
	// Unmoderated: public at once. Flagged: waits anyway, and only moderators see it.
	r := e.n.do(t, req{method: "POST", path: e.path("/questions"), header: auth(e.attendee(t)),
		body: map[string]any{"text": "Unmoderated: when do the summer swimming lessons start?", "lang": "en"}})
	var open api.Question
	r.json(t, &open)
	if r.Status != 201 || open.State != "approved" {
		t.Fatalf("a question in an unmoderated session: %d %s", r.Status, r.Body)
	}
	r = e.n.do(t, req{method: "POST", path: e.path("/questions"), header: auth(e.attendee(t)),
		body: map[string]any{"text": "Unmoderated: is the mayor a liar about the bridge costs?", "lang": "en"}})
	var flagged api.Question
	r.json(t, &flagged)
	if r.Status != 201 || flagged.State != "pending" {
		t.Fatalf("a flagged question in an unmoderated session: %d %s", r.Status, r.Body)
	}
	mod.await(0, 5*time.Second, "the flagged question", func(f protocol.ServerFrame) bool { return thwsHolds(t, f, flagged.ID) })
	_, up := aud.await(0, 5*time.Second, "the unmoderated question", func(f protocol.ServerFrame) bool { return thwsHolds(t, f, open.ID) })
	if d := thwsDecode(t, up.f.Data); len(d.Questions) != 1 || !bytes.Contains(d.Questions[0], []byte("swimming lessons")) {
		t.Fatalf("the unmoderated question reached the audience as %s", up.f.Data)
	}
	vMod := e.qa(t, e.sess, map[string]any{"moderated": true})
	settings(aud, e.qch, vMod)
	aud.sync()
	if ups := thwsVersions(thwsOfType(aud.on(e.qch, 0), protocol.TypeUpdate)); !slices.Equal(ups, []uint64{vClose, vOpen, up.f.Version, vMod}) {
		t.Fatalf("audience updates %v, want %v", ups, []uint64{vClose, vOpen, up.f.Version, vMod})
	}
	for _, fr := range aud.entries() {
		if bytes.Contains(fr.raw, []byte("liar")) {
			t.Fatalf("the flagged question reached the audience: %s", fr.raw)
		}
	}
	if m := thwsApply(t, mod.on(e.mch, 0)); !m.open || !m.moderated || len(m.questions) != 2 {
		t.Fatalf("moderator: open %v moderated %v, %d questions", m.open, m.moderated, len(m.questions))
	}

	// A session nobody opened: closed and moderated, then opened live.
	other := pickSession(t, getSchedule(t, e.n), "breakout").ID
	ch := fmt.Sprintf("questions:%s:%d", demoEvent, other)
	c := thwsDial(t, e.n, "breakout audience")
	got := c.subscribe(ch, nil)
	first := thwsDecode(t, got[0].f.Data)
	if got[0].f.Type != protocol.TypeSnapshot || *first.Open || !*first.Moderated || len(first.Questions) != 0 {
		t.Fatalf("a session without Q&A: %v %s", thwsTypes(got), got[0].f.Data)
	}
	v := e.qa(t, other, map[string]any{"open": true})
	if d := settings(c, ch, v); d.Open == nil || !*d.Open || d.Moderated != nil {
		t.Fatalf("opening the breakout's Q&A reached it as %+v", d)
	}
}

// --- 6. two nodes, one log ------------------------------------------------------------------

// TestTownHallWSTwoNodes: audience clients on two nodes sharing one NATS (and one signing
// key); votes go through both nodes. Both clients, and an SDK client, converge on the same
// counts at the same version with their prev chains intact, and a client of node A resumes
// on node B from a version it saw on A without a snapshot.
func TestTownHallWSTwoNodes(t *testing.T) {
	a := startNode(t, "", nil, thwsFlags("--nats-listen", "127.0.0.1:0")...)
	m := regexp.MustCompile(`in-process NATS accepts clients.*url=(nats://\S+)`).FindStringSubmatch(a.stderr.String())
	if m == nil {
		t.Fatalf("node A did not say where its NATS listens:\n%s", a.stderr.String())
	}
	b := startNode(t, "", nil, append(thwsFlags("--nats-url", m[1], "--signing-key-file", filepath.Join(a.dataDir, token.KeyFile)),
		"--demo=false")...)
	e := thwsEnvOf(t, a)
	eb := *e
	eb.n = b

	audA := thwsDial(t, a, "audience on A")
	audA.subscribe(e.qch, nil)
	audB := thwsDial(t, b, "audience on B")
	audB.subscribe(e.qch, nil)

	var (
		sdkMu    sync.Mutex
		sdkModel = thwsModel{questions: map[int64]json.RawMessage{}}
		sdkSnaps int
	)
	apply := func(version uint64, data json.RawMessage, snapshot bool) {
		var d thwsData
		if err := json.Unmarshal(data, &d); err != nil {
			t.Errorf("SDK data: %v", err)
			return
		}
		sdkMu.Lock()
		defer sdkMu.Unlock()
		if snapshot {
			sdkSnaps++
			sdkModel.questions = map[int64]json.RawMessage{}
		}
		thwsSetVotes(t, sdkModel.questions, d, version)
		for _, q := range d.Questions {
			var x struct {
				ID int64 `json:"id"`
			}
			_ = json.Unmarshal(q, &x)
			sdkModel.questions[x.ID] = q
		}
		for _, id := range d.Removed {
			delete(sdkModel.questions, id)
		}
		sdkModel.version = version
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sdk, err := client.Dial(ctx, client.Options{URL: wsURL(b)})
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close()
	if _, err := sdk.Subscribe(e.qch, "", client.Handler{
		OnSnapshot: func(v uint64, d json.RawMessage) { apply(v, d, true) },
		OnUpdate:   func(v, _ uint64, d json.RawMessage) { apply(v, d, false) },
		OnError:    func(code, msg string) { t.Errorf("SDK: %s %s", code, msg) },
	}); err != nil {
		t.Fatal(err)
	}

	q1 := e.ask(t, e.attendee(t), "Two nodes: when does the new recycling plant open?").ID
	q2 := eb.ask(t, eb.attendee(t), "Two nodes: how is the flood-defence money being spent?").ID
	e.act(t, q1, "approve")
	vApprove := eb.act(t, q2, "approve") // moderated through node B, with node A's key
	for _, c := range []*thwsClient{audA, audB} {
		c.await(0, 5*time.Second, "both approvals", func(f protocol.ServerFrame) bool { return f.Version == vApprove })
	}
	if la, lb := audA.last(e.qch), audB.last(e.qch); la != vApprove || lb != vApprove {
		t.Fatalf("after the approvals node A's client is at %d, node B's at %d; want both at %d", la, lb, vApprove)
	}

	// 60 voters: q1 gets 30 votes through A and 30 through B, q2 20 through each.
	toks := append(e.attendees(t, 30), eb.attendees(t, 30)...)
	var ballots []thwsBallot
	for i, tok := range toks {
		ballots = append(ballots, thwsBallot{[]*node{a, b}[i%2], tok, q1})
		if i < 20 || i >= 40 {
			ballots = append(ballots, thwsBallot{[]*node{b, a}[i%2], tok, q2})
		}
	}
	e.votes(t, ballots, 0)
	want := map[int64]int{q1: 60, q2: 40}
	final := func(c *thwsClient) thwsModel {
		t.Helper()
		var md thwsModel
		checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
			md = thwsApply(t, c.on(e.qch, 0))
			for id, n := range want {
				if got := md.question(t, id).Votes; got != n {
					return fmt.Errorf("%s: question %d has %d votes, want %d", c.name, id, got, n)
				}
			}
			return nil
		})
		return md
	}
	ma, mb := final(audA), final(audB)
	if ma.version != mb.version {
		t.Fatalf("the nodes' clients ended at versions %d and %d", ma.version, mb.version)
	}
	if err := thwsSameQuestions(ma.questions, mb.questions); err != nil {
		t.Fatalf("the nodes' clients disagree: %v", err)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		sdkMu.Lock()
		defer sdkMu.Unlock()
		if sdkModel.version != mb.version {
			return fmt.Errorf("the SDK client is at %d, want %d", sdkModel.version, mb.version)
		}
		return thwsSameQuestions(sdkModel.questions, mb.questions)
	})
	if st := sdk.Stats(); st.Gaps != 0 || st.Duplicates != 0 || sdkSnaps != 1 || st.Snapshots != 1 {
		t.Fatalf("SDK stats %+v, snapshots %d: want no gaps, no duplicates, one snapshot", st, sdkSnaps)
	}
	for _, n := range []*node{a, b} {
		l := e.public(t, n)
		if len(l.Questions) != 2 || l.Questions[0].ID != q1 || l.Questions[0].Votes != 60 || l.Questions[1].Votes != 40 {
			t.Fatalf("REST list on %s: %+v", n.base, l.Questions)
		}
	}
	// A client of node A moves to node B with since = the approval it saw on A.
	moved := thwsDial(t, b, "moved from A to B")
	got := moved.subscribe(e.qch, &vApprove)
	if len(thwsOfType(got, protocol.TypeSnapshot)) != 0 || got[len(got)-1].f.Version != mb.version {
		t.Fatalf("resume on B from A's %d: %v ending at %d, want updates up to %d", vApprove, thwsTypes(got), got[len(got)-1].f.Version, mb.version)
	}
	ups := thwsOfType(got, protocol.TypeUpdate)
	if len(ups) == 0 || *ups[0].f.Prev != vApprove {
		t.Fatalf("resume on B from %d: %d updates, first prev %v", vApprove, len(ups), ups)
	}
	// What it held at vApprove (from node A), plus node B's updates, is node B's state.
	var held []thwsEntry
	for _, f := range audA.on(e.qch, 0) {
		if held = append(held, f); f.f.Version == vApprove {
			break
		}
	}
	if err := thwsSameQuestions(thwsApply(t, append(held, got...)).questions, mb.questions); err != nil {
		t.Fatalf("resumed on node B from node A's version: %v", err)
	}
	t.Logf("votes: node A's client got %d updates, node B's %d, the SDK %d", ma.updates, mb.updates, sdk.Stats().Updates)
}

// TestTownHallWSSDKRenewAfterRefusedResubscribe: a moderator's SDK client loses its node
// and comes back after its token expired, so the server refuses the resubscribe (error
// unauthorized: the expired token is not valid any more). The application then calls
// SetToken with a fresh token, as the SDK documents; the moderation subscription must
// resume and bring the question asked meanwhile.
func TestTownHallWSSDKRenewAfterRefusedResubscribe(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	n := startNode(t, dir, nil, thwsFlags("--addr", addr)...)
	e := thwsEnvOf(t, n)
	keys, err := token.New(thwsNodeKey(t, n))
	if err != nil {
		t.Fatal(err)
	}
	short, claims, err := keys.Mint(demoEvent, token.Moderator, "sdk", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		seen   = map[int64]bool{}
		codes  []string
		events []string
	)
	record := func(kind string, data json.RawMessage) {
		d := thwsDecode(t, data)
		mu.Lock()
		defer mu.Unlock()
		events = append(events, kind)
		for _, q := range d.Questions {
			id, _ := thwsIDOf(t, q)
			seen[id] = true
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sdk, err := client.Dial(ctx, client.Options{URL: "ws://" + addr + "/v1/ws", Token: short,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer sdk.Close()
	sub, err := sdk.Subscribe(e.mch, "", client.Handler{
		OnSnapshot: func(_ uint64, d json.RawMessage) { record("snapshot", d) },
		OnUpdate:   func(_, _ uint64, d json.RawMessage) { record("update", d) },
		OnError:    func(code, _ string) { mu.Lock(); codes = append(codes, code); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if _, ok := sub.Last(sdk); !ok {
			return fmt.Errorf("no snapshot yet")
		}
		return nil
	})
	// The node goes away before the token expires and comes back after it did.
	n.stop()
	time.Sleep(time.Until(claims.ExpiresAt.Add(token.Leeway + 200*time.Millisecond)))
	n = startNode(t, dir, nil, thwsFlags("--addr", addr)...)
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if !slices.Contains(codes, protocol.ErrUnauthorized) {
			return fmt.Errorf("errors so far %v, want the resubscribe refused with unauthorized", codes)
		}
		return nil
	})
	e.n = n
	missed := e.ask(t, e.attendee(t), "SDK renewal: who inspects the new playgrounds?").ID
	fresh, _, err := keys.Mint(demoEvent, token.Moderator, "sdk", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := sdk.SetToken(fresh); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		ok := seen[missed]
		mu.Unlock()
		if ok {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Fatalf("after SetToken the moderation subscription never resumed: question %d missing; errors %v, frames %v, stats %+v",
		missed, codes, events, sdk.Stats())
}

// --- 7. channel names ----------------------------------------------------------------------

// TestTownHallWSChannelNames: malformed town-hall channel names, unknown sessions and
// events are refused with unknown_channel; unsubscribe ends a questions subscription and
// nothing of it arrives after.
func TestTownHallWSChannelNames(t *testing.T) {
	e := thwsStart(t)
	c := thwsDial(t, e.n, "names")
	c.auth(e.mod)
	ev := demoEvent
	bad := []string{
		"questions:" + ev + ":abc",
		"questions:" + ev + ":0",
		"questions:" + ev + ":-1",
		"questions:" + ev + ":007",
		fmt.Sprintf("questions:%s:0%d", ev, e.sess), // an existing session, with a leading zero
		fmt.Sprintf("questions:%s:+%d", ev, e.sess),
		fmt.Sprintf("questions:%s: %d", ev, e.sess),
		"questions:" + ev,
		"questions:" + ev + ":",
		fmt.Sprintf("questions:%s:%d:", ev, e.sess),
		"questions:" + ev + ":9223372036854775808",
		"moderation:" + ev + ":1:2",
		"questions:" + ev + ":999999",
		"moderation:" + ev + ":999999",
		fmt.Sprintf("questions:no-such-event:%d", e.sess),
		fmt.Sprintf("Questions:%s:%d", ev, e.sess),
	}
	unchecked := func(on bool) { c.mu.Lock(); c.malformed = on; c.mu.Unlock() }
	unchecked(true) // the contract's pattern already refuses most of these names
	for _, name := range bad {
		c.subscribeError(name, nil, protocol.ErrUnknownChannel)
	}
	unchecked(false)
	first := c.subscribe(e.qch, nil) // in the default language, es
	// One subscription per channel whatever the language, and the language changes nothing.
	if got, ef := c.trySubscribe(e.qch, nil, "en"); ef == nil || ef.Code != protocol.ErrAlreadySubscribed {
		t.Fatalf("a second subscribe in English: %v %+v, want already_subscribed", thwsTypes(got), ef)
	}
	en := thwsDial(t, e.n, "english")
	enFirst, ef := en.trySubscribe(e.qch, nil, "en")
	if ef != nil || !bytes.Equal(enFirst[0].raw, first[0].raw) {
		t.Fatalf("a subscriber in English got %s, the Spanish one %s (%v)", enFirst[0].raw, first[0].raw, ef)
	}
	q1 := e.ask(t, e.attendee(t), "Names: will the night buses run during the festival?").ID
	q2 := e.ask(t, e.attendee(t), "Names: who maintains the public toilets downtown?").ID
	v1 := e.act(t, q1, "approve")
	c.await(0, 5*time.Second, "the approval", func(f protocol.ServerFrame) bool { return f.Version == v1 })
	ans, _ := c.call(protocol.ClientFrame{Type: protocol.TypeUnsubscribe, Channel: e.qch})
	if ans.Type != protocol.TypeUnsubscribed || ans.Channel != e.qch || ans.Code != "" {
		t.Fatalf("unsubscribe answered %+v", ans)
	}
	witness := thwsDial(t, e.n, "witness")
	witness.subscribe(e.qch, nil)
	v2 := e.act(t, q2, "approve")
	witness.await(0, 5*time.Second, "the second approval", func(f protocol.ServerFrame) bool { return f.Version == v2 })
	c.sync()
	got := c.on(e.qch, 0)
	want := []string{"snapshot", "subscribed", "error", "update", "unsubscribed"}
	if !slices.Equal(thwsTypes(got), want) || got[3].f.Version != v1 || *got[3].f.Prev != first[0].f.Version {
		t.Fatalf("frames of %s: %v, want %v", e.qch, thwsTypes(got), want)
	}
	if ans, _ := c.call(protocol.ClientFrame{Type: protocol.TypeUnsubscribe, Channel: e.qch}); ans.Type != protocol.TypeError || ans.Code != protocol.ErrNotSubscribed {
		t.Fatalf("a second unsubscribe answered %+v", ans)
	}
	unchecked(true)
	if ans, _ := c.call(protocol.ClientFrame{Type: protocol.TypeUnsubscribe, Channel: "questions:" + ev + ":007"}); ans.Type != protocol.TypeError || ans.Code != protocol.ErrUnknownChannel {
		t.Fatalf("unsubscribe of a malformed name answered %+v", ans)
	}
	unchecked(false)
}
