package cabildo_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cabildo/cabildo/internal/cabildo"
)

// fieldCodes returns the "field code" pairs of a validation error, sorted: Text fields are
// checked per language in map order, so the order of field errors is not stable.
func fieldCodes(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var e *cabildo.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *cabildo.Error", err, err)
	}
	if e.Code != cabildo.CodeValidation {
		t.Fatalf("error code = %q, want %q", e.Code, cabildo.CodeValidation)
	}
	if e.Message == "" {
		t.Errorf("validation error has no message")
	}
	var out []string
	for _, f := range e.Fields {
		if f.Message == "" {
			t.Errorf("field error %s/%s has no message", f.Field, f.Code)
		}
		out = append(out, f.Field+" "+f.Code)
	}
	slices.Sort(out)
	return out
}

func testEvent() cabildo.Event {
	return cabildo.Event{
		ID:       "ogp-test-2027",
		Name:     cabildo.Text{ES: "Encuentro de prueba", EN: "Test meeting"},
		TimeZone: "America/Costa_Rica",
		Country:  "CR",
		City:     "San José",
		URL:      "https://encuentro.example.org/2027/",
		Days: []cabildo.Day{
			{Date: "2027-04-13", Kind: cabildo.DayUnconference, Start: "08:00", End: "19:00"},
			{Date: "2027-04-14", Kind: cabildo.DayConference, Start: "08:00", End: "19:00"},
		},
	}
}

