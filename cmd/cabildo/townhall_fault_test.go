package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/natslog"
	"github.com/cabildo/cabildo/pkg/api"
	"github.com/cabildo/cabildo/pkg/protocol"
)

// Durability and fault tests of the town hall (docs/reliability.md: the "acked write", scenarios
// 4 and 5, and a node crash): acknowledged questions and votes survive a SIGKILL of the node
// and a NATS restart; while NATS is away writes are refused promptly with 503 and
// Retry-After; an Idempotency-Key stores one question however often it is retried.
//
// Nodes that carry load run as child processes (the binary is built without the race
// detector), so the race-checked test process carries only the clients. NATS is either a
// child process the test SIGKILLs or SIGSTOPs (thfNATSHost), or natsfault_test.go's
// in-process server. Helpers are prefixed thf: other files of this package are written at
// the same time.

// thfAppendTimeout is serve's default bound on one append (--append-timeout).
const thfAppendTimeout = 1500 * time.Millisecond

// thfLimits raises the town hall's rate limits so they never shape these tests' traffic.
func thfLimits() []string {
	return []string{"--qa-asks-per-minute", "100000", "--qa-asks-per-ip-per-minute", "1000000",
		"--qa-votes-per-minute", "100000", "--qa-votes-per-ip-per-minute", "1000000",
		"--qa-attendees-per-ip-per-minute", "10000"}
}

// thfHTTP is a client with a connection pool sized for a few dozen concurrent workers.
func thfHTTP(t *testing.T) *http.Client {
	tr := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 128, IdleConnTimeout: 30 * time.Second,
		DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// thfDo sends one request. A transport error (the node is gone) comes back instead of
// failing the test, so workers may call it from their goroutines; every answer is checked
// against the OpenAPI contract.
func thfDo(t testing.TB, hc *http.Client, base, method, path, tok string, hdr map[string]string, body any) (response, time.Duration, error) {
	var (
		rd  io.Reader
		raw []byte
	)
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return response{}, 0, err
		}
		rd = bytes.NewReader(raw)
	}
	hr, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		return response{}, 0, err
	}
	if raw != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if tok != "" {
		hr.Header.Set("Authorization", "Bearer "+tok)
	}
	for k, v := range hdr {
		hr.Header.Set(k, v)
	}
	start := time.Now()
	resp, err := hc.Do(hr)
	if err != nil {
		return response{}, time.Since(start), err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if err != nil {
		return response{}, took, err
	}
	out := response{Status: resp.StatusCode, Header: resp.Header, Body: b}
	if cerr := validator(t).Check(hr, resp.StatusCode, resp.Header, b); cerr != nil {
		t.Errorf("contract: %v\nbody: %s", cerr, truncate(b))
	}
	if bytes.Contains(b, []byte(".go:")) || bytes.Contains(b, []byte("goroutine ")) {
		t.Errorf("%s %s: body leaks internals: %s", method, path, truncate(b))
	}
	return out, took, nil
}

