package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/projection"
	"github.com/cabildo/cabildo/internal/render"
	"github.com/cabildo/cabildo/internal/schedule"
	"github.com/cabildo/cabildo/pkg/api"
)

// pickLang chooses the response language: ?lang= when given (and valid), else the first
// of es/en the Accept-Language header prefers, else Spanish, the reference event's first
// language.
func pickLang(c *fiber.Ctx) (cabildo.Lang, error) {
	return langOf(c.Request().URI().QueryArgs().Peek("lang"), c.Request().Header.Peek(fiber.HeaderAcceptLanguage))
}

// langOf is pickLang on the raw ?lang= and Accept-Language.
func langOf(query, acceptLanguage []byte) (cabildo.Lang, error) {
	if len(query) > 0 {
		l, ok := cabildo.ParseLang(string(query))
		if !ok || len(query) > 8 {
			return "", &cabildo.Error{Code: cabildo.CodeInvalidRequest, Message: "lang must be es or en",
				Fields: []cabildo.FieldError{{Field: "lang", Code: "invalid_enum", Message: "must be es or en"}}}
		}
		return l, nil
	}
	if len(acceptLanguage) == 0 {
		return cabildo.ES, nil
	}
	best, bestQ := cabildo.ES, -1.0
	for part := range strings.SplitSeq(string(acceptLanguage), ",") {
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		l, ok := cabildo.ParseLang(tag)
		if !ok {
			continue
		}
		q := 1.0
		if v, found := strings.CutPrefix(strings.TrimSpace(params), "q="); found {
			if f, err := strconv.ParseFloat(v, 64); err == nil {
				q = f
			}
		}
		if q > bestQ && q > 0 {
			best, bestQ = l, q
		}
	}
	return best, nil
}

// validators are what a conditional GET compares.
type validators struct {
	etag     string
	modified time.Time
}

// notModified sets the caching headers and reports whether the client's copy is current:
// If-None-Match wins over If-Modified-Since, as RFC 9110 says.
func notModified(c *fiber.Ctx, v validators, lang cabildo.Lang) bool {
	c.Set(fiber.HeaderETag, v.etag)
	if !v.modified.IsZero() {
		c.Set(fiber.HeaderLastModified, v.modified.UTC().Format(http.TimeFormat))
	}
	c.Set(fiber.HeaderCacheControl, "public, max-age=0, must-revalidate")
	c.Set(fiber.HeaderVary, "Accept-Language")
	c.Set(fiber.HeaderContentLanguage, string(lang))
	if inm := c.Get(fiber.HeaderIfNoneMatch); inm != "" {
		for _, tag := range strings.Split(inm, ",") {
			tag = strings.TrimPrefix(strings.TrimSpace(tag), "W/")
			if tag == "*" || tag == v.etag {
				return true
			}
		}
		return false
	}
	if ims := c.Get(fiber.HeaderIfModifiedSince); ims != "" && !v.modified.IsZero() {
		if t, err := http.ParseTime(ims); err == nil && !v.modified.Truncate(time.Second).After(t) {
			return true
		}
	}
	return false
}

func etag(version uint64, lang cabildo.Lang, variant string) string {
	if variant == "" {
		return fmt.Sprintf(`"%d-%s"`, version, lang)
	}
	h := fnv.New64a()
	h.Write([]byte(variant))
	return fmt.Sprintf(`"%d-%s-%x"`, version, lang, h.Sum64())
}

func notFoundEvent(event string) error {
	return cabildo.Errorf(cabildo.CodeNotFound, "event %q does not exist", event)
}

// readEvent runs a public read of one event. Its bytes come from this node's renditions
// when one is current (the event has not changed since); otherwise the read is rendered
// under the projection's read lock, encoded outside it, and kept for the next readers.
// variant names the resource within the event (with its query); ETags default to
// "<version>-<lang>-<hash of variant>".
func (s *Server) readEvent(c *fiber.Ctx, variant string, read func(l render.Localizer) (validators, func() any, error)) error {
	return s.serveRead(c, variant, false, read)
}

