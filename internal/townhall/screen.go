package townhall

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"unicode"

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

	mu      sync.Mutex
	indexes map[int64]*stemIndex // per session
}

// stemIndex maps each word stem to the questions of a session that use it, so a new
// question is compared with those that share a word, not re-read against all of them:
// at a town hall with thousands of questions, asking stays as cheap as with ten.
type stemIndex struct {
	indexed  int                // questions of qa.Order indexed so far
	text     map[int64]string   // the text each question was indexed with (edits re-index)
	stems    map[int64][]string // each question's stems
	postings map[string][]int64 // stem → questions
}

func newScreener(w WordLists) *screener {
	s := &screener{indexes: map[int64]*stemIndex{}}
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
	s.mu.Lock()
	ix := s.index(qa)
	shared := map[int64]int{}
	for st := range mine {
		for _, id := range ix.postings[st] {
			shared[id]++
		}
	}
	for id, n := range shared {
		q := qa.Questions[id]
		switch q.State {
		case cabildo.QuestionRejected, cabildo.QuestionArchived, cabildo.QuestionMerged:
			continue
		}
		sim := float64(n) / float64(len(mine)+len(ix.stems[id])-n)
		if sim >= nearDuplicate && (sim > bestSim || (sim == bestSim && id < best)) {
			best, bestSim = id, sim
		}
	}
	s.mu.Unlock()
	if best != 0 {
		out = append(out, cabildo.Flag{Kind: cabildo.FlagNearDuplicate, Similar: best, Similarity: truncate2(bestSim)})
	}
	return out
}

// screenAt flags question i of a log entry: against its session's questions (flags), and
// against the questions before it in the entry. Those have no id until the entry is
// applied, so when one of them is the nearer, the question names it by its place
// (Asked.SimilarTo) and the projection turns that into the near_duplicate flag. qa is the
// session's town hall as the projection has it (nil if it has none yet); mine holds the
// stems of the entry's questions screened so far.
func (s *screener) screenAt(asked []cabildo.Asked, i int, qa *cabildo.QA, mine []map[string]bool) {
	a := &asked[i]
	q := &a.Question
	if qa == nil {
		qa = cabildo.NewQA(q.Session)
	}
	q.Flags = s.flags(q.Text, qa)
	mine[i] = stems(tokens(q.Text))
	best := 0.0
	for _, f := range q.Flags {
		if f.Kind == cabildo.FlagNearDuplicate {
			best = f.Similarity
		}
	}
	a.SimilarTo, a.Similarity = 0, 0
	for j := range i {
		if asked[j].Question.Session != q.Session {
			continue
		}
		if sim := similarity(mine[i], mine[j]); sim >= nearDuplicate && sim > best {
			best, a.SimilarTo, a.Similarity = sim, j+1, sim
		}
	}
	if a.SimilarTo > 0 {
		q.Flags = slices.DeleteFunc(q.Flags, func(f cabildo.Flag) bool { return f.Kind == cabildo.FlagNearDuplicate })
	}
}

// similarity is how alike two questions' stem sets are (shared over all), to two decimals.
func similarity(a, b map[string]bool) float64 {
	shared := 0
	for st := range a {
		if b[st] {
			shared++
		}
	}
	if shared == 0 {
		return 0
	}
	return truncate2(float64(shared) / float64(len(a)+len(b)-shared))
}

func truncate2(x float64) float64 { return float64(int(x*100)) / 100 }

// index brings the session's stem index up to qa: new questions, and edited texts.
// Called with s.mu held.
func (s *screener) index(qa *cabildo.QA) *stemIndex {
	ix, ok := s.indexes[qa.Session]
	if !ok || ix.indexed > len(qa.Order) { // a rebuilt projection: start again
		ix = &stemIndex{text: map[int64]string{}, stems: map[int64][]string{}, postings: map[string][]int64{}}
		s.indexes[qa.Session] = ix
	}
	for _, id := range qa.Order[:ix.indexed] {
		if q := qa.Questions[id]; q.Text != ix.text[id] {
			ix.remove(id)
			ix.add(id, q.Text)
		}
	}
	for _, id := range qa.Order[ix.indexed:] {
		ix.add(id, qa.Questions[id].Text)
	}
	ix.indexed = len(qa.Order)
	return ix
}

func (ix *stemIndex) add(id int64, text string) {
	ix.text[id] = text
	for st := range stems(tokens(text)) {
		ix.stems[id] = append(ix.stems[id], st)
		ix.postings[st] = append(ix.postings[st], id)
	}
}

func (ix *stemIndex) remove(id int64) {
	for _, st := range ix.stems[id] {
		ix.postings[st] = slices.DeleteFunc(ix.postings[st], func(x int64) bool { return x == id })
	}
	delete(ix.stems, id)
	delete(ix.text, id)
}

func containsPhrase(toks, p []string) bool {
	for i := 0; i+len(p) <= len(toks); i++ {
		if slices.Equal(toks[i:i+len(p)], p) {
			return true
		}
	}
	return false
}

// fold lower-cases and strips accents, so "Corrupción" and "corrupcion" match. It keeps
// no state between calls (a transform.Chain would, and tokens runs concurrently).
func fold(text string) string {
	d := norm.NFD.String(strings.ToLower(text))
	d = strings.Map(func(r rune) rune {
		if unicode.Is(unicode.Mn, r) {
			return -1
		}
		return r
	}, d)
	return norm.NFC.String(d)
}

// tokens splits text into folded words.
func tokens(text string) []string {
	folded := fold(text)
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