// thfMust is thfDo on the test goroutine for a request that must get the status want.
func thfMust(t *testing.T, hc *http.Client, base, method, path, tok string, body any, want int, into any) response {
	t.Helper()
	r, _, err := thfDo(t, hc, base, method, path, tok, nil, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if r.Status != want {
		t.Fatalf("%s %s: %d %s, want %d", method, path, r.Status, truncate(r.Body), want)
	}
	if into != nil {
		r.json(t, into)
	}
	return r
}

// thfTownHall finds the demo's town-hall session and turns pre-moderation off with a
// moderator token, so every question is public (and votable) as soon as it is asked.
func thfTownHall(t *testing.T, hc *http.Client, base, modTok string) int64 {
	t.Helper()
	var list api.SessionList
	thfMust(t, hc, base, "GET", "/v1/events/"+demoEvent+"/sessions?kind=town_hall", "", nil, 200, &list)
	if len(list.Sessions) == 0 {
		t.Fatal("the demo has no town_hall session")
	}
	id := list.Sessions[0].ID
	var qa api.QASettings
	thfMust(t, hc, base, "PUT", fmt.Sprintf("/v1/events/%s/sessions/%d/qa", demoEvent, id), modTok,
		map[string]any{"moderated": false}, 200, &qa)
	if !qa.Open || qa.Moderated {
		t.Fatalf("town hall %d after PUT qa: open %v moderated %v, want open and unmoderated", id, qa.Open, qa.Moderated)
	}
	return id
}

type thfAttendee struct {
	id, tok string
}

func thfAttendees(t *testing.T, hc *http.Client, base string, n int) []thfAttendee {
	t.Helper()
	out := make([]thfAttendee, n)
	for i := range out {
		var a api.AttendeeToken
		thfMust(t, hc, base, "POST", "/v1/events/"+demoEvent+"/attendees", "", map[string]any{"name": fmt.Sprintf("Asistente %d", i)}, 201, &a)
		out[i] = thfAttendee{id: a.Attendee, tok: a.Token}
	}
	return out
}

// thfText is the i-th question. Its words share only "plan" with any other question's,
// far below the near-duplicate threshold, and use no listed word: unflagged, so an
// unmoderated session publishes it at once. i < 10,000 keeps the numbered words distinct
// after the screener cuts them to five letters.
func thfText(i int) string {
	return fmt.Sprintf("¿Qué plan hay para a%04d, b%04d y c%04d?", i, i, i)
}

func thfPaths(session int64) (questions, moderation string) {
	p := fmt.Sprintf("/v1/events/%s/sessions/%d", demoEvent, session)
	return p + "/questions", p + "/moderation"
}

// thfModeration reads every question of the session as this node's projection has it.
func thfModeration(t *testing.T, hc *http.Client, base, modTok string, session int64) map[int64]api.ModQuestion {
	t.Helper()
	_, mod := thfPaths(session)
	var m api.Moderation
	thfMust(t, hc, base, "GET", mod, modTok, nil, 200, &m)
	out := make(map[int64]api.ModQuestion, len(m.Questions))
	for _, q := range m.Questions {
		if _, dup := out[q.ID]; dup {
			t.Errorf("moderation view lists question %d twice", q.ID)
		}
		out[q.ID] = q
	}
	return out
}

// thfVoted is the set of questions an attendee's vote counts for, as the node has it.
func thfVoted(t *testing.T, hc *http.Client, base string, a thfAttendee, session int64) (map[int64]bool, []api.Question) {
	t.Helper()
	qs, _ := thfPaths(session)
	var mine api.MyQuestions
	thfMust(t, hc, base, "GET", qs+"/mine", a.tok, nil, 200, &mine)
	voted := map[int64]bool{}
	for _, id := range mine.Voted {
		voted[id] = true
	}
	return voted, mine.Questions
}

// thfWatcher follows questions:<event>:<session> on one node and checks the delivery
// contract as it goes: one snapshot, then updates whose prev is the version seen last.
type thfWatcher struct {
	t       *testing.T
	w       *wsConn
	channel string
	done    chan struct{}
	closing atomic.Bool

	mu        sync.Mutex
	snapshots int
	updates   int
	last      uint64
	broken    []string
	public    map[int64]api.Question
	readErr   error
}

func thfWatch(t *testing.T, n *node, session int64) *thfWatcher {
	t.Helper()
	x := &thfWatcher{t: t, w: mustDial(t, n), channel: fmt.Sprintf("questions:%s:%d", demoEvent, session),
		done: make(chan struct{}), public: map[int64]api.Question{}}
	for _, f := range x.w.subscribe(x.channel, nil) {
		x.frame(f)
	}
	if x.snapshots != 1 {
		t.Fatalf("%s: %d snapshots before subscribed, want 1", x.channel, x.snapshots)
	}
	go x.read()
	t.Cleanup(x.stop)
	return x
}

func (x *thfWatcher) read() {
	defer close(x.done)
	for {
		_ = x.w.c.SetReadDeadline(time.Now().Add(2 * time.Minute))
		_, b, err := x.w.c.ReadMessage()
		if err != nil {
			if !x.closing.Load() {
				x.mu.Lock()
				x.readErr = err
				x.mu.Unlock()
			}
			return
		}
		if err := frames(x.t).Server(b); err != nil {
			x.t.Errorf("contract: %v\nframe: %.300s", err, b)
		}
		var f protocol.ServerFrame
		if err := json.Unmarshal(b, &f); err != nil {
			x.t.Errorf("frame %q: %v", b, err)
			continue
		}
		x.frame(f)
	}
}

func (x *thfWatcher) frame(f protocol.ServerFrame) {
	x.mu.Lock()
	defer x.mu.Unlock()
	switch f.Type {
	case protocol.TypeSnapshot:
		x.snapshots++
		var list api.QuestionList
		if err := json.Unmarshal(f.Data, &list); err != nil {
			x.broken = append(x.broken, fmt.Sprintf("snapshot %d: %v", f.Version, err))
			return
		}
		x.last = f.Version
		x.public = map[int64]api.Question{}
		for _, q := range list.Questions {
			x.public[q.ID] = q
		}
	case protocol.TypeUpdate:
		x.updates++
		switch {
		case f.Prev == nil:
			x.broken = append(x.broken, fmt.Sprintf("update %d has no prev", f.Version))
		case *f.Prev != x.last:
			x.broken = append(x.broken, fmt.Sprintf("update %d has prev %d, the last version seen is %d", f.Version, *f.Prev, x.last))
		}
		if f.Version <= x.last {
			x.broken = append(x.broken, fmt.Sprintf("update %d repeats or goes back from %d", f.Version, x.last))
		}
		x.last = f.Version
		var up api.QuestionsUpdate
		if err := json.Unmarshal(f.Data, &up); err != nil {
			x.broken = append(x.broken, fmt.Sprintf("update %d: %v", f.Version, err))
			return
		}
		for _, q := range up.Questions {
			x.public[q.ID] = q
		}
		for id, n := range up.Votes {
			q, ok := x.public[id]
			if !ok {
				x.broken = append(x.broken, fmt.Sprintf("update %d counts votes of question %d, which the client does not have", f.Version, id))
			}
			q.Votes = n
			x.public[id] = q
		}
		for _, id := range up.Removed {
			delete(x.public, id)
		}
	case protocol.TypeSubscribed, protocol.TypePong:
	default:
		x.broken = append(x.broken, fmt.Sprintf("unexpected %s frame: %s %s", f.Type, f.Code, f.Message))
	}
}

func (x *thfWatcher) stop() {
	x.closing.Store(true)
	x.w.c.Close()
	<-x.done
}

// matches reports how the watcher's list differs from the node's public list, if it does.
func (x *thfWatcher) matches(list api.QuestionList) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.readErr != nil {
		return fmt.Errorf("the websocket ended: %v", x.readErr)
	}
	if len(x.public) != len(list.Questions) {
		return fmt.Errorf("the websocket shows %d public questions, the node %d", len(x.public), len(list.Questions))
	}
	for _, q := range list.Questions {
		w, ok := x.public[q.ID]
		if !ok || w.Text != q.Text || w.Votes != q.Votes || w.State != q.State {
			return fmt.Errorf("question %d: websocket %+v, node %+v", q.ID, w, q)
		}
	}
	return nil
}

// thfAsk asks one question and returns the id of the stored question on 201.
func thfAsk(t testing.TB, hc *http.Client, base string, session int64, a thfAttendee, text string, hdr map[string]string) (int64, response, time.Duration, error) {
	qs, _ := thfPaths(session)
	r, took, err := thfDo(t, hc, base, "POST", qs, a.tok, hdr, map[string]any{"text": text})
	if err != nil || r.Status != 201 {
		return 0, r, took, err
	}
	var q api.Question
	if jerr := json.Unmarshal(r.Body, &q); jerr != nil {
		t.Errorf("ask answer %q: %v", r.Body, jerr)
		return 0, r, took, err
	}
	if q.Text != text || q.State != "approved" || q.ID <= 0 {
		t.Errorf("ask answered id %d text %q state %s, want a new approved question %q", q.ID, q.Text, q.State, text)
	}
	return q.ID, r, took, nil
}

// thfVote casts (up) or withdraws a vote; on 200 the answer must agree.
func thfVote(t testing.TB, hc *http.Client, base string, session int64, a thfAttendee, q int64, up bool) (response, time.Duration, error) {
	qs, _ := thfPaths(session)
	method := "PUT"
	if !up {
		method = "DELETE"
	}
	r, took, err := thfDo(t, hc, base, method, fmt.Sprintf("%s/%d/vote", qs, q), a.tok, nil, nil)
	if err == nil && r.Status == 200 {
		var v api.Vote
		if jerr := json.Unmarshal(r.Body, &v); jerr != nil || v.Question != q || v.Voted != up || v.Version == 0 {
			t.Errorf("vote answer for %d (up %v): %s %v", q, up, r.Body, jerr)
		}
	}
	return r, took, err
}

// thfUnavailable checks a refused write: 503 problem+json unavailable with Retry-After.
func thfUnavailable(r response) error {
	if r.Status != 503 {
		return fmt.Errorf("status %d: %s", r.Status, truncate(r.Body))
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/problem+json" {
		return fmt.Errorf("503 with content type %q", ct)
	}
	var p struct {
		Code string `json:"code"`
	}
	if err := json.Unmarshal(r.Body, &p); err != nil || p.Code != "unavailable" {
		return fmt.Errorf("503 with code %q, want unavailable: %s", p.Code, truncate(r.Body))
	}
	if r.Header.Get("Retry-After") == "" {
		return errors.New("503 without Retry-After")
	}
	return nil
}

