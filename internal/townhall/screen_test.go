package townhall

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cabildo/cabildo/internal/cabildo"
)

func TestDetectLang(t *testing.T) {
	tests := []struct {
		text string
		hint cabildo.Lang
		want cabildo.Lang
	}{
		{"¿Cuándo publicará el gobierno los datos de contratación?", "", cabildo.ES},
		{"When will the government publish contracting data?", "", cabildo.EN},
		{"Cuando publica el gobierno los datos", cabildo.EN, cabildo.ES}, // no accents, still Spanish words
		{"What is the plan for the open data portal?", cabildo.ES, cabildo.EN},
		{"OGP 2027", cabildo.EN, cabildo.EN}, // nothing to go on: the hint
		{"OGP 2027", "", cabildo.ES},
	}
	for _, tt := range tests {
		if got := detectLang(tt.text, tt.hint); got != tt.want {
			t.Errorf("detectLang(%q, %q) = %s, want %s", tt.text, tt.hint, got, tt.want)
		}
	}
}

func qaWith(texts ...string) *cabildo.QA {
	qa := cabildo.NewQA(1)
	for i, text := range texts {
		qa.Ask(cabildo.Question{Text: text}, int64(i+1), uint64(i+10), 0, time.Now())
	}
	return qa
}

func TestWordListFlags(t *testing.T) {
	s := newScreener(WordLists{cabildo.ES: {"corrupto", "no sirve"}, cabildo.EN: {"liar"}})
	tests := []struct {
		text string
		want []string
	}{
		{"¿Es usted un CORRUPTO?", []string{"corrupto"}},
		{"Is the minister a liar, or is he corrupto?", []string{"corrupto", "liar"}},
		{"El portal no sirve para nada", []string{"no sirve"}},
		{"¿Qué hará contra la corrupción?", nil}, // a word that starts the same is not the word
		{"Reliable data, please", nil},           // "liar" inside a word does not count
	}
	for _, tt := range tests {
		var got []string
		for _, f := range s.flags(tt.text, qaWith()) {
			if f.Kind == cabildo.FlagWordList {
				got = f.Words
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, tt.want) {
			t.Errorf("flags(%q) = %v, want %v", tt.text, got, tt.want)
		}
	}
}

func TestNearDuplicateSuggestsMerge(t *testing.T) {
	s := newScreener(WordLists{})
	qa := qaWith("¿Cuándo publicará el gobierno los datos abiertos de contratación?",
		"¿Qué pasa con la reforma de la ley de acceso a la información?")
	first := qa.Order[0]
	fl := s.flags("¿Cuando publicara el gobierno datos abiertos de contrataciones públicas?", qa)
	if len(fl) != 1 || fl[0].Kind != cabildo.FlagNearDuplicate || fl[0].Similar != first {
		t.Fatalf("flags %+v, want a near_duplicate of %d", fl, first)
	}
	if fl := s.flags("¿Habrá interpretación al inglés en la plenaria de mañana?", qa); len(fl) != 0 {
		t.Fatalf("an unrelated question was flagged: %+v", fl)
	}
	// A rejected question is no merge target.
	qa.Questions[first].State = cabildo.QuestionRejected
	if fl := s.flags("¿Cuándo publicará el gobierno los datos abiertos de contratación?", qa); len(fl) != 0 {
		t.Fatalf("flagged as a duplicate of a rejected question: %+v", fl)
	}
}

func TestDefaultWordsLoad(t *testing.T) {
	w := DefaultWords()
	if len(w[cabildo.ES]) < 10 || len(w[cabildo.EN]) < 10 {
		t.Fatalf("built-in lists: %d es, %d en", len(w[cabildo.ES]), len(w[cabildo.EN]))
	}
	if _, err := parseWords([]byte(`{"fr": ["merde"]}`)); err == nil {
		t.Fatal("a list for a language Cabildo does not speak was accepted")
	}
}

// An edited question is compared by its new text.
func TestNearDuplicateFollowsEdits(t *testing.T) {
	s := newScreener(WordLists{})
	qa := qaWith("¿Habrá interpretación al inglés en la plenaria?")
	id := qa.Order[0]
	probe := "¿Cuándo publicará el gobierno los datos abiertos de contratación?"
	if fl := s.flags(probe, qa); len(fl) != 0 {
		t.Fatalf("flagged before the edit: %+v", fl)
	}
	qa.Questions[id].Text = "¿Cuándo publica el gobierno datos abiertos de contratación?"
	if fl := s.flags(probe, qa); len(fl) != 1 || fl[0].Similar != id {
		t.Fatalf("after the edit: %+v, want a near_duplicate of %d", fl, id)
	}
}

// BenchmarkFlags is one ask's screening at a town hall that already has 5,000 questions.
func BenchmarkFlags(b *testing.B) {
	texts := make([]string, 5000)
	for i := range texts {
		texts[i] = fmt.Sprintf("¿Qué hará el gobierno con el tema %d de datos abiertos y contratación %d?", i, i*7)
	}
	qa := qaWith(texts...)
	s := newScreener(DefaultWords())
	s.flags("warm the index", qa)
	b.ResetTimer()
	for i := range b.N {
		s.flags(fmt.Sprintf("¿Qué hará el gobierno con los datos abiertos del tema %d?", i), qa)
	}
}