func TestEventNormalize(t *testing.T) {
	long := strings.Repeat("a", cabildo.MaxShortText+1)
	tests := []struct {
		name   string
		edit   func(*cabildo.Event)
		fields []string
	}{
		{"valid", func(*cabildo.Event) {}, nil},
		{"valid with only english name", func(e *cabildo.Event) { e.Name = cabildo.Text{EN: "Meeting"} }, nil},
		{"valid UTC", func(e *cabildo.Event) { e.TimeZone = "UTC" }, nil},
		{"bad slug upper case", func(e *cabildo.Event) { e.ID = "OGP" }, []string{"id invalid_slug"}},
		{"bad slug too short", func(e *cabildo.Event) { e.ID = "o" }, []string{"id invalid_slug"}},
		{"bad slug leading hyphen", func(e *cabildo.Event) { e.ID = "-ogp" }, []string{"id invalid_slug"}},
		{"bad slug dot", func(e *cabildo.Event) { e.ID = "ogp.2027" }, []string{"id invalid_slug"}},
		{"missing name", func(e *cabildo.Event) { e.Name = cabildo.Text{} }, []string{"name required"}},
		{"blank name", func(e *cabildo.Event) { e.Name = cabildo.Text{ES: "  ", EN: "\t"} }, []string{"name required"}},
		{"empty tz", func(e *cabildo.Event) { e.TimeZone = "" }, []string{"time_zone invalid_time_zone"}},
		{"bad tz", func(e *cabildo.Event) { e.TimeZone = "America/Atlantis" }, []string{"time_zone invalid_time_zone"}},
		{"no days", func(e *cabildo.Event) { e.Days = nil }, []string{"days required"}},
		{"too many days", func(e *cabildo.Event) {
			e.Days = nil
			for i := range cabildo.MaxDays + 1 {
				d := time.Date(2027, 3, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, i)
				e.Days = append(e.Days, cabildo.Day{Date: d.Format(time.DateOnly), Kind: cabildo.DayConference, Start: "08:00", End: "18:00"})
			}
		}, []string{"days too_many"}},
		{"days not ascending", func(e *cabildo.Event) { e.Days[0], e.Days[1] = e.Days[1], e.Days[0] },
			[]string{"days[1].date not_ascending"}},
		{"same date twice overlapping", func(e *cabildo.Event) { e.Days[1].Date = e.Days[0].Date },
			[]string{"days[1].date not_ascending"}},
		{"day end before start", func(e *cabildo.Event) { e.Days[0].Start, e.Days[0].End = "18:00", "09:00" },
			[]string{"days[0].end before_start"}},
		{"day end equals start", func(e *cabildo.Event) { e.Days[1].End = e.Days[1].Start },
			[]string{"days[1].end before_start"}},
		{"bad day kind", func(e *cabildo.Event) { e.Days[1].Kind = "party" }, []string{"days[1].kind invalid_enum"}},
		{"bad day date format", func(e *cabildo.Event) { e.Days[0].Date = "13/04/2027" }, []string{"days[0] invalid_time"}},
		{"bad day clock", func(e *cabildo.Event) { e.Days[0].Start = "8:00" }, []string{"days[0] invalid_time"}},
		{"day clock 24:00", func(e *cabildo.Event) { e.Days[0].End = "24:00" }, []string{"days[0] invalid_time"}},
		{"impossible date", func(e *cabildo.Event) { e.Days[0].Date = "2027-02-30" }, []string{"days[0].date invalid_date"}},
		{"bad country lower case", func(e *cabildo.Event) { e.Country = "cr" }, []string{"country invalid_country"}},
		{"bad country alpha-3", func(e *cabildo.Event) { e.Country = "CRI" }, []string{"country invalid_country"}},
		{"bad url scheme", func(e *cabildo.Event) { e.URL = "ftp://example.org/" }, []string{"url invalid_url"}},
		{"bad url relative", func(e *cabildo.Event) { e.URL = "/2027/" }, []string{"url invalid_url"}},
		{"bad url no host", func(e *cabildo.Event) { e.URL = "https://" }, []string{"url invalid_url"}},
		{"too long name", func(e *cabildo.Event) { e.Name.ES = long }, []string{"name.es too_long"}},
		{"name at the limit", func(e *cabildo.Event) { e.Name.ES = long[1:] }, nil},
		{"too long name counts runes", func(e *cabildo.Event) { e.Name.EN = strings.Repeat("á", cabildo.MaxShortText) }, nil},
		{"too long description", func(e *cabildo.Event) { e.Description.EN = strings.Repeat("b", cabildo.MaxLongText+1) },
			[]string{"description.en too_long"}},
		{"too long venue", func(e *cabildo.Event) { e.Venue.ES = long }, []string{"venue.es too_long"}},
		{"too long city", func(e *cabildo.Event) { e.City = long }, []string{"city too_long"}},
		{"too long day title", func(e *cabildo.Event) { e.Days[1].Title.EN = long }, []string{"days[1].title.en too_long"}},
		{"invalid utf8 name", func(e *cabildo.Event) { e.Name.EN = "Meeting \xff" }, []string{"name.en invalid_utf8"}},
		{"invalid utf8 description", func(e *cabildo.Event) { e.Description.ES = "\xc3\x28" }, []string{"description.es invalid_utf8"}},
		{"several problems", func(e *cabildo.Event) { e.ID, e.Country, e.Days = "X", "xx", nil },
			[]string{"country invalid_country", "days required", "id invalid_slug"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := testEvent()
			tt.edit(&ev)
			got := fieldCodes(t, ev.Normalize())
			if diff := cmp.Diff(got, tt.fields); diff != "" {
				t.Errorf("Normalize fields (-got +want):\n%s", diff)
			}
		})
	}
}

func TestEventNormalizeTrims(t *testing.T) {
	ev := testEvent()
	ev.Name = cabildo.Text{ES: "  Encuentro \n", EN: "\tMeeting "}
	ev.Days[0].Title = cabildo.Text{ES: " Desconferencia "}
	if err := ev.Normalize(); err != nil {
		t.Fatalf("Normalize: %v", err)
	}
	if diff := cmp.Diff(ev.Name, cabildo.Text{ES: "Encuentro", EN: "Meeting"}); diff != "" {
		t.Errorf("name (-got +want):\n%s", diff)
	}
	if got, want := ev.Days[0].Title.ES, "Desconferencia"; got != want {
		t.Errorf("day title = %q, want %q", got, want)
	}
}

