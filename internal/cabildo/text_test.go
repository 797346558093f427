package cabildo_test

import (
	"testing"

	"github.com/cabildo/cabildo/internal/cabildo"
)

func TestTextIn(t *testing.T) {
	tests := []struct {
		name string
		text cabildo.Text
		lang cabildo.Lang
		want string
	}{
		{"spanish", cabildo.Text{ES: "Hola", EN: "Hello"}, cabildo.ES, "Hola"},
		{"english", cabildo.Text{ES: "Hola", EN: "Hello"}, cabildo.EN, "Hello"},
		{"english falls back to spanish", cabildo.Text{ES: "Hola"}, cabildo.EN, "Hola"},
		{"spanish falls back to english", cabildo.Text{EN: "Hello"}, cabildo.ES, "Hello"},
		{"unknown language prefers spanish", cabildo.Text{ES: "Hola", EN: "Hello"}, "fr", "Hola"},
		{"unknown language falls back to english", cabildo.Text{EN: "Hello"}, "", "Hello"},
		{"empty", cabildo.Text{}, cabildo.EN, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.text.In(tt.lang); got != tt.want {
				t.Errorf("In(%q) = %q, want %q", tt.lang, got, tt.want)
			}
		})
	}
}

func TestTextIsZero(t *testing.T) {
	tests := []struct {
		text cabildo.Text
		want bool
	}{
		{cabildo.Text{}, true},
		{cabildo.Text{ES: "a"}, false},
		{cabildo.Text{EN: "a"}, false},
	}
	for _, tt := range tests {
		if got := tt.text.IsZero(); got != tt.want {
			t.Errorf("%+v.IsZero() = %v, want %v", tt.text, got, tt.want)
		}
	}
}

func TestParseLang(t *testing.T) {
	tests := []struct {
		in     string
		want   cabildo.Lang
		wantOK bool
	}{
		{"es", cabildo.ES, true},
		{"en", cabildo.EN, true},
		{"es-CR", cabildo.ES, true},
		{"en-US", cabildo.EN, true},
		{"en_GB", cabildo.EN, true},
		{"EN", cabildo.EN, true},
		{" Es-419 ", cabildo.ES, true},
		{"fr", "", false},
		{"fr-CA", "", false},
		{"", "", false},
		{"-es", "", false},
		{"esp", "", false},
		{"*", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ok := cabildo.ParseLang(tt.in)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("ParseLang(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
