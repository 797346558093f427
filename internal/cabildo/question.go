package cabildo

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// QuestionState is where a town-hall question stands. Pending and rejected questions are
// seen by moderators only; approved, pinned and answered ones by everyone.
type QuestionState string

const (
	QuestionPending  QuestionState = "pending"
	QuestionApproved QuestionState = "approved"
	QuestionRejected QuestionState = "rejected"
	QuestionPinned   QuestionState = "pinned" // on stage now: one per session
	QuestionAnswered QuestionState = "answered"
	QuestionArchived QuestionState = "archived"
	QuestionMerged   QuestionState = "merged" // a duplicate: its votes count for MergedInto
)

// Public reports whether the audience may see a question in this state.
func (s QuestionState) Public() bool {
	return s == QuestionApproved || s == QuestionPinned || s == QuestionAnswered
}

// Votable reports whether attendees may vote for a question in this state.
func (s QuestionState) Votable() bool { return s == QuestionApproved || s == QuestionPinned }

// Limits on what attendees send.
const (
	MinQuestionText = 3
	MaxQuestionText = 300 // runes: a question, not a speech
	MaxDisplayName  = 60
)

// Action is what a moderator does to a question.
type Action string

const (
	ActionApprove Action = "approve" // pending → approved
	ActionReject  Action = "reject"  // pending → rejected
	ActionPin     Action = "pin"     // approved → pinned; the pinned one before goes back to approved
	ActionUnpin   Action = "unpin"   // pinned → approved
	ActionAnswer  Action = "answer"  // approved | pinned → answered
	ActionArchive Action = "archive" // approved | pinned | answered → archived
	ActionEdit    Action = "edit"    // fix a typo; the original text is kept
	ActionMerge   Action = "merge"   // a duplicate into another question: votes combine
	ActionUndo    Action = "undo"    // the moderator's own last action, while nothing changed it since
)

// Actions are the moderator actions a request may name (undo has its own route).
var Actions = []Action{ActionApprove, ActionReject, ActionPin, ActionUnpin, ActionAnswer, ActionArchive, ActionEdit, ActionMerge}

// transitions says from which states each state-changing action may start, and where it
// leads.
var transitions = map[Action]struct {
	from []QuestionState
	to   QuestionState
}{
	ActionApprove: {[]QuestionState{QuestionPending}, QuestionApproved},
	ActionReject:  {[]QuestionState{QuestionPending}, QuestionRejected},
	ActionPin:     {[]QuestionState{QuestionApproved}, QuestionPinned},
	ActionUnpin:   {[]QuestionState{QuestionPinned}, QuestionApproved},
	ActionAnswer:  {[]QuestionState{QuestionApproved, QuestionPinned}, QuestionAnswered},
	ActionArchive: {[]QuestionState{QuestionApproved, QuestionPinned, QuestionAnswered}, QuestionArchived},
	ActionEdit:    {[]QuestionState{QuestionPending, QuestionApproved, QuestionPinned, QuestionAnswered}, ""},
	ActionMerge:   {[]QuestionState{QuestionPending, QuestionApproved, QuestionPinned}, QuestionMerged},
}

// mergeTargets are the states a duplicate may be merged into.
var mergeTargets = []QuestionState{QuestionPending, QuestionApproved, QuestionPinned, QuestionAnswered}

// Flag is why a question needs a moderator's eye. Flags never publish or reject anything
// by themselves: a flagged question always waits for a moderator.
type Flag struct {
	Kind       string   `json:"kind"`                 // word_list or near_duplicate
	Words      []string `json:"words,omitempty"`      // word_list: the listed words found
	Similar    int64    `json:"similar,omitempty"`    // near_duplicate: the question it resembles: merge into it?
	Similarity float64  `json:"similarity,omitempty"` // near_duplicate: 0..1
}

// Flag kinds.
const (
	FlagWordList      = "word_list"
	FlagNearDuplicate = "near_duplicate"
)

