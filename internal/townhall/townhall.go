// Package townhall holds the town-hall use cases: attendees ask and vote, moderators screen,
// organizers open and close a session's Q&A. Like every write, each is checked against
// this node's projection, appended to the log of record, and answered once the projection
// has applied it. Questions and votes arrive in bursts, so each node group-commits them
// (commit.go); moderation is a few actions a second, one log entry each.
package townhall

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/projection"
	"github.com/cabildo/cabildo/internal/schedule"
)

// Log is the log of record as the town hall needs it.
type Log interface {
	Append(ctx context.Context, subject string, data []byte, expect *uint64, msgID string) (seq uint64, duplicate bool, err error)
}

// Options configure a Service.
type Options struct {
	// Words flag questions for moderators; default DefaultWords.
	Words WordLists
	// MaxBatch bounds the votes one log entry holds; default 1,000. An entry holds at
	// most a tenth as many questions (each is up to a few hundred bytes).
	MaxBatch int
	// VoteQueue bounds the votes waiting on this node for their log entry; beyond it a
	// vote is shed: refused at once with 503 unavailable and Retry-After, not stored.
	// VoteWait is how long a vote may wait for its entry before it is shed the same way.
	// Defaults DefaultVoteQueue and DefaultVoteWait; below 0, no bound.
	VoteQueue int
	VoteWait  time.Duration
	// AnswerWithin bounds how long a question or vote waits for its answer, counted from
	// its arrival, whatever is ahead of it: set it to the log's append timeout, so that a
	// write sent as the log goes away hears "unavailable, retry" within that, not within
	// a multiple of it. Default DefaultAnswerWithin; below 0, no bound.
	AnswerWithin time.Duration
	// VoteConcurrency bounds the votes this node works on at once (AdmitVote): past
	// capacity a vote request waits for the CPU like every other request, and with
	// thousands of them in the run queue questions and moderation wait behind them
	// too. Default DefaultVoteConcurrency; below 0, no bound.
	VoteConcurrency int
}

// Defaults for Options.VoteQueue and VoteWait: a few entries' worth of votes, and a wait
// well under what a voter notices.
const (
	DefaultVoteQueue = 4000
	DefaultVoteWait  = 200 * time.Millisecond
	// DefaultVoteConcurrency keeps the votes in progress to what a node answers in about
	// 20 ms at its capacity (docs/benchmarks.md), far above what a packed hall needs.
	DefaultVoteConcurrency = 256
	// DefaultAnswerWithin is the log's default append timeout.
	DefaultAnswerWithin = 1500 * time.Millisecond
)

// Service runs the town hall's use cases.
type Service struct {
	commits *schedule.Service
	view    *projection.Store
	screen  *screener
	votes   *committer[cabildo.VoteOp]
	asks    *committer[cabildo.Asked]
	modMu   sync.Mutex // one moderation commit at a time on this node

	voting    atomic.Int64 // vote requests admitted and not yet answered
	maxVoting int64        // 0: no bound
}

// New returns a Service appending through commits (the shared write path) and log (for the
// vote batches) and reading view.
func New(commits *schedule.Service, log Log, view *projection.Store, opts Options) *Service {
	if opts.Words == nil {
		opts.Words = DefaultWords()
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1000
	}
	if opts.VoteQueue == 0 {
		opts.VoteQueue = DefaultVoteQueue
	}
	if opts.VoteWait == 0 {
		opts.VoteWait = DefaultVoteWait
	}
	if opts.VoteConcurrency == 0 {
		opts.VoteConcurrency = DefaultVoteConcurrency
	}
	if opts.AnswerWithin == 0 {
		opts.AnswerWithin = DefaultAnswerWithin
	}
	s := &Service{commits: commits, view: view, screen: newScreener(opts.Words),
		votes: newCommitter(log, opts.MaxBatch, "vote", func(event string, votes []cabildo.VoteOp) cabildo.Record {
			return cabildo.Record{Type: cabildo.RecordVotesCast, Event: event, Votes: votes}
		}),
		asks: newCommitter(log, max(1, opts.MaxBatch/10), "question", func(event string, asked []cabildo.Asked) cabildo.Record {
			return cabildo.Record{Type: cabildo.RecordQuestionsAsked, Event: event, Asked: asked}
		})}
	s.votes.maxQueue, s.votes.maxWait = max(0, opts.VoteQueue), max(0, opts.VoteWait)
	s.votes.answerWithin, s.asks.answerWithin = max(0, opts.AnswerWithin), max(0, opts.AnswerWithin)
	s.maxVoting = int64(max(0, opts.VoteConcurrency))
	s.asks.prepare = s.screenAsked
	return s
}