// A time zone that means "wherever this server runs" would make nodes in different zones
// disagree on the event's days.
func TestEventNormalizeRejectsLocalTimeZone(t *testing.T) {
	ev := testEvent()
	ev.TimeZone = "Local"
	if diff := cmp.Diff(fieldCodes(t, ev.Normalize()), []string{"time_zone invalid_time_zone"}); diff != "" {
		t.Errorf("Normalize fields (-got +want):\n%s", diff)
	}
}

// The not_ascending message says "one entry per date", but two non-overlapping entries on
// one date pass.
func TestEventNormalizeOneEntryPerDate(t *testing.T) {
	ev := testEvent()
	ev.Days = []cabildo.Day{
		{Date: "2027-04-13", Kind: cabildo.DayConference, Start: "08:00", End: "12:00"},
		{Date: "2027-04-13", Kind: cabildo.DayConference, Start: "13:00", End: "18:00"},
	}
	if diff := cmp.Diff(fieldCodes(t, ev.Normalize()), []string{"days[1].date not_ascending"}); diff != "" {
		t.Errorf("Normalize fields (-got +want):\n%s", diff)
	}
}

func TestRoomNormalize(t *testing.T) {
	tests := []struct {
		name   string
		room   cabildo.Room
		fields []string
	}{
		{"valid", cabildo.Room{ID: "sala-1", Name: cabildo.Text{ES: "Sala 1"}, Capacity: 120}, nil},
		{"valid streamed", cabildo.Room{ID: "auditorio", Name: cabildo.Text{EN: "Auditorium"}, Streamed: true,
			StreamURL: "https://stream.example.org/auditorio.m3u8"}, nil},
		{"streamed without url", cabildo.Room{ID: "auditorio", Name: cabildo.Text{EN: "Auditorium"}, Streamed: true}, nil},
		{"bad slug", cabildo.Room{ID: "Sala 1", Name: cabildo.Text{ES: "Sala 1"}}, []string{"id invalid_slug"}},
		{"missing name", cabildo.Room{ID: "sala-1"}, []string{"name required"}},
		{"blank name", cabildo.Room{ID: "sala-1", Name: cabildo.Text{ES: "   "}}, []string{"name required"}},
		{"negative capacity", cabildo.Room{ID: "sala-1", Name: cabildo.Text{ES: "Sala"}, Capacity: -1}, []string{"capacity out_of_range"}},
		{"huge capacity", cabildo.Room{ID: "sala-1", Name: cabildo.Text{ES: "Sala"}, Capacity: 1_000_001}, []string{"capacity out_of_range"}},
		{"stream url not streamed", cabildo.Room{ID: "sala-1", Name: cabildo.Text{ES: "Sala"}, StreamURL: "https://s.example.org/x"},
			[]string{"stream_url not_streamed"}},
		{"bad stream url", cabildo.Room{ID: "sala-1", Name: cabildo.Text{ES: "Sala"}, Streamed: true, StreamURL: "rtmp://s.example.org/x"},
			[]string{"stream_url invalid_url"}},
		{"too long location", cabildo.Room{ID: "sala-1", Name: cabildo.Text{ES: "Sala"},
			Location: cabildo.Text{EN: strings.Repeat("x", cabildo.MaxShortText+1)}}, []string{"location.en too_long"}},
		{"invalid utf8 name", cabildo.Room{ID: "sala-1", Name: cabildo.Text{ES: "Sala \xff"}}, []string{"name.es invalid_utf8"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.room
			got := fieldCodes(t, r.Normalize())
			if diff := cmp.Diff(got, tt.fields); diff != "" {
				t.Errorf("Normalize fields (-got +want):\n%s", diff)
			}
		})
	}
}