// thfPair is what the test knows of one attendee's vote for one question.
type thfPair struct {
	acked     int8 // 0 nothing acknowledged, 1 up, -1 withdrawn
	uncertain bool // a request after the last acknowledged one got no answer
	sentUp    bool // a vote (not only withdrawals) was ever sent
}

// TestTownHallFaultNodeCrash: attendees ask and vote on a node that is SIGKILLed while
// their requests are in flight. After a restart on the same data directory every
// acknowledged question is there with its text, every acknowledged vote counts, every
// acknowledged withdrawal stays withdrawn, and no vote appears that was never sent.
func TestTownHallFaultNodeCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills a real process")
	}
	const (
		attendees = 20
		wantAsks  = 200 // acknowledged before the kill
		wantVotes = 500
	)
	began := time.Now()
	dir := t.TempDir()
	cmd, n := startProcess(t, dir, append([]string{"--demo"}, thfLimits()...)...)
	hc := thfHTTP(t)
	mod := mint(t, dir, demoEvent, "moderator")
	session := thfTownHall(t, hc, n.base, mod)
	atts := thfAttendees(t, hc, n.base, attendees)

	var (
		mu        sync.Mutex
		texts     = map[int64]string{} // acknowledged questions
		askedBy   = map[int64]int{}    // acknowledged question → attendee index
		sentTexts = map[string]bool{}  // every question sent
		pool      []int64              // acknowledged questions, to vote on
		pairs     = make([]map[int64]*thfPair, attendees)
		asks      atomic.Int64 // acknowledged
		votes     atomic.Int64 // acknowledged PUTs
		withdraws atomic.Int64 // acknowledged DELETEs
		inflight  atomic.Int64
		cut       atomic.Int64 // requests that got no answer
		next      atomic.Int64 // question numbers
		stop      atomic.Bool
		wg        sync.WaitGroup
	)
	for i := range pairs {
		pairs[i] = map[int64]*thfPair{}
	}
	for i, a := range atts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(i), 7))
			mine := pairs[i] // this goroutine's alone
			for !stop.Load() {
				mu.Lock()
				npool := len(pool)
				mu.Unlock()
				switch {
				case npool < attendees || rng.IntN(4) == 0: // about one ask for three vote operations
					text := thfText(int(next.Add(1)))
					mu.Lock()
					sentTexts[text] = true
					mu.Unlock()
					inflight.Add(1)
					id, r, _, err := thfAsk(t, hc, n.base, session, a, text, nil)
					inflight.Add(-1)
					switch {
					case err != nil:
						cut.Add(1)
						return // the node is gone: this request was never acknowledged
					case r.Status != 201:
						t.Errorf("ask before the crash: %d %s", r.Status, truncate(r.Body))
						return
					}
					mu.Lock()
					texts[id], askedBy[id] = text, i
					pool = append(pool, id)
					mu.Unlock()
					asks.Add(1)
				default:
					// Withdraw one of this attendee's votes now and then; otherwise vote for
					// a question it has not voted for.
					var (
						q  int64
						up = true
					)
					var ups []int64
					for id, p := range mine {
						if p.acked == 1 && !p.uncertain {
							ups = append(ups, id)
						}
					}
					if len(ups) > 0 && rng.IntN(8) == 0 {
						slices.Sort(ups)
						q, up = ups[rng.IntN(len(ups))], false
					} else {
						mu.Lock()
						for range 8 {
							c := pool[rng.IntN(len(pool))]
							if p := mine[c]; p == nil || p.acked != 1 {
								q = c
								break
							}
						}
						mu.Unlock()
						if q == 0 {
							continue
						}
					}
					p := mine[q]
					if p == nil {
						p = &thfPair{}
						mine[q] = p
					}
					p.uncertain = true // until an answer says otherwise
					p.sentUp = p.sentUp || up
					inflight.Add(1)
					r, _, err := thfVote(t, hc, n.base, session, a, q, up)
					inflight.Add(-1)
					switch {
					case err != nil:
						cut.Add(1)
						return
					case r.Status != 200:
						t.Errorf("vote (up %v) for %d before the crash: %d %s", up, q, r.Status, truncate(r.Body))
						return
					}
					p.uncertain = false
					if up {
						p.acked = 1
						votes.Add(1)
					} else {
						p.acked = -1
						withdraws.Add(1)
					}
				}
			}
		}()
	}
	checkFor(t, 60*time.Second, 5*time.Millisecond, func() error {
		if t.Failed() {
			t.FailNow()
		}
		if a, v, w := asks.Load(), votes.Load(), withdraws.Load(); a < wantAsks || v < wantVotes || w == 0 {
			return fmt.Errorf("%d questions, %d votes and %d withdrawals acknowledged so far", a, v, w)
		}
		return nil
	})
	inFlightAtKill := inflight.Load()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killedAt := time.Since(began)
	stop.Store(true)
	wg.Wait()
	t.Logf("SIGKILL %v into the test with %d requests in flight; acknowledged before it: %d questions, %d votes, %d withdrawals; %d requests cut",
		killedAt.Round(time.Millisecond), inFlightAtKill, asks.Load(), votes.Load(), withdraws.Load(), cut.Load())
	if cut.Load() == 0 {
		t.Error("no request was cut by the kill: it did not happen mid-stream")
	}

	_, n2 := startProcess(t, dir, thfLimits()...)
	restarted := time.Since(began)
	stored := thfModeration(t, hc, n2.base, mod, session)
	lost, wrong := 0, 0
	for id, text := range texts {
		q, ok := stored[id]
		switch {
		case !ok:
			lost++
			t.Errorf("acknowledged question %d (%q) is missing after the restart", id, text)
		case q.Text != text || q.State != "approved":
			wrong++
			t.Errorf("question %d after the restart: %q %s, want %q approved", id, q.Text, q.State, text)
		}
	}
	unacked := 0
	for id, q := range stored {
		if _, ok := texts[id]; !ok {
			if !sentTexts[q.Text] {
				t.Errorf("question %d %q was never sent", id, q.Text)
			}
			unacked++ // in flight at the kill: stored, never acknowledged
		}
	}

	// Every attendee's votes, as the restarted node has them, against what was acknowledged.
	voters := map[int64]int{} // question → attendees whose vote counts for it
	certainUp, certainDown, uncertain := 0, 0, 0
	for i, a := range atts {
		voted, own := thfVoted(t, hc, n2.base, a, session)
		for id := range voted {
			voters[id]++
			if p := pairs[i][id]; p == nil || !p.sentUp {
				t.Errorf("attendee %d's vote counts for question %d, but no such vote was ever sent", i, id)
			}
		}
		for id, p := range pairs[i] {
			switch {
			case p.uncertain:
				uncertain++
			case p.acked == 1:
				certainUp++
				if !voted[id] {
					t.Errorf("attendee %d's acknowledged vote for question %d is lost", i, id)
				}
			case p.acked == -1:
				certainDown++
				if voted[id] {
					t.Errorf("attendee %d's acknowledged withdrawal from question %d is undone", i, id)
				}
			}
		}
		ownIDs := map[int64]bool{}
		for _, q := range own {
			ownIDs[q.ID] = true
		}
		for id, by := range askedBy {
			if by == i && !ownIDs[id] {
				t.Errorf("attendee %d's acknowledged question %d is not among their own", i, id)
			}
		}
	}
	for id, q := range stored {
		if q.Votes != voters[id] {
			t.Errorf("question %d counts %d votes, but %d attendees' votes are for it", id, q.Votes, voters[id])
		}
	}
	t.Logf("after the restart (%v): %d questions stored (%d acknowledged, %d lost, %d wrong, %d stored unacknowledged); votes: %d acknowledged in, %d acknowledged withdrawn, %d in doubt at the kill; test took %v",
		(restarted - killedAt).Round(time.Millisecond), len(stored), len(texts), lost, wrong, unacked, certainUp, certainDown, uncertain,
		time.Since(began).Round(time.Millisecond))
}

