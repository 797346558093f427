package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/gofiber/fiber/v2"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/projection"
	"github.com/cabildo/cabildo/internal/schedule"
	"github.com/cabildo/cabildo/internal/token"
)

const claimsKey = "cabildo.claims"

// requireRole admits a request whose bearer token is valid, for the event in the path and
// with one of the roles (each token type is its own: an attendee token never passes for a
// moderator's). The token travels in the Authorization header only.
func (s *Server) requireRole(roles ...token.Role) fiber.Handler {
	return func(c *fiber.Ctx) error {
		// Browsers attach no bearer token by themselves, but a cross-site form or script
		// has no business writing here either.
		if c.Method() != fiber.MethodGet && c.Method() != fiber.MethodHead && c.Get("Sec-Fetch-Site") == "cross-site" {
			return cabildo.Errorf(cabildo.CodeForbidden, "cross-site requests may not change anything here")
		}
		auth := c.Get(fiber.HeaderAuthorization)
		raw, ok := strings.CutPrefix(auth, "Bearer ")
		if !ok || strings.TrimSpace(raw) == "" {
			return cabildo.Errorf(cabildo.CodeUnauthorized, "send %s token as Authorization: Bearer <token>", roleNames(roles))
		}
		claims, err := s.opts.Tokens.Verify(strings.TrimSpace(raw))
		if err != nil {
			return err
		}
		if claims.Event != c.Params("event") || !slices.Contains(roles, claims.Type) {
			return cabildo.Errorf(cabildo.CodeForbidden, "this needs %s token for this event", roleNames(roles))
		}
		c.Locals(claimsKey, claims)
		return c.Next()
	}
}

func roleNames(roles []token.Role) string {
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = string(r)
	}
	article := "a"
	if len(names) > 0 && strings.ContainsAny(names[0][:1], "aeiou") {
		article = "an"
	}
	return article + " " + strings.Join(names, " or ")
}

// request builds the use-case request: who asks, and a hash of exactly what they asked,
// so a retry with the same Idempotency-Key is recognised and a different request with a
// reused key is refused.
func request(c *fiber.Ctx) (schedule.Request, error) {
	claims, _ := c.Locals(claimsKey).(token.Claims)
	key := c.Get("Idempotency-Key")
	if len(key) > 255 || strings.ContainsFunc(key, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		return schedule.Request{}, &cabildo.Error{Code: cabildo.CodeInvalidRequest,
			Message: "Idempotency-Key must be 1-255 visible ASCII characters",
			Fields:  []cabildo.FieldError{{Field: "Idempotency-Key", Code: "invalid_header", Message: "1-255 visible ASCII characters"}}}
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n%s\n", c.Method(), c.Path(), c.Request().URI().QueryString(), c.Get(fiber.HeaderIfMatch))
	h.Write(c.Body())
	actor := string(claims.Type) + ":" + claims.Subject
	return schedule.Request{Actor: actor, IdempotencyKey: key, Hash: hex.EncodeToString(h.Sum(nil))[:32]}, nil
}

// write runs one write use case with who asks (and the request's idempotency hash) and
// the write deadline.
func (s *Server) write(c *fiber.Ctx, run func(context.Context, schedule.Request) (schedule.Result, error)) (schedule.Result, error) {
	req, err := request(c)
	if err != nil {
		return schedule.Result{}, err
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), s.opts.WriteTimeout)
	defer cancel()
	res, err := run(ctx, req)
	if err == nil {
		setWritten(c, res.Seq)
	}
	return res, err
}

// HeaderWriteVersion names the log position of a write in its answer. The body shows the
// state when answered, which may already include later writes: without this a client
// could not tell its own write from the one after it (two concurrent PATCHes were both
// answered with the second's version).
const HeaderWriteVersion = "Cabildo-Write-Version"

func setWritten(c *fiber.Ctx, seq uint64) {
	c.Set(HeaderWriteVersion, strconv.FormatUint(seq, 10))
}

