// Package httpapi is Cabildo's HTTP surface and the only package that imports Fiber: the
// public and organizer REST API, operations endpoints, and (later) the websocket upgrade
// and the embedded consoles. Handlers translate HTTP to use cases and projection reads;
// errors become RFC 9457 problem details in exactly one place (problem.go).
package httpapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/recover"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/projection"
	"github.com/cabildo/cabildo/internal/schedule"
	"github.com/cabildo/cabildo/internal/token"
)

// RenderCache keeps rendered responses keyed by version, so a node renders each version of
// a schedule once; any node may read what another rendered.
type RenderCache interface {
	GetRendered(ctx context.Context, key string) ([]byte, bool, error)
	PutRendered(ctx context.Context, key string, b []byte, ttl time.Duration) error
}

// Verifier checks bearer tokens.
type Verifier interface {
	Verify(tok string) (token.Claims, error)
}

// Readiness reports whether the node should receive traffic, with detail per dependency.
type Readiness func(ctx context.Context) (ready bool, checks map[string]string)

// Options are what the HTTP layer needs from the rest of the node.
type Options struct {
	Logger    *slog.Logger
	Store     *projection.Store
	Schedule  *schedule.Service
	Tokens    Verifier
	Cache     RenderCache
	Ready     Readiness
	Registry  *prometheus.Registry
	OpenAPI   []byte
	BodyLimit int // bytes; default 256 KiB
	// WriteTimeout bounds a write use case (append + catch-up); default 10 s.
	WriteTimeout time.Duration
	// TrustedProxies may set X-Forwarded-For (addresses or CIDRs).
	TrustedProxies []string
	// Realtime serves GET /v1/ws when its Hub is set.
	Realtime Realtime
	// TownHall serves questions, votes and moderation when its Service is set.
	TownHall TownHall
}

// HandshakeTimeout is how long a request, or a websocket upgrade, may take to arrive
// whole (asyncapi.yaml and docs/errors.md promise 10 s).
const HandshakeTimeout = 10 * time.Second

// Server is the Fiber application with its handlers.
type Server struct {
	opts Options
	log  *slog.Logger
	app  *fiber.App
	m    *metrics
	// perIP counts open websockets per client address.
	perIP    ipCounts
	refusals *refusalLog
	// reads are this node's rendered public reads, by event, resource and language.
	reads *renditions
}

// New builds the application and its routes.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.BodyLimit == 0 {
		opts.BodyLimit = 256 << 10
	}
	if opts.WriteTimeout == 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	opts.Realtime.defaults()
	opts.TownHall.defaults()
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
	}
	reads := newRenditions()
	s := &Server{opts: opts, log: opts.Logger, m: newMetrics(opts.Registry, opts.Store, reads), refusals: newRefusalLog(), reads: reads}
	s.app = fiber.New(fiber.Config{
		AppName: "cabildo",
		// The transport's hard cap is far above the API's limit so that an oversized body
		// is read and answered with a problem, not cut off with a connection reset.
		BodyLimit:             16 * opts.BodyLimit,
		DisableStartupMessage: true,
		ErrorHandler:          s.errorHandler,
		// A request (headers and body, a websocket upgrade included) must arrive whole
		// within the handshake time the contract promises; a client that stalls halfway
		// holds a connection and a buffer someone else could use.
		ReadTimeout:  HandshakeTimeout,
		WriteTimeout: 30 * time.Second,
		IdleTimeout:  120 * time.Second,
		// Also the limit on request headers (431 beyond it). A websocket keeps this
		// buffer for its whole life, so it is kept at fasthttp's default: 16 KiB here
		// cost 12 KiB more per connection.
		ReadBufferSize: 4 << 10,
		JSONEncoder:    json.Marshal,
		JSONDecoder:    json.Unmarshal,
		// Behind a proxy, per-address limits must see the client's address.
		EnableTrustedProxyCheck: len(opts.TrustedProxies) > 0,
		TrustedProxies:          opts.TrustedProxies,
		ProxyHeader:             proxyHeader(opts.TrustedProxies),
	})
	s.app.Use(recover.New())
	s.app.Use(s.observe)
	s.app.Use(s.limitBody)
	s.routes()
	// The schedule, when this node holds its current bytes, is answered before Fiber.
	srv := s.app.Server()
	slow := srv.Handler
	srv.Handler = func(ctx *fasthttp.RequestCtx) {
		if !s.fastRead(ctx) {
			slow(ctx)
		}
	}
	return s
}

func (s *Server) routes() {
	a := s.app
	a.Get("/", s.index)
	a.Get("/livez", s.livez)
	a.Get("/readyz", s.readyz)
	a.Get("/metrics", s.metrics)
	a.Get("/openapi.yaml", s.openapi)

	v1 := a.Group("/v1")
	if s.opts.Realtime.Hub != nil {
		v1.Get("/ws", s.checkOrigin, s.websocketHandler())
	}
	v1.Get("/events", s.listEvents)
	v1.Get("/events/:event", s.getEvent)
	v1.Get("/events/:event/schedule", s.getSchedule)
	v1.Get("/events/:event/sessions", s.listSessions)
	v1.Get("/events/:event/sessions/:session", s.getSession)
	v1.Get("/events/:event/rooms", s.listRooms)
	v1.Get("/events/:event/rooms/:room", s.getRoom)
	v1.Get("/events/:event/tracks", s.listTracks)
	v1.Get("/events/:event/speakers", s.listSpeakers)
	v1.Get("/events/:event/speakers/:speaker", s.getSpeaker)
	v1.Get("/events/:event/changes", s.listChanges)
	v1.Get("/events/:event/announcements", s.listAnnouncements)

	org := s.requireRole(token.Organizer)
	ev := "/events/:event"
	v1.Put(ev, org, s.putEvent)
	v1.Put(ev+"/rooms/:room", org, s.putRoom)
	v1.Put(ev+"/tracks/:track", org, s.putTrack)
	v1.Put(ev+"/speakers/:speaker", org, s.putSpeaker)
	v1.Post(ev+"/sessions", org, s.createSession)
	v1.Patch(ev+"/sessions/:session", org, s.patchSession)
	v1.Delete(ev+"/sessions/:session", org, s.deleteSession)
	v1.Post(ev+"/sessions/:session/cancel", org, s.cancelSession)
	v1.Post(ev+"/sessions/:session/reinstate", org, s.reinstateSession)
	v1.Post(ev+"/announcements", org, s.postAnnouncement)
	if s.opts.TownHall.Service != nil {
		s.townHallRoutes(v1)
	}
}

// Handler returns the Fiber app, for tests and for Listen.
func (s *Server) App() *fiber.App { return s.app }

// Listen serves on addr until Shutdown.
func (s *Server) Listen(addr string) error { return s.app.Listen(addr) }

// Shutdown stops accepting connections and waits for in-flight requests until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.app.ShutdownWithContext(ctx) }

func writeJSON(c *fiber.Ctx, status int, contentType string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	c.Status(status)
	c.Set(fiber.HeaderContentType, contentType)
	return c.Send(b)
}

func (s *Server) limitBody(c *fiber.Ctx) error {
	// c.Body decodes a compressed request body: only worth calling when there is one.
	if len(c.Request().Body()) > 0 && len(c.Body()) > s.opts.BodyLimit {
		return cabildo.Errorf(cabildo.CodePayloadTooLarge, "the request body is larger than %d KiB", s.opts.BodyLimit>>10)
	}
	return c.Next()
}

func proxyHeader(trusted []string) string {
	if len(trusted) == 0 {
		return ""
	}
	return fiber.HeaderXForwardedFor
}