// thfNATSHost is a NATS JetStream server in a child process that the test can SIGKILL and
// start again on the same port and store directory: a cabildo node with in-process NATS
// that accepts other processes' connections (--nats-listen). Its HTTP side goes unused.
type thfNATSHost struct {
	t    *testing.T
	dir  string
	addr string
	args []string
	cmd  *exec.Cmd
}

func thfStartNATSHost(t *testing.T, args ...string) *thfNATSHost {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &thfNATSHost{t: t, dir: t.TempDir(), addr: l.Addr().String(), args: args}
	l.Close()
	h.start()
	return h
}

func (h *thfNATSHost) url() string { return "nats://" + h.addr }

func (h *thfNATSHost) start() {
	h.t.Helper()
	h.cmd, _ = startProcess(h.t, h.dir, append([]string{"--nats-listen", h.addr}, h.args...)...)
}

// kill SIGKILLs the NATS process and waits until it is gone.
func (h *thfNATSHost) kill() {
	h.t.Helper()
	if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		h.t.Fatal(err)
	}
	_ = h.cmd.Wait()
}

// thfCall is one write of the NATS-restart run, timed from the run's start.
type thfCall struct {
	vote       bool
	node       int
	sent, took time.Duration
	status     int
	err        error
	problem    error // for a non-2xx answer: why it is not a proper 503
}

