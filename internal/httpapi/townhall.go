package httpapi

import (
	"context"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/projection"
	"github.com/cabildo/cabildo/internal/ratelimit"
	"github.com/cabildo/cabildo/internal/render"
	"github.com/cabildo/cabildo/internal/schedule"
	"github.com/cabildo/cabildo/internal/token"
	"github.com/cabildo/cabildo/internal/townhall"
	"github.com/cabildo/cabildo/pkg/api"
)

// Minter issues anonymous attendee tokens.
type Minter interface {
	MintAttendee(event, name string, ttl time.Duration) (string, token.Claims, error)
}

// TownHall configures the town-hall routes.
type TownHall struct {
	Service *townhall.Service
	Minter  Minter
	Limiter ratelimit.Limiter
	Limits  Limits
	// AttendeeTTL is how long an attendee token lasts; default 7 days, a whole event.
	AttendeeTTL time.Duration
}

// Limits are the town hall's rate limits. Each applies per attendee first; the per-address
// limits are generous, because venue Wi-Fi puts thousands of attendees behind one address.
type Limits struct {
	MintPerIP      ratelimit.Limit // attendee tokens minted per address; default 30/min
	AskPerAttendee ratelimit.Limit // default 5/min
	AskPerIP       ratelimit.Limit // default 600/min
	VotePerAttend  ratelimit.Limit // votes and withdrawals per attendee; default 120/min
	VotePerIP      ratelimit.Limit // default 60,000/min
}

func (t *TownHall) defaults() {
	def := func(l *ratelimit.Limit, n int) {
		if l.N == 0 {
			*l = ratelimit.Limit{N: n, Per: time.Minute}
		}
	}
	def(&t.Limits.MintPerIP, 30)
	def(&t.Limits.AskPerAttendee, 5)
	def(&t.Limits.AskPerIP, 600)
	def(&t.Limits.VotePerAttend, 120)
	def(&t.Limits.VotePerIP, 60000)
	if t.AttendeeTTL == 0 {
		t.AttendeeTTL = 7 * 24 * time.Hour
	}
	if t.Limiter == nil {
		t.Limiter = &ratelimit.Fallback{Local: ratelimit.NewLocal()}
	}
}

func (s *Server) townHallRoutes(v1 fiber.Router) {
	attendee := s.requireRole(token.Attendee)
	moderator := s.requireRole(token.Moderator)
	sess := "/events/:event/sessions/:session"
	v1.Post("/events/:event/attendees", s.mintAttendee)
	v1.Get(sess+"/questions", s.listQuestions)
	v1.Post(sess+"/questions", attendee, s.askQuestion)
	v1.Get(sess+"/questions/mine", attendee, s.myQuestions)
	v1.Get(sess+"/questions/export", s.requireRole(token.Organizer), s.exportQuestions)
	v1.Put(sess+"/questions/:question/vote", s.voteGate, attendee, s.vote(true))
	v1.Delete(sess+"/questions/:question/vote", s.voteGate, attendee, s.vote(false))
	v1.Post(sess+"/questions/:question/actions", moderator, s.moderate)
	v1.Get(sess+"/moderation", moderator, s.moderationView)
	v1.Post(sess+"/moderation/undo", moderator, s.undo)
	v1.Put(sess+"/qa", s.requireRole(token.Organizer, token.Moderator), s.configureQA)
}

// limit counts one event against key and refuses it with 429 and Retry-After beyond l.
func (s *Server) limit(c *fiber.Ctx, key string, l ratelimit.Limit, what string) error {
	d, err := s.opts.TownHall.Limiter.Allow(c.UserContext(), key, l)
	if err != nil || d.Allowed {
		return nil // the limiter degrades by itself; an error here means none is configured
	}
	return &cabildo.Error{Code: cabildo.CodeRateLimited, RetryAfter: max(d.RetryAfter, time.Second),
		Message: fmt.Sprintf("too many %s: at most %d per %s; retry after the time in Retry-After", what, l.N, l.Per)}
}

func claimsOf(c *fiber.Ctx) token.Claims {
	claims, _ := c.Locals(claimsKey).(token.Claims)
	return claims
}

type attendeeIn struct {
	Name string `json:"name"`
}

