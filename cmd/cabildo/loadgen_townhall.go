package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/cabildo/cabildo/internal/config"
	"github.com/cabildo/cabildo/pkg/api"
	"github.com/cabildo/cabildo/pkg/client"
)

// townHallResult is the line `cabildo loadgen townhall` prints.
type townHallResult struct {
	Scenario          string  `json:"scenario"`
	Audience          int     `json:"audience_connections"`
	Connected         int     `json:"connected"`
	Moderators        int     `json:"moderators"`
	Questions         int     `json:"questions_asked"`
	Approved          int     `json:"questions_approved"`
	AskToModP50ms     float64 `json:"ask_to_moderator_p50_ms"`
	AskToModP99ms     float64 `json:"ask_to_moderator_p99_ms"`
	ApproveToAudP50ms float64 `json:"approve_to_audience_p50_ms"`
	ApproveToAudP99ms float64 `json:"approve_to_audience_p99_ms"`
	AudienceMissing   int     `json:"approved_questions_missing_on_audience"`
	VotesOffered      int     `json:"votes_offered"`
	VotesShed         int     `json:"votes_shed"` // due while too many were unanswered: not sent
	VotesSent         int     `json:"votes_sent"`
	VotesAcked        int     `json:"votes_acked"`
	// VotesRefused are votes the server shed with 429 or 503 (it was over capacity);
	// RefusedNoRetry those of them without a Retry-After, which must be 0. VotesFailed are
	// any other errors.
	VotesRefused      int     `json:"votes_refused"`
	RefusedNoRetry    int     `json:"votes_refused_without_retry_after"`
	VotesFailed       int     `json:"votes_failed"`
	VotesPerSecond    float64 `json:"votes_acked_per_second"`
	VoteAckP50ms      float64 `json:"vote_ack_p50_ms"`
	VoteAckP99ms      float64 `json:"vote_ack_p99_ms"`
	VotesLost         int     `json:"votes_lost"`    // acked votes the server's count lacks
	VotesDoubled      int     `json:"votes_doubled"` // counted beyond the acked votes
	AudienceWrong     int     `json:"audience_clients_with_wrong_counts"`
	AudienceUpdates   float64 `json:"audience_updates_per_client"`
	Gaps              uint64  `json:"gaps"`
	Duplicates        uint64  `json:"duplicates"`
	ServerRSSPerConnK float64 `json:"server_rss_per_connection_kib,omitempty"`
	ServerCPUPercent  float64 `json:"server_cpu_percent,omitempty"`
	// The load generator's own share of the machine: when server and clients share the
	// cores, the two together say whether the machine, not the server, was the limit.
	LoadgenCPUPercent float64 `json:"loadgen_cpu_percent"`
}

