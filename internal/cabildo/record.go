package cabildo

import "fmt"

// RecordType names a domain event in the log of record.
type RecordType string

const (
	RecordEventPut           RecordType = "event.put"
	RecordRoomPut            RecordType = "room.put"
	RecordTrackPut           RecordType = "track.put"
	RecordSpeakerPut         RecordType = "speaker.put"
	RecordSessionCreated     RecordType = "session.created"
	RecordSessionUpdated     RecordType = "session.updated"
	RecordSessionCancelled   RecordType = "session.cancelled"
	RecordSessionReinstated  RecordType = "session.reinstated"
	RecordSessionDeleted     RecordType = "session.deleted"
	RecordAnnouncementPosted RecordType = "announcement.posted"
	RecordQAConfigured       RecordType = "qa.configured"
	RecordQuestionsAsked     RecordType = "questions.asked"
	RecordQuestionModerated  RecordType = "question.moderated"
	RecordVotesCast          RecordType = "votes.cast"
)

// TownHall reports whether a record belongs to a session's town hall rather than to the
// programme: it changes neither the schedule's version nor its history.
func (t RecordType) TownHall() bool {
	switch t {
	case RecordQAConfigured, RecordQuestionsAsked, RecordQuestionModerated, RecordVotesCast:
		return true
	}
	return false
}

// Record is one domain event: the unit appended to the log of record. Records carry the
// whole new state of what they change, so applying one never depends on anything but the
// state the log itself built; the projection derives typed changes by comparing.
type Record struct {
	Type  RecordType `json:"type"`
	Event string     `json:"event"`
	Actor string     `json:"actor,omitempty"`
	// IdempotencyKey and RequestHash let every node remember a retried request long after
	// the log's own de-duplication window has passed.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	RequestHash    string `json:"request_hash,omitempty"`

	EventInfo *Event   `json:"event_info,omitempty"`
	Room      *Room    `json:"room,omitempty"`
	Track     *Track   `json:"track,omitempty"`
	Speaker   *Speaker `json:"speaker,omitempty"`
	Session   *Session `json:"session,omitempty"`
	Reason    *Reason  `json:"reason,omitempty"`

	Announcement *Announcement `json:"announcement,omitempty"`

	QASettings *QASettings `json:"qa_settings,omitempty"`
	Moderation *Moderation `json:"moderation,omitempty"`
	// Questions and votes are group-committed: one record holds every question (or vote)
	// a node took while the previous append was in flight.
	Asked []Asked  `json:"asked,omitempty"`
	Votes []VoteOp `json:"votes,omitempty"`
}

// Asked is one question of a questions.asked record, with what recognises a retry of the
// request that asked it (the record's own IdempotencyKey is for single writes).
type Asked struct {
	Question       Question `json:"question"`
	IdempotencyKey string   `json:"idempotency_key,omitempty"`
	RequestHash    string   `json:"request_hash,omitempty"`
	// SimilarTo is the place (from 1) of an earlier question in the same record that this
	// one nearly repeats, with their Similarity: its id is only known once the record is
	// applied, which then flags this question as a near-duplicate of it.
	SimilarTo  int     `json:"similar_to,omitempty"`
	Similarity float64 `json:"similarity,omitempty"`
}

// Subject is the record's aggregate within the log, relative to the log's prefix:
// "<event>.session.<guid>", "<event>.room.<id>", ... Optimistic concurrency is per subject.
func (r Record) Subject() string {
	switch {
	case r.EventInfo != nil:
		return EventSubject(r.Event)
	case r.Room != nil:
		return fmt.Sprintf("%s.room.%s", r.Event, r.Room.ID)
	case r.Track != nil:
		return fmt.Sprintf("%s.track.%s", r.Event, r.Track.ID)
	case r.Speaker != nil:
		return fmt.Sprintf("%s.speaker.%s", r.Event, r.Speaker.ID)
	case r.Session != nil:
		return SessionSubject(r.Event, r.Session.GUID)
	case r.Announcement != nil:
		return r.Event + ".announcement." + r.Announcement.GUID
	case r.Asked != nil:
		return QuestionsSubject(r.Event)
	case r.Moderation != nil:
		return ModerationSubject(r.Event, r.Moderation.Session)
	case r.QASettings != nil:
		return ModerationSubject(r.Event, r.QASettings.Session)
	case r.Votes != nil:
		return r.Event + ".votes"
	}
	return r.Event + ".unknown"
}

// EventSubject is the subject of an event's own metadata.
func EventSubject(event string) string { return event + ".event" }

// SessionSubject is the subject of one session.
func SessionSubject(event, guid string) string { return event + ".session." + guid }

// QuestionsSubject holds the questions asked at an event, group-committed: asking needs
// no order with anything else, so these appends never conflict.
func QuestionsSubject(event string) string { return event + ".questions" }

// ModerationSubject holds a session's moderator actions and Q&A settings: each is checked
// against the state the one before left, so they are appended with that subject's
// expected sequence.
func ModerationSubject(event string, session int64) string {
	return fmt.Sprintf("%s.moderation.%d", event, session)
}

// Validate checks that the record is well formed enough to apply.
func (r Record) Validate() error {
	if !ValidSlug(r.Event) {
		return fmt.Errorf("record %s: bad event id %q", r.Type, r.Event)
	}
	ok := false
	switch r.Type {
	case RecordEventPut:
		ok = r.EventInfo != nil
	case RecordRoomPut:
		ok = r.Room != nil
	case RecordTrackPut:
		ok = r.Track != nil
	case RecordSpeakerPut:
		ok = r.Speaker != nil
	case RecordSessionCreated, RecordSessionUpdated, RecordSessionCancelled, RecordSessionReinstated, RecordSessionDeleted:
		ok = r.Session != nil
	case RecordAnnouncementPosted:
		ok = r.Announcement != nil
	case RecordQAConfigured:
		ok = r.QASettings != nil
	case RecordQuestionsAsked:
		ok = len(r.Asked) > 0
	case RecordQuestionModerated:
		ok = r.Moderation != nil
	case RecordVotesCast:
		ok = len(r.Votes) > 0
	}
	if !ok {
		return fmt.Errorf("record %s: missing payload", r.Type)
	}
	return nil
}
