package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cabildo/cabildo/internal/config"
	"github.com/cabildo/cabildo/pkg/api"
	"github.com/cabildo/cabildo/pkg/client"
)

// wsResult is one line of `cabildo loadgen ws`.
type wsResult struct {
	Scenario         string  `json:"scenario"`
	Connections      int     `json:"connections"`
	Connected        int     `json:"connected"`
	ConnectPerSecond float64 `json:"connect_per_second"`
	ChangesPerSecond float64 `json:"changes_per_second"`
	Changes          int     `json:"changes"`
	Expected         int     `json:"expected_deliveries"`
	Delivered        int     `json:"delivered"`
	Lost             int     `json:"lost"`
	Gaps             uint64  `json:"gaps"`
	Duplicates       uint64  `json:"duplicates"`
	Reconnects       uint64  `json:"reconnects"`
	P50ms            float64 `json:"p50_ms"`
	P95ms            float64 `json:"p95_ms"`
	P99ms            float64 `json:"p99_ms"`
	Maxms            float64 `json:"max_ms"`
	// Server memory per connection, from its RSS growth over the idle baseline: right
	// after the ramp (connection set-up garbage included) and at the end of the run.
	ServerRSSPerConnK    float64 `json:"server_rss_per_connection_kib,omitempty"`
	ServerRSSEndPerConnK float64 `json:"server_rss_end_per_connection_kib,omitempty"`
	ServerCPUPerDelUs    float64 `json:"server_cpu_per_delivery_us,omitempty"`
}

