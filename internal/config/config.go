// Package config is Cabildo's typed configuration: flags with environment fallbacks,
// loaded once at start and validated before anything runs. Nothing else reads the
// environment.
package config

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/cabildo/cabildo/pkg/protocol"
)

// Serve configures `cabildo serve`.
type Serve struct {
	Addr       string   // HTTP listen address
	DataDir    string   // embedded JetStream store and signing key
	Demo       bool     // load the demo event when the log is empty
	NATSURL    string   // external NATS; empty runs NATS in-process
	NATSListen string   // with embedded NATS: also listen here for other nodes
	RedisURL   string   // external Redis cache; empty uses the in-process cache
	Origins    []string // browser origins allowed to open websockets
	// TrustedProxies may set X-Forwarded-For: behind them, limits per client address
	// use the forwarded address, not the proxy's.
	TrustedProxies []string

	SigningKey     string // hex; wins over SigningKeyFile
	SigningKeyFile string // default <data-dir>/signing.key

	ChangeHistory  int           // programme changes kept per event for GET /changes
	StreamReplicas int           // JetStream replicas of the log stream
	Dedupe         time.Duration // JetStream de-duplication window
	AppendTimeout  time.Duration // how long a write waits for the log to confirm it
	SnapshotEvery  time.Duration // how often the projection snapshot is written to the cache
	WS             WS
	QA             QA
	ShutdownGrace  time.Duration
	// DebugAddr serves Go's profiler (net/http/pprof) when set: bind it to loopback or a
	// private network, never to the public.
	DebugAddr string
	LogLevel  string
	LogFormat string // text or json
}

// WS tunes the websocket endpoint; zero values take the server's defaults.
type WS struct {
	AuthTimeout   time.Duration
	PingEvery     time.Duration
	IdleTimeout   time.Duration
	FrameRate     float64
	MaxConnsPerIP int
	QueueBytes    int
}

// QA tunes the town hall: its rate limits (per minute) and its word lists.
type QA struct {
	WordsFile        string        // JSON {"es": [...], "en": [...]}; empty: the built-in lists
	AsksPerMinute    int           // per attendee
	AsksPerIPMinute  int           // per client address
	VotesPerMinute   int           // per attendee
	VotesPerIPMinute int           // per client address
	MintsPerIPMinute int           // attendee tokens per client address
	VoteInterval     time.Duration // vote counts are published at most this often per session
	// VoteQueue bounds the votes waiting on a node for their log entry, VoteWait how long
	// one may wait: beyond either a vote is shed (503 with Retry-After, not stored).
	VoteQueue int
	VoteWait  time.Duration
	// VoteConcurrency bounds the vote requests a node works on at once, from their
	// arrival to their answer: one more is shed at once.
	VoteConcurrency int
}

