package cabildo

import (
	"math"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Lang is a language the programme is published in.
type Lang string

const (
	ES Lang = "es"
	EN Lang = "en"
)

// Langs are the languages Cabildo publishes text in, in order of preference when a
// client states none.
var Langs = []Lang{ES, EN}

// ParseLang accepts "es", "en" and regional forms such as "es-CR" or "en-US".
func ParseLang(s string) (Lang, bool) {
	s = strings.ToLower(strings.TrimSpace(s))
	if i := strings.IndexAny(s, "-_"); i > 0 {
		s = s[:i]
	}
	switch Lang(s) {
	case ES:
		return ES, true
	case EN:
		return EN, true
	}
	return "", false
}

// Text is text that people read, in Spanish and English. Either may be missing; readers
// get the other one rather than nothing.
type Text struct {
	ES string `json:"es,omitempty"`
	EN string `json:"en,omitempty"`
}

// In returns the text in lang, falling back to the other language.
func (t Text) In(lang Lang) string {
	if lang == EN {
		if t.EN != "" {
			return t.EN
		}
		return t.ES
	}
	if t.ES != "" {
		return t.ES
	}
	return t.EN
}

// IsZero reports whether neither language has text.
func (t Text) IsZero() bool { return t.ES == "" && t.EN == "" }

func (t Text) trimmed() Text {
	return Text{ES: Trim(t.ES), EN: Trim(t.EN)}
}

// invisible reports runes that show nothing on their own: white space and format
// characters (zero-width spaces and joiners, the byte-order mark, direction marks). A text
// made only of them looks empty to every reader, so it counts as empty.
func invisible(r rune) bool { return unicode.IsSpace(r) || unicode.Is(unicode.Cf, r) }

// Trim removes invisible runes from both ends of s. Inside a text they stay: a zero-width
// joiner between two emoji is part of what people wrote.
func Trim(s string) string { return strings.TrimFunc(s, invisible) }

// Length counts the characters of s as a reader does: format characters (zero-width
// spaces and joiners) are not characters of their own.
func Length(s string) int {
	n := 0
	for _, r := range s {
		if !unicode.Is(unicode.Cf, r) {
			n++
		}
	}
	return n
}

// Visible counts the runes of s that show something.
func Visible(s string) int {
	n := 0
	for _, r := range s {
		if !invisible(r) {
			n++
		}
	}
	return n
}

// CheckString adds a field error when s is not text a person can read: not UTF-8, or
// holding control characters (NUL, escape sequences, C1 controls) or Unicode
// noncharacters, which no screen shows and which break terminals, CSV exports and feeds.
// Line breaks and tabs are text only where multiline allows them (abstracts, bios, bodies).
func CheckString(f *Fields, field, s string, multiline bool) {
	if !utf8.ValidString(s) {
		f.Add(field, "invalid_utf8", "%s is not valid UTF-8", field)
		return
	}
	for _, r := range s {
		if multiline && (r == '\n' || r == '\t' || r == '\r') {
			continue
		}
		if unicode.IsControl(r) || isNoncharacter(r) {
			f.Add(field, "invalid_character", "%s holds a control character (U+%04X); send only printable text", field, r)
			return
		}
	}
}

// isNoncharacter reports the code points Unicode reserves never to be characters.
func isNoncharacter(r rune) bool {
	return (r >= 0xFDD0 && r <= 0xFDEF) || r&0xFFFE == 0xFFFE
}

// ParseID reads a positive integer id written the one way ids are written: decimal digits
// without sign or leading zeros. "+100" and "0100" are not 100: one resource has one URL,
// so caches, logs and favourites never see two names for it.
func ParseID(s string) (int64, bool) {
	n, ok := ParseVersion(s)
	if !ok || n == 0 || n > math.MaxInt64 {
		return 0, false
	}
	return int64(n), true
}

// ParseVersion reads a log version (0 or more) written canonically, like ParseID.
func ParseVersion(s string) (uint64, bool) {
	if s == "" || len(s) > 20 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}
