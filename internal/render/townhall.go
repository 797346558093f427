package render

import (
	"slices"
	"time"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/pkg/api"
)

// Question is a question as the audience (or its asker) sees it: never the attendee's id,
// the original text or the flags.
func Question(q *cabildo.Question) api.Question {
	out := api.Question{ID: q.ID, Session: q.Session, Text: q.Text, Lang: string(q.Lang), Name: q.Name,
		State: string(q.State), Votes: q.Votes, Edited: q.Original != "", MergedInto: q.MergedInto, AskedAt: q.AskedAt.UTC()}
	if !q.AnsweredAt.IsZero() {
		t := q.AnsweredAt.UTC()
		out.AnsweredAt = &t
	}
	return out
}

// QuestionList is the public list of a session's questions, in the audience's order.
// qa may be nil: a session nobody opened yet.
func QuestionList(event string, session int64, qa *cabildo.QA) api.QuestionList {
	out := api.QuestionList{Event: event, Session: session, Moderated: true, Questions: []api.Question{}}
	if qa == nil {
		return out
	}
	out.Version, out.Open, out.Moderated = qa.Version, qa.Open, qa.Moderated
	for _, q := range qa.Ranked() {
		out.Questions = append(out.Questions, Question(q))
	}
	return out
}

// ModQuestion is one question with everything moderators see.
func ModQuestion(q *cabildo.Question) api.ModQuestion {
	out := api.ModQuestion{Question: Question(q), Original: q.Original, Attendee: q.Attendee,
		Flags: make([]api.Flag, 0, len(q.Flags)), Merged: append([]int64{}, q.Merged...)}
	for _, f := range q.Flags {
		out.Flags = append(out.Flags, api.Flag{Kind: f.Kind, Words: f.Words, Similar: f.Similar, Similarity: f.Similarity})
	}
	if !q.DecidedAt.IsZero() {
		t := q.DecidedAt.UTC()
		w := t.Sub(q.AskedAt).Seconds()
		out.DecidedAt, out.WaitSeconds, out.DecidedBy = &t, &w, q.DecidedBy
	}
	return out
}

// Action is one entry of the moderation history.
func Action(a cabildo.ModAction) api.ModAction {
	out := api.ModAction{Version: a.Version, Action: string(a.Action), Moderator: a.Moderator, At: a.At.UTC(),
		Question: a.Question, Into: a.Into, UndoOf: a.UndoOf, UndoneBy: a.UndoneBy, Effects: make([]api.Effect, 0, len(a.Effects))}
	for _, e := range a.Effects {
		ae := api.Effect{Question: e.Question, From: string(e.From), To: string(e.To)}
		if e.FromText != e.ToText {
			ae.FromText, ae.ToText = e.FromText, e.ToText
		}
		out.Effects = append(out.Effects, ae)
	}
	return out
}

// Queue is how long the session's questions wait for a moderator.
func Queue(qa *cabildo.QA) api.QueueStats {
	var (
		out   api.QueueStats
		waits []float64
	)
	for _, id := range qa.Order {
		q := qa.Questions[id]
		if q.State == cabildo.QuestionPending {
			out.Pending++
			if out.OldestPendingAt == nil || q.AskedAt.Before(*out.OldestPendingAt) {
				t := q.AskedAt.UTC()
				out.OldestPendingAt = &t
			}
		}
		if !q.DecidedAt.IsZero() {
			waits = append(waits, q.DecidedAt.Sub(q.AskedAt).Seconds())
		}
	}
	out.Decided = len(waits)
	if len(waits) > 0 {
		slices.Sort(waits)
		out.MedianWaitSeconds = waits[(len(waits)-1)/2]
		out.P90WaitSeconds = waits[(len(waits)*9+9)/10-1]
	}
	return out
}

// MaxModerationActions is how much history a moderation view carries; exports have all.
const MaxModerationActions = 100

// Moderation is the whole moderation view of a session, questions in the order asked.
func Moderation(event string, session int64, qa *cabildo.QA, now time.Time) api.Moderation {
	out := api.Moderation{Event: event, Session: session, Moderated: true, ServerTime: now.UTC(),
		Questions: []api.ModQuestion{}, Actions: []api.ModAction{}}
	if qa == nil {
		return out
	}
	out.Version, out.Open, out.Moderated, out.Queue = qa.Version, qa.Open, qa.Moderated, Queue(qa)
	for _, id := range qa.Order {
		out.Questions = append(out.Questions, ModQuestion(qa.Questions[id]))
	}
	for _, a := range qa.Actions[max(0, len(qa.Actions)-MaxModerationActions):] {
		out.Actions = append(out.Actions, Action(a))
	}
	return out
}