// Question is one town-hall question. Its ID numbers it within its event: the first
// question asked at the event is 1, in the order the log holds them.
type Question struct {
	ID      int64  `json:"id"`
	Session int64  `json:"session"`
	Text    string `json:"text"`
	// Original is the text as asked, kept when a moderator edits it.
	Original string `json:"original,omitempty"`
	Lang     Lang   `json:"lang"`
	// Attendee is the asker's pseudonymous id (the attendee token's subject): moderators
	// see it, the audience never does. Name is shown only when the asker chose to.
	Attendee   string        `json:"attendee"`
	Name       string        `json:"name,omitempty"`
	State      QuestionState `json:"state"`
	MergedInto int64         `json:"merged_into,omitempty"`
	Flags      []Flag        `json:"flags,omitempty"`
	AskedAt    time.Time     `json:"asked_at"`
	DecidedAt  time.Time     `json:"decided_at,omitzero"` // a moderator approved, rejected or merged it: the wait ended
	DecidedBy  string        `json:"decided_by,omitempty"`
	AnsweredAt time.Time     `json:"answered_at,omitzero"`
	// Voters are the attendees who voted for this question itself; Votes counts them
	// together with the voters of the questions merged into it, each attendee once.
	Voters map[string]bool `json:"voters,omitempty"`
	Merged []int64         `json:"merged,omitempty"` // questions merged into this one
	Votes  int             `json:"-"`
	// Version is the last log sequence that changed anything about the question, its
	// count included: what changed since a version is cheap to find.
	Version uint64 `json:"version"`
	// Stored is the log sequence of the entry that asked it, and Item its place there:
	// how the node that appended the entry finds the question it created.
	Stored uint64 `json:"stored"`
	Item   int    `json:"item,omitempty"`

	// all counts, for each attendee, the voter sets that hold it: Voters and those of the
	// questions merged into this one. Nil while nothing is merged into it.
	all map[string]int32
}

// NormalizeAsk trims and checks what an attendee sends.
func (q *Question) NormalizeAsk() error {
	var f Fields
	// Checked as sent: line breaks and tabs fold into spaces below, but a control character
	// that Unicode also calls a space (NEL, U+0085) is refused, not quietly folded.
	CheckString(&f, "text", q.Text, true)
	q.Text = Trim(strings.Join(strings.Fields(q.Text), " "))
	q.Name = Trim(q.Name)
	CheckString(&f, "name", q.Name, false)
	switch n := utf8.RuneCountInString(q.Text); {
	case len(f) > 0:
	case Length(q.Text) < MinQuestionText:
		f.Add("text", "too_short", "a question needs at least %d characters", MinQuestionText)
	case n > MaxQuestionText:
		f.Add("text", "too_long", "a question is at most %d characters; this one has %d", MaxQuestionText, n)
	}
	if utf8.RuneCountInString(q.Name) > MaxDisplayName || !utf8.ValidString(q.Name) {
		f.Add("name", "too_long", "a display name is at most %d characters", MaxDisplayName)
	}
	if q.Lang != "" {
		if l, ok := ParseLang(string(q.Lang)); ok {
			q.Lang = l
		} else {
			f.Add("lang", "invalid_enum", "lang must be es or en")
		}
	}
	return f.Err()
}

// VoteOp is one attendee's vote for, or withdrawal from, one question.
type VoteOp struct {
	Session  int64  `json:"session"`
	Question int64  `json:"question"`
	Attendee string `json:"attendee"`
	Up       bool   `json:"up"`
}

// QASettings is how a session runs its Q&A. Nil fields stay as they are.
type QASettings struct {
	Session   int64 `json:"session"`
	Open      *bool `json:"open,omitempty"`
	Moderated *bool `json:"moderated,omitempty"`
}

