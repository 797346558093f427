package demo

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cabildo/cabildo/internal/cabildo"
)

func load(t *testing.T) Programme {
	t.Helper()
	d, err := Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return d
}

// build writes the demo into a cabildo.Programme the way the use cases would: entities
// first, then each session checked against what is already there and inserted.
func build(t *testing.T) (*cabildo.Programme, []cabildo.Session) {
	t.Helper()
	d := load(t)
	if err := d.Event.Normalize(); err != nil {
		t.Fatalf("event: %v", err)
	}
	p := cabildo.NewProgramme(d.Event)
	for _, r := range d.Rooms {
		if err := r.Normalize(); err != nil {
			t.Fatalf("room %s: %v", r.ID, err)
		}
		p.Rooms[r.ID] = r
	}
	for _, tr := range d.Tracks {
		if err := tr.Normalize(); err != nil {
			t.Fatalf("track %s: %v", tr.ID, err)
		}
		p.Tracks[tr.ID] = tr
	}
	for _, sp := range d.Speakers {
		if err := sp.Normalize(); err != nil {
			t.Fatalf("speaker %s: %v", sp.ID, err)
		}
		p.Speakers[sp.ID] = sp
	}
	out := make([]cabildo.Session, 0, len(d.Sessions))
	for i, s := range d.Sessions {
		s.GUID = fmt.Sprintf("00000000-0000-4000-8000-%012d", i+1)
		s.ID = int64(i + 1)
		if err := p.CheckSession(&s, false); err != nil {
			t.Fatalf("session %d %q: %v", s.ID, s.Title.In(cabildo.ES), err)
		}
		p.Sessions[s.GUID] = s
		out = append(out, s)
	}
	return p, out
}

func TestLoad(t *testing.T) {
	d := load(t)
	if d.Event.ID != "ogp-sanjose-2027" || d.Event.TimeZone != "America/Costa_Rica" {
		t.Errorf("event = %q in %q, want ogp-sanjose-2027 in America/Costa_Rica", d.Event.ID, d.Event.TimeZone)
	}
	wantDays := []struct {
		date string
		kind cabildo.DayKind
	}{
		{"2027-04-13", cabildo.DayUnconference},
		{"2027-04-14", cabildo.DayConference},
		{"2027-04-15", cabildo.DayConference},
	}
	if len(d.Event.Days) != len(wantDays) {
		t.Fatalf("%d days, want %d", len(d.Event.Days), len(wantDays))
	}
	for i, w := range wantDays {
		if got := d.Event.Days[i]; got.Date != w.date || got.Kind != w.kind {
			t.Errorf("day %d = %s %s, want %s %s", i, got.Date, got.Kind, w.date, w.kind)
		}
	}
	counts := []struct {
		what      string
		n, lo, hi int
	}{
		{"rooms", len(d.Rooms), 9, 30},
		{"tracks", len(d.Tracks), 5, 7},
		{"speakers", len(d.Speakers), 40, 60},
		{"sessions", len(d.Sessions), 60, 200},
	}
	for _, c := range counts {
		if c.n < c.lo || c.n > c.hi {
			t.Errorf("%d %s, want %d to %d", c.n, c.what, c.lo, c.hi)
		}
	}
	for i, s := range d.Sessions {
		if s.Status != cabildo.StatusScheduled || s.GUID != "" || s.ID != 0 || s.Cancellation != nil {
			t.Errorf("session %d: status %q guid %q id %d cancellation %v; want scheduled and none of the rest",
				i, s.Status, s.GUID, s.ID, s.Cancellation)
		}
	}
}

func TestLoadReturnsFreshCopies(t *testing.T) {
	a := load(t)
	a.Event.Days[0].Kind = cabildo.DayWorkshops
	a.Sessions[0].Speakers = append(a.Sessions[0].Speakers[:0:0], "someone-else")
	a.Rooms[0].Name.ES = "changed"
	b := load(t)
	if b.Event.Days[0].Kind != cabildo.DayUnconference || b.Rooms[0].Name.ES == "changed" ||
		slices.Contains(b.Sessions[0].Speakers, "someone-else") {
		t.Error("changing one Load result changed the next")
	}
}