func TestTrackNormalize(t *testing.T) {
	tests := []struct {
		name   string
		track  cabildo.Track
		fields []string
	}{
		{"valid", cabildo.Track{ID: "datos", Name: cabildo.Text{ES: "Datos abiertos"}, Color: "#1f6feb"}, nil},
		{"valid upper-case color", cabildo.Track{ID: "datos", Name: cabildo.Text{ES: "Datos"}, Color: "#1F6FEB"}, nil},
		{"no color", cabildo.Track{ID: "datos", Name: cabildo.Text{ES: "Datos"}}, nil},
		{"bad slug", cabildo.Track{ID: "datos_abiertos", Name: cabildo.Text{ES: "Datos"}}, []string{"id invalid_slug"}},
		{"missing name", cabildo.Track{ID: "datos"}, []string{"name required"}},
		{"short color", cabildo.Track{ID: "datos", Name: cabildo.Text{ES: "Datos"}, Color: "#fff"}, []string{"color invalid_color"}},
		{"named color", cabildo.Track{ID: "datos", Name: cabildo.Text{ES: "Datos"}, Color: "blue"}, []string{"color invalid_color"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := tt.track
			got := fieldCodes(t, tr.Normalize())
			if diff := cmp.Diff(got, tt.fields); diff != "" {
				t.Errorf("Normalize fields (-got +want):\n%s", diff)
			}
		})
	}
}

func TestSpeakerNormalize(t *testing.T) {
	tests := []struct {
		name    string
		speaker cabildo.Speaker
		fields  []string
	}{
		{"valid", cabildo.Speaker{ID: "ana-mora", Name: "Ana Mora", Country: "CR",
			Affiliation: cabildo.Text{ES: "Ministerio"}, Bio: cabildo.Text{EN: "Works on open data."}}, nil},
		{"bad slug", cabildo.Speaker{ID: "ana mora", Name: "Ana Mora"}, []string{"id invalid_slug"}},
		{"missing name", cabildo.Speaker{ID: "ana-mora"}, []string{"name required"}},
		{"bad country", cabildo.Speaker{ID: "ana-mora", Name: "Ana Mora", Country: "Costa Rica"}, []string{"country invalid_country"}},
		{"too long bio", cabildo.Speaker{ID: "ana-mora", Name: "Ana Mora", Bio: cabildo.Text{ES: strings.Repeat("x", cabildo.MaxLongText+1)}},
			[]string{"bio.es too_long"}},
		{"too long affiliation", cabildo.Speaker{ID: "ana-mora", Name: "Ana Mora",
			Affiliation: cabildo.Text{EN: strings.Repeat("x", cabildo.MaxShortText+1)}}, []string{"affiliation.en too_long"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sp := tt.speaker
			got := fieldCodes(t, sp.Normalize())
			if diff := cmp.Diff(got, tt.fields); diff != "" {
				t.Errorf("Normalize fields (-got +want):\n%s", diff)
			}
		})
	}
}

func TestSpeakerNormalizeBlankName(t *testing.T) {
	sp := cabildo.Speaker{ID: "ana-mora", Name: "   "}
	if diff := cmp.Diff(fieldCodes(t, sp.Normalize()), []string{"name required"}); diff != "" {
		t.Errorf("Normalize fields (-got +want):\n%s", diff)
	}
	sp = cabildo.Speaker{ID: "ana-mora", Name: "  Ana Mora "}
	if err := sp.Normalize(); err != nil {
		t.Fatalf("Normalize: %v", err)
	}
	if got, want := sp.Name, "Ana Mora"; got != want {
		t.Errorf("name = %q, want %q", got, want)
	}
}

// Field errors name the field as the client sent it; a speaker's name is a plain string,
// not a Text, so "name.es" points at a field that does not exist.
func TestSpeakerNormalizeFieldName(t *testing.T) {
	sp := cabildo.Speaker{ID: "ana-mora", Name: strings.Repeat("x", cabildo.MaxShortText+1)}
	if diff := cmp.Diff(fieldCodes(t, sp.Normalize()), []string{"name too_long"}); diff != "" {
		t.Errorf("Normalize fields (-got +want):\n%s", diff)
	}
}

// Both languages wrong: the error's Message (the first field's) must not depend on map
// iteration order, or the same request gets different problem details from run to run.
func TestValidationMessageIsStable(t *testing.T) {
	first := ""
	for i := range 50 {
		ev := testEvent()
		ev.Name = cabildo.Text{ES: "\xff", EN: strings.Repeat("x", cabildo.MaxShortText+1)}
		err := ev.Normalize()
		var e *cabildo.Error
		if !errors.As(err, &e) {
			t.Fatalf("Normalize: %v", err)
		}
		if i == 0 {
			first = e.Message
		} else if e.Message != first {
			t.Fatalf("message %d = %q, first was %q", i, e.Message, first)
		}
	}
}

