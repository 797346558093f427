package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/config"
	"github.com/cabildo/cabildo/internal/natslog"
	"github.com/cabildo/cabildo/internal/projection"
)

const coldStartUsage = `usage: cabildo loadgen coldstart [flags]

Writes a big log for measuring a node's cold start, or measures reading one back.

Without --measure it appends --entries records (programme changes on a few events with
about 800 sessions, announcements, group-committed questions and votes) to a new embedded
JetStream store in <data-dir>/jetstream, the directory 'cabildo serve --data-dir' uses. It
writes without fsync (the files are the same; only a crash while writing could lose them).
With --measure it reads that log back without serving anything and prints one JSON line:
the raw JetStream replay rate (an ordered consumer that does nothing), the same through
the log adapter, and a full rebuild of the projection in this process.
`

// coldStartMix is the share, in hundredths, of each kind of entry after the programme is set
// up: what a busy multi-event deployment logs. Votes and questions are group-committed, so
// one entry holds a batch.
var coldStartMix = []struct {
	kind  string
	share int
}{
	{"programme", 50}, // session.updated (moves, delays, speaker changes), cancellations, reinstatements
	{"announcement", 1},
	{"questions", 9}, // questions.asked, 1-3 questions each
	{"votes", 40},    // votes.cast, 1-15 votes each
}

// coldStartResult is the line the generator prints.
type coldStartResult struct {
	Scenario     string  `json:"scenario"`
	Entries      uint64  `json:"entries"`
	Events       int     `json:"events,omitempty"`
	Sessions     int     `json:"sessions,omitempty"`
	Programme    int     `json:"programme_changes,omitempty"`
	Announce     int     `json:"announcements,omitempty"`
	QEntries     int     `json:"question_entries,omitempty"`
	Questions    int     `json:"questions,omitempty"` // written; with --measure, in the rebuilt projection
	VEntries     int     `json:"vote_entries,omitempty"`
	Votes        int     `json:"votes,omitempty"` // written; with --measure, counted by the rebuilt projection
	Bytes        int64   `json:"bytes"`
	Seconds      float64 `json:"seconds,omitempty"`
	RawSeconds   float64 `json:"raw_replay_seconds,omitempty"`
	RawRate      float64 `json:"raw_replay_entries_per_second,omitempty"`
	LogSeconds   float64 `json:"log_consume_seconds,omitempty"`
	BuildSeconds float64 `json:"projection_rebuild_seconds,omitempty"`
	BuildRatio   float64 `json:"projection_rebuild_to_raw_replay,omitempty"`
	HeapMiB      float64 `json:"heap_after_rebuild_mib,omitempty"`
	SnapBytes    int     `json:"snapshot_bytes,omitempty"`
	SnapSeconds  float64 `json:"snapshot_encode_seconds,omitempty"`
	RestSeconds  float64 `json:"snapshot_restore_seconds,omitempty"`
}