// screenAsked flags the questions of an entry about to be appended, against everything
// this node's projection holds, once it holds this node's previous entry too (the last
// entry's questions are the likeliest to be repeated in a burst), and against each other.
// It waits for that entry for at most a second and at most half of what is left before
// the entry's answer deadline, so a projection that stopped hearing from the log (the log
// went away) leaves the append its time.
func (s *Service) screenAsked(ctx context.Context, event string, asked []cabildo.Asked, after uint64) {
	wait := time.Second
	if d, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(d)/2)
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	_ = s.view.WaitFor(wctx, after) // late: screen against what there is
	cancel()
	mine := make([]map[string]bool, len(asked))
	for i := range asked {
		// One question per read, so the projection never waits for a whole entry's screening.
		s.view.Read(event, func(st *projection.EventState) { s.screen.screenAt(asked, i, st.QAOf(asked[i].Question.Session), mine) })
	}
}

// AdmitVote admits one vote request, or returns the error it gets when this node is
// shedding votes now: as many are in progress as VoteConcurrency allows, its vote queue
// is full, or the oldest waiting vote is past the wait budget. An admitted request calls
// VoteDone once answered. The HTTP layer asks before anything else, so a shed vote costs
// next to nothing.
func (s *Service) AdmitVote() error {
	if n := s.voting.Add(1); (s.maxVoting > 0 && n > s.maxVoting) || s.votes.overloadedNow() {
		s.voting.Add(-1)
		s.votes.shed.Add(1)
		return s.votes.overloaded()
	}
	return nil
}

// VoteDone ends a vote request AdmitVote admitted.
func (s *Service) VoteDone() { s.voting.Add(-1) }

// Stats counts this node's group commits of votes and of questions.
func (s *Service) Stats() (votes, questions CommitStats) { return s.votes.stats(), s.asks.stats() }

// Close stops the committers after the entries in flight; writes still queued fail as
// unavailable, so their clients retry on another node.
func (s *Service) Close() {
	s.votes.close()
	s.asks.close()
}

// Ask is what an attendee sends.
type Ask struct {
	Text string
	Lang cabildo.Lang // empty: detected, with Hint breaking a tie
	Hint cabildo.Lang
	Name string // shown only when not empty
}

// Asker is the attendee asking or voting.
type Asker struct {
	Attendee string
	Name     string // the token's display name
}

