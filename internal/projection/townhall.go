package projection

import (
	"fmt"
	"slices"
	"time"

	"github.com/cabildo/cabildo/internal/cabildo"
)

// QAOf returns a session's town hall, nil when nobody configured it or asked yet.
func (st *EventState) QAOf(session int64) *cabildo.QA { return st.QA[session] }

// qa returns a session's town hall, creating it for a session that exists.
func (st *EventState) qa(session int64) (*cabildo.QA, error) {
	if qa, ok := st.QA[session]; ok {
		return qa, nil
	}
	guid, ok := st.ByID[session]
	if !ok {
		return nil, fmt.Errorf("session %d does not exist", session)
	}
	if _, ok := st.Programme.Sessions[guid]; !ok {
		return nil, fmt.Errorf("session %d was removed", session)
	}
	qa := cabildo.NewQA(session)
	st.QA[session] = qa
	return qa, nil
}

// applyTownHall applies a town-hall record. Votes for what cannot take them any more, and
// questions for a session that no longer exists, are skipped one by one: the rest of their
// batch still counts. So is a question whose Idempotency-Key was already applied: a retry
// that raced with its original, or came after the original's answer was lost.
func (s *Store) applyTownHall(st *EventState, seq uint64, subject string, at time.Time, rec cabildo.Record) error {
	switch rec.Type {
	case cabildo.RecordQAConfigured:
		qa, err := st.qa(rec.QASettings.Session)
		if err != nil {
			return err
		}
		qa.Configure(*rec.QASettings, seq)
	case cabildo.RecordQuestionsAsked:
		ids := make([]int64, len(rec.Asked)) // 0 for an item skipped
		for i, a := range rec.Asked {
			key := idemKey(rec.Event, a.IdempotencyKey)
			if _, seen := s.idem[key]; seen && a.IdempotencyKey != "" {
				continue
			}
			qa, err := st.qa(a.Question.Session)
			if err != nil {
				s.log.Warn("projection: skipped question", "seq", seq, "item", i, "err", err)
				continue
			}
			q := a.Question
			if j := a.SimilarTo - 1; j >= 0 && j < i && ids[j] != 0 {
				q.Flags = append(slices.Clone(q.Flags), cabildo.Flag{Kind: cabildo.FlagNearDuplicate, Similar: ids[j], Similarity: a.Similarity})
			}
			st.LastQuestion++
			ids[i] = st.LastQuestion
			qa.Ask(q, st.LastQuestion, seq, i, at)
			if a.IdempotencyKey != "" {
				s.idem[key] = Idempotent{Seq: seq, RequestHash: a.RequestHash, Subject: subject, At: at, Ref: st.LastQuestion}
			}
		}
	case cabildo.RecordQuestionModerated:
		qa, ok := st.QA[rec.Moderation.Session]
		if !ok {
			return fmt.Errorf("session %d has no questions", rec.Moderation.Session)
		}
		if _, err := qa.Moderate(*rec.Moderation, rec.Actor, seq, at); err != nil {
			return err
		}
	case cabildo.RecordVotesCast:
		for _, v := range rec.Votes {
			if qa, ok := st.QA[v.Session]; ok {
				qa.Vote(v, seq)
			}
		}
	}
	return nil
}