// Moderation is one moderator action as logged.
type Moderation struct {
	Session  int64  `json:"session"`
	Action   Action `json:"action"`
	Question int64  `json:"question,omitempty"`
	Into     int64  `json:"into,omitempty"`    // merge: the question that absorbs the duplicate
	Text     string `json:"text,omitempty"`    // edit: the corrected text
	UndoOf   uint64 `json:"undo_of,omitempty"` // undo: the version of the action undone
}

// Effect is what an action did to one question, so it can be undone exactly.
type Effect struct {
	Question   int64         `json:"question"`
	From       QuestionState `json:"from"`
	To         QuestionState `json:"to"`
	FromText   string        `json:"from_text,omitempty"`
	ToText     string        `json:"to_text,omitempty"`
	FromMerged int64         `json:"from_merged,omitempty"`
	ToMerged   int64         `json:"to_merged,omitempty"`
}

// ModAction is one entry of a session's moderation history: who did what, when.
type ModAction struct {
	Version   uint64    `json:"version"` // the log sequence that holds it
	Action    Action    `json:"action"`
	Moderator string    `json:"moderator"`
	At        time.Time `json:"at"`
	Question  int64     `json:"question,omitempty"`
	Into      int64     `json:"into,omitempty"`
	UndoOf    uint64    `json:"undo_of,omitempty"`
	Effects   []Effect  `json:"effects,omitempty"`
	UndoneBy  uint64    `json:"undone_by,omitempty"`
}

// QA is one session's town hall: its settings, questions and moderation history.
type QA struct {
	Session   int64               `json:"session"`
	Open      bool                `json:"open"`
	Moderated bool                `json:"moderated"`
	Version   uint64              `json:"version"` // the last log sequence that changed it
	Questions map[int64]*Question `json:"questions"`
	Order     []int64             `json:"order"` // question ids in the order they were asked
	Actions   []ModAction         `json:"actions,omitempty"`
	Pinned    int64               `json:"pinned,omitempty"`
}

// Clone returns a copy of qa that shares nothing a later vote, ask or moderation changes
// in place: what a snapshot encodes while the projection goes on. What only ever grows by
// append (Order) is shared up to its length; counts derived for voting are not copied.
func (qa *QA) Clone() *QA {
	c := *qa
	c.Questions = make(map[int64]*Question, len(qa.Questions))
	for id, q := range qa.Questions {
		cq := *q
		cq.Voters = maps.Clone(q.Voters)
		cq.Merged = slices.Clone(q.Merged)
		cq.Flags = slices.Clone(q.Flags)
		cq.all = nil
		c.Questions[id] = &cq
	}
	c.Order = qa.Order[:len(qa.Order):len(qa.Order)]
	c.Actions = slices.Clone(qa.Actions) // an undo marks the action it undoes
	return &c
}

// NewQA returns a session's Q&A as it is before anyone configures it: closed, and
// pre-moderated once opened.
func NewQA(session int64) *QA {
	return &QA{Session: session, Moderated: true, Questions: map[int64]*Question{}}
}

// Rebuild recomputes what is derived from the stored fields (vote counts), after a
// restore from a snapshot. It costs the votes stored, once.
func (qa *QA) Rebuild() {
	if qa.Questions == nil {
		qa.Questions = map[int64]*Question{}
	}
	done := make(map[int64]bool, len(qa.Questions))
	for _, q := range qa.Questions {
		q.all = nil
	}
	for _, q := range qa.Questions {
		qa.rebuild(q, done, 0)
	}
}

// rebuild counts q's votes from its own voters and those of the questions merged into it
// (counted first). depth bounds a malformed snapshot's chains.
func (qa *QA) rebuild(q *Question, done map[int64]bool, depth int) {
	if done[q.ID] {
		return
	}
	done[q.ID] = true
	q.all, q.Votes = nil, len(q.Voters)
	for _, id := range q.Merged {
		m, ok := qa.Questions[id]
		if !ok || qa.parent(m) != q || depth >= maxMergeDepth {
			continue
		}
		qa.rebuild(m, done, depth+1)
		qa.materialize(q)
		for a, n := range m.counts() {
			q.add(a, n)
		}
	}
}