// programme returns a programme for testEvent with two rooms, a track, two speakers and
// one scheduled session (id 7) in sala-1 from 10:30 to 11:30 on the second day.
func programme(t *testing.T) *cabildo.Programme {
	t.Helper()
	ev := testEvent()
	if err := ev.Normalize(); err != nil {
		t.Fatalf("event: %v", err)
	}
	p := cabildo.NewProgramme(ev)
	p.Rooms["sala-1"] = cabildo.Room{ID: "sala-1", Name: cabildo.Text{ES: "Sala 1"}}
	p.Rooms["sala-2"] = cabildo.Room{ID: "sala-2", Name: cabildo.Text{ES: "Sala 2"}}
	p.Tracks["datos"] = cabildo.Track{ID: "datos", Name: cabildo.Text{ES: "Datos"}}
	p.Speakers["ana"] = cabildo.Speaker{ID: "ana", Name: "Ana"}
	p.Speakers["luis"] = cabildo.Speaker{ID: "luis", Name: "Luis"}
	p.Sessions[occupantGUID] = cabildo.Session{GUID: occupantGUID, ID: 7, Title: cabildo.Text{ES: "Ocupante"},
		Kind: cabildo.KindBreakout, Status: cabildo.StatusScheduled, Language: cabildo.ES, Room: "sala-1",
		Start: at(t, "2027-04-14 10:30"), End: at(t, "2027-04-14 11:30")}
	return p
}

const (
	occupantGUID = "00000000-0000-4000-8000-000000000007"
	newGUID      = "00000000-0000-4000-8000-000000000099"
)