func TestDecodeIsStrict(t *testing.T) {
	const ok = `{"event":{"id":"x1","name":{"es":"X"},"time_zone":"UTC","days":[]},
		"rooms":[],"tracks":[],"speakers":[],"sessions":[%s]}`
	const sess = `{"title":{"es":"T"},"kind":"panel","language":"es","room":"r1",
		"start":"2027-04-14T09:00:00-06:00","end":"2027-04-14T10:00:00-06:00"%s}`
	tests := []struct {
		name    string
		data    string
		wantErr bool
	}{
		{"minimal", fmt.Sprintf(ok, fmt.Sprintf(sess, "")), false},
		{"trailing whitespace", fmt.Sprintf(ok, "") + "\n\n", false},
		{"unknown top-level field", `{"event":{},"extra":1}`, true},
		{"unknown event field", `{"event":{"id":"x1","nmae":{"es":"X"}}}`, true},
		{"unknown room field", `{"rooms":[{"id":"r1","seats":10}]}`, true},
		{"session with guid", fmt.Sprintf(ok, fmt.Sprintf(sess, `,"guid":"00000000-0000-4000-8000-000000000001"`)), true},
		{"session with id", fmt.Sprintf(ok, fmt.Sprintf(sess, `,"id":7`)), true},
		{"session with status", fmt.Sprintf(ok, fmt.Sprintf(sess, `,"status":"cancelled"`)), true},
		{"session with cancellation", fmt.Sprintf(ok, fmt.Sprintf(sess, `,"cancellation":{"code":"other"}`)), true},
		{"session with bad time", fmt.Sprintf(ok, `{"start":"9am"}`), true},
		{"second object", fmt.Sprintf(ok, "") + `{}`, true},
		{"empty", ``, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := decode([]byte(tt.data))
			if (err != nil) != tt.wantErr {
				t.Fatalf("decode error = %v, want error %v", err, tt.wantErr)
			}
			if err == nil {
				for _, s := range p.Sessions {
					if s.Status != cabildo.StatusScheduled {
						t.Errorf("status %q, want scheduled", s.Status)
					}
				}
			}
		})
	}
}

func TestEntitiesNormalize(t *testing.T) {
	d := load(t)
	type entity struct {
		kind, id string
		norm     func() error
	}
	var all []entity
	all = append(all, entity{"event", d.Event.ID, d.Event.Normalize})
	for i := range d.Rooms {
		all = append(all, entity{"room", d.Rooms[i].ID, d.Rooms[i].Normalize})
	}
	for i := range d.Tracks {
		all = append(all, entity{"track", d.Tracks[i].ID, d.Tracks[i].Normalize})
	}
	for i := range d.Speakers {
		all = append(all, entity{"speaker", d.Speakers[i].ID, d.Speakers[i].Normalize})
	}
	seen := map[string]bool{}
	for _, e := range all {
		t.Run(e.kind+"/"+e.id, func(t *testing.T) {
			if err := e.norm(); err != nil {
				t.Error(err)
			}
			if seen[e.kind+"/"+e.id] {
				t.Errorf("%s id %q is used twice", e.kind, e.id)
			}
			seen[e.kind+"/"+e.id] = true
		})
	}
}

func TestEverySessionFits(t *testing.T) {
	p, sessions := build(t)
	if len(p.Sessions) != len(sessions) {
		t.Fatalf("%d sessions in the programme, want %d", len(p.Sessions), len(sessions))
	}
	// Location loads the zone afresh on every call, so compare names, not pointers.
	zone := p.Event.Location().String()
	for _, s := range sessions {
		if s.Start.Location().String() != zone || s.End.Location().String() != zone {
			t.Errorf("%q: start in %v, want the event's zone", s.Title.In(cabildo.EN), s.Start.Location())
		}
	}
}

