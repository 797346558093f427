package httpapi

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/projection"
	"github.com/cabildo/cabildo/internal/render"
	"github.com/cabildo/cabildo/pkg/api"
)

// exportQuestions answers the record of a session's town hall: every question in every
// state, its votes, and who did what to it when. JSON by default; CSV with ?format=csv or
// Accept: text/csv, for a spreadsheet.
func (s *Server) exportQuestions(c *fiber.Ctx) error {
	format := c.Query("format")
	switch {
	case format == "" && strings.Contains(c.Get(fiber.HeaderAccept), "text/csv"):
		format = "csv"
	case format == "":
		format = "json"
	case format != "json" && format != "csv":
		return &cabildo.Error{Code: cabildo.CodeInvalidRequest, Message: "format must be json or csv",
			Fields: []cabildo.FieldError{{Field: "format", Code: "invalid_enum", Message: "json or csv"}}}
	}
	var body api.QuestionExport
	err := s.readQA(c, func(_ *projection.EventState, sess cabildo.Session, qa *cabildo.QA) error {
		body = api.QuestionExport{Event: c.Params("event"), Session: sess.ID, Title: sess.Title.In(cabildo.ES),
			ExportedAt: time.Now().UTC(), Moderated: true, Questions: []api.ModQuestion{}, Actions: []api.ModAction{}}
		if qa == nil {
			return nil
		}
		body.Version, body.Open, body.Moderated, body.Queue = qa.Version, qa.Open, qa.Moderated, render.Queue(qa)
		for _, id := range qa.Order {
			body.Questions = append(body.Questions, render.ModQuestion(qa.Questions[id]))
		}
		for _, a := range qa.Actions {
			body.Actions = append(body.Actions, render.Action(a))
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderCacheControl, "private, no-store")
	name := fmt.Sprintf("%s-session-%d-questions", body.Event, body.Session)
	if format == "json" {
		c.Set(fiber.HeaderContentDisposition, `attachment; filename="`+name+`.json"`)
		return writeJSON(c, fiber.StatusOK, fiber.MIMEApplicationJSON, body)
	}
	b, err := questionsCSV(body)
	if err != nil {
		return err
	}
	c.Set(fiber.HeaderContentDisposition, `attachment; filename="`+name+`.csv"`)
	c.Set(fiber.HeaderContentType, "text/csv; charset=utf-8")
	return c.Status(fiber.StatusOK).Send(b)
}

// CSVColumns are the export's columns, in order.
var CSVColumns = []string{"id", "state", "text", "original_text", "lang", "name", "attendee", "votes", "asked_at",
	"decided_at", "decided_by", "wait_seconds", "answered_at", "merged_into", "flags", "history"}

func questionsCSV(ex api.QuestionExport) ([]byte, error) {
	history := map[int64][]string{}
	for _, a := range ex.Actions {
		for _, e := range a.Effects {
			h := fmt.Sprintf("%s %s by %s: %s→%s", a.At.Format(time.RFC3339), a.Action, a.Moderator, e.From, e.To)
			if a.UndoneBy != 0 {
				h += fmt.Sprintf(" (undone at version %d)", a.UndoneBy)
			}
			if e.FromText != e.ToText {
				h += fmt.Sprintf(" text %q→%q", e.FromText, e.ToText)
			}
			history[e.Question] = append(history[e.Question], h)
		}
	}
	var buf bytes.Buffer
	buf.WriteString("\ufeff") // so spreadsheet programs read the accents as UTF-8
	w := csv.NewWriter(&buf)
	_ = w.Write(CSVColumns)
	for _, q := range ex.Questions {
		var flags []string
		for _, f := range q.Flags {
			switch f.Kind {
			case cabildo.FlagWordList:
				flags = append(flags, "word_list:"+strings.Join(f.Words, "|"))
			case cabildo.FlagNearDuplicate:
				flags = append(flags, fmt.Sprintf("near_duplicate:%d", f.Similar))
			}
		}
		_ = w.Write([]string{strconv.FormatInt(q.ID, 10), q.State, safeCell(q.Text), safeCell(q.Original), q.Lang,
			safeCell(q.Name), q.Attendee, strconv.Itoa(q.Votes), q.AskedAt.Format(time.RFC3339),
			timeCell(q.DecidedAt), q.DecidedBy, waitCell(q.WaitSeconds), timeCell(q.AnsweredAt), idCell(q.MergedInto),
			strings.Join(flags, "; "), safeCell(strings.Join(history[q.ID], "; "))})
	}
	w.Flush()
	return buf.Bytes(), w.Error()
}

// safeCell defuses text a spreadsheet would run as a formula (CSV injection): anyone may
// ask a question starting with "=".
func safeCell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

func timeCell(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.Format(time.RFC3339)
}

func waitCell(w *float64) string {
	if w == nil {
		return ""
	}
	return strconv.FormatFloat(*w, 'f', 1, 64)
}

func idCell(id int64) string {
	if id == 0 {
		return ""
	}
	return strconv.FormatInt(id, 10)
}