func forceParam(c *fiber.Ctx) (bool, error) {
	switch c.Query("force") {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, &cabildo.Error{Code: cabildo.CodeInvalidRequest, Message: "force must be true or false",
		Fields: []cabildo.FieldError{{Field: "force", Code: "invalid_bool", Message: "must be true or false"}}}
}

// ifMatch reads If-Match: the session ETag the client saw ("123" or "123-es").
func ifMatch(c *fiber.Ctx) (*uint64, error) {
	h := strings.TrimSpace(c.Get(fiber.HeaderIfMatch))
	if h == "" {
		return nil, nil
	}
	c.Locals(ifMatchKey, true)
	v := strings.Trim(strings.TrimPrefix(h, "W/"), `"`)
	v, _, _ = strings.Cut(v, "-")
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return nil, &cabildo.Error{Code: cabildo.CodeInvalidRequest, Message: "If-Match must be a session ETag such as \"123\"",
			Fields: []cabildo.FieldError{{Field: "If-Match", Code: "invalid_header", Message: "a session ETag"}}}
	}
	return &n, nil
}

type eventIn struct {
	Name        cabildo.Text  `json:"name"`
	Description cabildo.Text  `json:"description"`
	TimeZone    string        `json:"time_zone"`
	Venue       cabildo.Text  `json:"venue"`
	City        string        `json:"city"`
	Country     string        `json:"country"`
	URL         string        `json:"url"`
	Days        []cabildo.Day `json:"days"`
}

func (s *Server) putEvent(c *fiber.Ctx) error {
	var in eventIn
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	ev := cabildo.Event{ID: c.Params("event"), Name: in.Name, Description: in.Description, TimeZone: in.TimeZone,
		Venue: in.Venue, City: in.City, Country: in.Country, URL: in.URL, Days: in.Days}
	return s.put(c, func(ctx context.Context, req schedule.Request) (schedule.Result, error) {
		return s.opts.Schedule.PutEvent(ctx, req, ev)
	}, func(st *projection.EventState) any {
		return adminEvent{Event: st.Programme.Event, Version: st.EventVersion}
	})
}

type roomIn struct {
	Name      cabildo.Text `json:"name"`
	Location  cabildo.Text `json:"location"`
	Capacity  int          `json:"capacity"`
	Streamed  bool         `json:"streamed"`
	StreamURL string       `json:"stream_url"`
}

func (s *Server) putRoom(c *fiber.Ctx) error {
	var in roomIn
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	r := cabildo.Room{ID: c.Params("room"), Name: in.Name, Location: in.Location, Capacity: in.Capacity,
		Streamed: in.Streamed, StreamURL: in.StreamURL}
	return s.put(c, func(ctx context.Context, req schedule.Request) (schedule.Result, error) {
		return s.opts.Schedule.PutRoom(ctx, req, c.Params("event"), r)
	}, func(st *projection.EventState) any {
		return adminRoom{Room: st.Programme.Rooms[r.ID], Version: st.Rooms[r.ID].Version}
	})
}

type trackIn struct {
	Name  cabildo.Text `json:"name"`
	Color string       `json:"color"`
}

func (s *Server) putTrack(c *fiber.Ctx) error {
	var in trackIn
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	t := cabildo.Track{ID: c.Params("track"), Name: in.Name, Color: in.Color}
	return s.put(c, func(ctx context.Context, req schedule.Request) (schedule.Result, error) {
		return s.opts.Schedule.PutTrack(ctx, req, c.Params("event"), t)
	}, func(st *projection.EventState) any {
		return adminTrack{Track: st.Programme.Tracks[t.ID], Version: st.Tracks[t.ID].Version}
	})
}

type speakerIn struct {
	Name        string       `json:"name"`
	Affiliation cabildo.Text `json:"affiliation"`
	Bio         cabildo.Text `json:"bio"`
	Country     string       `json:"country"`
}

func (s *Server) putSpeaker(c *fiber.Ctx) error {
	var in speakerIn
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	sp := cabildo.Speaker{ID: c.Params("speaker"), Name: in.Name, Affiliation: in.Affiliation, Bio: in.Bio, Country: in.Country}
	return s.put(c, func(ctx context.Context, req schedule.Request) (schedule.Result, error) {
		return s.opts.Schedule.PutSpeaker(ctx, req, c.Params("event"), sp)
	}, func(st *projection.EventState) any {
		return adminSpeaker{Speaker: st.Programme.Speakers[sp.ID], Version: st.Speakers[sp.ID].Version}
	})
}

// put runs a create-or-replace use case and answers 201 or 200 with what the projection
// now holds.
func (s *Server) put(c *fiber.Ctx, run func(context.Context, schedule.Request) (schedule.Result, error), render func(*projection.EventState) any) error {
	res, err := s.write(c, run)
	if err != nil {
		return err
	}
	status := fiber.StatusOK
	if res.Created {
		status = fiber.StatusCreated
	}
	var body any
	s.opts.Store.Read(c.Params("event"), func(st *projection.EventState) { body = render(st) })
	return writeJSON(c, status, fiber.MIMEApplicationJSON, body)
}