func TestProgrammeShape(t *testing.T) {
	p, sessions := build(t)
	dayKind := map[string]cabildo.DayKind{}
	for _, d := range p.Event.Days {
		dayKind[d.Date] = d.Kind
	}
	perDay := map[string]int{}
	rooms := map[string]bool{}
	kinds := map[cabildo.SessionKind]int{}
	plenaryRooms := map[string]bool{}
	var withTrack, nonBreak int
	for _, s := range sessions {
		day := p.Day(s)
		perDay[day]++
		rooms[s.Room] = true
		kinds[s.Kind]++
		if s.Kind == cabildo.KindPlenary {
			plenaryRooms[s.Room] = true
		}
		if s.Kind != cabildo.KindBreak {
			nonBreak++
			if s.Track != "" {
				withTrack++
			}
		}
		if (s.Kind == cabildo.KindUnconference) != (dayKind[day] == cabildo.DayUnconference &&
			s.Kind != cabildo.KindBreak && s.Kind != cabildo.KindCeremony && s.Kind != cabildo.KindPlenary) {
			t.Errorf("%q (%s) on a %s day", s.Title.In(cabildo.ES), s.Kind, dayKind[day])
		}
		if s.Kind == cabildo.KindPlenary || s.Kind == cabildo.KindKeynote || s.Kind == cabildo.KindTownHall {
			if len(s.Interpretation) == 0 {
				t.Errorf("%q (%s) has no interpretation", s.Title.In(cabildo.ES), s.Kind)
			}
		}
		if s.Kind == cabildo.KindBreak && p.Rooms[s.Room].Streamed {
			t.Errorf("break %q is in streamed room %s", s.Title.In(cabildo.ES), s.Room)
		}
	}

	conference := 0
	for day, n := range perDay {
		if dayKind[day] == cabildo.DayConference {
			conference += n
		}
	}
	if conference < 47 {
		t.Errorf("%d sessions on conference days, want at least 47", conference)
	}
	if perDay["2027-04-13"] < 10 {
		t.Errorf("%d sessions on the unconference day, want at least 10", perDay["2027-04-13"])
	}
	if len(rooms) < 8 {
		t.Errorf("sessions use %d rooms, want at least 8", len(rooms))
	}
	for _, k := range cabildo.SessionKinds {
		if kinds[k] == 0 {
			t.Errorf("no session of kind %s", k)
		}
	}
	if withTrack*10 < nonBreak*8 {
		t.Errorf("%d of %d non-break sessions have a track, want at least 80%%", withTrack, nonBreak)
	}

	var streamedPlenary, streamedOther int
	for id, r := range p.Rooms {
		switch {
		case !r.Streamed:
		case plenaryRooms[id]:
			streamedPlenary++
		default:
			streamedOther++
		}
		if r.Streamed && r.StreamURL == "" {
			t.Errorf("room %s is streamed without a stream_url", id)
		}
	}
	if streamedPlenary < 1 || streamedOther != 1 {
		t.Errorf("%d streamed plenary rooms and %d other streamed rooms, want at least 1 and exactly 1",
			streamedPlenary, streamedOther)
	}
}