// loadgenWS ramps N SDK clients on one channel, makes programme changes at a fixed rate
// and measures how fast and how completely every client receives them. Latency runs from
// the moment the organizer's write is sent to the moment a client has the update.
func loadgenWS(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := config.NewFlagSet("loadgen ws")
	base := fs.String("url", "http://127.0.0.1:8080", "node base URL (loopback only)")
	event := fs.String("event", "ogp-sanjose-2027", "event whose schedule channel the clients follow")
	tok := fs.String("token", "", "organizer token for the changes (required)")
	n := fs.Int("clients", 1000, "websocket connections")
	rampRate := fs.Int("ramp", 2000, "connections opened per second")
	changeRate := fs.Float64("rate", 1, "programme changes per second")
	dur := fs.Duration("duration", 30*time.Second, "how long changes are made")
	pid := fs.Int("server-pid", 0, "server process id, to read its memory and CPU from /proc (same machine)")
	name := fs.String("scenario", "", "name for the result line")
	if err := config.ParseArgs(fs, args); errors.Is(err, flag.ErrHelp) {
		return printHelp(stdout, "usage: cabildo loadgen ws [flags]\n", fs)
	} else if err != nil {
		return err
	}
	u, err := url.Parse(*base)
	if err != nil || !isLoopback(u.Hostname()) {
		return fmt.Errorf("loadgen: --url must point at a loopback address, not %q", *base)
	}
	if *tok == "" || *n < 1 || *n > 20000 || *changeRate <= 0 || *changeRate > 1000 || *dur <= 0 || *dur > time.Hour {
		return errors.New("loadgen ws: need --token, 1 ≤ --clients ≤ 20000, 0 < --rate ≤ 1000, 0 < --duration ≤ 1h")
	}
	if *name == "" {
		*name = fmt.Sprintf("ws_%d_clients_%g_per_s", *n, *changeRate)
	}
	httpc := &http.Client{Timeout: 10 * time.Second}
	lg := &restLoad{client: httpc, base: *base, event: *event, token: *tok}
	sessions, _, err := lg.prepare(ctx)
	if err != nil {
		return err
	}
	rss0, _ := procStats(*pid)

	// Ramp.
	type recv struct {
		version uint64
		at      time.Time
	}
	var (
		// received[i] belongs to client i's read goroutine until that client is closed:
		// no lock shared by ten thousand clients distorts the latencies measured.
		received  = make([][]recv, *n)
		clients   = make([]*client.Client, *n)
		subs      = make([]*client.Subscription, *n)
		connected atomic.Int64
	)
	wsURL := "ws" + strings.TrimPrefix(*base, "http") + "/v1/ws"
	rampStart := time.Now()
	tick := time.NewTicker(time.Second / time.Duration(max(*rampRate, 1)))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range *n {
		<-tick.C
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			c, err := client.Dial(dctx, client.Options{URL: wsURL, MinBackoff: 200 * time.Millisecond, MaxBackoff: 5 * time.Second})
			if err != nil {
				return
			}
			clients[i] = c
			s, err := c.Subscribe("schedule:"+*event, "en", client.Handler{
				OnUpdate: func(v, _ uint64, _ json.RawMessage) {
					received[i] = append(received[i], recv{v, time.Now()})
				},
			})
			if err == nil {
				subs[i] = s
			}
		}()
	}
	tick.Stop()
	wg.Wait()
	// Connected means subscribed: the client has its snapshot.
	deadline := time.Now().Add(60 * time.Second)
	for i := range *n {
		for subs[i] != nil && time.Now().Before(deadline) {
			if _, ok := subs[i].Last(clients[i]); ok {
				connected.Add(1)
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	rampTook := time.Since(rampStart)
	rss1, cpu1 := procStats(*pid)

	// Changes at a fixed rate; each write's send time keyed by the version it produced.
	sent := map[uint64]time.Time{}
	every := time.Duration(float64(time.Second) / *changeRate)
	ticker := time.NewTicker(every)
	stop := time.After(*dur)
	writeErrs := 0
loop:
	for i := 0; ; i++ {
		select {
		case <-stop:
			break loop
		case <-ticker.C:
		}
		t0 := time.Now()
		v, err := lg.nudgeVersion(ctx, sessions[0], i)
		if err != nil {
			writeErrs++
			continue
		}
		sent[v] = t0
	}
	ticker.Stop()
	// Let the last deliveries arrive.
	var last uint64
	for v := range sent {
		last = max(last, v)
	}
	settle := time.Now().Add(10 * time.Second)
	for time.Now().Before(settle) {
		behind := 0
		for i := range *n {
			if subs[i] != nil {
				if v, _ := subs[i].Last(clients[i]); v < last {
					behind++
				}
			}
		}
		if behind == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	rss2, cpu2 := procStats(*pid)

	res := wsResult{Scenario: *name, Connections: *n, Connected: int(connected.Load()),
		ConnectPerSecond: float64(connected.Load()) / rampTook.Seconds(),
		ChangesPerSecond: *changeRate, Changes: len(sent), Expected: len(sent) * int(connected.Load())}
	// Closing a client waits for its read goroutine: its received list is then ours.
	var closing sync.WaitGroup
	for _, c := range clients {
		if c != nil {
			closing.Go(func() { c.Close() })
		}
	}
	closing.Wait()
	var lat []time.Duration
	for i := range *n {
		if subs[i] == nil {
			continue
		}
		for _, r := range received[i] {
			if t0, ok := sent[r.version]; ok {
				lat = append(lat, r.at.Sub(t0))
			}
		}
		st := clients[i].Stats()
		res.Gaps += st.Gaps
		res.Duplicates += st.Duplicates
		res.Reconnects += st.Connects - 1
	}
	res.summarize(lat, int64(connected.Load()), rss1-rss0, rss2-rss0, cpu2-cpu1)
	if writeErrs > 0 {
		fmt.Fprintf(stderr, "loadgen ws: %d writes failed\n", writeErrs)
	}
	return json.NewEncoder(stdout).Encode(res)
}

// nudgeVersion makes one programme change and returns the version it produced.
func (l *restLoad) nudgeVersion(ctx context.Context, s api.Session, i int) (uint64, error) {
	req, err := l.nudgeRequest(ctx, s, i)
	if err != nil {
		return 0, err
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var body struct {
		Version uint64 `json:"version"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 {
		return 0, fmt.Errorf("change: status %d: %v", resp.StatusCode, err)
	}
	return body.Version, nil
}

// procStats reads a local process's resident memory (KiB) and CPU time (µs).
func procStats(pid int) (rssKiB int64, cpuMicros int64) {
	if pid <= 0 {
		return 0, 0
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				rssKiB, _ = strconv.ParseInt(f[1], 10, 64)
			}
		}
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		// Fields after the command name (which may hold spaces) start after ") ".
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			f := strings.Fields(s[i+2:])
			if len(f) > 12 {
				ut, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				cpuMicros = (ut + st) * 10_000 // clock ticks of 10 ms (USER_HZ 100)
			}
		}
	}
	return rssKiB, cpuMicros
}

// summarize fills in latency percentiles and the server's memory per connection and CPU
// per delivery (growths measured from /proc; zero when unknown).
func (res *wsResult) summarize(lat []time.Duration, connected, rssGrowthKiB, rssEndGrowthKiB, cpuMicros int64) {
	res.Delivered = len(lat)
	res.Lost = res.Expected - res.Delivered
	slices.Sort(lat)
	pct := func(p float64) float64 { return ms(percentile(lat, p)) }
	res.P50ms, res.P95ms, res.P99ms, res.Maxms = pct(.5), pct(.95), pct(.99), pct(1)
	if rssGrowthKiB > 0 && connected > 0 {
		res.ServerRSSPerConnK = float64(rssGrowthKiB) / float64(connected)
	}
	if rssEndGrowthKiB > 0 && connected > 0 {
		res.ServerRSSEndPerConnK = float64(rssEndGrowthKiB) / float64(connected)
	}
	if cpuMicros > 0 && res.Delivered > 0 {
		res.ServerCPUPerDelUs = float64(cpuMicros) / float64(res.Delivered)
	}
}
