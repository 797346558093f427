package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/cabildo/cabildo/internal/config"
	"github.com/cabildo/cabildo/pkg/api"
)

const loadgenUsage = `usage: cabildo loadgen <mode> [flags]

Measures a running node from its own process; each scenario prints one JSON line.

modes:
  rest       schedule reads (200 and 304), session reads and acknowledged writes (--token)
  ws         N websocket clients on one channel while programme changes are made:
             delivery latency, loss, gaps, server memory and CPU
  townhall   an audience, moderators, questions and votes: ask-to-screen latency,
             votes lost or counted twice
  peer       the ws load against a server speaking the Centrifugo protocol, for comparison
  coldstart  write a big log (1,000,000 entries) for cold-start measurements, or read one
             back: raw replay rate and projection rebuild time
  floor      serve one read's bytes from a minimal Go server: the floor for reads

Run 'cabildo loadgen <mode> --help' for a mode's flags.
`

// loadgen measures a running node from its own process. Scenarios print one JSON line
// each, so runs can be compared and kept (docs/benchmarks.md).
func loadgen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return &config.UsageError{Cmd: "loadgen", Msg: "missing mode: rest, ws, townhall, peer, coldstart or floor", SeeHelp: true}
	}
	if isHelp(args) {
		fmt.Fprint(stdout, loadgenUsage)
		return flag.ErrHelp
	}
	mode := map[string]func(context.Context, []string, io.Writer, io.Writer) error{
		"rest": loadgenREST, "ws": loadgenWS, "townhall": loadgenTownHall, "peer": loadgenPeer,
		"coldstart": loadgenColdStart, "floor": loadgenFloor,
	}[args[0]]
	if mode == nil {
		return &config.UsageError{Cmd: "loadgen", Msg: fmt.Sprintf("unknown mode %q: rest, ws, townhall, peer, coldstart or floor", args[0]), SeeHelp: true}
	}
	if slices.ContainsFunc(args[1:], func(a string) bool { return a == "-h" || a == "-help" || a == "--help" }) {
		// A mode prints its flags where its flag set writes; help belongs on stdout.
		stderr = stdout
	}
	return mode(ctx, args[1:], stdout, stderr)
}

func loadgenREST(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := config.NewFlagSet("loadgen rest")
	base := fs.String("url", "http://127.0.0.1:8080", "node base URL (loopback only)")
	event := fs.String("event", "ogp-sanjose-2027", "event to read and change")
	tok := fs.String("token", "", "organizer token for the write scenarios (skipped without one)")
	dur := fs.Duration("duration", 10*time.Second, "length of each scenario")
	conc := fs.Int("concurrency", 16, "concurrent clients in the throughput scenarios")
	if err := config.ParseArgs(fs, args); errors.Is(err, flag.ErrHelp) {
		return printHelp(stdout, "usage: cabildo loadgen rest [flags]\n", fs)
	} else if err != nil {
		return err
	}
	if err := loopbackURL("loadgen", "--url", *base); err != nil {
		return err
	}
	if *dur <= 0 || *dur > 10*time.Minute || *conc < 1 || *conc > 1024 {
		return errors.New("loadgen: --duration must be in (0, 10m] and --concurrency in [1, 1024]")
	}
	// Plain bodies unless a scenario asks for gzip itself (Go's client would otherwise ask
	// for it behind every request and decompress in this process).
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		MaxIdleConns: *conc * 2, MaxIdleConnsPerHost: *conc * 2, IdleConnTimeout: time.Minute,
		DisableCompression: true}}
	lg := &restLoad{client: client, base: *base, event: *event, token: *tok}
	sessions, etag, err := lg.prepare(ctx)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	scenarios := []scenario{
		{"rest_schedule_200", *conc, func(int, int) error { return lg.get(ctx, "/schedule", "", 200) }},
		{"rest_schedule_200_gzip", *conc, func(int, int) error { return lg.getGzip(ctx, "/schedule") }},
		{"rest_schedule_304", *conc, func(int, int) error { return lg.get(ctx, "/schedule", etag, 304) }},
		{"rest_session_200", *conc, func(w, i int) error {
			return lg.get(ctx, fmt.Sprintf("/sessions/%d", sessions[(w+i)%len(sessions)].ID), "", 200)
		}},
	}
	if *tok != "" {
		scenarios = append(scenarios,
			scenario{"rest_write_ack_1client", 1, func(w, i int) error { return lg.nudge(ctx, sessions[0], i) }},
			scenario{"rest_write_ack", *conc, func(w, i int) error { return lg.nudge(ctx, sessions[w%len(sessions)], i) }})
	}
	for _, sc := range scenarios {
		res := measure(ctx, sc.name, sc.conc, *dur, sc.op)
		if err := enc.Encode(res); err != nil {
			return err
		}
	}
	return nil
}

// scenario is one measured load: conc workers calling op until the duration ends.
type scenario struct {
	name string
	conc int
	op   func(worker, i int) error
}

