package httpapi

import (
	"strconv"
	"strings"
	"sync"
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
	// series holds each (route, method, status)'s counter and histogram, so a request
	// neither builds label strings nor hashes them.
	seriesByKey sync.Map // seriesKey → *routeSeries
}

type seriesKey struct {
	method, route string
	status        int
}

type routeSeries struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

func newMetrics(reg *prometheus.Registry, store *projection.Store, reads *renditions) *metrics {
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
	if reads != nil {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "cabildo_http_rendered_bodies_total", Help: "Public reads rendered and encoded (once per version, resource and language).",
		}, func() float64 { return float64(reads.renders.Load()) }))
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "cabildo_http_compressed_bodies_total", Help: "Rendered public reads compressed (once per content coding).",
		}, func() float64 { return float64(reads.packs.Load()) }))
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "cabildo_http_schedule_fast_reads_total", Help: "Schedule reads answered from this node's current bytes before routing.",
		}, func() float64 { return float64(reads.fast.Load()) }))
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
	if route == "/" && c.Path() != "/" || len(c.Route().Handlers) == 0 {
		route = "unmatched"
	}
	s.m.series(c.Method(), route, c.Response().StatusCode()).observe(time.Since(start))
	return nil
}

// series returns the counter and histogram of one method, route and status, made on first
// use. method and route may be strings over a request's buffer: the kept ones are copies.
func (m *metrics) series(method, route string, status int) *routeSeries {
	k := seriesKey{method: method, route: route, status: status}
	if rs, ok := m.seriesByKey.Load(k); ok {
		return rs.(*routeSeries)
	}
	k.method, k.route = strings.Clone(k.method), strings.Clone(k.route)
	rs, _ := m.seriesByKey.LoadOrStore(k, &routeSeries{
		requests: m.requests.WithLabelValues(k.method, k.route, strconv.Itoa(k.status)),
		duration: m.duration.WithLabelValues(k.method, k.route),
	})
	return rs.(*routeSeries)
}

func (rs *routeSeries) observe(d time.Duration) {
	rs.requests.Inc()
	rs.duration.Observe(d.Seconds())
}

func (s *Server) metrics(c *fiber.Ctx) error { return s.m.handler(c) }