// errRenderAbandoned is what readers waiting for a rendition get when its render panicked.
var errRenderAbandoned = errors.New("httpapi: rendering was abandoned")

// serveRead is readEvent; shared also looks in, and stores into, the node's RenderCache
// (Redis when configured), so that one node's rendering serves every node.
func (s *Server) serveRead(c *fiber.Ctx, variant string, shared bool, read func(l render.Localizer) (validators, func() any, error)) error {
	lang, err := pickLang(c)
	if err != nil {
		return err
	}
	event := c.Params("event")
	k := renditionKey{event: event, variant: variant, lang: lang}
	for attempt := 0; ; attempt++ {
		useShared := shared && attempt == 0
		var (
			r       *rendition
			owner   bool
			value   any
			renderF func() any
			readErr error
		)
		found := s.opts.Store.Read(event, func(st *projection.EventState) {
			stp := stampOf(st)
			if r = s.reads.current(k, stp); r != nil {
				return
			}
			var v validators
			v, renderF, readErr = read(render.New(st, lang))
			if readErr != nil {
				return
			}
			if v.etag == "" {
				v.etag = etag(st.Version, lang, variant)
			}
			r, owner = s.reads.claim(newRendition(k, stp, v))
			if owner && !useShared {
				defer s.abandonOnPanic(r)
				value = renderF()
			}
		})
		switch {
		case !found:
			return notFoundEvent(event)
		case readErr != nil:
			return readErr
		}
		if owner {
			if s.renderOwned(c, r, useShared, value, renderF) {
				continue
			}
		} else {
			<-r.ready
			if r.retry {
				continue
			}
		}
		if r.err != nil {
			return r.err
		}
		return s.sendRendition(c, r)
	}
}

// abandonOnPanic wakes the readers waiting for r if its render panicked; the panic goes on.
func (s *Server) abandonOnPanic(r *rendition) {
	if p := recover(); p != nil {
		s.reads.finish(r, nil, errRenderAbandoned)
		panic(p)
	}
}

// renderOwned produces the body of the rendition this request claimed: from the shared
// cache, or rendered (value, or renderF under the read lock when value was left for
// later) and encoded. It reports whether the event changed meanwhile, so the read must
// start again.
func (s *Server) renderOwned(c *fiber.Ctx, r *rendition, shared bool, value any, renderF func() any) (retry bool) {
	done := false
	defer func() {
		if !done {
			s.reads.finish(r, nil, errRenderAbandoned)
		}
	}()
	var key string
	if shared {
		key = fmt.Sprintf("%s:%s:%d:%s", r.key.variant, r.key.event, r.stamp.version, r.key.lang)
		if b, ok, err := s.opts.Cache.GetRendered(c.UserContext(), key); err == nil && ok {
			done = true
			s.reads.finish(r, b, nil)
			return false
		}
		changed := false
		s.opts.Store.Read(r.key.event, func(st *projection.EventState) {
			if stampOf(st) != r.stamp {
				changed = true
				return
			}
			value = renderF()
		})
		if changed {
			done = true
			r.retry = true
			s.reads.finish(r, nil, errRenderAbandoned)
			return true
		}
	}
	body, err := json.Marshal(value)
	if err == nil && shared {
		if perr := s.opts.Cache.PutRendered(c.UserContext(), key, body, time.Hour); perr != nil {
			s.log.Debug("render cache put failed", "err", perr)
		}
	}
	done = true
	s.reads.finish(r, body, err)
	return false
}

func eventValidators(st *projection.EventState) validators {
	return validators{modified: st.Updated}
}

