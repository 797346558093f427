package httpapi

import (
	"context"
	"fmt"
	"sort"

	"github.com/gofiber/fiber/v2"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/projection"
	"github.com/cabildo/cabildo/internal/render"
	"github.com/cabildo/cabildo/internal/schedule"
	"github.com/cabildo/cabildo/pkg/api"
)

// Pages of announcements: an event can post thousands, and an app on mobile data wants
// the latest few, or those since it last looked, not all of them at once.
const (
	DefaultAnnouncementPage = 50
	MaxAnnouncementPage     = 200
)

// announcementPage is one page's query: after since, or before before (ids, which are
// versions), at most limit.
type announcementPage struct {
	since, before uint64
	forward       bool // since was given (since=0 is "from the start")
	limit         int
}

func parseAnnouncementPage(c *fiber.Ctx) (announcementPage, error) {
	p := announcementPage{limit: DefaultAnnouncementPage}
	var f cabildo.Fields
	if raw := c.Query("since"); raw != "" {
		v, ok := cabildo.ParseVersion(raw)
		if !ok {
			f.Add("since", "invalid_version", "since must be a version: a whole number ≥ 0")
		}
		p.since, p.forward = v, true
	}
	if raw := c.Query("before"); raw != "" {
		v, ok := cabildo.ParseID(raw)
		if !ok {
			f.Add("before", "invalid_version", "before must be an announcement id: a whole number ≥ 1")
		}
		p.before = uint64(v)
	}
	if c.Query("since") != "" && c.Query("before") != "" {
		f.Add("before", "conflict", "page forwards with since or backwards with before, not both")
	}
	if raw := c.Query("limit"); raw != "" {
		n, ok := cabildo.ParseID(raw)
		if !ok || n > MaxAnnouncementPage {
			f.Add("limit", "out_of_range", "limit must be between 1 and %d", MaxAnnouncementPage)
		}
		p.limit = int(n)
	}
	if len(f) > 0 {
		return p, &cabildo.Error{Code: cabildo.CodeInvalidRequest, Message: f[0].Message, Fields: f}
	}
	return p, nil
}

// listAnnouncements answers one page, oldest first within it: by default the latest
// limit announcements; with since, the first limit after it (catching up); with before,
// the limit before it (scrolling back). next and prev link the neighbouring pages.
func (s *Server) listAnnouncements(c *fiber.Ctx) error {
	p, err := parseAnnouncementPage(c)
	if err != nil {
		return err
	}
	variant := fmt.Sprintf("announcements:%t:%d:%d:%d", p.forward, p.since, p.before, p.limit)
	return s.readEvent(c, variant, func(l render.Localizer) (validators, func() any, error) {
		version := max(l.St.AnnouncementsVersion, l.St.Created)
		var modified = l.St.Updated
		all := l.St.Announcements
		if n := len(all); n > 0 {
			modified = all[n-1].At
		}
		return validators{etag: etag(version, l.Lang, variant), modified: modified}, func() any {
			// Announcements are in log order, so ids ascend.
			after := func(id uint64) int {
				return sort.Search(len(all), func(i int) bool { return uint64(all[i].ID) > id })
			}
			lo, hi := max(len(all)-p.limit, 0), len(all)
			switch {
			case p.forward:
				lo = after(p.since)
				hi = min(lo+p.limit, len(all))
			case p.before > 0:
				hi = after(p.before - 1)
				lo = max(hi-p.limit, 0)
			}
			list := api.AnnouncementList{Event: l.St.Programme.Event.ID, Version: version, Lang: string(l.Lang),
				Announcements: make([]api.Announcement, 0, hi-lo)}
			for _, a := range all[lo:hi] {
				list.Announcements = append(list.Announcements, l.Announcement(a))
			}
			base := fmt.Sprintf("/v1/events/%s/announcements?lang=%s&limit=%d", list.Event, l.Lang, p.limit)
			if hi < len(all) {
				list.Next = fmt.Sprintf("%s&since=%d", base, all[hi-1].ID)
			}
			if lo > 0 && lo < len(all) {
				list.Prev = fmt.Sprintf("%s&before=%d", base, all[lo].ID)
			}
			return list
		}, nil
	})
}

type announcementIn struct {
	Title    cabildo.Text     `json:"title"`
	Body     cabildo.Text     `json:"body"`
	Priority cabildo.Priority `json:"priority"`
	Session  int64            `json:"session"`
}

func (s *Server) postAnnouncement(c *fiber.Ctx) error {
	var in announcementIn
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	res, err := s.write(c, func(ctx context.Context, req schedule.Request) (schedule.Result, error) {
		return s.opts.Schedule.PostAnnouncement(ctx, req, c.Params("event"),
			cabildo.Announcement{Title: in.Title, Body: in.Body, Priority: in.Priority, Session: in.Session})
	})
	if err != nil {
		return err
	}
	var (
		body  adminAnnouncement
		found bool
	)
	s.opts.Store.Read(c.Params("event"), func(st *projection.EventState) {
		for _, a := range st.Announcements {
			if uint64(a.ID) == res.Seq {
				body, found = adminAnnouncement{Announcement: a, Version: res.Seq}, true
			}
		}
	})
	if !found {
		return cabildo.Errorf(cabildo.CodeNotFound, "the announcement is not on this node yet")
	}
	c.Set(fiber.HeaderLocation, fmt.Sprintf("/v1/events/%s/announcements#%d", c.Params("event"), body.ID))
	return writeJSON(c, fiber.StatusCreated, fiber.MIMEApplicationJSON, body)
}