// TestTownHallFaultNATSRestart is scenario 4 for the town hall, scaled to `make test`: two
// nodes on one NATS, 20 attendees asking at about 200 questions/s in all and voting at
// about 100 votes/s, for 12 s; NATS is SIGKILLed at 4 s and back at 7 s on the same store.
// While it is away every write answers 503 unavailable with Retry-After, within the append
// timeout (scenario 4's 2 s is not what the product promises: the gap is logged); writes
// succeed again within 5 s of its return; every acknowledged question and vote is in both
// nodes' projections afterwards; a websocket subscriber on each node sees one unbroken prev
// chain and ends with exactly the node's public list.
//
// The 200 questions/s hold only while the session is small: each ask screens every question
// asked before (TestTownHallFaultAskLatencyAtScale), so the nodes fall behind as the run
// goes on and each attendee keeps at most two questions in flight.
func TestTownHallFaultNATSRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cabildo and runs NATS and two nodes as processes")
	}
	const (
		attendees  = 20
		askEvery   = 100 * time.Millisecond // per attendee: 200 questions/s in all
		voteEvery  = 200 * time.Millisecond // per attendee: 100 votes/s in all
		runFor     = 12 * time.Second
		killAt     = 4 * time.Second
		restartAt  = 7 * time.Second
		outageMax  = 2 * time.Second // scenario 4 wants a write during the outage refused within this
		recoverMax = 5 * time.Second // scenario 4: writes succeed again within this after NATS returns
	)
	began := time.Now()
	ns := thfStartNATSHost(t)
	keyDir := t.TempDir()
	common := append([]string{"--nats-url", ns.url(), "--signing-key-file", keyDir + "/signing.key"}, thfLimits()...)
	_, a := startProcess(t, t.TempDir(), append(common, "--demo")...)
	_, b := startProcess(t, t.TempDir(), common...)
	nodes := []*node{a, b}
	hc := thfHTTP(t)
	mod := mint(t, keyDir, demoEvent, "moderator")
	session := thfTownHall(t, hc, a.base, mod)
	atts := thfAttendees(t, hc, a.base, attendees)
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error { // B has the unmoderated session too
		var l api.QuestionList
		qs, _ := thfPaths(session)
		r, _, err := thfDo(t, hc, b.base, "GET", qs, "", nil, nil)
		if err == nil && r.Status == 200 {
			r.json(t, &l)
		}
		if l.Moderated || !l.Open {
			return fmt.Errorf("node B: %d %s", r.Status, truncate(r.Body))
		}
		return nil
	})
	watchers := []*thfWatcher{thfWatch(t, a, session), thfWatch(t, b, session)}
	setup := time.Since(began)

	var (
		mu      sync.Mutex
		calls   []thfCall
		texts   = map[int64]string{}
		sent    = map[string]bool{}
		pools   = [2][]int64{} // questions acknowledged by each node
		ackedUp = make([]map[int64]bool, attendees)
		sentUp  = make([]map[int64]bool, attendees)
		next    atomic.Int64
		wg      sync.WaitGroup
	)
	start := time.Now()
	record := func(c thfCall) {
		mu.Lock()
		calls = append(calls, c)
		mu.Unlock()
	}
	// pace starts f every interval until the run ends, with at most two calls of it in
	// flight: the rate holds while the node answers within two intervals, and a stall
	// (a write waiting out the append timeout) skips ticks instead of piling requests up.
	pace := func(rng *rand.Rand, every time.Duration, f func()) {
		defer wg.Done()
		var busy atomic.Int32
		at := time.Duration(rng.Int64N(int64(every)))
		for ; at < runFor; at += every {
			time.Sleep(time.Until(start.Add(at)))
			if busy.Load() >= 2 {
				continue
			}
			busy.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer busy.Add(-1)
				f()
			}()
		}
	}
	check := func(r response, err error) error {
		if err != nil || r.Status/100 == 2 {
			return nil
		}
		return thfUnavailable(r)
	}
	for i, at := range atts {
		ackedUp[i], sentUp[i] = map[int64]bool{}, map[int64]bool{}
		k := i % 2 // the node this attendee uses
		wg.Add(2)
		go pace(rand.New(rand.NewPCG(uint64(i), 1)), askEvery, func() {
			text := thfText(int(next.Add(1)))
			mu.Lock()
			sent[text] = true
			mu.Unlock()
			sentAt := time.Since(start)
			id, r, took, err := thfAsk(t, hc, nodes[k].base, session, at, text, nil)
			record(thfCall{node: k, sent: sentAt, took: took, status: r.Status, err: err, problem: check(r, err)})
			if id != 0 {
				mu.Lock()
				texts[id] = text
				pools[k] = append(pools[k], id)
				mu.Unlock()
			}
		})
		rng := rand.New(rand.NewPCG(uint64(i), 2))
		go pace(rng, voteEvery, func() {
			// A question this node acknowledged (so it is in its projection) that this
			// attendee has not voted for yet.
			var q int64
			mu.Lock()
			for range 8 {
				if len(pools[k]) == 0 {
					break
				}
				if c := pools[k][rng.IntN(len(pools[k]))]; !sentUp[i][c] {
					q = c
					break
				}
			}
			if q != 0 {
				sentUp[i][q] = true
			}
			mu.Unlock()
			if q == 0 {
				return
			}
			sentAt := time.Since(start)
			r, took, err := thfVote(t, hc, nodes[k].base, session, at, q, true)
			record(thfCall{vote: true, node: k, sent: sentAt, took: took, status: r.Status, err: err, problem: check(r, err)})
			if err == nil && r.Status == 200 {
				mu.Lock()
				ackedUp[i][q] = true
				mu.Unlock()
			}
		})
	}

	time.Sleep(time.Until(start.Add(killAt)))
	kill := time.Since(start)
	ns.kill()
	down := time.Since(start)
	time.Sleep(time.Until(start.Add(restartAt)))
	var upAt atomic.Int64
	dialing := make(chan struct{})
	go func() { // NATS is back when its port accepts connections again
		defer close(dialing)
		for time.Since(start) < restartAt+30*time.Second {
			if c, err := net.DialTimeout("tcp", ns.addr, 100*time.Millisecond); err == nil {
				upAt.Store(int64(time.Since(start)))
				c.Close()
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	restart := time.Since(start)
	ns.start()
	<-dialing
	up := time.Duration(upAt.Load())
	wg.Wait()
	ran := time.Since(start)
	t.Logf("setup %v; NATS SIGKILLed at %v (gone at %v), restarted at %v, accepting at %v; writes stopped at %v",
		setup.Round(time.Millisecond), kill.Round(time.Millisecond), down.Round(time.Millisecond),
		restart.Round(time.Millisecond), up.Round(time.Millisecond), ran.Round(time.Millisecond))
	if up == 0 {
		t.Fatal("NATS did not accept connections again")
	}

	// The answers: 2xx, or a proper 503 quickly during the outage; 2xx again soon after.
	type tally struct {
		sent, acked, refused int
		caught, during       int           // caught by the kill; sent while NATS was down
		caughtMax, duringMax time.Duration // their slowest answers
		firstOK              [2]time.Duration
		failedLate           int
		before               []time.Duration // answer times before the kill
	}
	var tl [2]tally     // questions, votes
	var perSec [2][]int // writes sent in each second of the run
	for _, c := range calls {
		k := 0
		if c.vote {
			k = 1
		}
		sec := int(c.sent / time.Second)
		for len(perSec[k]) <= sec {
			perSec[k] = append(perSec[k], 0)
		}
		perSec[k][sec]++
	}
	t.Logf("sent per second of the run: questions %v, votes %v", perSec[0], perSec[1])
	for _, c := range calls {
		k := 0
		if c.vote {
			k = 1
		}
		x := &tl[k]
		x.sent++
		end := c.sent + c.took
		if c.err != nil {
			t.Errorf("a write sent at %v got no answer: %v", c.sent.Round(time.Millisecond), c.err)
			continue
		}
		if c.problem != nil {
			t.Errorf("a write sent at %v (%v after the kill) was answered %v", c.sent.Round(time.Millisecond), (c.sent - kill).Round(time.Millisecond), c.problem)
		}
		ok := c.status/100 == 2
		if ok {
			x.acked++
		} else {
			x.refused++
		}
		switch {
		case c.sent < kill && end > kill:
			x.caught++
			x.caughtMax = max(x.caughtMax, c.took)
		case c.sent >= down && c.sent < up:
			x.during++
			x.duringMax = max(x.duringMax, c.took)
		case c.sent < kill:
			x.before = append(x.before, c.took)
		}
		if ok && end >= up {
			if f := end - up; x.firstOK[c.node] == 0 || f < x.firstOK[c.node] {
				x.firstOK[c.node] = f
			}
		}
		if !ok && c.sent >= up+recoverMax {
			x.failedLate++
		}
	}
	for k, name := range []string{"questions", "votes"} {
		x := tl[k]
		p := percentiles(x.before)
		t.Logf("%s: %d sent (%.0f/s offered), %d acknowledged, %d refused; before the kill answered in p50 %v p99 %v; "+
			"%d caught by the kill, answered within %v; %d sent while NATS was down, answered within %v; "+
			"first acknowledged %v (node A) and %v (node B) after NATS was back; %d refused ≥ %v after",
			name, x.sent, float64(x.sent)/runFor.Seconds(), x.acked, x.refused, p[0], p[1],
			x.caught, x.caughtMax.Round(time.Millisecond), x.during, x.duringMax.Round(time.Millisecond),
			x.firstOK[0].Round(time.Millisecond), x.firstOK[1].Round(time.Millisecond), x.failedLate, recoverMax)
		if x.during == 0 {
			t.Errorf("%s: none sent while NATS was down", name)
		}
		// Scenario 4 asks for a refusal within 2 s. Most writes sent while NATS is down get
		// one at once; a write whose append went out before this node noticed NATS was gone
		// (on the wire when it died, or just after), and any write queued behind it, is
		// answered within the append timeout, 1.5 s, of its own arrival, whatever it
		// waited for (the append ahead of it, screening against a projection that no
		// longer hears from the log).
		if worst := max(x.caughtMax, x.duringMax); worst > outageMax {
			t.Errorf("%s: one was answered %v after it was sent during the outage, want ≤ %v (append timeout %v)", name, worst, outageMax, thfAppendTimeout)
		}
		for i, f := range x.firstOK {
			if f == 0 || f > recoverMax {
				t.Errorf("%s on node %c: first acknowledged %v after NATS returned, want ≤ %v", name, 'A'+i, f, recoverMax)
			}
		}
		if x.failedLate > 0 {
			t.Errorf("%s: %d refused more than %v after NATS returned", name, x.failedLate, recoverMax)
		}
		if x.acked == 0 || x.refused == 0 {
			t.Errorf("%s: %d acknowledged and %d refused: the run did not straddle the outage", name, x.acked, x.refused)
		}
	}

	// 0 acknowledged questions or votes lost, on both nodes; both nodes agree.
	var views [2]map[int64]api.ModQuestion
	checkFor(t, 15*time.Second, 50*time.Millisecond, func() error {
		for k, n := range nodes {
			views[k] = thfModeration(t, hc, n.base, mod, session)
			for id := range texts {
				if _, ok := views[k][id]; !ok {
					return fmt.Errorf("node %c lacks acknowledged question %d", 'A'+k, id)
				}
			}
		}
		if len(views[0]) != len(views[1]) {
			return fmt.Errorf("node A has %d questions, node B %d", len(views[0]), len(views[1]))
		}
		for id, q := range views[0] {
			if o, ok := views[1][id]; !ok || o.Votes != q.Votes || o.Text != q.Text {
				return fmt.Errorf("question %d: node A %q %d votes, node B %q %d votes", id, q.Text, q.Votes, o.Text, o.Votes)
			}
		}
		return nil
	})
	lost, unacked := 0, 0
	seenText := map[string]int64{}
	for id, q := range views[0] {
		if prev, dup := seenText[q.Text]; dup {
			t.Errorf("questions %d and %d have the same text %q: one ask stored twice", prev, id, q.Text)
		}
		seenText[q.Text] = id
		if want, ok := texts[id]; ok && q.Text != want {
			t.Errorf("question %d reads %q, want %q", id, q.Text, want)
		} else if !ok {
			unacked++
			if !sent[q.Text] {
				t.Errorf("question %d %q was never sent", id, q.Text)
			}
		}
	}
	for id := range texts {
		if _, ok := views[0][id]; !ok {
			lost++
		}
	}
	votesLost, votesAcked, votesRefusedCounted := 0, 0, 0
	voters := map[int64]int{}
	for i, at := range atts {
		voted, _ := thfVoted(t, hc, nodes[i%2].base, at, session)
		for id := range voted {
			voters[id]++
			if !sentUp[i][id] {
				t.Errorf("attendee %d's vote counts for question %d, but it was never sent", i, id)
			} else if !ackedUp[i][id] {
				votesRefusedCounted++
			}
		}
		for id := range ackedUp[i] {
			votesAcked++
			if !voted[id] {
				votesLost++
				t.Errorf("attendee %d's acknowledged vote for question %d is lost", i, id)
			}
		}
	}
	for id, q := range views[0] {
		if q.Votes != voters[id] {
			t.Errorf("question %d counts %d votes, but %d attendees' votes are for it", id, q.Votes, voters[id])
		}
	}
	// A write refused with 503 can still be stored when its append reached NATS just before
	// the kill (see TestTownHallFaultNATSHung); counted here, not asserted.
	t.Logf("after recovery: %d questions in both projections; %d acknowledged, %d lost, %d stored although refused; %d acknowledged votes, %d lost, %d counted although refused",
		len(views[0]), len(texts), lost, unacked, votesAcked, votesLost, votesRefusedCounted)

	// The websocket streams went on across the outage without a gap or a duplicate and
	// ended where the nodes are.
	qs, _ := thfPaths(session)
	for k, w := range watchers {
		checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
			var list api.QuestionList
			thfMust(t, hc, nodes[k].base, "GET", qs, "", nil, 200, &list)
			return w.matches(list)
		})
		w.stop()
		w.mu.Lock()
		t.Logf("websocket on node %c: %d snapshot, %d updates, last version %d, %d public questions", 'A'+k, w.snapshots, w.updates, w.last, len(w.public))
		if w.snapshots != 1 || len(w.broken) > 0 {
			t.Errorf("websocket on node %c: %d snapshots, %d breaks of the chain: %v", 'A'+k, w.snapshots, len(w.broken), w.broken[:min(len(w.broken), 5)])
		}
		for id, text := range texts {
			if q, ok := w.public[id]; !ok || q.Text != text {
				t.Errorf("websocket on node %c never showed acknowledged question %d", 'A'+k, id)
				break
			}
		}
		w.mu.Unlock()
	}
	t.Logf("scenario 4 took %v", time.Since(began).Round(time.Millisecond))
}

