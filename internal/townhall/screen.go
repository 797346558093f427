package townhall

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"unicode"

	"golang.org/x/text/runes"
	"golang.org/x/text/transform"
	"golang.org/x/text/unicode/norm"

	"github.com/cabildo/cabildo/internal/cabildo"
)

// WordLists are words and phrases per language that flag a question for a moderator's
// eye. They never reject or publish anything themselves: at a town hall with the
// president, "corrupt" may be the question everyone wants asked.
type WordLists map[cabildo.Lang][]string

//go:embed words.json
var defaultWords []byte

// DefaultWords are the lists Cabildo ships: insults and words that tend to start a
// moderator's discussion, in Spanish and English.
func DefaultWords() WordLists {
	w, err := parseWords(defaultWords)
	if err != nil {
		panic(err) // the embedded file is ours and tested
	}
	return w
}

// LoadWords reads word lists from a JSON file {"es": [...], "en": [...]}.
func LoadWords(path string) (WordLists, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("townhall: word lists: %w", err)
	}
	return parseWords(b)
}

func parseWords(b []byte) (WordLists, error) {
	var raw map[string][]string
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("townhall: word lists: %w", err)
	}
	w := WordLists{}
	for k, list := range raw {
		lang, ok := cabildo.ParseLang(k)
		if !ok {
			return nil, fmt.Errorf("townhall: word lists: %q is not es or en", k)
		}
		w[lang] = append(w[lang], list...)
	}
	return w, nil
}

// screener flags questions: listed words, and near-duplicates of questions already asked.
type screener struct {
	phrases [][]string // each a sequence of folded words
	words   []string   // the original entries, parallel to phrases
}

func newScreener(w WordLists) *screener {
	s := &screener{}
	for _, lang := range cabildo.Langs {
		for _, entry := range w[lang] {
			if toks := tokens(entry); len(toks) > 0 {
				s.phrases = append(s.phrases, toks)
				s.words = append(s.words, strings.TrimSpace(entry))
			}
		}
	}
	return s
}

// nearDuplicate is how alike two questions' word sets must be to suggest a merge.
const nearDuplicate = 0.6

// flags returns why a new question needs a look: the listed words it uses (in either
// language: people mix them), and the existing question it most resembles.
func (s *screener) flags(text string, qa *cabildo.QA) []cabildo.Flag {
	toks := tokens(text)
	var out []cabildo.Flag
	var found []string
	for i, p := range s.phrases {
		if containsPhrase(toks, p) && !slices.Contains(found, s.words[i]) {
			found = append(found, s.words[i])
		}
	}
	if len(found) > 0 {
		out = append(out, cabildo.Flag{Kind: cabildo.FlagWordList, Words: found})
	}
	mine := stems(toks)
	var (
		best    int64
		bestSim float64
	)
	for _, id := range qa.Order {
		q := qa.Questions[id]
		switch q.State {
		case cabildo.QuestionRejected, cabildo.QuestionArchived, cabildo.QuestionMerged:
			continue
		}
		if sim := jaccard(mine, stems(tokens(q.Text))); sim >= nearDuplicate && sim > bestSim {
			best, bestSim = q.ID, sim
		}
	}
	if best != 0 {
		out = append(out, cabildo.Flag{Kind: cabildo.FlagNearDuplicate, Similar: best,
			Similarity: float64(int(bestSim*100)) / 100})
	}
	return out
}

func containsPhrase(toks, p []string) bool {
	for i := 0; i+len(p) <= len(toks); i++ {
		if slices.Equal(toks[i:i+len(p)], p) {
			return true
		}
	}
	return false
}

// fold lower-cases and strips accents, so "Corrupción" and "corrupcion" match.
var fold = transform.Chain(norm.NFD, runes.Remove(runes.In(unicode.Mn)), norm.NFC)

// tokens splits text into folded words.
func tokens(text string) []string {
	folded, _, err := transform.String(fold, strings.ToLower(text))
	if err != nil {
		folded = strings.ToLower(text)
	}
	return strings.FieldsFunc(folded, func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsNumber(r) })
}

// stems keeps the words that carry meaning, cut to a crude stem (their first five
// letters), so plurals and verb forms of both languages meet.
func stems(toks []string) map[string]bool {
	out := map[string]bool{}
	for _, t := range toks {
		if stopwords[t] || len([]rune(t)) < 3 {
			continue
		}
		if r := []rune(t); len(r) > 5 {
			t = string(r[:5])
		}
		out[t] = true
	}
	return out
}

func jaccard(a, b map[string]bool) float64 {
	if len(a) == 0 || len(b) == 0 {
		return 0
	}
	inter := 0
	for k := range a {
		if b[k] {
			inter++
		}
	}
	return float64(inter) / float64(len(a)+len(b)-inter)
}

// detectLang tells Spanish from English by their commonest words and Spanish's own
// letters and marks; a tie goes to hint, then Spanish.
func detectLang(text string, hint cabildo.Lang) cabildo.Lang {
	es, en := 0, 0
	for _, r := range text {
		if strings.ContainsRune("ñ¿¡áéíóú", unicode.ToLower(r)) {
			es++
		}
	}
	for _, t := range tokens(text) {
		if esWords[t] {
			es++
		}
		if enWords[t] {
			en++
		}
	}
	switch {
	case es > en:
		return cabildo.ES
	case en > es:
		return cabildo.EN
	case hint != "":
		return hint
	}
	return cabildo.ES
}

func set(words string) map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(words) {
		m[w] = true
	}
	return m
}

var (
	esWords = set("el la los las de del que y en un una por con para es son se al como mas pero sus le ya o este esta " +
		"cuando muy sin sobre tambien me hasta hay donde quien desde todo nos durante todos uno les ni contra otros " +
		"ese eso ante ellos e esto mi antes algunos que unos yo otro otras otra el tanto esa estos mucho quienes nada " +
		"muchos cual poco ella estar estas algunas algo nosotros usted ustedes cuanto cuantos porque cual cuales va van " +
		"puede pueden hacer hace gobierno presidente pais ciudadania datos abiertos")
	enWords = set("the of and to in a is that for it as was with be by on not he this are or his from at which but have " +
		"an they you were her she there been if more when will would who so what their can all does do how why whom " +
		"about your our we us government president country citizens open data should could has")
	stopwords = func() map[string]bool {
		m := map[string]bool{}
		for w := range esWords {
			m[w] = true
		}
		for w := range enWords {
			m[w] = true
		}
		for _, w := range []string{"gobierno", "presidente", "pais", "government", "president", "country", "datos", "data", "abiertos", "open"} {
			delete(m, w) // topic words: they matter to whether two questions are the same
		}
		return m
	}()
)