// loopbackURL refuses a URL whose host is not a loopback address: load goes to this
// machine only. cmd and flags name what the message is about.
func loopbackURL(cmd, flags, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || !isLoopback(u.Hostname()) {
		return fmt.Errorf("%s: %s must point at a loopback address, not %q", cmd, flags, raw)
	}
	return nil
}

func isLoopback(host string) bool {
	return host == "127.0.0.1" || host == "::1" || host == "localhost"
}

type restLoad struct {
	client *http.Client
	base   string
	event  string
	token  string
}

// prepare reads the schedule once: its ETag for the 304 scenario and sessions to change.
func (l *restLoad) prepare(ctx context.Context) ([]api.Session, string, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", l.base+"/v1/events/"+l.event+"/schedule", nil)
	resp, err := l.client.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("loadgen: read schedule: %w", err)
	}
	defer resp.Body.Close()
	var body api.Schedule
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 {
		return nil, "", fmt.Errorf("loadgen: read schedule: status %d: %v", resp.StatusCode, err)
	}
	// Sessions that can move one minute later and back without leaving their day.
	var out []api.Session
	for _, s := range body.Sessions {
		if end, err := time.Parse(time.RFC3339, s.End); err == nil && end.Hour() < 18 && s.Kind != "break" {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, "", errors.New("loadgen: the event has no sessions to change")
	}
	return out, resp.Header.Get("ETag"), nil
}

func (l *restLoad) get(ctx context.Context, path, etag string, want int) error {
	req, _ := http.NewRequestWithContext(ctx, "GET", l.base+"/v1/events/"+l.event+path, nil)
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	return l.send(req, want)
}

// getGzip reads path as an app on mobile data does: Accept-Encoding gzip, the compressed
// bytes taken as they come (not decompressed here).
func (l *restLoad) getGzip(ctx context.Context, path string) error {
	req, _ := http.NewRequestWithContext(ctx, "GET", l.base+"/v1/events/"+l.event+path, nil)
	req.Header.Set("Accept-Encoding", "gzip")
	return l.send(req, 200)
}

// nudge moves a session one minute later on odd calls and back on even ones: every call
// is a real, acknowledged programme change.
func (l *restLoad) nudge(ctx context.Context, s api.Session, i int) error {
	req, err := l.nudgeRequest(ctx, s, i)
	if err != nil {
		return err
	}
	return l.send(req, 200)
}

func (l *restLoad) nudgeRequest(ctx context.Context, s api.Session, i int) (*http.Request, error) {
	start, _ := time.Parse(time.RFC3339, s.Start)
	end, _ := time.Parse(time.RFC3339, s.End)
	if i%2 == 0 {
		start, end = start.Add(time.Minute), end.Add(time.Minute)
	}
	body, _ := json.Marshal(map[string]string{"start": start.Format(time.RFC3339), "end": end.Format(time.RFC3339)})
	req, err := http.NewRequestWithContext(ctx, "PATCH", fmt.Sprintf("%s/v1/events/%s/sessions/%d?force=true", l.base, l.event, s.ID), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+l.token)
	return req, nil
}

func (l *restLoad) send(req *http.Request, want int) error {
	resp, err := l.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("status %d, want %d", resp.StatusCode, want)
	}
	return nil
}

type loadResult struct {
	Scenario    string  `json:"scenario"`
	Concurrency int     `json:"concurrency"`
	Seconds     float64 `json:"seconds"`
	Requests    int     `json:"requests"`
	Errors      int     `json:"errors"`
	PerSecond   float64 `json:"per_second"`
	P50ms       float64 `json:"p50_ms"`
	P95ms       float64 `json:"p95_ms"`
	P99ms       float64 `json:"p99_ms"`
	Maxms       float64 `json:"max_ms"`
	FirstError  string  `json:"first_error,omitempty"`
}

// measure runs op from conc workers for d and reports throughput and latency percentiles.
// Each worker's i counts its own calls, so a worker changing one session alternates.
func measure(ctx context.Context, name string, conc int, d time.Duration, op func(worker, i int) error) loadResult {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var (
		mu       sync.Mutex
		lat      []time.Duration
		errs     int
		firstErr string
		wg       sync.WaitGroup
	)
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for i := 0; ctx.Err() == nil; i++ {
				t0 := time.Now()
				err := op(w, i)
				if ctx.Err() != nil {
					break // a call cut off by the deadline is not a result
				}
				if err != nil {
					mu.Lock()
					errs++
					if firstErr == "" {
						firstErr = err.Error()
					}
					mu.Unlock()
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(lat)
	pct := func(p float64) float64 { return ms(percentile(lat, p)) }
	return loadResult{Scenario: name, Concurrency: conc, Seconds: elapsed.Seconds(), Requests: len(lat), Errors: errs,
		PerSecond: float64(len(lat)) / elapsed.Seconds(), P50ms: pct(.50), P95ms: pct(.95), P99ms: pct(.99), Maxms: pct(1),
		FirstError: firstErr}
}

// percentile is the p-th (0..1) of sorted durations, zero when there are none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(float64(len(sorted)-1)*p)]
}

// ms is d in milliseconds, to the microsecond.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