// loadgenTownHall runs a town hall against one node: an audience of websocket clients on
// questions:<event>:<session>, moderators on moderation:<event>:<session> approving every
// question as soon as their console shows it, attendees asking at one rate and voting at
// another. It reports how long a question takes to reach the moderators' screens and,
// once approved, the audience's; and whether any acknowledged vote was lost or counted
// twice, both in the server's count and on every audience screen.
func loadgenTownHall(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := config.NewFlagSet("loadgen townhall")
	base := fs.String("url", "http://127.0.0.1:8080", "node base URL (loopback only)")
	event := fs.String("event", "ogp-sanjose-2027", "event")
	modToken := fs.String("moderator-token", "", "moderator token for the event (required)")
	audience := fs.Int("audience", 5000, "audience websocket connections")
	mods := fs.Int("moderators", 5, "moderator websocket connections")
	askRate := fs.Float64("ask-rate", 5, "questions asked per second")
	voteRate := fs.Float64("vote-rate", 1000, "votes per second")
	voters := fs.Int("voters", 2000, "attendees who ask and vote (their tokens are minted first)")
	questions := fs.Int("questions", 0, "questions asked, and approved by the moderators, before the votes start")
	dur := fs.Duration("duration", 30*time.Second, "how long questions and votes come in")
	pid := fs.Int("server-pid", 0, "server process id, to read its memory and CPU from /proc (same machine)")
	if err := config.ParseArgs(fs, args); errors.Is(err, flag.ErrHelp) {
		return printHelp(stdout, "usage: cabildo loadgen townhall [flags]\n", fs)
	} else if err != nil {
		return err
	}
	if err := loopbackURL("loadgen", "--url", *base); err != nil {
		return err
	}
	if *modToken == "" || *audience < 1 || *audience > 20000 || *mods < 1 || *mods > 50 || *askRate <= 0 ||
		*voteRate <= 0 || *voteRate > 100000 || *questions < 0 || *questions > 1000 || *voters < 1 || *voters > 100000 || *dur <= 0 || *dur > time.Hour {
		return errors.New("loadgen townhall: need --moderator-token, 1 ≤ --audience ≤ 20000, 1 ≤ --moderators ≤ 50, rates > 0, --vote-rate ≤ 100000, --questions ≤ 1000")
	}
	th := &thLoad{base: *base, event: *event, mod: *modToken, client: &fasthttp.Client{MaxConnsPerHost: 4096,
		MaxConnWaitTimeout: 15 * time.Second, MaxIdleConnDuration: time.Minute, ReadTimeout: 15 * time.Second, WriteTimeout: 15 * time.Second}}
	if err := th.prepare(ctx); err != nil {
		return err
	}
	tokens, err := th.mintAttendees(ctx, *voters)
	if err != nil {
		return err
	}
	rss0, _ := procStats(*pid)

	wsURL := "ws" + strings.TrimPrefix(*base, "http") + "/v1/ws"
	channel := fmt.Sprintf("questions:%s:%d", *event, th.session)
	modChannel := fmt.Sprintf("moderation:%s:%d", *event, th.session)

	// Moderators: each approves the pending questions whose id falls to it.
	var (
		askedAt    sync.Map // question id → time the ask was sent
		approvedAt sync.Map // question id → time the approve was sent
		votable    sync.Map // question id → approved (the approve was acknowledged)
		modSeenMu  sync.Mutex
		modSeen    []time.Duration
		approveCh  = make(chan int64, 10000)
	)
	seenByMod := make([]map[int64]bool, *mods)
	var modClients []*client.Client
	for m := range *mods {
		seenByMod[m] = map[int64]bool{}
		c, err := client.Dial(ctx, client.Options{URL: wsURL, Token: *modToken})
		if err != nil {
			return fmt.Errorf("moderator %d: %w", m, err)
		}
		modClients = append(modClients, c)
		onData := func(data json.RawMessage) {
			var d struct {
				Questions []api.ModQuestion `json:"questions"`
			}
			if json.Unmarshal(data, &d) != nil {
				return
			}
			now := time.Now()
			for _, q := range d.Questions {
				if seenByMod[m][q.ID] {
					continue
				}
				seenByMod[m][q.ID] = true
				if t0, ok := askedAt.Load(q.ID); ok {
					modSeenMu.Lock()
					modSeen = append(modSeen, now.Sub(t0.(time.Time)))
					modSeenMu.Unlock()
				}
				if q.State == "pending" && int(q.ID)%*mods == m {
					approveCh <- q.ID
				}
			}
		}
		if _, err := c.Subscribe(modChannel, "", client.Handler{
			OnSnapshot: func(_ uint64, data json.RawMessage) { onData(data) },
			OnUpdate:   func(_, _ uint64, data json.RawMessage) { onData(data) },
		}); err != nil {
			return err
		}
	}
	var approvers sync.WaitGroup
	approveCtx, stopApprove := context.WithCancel(ctx)
	defer stopApprove() // an early return stops the approvers too
	for range *mods {
		approvers.Go(func() {
			for {
				select {
				case <-approveCtx.Done():
					return
				case id := <-approveCh:
					approvedAt.Store(id, time.Now())
					if th.post(approveCtx, fmt.Sprintf("/questions/%d/actions", id), *modToken, `{"action":"approve"}`, nil) == nil {
						votable.Store(id, true)
					}
				}
			}
		})
	}

	// The audience: each client keeps the counts its screen shows and when it first saw
	// each question.
	type screen struct {
		mu     sync.Mutex
		votes  map[int64]int
		firstW map[int64]time.Time
	}
	screens := make([]*screen, *audience)
	audClients := make([]*client.Client, *audience)
	subs := make([]*client.Subscription, *audience)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	tick := time.NewTicker(time.Second / 2000)
	for i := range *audience {
		<-tick.C
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			sc := &screen{votes: map[int64]int{}, firstW: map[int64]time.Time{}}
			screens[i] = sc
			c, err := client.Dial(ctx, client.Options{URL: wsURL, MinBackoff: 200 * time.Millisecond, MaxBackoff: 5 * time.Second})
			if err != nil {
				return
			}
			audClients[i] = c
			apply := func(data json.RawMessage) {
				var d struct {
					Questions []api.Question `json:"questions"`
					Votes     map[int64]int  `json:"votes"`
					Removed   []int64        `json:"removed"`
				}
				if json.Unmarshal(data, &d) != nil {
					return
				}
				now := time.Now()
				sc.mu.Lock()
				for _, q := range d.Questions {
					if _, ok := sc.firstW[q.ID]; !ok {
						sc.firstW[q.ID] = now
					}
					sc.votes[q.ID] = q.Votes
				}
				for id, n := range d.Votes {
					sc.votes[id] = n
				}
				for _, id := range d.Removed {
					delete(sc.votes, id)
				}
				sc.mu.Unlock()
			}
			s, err := c.Subscribe(channel, "", client.Handler{
				OnSnapshot: func(_ uint64, data json.RawMessage) {
					sc.mu.Lock()
					sc.votes = map[int64]int{}
					sc.mu.Unlock()
					apply(data)
				},
				OnUpdate: func(_, _ uint64, data json.RawMessage) { apply(data) },
			})
			if err == nil {
				subs[i] = s
			}
		})
	}
	tick.Stop()
	wg.Wait()
	connected := 0
	deadline := time.Now().Add(60 * time.Second)
	for i := range *audience {
		for subs[i] != nil && time.Now().Before(deadline) {
			if _, ok := subs[i].Last(audClients[i]); ok {
				connected++
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	// Questions asked before the run, each by another attendee, approved as the
	// moderators' consoles show them.
	for i := range *questions {
		body := fmt.Sprintf(`{"text":"Pregunta previa número %d: ¿qué hará el gobierno con los datos abiertos del tema %d?"}`, i, i)
		if err := th.post(ctx, "/questions", tokens[(len(tokens)-1-i)%len(tokens)], body, nil); err != nil {
			return fmt.Errorf("loadgen townhall: asking question %d before the run: %w", i, err)
		}
	}
	for wait := time.Now().Add(30 * time.Second); len(th.approvedIDs(&votable)) < *questions && time.Now().Before(wait); {
		time.Sleep(10 * time.Millisecond)
	}
	rss1, cpu1 := procStats(*pid)
	_, self1 := procStats(os.Getpid())
	start := time.Now()

	// Asking and voting.
	runCtx, stopRun := context.WithTimeout(ctx, *dur)
	var (
		asked   atomic.Int64
		votesMu sync.Mutex
		voteLat []time.Duration
		sentN   atomic.Int64
		// acked[q][attendee]: the acked votes. All are up-votes (PUT), so however they
		// interleave, each attendee counts once for each question it voted for.
		acked = map[int64]map[int]bool{}
	)
	var load sync.WaitGroup
	load.Go(func() {
		every := time.Duration(float64(time.Second) / *askRate)
		t := time.NewTicker(every)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
			}
			who := i % len(tokens)
			go func() {
				body := fmt.Sprintf(`{"text":"Pregunta de carga número %d: ¿qué hará el gobierno con los datos abiertos del tema %d?"}`, i, i)
				t0 := time.Now()
				var q api.Question
				if th.post(ctx, "/questions", tokens[who], body, &q) == nil {
					askedAt.Store(q.ID, t0)
					asked.Add(1)
				}
			}()
		}
	})
	// Votes: offered at the rate whatever the server answers (an open loop, so a slow
	// server shows as latency and shed votes, not as a lower offered rate), each from a
	// random attendee for a random approved question. At most maxInFlight wait for an
	// answer; a vote due when that many are out is shed and counted, not sent late.
	const maxInFlight = 2048
	inflight := make(chan struct{}, maxInFlight)
	var shed, refused, refusedNoRetry, failed atomic.Int64
	load.Go(func() {
		const tick = 10 * time.Millisecond
		t := time.NewTicker(tick)
		defer t.Stop()
		rng := rand.New(rand.NewPCG(7, 42))
		t0, due := time.Now(), 0
		for {
			select {
			case <-runCtx.Done():
				return
			case now := <-t.C:
				n := int(now.Sub(t0).Seconds()**voteRate) - due
				due += n
				ids := th.approvedIDs(&votable)
				if len(ids) == 0 {
					continue
				}
				for range n {
					q, who := ids[rng.IntN(len(ids))], rng.IntN(len(tokens))
					select {
					case inflight <- struct{}{}:
					default:
						shed.Add(1)
						continue
					}
					sentN.Add(1)
					load.Go(func() {
						defer func() { <-inflight }()
						t0 := time.Now()
						var v api.Vote
						if err := th.put(ctx, fmt.Sprintf("/questions/%d/vote", q), tokens[who], &v); err != nil {
							var he *httpError
							switch {
							case errors.As(err, &he) && (he.status == http.StatusTooManyRequests || he.status == http.StatusServiceUnavailable):
								refused.Add(1)
								if he.retryAfter == "" {
									refusedNoRetry.Add(1)
								}
							default:
								failed.Add(1)
							}
							return
						}
						d := time.Since(t0)
						votesMu.Lock()
						defer votesMu.Unlock()
						voteLat = append(voteLat, d)
						if acked[v.Question] == nil {
							acked[v.Question] = map[int]bool{}
						}
						acked[v.Question][who] = true
					})
				}
			}
		}
	})
	load.Wait()
	stopRun()
	elapsed := time.Since(start)

	// Let moderators and screens catch up, then compare.
	time.Sleep(2 * time.Second)
	stopApprove()
	approvers.Wait()
	final, err := th.publicCounts(ctx)
	if err != nil {
		return err
	}
	settle := time.Now().Add(10 * time.Second)
	wrong := 0
	for {
		wrong = 0
		for i, sc := range screens {
			if sc == nil || subs[i] == nil {
				continue
			}
			sc.mu.Lock()
			for id, n := range final {
				if sc.votes[id] != n {
					wrong++
					break
				}
			}
			sc.mu.Unlock()
		}
		if wrong == 0 || time.Now().After(settle) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	_, cpu2 := procStats(*pid)
	_, self2 := procStats(os.Getpid())

	res := townHallResult{Scenario: fmt.Sprintf("townhall_%d_audience_%g_votes_per_s", *audience, *voteRate),
		Audience: *audience, Connected: connected, Moderators: *mods, Questions: int(asked.Load()),
		VotesOffered: int(sentN.Load() + shed.Load()), VotesShed: int(shed.Load()),
		VotesSent: int(sentN.Load()), VotesAcked: len(voteLat), AudienceWrong: wrong,
		VotesRefused: int(refused.Load()), RefusedNoRetry: int(refusedNoRetry.Load()), VotesFailed: int(failed.Load()),
		VotesPerSecond: float64(len(voteLat)) / elapsed.Seconds()}
	for q, who := range acked {
		switch got := final[q]; {
		case got < len(who):
			res.VotesLost += len(who) - got
		case got > len(who):
			res.VotesDoubled += got - len(who)
		}
	}
	var audLat []time.Duration
	approvedAt.Range(func(k, v any) bool {
		res.Approved++
		id := k.(int64)
		for i, sc := range screens {
			if sc == nil || subs[i] == nil {
				continue
			}
			sc.mu.Lock()
			if seen, ok := sc.firstW[id]; ok {
				audLat = append(audLat, seen.Sub(v.(time.Time)))
			} else {
				res.AudienceMissing++
			}
			sc.mu.Unlock()
		}
		return true
	})
	for i, c := range audClients {
		if c == nil {
			continue
		}
		st := c.Stats()
		res.Gaps += st.Gaps
		res.Duplicates += st.Duplicates
		if subs[i] != nil {
			res.AudienceUpdates += float64(st.Updates)
		}
		c.Close()
	}
	if connected > 0 {
		res.AudienceUpdates /= float64(connected)
	}
	for _, c := range modClients {
		c.Close()
	}
	pct := func(lat []time.Duration, p float64) float64 {
		slices.Sort(lat)
		return ms(percentile(lat, p))
	}
	res.AskToModP50ms, res.AskToModP99ms = pct(modSeen, .5), pct(modSeen, .99)
	res.ApproveToAudP50ms, res.ApproveToAudP99ms = pct(audLat, .5), pct(audLat, .99)
	res.VoteAckP50ms, res.VoteAckP99ms = pct(voteLat, .5), pct(voteLat, .99)
	if connected > 0 && rss1 > rss0 {
		res.ServerRSSPerConnK = float64(rss1-rss0) / float64(connected)
	}
	if cpu2 > cpu1 {
		res.ServerCPUPercent = 100 * float64(cpu2-cpu1) / float64(time.Since(start).Microseconds())
	}
	res.LoadgenCPUPercent = 100 * float64(self2-self1) / float64(time.Since(start).Microseconds())
	return json.NewEncoder(stdout).Encode(res)
}

// thLoad is the REST side of the town-hall load.
type thLoad struct {
	client  *fasthttp.Client
	base    string
	event   string
	mod     string
	session int64
}

func (l *thLoad) url(path string) string {
	return fmt.Sprintf("%s/v1/events/%s/sessions/%d%s", l.base, l.event, l.session, path)
}

// prepare finds the event's town hall and opens its Q&A, moderated.
func (l *thLoad) prepare(ctx context.Context) error {
	var list api.SessionList
	if err := l.do(ctx, http.MethodGet, fmt.Sprintf("%s/v1/events/%s/sessions?kind=town_hall", l.base, l.event), "", "", &list); err != nil {
		return err
	}
	if len(list.Sessions) == 0 {
		return fmt.Errorf("loadgen townhall: event %s has no town_hall session", l.event)
	}
	l.session = list.Sessions[0].ID
	return l.do(ctx, http.MethodPut, l.url("/qa"), l.mod, `{"open":true,"moderated":true}`, nil)
}

func (l *thLoad) mintAttendees(ctx context.Context, n int) ([]string, error) {
	tokens := make([]string, n)
	var (
		wg   sync.WaitGroup
		errs atomic.Int64
	)
	sem := make(chan struct{}, 32)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var a api.AttendeeToken
			if err := l.do(ctx, http.MethodPost, fmt.Sprintf("%s/v1/events/%s/attendees", l.base, l.event), "", "", &a); err != nil {
				errs.Add(1)
				return
			}
			tokens[i] = a.Token
		})
	}
	wg.Wait()
	if errs.Load() > 0 {
		return nil, fmt.Errorf("loadgen townhall: %d of %d attendee tokens refused (raise --qa-attendees-per-ip-per-minute on the server)", errs.Load(), n)
	}
	return tokens, nil
}