func (s *Server) mintAttendee(c *fiber.Ctx) error {
	th := &s.opts.TownHall
	event := c.Params("event")
	if !s.opts.Store.Read(event, func(*projection.EventState) {}) {
		return notFoundEvent(event)
	}
	if err := s.limit(c, "mint:ip:"+c.IP(), th.Limits.MintPerIP, "attendee tokens from this address"); err != nil {
		return err
	}
	var in attendeeIn
	if len(c.Body()) > 0 {
		if err := decodeBody(c, &in); err != nil {
			return err
		}
	}
	name := cabildo.Trim(in.Name)
	var f cabildo.Fields
	if cabildo.CheckString(&f, "name", name, false); !validName(name) {
		f.Add("name", "too_long", "a display name is at most %d characters of UTF-8", cabildo.MaxDisplayName)
	}
	if err := f.Err(); err != nil {
		return err
	}
	tok, claims, err := th.Minter.MintAttendee(event, name, th.AttendeeTTL)
	if err != nil {
		return err
	}
	return writeJSON(c, fiber.StatusCreated, fiber.MIMEApplicationJSON, api.AttendeeToken{
		Attendee: claims.Subject, Name: claims.Name, Token: tok, ExpiresAt: claims.ExpiresAt.UTC()})
}

// readQA runs fn on a session's town hall (qa nil when nobody opened it yet) under the
// projection's read lock.
func (s *Server) readQA(c *fiber.Ctx, fn func(st *projection.EventState, sess cabildo.Session, qa *cabildo.QA) error) error {
	event := c.Params("event")
	var err error
	found := s.opts.Store.Read(event, func(st *projection.EventState) {
		sess, _, ferr := schedule.FindSession(st, c.Params("session"))
		if ferr != nil {
			err = ferr
			return
		}
		err = fn(st, sess, st.QAOf(sess.ID))
	})
	if !found {
		return notFoundEvent(event)
	}
	return err
}

func (s *Server) listQuestions(c *fiber.Ctx) error {
	var (
		body      api.QuestionList
		unchanged bool
	)
	err := s.readQA(c, func(st *projection.EventState, sess cabildo.Session, qa *cabildo.QA) error {
		v := validators{etag: etag(max(st.Created, qaVersion(qa)), "q", "")}
		if unchanged = notModified(c, v, cabildo.ES); !unchanged {
			body = render.QuestionList(c.Params("event"), sess.ID, qa)
		}
		return nil
	})
	c.Set(fiber.HeaderContentLanguage, "")
	switch {
	case err != nil:
		return err
	case unchanged:
		return c.SendStatus(fiber.StatusNotModified)
	}
	return writeJSON(c, fiber.StatusOK, fiber.MIMEApplicationJSON, body)
}

func qaVersion(qa *cabildo.QA) uint64 {
	if qa == nil {
		return 0
	}
	return qa.Version
}

type askIn struct {
	Text      string       `json:"text"`
	Lang      cabildo.Lang `json:"lang"`
	Anonymous *bool        `json:"anonymous"`
	Name      string       `json:"name"`
}

func (s *Server) askQuestion(c *fiber.Ctx) error {
	th := &s.opts.TownHall
	claims := claimsOf(c)
	// A retry of a question already stored is answered with it, whatever the limits: it
	// asks nothing new.
	key := c.Get("Idempotency-Key")
	if _, replay := s.opts.Store.Idempotent(c.Params("event"), claims.Subject+"/"+key); key == "" || !replay {
		if err := s.limit(c, "ask:attendee:"+claims.Subject, th.Limits.AskPerAttendee, "questions from you"); err != nil {
			return err
		}
		if err := s.limit(c, "ask:ip:"+c.IP(), th.Limits.AskPerIP, "questions from this address"); err != nil {
			return err
		}
	}
	var in askIn
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	ask := townhall.Ask{Text: in.Text, Lang: in.Lang}
	if in.Anonymous != nil && !*in.Anonymous {
		if ask.Name = in.Name; ask.Name == "" {
			ask.Name = claims.Name
		}
		if ask.Name == "" {
			var f cabildo.Fields
			f.Add("name", "required", "to ask with your name, send name (your token has none)")
			return f.Err()
		}
	} else if in.Name != "" {
		var f cabildo.Fields
		f.Add("name", "conflict", "a name is shown only with anonymous: false")
		return f.Err()
	}
	if l, err := pickLang(c); err == nil && c.Get(fiber.HeaderAcceptLanguage) != "" {
		ask.Hint = l
	}
	req, err := request(c)
	if err != nil {
		return err
	}
	if req.IdempotencyKey != "" {
		// Keys are the attendee's own: two phones choosing the same key never collide.
		req.IdempotencyKey = claims.Subject + "/" + req.IdempotencyKey
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), s.opts.WriteTimeout)
	defer cancel()
	res, err := th.Service.Ask(ctx, req, c.Params("event"), c.Params("session"), ask)
	if err != nil {
		return err
	}
	setWritten(c, res.Seq)
	var body api.Question
	err = s.readQA(c, func(_ *projection.EventState, _ cabildo.Session, qa *cabildo.QA) error {
		if qa != nil {
			if q, ok := qa.Questions[res.ID]; ok {
				body = render.Question(q)
				return nil
			}
		}
		return cabildo.Errorf(cabildo.CodeNotFound, "the question is not on this node yet")
	})
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderLocation, fmt.Sprintf("/v1/events/%s/sessions/%d/questions/mine#%d", c.Params("event"), body.Session, body.ID))
	return writeJSON(c, fiber.StatusCreated, fiber.MIMEApplicationJSON, body)
}