// at parses a wall-clock time in the test event's zone.
func at(t *testing.T, s string) time.Time {
	t.Helper()
	loc, err := time.LoadLocation("America/Costa_Rica")
	if err != nil {
		t.Fatal(err)
	}
	v, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestCheckSession(t *testing.T) {
	base := func(t *testing.T) cabildo.Session {
		return cabildo.Session{GUID: newGUID, Title: cabildo.Text{ES: "Datos abiertos", EN: "Open data"},
			Kind: cabildo.KindPanel, Status: cabildo.StatusScheduled, Language: cabildo.ES,
			Interpretation: []cabildo.Lang{cabildo.EN}, Room: "sala-2", Track: "datos",
			Start: at(t, "2027-04-14 10:00"), End: at(t, "2027-04-14 11:00"), Speakers: []string{"ana", "luis"}}
	}
	tests := []struct {
		name   string
		edit   func(t *testing.T, s *cabildo.Session, p *cabildo.Programme)
		force  bool
		fields []string
	}{
		{"valid", nil, false, nil},
		{"valid given in UTC", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) {
			s.Start, s.End = s.Start.UTC(), s.End.UTC()
		}, false, nil},
		{"valid whole day", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) {
			s.Start, s.End = at(t, "2027-04-14 08:00"), at(t, "2027-04-14 19:00")
		}, false, nil},
		{"missing title", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) { s.Title = cabildo.Text{EN: " "} },
			false, []string{"title required"}},
		{"missing start", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) { s.Start = time.Time{} },
			false, []string{"start required"}},
		{"missing end", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) { s.End = time.Time{} },
			false, []string{"end required"}},
		{"end before start", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) { s.Start, s.End = s.End, s.Start },
			false, []string{"end before_start"}},
		{"end equals start", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) { s.End = s.Start },
			false, []string{"end before_start"}},
		{"longer than 12h", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) {
			s.End = s.Start.Add(cabildo.MaxSessionHours*time.Hour + time.Minute)
		}, false, []string{"end too_long"}},
		{"outside days", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) {
			s.Start, s.End = at(t, "2027-04-20 10:00"), at(t, "2027-04-20 11:00")
		}, false, []string{"start outside_event"}},
		{"before opening", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) {
			s.Start = at(t, "2027-04-14 07:30")
		}, false, []string{"start outside_event"}},
		{"after closing", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) {
			s.Start, s.End = at(t, "2027-04-14 18:30"), at(t, "2027-04-14 19:30")
		}, false, []string{"start outside_event"}},
		{"in the right hours in the wrong zone", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) {
			// 08:00-09:00 UTC is 02:00-03:00 in Costa Rica.
			s.Start = time.Date(2027, 4, 14, 8, 0, 0, 0, time.UTC)
			s.End = s.Start.Add(time.Hour)
		}, false, []string{"start outside_event"}},
		{"unknown room", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) { s.Room = "sala-9" },
			false, []string{"room unknown_room"}},
		{"no room", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) { s.Room = "" },
			false, []string{"room unknown_room"}},
		{"unknown track", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) { s.Track = "salud" },
			false, []string{"track unknown_track"}},
		{"no track", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) { s.Track = "" }, false, nil},
		{"unknown speaker", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) { s.Speakers = []string{"ana", "nadie"} },
			false, []string{"speakers[1] unknown_speaker"}},
		{"duplicate speaker", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) {
			s.Speakers = []string{"ana", "luis", "ana"}
		}, false, []string{"speakers[2] duplicate"}},
		{"too many speakers", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) {
			s.Speakers = nil
			for i := range cabildo.MaxSpeakers + 1 {
				id := fmt.Sprintf("sp-%d", i)
				p.Speakers[id] = cabildo.Speaker{ID: id, Name: id}
				s.Speakers = append(s.Speakers, id)
			}
		}, false, []string{"speakers too_many"}},
		{"bad tag", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) { s.Tags = []string{"ok", ""} },
			false, []string{"tags[1] invalid_tag"}},
		{"bad kind", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) { s.Kind = "party" },
			false, []string{"kind invalid_enum"}},
		{"bad status", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) { s.Status = "maybe" },
			false, []string{"status invalid_enum"}},
		{"bad language", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) {
			s.Language, s.Interpretation = "fr", nil
		}, false, []string{"language invalid_enum"}},
		{"bad interpretation", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) {
			s.Interpretation = []cabildo.Lang{"pt"}
		}, false, []string{"interpretation[0] invalid_enum"}},
		{"interpretation equal to language", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) {
			s.Interpretation = []cabildo.Lang{cabildo.ES}
		}, false, []string{"interpretation[0] invalid_enum"}},
		{"room occupied", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) { s.Room = "sala-1" },
			false, []string{"room room_occupied"}},
		{"room occupied allowed with force", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) { s.Room = "sala-1" },
			true, nil},
		{"back to back is no clash", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) {
			s.Room, s.Start, s.End = "sala-1", at(t, "2027-04-14 09:30"), at(t, "2027-04-14 10:30")
		}, false, nil},
		{"cancelled session does not block the room", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) {
			o := p.Sessions[occupantGUID]
			o.Status = cabildo.StatusCancelled
			p.Sessions[occupantGUID] = o
			s.Room = "sala-1"
		}, false, nil},
		{"a cancelled session may sit in an occupied room", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) {
			s.Room, s.Status = "sala-1", cabildo.StatusCancelled
		}, false, nil},
		{"a session does not clash with itself", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) {
			*s = p.Sessions[occupantGUID].Clone()
			s.Start = s.Start.Add(15 * time.Minute)
		}, false, nil},
		{"several problems", func(t *testing.T, s *cabildo.Session, p *cabildo.Programme) {
			s.Kind, s.Room, s.Track = "", "nowhere", "nothing"
		}, false, []string{"kind invalid_enum", "room unknown_room", "track unknown_track"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := programme(t)
			s := base(t)
			if tt.edit != nil {
				tt.edit(t, &s, p)
			}
			got := fieldCodes(t, p.CheckSession(&s, tt.force))
			if diff := cmp.Diff(got, tt.fields); diff != "" {
				t.Errorf("CheckSession fields (-got +want):\n%s", diff)
			}
		})
	}
}