func (l *thLoad) post(ctx context.Context, path, tok, body string, out any) error {
	return l.do(ctx, http.MethodPost, l.url(path), tok, body, out)
}

func (l *thLoad) put(ctx context.Context, path, tok string, out any) error {
	return l.do(ctx, http.MethodPut, l.url(path), tok, "", out)
}

// do sends one request with fasthttp's client: at tens of thousands of votes a second,
// net/http's client costs the load generator more CPU than the node spends answering, and
// the two share the machine.
func (l *thLoad) do(ctx context.Context, method, u, tok, body string, out any) error {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer func() {
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}()
	req.SetRequestURI(u)
	req.Header.SetMethod(method)
	if body != "" {
		req.Header.SetContentType("application/json")
		req.SetBodyString(body)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	deadline, ok := ctx.Deadline()
	if !ok || time.Until(deadline) > 15*time.Second {
		deadline = time.Now().Add(15 * time.Second)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := l.client.DoDeadline(req, resp, deadline); err != nil {
		return fmt.Errorf("%s %s: %w", method, u, err)
	}
	b := resp.Body()
	if status := resp.StatusCode(); status >= 300 {
		return &httpError{status: status, retryAfter: string(resp.Header.Peek("Retry-After")),
			msg: fmt.Sprintf("%s %s: %d %s", method, u, status, b)}
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// httpError is a response that was not a success.
type httpError struct {
	status     int
	retryAfter string
	msg        string
}

func (e *httpError) Error() string { return e.msg }

// approvedIDs lists the questions a moderator has approved so far.
func (l *thLoad) approvedIDs(approved *sync.Map) []int64 {
	var ids []int64
	approved.Range(func(k, _ any) bool {
		ids = append(ids, k.(int64))
		return true
	})
	return ids
}

// publicCounts reads every public question's vote count.
func (l *thLoad) publicCounts(ctx context.Context) (map[int64]int, error) {
	var list api.QuestionList
	if err := l.do(ctx, http.MethodGet, l.url("/questions"), "", "", &list); err != nil {
		return nil, err
	}
	out := map[int64]int{}
	for _, q := range list.Questions {
		out[q.ID] = q.Votes
	}
	return out, nil
}
