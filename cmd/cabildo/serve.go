package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	mobileapi "github.com/cabildo/cabildo/mobile-api"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/config"
	"github.com/cabildo/cabildo/internal/httpapi"
	"github.com/cabildo/cabildo/internal/memcache"
	"github.com/cabildo/cabildo/internal/natslog"
	"github.com/cabildo/cabildo/internal/projection"
	"github.com/cabildo/cabildo/internal/ratelimit"
	"github.com/cabildo/cabildo/internal/realtime"
	"github.com/cabildo/cabildo/internal/rediscache"
	"github.com/cabildo/cabildo/internal/schedule"
	"github.com/cabildo/cabildo/internal/townhall"
	"github.com/cabildo/cabildo/pkg/protocol"
)

// cache is what a node keeps in the cache: projection snapshots and rendered responses.
type cache interface {
	httpapi.RenderCache
	ratelimit.Limiter
	LoadSnapshot(ctx context.Context, key string) (cabildo.Snapshot, bool, error)
	StoreSnapshot(ctx context.Context, key string, s cabildo.Snapshot) (bool, error)
	Ping(ctx context.Context) error
	Name() string
	Close() error
}

const snapshotKey = "projection"

const serveUsage = `usage: cabildo serve [flags]

Runs one node until SIGINT or SIGTERM, then shuts down in order and exits 0. Without
--nats-url and --redis-url the log (NATS JetStream) and the cache run in-process, stored in
--data-dir. The first start creates <data-dir>/signing.key, the key tokens are signed with.
Every flag can also be given as CABILDO_<FLAG>, e.g. CABILDO_ADDR=:8080; a flag wins.
`