// Votes are counted incrementally, so that a vote costs the same whatever came before it.
// A question's count of an attendee is how many of its voter sets hold the attendee: its
// own Voters and those of every question merged into it, however deep. The attendee's
// vote counts for the question while that is above zero, and Votes is how many attendees
// it counts. A question nobody merged anything into keeps no counts of its own: its
// Voters are they. A vote or a withdrawal changes the counts of the question and of the
// questions it was merged into, a merge (or its undo) moves the duplicate's counts from
// one target to the other: the cost of what changes, never of the votes already cast.

// maxMergeDepth bounds walks along merges (Root's bound): chains are a few deep at most.
const maxMergeDepth = 64

// count is how many of q's voter sets hold attendee.
func (q *Question) count(attendee string) int32 {
	if q.all != nil {
		return q.all[attendee]
	}
	if q.Voters[attendee] {
		return 1
	}
	return 0
}

// counts returns q's counts (its Voters, each once, when it has none of its own); read
// only.
func (q *Question) counts() map[string]int32 {
	if q.all != nil {
		return q.all
	}
	out := make(map[string]int32, len(q.Voters))
	for a := range q.Voters {
		out[a] = 1
	}
	return out
}

// materialize gives q counts of its own, before anything is merged into it.
func (qa *QA) materialize(q *Question) {
	if q.all == nil {
		q.all = q.counts()
	}
}

// add changes q's own counts of attendee by n; q must have counts of its own.
func (q *Question) add(attendee string, n int32) {
	old := q.all[attendee]
	switch c := old + n; {
	case c <= 0:
		delete(q.all, attendee)
	default:
		q.all[attendee] = c
	}
	switch {
	case old <= 0 && old+n > 0:
		q.Votes++
	case old > 0 && old+n <= 0:
		q.Votes--
	}
}

// parent is the question q was merged into, if any.
func (qa *QA) parent(q *Question) *Question {
	if q.State != QuestionMerged || q.MergedInto == 0 {
		return nil
	}
	return qa.Questions[q.MergedInto]
}

// up changes attendee's count by n in every question from q along its merges: q first,
// then the question it was merged into, and so on. Each of them has counts of its own
// (something is merged into it), except perhaps q, whose own Voters the caller changed.
func (qa *QA) up(q *Question, attendee string, n int32, seq uint64) {
	for i := 0; q != nil && i < maxMergeDepth; i++ {
		if q.all != nil {
			q.add(attendee, n)
		} else {
			q.Votes = len(q.Voters)
		}
		if seq != 0 {
			q.Version = seq
		}
		q = qa.parent(q)
	}
}

// move takes q's counts off the question it was merged into (from) and gives them to the
// one it is merged into now (to), along both chains; either may be nil.
func (qa *QA) move(q, from, to *Question, seq uint64) {
	if from == to {
		return
	}
	c := q.counts()
	if from != nil {
		qa.materialize(from)
		for a, n := range c {
			qa.up(from, a, -n, seq)
		}
	}
	if to != nil {
		qa.materialize(to)
		for a, n := range c {
			qa.up(to, a, n, seq)
		}
	}
}

// Voted reports whether attendee's vote counts for q (directly or through a merged
// duplicate).
func (qa *QA) Voted(q *Question, attendee string) bool { return q.count(attendee) > 0 }

// Root follows merges to the question that counts a question's votes.
func (qa *QA) Root(id int64) (*Question, bool) {
	q, ok := qa.Questions[id]
	for i := 0; ok && q.State == QuestionMerged && i < 64; i++ {
		q, ok = qa.Questions[q.MergedInto]
	}
	return q, ok
}

// Configure applies settings.
func (qa *QA) Configure(s QASettings, seq uint64) {
	if s.Open != nil {
		qa.Open = *s.Open
	}
	if s.Moderated != nil {
		qa.Moderated = *s.Moderated
	}
	qa.Version = seq
}