type sessionIn struct {
	GUID           string              `json:"guid"`
	Title          cabildo.Text        `json:"title"`
	Abstract       cabildo.Text        `json:"abstract"`
	Kind           cabildo.SessionKind `json:"kind"`
	Language       cabildo.Lang        `json:"language"`
	Interpretation []cabildo.Lang      `json:"interpretation"`
	Room           string              `json:"room"`
	Track          string              `json:"track"`
	Start          string              `json:"start"`
	End            string              `json:"end"`
	Speakers       []string            `json:"speakers"`
	Tags           []string            `json:"tags"`
}

func (s *Server) createSession(c *fiber.Ctx) error {
	var in sessionIn
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	force, err := forceParam(c)
	if err != nil {
		return err
	}
	var f cabildo.Fields
	ss := cabildo.Session{GUID: in.GUID, Title: in.Title, Abstract: in.Abstract, Kind: in.Kind, Language: in.Language,
		Interpretation: in.Interpretation, Room: in.Room, Track: in.Track, Speakers: in.Speakers, Tags: in.Tags,
		Start: parseTime(&f, "start", in.Start), End: parseTime(&f, "end", in.End)}
	if err := f.Err(); err != nil {
		return err
	}
	res, err := s.write(c, func(ctx context.Context, req schedule.Request) (schedule.Result, error) {
		return s.opts.Schedule.CreateSession(ctx, req, c.Params("event"), ss, force)
	})
	if err != nil {
		return err
	}
	return s.answerSession(c, fiber.StatusCreated, res)
}

// answerSession answers a session write with the session as this node now holds it.
func (s *Server) answerSession(c *fiber.Ctx, status int, res schedule.Result) error {
	event := c.Params("event")
	guid := res.Subject[strings.LastIndexByte(res.Subject, '.')+1:]
	var (
		body  adminSession
		found bool
	)
	s.opts.Store.Read(event, func(st *projection.EventState) {
		var ss cabildo.Session
		var meta projection.Meta
		if ss, meta, found = st.Session(guid); found {
			body = adminSession{Session: ss, Day: st.Programme.Day(ss), Version: meta.Version}
		}
	})
	if !found {
		return cabildo.Errorf(cabildo.CodeNotFound, "the session no longer exists")
	}
	c.Set(fiber.HeaderETag, fmt.Sprintf(`"%d"`, body.Version))
	if status == fiber.StatusCreated {
		c.Set(fiber.HeaderLocation, fmt.Sprintf("/v1/events/%s/sessions/%d", event, body.ID))
	}
	return writeJSON(c, status, fiber.MIMEApplicationJSON, body)
}

// textPatchIn only checks a patched text's shape (es/en strings or null); textPatch reads
// which languages it sets.
type textPatchIn struct {
	ES *string `json:"es"`
	EN *string `json:"en"`
}

type sessionPatch struct {
	Title          *textPatchIn         `json:"title"`
	Abstract       *textPatchIn         `json:"abstract"`
	Kind           *cabildo.SessionKind `json:"kind"`
	Language       *cabildo.Lang        `json:"language"`
	Interpretation *[]cabildo.Lang      `json:"interpretation"`
	Room           *string              `json:"room"`
	Track          *string              `json:"track"`
	Start          *string              `json:"start"`
	End            *string              `json:"end"`
	Speakers       *[]string            `json:"speakers"`
	Tags           *[]string            `json:"tags"`
	Reason         *cabildo.Reason      `json:"reason"`
}