// serve runs one node until ctx ends. Shutdown order: stop being ready, stop accepting
// and finish in-flight requests, stop consuming, write a last snapshot, drain NATS.
func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.LoadServe(args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		return printHelp(stdout, serveUsage, config.ServeFlags())
	}
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	keys, err := signingKeys(cfg.SigningKey, cfg.SigningKeyFile, true)
	if err != nil {
		return err
	}
	if cfg.DebugAddr != "" {
		stop, err := startDebug(cfg.DebugAddr, log)
		if err != nil {
			return fmt.Errorf("--debug-addr: %w", err)
		}
		defer stop()
	}

	// The log of record.
	started := time.Now()
	var nc *nats.Conn
	if cfg.NATSURL == "" {
		emb, err := natslog.StartEmbedded(natslog.EmbeddedOptions{
			StoreDir: filepath.Join(cfg.DataDir, "jetstream"), Listen: cfg.NATSListen})
		if err != nil {
			return err
		}
		defer emb.Shutdown()
		if nc, err = emb.Connect("cabildo"); err != nil {
			return err
		}
		if cfg.NATSListen != "" {
			log.Info("in-process NATS accepts clients", "url", emb.ClientURL())
		}
	} else {
		nc, err = nats.Connect(cfg.NATSURL, nats.Name("cabildo"), nats.MaxReconnects(-1),
			nats.ReconnectWait(250*time.Millisecond), nats.RetryOnFailedConnect(true),
			// No reconnect buffer: a write that failed while NATS was away must fail for
			// good, not be stored later behind the back of a client told to retry.
			nats.ReconnectBufSize(-1),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("NATS disconnected", "err", err) }),
			nats.ReconnectHandler(func(*nats.Conn) { log.Info("NATS reconnected") }))
		if err != nil {
			return fmt.Errorf("connect to NATS %s: %w", cfg.NATSURL, err)
		}
	}
	defer nc.Close()
	openCtx, cancelOpen := context.WithTimeout(ctx, 30*time.Second)
	lg, err := natslog.Open(openCtx, nc, natslog.Config{Replicas: cfg.StreamReplicas, Dedupe: cfg.Dedupe,
		AppendTimeout: cfg.AppendTimeout})
	cancelOpen()
	if err != nil {
		return err
	}
	log.Debug("log of record open", "took", time.Since(started).Round(time.Millisecond))

	// The cache.
	var (
		cc    cache
		redis *rediscache.Cache
	)
	if cfg.RedisURL == "" {
		cc = memcache.New()
	} else {
		rediscache.RouteLogs(log)
		redis, err = rediscache.New(ctx, rediscache.Options{URL: cfg.RedisURL, Logger: log})
		if err != nil {
			return err
		}
		cc = redis
	}
	defer cc.Close()

	// The projection: start from a snapshot that matches this log, then consume the tail.
	hub := realtime.New(realtime.Options{QueueBytes: cfg.WS.QueueBytes, PingEvery: cfg.WS.PingEvery})
	defer hub.Shutdown(protocol.CloseReconnect, "server restarting: reconnect and resume") // on early returns; a no-op after the first
	var channels *realtime.Channels
	store := projection.New(projection.Options{Logger: log, MaxChanges: cfg.ChangeHistory,
		OnApply: func(a projection.Applied) { channels.OnApply(a) }})
	channels = realtime.NewChannels(hub, store)
	info, err := lg.Info(ctx)
	if err != nil {
		return err
	}
	restoreSnapshot(ctx, log, cc, store, info)

	var wg sync.WaitGroup
	consumeCtx, stopConsume := context.WithCancel(context.Background())
	// Entries are decoded on the consuming goroutine and applied on the feeder's, so that a
	// replay of a long log keeps two cores busy.
	feed := store.Feeder(1024)
	defer func() {
		stopConsume()
		wg.Wait()
		feed.Close()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for consumeCtx.Err() == nil {
			err := lg.Consume(consumeCtx, store.Seq(), func(e natslog.Entry) error {
				feed.Add(e.Seq, e.Subject, e.Time, e.Data)
				return nil
			})
			if consumeCtx.Err() == nil {
				log.Warn("log consumer stopped; restarting", "err", err)
				select {
				case <-consumeCtx.Done():
				case <-time.After(500 * time.Millisecond):
				}
			}
		}
	}()
	// A long log takes as long as its replay takes (about 100,000 entries a second); only a
	// projection that stops advancing for half a minute means something is wrong.
	for {
		before := store.Seq()
		catchCtx, cancelCatch := context.WithTimeout(ctx, 30*time.Second)
		err = store.WaitFor(catchCtx, info.LastSeq)
		cancelCatch()
		if err == nil || ctx.Err() != nil || store.Seq() == before {
			break
		}
		log.Info("catching up with the log", "seq", store.Seq(), "log_last_seq", info.LastSeq)
	}
	if err != nil {
		return fmt.Errorf("projection did not catch up with the log: %w", err)
	}
	log.Info("projection caught up", "seq", store.Seq(), "log_last_seq", info.LastSeq)

	svc := schedule.New(lg, store)
	words := townhall.DefaultWords()
	if cfg.QA.WordsFile != "" {
		if words, err = townhall.LoadWords(cfg.QA.WordsFile); err != nil {
			return err
		}
	}
	th := townhall.New(svc, lg, store, townhall.Options{Words: words, VoteQueue: cfg.QA.VoteQueue, VoteWait: cfg.QA.VoteWait,
		AnswerWithin: cfg.AppendTimeout, VoteConcurrency: cfg.QA.VoteConcurrency})
	defer th.Close()
	channels.VoteInterval = cfg.QA.VoteInterval
	if cfg.Demo && info.LastSeq == 0 {
		if err := loadDemo(ctx, svc, th, store, log); err != nil {
			return fmt.Errorf("load demo event: %w", err)
		}
	}

	var ready atomic.Bool
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "cabildo_websocket_slow_consumers_total", Help: "Websockets closed because they could not keep up.",
	}, func() float64 { return float64(hub.Stats().SlowConsumers) }))
	registerTownHallMetrics(reg, th)
	if redis != nil {
		registerCacheMetrics(reg, redis)
	}
	api := httpapi.New(httpapi.Options{
		Logger: log, Store: store, Schedule: svc, Tokens: keys, Cache: cc, Registry: reg,
		OpenAPI: mobileapi.OpenAPI, TrustedProxies: cfg.TrustedProxies,
		Realtime: httpapi.Realtime{Hub: hub, Channels: channels, Origins: cfg.Origins,
			AuthTimeout: cfg.WS.AuthTimeout, IdleTimeout: cfg.WS.IdleTimeout,
			FrameRate: cfg.WS.FrameRate, FrameBurst: int(2 * cfg.WS.FrameRate), MaxConnsPerIP: cfg.WS.MaxConnsPerIP},
		TownHall: httpapi.TownHall{Service: th, Minter: keys,
			Limiter: &ratelimit.Fallback{Shared: cc, Local: ratelimit.NewLocal()},
			Limits: httpapi.Limits{
				MintPerIP:      perMinute(cfg.QA.MintsPerIPMinute),
				AskPerAttendee: perMinute(cfg.QA.AsksPerMinute),
				AskPerIP:       perMinute(cfg.QA.AsksPerIPMinute),
				VotePerAttend:  perMinute(cfg.QA.VotesPerMinute),
				VotePerIP:      perMinute(cfg.QA.VotesPerIPMinute),
			}},
		Ready: func(ctx context.Context) (bool, map[string]string) {
			checks := map[string]string{"log": "up", "projection": "caught_up", "cache": cc.Name()}
			ok := ready.Load()
			if nc.Status() != nats.CONNECTED {
				checks["log"], ok = "down", false
			}
			if err := cc.Ping(ctx); err != nil {
				// Redis is a cache: without it the node still serves, so it stays ready.
				checks["cache"] = "degraded"
			}
			if !ready.Load() {
				checks["projection"] = "catching_up"
			}
			return ok, checks
		},
	})

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Addr, err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- api.App().Listener(ln) }()
	ready.Store(true)
	printWelcome(stdout, ln.Addr(), store, cfg)

	wg.Add(1)
	go func() {
		defer wg.Done()
		snapshotLoop(consumeCtx, log, cc, store, info.Identity, cfg.SnapshotEvery)
	}()

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if err != nil {
			return fmt.Errorf("http: %w", err)
		}
	}
	log.Info("shutting down")
	ready.Store(false)
	// Tell every websocket client to reconnect (to another node, or to this one once it
	// is back) and resume from its last version.
	hub.Shutdown(protocol.CloseReconnect, "server restarting: reconnect and resume")
	shCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer cancel()
	if err := api.Shutdown(shCtx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	th.Close()
	stopConsume()
	wg.Wait()
	feed.Close()
	writeSnapshot(shCtx, log, cc, store, info.Identity)
	if err := nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		log.Warn("NATS drain", "err", err)
	}
	log.Info("stopped")
	return nil
}