// Ask adds question id, item of the entry stored at seq. It waits for a moderator when
// the session is moderated or anything flagged it; otherwise it is published at once.
func (qa *QA) Ask(q Question, id int64, seq uint64, item int, at time.Time) *Question {
	q.ID, q.Session, q.AskedAt, q.Version, q.Stored, q.Item = id, qa.Session, at, seq, seq, item
	q.State, q.Voters, q.Merged, q.MergedInto = QuestionPending, nil, nil, 0
	if !qa.Moderated && len(q.Flags) == 0 {
		q.State = QuestionApproved // published unseen: no moderator decided, nothing waited
	}
	q.Votes, q.all = 0, nil
	qa.Questions[q.ID] = &q
	qa.Order = append(qa.Order, q.ID)
	qa.Version = seq
	return &q
}

// StoredAt returns the question that item of the entry at seq asked, if it did.
func (qa *QA) StoredAt(seq uint64, item int) (*Question, bool) {
	for i := len(qa.Order) - 1; i >= 0; i-- {
		q := qa.Questions[qa.Order[i]]
		if q.Stored < seq {
			break
		}
		if q.Stored == seq && q.Item == item {
			return q, true
		}
	}
	return nil, false
}

// Vote applies one vote or withdrawal and reports whether it changed anything. A vote for
// a merged duplicate counts for the question it was merged into; a vote for a question no
// longer open to votes changes nothing. A withdrawal takes the attendee's vote off the
// question and every duplicate merged into it, so it never lingers through a merge.
func (qa *QA) Vote(op VoteOp, seq uint64) bool {
	q, ok := qa.Root(op.Question)
	if !ok || !q.State.Votable() {
		return false
	}
	if op.Up {
		if q.count(op.Attendee) > 0 {
			return false
		}
		if q.Voters == nil {
			q.Voters = map[string]bool{}
		}
		q.Voters[op.Attendee] = true
		qa.up(q, op.Attendee, 1, 0)
	} else {
		if q.count(op.Attendee) == 0 {
			return false
		}
		qa.withdraw(q, op.Attendee, seq)
	}
	q.Version, qa.Version = seq, seq
	return true
}

// withdraw takes attendee's vote off q and off every question merged into it that
// counts it, and nowhere else: a question that does not count it is not visited.
func (qa *QA) withdraw(q *Question, attendee string, seq uint64) {
	if q.count(attendee) == 0 {
		return
	}
	if q.Voters[attendee] {
		delete(q.Voters, attendee)
		qa.up(q, attendee, -1, 0)
	}
	for _, id := range q.Merged {
		if m, ok := qa.Questions[id]; ok && m.MergedInto == q.ID {
			qa.withdraw(m, attendee, seq)
		}
	}
	q.Version = seq
}

// TransitionError is an action the question's state does not allow: a 409.
func transitionError(format string, args ...any) error {
	return &Error{Code: CodeInvalidTransition, Message: fmt.Sprintf(format, args...)}
}

// Check reports whether m can be applied now by moderator, without changing anything.
func (qa *QA) Check(m Moderation, moderator string) error {
	_, err := qa.plan(m, moderator)
	return err
}

// Moderate applies one moderator action stored at seq and returns its history entry.
func (qa *QA) Moderate(m Moderation, moderator string, seq uint64, at time.Time) (ModAction, error) {
	if m.Action == ActionUndo && m.UndoOf == 0 {
		m.UndoOf = qa.LastAction(moderator)
	}
	effects, err := qa.plan(m, moderator)
	if err != nil {
		return ModAction{}, err
	}
	act := ModAction{Version: seq, Action: m.Action, Moderator: moderator, At: at, Question: m.Question,
		Into: m.Into, UndoOf: m.UndoOf, Effects: effects}
	if m.Action == ActionUndo {
		for i := range qa.Actions {
			if qa.Actions[i].Version == m.UndoOf {
				qa.Actions[i].UndoneBy = seq
				act.Question = qa.Actions[i].Question
			}
		}
	}
	for _, e := range effects {
		qa.effect(e, at, moderator, seq)
	}
	qa.Actions = append(qa.Actions, act)
	qa.Version = seq
	return act, nil
}