// Ask stores a question. It is open to anyone with an attendee token while the session's
// Q&A is open; a moderated session (the default) holds it for a moderator, and so does
// any flag, even in an unmoderated one. Flags are set as the question's log entry is
// written (screenAsked). The result's ID is the question's; Replayed says an earlier
// request with the same Idempotency-Key asked it.
func (s *Service) Ask(ctx context.Context, req schedule.Request, event, sessionRef string, in Ask) (schedule.Result, error) {
	if res, ok, err := s.commits.Replay(event, req); ok {
		return res, err
	}
	q := cabildo.Question{Text: in.Text, Lang: in.Lang, Name: in.Name}
	if err := q.NormalizeAsk(); err != nil {
		return schedule.Result{}, err
	}
	if q.Lang == "" {
		q.Lang = detectLang(q.Text, in.Hint)
	}
	q.Attendee = attendee(req)
	var err error
	if !s.view.Read(event, func(st *projection.EventState) {
		var sess cabildo.Session
		if sess, _, err = schedule.FindSession(st, sessionRef); err != nil {
			return
		}
		q.Session = sess.ID
		qa := st.QAOf(sess.ID)
		if qa == nil || !qa.Open {
			err = cabildo.Errorf(cabildo.CodeQAClosed, "this session is not taking questions now")
		}
	}) {
		return schedule.Result{}, errNoEvent(event)
	}
	if err != nil {
		return schedule.Result{}, err
	}
	seq, item, replayed, err := s.asks.submit(ctx, event, req.IdempotencyKey, req.Hash,
		cabildo.Asked{Question: q, IdempotencyKey: req.IdempotencyKey, RequestHash: req.Hash})
	if err != nil {
		return schedule.Result{}, err
	}
	if err := s.view.WaitFor(ctx, seq); err != nil {
		return schedule.Result{}, err
	}
	res := schedule.Result{Seq: seq, Subject: cabildo.QuestionsSubject(event), Created: true}
	s.view.Read(event, func(st *projection.EventState) {
		if qa := st.QAOf(q.Session); qa != nil {
			if mine, ok := qa.StoredAt(seq, item); ok {
				res.ID = mine.ID
			}
		}
	})
	// The log may hold this key's question from a request we raced with (on another
	// node, or before this node's restart): the projection applied the first one only.
	first, ok, err := s.commits.Replay(event, req)
	switch {
	case err != nil:
		return schedule.Result{}, err
	case ok && (first.ID != res.ID || replayed):
		return first, nil
	case res.ID == 0:
		return res, cabildo.Errorf(cabildo.CodeNotFound, "the session was removed while the question was stored")
	}
	return res, nil
}

// attendee is the pseudonymous id in a request's actor ("attendee:<id>").
func attendee(req schedule.Request) string {
	const p = "attendee:"
	if len(req.Actor) > len(p) && req.Actor[:len(p)] == p {
		return req.Actor[len(p):]
	}
	return req.Actor
}

// Configure opens or closes a session's Q&A and turns pre-moderation on or off.
func (s *Service) Configure(ctx context.Context, req schedule.Request, event, sessionRef string, set cabildo.QASettings) (schedule.Result, error) {
	return s.moderationCommit(ctx, req, event, func(st *projection.EventState) (cabildo.Record, uint64, bool, error) {
		rec := cabildo.Record{Type: cabildo.RecordQAConfigured, Event: event, QASettings: &set}
		if st == nil {
			return rec, 0, false, errNoEvent(event)
		}
		sess, _, err := schedule.FindSession(st, sessionRef)
		if err != nil {
			return rec, 0, false, err
		}
		set.Session = sess.ID
		expect := st.SubjectSeq(cabildo.ModerationSubject(event, sess.ID))
		if qa := st.QAOf(sess.ID); qa != nil && (set.Open == nil || *set.Open == qa.Open) &&
			(set.Moderated == nil || *set.Moderated == qa.Moderated) {
			return rec, qa.Version, true, nil
		}
		return rec, expect, false, nil
	})
}

// Moderate applies a moderator's action to a question, or undoes their last one
// (m.Action undo, m.UndoOf optional: when set, it must be that last action).
func (s *Service) Moderate(ctx context.Context, req schedule.Request, event, sessionRef string, m cabildo.Moderation) (schedule.Result, error) {
	return s.moderationCommit(ctx, req, event, func(st *projection.EventState) (cabildo.Record, uint64, bool, error) {
		mm := m
		rec := cabildo.Record{Type: cabildo.RecordQuestionModerated, Event: event, Moderation: &mm}
		if st == nil {
			return rec, 0, false, errNoEvent(event)
		}
		sess, _, err := schedule.FindSession(st, sessionRef)
		if err != nil {
			return rec, 0, false, err
		}
		mm.Session = sess.ID
		qa := st.QAOf(sess.ID)
		if qa == nil {
			if mm.Action == cabildo.ActionUndo {
				return rec, 0, false, cabildo.Errorf(cabildo.CodeInvalidTransition, "there is nothing of yours left to undo in this session")
			}
			return rec, 0, false, cabildo.Errorf(cabildo.CodeNotFound, "question %d does not exist in this session", mm.Question)
		}
		if mm.Action == cabildo.ActionUndo && mm.UndoOf == 0 {
			mm.UndoOf = qa.LastAction(req.Actor)
		}
		if err := qa.Check(mm, req.Actor); err != nil {
			return rec, 0, false, err
		}
		return rec, st.SubjectSeq(cabildo.ModerationSubject(event, sess.ID)), false, nil
	})
}

