package httpapi

import (
	"context"
	"fmt"

	"github.com/gofiber/fiber/v2"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/projection"
	"github.com/cabildo/cabildo/internal/render"
	"github.com/cabildo/cabildo/internal/schedule"
	"github.com/cabildo/cabildo/pkg/api"
)

func (s *Server) listAnnouncements(c *fiber.Ctx) error {
	return s.readEvent(c, "announcements", func(l render.Localizer) (validators, func() any, error) {
		version := max(l.St.AnnouncementsVersion, l.St.Created)
		var modified = l.St.Updated
		if n := len(l.St.Announcements); n > 0 {
			modified = l.St.Announcements[n-1].At
		}
		return validators{etag: etag(version, l.Lang, "announcements"), modified: modified}, func() any {
			return api.AnnouncementList{Event: l.St.Programme.Event.ID, Version: version, Lang: string(l.Lang),
				Announcements: l.Announcements(0)}
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
