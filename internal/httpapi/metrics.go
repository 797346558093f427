package httpapi

import (
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cabildo/cabildo/internal/projection"
)

type metrics struct {
	sockets  prometheus.Gauge
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	handler  fiber.Handler
}

func newMetrics(reg *prometheus.Registry, store *projection.Store) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cabildo_http_requests_total", Help: "HTTP requests by route and status.",
		}, []string{"method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "cabildo_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"method", "route"}),
	}
	m.sockets = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "cabildo_websocket_connections", Help: "Open websocket connections.",
	})
	reg.MustRegister(m.requests, m.duration, m.sockets)
	if store != nil {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cabildo_projection_sequence", Help: "Last log sequence this node's projection applied.",
		}, func() float64 { return float64(store.Seq()) }))
	}
	// Process and Go runtime collectors may already be registered by the caller.
	_ = reg.Register(collectors.NewGoCollector())
	_ = reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.handler = adaptor.HTTPHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return m
}

// observe counts and times every request by its route pattern, never by raw path, so
// metrics cardinality stays bounded whatever clients send.
func (s *Server) observe(c *fiber.Ctx) error {
	start := time.Now()
	err := c.Next()
	if err != nil {
		if herr := s.errorHandler(c, err); herr != nil {
			return herr
		}
	}
	route := c.Route().Path
	if c.Route().Path == "/" && c.Path() != "/" {
		route = "unmatched"
	}
	// Labels are kept by the registry: copies, never strings over fasthttp's request
	// buffer, which the next request on the connection overwrites.
	method, route := strings.Clone(c.Method()), strings.Clone(route)
	s.m.requests.WithLabelValues(method, route, strconv.Itoa(c.Response().StatusCode())).Inc()
	s.m.duration.WithLabelValues(method, route).Observe(time.Since(start).Seconds())
	return nil
}

func (s *Server) metrics(c *fiber.Ctx) error { return s.m.handler(c) }
