package cabildo

import "strings"

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
	return Text{ES: strings.TrimSpace(t.ES), EN: strings.TrimSpace(t.EN)}
}