func (qa *QA) effect(e Effect, at time.Time, moderator string, seq uint64) {
	q := qa.Questions[e.Question]
	q.State, q.Version = e.To, seq
	if e.ToText != e.FromText {
		if q.Original == "" {
			q.Original = q.Text
		}
		q.Text = e.ToText
		if q.Text == q.Original {
			q.Original = ""
		}
	}
	if e.FromMerged != e.ToMerged {
		// Votes follow merges both ways: the duplicate's counts leave the question it was
		// merged into and join the one it is merged into now.
		old, _ := qa.Questions[e.FromMerged]
		t, _ := qa.Questions[e.ToMerged]
		if old != nil && !slices.Contains(old.Merged, q.ID) {
			old = nil
		}
		qa.move(q, old, t, seq)
		if old != nil {
			old.Merged = slices.DeleteFunc(old.Merged, func(id int64) bool { return id == q.ID })
			if len(old.Merged) == 0 {
				old.all = nil // its own voters are all it counts again
			}
			old.Version = seq
		}
		if t != nil {
			t.Merged = append(t.Merged, q.ID)
			t.Version = seq
		}
		q.MergedInto = e.ToMerged
	}
	switch {
	case e.From == QuestionPinned && e.To != QuestionPinned && qa.Pinned == q.ID:
		qa.Pinned = 0
	case e.To == QuestionPinned:
		qa.Pinned = q.ID
	}
	switch {
	case e.From == QuestionPending && e.To != QuestionPending:
		q.DecidedAt, q.DecidedBy = at, moderator
	case e.To == QuestionPending: // an undone decision: waiting again
		q.DecidedAt, q.DecidedBy = time.Time{}, ""
	}
	switch {
	case e.To == QuestionAnswered && e.From != QuestionAnswered:
		q.AnsweredAt = at
	case e.From == QuestionAnswered && e.To != QuestionAnswered && e.To != QuestionArchived:
		q.AnsweredAt = time.Time{}
	}
}

// plan works out what m would do, or why it cannot be done.
func (qa *QA) plan(m Moderation, moderator string) ([]Effect, error) {
	if m.Action == ActionUndo {
		return qa.planUndo(m, moderator)
	}
	tr, ok := transitions[m.Action]
	if !ok {
		return nil, Errorf(CodeValidation, "unknown action %q", m.Action)
	}
	q, ok := qa.Questions[m.Question]
	if !ok {
		return nil, Errorf(CodeNotFound, "question %d does not exist in this session", m.Question)
	}
	if !slices.Contains(tr.from, q.State) {
		return nil, transitionError("a question that is %s cannot be %s", q.State, pastTense(m.Action))
	}
	e := Effect{Question: q.ID, From: q.State, To: tr.to, FromText: q.Text, ToText: q.Text,
		FromMerged: q.MergedInto, ToMerged: q.MergedInto}
	switch m.Action {
	case ActionEdit:
		e.To = q.State
		var f Fields
		text := Trim(strings.Join(strings.Fields(m.Text), " "))
		if CheckString(&f, "text", m.Text, true); f != nil {
			return nil, f.Err()
		}
		if n := utf8.RuneCountInString(text); Length(text) < MinQuestionText || n > MaxQuestionText {
			f.Add("text", "invalid_length", "the text must have %d to %d characters", MinQuestionText, MaxQuestionText)
			return nil, f.Err()
		}
		if text == q.Text {
			return nil, transitionError("the question already says exactly this")
		}
		e.ToText = text
	case ActionMerge:
		t, ok := qa.Questions[m.Into]
		switch {
		case !ok:
			return nil, Errorf(CodeNotFound, "question %d does not exist in this session", m.Into)
		case t.ID == q.ID:
			return nil, transitionError("a question cannot be merged into itself")
		case !slices.Contains(mergeTargets, t.State):
			return nil, transitionError("a question that is %s cannot take a merge", t.State)
		}
		e.ToMerged = t.ID
	case ActionPin:
		if p, ok := qa.Questions[qa.Pinned]; ok && qa.Pinned != q.ID {
			return []Effect{{Question: p.ID, From: p.State, To: QuestionApproved, FromText: p.Text, ToText: p.Text,
				FromMerged: p.MergedInto, ToMerged: p.MergedInto}, e}, nil
		}
	}
	return []Effect{e}, nil
}

