package cabildo

import (
	"net/url"
	"regexp"
	"slices"
	"time"
	"unicode/utf8"
)

var (
	slugRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{1,62}$`)
	dateRE    = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`)
	clockRE   = regexp.MustCompile(`^([01]\d|2[0-3]):[0-5]\d$`)
	colorRE   = regexp.MustCompile(`^#[0-9a-fA-F]{6}$`)
	countryRE = regexp.MustCompile(`^[A-Z]{2}$`)
	uuidRE    = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
)

// Limits on sizes of what people write; they keep one record well under the log's message
// size limit.
const (
	MaxShortText    = 200  // names, titles
	MaxLongText     = 8000 // abstracts, bios, descriptions
	MaxDays         = 31
	MaxSpeakers     = 40
	MaxTags         = 20
	MaxSessionHours = 12
)

// ValidSlug reports whether s can identify an event, room, track or speaker: lower-case
// letters, digits and hyphens, 2 to 63 long. Slugs are also log subject tokens.
func ValidSlug(s string) bool { return slugRE.MatchString(s) }

// ValidGUID reports whether s is a lower-case UUID.
func ValidGUID(s string) bool { return uuidRE.MatchString(s) }

func checkText(f *Fields, field string, t Text, required bool, max int) {
	if required && t.IsZero() {
		f.Add(field, "required", "%s needs text in Spanish or English", field)
	}
	for _, l := range [...]struct{ lang, s string }{{"es", t.ES}, {"en", t.EN}} {
		lang, s := l.lang, l.s
		before := len(*f)
		CheckString(f, field+"."+lang, s, max > 2*MaxShortText)
		if len(*f) == before && utf8.RuneCountInString(s) > max {
			f.Add(field+"."+lang, "too_long", "%s.%s is longer than %d characters", field, lang, max)
		}
	}
}