// thfLogQuestions reads the log itself and returns how many questions with text it holds.
func thfLogQuestions(t *testing.T, url, text string) int {
	t.Helper()
	nc, err := nats.Connect(url, nats.Name("thf-reader"))
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, "CABILDO")
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("log entry %d: %v", seq, err)
		}
		var rec cabildo.Record
		if err := json.Unmarshal(m.Data, &rec); err != nil {
			t.Fatalf("log entry %d: %v", seq, err)
		}
		for _, a := range rec.Asked {
			if a.Question.Text == text {
				count++
			}
		}
	}
	return count
}

// TestTownHallFaultIdempotentRetry is scenario 5: one question sent ten times with the same
// Idempotency-Key and body (5 at once, 1 more, 1 while NATS is down and again once it is
// back, 1 after the log's de-duplication window has passed, 1 more after the node rebuilt
// its projection from the log) is stored once, and every 2xx answer names that question.
// A second key, first sent while NATS is down, is refused with 503 and stored once on retry.
func TestTownHallFaultIdempotentRetry(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts NATS and a node")
	}
	const window = time.Second
	ns := startNATS(t)
	dataDir := t.TempDir()
	args := append([]string{"--nats-url", ns.url(), "--dedupe-window", window.String()}, thfLimits()...)
	n := startNode(t, dataDir, nil, append(args, "--demo")...)
	hc := thfHTTP(t)
	mod := n.token("moderator")
	session := thfTownHall(t, hc, n.base, mod)
	att := thfAttendees(t, hc, n.base, 1)[0]

	// The stream really forgets message ids after the window, so the last retries can only
	// be caught by the projection's idempotency record.
	func() {
		nc, err := nats.Connect(ns.url())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, "CABILDO")
		if err != nil {
			t.Fatal(err)
		}
		if d := st.CachedInfo().Config.Duplicates; d != window {
			t.Fatalf("the stream's de-duplication window is %v, want %v", d, window)
		}
	}()

	text, text2 := thfText(1), thfText(2)
	key := map[string]string{"Idempotency-Key": "thf-retry-1"}
	key2 := map[string]string{"Idempotency-Key": "thf-retry-2"}
	var (
		mu      sync.Mutex
		ids     []int64
		answers []string
		last    time.Time // the last answer that may have appended
	)
	send := func(label string, n *node, hdr map[string]string, text string) (int64, response, time.Duration) {
		id, r, took, err := thfAsk(t, hc, n.base, session, att, text, hdr)
		mu.Lock()
		defer mu.Unlock()
		last = time.Now()
		if err != nil {
			t.Errorf("%s: %v", label, err)
			return 0, r, took
		}
		answers = append(answers, fmt.Sprintf("%s %d→%d (%v)", label, r.Status, id, took.Round(time.Millisecond)))
		if hdr["Idempotency-Key"] == key["Idempotency-Key"] && id != 0 {
			ids = append(ids, id)
		}
		return id, r, took
	}

	// 1-5: at once.
	var wg sync.WaitGroup
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, r, _ := send(fmt.Sprintf("concurrent %d", i+1), n, key, text); r.Status != 201 {
				t.Errorf("concurrent send %d: %d %s", i+1, r.Status, truncate(r.Body))
			}
		}()
	}
	wg.Wait()
	// 6: once more.
	if _, r, _ := send("sequential", n, key, text); r.Status != 201 {
		t.Errorf("sequential retry: %d %s", r.Status, truncate(r.Body))
	}
	// The same key with another body is a different request: refused, stores nothing.
	if _, r, _ := send("other body", n, key, thfText(3)); r.Status != 422 {
		t.Errorf("the key with another body: %d %s, want 422", r.Status, truncate(r.Body))
	}

	// 7: while NATS is down. The node already knows the key, so it may answer the replay
	// from its projection (201, same question) or refuse it (503); either way nothing new
	// may be stored. The fresh key can only be refused, and promptly.
	ns.stop()
	_, r7, _ := send("NATS down", n, key, text)
	switch r7.Status {
	case 201:
	case 503:
		if err := thfUnavailable(r7); err != nil {
			t.Errorf("retry while NATS is down: %v", err)
		}
	default:
		t.Errorf("retry while NATS is down: %d %s", r7.Status, truncate(r7.Body))
	}
	_, r2, took2 := send("new key, NATS down", n, key2, text2)
	if err := thfUnavailable(r2); err != nil {
		t.Errorf("a new key while NATS is down: %v", err)
	}
	if took2 > 2*time.Second {
		t.Errorf("a new key while NATS is down was refused after %v, want ≤ 2s", took2)
	}
	ns.start()
	back := time.Now()

	// 8: after NATS is back, retried as a client told Retry-After would.
	var id2 int64
	checkFor(t, 10*time.Second, 100*time.Millisecond, func() error {
		id, r, _ := send("NATS back", n, key2, text2)
		if r.Status == 201 {
			id2 = id
			return nil
		}
		if err := thfUnavailable(r); err != nil {
			t.Errorf("retry after NATS returned: %v", err)
		}
		return fmt.Errorf("%d", r.Status)
	})
	t.Logf("the new key was stored %v after NATS returned", time.Since(back).Round(time.Millisecond))
	if _, r, _ := send("NATS back", n, key, text); r.Status != 201 {
		t.Errorf("retry after NATS returned: %d %s", r.Status, truncate(r.Body))
	}
	if id, r, _ := send("new key again", n, key2, text2); r.Status != 201 || id != id2 {
		t.Errorf("the new key's retry: %d id %d, want 201 id %d", r.Status, id, id2)
	}

	// 9: after the log's de-duplication window.
	mu.Lock()
	wait := time.Until(last.Add(window + 500*time.Millisecond))
	mu.Unlock()
	time.Sleep(wait)
	if _, r, _ := send("after the window", n, key, text); r.Status != 201 {
		t.Errorf("retry after the de-duplication window: %d %s", r.Status, truncate(r.Body))
	}

	// 10: after the node rebuilt its projection from the log alone, past the window too.
	n.stop()
	n = startNode(t, dataDir, nil, args...)
	mu.Lock()
	wait = time.Until(last.Add(window + 500*time.Millisecond))
	mu.Unlock()
	time.Sleep(wait)
	if _, r, _ := send("after a node restart", n, key, text); r.Status != 201 {
		t.Errorf("retry after a node restart: %d %s", r.Status, truncate(r.Body))
	}
	if id, r, _ := send("new key after a node restart", n, key2, text2); r.Status != 201 || id != id2 {
		t.Errorf("the new key after a node restart: %d id %d, want 201 id %d", r.Status, id, id2)
	}

	mu.Lock()
	t.Logf("answers: %s", strings.Join(answers, "; "))
	if len(ids) < 9 {
		t.Errorf("%d 2xx answers for the first key, want at least 9 of its 10 sends", len(ids))
	}
	for _, id := range ids {
		if id != ids[0] {
			t.Errorf("the first key's 2xx answers name questions %v, want one", ids)
			break
		}
	}
	mu.Unlock()

	// Exactly one question per key: in the projection and in the log itself.
	view := thfModeration(t, hc, n.base, mod, session)
	for _, want := range []struct {
		text string
		id   int64
	}{{text, ids[0]}, {text2, id2}} {
		var found []int64
		for id, q := range view {
			if q.Text == want.text {
				found = append(found, id)
			}
		}
		if len(found) != 1 || found[0] != want.id {
			t.Errorf("the moderation view has questions %v reading %q, want exactly %d", found, want.text, want.id)
		}
		if c := thfLogQuestions(t, ns.url(), want.text); c != 1 {
			t.Errorf("the log holds %d questions reading %q, want 1", c, want.text)
		}
	}
	if c := thfLogQuestions(t, ns.url(), thfText(3)); c != 0 {
		t.Errorf("the log holds %d questions from the refused reuse of the key, want 0", c)
	}
}