func perMinute(n int) ratelimit.Limit { return ratelimit.Limit{N: n, Per: time.Minute} }

func newLogger(cfg config.Serve, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// snapshotOpener is a cache that hands a snapshot's bytes over as they arrive (Redis), so
// that restoring overlaps fetching.
type snapshotOpener interface {
	OpenSnapshot(ctx context.Context, key string) (cabildo.Snapshot, io.ReadCloser, bool, error)
}

// restoreSnapshot loads the cached projection when it was built from this very log and
// is not ahead of it; anything else is refused and the node rebuilds from the log alone.
func restoreSnapshot(ctx context.Context, log *slog.Logger, cc cache, store *projection.Store, info natslog.Info) {
	start := time.Now()
	var (
		snap cabildo.Snapshot
		body io.ReadCloser
		ok   bool
		err  error
	)
	if o, can := cc.(snapshotOpener); can {
		snap, body, ok, err = o.OpenSnapshot(ctx, snapshotKey)
	} else if snap, ok, err = cc.LoadSnapshot(ctx, snapshotKey); ok {
		body = io.NopCloser(bytes.NewReader(snap.Data))
	}
	if body != nil {
		defer body.Close()
	}
	switch {
	case err != nil:
		log.Warn("snapshot unavailable; rebuilding from the log", "err", err)
	case !ok:
		log.Info("no snapshot; rebuilding from the log")
	case snap.Log != info.Identity:
		log.Warn("snapshot is from another log; ignoring it", "snapshot_seq", snap.Seq)
	case snap.Seq > info.LastSeq:
		log.Warn("snapshot is ahead of the log; ignoring it", "snapshot_seq", snap.Seq, "log_last_seq", info.LastSeq)
	case snap.Seq < info.FirstSeq-1 && info.FirstSeq > 1:
		log.Warn("snapshot is older than the log's first entry; ignoring it", "snapshot_seq", snap.Seq)
	default:
		counted := &countingReader{r: body}
		if seq, err := store.RestoreFrom(counted); err != nil {
			log.Warn("snapshot unreadable; rebuilding from the log", "err", err)
		} else {
			log.Info("restored snapshot", "seq", seq, "bytes", counted.n, "took", time.Since(start).Round(time.Millisecond))
		}
	}
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// snapshotLoop writes the projection's snapshot to the cache every so often, when it has
// moved. A snapshot of a long log is expensive (for a million entries, about 3 s of
// encoding, of which 0.4 s holds the projection's entries back while it copies what they
// change in place; docs/benchmarks.md), so the pause after one is every, or snapshotDuty
// times as long as the last one took, whichever is longer: a node spends at most
// 1/snapshotDuty of its time on snapshots.
func snapshotLoop(ctx context.Context, log *slog.Logger, cc cache, store *projection.Store, logID string, every time.Duration) {
	var last uint64
	wait := every
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = every
		if seq := store.Seq(); seq > last {
			ok, took := writeSnapshot(ctx, log, cc, store, logID)
			if ok {
				last = seq
			}
			wait = snapshotPause(every, took)
		}
	}
}

// snapshotDuty bounds the share of time spent on snapshots: 1 in 50.
const snapshotDuty = 50

// snapshotPause is how long to wait after a snapshot whose encode took took.
func snapshotPause(every, took time.Duration) time.Duration {
	return max(every, snapshotDuty*took)
}

// writeSnapshot encodes the projection and stores it; took is how long the encode took.
func writeSnapshot(ctx context.Context, log *slog.Logger, cc cache, store *projection.Store, logID string) (ok bool, took time.Duration) {
	start := time.Now()
	seq, data, err := store.Snapshot()
	took = time.Since(start)
	if err != nil || seq == 0 {
		return false, took
	}
	if took > time.Second {
		log.Info("snapshot encoded", "seq", seq, "bytes", len(data), "took", took.Round(time.Millisecond),
			"next_in", snapshotPause(0, took).Round(time.Second))
	}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := cc.StoreSnapshot(sctx, snapshotKey, cabildo.Snapshot{Seq: seq, Log: logID, Data: data}); err != nil {
		log.Warn("snapshot not written", "err", err)
		return false, took
	}
	return true, took
}

func printWelcome(w io.Writer, addr net.Addr, store *projection.Store, cfg config.Serve) {
	host := "localhost"
	if a, ok := addr.(*net.TCPAddr); ok && !a.IP.IsUnspecified() {
		host = a.IP.String()
	}
	base := fmt.Sprintf("http://%s", net.JoinHostPort(host, fmt.Sprint(addr.(*net.TCPAddr).Port)))
	fmt.Fprintf(w, "cabildo listening on %s\n", base)
	fmt.Fprintf(w, "  home:     %s/\n", base)
	fmt.Fprintf(w, "  events:   %s/v1/events\n", base)
	store.Each(func(st *projection.EventState) {
		id := st.Programme.Event.ID
		fmt.Fprintf(w, "  schedule: %s/v1/events/%s/schedule?lang=en\n", base, id)
		fmt.Fprintf(w, "  changes:  %s/v1/events/%s/changes?since=0\n", base, id)
		fmt.Fprintf(w, "  live:     ws%s/v1/ws  then send {\"type\":\"subscribe\",\"channel\":\"schedule:%s\"}\n",
			strings.TrimPrefix(base, "http"), id)
		fmt.Fprintf(w, "  organizer token: bin/cabildo token create --event %s --role organizer --data-dir %s\n", id, cfg.DataDir)
		for sid, qa := range st.QA {
			if qa.Open {
				fmt.Fprintf(w, "  town hall: %s/v1/events/%s/sessions/%d/questions (attendees: POST %s/v1/events/%s/attendees; live: questions:%s:%d)\n",
					base, id, sid, base, id, id, sid)
				fmt.Fprintf(w, "  moderator token: bin/cabildo token create --event %s --role moderator --subject <name> --data-dir %s (live: moderation:%s:%d)\n",
					id, cfg.DataDir, id, sid)
			}
		}
	})
	fmt.Fprintf(w, "  contract: %s/openapi.yaml\n", base)
}

// registerCacheMetrics exports the Redis breaker: whether Redis is in use, how often an
// outage opened the breaker, and the commands sent and spared.
func registerCacheMetrics(reg *prometheus.Registry, rc *rediscache.Cache) {
	up := func() float64 {
		if rc.Up() {
			return 1
		}
		return 0
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "cabildo_cache_up",
			Help: "1 while Redis answers; 0 while the breaker is open and the node serves on its own."}, up),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cabildo_cache_breaker_opened_total",
			Help: "Times a Redis outage opened the breaker."}, func() float64 { return float64(rc.Stats().Opened) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cabildo_cache_redis_commands_total",
			Help: "Commands sent to Redis for requests (probes excluded)."}, func() float64 { return float64(rc.Stats().Commands) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "cabildo_cache_refused_total",
			Help: "Cache operations answered at once by the open breaker, without asking Redis."}, func() float64 { return float64(rc.Stats().Refused) }),
	)
}