// env names every flag's environment variable: CABILDO_ plus the flag in upper snake case.
func env(name string) string {
	return "CABILDO_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// LoadServe parses flags, falling back to CABILDO_* environment variables for flags not
// given, then validates. It prints nothing: -h and --help return flag.ErrHelp (the caller
// prints ServeFlags), and every mistake is a *UsageError naming the flag.
func LoadServe(args []string, getenv func(string) string) (Serve, error) {
	var c Serve
	fs := serveFlags(&c)
	if err := parse(fs, args, getenv); err != nil {
		return c, err
	}
	if c.SigningKeyFile == "" {
		c.SigningKeyFile = filepath.Join(c.DataDir, "signing.key")
	}
	return c, usage(fs, c.validate())
}

// ServeFlags is the flag set of `cabildo serve` with its defaults, for help and for the
// test that keeps the README's flag table true.
func ServeFlags() *flag.FlagSet { return serveFlags(new(Serve)) }

// DefaultAddr is loopback: a node started by hand on a laptop is not for the whole
// network. Containers and clusters say --addr :8080 (the Dockerfile sets CABILDO_ADDR).
const DefaultAddr = "127.0.0.1:8080"

func serveFlags(c *Serve) *flag.FlagSet {
	fs := newFlagSet("serve")
	fs.StringVar(&c.Addr, "addr", DefaultAddr, "HTTP listen address (:8080 for every interface)")
	fs.StringVar(&c.DataDir, "data-dir", "data", "directory for the embedded log and the signing key")
	fs.BoolVar(&c.Demo, "demo", false, "load the demo event when the log is empty")
	fs.StringVar(&c.NATSURL, "nats-url", "", "external NATS server URL (default: run NATS in-process)")
	fs.StringVar(&c.NATSListen, "nats-listen", "", "with in-process NATS, also accept NATS clients on this host:port")
	fs.StringVar(&c.RedisURL, "redis-url", "", "Redis URL for the shared cache (default: in-process cache)")
	fs.Func("allowed-origins", "comma-separated browser origins allowed to open websockets (e.g. https://app.example.org); \"*\" allows all (development only)", func(v string) error {
		c.Origins = nil
		for o := range strings.SplitSeq(v, ",") {
			if o = strings.TrimSpace(o); o != "" {
				c.Origins = append(c.Origins, o)
			}
		}
		return nil
	})
	fs.Func("trusted-proxies", "comma-separated proxy addresses or CIDRs whose X-Forwarded-For is believed", func(v string) error {
		c.TrustedProxies = nil
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				c.TrustedProxies = append(c.TrustedProxies, p)
			}
		}
		return nil
	})
	fs.StringVar(&c.SigningKey, "signing-key", "", "token signing key, hex (at least 32 bytes); prefer the environment")
	fs.StringVar(&c.SigningKeyFile, "signing-key-file", "", "token signing key file (default <data-dir>/signing.key, created at first start)")
	fs.IntVar(&c.ChangeHistory, "change-history", 100_000, "programme changes kept per event; older ones answer 'reload'")
	fs.IntVar(&c.StreamReplicas, "stream-replicas", 1, "replicas of the log stream (3 in a NATS cluster)")
	fs.DurationVar(&c.Dedupe, "dedupe-window", 10*time.Minute, "window in which the log drops a repeated Idempotency-Key")
	fs.DurationVar(&c.AppendTimeout, "append-timeout", 1500*time.Millisecond, "how long a write waits for the log to confirm it before answering 503 (retry with the same Idempotency-Key)")
	fs.DurationVar(&c.SnapshotEvery, "snapshot-every", 30*time.Second, "how often to write the projection snapshot to the cache (at least 50 times as long as the last one took to encode)")
	fs.DurationVar(&c.WS.AuthTimeout, "ws-auth-timeout", protocol.AuthTimeoutSeconds*time.Second, "close a websocket that neither authenticated nor subscribed within this time")
	fs.DurationVar(&c.WS.PingEvery, "ws-ping", protocol.PingIntervalSeconds*time.Second, "websocket ping interval")
	fs.DurationVar(&c.WS.IdleTimeout, "ws-idle-timeout", protocol.IdleTimeoutSeconds*time.Second, "close a websocket silent for this long (no frame, no pong)")
	fs.Float64Var(&c.WS.FrameRate, "ws-frame-rate", protocol.FramesPerSecond, "frames per second a client may send (burst twice that)")
	fs.IntVar(&c.WS.MaxConnsPerIP, "ws-max-conns-per-ip", 5000, "open websockets per client address")
	fs.IntVar(&c.WS.QueueBytes, "ws-queue-bytes", 1<<20, "bytes of frames queued for one websocket before it is closed as a slow consumer (it then resumes)")
	fs.StringVar(&c.QA.WordsFile, "qa-words", "", `town-hall word lists, JSON {"es": [...], "en": [...]}; they flag questions for moderators (default: built-in lists)`)
	fs.IntVar(&c.QA.AsksPerMinute, "qa-asks-per-minute", 5, "questions one attendee may ask per minute")
	fs.IntVar(&c.QA.AsksPerIPMinute, "qa-asks-per-ip-per-minute", 600, "questions one client address may send per minute (venue Wi-Fi is one address)")
	fs.IntVar(&c.QA.VotesPerMinute, "qa-votes-per-minute", 120, "votes and withdrawals one attendee may send per minute")
	fs.IntVar(&c.QA.VotesPerIPMinute, "qa-votes-per-ip-per-minute", 60000, "votes one client address may send per minute (a full plenary behind one address)")
	fs.IntVar(&c.QA.MintsPerIPMinute, "qa-attendees-per-ip-per-minute", 30, "attendee tokens one client address may obtain per minute")
	fs.DurationVar(&c.QA.VoteInterval, "qa-vote-interval", 250*time.Millisecond, "publish a session's changed vote counts at most this often")
	fs.IntVar(&c.QA.VoteQueue, "qa-vote-queue", 4000, "votes that may wait on this node for the log; beyond them a vote is refused with 503 and Retry-After, not stored")
	fs.DurationVar(&c.QA.VoteWait, "qa-vote-wait", 200*time.Millisecond, "how long a vote may wait for the log before it is refused with 503 and Retry-After, not stored")
	fs.IntVar(&c.QA.VoteConcurrency, "qa-vote-concurrency", 256, "vote requests this node works on at once; one more is refused at once with 503 and Retry-After, not stored")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", 10*time.Second, "how long shutdown waits for in-flight work")
	fs.StringVar(&c.DebugAddr, "debug-addr", "", "serve the Go profiler (/debug/pprof/) on this private address, e.g. 127.0.0.1:6060")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", "text", "text or json")
	return fs
}