func (s *Server) listEvents(c *fiber.Ctx) error {
	lang, err := pickLang(c)
	if err != nil {
		return err
	}
	var (
		list     []api.EventSummary
		modified time.Time
	)
	seq := s.opts.Store.Each(func(st *projection.EventState) {
		list = append(list, render.Summary(st, lang))
		if st.Updated.After(modified) {
			modified = st.Updated
		}
	})
	slices.SortFunc(list, func(a, b api.EventSummary) int { return strings.Compare(a.ID, b.ID) })
	if list == nil {
		list = []api.EventSummary{}
	}
	if notModified(c, validators{etag: etag(seq, lang, ""), modified: modified}, lang) {
		return c.SendStatus(fiber.StatusNotModified)
	}
	return writeJSON(c, fiber.StatusOK, fiber.MIMEApplicationJSON, api.EventList{Events: list, Version: seq})
}

func (s *Server) getEvent(c *fiber.Ctx) error {
	return s.readEvent(c, "event", func(l render.Localizer) (validators, func() any, error) {
		return eventValidators(l.St), func() any { return l.Event() }, nil
	})
}

// getSchedule answers the whole programme. One version renders once per language on
// each node, and once in all when the nodes share a Redis cache.
func (s *Server) getSchedule(c *fiber.Ctx) error {
	return s.serveRead(c, scheduleVariant, true, func(l render.Localizer) (validators, func() any, error) {
		return eventValidators(l.St), func() any { return l.Schedule() }, nil
	})
}

// sessionFilter is the query of GET /sessions.
type sessionFilter struct {
	day, room, track string
	kind             cabildo.SessionKind
	language         cabildo.Lang
	status           cabildo.Status
}

func parseSessionFilter(c *fiber.Ctx) (sessionFilter, error) {
	var f cabildo.Fields
	sf := sessionFilter{day: c.Query("day"), room: c.Query("room"), track: c.Query("track"),
		kind: cabildo.SessionKind(c.Query("kind")), status: cabildo.Status(c.Query("status"))}
	if sf.day != "" {
		if _, err := time.Parse(time.DateOnly, sf.day); err != nil {
			f.Add("day", "invalid_date", "day must be a date such as 2027-04-14")
		}
	}
	if sf.kind != "" && !slices.Contains(cabildo.SessionKinds, sf.kind) {
		f.Add("kind", "invalid_enum", "kind must be one of the documented session kinds")
	}
	if q := c.Query("language"); q != "" {
		l, ok := cabildo.ParseLang(q)
		if !ok {
			f.Add("language", "invalid_enum", "language must be es or en")
		}
		sf.language = l
	}
	if sf.status != "" && sf.status != cabildo.StatusScheduled && sf.status != cabildo.StatusCancelled {
		f.Add("status", "invalid_enum", "status must be scheduled or cancelled")
	}
	if err := f.Err(); err != nil {
		e := err.(*cabildo.Error)
		e.Code = cabildo.CodeInvalidRequest
		return sf, e
	}
	return sf, nil
}

func (sf sessionFilter) match(p *cabildo.Programme, s cabildo.Session) bool {
	return (sf.day == "" || p.Day(s) == sf.day) && (sf.room == "" || s.Room == sf.room) &&
		(sf.track == "" || s.Track == sf.track) && (sf.kind == "" || s.Kind == sf.kind) &&
		(sf.language == "" || s.Speaks(sf.language)) && (sf.status == "" || s.Status == sf.status)
}

func (s *Server) listSessions(c *fiber.Ctx) error {
	sf, err := parseSessionFilter(c)
	if err != nil {
		return err
	}
	variant := "sessions?" + string(c.Request().URI().QueryString())
	return s.readEvent(c, variant, func(l render.Localizer) (validators, func() any, error) {
		return eventValidators(l.St), func() any {
			out := []api.Session{}
			for _, ss := range l.St.Programme.SortedSessions() {
				if sf.match(l.St.Programme, ss) {
					out = append(out, l.Session(ss))
				}
			}
			return api.SessionList{Event: l.St.Programme.Event.ID, Version: l.St.Version, Lang: string(l.Lang), Sessions: out}
		}, nil
	})
}