// patchSession applies a JSON merge patch (RFC 7396): absent fields stay, present ones
// replace, null removes an optional field, and bilingual texts merge per language, so
// {"title": {"en": "…"}} keeps the Spanish title.
func (s *Server) patchSession(c *fiber.Ctx) error {
	var p sessionPatch
	if err := decodeBody(c, &p, "application/merge-patch+json"); err != nil {
		return err
	}
	// Which members are present, and which are null, is what a merge patch means; the
	// strict decode above has already refused every name the contract does not spell.
	var present map[string]jsontext.Value
	if err := decodeStrict(c.Body(), &present); err != nil {
		return err
	}
	var f cabildo.Fields
	var start, end time.Time
	if p.Start != nil {
		start = parseTime(&f, "start", *p.Start)
	}
	if p.End != nil {
		end = parseTime(&f, "end", *p.End)
	}
	title, err := textPatch(present, "title")
	if err != nil {
		return err
	}
	abstract, err := textPatch(present, "abstract")
	if err != nil {
		return err
	}
	if err := f.Err(); err != nil {
		return err
	}
	return s.changeSession(c, schedule.Change{Type: cabildo.RecordSessionUpdated, Reason: p.Reason,
		Patch: func(ss *cabildo.Session) {
			title(&ss.Title)
			abstract(&ss.Abstract)
			setIf(&ss.Kind, p.Kind)
			setIf(&ss.Language, p.Language)
			setIf(&ss.Room, p.Room)
			setOrClear(&ss.Interpretation, p.Interpretation, present, "interpretation")
			setOrClear(&ss.Track, p.Track, present, "track")
			setOrClear(&ss.Speakers, p.Speakers, present, "speakers")
			setOrClear(&ss.Tags, p.Tags, present, "tags")
			if p.Start != nil {
				ss.Start = start
			}
			if p.End != nil {
				ss.End = end
			}
		}})
}

// textPatch returns how a merge patch changes one bilingual text: each language present
// is set, or removed when null; a null text removes both (validation then refuses it
// where the text is required).
func textPatch(present map[string]jsontext.Value, key string) (func(*cabildo.Text), error) {
	raw, ok := present[key]
	if !ok {
		return func(*cabildo.Text) {}, nil
	}
	if raw.Kind() == 'n' {
		return func(t *cabildo.Text) { *t = cabildo.Text{} }, nil
	}
	// The patch's languages were checked against the contract when the whole body was
	// decoded; here only which are present, and which are null, is read.
	var langs map[string]*string
	if err := decodeStrict(raw, &langs); err != nil {
		return nil, err
	}
	return func(t *cabildo.Text) {
		for _, l := range [...]struct {
			dst  *string
			lang cabildo.Lang
		}{{&t.ES, cabildo.ES}, {&t.EN, cabildo.EN}} {
			if v, ok := langs[string(l.lang)]; ok {
				*l.dst = ""
				if v != nil {
					*l.dst = *v
				}
			}
		}
	}, nil
}

func setOrClear[T any](dst *T, v *T, present map[string]jsontext.Value, key string) {
	if v != nil {
		*dst = *v
	} else if raw, ok := present[key]; ok && raw.Kind() == 'n' {
		var zero T
		*dst = zero
	}
}

func setIf[T any](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

type reasonIn struct {
	Reason *cabildo.Reason `json:"reason"`
}

func (s *Server) cancelSession(c *fiber.Ctx) error {
	var in reasonIn
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	if in.Reason == nil {
		var f cabildo.Fields
		f.Add("reason", "required", "say why the session is cancelled: reason.code, optionally reason.text")
		return f.Err()
	}
	return s.changeSession(c, schedule.Change{Type: cabildo.RecordSessionCancelled, Reason: in.Reason})
}

func (s *Server) reinstateSession(c *fiber.Ctx) error {
	var in reasonIn
	if len(c.Body()) > 0 {
		if err := decodeBody(c, &in); err != nil {
			return err
		}
	}
	return s.changeSession(c, schedule.Change{Type: cabildo.RecordSessionReinstated, Reason: in.Reason})
}

func (s *Server) deleteSession(c *fiber.Ctx) error {
	match, err := ifMatch(c)
	if err != nil {
		return err
	}
	_, err = s.write(c, func(ctx context.Context, req schedule.Request) (schedule.Result, error) {
		return s.opts.Schedule.ChangeSession(ctx, req, c.Params("event"), schedule.Change{
			Type: cabildo.RecordSessionDeleted, Ref: c.Params("session"), IfMatch: match})
	})
	if err != nil {
		return err
	}
	return c.SendStatus(fiber.StatusNoContent)
}

func (s *Server) changeSession(c *fiber.Ctx, ch schedule.Change) error {
	var err error
	if ch.IfMatch, err = ifMatch(c); err != nil {
		return err
	}
	if ch.Force, err = forceParam(c); err != nil {
		return err
	}
	ch.Ref = c.Params("session")
	res, err := s.write(c, func(ctx context.Context, req schedule.Request) (schedule.Result, error) {
		return s.opts.Schedule.ChangeSession(ctx, req, c.Params("event"), ch)
	})
	if err != nil {
		return err
	}
	return s.answerSession(c, fiber.StatusOK, res)
}