// TestTownHallFaultNATSHung: NATS stops answering without closing its connections
// (SIGSTOP: a hung server, or a partition that drops packets) while an attendee asks and
// three vote, then comes back. Each write must be refused with 503 unavailable and
// Retry-After within one append timeout, and a write refused with 503 must not be stored
// afterwards: the contract says of 503 unavailable "Nothing was changed; retry", so a
// client without an Idempotency-Key that retries would otherwise ask twice.
func TestTownHallFaultNATSHung(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cabildo and runs NATS and a node as processes")
	}
	ns := thfStartNATSHost(t)
	keyDir := t.TempDir()
	_, n := startProcess(t, t.TempDir(), append([]string{"--nats-url", ns.url(),
		"--signing-key-file", keyDir + "/signing.key", "--demo"}, thfLimits()...)...)
	hc := thfHTTP(t)
	mod := mint(t, keyDir, demoEvent, "moderator")
	session := thfTownHall(t, hc, n.base, mod)
	atts := thfAttendees(t, hc, n.base, 4)
	target, r, _, err := thfAsk(t, hc, n.base, session, atts[0], thfText(1), nil)
	if err != nil || r.Status != 201 {
		t.Fatalf("ask: %v %d %s", err, r.Status, truncate(r.Body))
	}

	if err := ns.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// kill(2) only queues the stop: on a loaded machine NATS may still answer a request
	// sent the moment it returns. The writes below go once the kernel says it stopped.
	waitStopped(t, ns.cmd.Process.Pid)
	stopped := true
	resume := func() {
		if stopped {
			stopped = false
			_ = ns.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	type answer struct {
		what string
		r    response
		took time.Duration
		err  error
	}
	answers := make([]answer, 4)
	refusedText := thfText(2)
	var wg sync.WaitGroup
	wg.Add(2)
	key := map[string]string{"Idempotency-Key": "thf-hung-1"}
	go func() {
		defer wg.Done()
		_, r, took, err := thfAsk(t, hc, n.base, session, atts[0], refusedText, key)
		answers[0] = answer{"question", r, took, err}
	}()
	go func() { // this vote's batch is the append in flight ...
		defer wg.Done()
		r, took, err := thfVote(t, hc, n.base, session, atts[1], target, true)
		answers[1] = answer{"first vote", r, took, err}
	}()
	time.Sleep(300 * time.Millisecond)
	for i := 2; i < 4; i++ { // ... and these wait for it
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, took, err := thfVote(t, hc, n.base, session, atts[i], target, true)
			answers[i] = answer{fmt.Sprintf("vote %d, sent while the first was in flight", i), r, took, err}
		}()
	}
	wg.Wait()
	resume()
	for _, a := range answers {
		switch {
		case a.err != nil:
			t.Errorf("%s while NATS hung: %v", a.what, a.err)
		case thfUnavailable(a.r) != nil:
			t.Errorf("%s while NATS hung: %v", a.what, thfUnavailable(a.r))
		case a.took > thfAppendTimeout+500*time.Millisecond:
			t.Errorf("%s while NATS hung was refused after %v, want within one append timeout (%v)", a.what, a.took.Round(time.Millisecond), thfAppendTimeout)
		default:
			t.Logf("%s while NATS hung: 503 after %v (scenario 4 wants ≤ 2s)", a.what, a.took.Round(time.Millisecond))
		}
	}

	// Once NATS answers again, a new question is acknowledged; by then this node has
	// applied everything NATS stored before it.
	checkFor(t, 15*time.Second, 100*time.Millisecond, func() error {
		_, r, _, err := thfAsk(t, hc, n.base, session, atts[0], thfText(3), nil)
		if err != nil || r.Status != 201 {
			return fmt.Errorf("ask after NATS resumed: %v %d", err, r.Status)
		}
		return nil
	})
	// The refused ask may have been stored (NATS had it when it stopped answering), and the
	// 503 says so; its retry with the same key is the one way to know, and makes it exactly
	// one question either way.
	if !strings.Contains(string(answers[0].r.Body), "may have been stored") {
		t.Errorf("the 503 for an unconfirmed append does not say the write may have been stored: %s", truncate(answers[0].r.Body))
	}
	id, r, _, err := thfAsk(t, hc, n.base, session, atts[0], refusedText, key)
	if err != nil || r.Status != 201 {
		t.Fatalf("retry with the same key: %v %d %s", err, r.Status, truncate(r.Body))
	}
	copies := 0
	for qid, q := range thfModeration(t, hc, n.base, mod, session) {
		if q.Text == refusedText {
			copies++
			if qid != id {
				t.Errorf("the retry answered question %d, but %d has the text", id, qid)
			}
		}
		if qid == target {
			// Votes are sets: a vote answered 503 that was stored anyway counts once, and
			// its retry changes nothing.
			t.Logf("the question voted on while NATS hung counts %d votes; all %d votes were answered 503", q.Votes, len(answers)-1)
		}
	}
	if copies != 1 {
		t.Errorf("%d questions with the refused text after the keyed retry, want exactly 1", copies)
	}
}

