package api

import "time"

// AttendeeToken is POST /v1/events/{event}/attendees: an anonymous attendee identity.
// The token goes in Authorization: Bearer on attendee requests and in the websocket's
// auth frame; it proves nothing about the person and carries no personal data.
type AttendeeToken struct {
	Attendee  string    `json:"attendee"` // pseudonymous id, the token's subject
	Name      string    `json:"name,omitempty"`
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Question is a town-hall question as the audience sees it. The audience only ever sees
// approved, pinned and answered questions; an attendee also sees their own in every state.
type Question struct {
	ID         int64      `json:"id"`
	Session    int64      `json:"session"`
	Text       string     `json:"text"`
	Lang       string     `json:"lang"`
	Name       string     `json:"name,omitempty"` // absent: asked anonymously
	State      string     `json:"state"`          // pending, approved, rejected, pinned, answered, archived, merged
	Votes      int        `json:"votes"`
	Edited     bool       `json:"edited,omitempty"` // a moderator fixed the text
	MergedInto int64      `json:"merged_into,omitempty"`
	AskedAt    time.Time  `json:"asked_at"`
	AnsweredAt *time.Time `json:"answered_at,omitempty"`
}

// QuestionList is GET /v1/events/{event}/sessions/{session}/questions and the snapshot of
// questions:<event>:<session>: the public questions, pinned first, then approved by votes
// (earliest asked first among equals), then answered, most recent first.
type QuestionList struct {
	Event     string     `json:"event"`
	Session   int64      `json:"session"`
	Version   uint64     `json:"version"`
	Open      bool       `json:"open"`      // taking questions now
	Moderated bool       `json:"moderated"` // questions wait for a moderator
	Questions []Question `json:"questions"`
}

// QuestionsUpdate is the data of an update on questions:<event>:<session>. Questions are
// whole (new, or changed in more than their vote count); Votes are the new counts of those
// whose count alone changed, by id; removed ones left the public list (archived or merged).
// Vote counts are coalesced: one update carries every count that changed in the last
// fraction of a second. Clients keep the order of QuestionList.
type QuestionsUpdate struct {
	Questions []Question    `json:"questions,omitempty"`
	Votes     map[int64]int `json:"votes,omitempty"`
	Removed   []int64       `json:"removed,omitempty"`
	Open      *bool         `json:"open,omitempty"`
	Moderated *bool         `json:"moderated,omitempty"`
}

// MyQuestions is GET …/questions/mine: an attendee's own questions in every state, and the
// questions their vote counts for.
type MyQuestions struct {
	Event     string     `json:"event"`
	Session   int64      `json:"session"`
	Version   uint64     `json:"version"`
	Questions []Question `json:"questions"`
	Voted     []int64    `json:"voted"`
}

// Vote is the answer to PUT or DELETE …/questions/{question}/vote: the question's count
// once this node has applied the vote, and whether the attendee's vote counts for it.
type Vote struct {
	Question int64  `json:"question"` // the question that counts the vote (a merged duplicate's target)
	Votes    int    `json:"votes"`
	Voted    bool   `json:"voted"`
	Version  uint64 `json:"version"` // the log sequence that holds the vote
}

// Flag says why a question needs a moderator's eye.
type Flag struct {
	Kind       string   `json:"kind"` // word_list or near_duplicate
	Words      []string `json:"words,omitempty"`
	Similar    int64    `json:"similar,omitempty"` // near_duplicate: merge into this one?
	Similarity float64  `json:"similarity,omitempty"`
}

// ModQuestion is a question as moderators see it.
type ModQuestion struct {
	Question
	Original    string     `json:"original,omitempty"` // the text as asked, when edited
	Attendee    string     `json:"attendee"`
	Flags       []Flag     `json:"flags"`
	Merged      []int64    `json:"merged"` // duplicates merged into this one
	DecidedAt   *time.Time `json:"decided_at,omitempty"`
	DecidedBy   string     `json:"decided_by,omitempty"`
	WaitSeconds *float64   `json:"wait_seconds,omitempty"` // asked → decided, once decided
}

// Effect is what a moderator action did to one question.
type Effect struct {
	Question int64  `json:"question"`
	From     string `json:"from"`
	To       string `json:"to"`
	FromText string `json:"from_text,omitempty"` // edits only
	ToText   string `json:"to_text,omitempty"`
}

// ModAction is one moderator action, as logged.
type ModAction struct {
	Version   uint64    `json:"version"`
	Action    string    `json:"action"`
	Moderator string    `json:"moderator"`
	At        time.Time `json:"at"`
	Question  int64     `json:"question,omitempty"`
	Into      int64     `json:"into,omitempty"`
	UndoOf    uint64    `json:"undo_of,omitempty"`
	UndoneBy  uint64    `json:"undone_by,omitempty"`
	Effects   []Effect  `json:"effects"`
}

// QueueStats is how long questions wait for a moderator.
type QueueStats struct {
	Pending           int        `json:"pending"`
	OldestPendingAt   *time.Time `json:"oldest_pending_at,omitempty"`
	Decided           int        `json:"decided"`
	MedianWaitSeconds float64    `json:"median_wait_seconds"`
	P90WaitSeconds    float64    `json:"p90_wait_seconds"`
}

// Moderation is GET …/moderation and the snapshot of moderation:<event>:<session>: every
// question in the order asked, the queue's waits and the recent moderation history.
// ServerTime lets a console show live waits with its own clock corrected.
type Moderation struct {
	Event      string        `json:"event"`
	Session    int64         `json:"session"`
	Version    uint64        `json:"version"`
	Open       bool          `json:"open"`
	Moderated  bool          `json:"moderated"`
	ServerTime time.Time     `json:"server_time"`
	Queue      QueueStats    `json:"queue"`
	Questions  []ModQuestion `json:"questions"`
	Actions    []ModAction   `json:"actions"` // the most recent, oldest first
}

// ModerationUpdate is the data of an update on moderation:<event>:<session>.
type ModerationUpdate struct {
	Questions []ModQuestion `json:"questions,omitempty"` // new or changed in more than their votes, whole
	Votes     map[int64]int `json:"votes,omitempty"`     // new counts of questions whose count alone changed
	Actions   []ModAction   `json:"actions,omitempty"`   // new, or changed (undone)
	Queue     QueueStats    `json:"queue"`
	Open      *bool         `json:"open,omitempty"`
	Moderated *bool         `json:"moderated,omitempty"`
}

// ModerationResult is the answer to a moderator action.
type ModerationResult struct {
	Action    ModAction     `json:"action"`
	Questions []ModQuestion `json:"questions"` // every question the action changed, as now
}

// QASettings is PUT …/qa and its answer.
type QASettings struct {
	Session   int64  `json:"session"`
	Open      bool   `json:"open"`
	Moderated bool   `json:"moderated"`
	Version   uint64 `json:"version"`
}

// QuestionExport is GET …/questions/export (JSON): the whole record of a session's town
// hall, for the organizers and whoever audits them.
type QuestionExport struct {
	Event      string        `json:"event"`
	Session    int64         `json:"session"`
	Title      string        `json:"title"`
	Version    uint64        `json:"version"`
	ExportedAt time.Time     `json:"exported_at"`
	Open       bool          `json:"open"`
	Moderated  bool          `json:"moderated"`
	Queue      QueueStats    `json:"queue"`
	Questions  []ModQuestion `json:"questions"`
	Actions    []ModAction   `json:"actions"`
}