func (s *Server) myQuestions(c *fiber.Ctx) error {
	who := claimsOf(c).Subject
	var body api.MyQuestions
	err := s.readQA(c, func(_ *projection.EventState, sess cabildo.Session, qa *cabildo.QA) error {
		body = api.MyQuestions{Event: c.Params("event"), Session: sess.ID, Questions: []api.Question{}, Voted: []int64{}}
		if qa == nil {
			return nil
		}
		body.Version = qa.Version
		for _, id := range qa.Order {
			q := qa.Questions[id]
			if q.Attendee == who {
				body.Questions = append(body.Questions, render.Question(q))
			}
			if q.State != cabildo.QuestionMerged && qa.Voted(q, who) {
				body.Voted = append(body.Voted, q.ID)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "private, no-store")
	return writeJSON(c, fiber.StatusOK, fiber.MIMEApplicationJSON, body)
}

// voteGate sheds a vote at once, before its token is checked, while this node is
// shedding votes: past capacity, each vote turned away must cost as little as possible, so
// that questions and moderation keep the CPU they need.
func (s *Server) voteGate(c *fiber.Ctx) error {
	th := s.opts.TownHall.Service
	if err := th.AdmitVote(); err != nil {
		return err
	}
	defer th.VoteDone()
	return c.Next()
}

func (s *Server) vote(up bool) fiber.Handler {
	return func(c *fiber.Ctx) error {
		th := &s.opts.TownHall
		who := claimsOf(c).Subject
		id, ok := cabildo.ParseID(c.Params("question"))
		if !ok {
			return cabildo.Errorf(cabildo.CodeNotFound, "question %q does not exist in this session", c.Params("question"))
		}
		if err := s.limit(c, "vote:attendee:"+who, th.Limits.VotePerAttend, "votes from you"); err != nil {
			return err
		}
		if err := s.limit(c, "vote:ip:"+c.IP(), th.Limits.VotePerIP, "votes from this address"); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(c.UserContext(), s.opts.WriteTimeout)
		defer cancel()
		seq, err := th.Service.Vote(ctx, c.Params("event"), c.Params("session"), id, who, up)
		if err != nil {
			return err
		}
		setWritten(c, seq)
		var body api.Vote
		err = s.readQA(c, func(_ *projection.EventState, _ cabildo.Session, qa *cabildo.QA) error {
			q, ok := qa.Root(id)
			if !ok {
				return cabildo.Errorf(cabildo.CodeNotFound, "question %d does not exist in this session", id)
			}
			body = api.Vote{Question: q.ID, Votes: q.Votes, Voted: qa.Voted(q, who), Version: seq}
			return nil
		})
		if err != nil {
			return err
		}
		return writeJSON(c, fiber.StatusOK, fiber.MIMEApplicationJSON, body)
	}
}

func (s *Server) moderationView(c *fiber.Ctx) error {
	var body api.Moderation
	err := s.readQA(c, func(_ *projection.EventState, sess cabildo.Session, qa *cabildo.QA) error {
		body = render.Moderation(c.Params("event"), sess.ID, qa, time.Now())
		return nil
	})
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "private, no-store")
	return writeJSON(c, fiber.StatusOK, fiber.MIMEApplicationJSON, body)
}

type actionIn struct {
	Action cabildo.Action `json:"action"`
	Text   string         `json:"text"`
	Into   int64          `json:"into"`
}

func (s *Server) moderate(c *fiber.Ctx) error {
	var in actionIn
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	id, ok := cabildo.ParseID(c.Params("question"))
	if !ok {
		return cabildo.Errorf(cabildo.CodeNotFound, "question %q does not exist in this session", c.Params("question"))
	}
	var f cabildo.Fields
	switch {
	case !slices.Contains(cabildo.Actions, in.Action):
		f.Add("action", "invalid_enum", "action must be one of approve, reject, pin, unpin, answer, archive, edit, merge")
	case in.Action == cabildo.ActionEdit && in.Text == "":
		f.Add("text", "required", "edit needs the corrected text")
	case in.Action == cabildo.ActionMerge && in.Into <= 0:
		f.Add("into", "required", "merge needs into: the question that takes this one's votes")
	case in.Action != cabildo.ActionEdit && in.Text != "":
		f.Add("text", "not_allowed", "text goes with edit only")
	case in.Action != cabildo.ActionMerge && in.Into != 0:
		f.Add("into", "not_allowed", "into goes with merge only")
	}
	if err := f.Err(); err != nil {
		return err
	}
	return s.moderation(c, cabildo.Moderation{Action: in.Action, Question: id, Text: in.Text, Into: in.Into})
}

type undoIn struct {
	UndoOf uint64 `json:"undo_of"`
}

func (s *Server) undo(c *fiber.Ctx) error {
	var in undoIn
	if len(c.Body()) > 0 {
		if err := decodeBody(c, &in); err != nil {
			return err
		}
	}
	return s.moderation(c, cabildo.Moderation{Action: cabildo.ActionUndo, UndoOf: in.UndoOf})
}

// moderation runs a moderator action and answers with the logged action and every
// question it changed, as they are now.
func (s *Server) moderation(c *fiber.Ctx, m cabildo.Moderation) error {
	res, err := s.write(c, func(ctx context.Context, req schedule.Request) (schedule.Result, error) {
		return s.opts.TownHall.Service.Moderate(ctx, req, c.Params("event"), c.Params("session"), m)
	})
	if err != nil {
		return err
	}
	var body api.ModerationResult
	err = s.readQA(c, func(_ *projection.EventState, _ cabildo.Session, qa *cabildo.QA) error {
		if qa == nil {
			return cabildo.Errorf(cabildo.CodeNotFound, "the action is not on this node yet")
		}
		for _, a := range qa.Actions {
			if a.Version != res.Seq {
				continue
			}
			body = api.ModerationResult{Action: render.Action(a), Questions: []api.ModQuestion{}}
			seen := map[int64]bool{}
			add := func(id int64) {
				if q, ok := qa.Questions[id]; ok && !seen[id] {
					seen[id] = true
					body.Questions = append(body.Questions, render.ModQuestion(q))
				}
			}
			for _, e := range a.Effects {
				add(e.Question)
				if e.FromMerged != e.ToMerged { // a merge or its undo changes the target's votes too
					add(e.FromMerged)
					add(e.ToMerged)
				}
			}
			return nil
		}
		return cabildo.Errorf(cabildo.CodeNotFound, "the action is not on this node yet")
	})
	if err != nil {
		return err
	}
	return writeJSON(c, fiber.StatusOK, fiber.MIMEApplicationJSON, body)
}

type qaIn struct {
	Open      *bool `json:"open"`
	Moderated *bool `json:"moderated"`
}

func (s *Server) configureQA(c *fiber.Ctx) error {
	var in qaIn
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	_, err := s.write(c, func(ctx context.Context, req schedule.Request) (schedule.Result, error) {
		return s.opts.TownHall.Service.Configure(ctx, req, c.Params("event"), c.Params("session"),
			cabildo.QASettings{Open: in.Open, Moderated: in.Moderated})
	})
	if err != nil {
		return err
	}
	var body api.QASettings
	err = s.readQA(c, func(_ *projection.EventState, sess cabildo.Session, qa *cabildo.QA) error {
		body = api.QASettings{Session: sess.ID, Moderated: true}
		if qa != nil {
			body.Open, body.Moderated, body.Version = qa.Open, qa.Moderated, qa.Version
		}
		return nil
	})
	if err != nil {
		return err
	}
	return writeJSON(c, fiber.StatusOK, fiber.MIMEApplicationJSON, body)
}

// validName reports whether a display name fits.
func validName(s string) bool {
	return utf8.ValidString(s) && utf8.RuneCountInString(s) <= cabildo.MaxDisplayName
}