func loadgenColdStart(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := config.NewFlagSet("loadgen coldstart")
	dir := fs.String("data-dir", "/tmp/cabildo-coldstart", "data directory to write the log into (or read it from, with --measure)")
	entries := fs.Int("entries", 1_000_000, "log entries to write")
	events := fs.Int("events", 4, "events sharing the log")
	sessions := fs.Int("sessions", 200, "sessions per event")
	seed := fs.Uint64("seed", 2027, "random seed: the same seed writes the same records")
	measure := fs.Bool("measure", false, "read the log in --data-dir back and report replay and rebuild times")
	cpuProfile := fs.String("cpuprofile", "", "with --measure, write a CPU profile of the projection rebuild to this file")
	if err := config.ParseArgs(fs, args); errors.Is(err, flag.ErrHelp) {
		return printHelp(stdout, coldStartUsage, fs)
	} else if err != nil {
		return err
	}
	if *entries < 1 || *events < 1 || *events > 50 || *sessions < 20 || *sessions > 5000 {
		return errors.New("loadgen coldstart: --entries must be positive, --events in [1, 50], --sessions in [20, 5000]")
	}
	var (
		res coldStartResult
		err error
	)
	if *measure {
		res, err = coldStartMeasure(ctx, *dir, *cpuProfile)
	} else {
		res, err = coldStartWrite(ctx, *dir, *entries, *events, *sessions, *seed, stderr)
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(res)
}

// coldStartServer runs a NATS server with JetStream on dir/jetstream, in this process.
// Writing the fixture skips fsync; measuring uses the embedded server as a node runs it.
// coldStartLog opens the log in dir on an embedded server of its own; stop ends both.
func coldStartLog(ctx context.Context, dir string, write bool) (*nats.Conn, *natslog.Log, natslog.Info, func(), error) {
	nc, stop, err := coldStartServer(dir, write)
	if err != nil {
		return nil, nil, natslog.Info{}, nil, err
	}
	lg, err := natslog.Open(ctx, nc, natslog.Config{})
	if err == nil {
		var info natslog.Info
		if info, err = lg.Info(ctx); err == nil {
			return nc, lg, info, stop, nil
		}
	}
	stop()
	return nil, nil, natslog.Info{}, nil, err
}

func coldStartServer(dir string, write bool) (*nats.Conn, func(), error) {
	store := filepath.Join(dir, "jetstream")
	if !write {
		emb, err := natslog.StartEmbedded(natslog.EmbeddedOptions{StoreDir: store})
		if err != nil {
			return nil, nil, err
		}
		nc, err := emb.Connect("coldstart")
		if err != nil {
			emb.Shutdown()
			return nil, nil, err
		}
		return nc, func() { nc.Close(); emb.Shutdown() }, nil
	}
	srv, err := server.NewServer(&server.Options{ServerName: "cabildo-embedded", JetStream: true, StoreDir: store,
		NoSigs: true, NoLog: true, DontListen: true, MaxPayload: 8 << 20})
	if err != nil {
		return nil, nil, err
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, nil, errors.New("loadgen coldstart: NATS not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		srv.Shutdown()
		return nil, nil, err
	}
	return nc, func() { nc.Close(); srv.Shutdown(); srv.WaitForShutdown() }, nil
}

type coldGen struct {
	rng      *rand.Rand
	events   []*coldEvent
	keys     int
	attendee int
}

type coldEvent struct {
	id        string
	sessions  []cabildo.Session
	rooms     []string
	speakers  []string
	townHalls []int64 // session ids with an open, unmoderated town hall
	asked     int64   // questions asked so far: the last question id
	recent    []coldQuestion
}

type coldQuestion struct {
	id      int64
	session int64
}

func coldStartWrite(ctx context.Context, dir string, n, events, sessions int, seed uint64, progress io.Writer) (coldStartResult, error) {
	res := coldStartResult{Scenario: "coldstart_write", Events: events, Sessions: events * sessions}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return res, err
	}
	_, lg, info, stop, err := coldStartLog(ctx, dir, true)
	if err != nil {
		return res, err
	}
	defer stop()
	if info.LastSeq > 0 {
		return res, fmt.Errorf("loadgen coldstart: %s already holds a log of %d entries; measure it with --measure or give an empty --data-dir", dir, info.LastSeq)
	}
	start := time.Now()
	g := &coldGen{rng: rand.New(rand.NewPCG(seed, seed^0x5eed))}
	var seq uint64
	appendRec := func(rec cabildo.Record) error {
		data, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		seq, _, err = lg.Append(ctx, rec.Subject(), data, nil, "")
		res.Bytes += int64(len(data))
		if err == nil && seq%100_000 == 0 {
			fmt.Fprintf(progress, "loadgen coldstart: %d entries written\n", seq)
		}
		return err
	}
	day := func(d int) string { return fmt.Sprintf("2027-04-%02d", 13+d) }
	for e := range events {
		ev := &coldEvent{id: fmt.Sprintf("coldstart-%d", e+1)}
		g.events = append(g.events, ev)
		info := cabildo.Event{ID: ev.id, Name: cabildo.Text{ES: fmt.Sprintf("Encuentro %d", e+1), EN: fmt.Sprintf("Meeting %d", e+1)},
			TimeZone: "America/Costa_Rica", City: "San José", Country: "CR",
			Days: []cabildo.Day{{Date: day(0), Kind: cabildo.DayConference, Start: "08:00", End: "20:00"},
				{Date: day(1), Kind: cabildo.DayConference, Start: "08:00", End: "20:00"},
				{Date: day(2), Kind: cabildo.DayWorkshops, Start: "08:00", End: "20:00"}}}
		if err := appendRec(cabildo.Record{Type: cabildo.RecordEventPut, Event: ev.id, EventInfo: &info}); err != nil {
			return res, err
		}
		for r := range 20 {
			id := fmt.Sprintf("sala-%d", r+1)
			ev.rooms = append(ev.rooms, id)
			if err := appendRec(cabildo.Record{Type: cabildo.RecordRoomPut, Event: ev.id, Room: &cabildo.Room{ID: id,
				Name: cabildo.Text{ES: "Sala " + fmt.Sprint(r+1), EN: "Room " + fmt.Sprint(r+1)}, Capacity: 50 + 10*r}}); err != nil {
				return res, err
			}
		}
		for t := range 6 {
			if err := appendRec(cabildo.Record{Type: cabildo.RecordTrackPut, Event: ev.id, Track: &cabildo.Track{ID: fmt.Sprintf("eje-%d", t+1),
				Name: cabildo.Text{ES: fmt.Sprintf("Eje %d", t+1)}, Color: "#336699"}}); err != nil {
				return res, err
			}
		}
		for s := range 120 {
			id := fmt.Sprintf("persona-%d", s+1)
			ev.speakers = append(ev.speakers, id)
			if err := appendRec(cabildo.Record{Type: cabildo.RecordSpeakerPut, Event: ev.id, Speaker: &cabildo.Speaker{ID: id,
				Name: fmt.Sprintf("Persona %d", s+1), Affiliation: cabildo.Text{ES: "Gobierno abierto"}, Country: "CR"}}); err != nil {
				return res, err
			}
		}
		loc := info.Location()
		for s := range sessions {
			start := time.Date(2027, 4, 13+s%3, 8, 0, 0, 0, loc).Add(time.Duration(s/3%20) * 30 * time.Minute)
			sess := cabildo.Session{GUID: fmt.Sprintf("%08x-0000-4000-8000-%012x", e+1, s+1),
				Title:    cabildo.Text{ES: fmt.Sprintf("Sesión %d: datos abiertos y participación", s+1), EN: fmt.Sprintf("Session %d: open data and participation", s+1)},
				Abstract: cabildo.Text{ES: "Cómo publicar datos de contratación que la gente pueda usar."},
				Kind:     cabildo.SessionKinds[s%len(cabildo.SessionKinds)], Status: cabildo.StatusScheduled, Language: cabildo.Langs[s%2],
				Room: ev.rooms[s%len(ev.rooms)], Track: fmt.Sprintf("eje-%d", s%6+1), Start: start, End: start.Add(time.Hour),
				Speakers: []string{ev.speakers[s%len(ev.speakers)], ev.speakers[(s*7+3)%len(ev.speakers)]}, Tags: []string{"datos"}}
			if err := appendRec(cabildo.Record{Type: cabildo.RecordSessionCreated, Event: ev.id, Session: &sess}); err != nil {
				return res, err
			}
			sess.ID = int64(seq)
			ev.sessions = append(ev.sessions, sess)
		}
		yes, no := true, false
		for t := range 10 {
			id := ev.sessions[t*sessions/10].ID
			ev.townHalls = append(ev.townHalls, id)
			if err := appendRec(cabildo.Record{Type: cabildo.RecordQAConfigured, Event: ev.id,
				QASettings: &cabildo.QASettings{Session: id, Open: &yes, Moderated: &no}}); err != nil {
				return res, err
			}
		}
	}
	for seq < uint64(n) {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		rec := g.next(&res)
		if err := appendRec(rec); err != nil {
			return res, err
		}
	}
	res.Entries, res.Seconds = seq, time.Since(start).Seconds()
	return res, nil
}

// next returns the next record of the mix.
func (g *coldGen) next(res *coldStartResult) cabildo.Record {
	ev := g.events[g.rng.IntN(len(g.events))]
	k := g.rng.IntN(100)
	for _, m := range coldStartMix {
		if k < m.share {
			switch m.kind {
			case "programme":
				res.Programme++
				return g.programme(ev)
			case "announcement":
				res.Announce++
				return g.announcement(ev)
			case "questions":
				res.QEntries++
				return g.questions(ev, res)
			default:
				if len(ev.recent) == 0 {
					res.QEntries++
					return g.questions(ev, res)
				}
				res.VEntries++
				return g.votes(ev, res)
			}
		}
		k -= m.share
	}
	panic("coldstart mix does not add up to 100")
}

func (g *coldGen) key(rec *cabildo.Record) {
	if g.rng.IntN(10) == 0 { // one write in ten carries an Idempotency-Key
		g.keys++
		rec.IdempotencyKey, rec.RequestHash = fmt.Sprintf("key-%d", g.keys), fmt.Sprintf("%016x", g.rng.Uint64())
	}
}

var coldReasons = []cabildo.ReasonCode{cabildo.ReasonRoomChange, cabildo.ReasonRunningLate, cabildo.ReasonCapacity, cabildo.ReasonSpeakerChange}

func (g *coldGen) programme(ev *coldEvent) cabildo.Record {
	i := g.rng.IntN(len(ev.sessions))
	s := &ev.sessions[i]
	reason := &cabildo.Reason{Code: coldReasons[g.rng.IntN(len(coldReasons))]}
	if g.rng.IntN(3) == 0 {
		reason.Text = cabildo.Text{ES: "Cambio por la organización", EN: "Changed by the organizers"}
	}
	typ := cabildo.RecordSessionUpdated
	switch k := g.rng.IntN(20); {
	case k == 0 && s.Status == cabildo.StatusScheduled:
		typ, s.Status, s.Cancellation = cabildo.RecordSessionCancelled, cabildo.StatusCancelled, reason
	case k == 0:
		typ, s.Status, s.Cancellation = cabildo.RecordSessionReinstated, cabildo.StatusScheduled, nil
	case k < 8:
		s.Room = ev.rooms[g.rng.IntN(len(ev.rooms))]
	case k < 16:
		d := time.Duration(g.rng.IntN(5)-2) * 15 * time.Minute
		s.Start, s.End = s.Start.Add(d), s.End.Add(d)
	default:
		s.Speakers = []string{ev.speakers[g.rng.IntN(len(ev.speakers))]}
	}
	next := s.Clone()
	rec := cabildo.Record{Type: typ, Event: ev.id, Actor: "organizer", Session: &next, Reason: reason}
	g.key(&rec)
	return rec
}

func (g *coldGen) announcement(ev *coldEvent) cabildo.Record {
	u := g.rng.Uint64()
	rec := cabildo.Record{Type: cabildo.RecordAnnouncementPosted, Event: ev.id, Actor: "organizer",
		Announcement: &cabildo.Announcement{GUID: fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", u>>32, u>>16&0xffff, u>>4&0xfff, u&0xfff, g.rng.Uint64()>>16),
			Title:    cabildo.Text{ES: "Cambio de sala", EN: "Room change"},
			Body:     cabildo.Text{ES: "La sesión de datos abiertos pasa a la Terraza Jardín.", EN: "The open data session moves to the Garden Terrace."},
			Priority: cabildo.PriorityImportant}}
	g.key(&rec)
	return rec
}

func (g *coldGen) questions(ev *coldEvent, res *coldStartResult) cabildo.Record {
	rec := cabildo.Record{Type: cabildo.RecordQuestionsAsked, Event: ev.id}
	for range 1 + g.rng.IntN(3) {
		g.attendee++
		session := ev.townHalls[g.rng.IntN(len(ev.townHalls))]
		a := cabildo.Asked{Question: cabildo.Question{Session: session, Lang: cabildo.ES,
			Text:     fmt.Sprintf("¿Cuándo publicará el gobierno los datos de contratación del año %d?", 2000+g.rng.IntN(30)),
			Attendee: fmt.Sprintf("att-%d", g.rng.IntN(20_000))}}
		if g.rng.IntN(10) == 0 {
			g.keys++
			a.IdempotencyKey, a.RequestHash = fmt.Sprintf("key-%d", g.keys), fmt.Sprintf("%016x", g.rng.Uint64())
		}
		rec.Asked = append(rec.Asked, a)
		ev.asked++
		ev.recent = append(ev.recent, coldQuestion{id: ev.asked, session: session})
		if len(ev.recent) > 400 {
			ev.recent = ev.recent[len(ev.recent)-300:]
		}
		res.Questions++
	}
	return rec
}

func (g *coldGen) votes(ev *coldEvent, res *coldStartResult) cabildo.Record {
	rec := cabildo.Record{Type: cabildo.RecordVotesCast, Event: ev.id}
	for range 1 + g.rng.IntN(15) {
		q := ev.recent[len(ev.recent)-1-min(len(ev.recent)-1, int(g.rng.ExpFloat64()*40))]
		rec.Votes = append(rec.Votes, cabildo.VoteOp{Session: q.session, Question: q.id,
			Attendee: fmt.Sprintf("att-%d", g.rng.IntN(20_000)), Up: g.rng.IntN(20) != 0})
		res.Votes++
	}
	return rec
}

// coldStartMeasure reads the log back three ways, each from the start: an ordered consumer
// that only counts (the floor any start-up pays), the log adapter's Consume doing nothing,
// and the adapter feeding a projection as a node does.
func coldStartMeasure(ctx context.Context, dir, cpuProfile string) (coldStartResult, error) {
	res := coldStartResult{Scenario: "coldstart_measure"}
	if _, err := os.Stat(filepath.Join(dir, "jetstream")); err != nil {
		return res, fmt.Errorf("loadgen coldstart: no log in %s: write one first (without --measure)", dir)
	}
	nc, lg, info, stop, err := coldStartLog(ctx, dir, false)
	if err != nil {
		return res, err
	}
	defer stop()
	last := info.LastSeq
	res.Entries = last
	if last == 0 {
		return res, errors.New("loadgen coldstart: the log is empty")
	}

	// The floor: JetStream's ordered consumer, nothing done per message.
	js, err := jetstream.New(nc)
	if err != nil {
		return res, err
	}
	t := time.Now()
	cons, err := js.OrderedConsumer(ctx, "CABILDO", jetstream.OrderedConsumerConfig{})
	if err != nil {
		return res, err
	}
	it, err := cons.Messages()
	if err != nil {
		return res, err
	}
	for {
		m, err := it.Next()
		if err != nil {
			it.Stop()
			return res, err
		}
		res.Bytes += int64(len(m.Data()))
		if md, err := m.Metadata(); err == nil && md.Sequence.Stream >= last {
			break
		}
	}
	it.Stop()
	res.RawSeconds = time.Since(t).Seconds()
	res.RawRate = float64(last) / res.RawSeconds

	consume := func(fn func(natslog.Entry)) (float64, error) {
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		t := time.Now()
		err := lg.Consume(cctx, 0, func(e natslog.Entry) error {
			fn(e)
			if e.Seq >= last {
				cancel()
			}
			return nil
		})
		if err != nil && !errors.Is(err, context.Canceled) {
			return 0, err
		}
		return time.Since(t).Seconds(), nil
	}
	if res.LogSeconds, err = consume(func(natslog.Entry) {}); err != nil {
		return res, err
	}
	runtime.GC()
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return res, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return res, err
		}
	}
	buildStart := time.Now()
	store := projection.New(projection.Options{})
	feed := store.Feeder(1024) // as a node consumes
	res.BuildSeconds, err = consume(func(e natslog.Entry) { feed.Add(e.Seq, e.Subject, e.Time, e.Data) })
	feed.Close()
	res.BuildSeconds = time.Since(buildStart).Seconds()
	if cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return res, err
	}
	res.BuildRatio = res.BuildSeconds / res.RawSeconds
	// What the rebuild holds, to check against what was written.
	store.Each(func(st *projection.EventState) {
		for _, qa := range st.QA {
			res.Questions += len(qa.Questions)
			for _, q := range qa.Questions {
				res.Votes += q.Votes
			}
		}
	})
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapMiB = float64(ms.HeapAlloc) / (1 << 20)

	t = time.Now()
	_, data, err := store.Snapshot()
	if err != nil {
		return res, err
	}
	res.SnapSeconds, res.SnapBytes = time.Since(t).Seconds(), len(data)
	t = time.Now()
	if _, err := projection.New(projection.Options{}).Restore(data); err != nil {
		return res, err
	}
	res.RestSeconds = time.Since(t).Seconds()
	return res, nil
}