func TestTownHall(t *testing.T) {
	p, sessions := build(t)
	var found []cabildo.Session
	for _, s := range sessions {
		if s.Kind == cabildo.KindTownHall {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d town halls, want 1", len(found))
	}
	th := found[0]
	if day := p.Day(th); day != "2027-04-14" || th.Start.Hour() < 12 {
		t.Errorf("town hall at %v, want the afternoon of 2027-04-14", th.Start)
	}
	if r := p.Rooms[th.Room]; !r.Streamed {
		t.Errorf("town hall in %s, which is not streamed", th.Room)
	}
	president := false
	for _, id := range th.Speakers {
		if strings.Contains(p.Speakers[id].Affiliation.ES, "Presidencia de la República") {
			president = true
		}
	}
	if !president {
		t.Error("the President of the Republic is not on the town hall")
	}
}

func TestParallelSessions(t *testing.T) {
	p, sessions := build(t)
	// The busiest instant of each conference day, counted at session starts.
	busiest := map[string]int{}
	for _, s := range sessions {
		n := 0
		for _, o := range sessions {
			if o.Kind != cabildo.KindBreak && !o.Start.After(s.Start) && o.End.After(s.Start) {
				n++
			}
		}
		if d := p.Day(s); n > busiest[d] {
			busiest[d] = n
		}
	}
	for _, d := range p.Event.Days {
		if d.Kind == cabildo.DayConference && busiest[d.Date] < 6 {
			t.Errorf("%s: at most %d sessions run at once, want at least 6", d.Date, busiest[d.Date])
		}
	}
}

func TestTexts(t *testing.T) {
	d := load(t)
	type text struct {
		where string
		t     cabildo.Text
	}
	texts := []text{
		{"event name", d.Event.Name},
		{"event description", d.Event.Description},
		{"event venue", d.Event.Venue},
	}
	for _, day := range d.Event.Days {
		texts = append(texts, text{"day " + day.Date + " title", day.Title})
	}
	for _, r := range d.Rooms {
		texts = append(texts, text{"room " + r.ID + " name", r.Name}, text{"room " + r.ID + " location", r.Location})
	}
	for _, tr := range d.Tracks {
		texts = append(texts, text{"track " + tr.ID + " name", tr.Name})
	}
	for _, sp := range d.Speakers {
		texts = append(texts, text{"speaker " + sp.ID + " affiliation", sp.Affiliation},
			text{"speaker " + sp.ID + " bio", sp.Bio})
	}
	var onlyES, onlyEN int
	for i, s := range d.Sessions {
		where := fmt.Sprintf("session %d", i)
		texts = append(texts, text{where + " title", s.Title})
		if s.Kind != cabildo.KindBreak || !s.Abstract.IsZero() {
			texts = append(texts, text{where + " abstract", s.Abstract})
		}
		switch {
		case s.Title.EN == "":
			onlyES++
		case s.Title.ES == "":
			onlyEN++
		}
	}
	both := 0
	for _, x := range texts {
		if x.t.IsZero() {
			t.Errorf("%s has no text", x.where)
		}
		if x.t.ES != "" && x.t.EN != "" {
			both++
		}
		for _, s := range []string{x.t.ES, x.t.EN} {
			if s != strings.TrimSpace(s) {
				t.Errorf("%s has surrounding space: %q", x.where, s)
			}
		}
	}
	if both*10 < len(texts)*9 {
		t.Errorf("%d of %d texts are in both languages, want at least 90%%", both, len(texts))
	}
	if onlyES == 0 || onlyEN == 0 {
		t.Errorf("%d session titles only in Spanish and %d only in English, want some of each to exercise fallback",
			onlyES, onlyEN)
	}
}

func TestSpeakers(t *testing.T) {
	p, sessions := build(t)
	used := map[string][]cabildo.Session{}
	for _, s := range sessions {
		switch {
		case s.Kind == cabildo.KindBreak && len(s.Speakers) > 0:
			t.Errorf("break %q has speakers", s.Title.In(cabildo.ES))
		case s.Kind != cabildo.KindBreak && (len(s.Speakers) < 1 || len(s.Speakers) > 4):
			t.Errorf("%q has %d speakers, want 1 to 4", s.Title.In(cabildo.ES), len(s.Speakers))
		}
		for _, id := range s.Speakers {
			for _, o := range used[id] {
				if o.Overlaps(s) {
					t.Errorf("speaker %s is in %q and %q at once", id, o.Title.In(cabildo.ES), s.Title.In(cabildo.ES))
				}
			}
			used[id] = append(used[id], s)
		}
	}
	countries := map[string]bool{}
	for id, sp := range p.Speakers {
		if len(used[id]) == 0 {
			t.Errorf("speaker %s is on no session", id)
		}
		countries[sp.Country] = true
	}
	if len(countries) < 10 {
		t.Errorf("speakers come from %d countries, want at least 10", len(countries))
	}
}

func TestOpeningHours(t *testing.T) {
	p, sessions := build(t)
	loc := p.Event.Location()
	for _, s := range sessions {
		if s.End.Sub(s.Start) > 12*time.Hour {
			t.Errorf("%q lasts %v", s.Title.In(cabildo.ES), s.End.Sub(s.Start))
		}
		if _, off := s.Start.In(loc).Zone(); off != -6*3600 {
			t.Errorf("%q: offset %d, want -06:00", s.Title.In(cabildo.ES), off)
		}
	}
}