func (s *Server) getSession(c *fiber.Ctx) error {
	ref := c.Params("session")
	return s.readEvent(c, "session:"+ref, func(l render.Localizer) (validators, func() any, error) {
		ss, meta, err := schedule.FindSession(l.St, ref)
		if err != nil {
			return validators{}, nil, err
		}
		return validators{etag: etag(meta.Version, l.Lang, ""), modified: meta.Updated},
			func() any { return l.Session(ss) }, nil
	})
}

func (s *Server) listRooms(c *fiber.Ctx) error {
	return s.readEvent(c, "rooms", func(l render.Localizer) (validators, func() any, error) {
		return eventValidators(l.St), func() any {
			return api.RoomList{Event: l.St.Programme.Event.ID, Version: l.St.Version, Lang: string(l.Lang),
				Rooms: render.All(l.St.Programme.Rooms, l.Room)}
		}, nil
	})
}

func (s *Server) getRoom(c *fiber.Ctx) error {
	id := c.Params("room")
	return s.readEvent(c, "room:"+id, func(l render.Localizer) (validators, func() any, error) {
		r, ok := l.St.Programme.Rooms[id]
		if !ok {
			return validators{}, nil, cabildo.Errorf(cabildo.CodeNotFound, "room %q does not exist in this event", id)
		}
		m := l.St.Rooms[id]
		return validators{etag: etag(m.Version, l.Lang, "room"), modified: m.Updated}, func() any { return l.Room(r) }, nil
	})
}

func (s *Server) listTracks(c *fiber.Ctx) error {
	return s.readEvent(c, "tracks", func(l render.Localizer) (validators, func() any, error) {
		return eventValidators(l.St), func() any {
			return api.TrackList{Event: l.St.Programme.Event.ID, Version: l.St.Version, Lang: string(l.Lang),
				Tracks: render.All(l.St.Programme.Tracks, l.Track)}
		}, nil
	})
}

func (s *Server) listSpeakers(c *fiber.Ctx) error {
	return s.readEvent(c, "speakers", func(l render.Localizer) (validators, func() any, error) {
		return eventValidators(l.St), func() any {
			return api.SpeakerList{Event: l.St.Programme.Event.ID, Version: l.St.Version, Lang: string(l.Lang),
				Speakers: render.All(l.St.Programme.Speakers, l.Speaker)}
		}, nil
	})
}

func (s *Server) getSpeaker(c *fiber.Ctx) error {
	id := c.Params("speaker")
	return s.readEvent(c, "speaker:"+id, func(l render.Localizer) (validators, func() any, error) {
		sp, ok := l.St.Programme.Speakers[id]
		if !ok {
			return validators{}, nil, cabildo.Errorf(cabildo.CodeNotFound, "speaker %q does not exist in this event", id)
		}
		m := l.St.Speakers[id]
		return validators{etag: etag(m.Version, l.Lang, "speaker"), modified: m.Updated}, func() any { return l.Speaker(sp) }, nil
	})
}

func (s *Server) listChanges(c *fiber.Ctx) error {
	raw := c.Query("since")
	since, ok := cabildo.ParseVersion(raw)
	if !ok {
		return &cabildo.Error{Code: cabildo.CodeInvalidRequest, Message: "since must be a version: a whole number ≥ 0",
			Fields: []cabildo.FieldError{{Field: "since", Code: "invalid_version", Message: "must be a whole number ≥ 0"}}}
	}
	// A client may have seen a version from another node that this one has not applied
	// yet: give the projection a moment before calling the version unknown.
	s.waitForVersion(c, since)
	return s.readEvent(c, "changes:"+raw, func(l render.Localizer) (validators, func() any, error) {
		changes, err := l.St.ChangesSince(since)
		if err != nil {
			return validators{}, nil, err
		}
		return eventValidators(l.St), func() any {
			out := make([]api.Change, 0, len(changes))
			for _, ch := range changes {
				out = append(out, l.Change(ch))
			}
			return api.ChangeList{Event: l.St.Programme.Event.ID, Since: since, Version: l.St.Version,
				Lang: string(l.Lang), Changes: out}
		}, nil
	})
}