// moderationCommit commits a record on a session's moderation subject, where each action
// is checked against the state the one before left. On one node these commits take turns
// (moderation is a few actions a second); moderators on two nodes can still conflict on
// the subject, and then the loser's action is checked again against what the winner did
// and retried, so it fails only if it no longer makes sense.
func (s *Service) moderationCommit(ctx context.Context, req schedule.Request, event string, build schedule.Builder) (schedule.Result, error) {
	s.modMu.Lock()
	defer s.modMu.Unlock()
	for attempt := 0; ; attempt++ {
		res, err := s.commits.Commit(ctx, req, event, build)
		if err == nil || cabildo.ErrorCode(err) != cabildo.CodeVersionConflict || attempt == 20 {
			return res, err
		}
		// The conflicting record may not have reached this node's projection yet.
		select {
		case <-ctx.Done():
			return res, err
		case <-time.After(time.Duration(1+rand.IntN(10*(attempt+1))) * time.Millisecond):
		}
	}
}

// Vote casts (up) or withdraws an attendee's vote for a question and returns a log
// sequence at which the question's count includes it (the entry holding it, or a later
// one), once this node's projection has applied it. The vote is checked here and applied
// only if the question still takes votes when its batch reaches the log. A vote that is
// already counted (or a withdrawal of one that is not) changes nothing and is not appended
// again: a device voting a thousand times costs one log entry, not a thousand.
func (s *Service) Vote(ctx context.Context, event, sessionRef string, question int64, who string, up bool) (uint64, error) {
	var (
		op   cabildo.VoteOp
		err  error
		done uint64 // the question's version, when the vote is counted already
	)
	found := s.view.Read(event, func(st *projection.EventState) {
		sess, _, ferr := schedule.FindSession(st, sessionRef)
		if ferr != nil {
			err = ferr
			return
		}
		qa := st.QAOf(sess.ID)
		var q *cabildo.Question
		if qa != nil {
			q, _ = qa.Root(question)
		}
		switch {
		case q == nil || !q.State.Public():
			// A question the audience cannot see does not exist for them: ids are log
			// positions, and its state is nobody's business but the moderators'.
			err = cabildo.Errorf(cabildo.CodeNotFound, "question %d does not exist in this session", question)
		case !q.State.Votable():
			err = cabildo.Errorf(cabildo.CodeInvalidTransition, "a question that is %s takes no votes", q.State)
		case qa.Voted(q, who) == up:
			done = q.Version
		default:
			op = cabildo.VoteOp{Session: sess.ID, Question: q.ID, Attendee: who, Up: up}
		}
	})
	if !found {
		return 0, errNoEvent(event)
	}
	if err != nil || done != 0 {
		return done, err
	}
	seq, _, _, err := s.votes.submit(ctx, event, "", "", op)
	if err != nil {
		return 0, err
	}
	if err := s.view.WaitFor(ctx, seq); err != nil {
		return 0, err
	}
	return seq, nil
}

func errNoEvent(event string) error {
	return cabildo.Errorf(cabildo.CodeNotFound, "event %q does not exist", event)
}

var (
	errClosed     = errors.New("townhall: closed")
	errOverloaded = errors.New("townhall: over capacity")
	errLate       = errors.New("townhall: answer deadline passed before the append")
)