func checkURL(f *Fields, field, s string) {
	if s == "" {
		return
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || len(s) > 2000 {
		f.Add(field, "invalid_url", "%s must be an absolute http(s) URL", field)
	}
}

// Normalize trims the text of an event and validates it.
func (e *Event) Normalize() error {
	var f Fields
	if !ValidSlug(e.ID) {
		f.Add("id", "invalid_slug", "event id must be 2-63 lower-case letters, digits or hyphens")
	}
	e.Name, e.Description, e.Venue = e.Name.trimmed(), e.Description.trimmed(), e.Venue.trimmed()
	checkText(&f, "name", e.Name, true, MaxShortText)
	checkText(&f, "description", e.Description, false, MaxLongText)
	checkText(&f, "venue", e.Venue, false, MaxShortText)
	checkURL(&f, "url", e.URL)
	if e.Country != "" && !countryRE.MatchString(e.Country) {
		f.Add("country", "invalid_country", "country must be an ISO 3166-1 alpha-2 code such as CR")
	}
	e.City = Trim(e.City)
	CheckString(&f, "city", e.City, false)
	if utf8.RuneCountInString(e.City) > MaxShortText {
		f.Add("city", "too_long", "city is longer than %d characters", MaxShortText)
	}
	loc, err := time.LoadLocation(e.TimeZone)
	// "Local" loads, but would make the event's days depend on each node's clock settings.
	if e.TimeZone == "" || e.TimeZone == "Local" || err != nil {
		f.Add("time_zone", "invalid_time_zone", "time_zone must be an IANA time zone such as America/Costa_Rica")
		loc = time.UTC
	}
	switch {
	case len(e.Days) == 0:
		f.Add("days", "required", "an event needs at least one day")
	case len(e.Days) > MaxDays:
		f.Add("days", "too_many", "an event has at most %d days", MaxDays)
	}
	var (
		prev     time.Time
		prevDate string
	)
	for i, d := range e.Days {
		field := fieldIndex("days", i)
		e.Days[i].Title = d.Title.trimmed()
		checkText(&f, field+".title", d.Title, false, MaxShortText)
		switch d.Kind {
		case DayUnconference, DayConference, DayWorkshops:
		default:
			f.Add(field+".kind", "invalid_enum", "day kind must be unconference, conference or workshops")
		}
		if !dateRE.MatchString(d.Date) || !clockRE.MatchString(d.Start) || !clockRE.MatchString(d.End) {
			f.Add(field, "invalid_time", "day needs date YYYY-MM-DD and start/end HH:MM")
			continue
		}
		open, close, err := d.Window(loc)
		if err != nil {
			f.Add(field+".date", "invalid_date", "%s is not a date", d.Date)
			continue
		}
		if !close.After(open) {
			f.Add(field+".end", "before_start", "day must end after it starts")
		}
		if i > 0 && (!open.After(prev) || d.Date == prevDate) {
			f.Add(field+".date", "not_ascending", "days must be in ascending order, one entry per date")
		}
		prev, prevDate = close, d.Date
	}
	return f.Err()
}

// Normalize trims and validates a room.
func (r *Room) Normalize() error {
	var f Fields
	if !ValidSlug(r.ID) {
		f.Add("id", "invalid_slug", "room id must be 2-63 lower-case letters, digits or hyphens")
	}
	r.Name, r.Location = r.Name.trimmed(), r.Location.trimmed()
	checkText(&f, "name", r.Name, true, MaxShortText)
	checkText(&f, "location", r.Location, false, MaxShortText)
	if r.Capacity < 0 || r.Capacity > 1_000_000 {
		f.Add("capacity", "out_of_range", "capacity must be between 0 and 1000000")
	}
	checkURL(&f, "stream_url", r.StreamURL)
	if r.StreamURL != "" && !r.Streamed {
		f.Add("stream_url", "not_streamed", "stream_url needs streamed: true")
	}
	return f.Err()
}

// Normalize trims and validates a track.
func (t *Track) Normalize() error {
	var f Fields
	if !ValidSlug(t.ID) {
		f.Add("id", "invalid_slug", "track id must be 2-63 lower-case letters, digits or hyphens")
	}
	t.Name = t.Name.trimmed()
	checkText(&f, "name", t.Name, true, MaxShortText)
	if t.Color != "" && !colorRE.MatchString(t.Color) {
		f.Add("color", "invalid_color", "color must look like #1f6feb")
	}
	return f.Err()
}

// Normalize trims and validates a speaker.
func (s *Speaker) Normalize() error {
	var f Fields
	if !ValidSlug(s.ID) {
		f.Add("id", "invalid_slug", "speaker id must be 2-63 lower-case letters, digits or hyphens")
	}
	s.Affiliation, s.Bio = s.Affiliation.trimmed(), s.Bio.trimmed()
	s.Name = Trim(s.Name)
	before := len(f)
	CheckString(&f, "name", s.Name, false)
	switch {
	case len(f) > before:
	case s.Name == "":
		f.Add("name", "required", "name is required")
	case utf8.RuneCountInString(s.Name) > MaxShortText:
		f.Add("name", "too_long", "name is longer than %d characters", MaxShortText)
	}
	checkText(&f, "affiliation", s.Affiliation, false, MaxShortText)
	checkText(&f, "bio", s.Bio, false, MaxLongText)
	if s.Country != "" && !countryRE.MatchString(s.Country) {
		f.Add("country", "invalid_country", "country must be an ISO 3166-1 alpha-2 code such as CR")
	}
	return f.Err()
}

func fieldIndex(field string, i int) string {
	return field + "[" + itoa(i) + "]"
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b [20]byte
	n := len(b)
	for i > 0 {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
	}
	return string(b[n:])
}

func validKind(k SessionKind) bool  { return slices.Contains(SessionKinds, k) }
func validReason(c ReasonCode) bool { return slices.Contains(ReasonCodes, c) }
func validLang(l Lang) bool         { return l == ES || l == EN }

// CheckReason validates an optional reason.
func CheckReason(f *Fields, r *Reason) {
	if r == nil {
		return
	}
	if !validReason(r.Code) {
		f.Add("reason.code", "invalid_enum", "reason code must be one of the documented codes")
	}
	r.Text = r.Text.trimmed()
	checkText(f, "reason.text", r.Text, false, MaxShortText*2)
}