func TestCheckSessionRoomOccupiedNamesTheOtherSession(t *testing.T) {
	p := programme(t)
	// A second clash with a higher id: the message names the lowest id.
	p.Sessions[newGUID] = cabildo.Session{GUID: newGUID, ID: 12, Kind: cabildo.KindBreakout,
		Status: cabildo.StatusScheduled, Room: "sala-1", Start: at(t, "2027-04-14 10:00"), End: at(t, "2027-04-14 10:45")}
	s := cabildo.Session{GUID: "00000000-0000-4000-8000-000000000100", Title: cabildo.Text{ES: "X"},
		Kind: cabildo.KindPanel, Status: cabildo.StatusScheduled, Language: cabildo.EN, Room: "sala-1",
		Start: at(t, "2027-04-14 10:00"), End: at(t, "2027-04-14 11:00")}
	err := p.CheckSession(&s, false)
	var e *cabildo.Error
	if !errors.As(err, &e) || len(e.Fields) != 1 {
		t.Fatalf("CheckSession = %v, want one field error", err)
	}
	if got, want := e.Fields[0].Field+" "+e.Fields[0].Code, "room room_occupied"; got != want {
		t.Fatalf("field error = %q, want %q", got, want)
	}
	if !strings.Contains(e.Fields[0].Message, "session 7 ") {
		t.Errorf("message %q does not name session 7", e.Fields[0].Message)
	}
	if got, want := cabildo.ErrorCode(err), cabildo.CodeValidation; got != want {
		t.Errorf("ErrorCode = %q, want %q", got, want)
	}
}

func TestCheckSessionNormalizes(t *testing.T) {
	p := programme(t)
	s := cabildo.Session{GUID: newGUID, Title: cabildo.Text{ES: "  Datos  ", EN: "\tData\n"},
		Abstract: cabildo.Text{EN: " about data "}, Kind: cabildo.KindPanel, Status: cabildo.StatusScheduled,
		Language: cabildo.ES, Room: "sala-2",
		Start: time.Date(2027, 4, 14, 16, 0, 0, 0, time.UTC), End: time.Date(2027, 4, 14, 17, 0, 0, 0, time.UTC)}
	if err := p.CheckSession(&s, false); err != nil {
		t.Fatalf("CheckSession: %v", err)
	}
	if diff := cmp.Diff(s.Title, cabildo.Text{ES: "Datos", EN: "Data"}); diff != "" {
		t.Errorf("title (-got +want):\n%s", diff)
	}
	if got, want := s.Abstract.EN, "about data"; got != want {
		t.Errorf("abstract = %q, want %q", got, want)
	}
	if got, want := s.Start.Location().String(), "America/Costa_Rica"; got != want {
		t.Errorf("start location = %q, want %q", got, want)
	}
	if got, want := s.Start.Format("15:04"), "10:00"; got != want {
		t.Errorf("start wall clock = %q, want %q", got, want)
	}
	if got, want := p.Day(s), "2027-04-14"; got != want {
		t.Errorf("Day = %q, want %q", got, want)
	}
}

func TestErrorCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want cabildo.Code
	}{
		{"domain error", cabildo.Errorf(cabildo.CodeNotFound, "no"), cabildo.CodeNotFound},
		{"wrapped", fmt.Errorf("ctx: %w", cabildo.Errorf(cabildo.CodeVersionConflict, "lost")), cabildo.CodeVersionConflict},
		{"plain error", errors.New("boom"), cabildo.CodeInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := cabildo.ErrorCode(tt.err); got != tt.want {
				t.Errorf("ErrorCode = %q, want %q", got, tt.want)
			}
		})
	}
	if err := (cabildo.Fields{}).Err(); err != nil {
		t.Errorf("empty Fields.Err = %v, want nil", err)
	}
	var f cabildo.Fields
	f.Add("a", "x", "first")
	f.Add("b", "y", "second")
	if got, want := f.Err().Error(), "validation_failed: first (and 1 more)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}