// registerTownHallMetrics exports the town hall's group commits: log entries appended,
// writes they held (their ratio is the mean batch) and writes refused when an append
// failed, for votes and for questions.
func registerTownHallMetrics(reg *prometheus.Registry, th *townhall.Service) {
	kinds := map[string]func() townhall.CommitStats{
		"vote":     func() townhall.CommitStats { v, _ := th.Stats(); return v },
		"question": func() townhall.CommitStats { _, q := th.Stats(); return q },
	}
	for kind, stats := range kinds {
		labels := prometheus.Labels{"kind": kind}
		for _, m := range []struct {
			name, help string
			value      func(townhall.CommitStats) uint64
		}{
			{"cabildo_townhall_log_entries_total", "Log entries this node appended for group-committed town-hall writes.",
				func(s townhall.CommitStats) uint64 { return s.Entries }},
			{"cabildo_townhall_writes_stored_total", "Town-hall writes stored in those entries.",
				func(s townhall.CommitStats) uint64 { return s.Stored }},
			{"cabildo_townhall_writes_failed_total", "Town-hall writes refused because their append failed or the node was closing.",
				func(s townhall.CommitStats) uint64 { return s.Failed }},
		} {
			reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: m.name, Help: m.help, ConstLabels: labels},
				func() float64 { return float64(m.value(stats())) }))
		}
	}
}