func (c Serve) validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("--addr %q: %w", c.Addr, err))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir must not be empty"))
	}
	if c.NATSURL != "" {
		if _, err := url.Parse(c.NATSURL); err != nil {
			errs = append(errs, fmt.Errorf("--nats-url: %w", err))
		}
		if c.NATSListen != "" {
			errs = append(errs, errors.New("--nats-listen only applies to in-process NATS, not with --nats-url"))
		}
	}
	if c.RedisURL != "" {
		if u, err := url.Parse(c.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			errs = append(errs, fmt.Errorf("--redis-url must be redis:// or rediss://"))
		}
	}
	if c.StreamReplicas != 1 && c.StreamReplicas != 3 && c.StreamReplicas != 5 {
		errs = append(errs, errors.New("--stream-replicas must be 1, 3 or 5"))
	}
	for _, o := range c.Origins {
		if u, err := url.Parse(o); o != "*" && (err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != "") {
			errs = append(errs, fmt.Errorf("--allowed-origins: %q is not an origin such as https://app.example.org", o))
		}
	}
	// One message per flag, so whoever mistyped one value is told which.
	for _, p := range []struct {
		flag string
		bad  bool
		want string
	}{
		{"ws-auth-timeout", c.WS.AuthTimeout <= 0, "> 0"},
		{"ws-ping", c.WS.PingEvery <= 0, "> 0"},
		{"ws-idle-timeout", c.WS.PingEvery > 0 && c.WS.IdleTimeout <= c.WS.PingEvery, "longer than --ws-ping"},
		{"ws-frame-rate", c.WS.FrameRate <= 0, "> 0"},
		{"ws-max-conns-per-ip", c.WS.MaxConnsPerIP < 1, "at least 1"},
		{"ws-queue-bytes", c.WS.QueueBytes < 4<<10, "at least 4096"},
		{"qa-asks-per-minute", c.QA.AsksPerMinute < 1, "at least 1"},
		{"qa-asks-per-ip-per-minute", c.QA.AsksPerIPMinute < 1, "at least 1"},
		{"qa-votes-per-minute", c.QA.VotesPerMinute < 1, "at least 1"},
		{"qa-votes-per-ip-per-minute", c.QA.VotesPerIPMinute < 1, "at least 1"},
		{"qa-attendees-per-ip-per-minute", c.QA.MintsPerIPMinute < 1, "at least 1"},
		{"qa-vote-interval", c.QA.VoteInterval <= 0, "> 0"},
		{"qa-vote-queue", c.QA.VoteQueue < 1, "at least 1"},
		{"qa-vote-wait", c.QA.VoteWait <= 0, "> 0"},
		{"qa-vote-concurrency", c.QA.VoteConcurrency < 1, "at least 1"},
		{"shutdown-grace", c.ShutdownGrace <= 0, "> 0"},
	} {
		if p.bad {
			errs = append(errs, fmt.Errorf("--%s must be %s", p.flag, p.want))
		}
	}
	if c.DebugAddr != "" {
		if _, _, err := net.SplitHostPort(c.DebugAddr); err != nil {
			errs = append(errs, fmt.Errorf("--debug-addr %q: %w", c.DebugAddr, err))
		}
	}
	if c.AppendTimeout < 100*time.Millisecond || c.AppendTimeout > time.Minute {
		errs = append(errs, errors.New("--append-timeout must be between 100ms and 1m"))
	}
	if c.ChangeHistory < 1 {
		errs = append(errs, errors.New("--change-history must be at least 1"))
	}
	if c.Dedupe < time.Second {
		errs = append(errs, errors.New("--dedupe-window must be at least 1s"))
	}
	if c.SnapshotEvery < time.Second {
		errs = append(errs, errors.New("--snapshot-every must be at least 1s"))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.LogLevel))
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("--log-format %q: want text or json", c.LogFormat))
	}
	return errors.Join(errs...)
}

// Token configures `cabildo token create`.
type Token struct {
	Event          string
	Role           string
	Subject        string
	TTL            time.Duration
	DataDir        string
	SigningKey     string
	SigningKeyFile string
}

// LoadToken parses `cabildo token create` flags; like LoadServe it prints nothing.
func LoadToken(args []string, getenv func(string) string) (Token, error) {
	var c Token
	fs := tokenFlags(&c)
	if err := parse(fs, args, getenv); err != nil {
		return c, err
	}
	if c.SigningKeyFile == "" {
		c.SigningKeyFile = filepath.Join(c.DataDir, "signing.key")
	}
	var errs []error
	if c.Event == "" {
		errs = append(errs, errors.New("--event is required"))
	}
	if c.TTL <= 0 || c.TTL > 90*24*time.Hour {
		errs = append(errs, errors.New("--ttl must be between 1s and 90 days (2160h)"))
	}
	return c, usage(fs, errors.Join(errs...))
}

// TokenFlags is the flag set of `cabildo token create` with its defaults, for help.
func TokenFlags() *flag.FlagSet { return tokenFlags(new(Token)) }

func tokenFlags(c *Token) *flag.FlagSet {
	fs := newFlagSet("token create")
	fs.StringVar(&c.Event, "event", "", "event id the token is for (required)")
	fs.StringVar(&c.Role, "role", "organizer", "organizer or moderator")
	fs.StringVar(&c.Subject, "subject", "cli", "who the token is for, recorded with every change they make")
	fs.DurationVar(&c.TTL, "ttl", 72*time.Hour, "how long the token is valid")
	fs.StringVar(&c.DataDir, "data-dir", "data", "data directory of the server (holds the signing key)")
	fs.StringVar(&c.SigningKey, "signing-key", "", "the cluster's token signing key, hex (as given to serve)")
	fs.StringVar(&c.SigningKeyFile, "signing-key-file", "", "signing key file (default <data-dir>/signing.key, created by serve)")
	return fs
}