// TestTownHallFaultAskLatencyAtScale: scenario 4 sends 5,000 questions at 200/s to one
// session. What one ask costs must not grow with the questions already asked: measured
// with one attendee asking in turn, before and after the scenario's 5,000 questions are in
// the log. (Fixed, an ask screens a few thousand cached word sets: well under a millisecond.)
func TestTownHallFaultAskLatencyAtScale(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cabildo and runs a node as a process")
	}
	const more = 5000
	ns := startNATS(t)
	dir := t.TempDir()
	_, n := startProcess(t, dir, append([]string{"--nats-url", ns.url(), "--demo"}, thfLimits()...)...)
	hc := thfHTTP(t)
	mod := mint(t, dir, demoEvent, "moderator")
	session := thfTownHall(t, hc, n.base, mod)
	att := thfAttendees(t, hc, n.base, 1)[0]
	measure := func(from int) time.Duration {
		var took []time.Duration
		for i := range 25 {
			_, r, d, err := thfAsk(t, hc, n.base, session, att, thfText(from+i), nil)
			if err != nil || r.Status != 201 {
				t.Fatalf("ask: %v %d %s", err, r.Status, truncate(r.Body))
			}
			took = append(took, d)
		}
		return percentiles(took)[0]
	}
	before := measure(1)

	// The questions go to the log directly, as records any node would have appended: the
	// REST path would take minutes at the rates this test is about.
	nc, err := nats.Connect(ns.url())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lg, err := natslog.Open(ctx, nc, natslog.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < more; i += 8 {
				rec := cabildo.Record{Type: cabildo.RecordQuestionsAsked, Event: demoEvent, Asked: []cabildo.Asked{
					{Question: cabildo.Question{Session: session, Text: thfText(100 + i), Lang: cabildo.ES, Attendee: "thf-bulk"}}}}
				data, _ := json.Marshal(rec)
				if _, _, err := lg.Append(ctx, rec.Subject(), data, nil, ""); err != nil {
					t.Errorf("append: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	checkFor(t, 30*time.Second, 100*time.Millisecond, func() error {
		if got := len(thfModeration(t, hc, n.base, mod, session)); got < 25+more {
			return fmt.Errorf("the node has %d questions", got)
		}
		return nil
	})
	after := measure(100 + more)
	t.Logf("one ask, answered in p50 %v with 25 questions in the session and %v with %d", before.Round(time.Microsecond), after.Round(time.Microsecond), more+25)
	if after > 2*before+5*time.Millisecond {
		t.Errorf("an ask costs %v with %d questions in the session against %v with 25: every ask screens every question again (townhall screener.flags tokenizes each one's text), so the 200 questions/s of scenario 4 are out of reach",
			after.Round(time.Millisecond), more+25, before.Round(time.Millisecond))
	}
}

// waitStopped waits until /proc says every thread of process pid is stopped (state T).
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			t.Fatalf("threads of process %d: %v", pid, err)
		}
		all := true
		for _, task := range tasks {
			stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
			// The state follows the command name, which is in parentheses: "pid (comm) S ...".
			if i := bytes.LastIndexByte(stat, ')'); err != nil || i < 0 || i+2 >= len(stat) || (stat[i+2] != 'T' && stat[i+2] != 't') {
				all = false
				break
			}
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d did not stop within 10 s of SIGSTOP", pid)
		}
		time.Sleep(time.Millisecond)
	}
}
