package httpapi

import (
	"context"
	"html/template"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/cabildo/cabildo/internal/projection"
)

func (s *Server) livez(c *fiber.Ctx) error {
	return writeJSON(c, fiber.StatusOK, fiber.MIMEApplicationJSON, fiber.Map{"status": "ok"})
}

func (s *Server) readyz(c *fiber.Ctx) error {
	ctx, cancel := context.WithTimeout(c.UserContext(), 2*time.Second)
	defer cancel()
	ready, checks := s.opts.Ready(ctx)
	status, word := fiber.StatusOK, "ready"
	if !ready {
		status, word = fiber.StatusServiceUnavailable, "not_ready"
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return writeJSON(c, status, fiber.MIMEApplicationJSON, fiber.Map{"status": word, "checks": checks})
}

func (s *Server) openapi(c *fiber.Ctx) error {
	c.Set(fiber.HeaderContentType, "application/yaml")
	return c.Send(s.opts.OpenAPI)
}

// waitForVersion gives this node's projection a moment to reach a version a client saw
// elsewhere (another node, or this node's own write still in flight).
func (s *Server) waitForVersion(c *fiber.Ctx, v uint64) {
	if v <= s.opts.Store.Seq() {
		return
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), time.Second)
	defer cancel()
	_ = s.opts.Store.WaitFor(ctx, v)
}

var indexPage = template.Must(template.New("index").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Cabildo</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem}code{background:#eee;padding:0 .2em}</style>
</head><body>
<h1>Cabildo</h1>
<p>Realtime backend for live events. This node is at log sequence {{.Seq}}.</p>
<h2>Events</h2>
<ul>{{range .Events}}<li><strong>{{.Name}}</strong> (<code>{{.ID}}</code>):
<a href="/v1/events/{{.ID}}/schedule">schedule</a> ·
<a href="/v1/events/{{.ID}}/sessions?lang=en">sessions (en)</a> ·
<a href="/v1/events/{{.ID}}/changes?since=0">changes</a></li>{{else}}<li>No events yet.</li>{{end}}</ul>
<h2>API</h2>
<ul><li><a href="/openapi.yaml">OpenAPI contract</a></li><li><a href="/v1/events">/v1/events</a></li>
<li><a href="/readyz">/readyz</a> · <a href="/livez">/livez</a> · <a href="/metrics">/metrics</a></li></ul>
</body></html>`))

func (s *Server) index(c *fiber.Ctx) error {
	type ev struct{ ID, Name string }
	var events []ev
	seq := s.opts.Store.Each(func(st *projection.EventState) {
		events = append(events, ev{ID: st.Programme.Event.ID, Name: st.Programme.Event.Name.In("en")})
	})
	slices.SortFunc(events, func(a, b ev) int { return strings.Compare(a.ID, b.ID) })
	c.Set(fiber.HeaderContentType, fiber.MIMETextHTMLCharsetUTF8)
	return indexPage.Execute(c.Response().BodyWriter(), map[string]any{"Seq": seq, "Events": events})
}