func (qa *QA) planUndo(m Moderation, moderator string) ([]Effect, error) {
	var last *ModAction
	for i := len(qa.Actions) - 1; i >= 0; i-- {
		a := &qa.Actions[i]
		if a.Moderator == moderator && a.Action != ActionUndo && a.UndoneBy == 0 {
			last = a
			break
		}
	}
	if last == nil {
		return nil, transitionError("there is nothing of yours left to undo in this session")
	}
	if m.UndoOf != 0 && m.UndoOf != last.Version {
		return nil, transitionError("your last action is now version %d, not %d", last.Version, m.UndoOf)
	}
	out := make([]Effect, 0, len(last.Effects))
	for _, e := range last.Effects {
		q, ok := qa.Questions[e.Question]
		if !ok || q.State != e.To || q.Text != e.ToText || q.MergedInto != e.ToMerged {
			return nil, transitionError("question %d changed after your last action; undo it by hand", e.Question)
		}
		out = append(out, Effect{Question: e.Question, From: e.To, To: e.From, FromText: e.ToText, ToText: e.FromText,
			FromMerged: e.ToMerged, ToMerged: e.FromMerged})
	}
	// Restoring a pin must not leave two pinned questions.
	for _, e := range out {
		if e.To == QuestionPinned && qa.Pinned != 0 && qa.Pinned != e.Question &&
			!slices.ContainsFunc(out, func(o Effect) bool { return o.Question == qa.Pinned }) {
			return nil, transitionError("another question is pinned now; unpin it first")
		}
	}
	return out, nil
}

// LastAction returns the version of moderator's last action that undo would revert.
func (qa *QA) LastAction(moderator string) uint64 {
	for i := len(qa.Actions) - 1; i >= 0; i-- {
		if a := qa.Actions[i]; a.Moderator == moderator && a.Action != ActionUndo && a.UndoneBy == 0 {
			return a.Version
		}
	}
	return 0
}

func pastTense(a Action) string {
	switch a {
	case ActionPin, ActionUnpin:
		return string(a) + "ned"
	case ActionEdit:
		return "edited"
	case ActionAnswer:
		return "marked answered"
	}
	return strings.TrimSuffix(string(a), "e") + "ed"
}

// Ranked returns the public questions in the order the audience sees them: the pinned one
// first, then approved ones by votes and, among equals, the earliest asked; answered ones
// last, most recently answered first.
func (qa *QA) Ranked() []*Question {
	out := make([]*Question, 0, len(qa.Questions))
	for _, id := range qa.Order {
		if q := qa.Questions[id]; q.State.Public() {
			out = append(out, q)
		}
	}
	slices.SortStableFunc(out, CompareQuestions)
	return out
}

// CompareQuestions is the audience's order (see Ranked).
func CompareQuestions(a, b *Question) int {
	rank := func(s QuestionState) int {
		switch s {
		case QuestionPinned:
			return 0
		case QuestionApproved:
			return 1
		}
		return 2
	}
	if ra, rb := rank(a.State), rank(b.State); ra != rb {
		return ra - rb
	}
	if a.State == QuestionAnswered {
		return b.AnsweredAt.Compare(a.AnsweredAt)
	}
	if a.Votes != b.Votes {
		return b.Votes - a.Votes
	}
	return cmp.Compare(a.ID, b.ID)
}
