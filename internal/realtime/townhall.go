package realtime

import (
	"bytes"
	"cmp"
	"encoding/json"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/projection"
	"github.com/cabildo/cabildo/internal/render"
	"github.com/cabildo/cabildo/pkg/api"
	"github.com/cabildo/cabildo/pkg/protocol"
)

// A town-hall feed serves one session's two channels, questions:<event>:<session> (the
// audience: public questions only) and moderation:<event>:<session> (everything). Each
// keeps the view it last published. A flush compares the projection with it and publishes
// what differs as one update chained by prev: questions whole, or just their counts when
// nothing else changed. A subscriber's snapshot is rendered from that same view, so its
// version and the next update's prev always meet.
//
// Votes change counts many times a second: they only mark the feed due, and it flushes at
// most every VoteInterval, so a burst of a thousand votes is one update per channel. Any
// other change (a question asked, approved, pinned...) flushes at once, taking the counts
// changed meanwhile with it.
type feed struct {
	event   string
	session int64

	mu        sync.Mutex
	audience  view
	moderator view
	queue     api.QueueStats
	due       bool      // a vote flush is scheduled
	flushed   time.Time // when vote counts last went out
	dropped   bool      // nobody subscribes any more: a new feed replaces this one
	idleSince time.Time // when its last subscriber left
}

// view is what one channel last published.
type view struct {
	version   uint64
	open      bool
	moderated bool
	items     map[int64]item // questions by id; for moderation also actions, by -version
	actions   []int64        // the action keys in items
	ring      []sent         // the last updates, for resumes
	// snap is the audience's snapshot at version, encoded for the first subscriber that
	// needed it and shared by the rest (a hall of phones joins at once). Moderation
	// snapshots carry the server's time, so each moderator gets a fresh one.
	snap []Frame
}

type item struct {
	value any
	json  []byte
}

type sent struct {
	prev, version uint64
	frame         Frame // nil: the update did not fit a frame, and went out as a snapshot
}

// ringSize is how many recent updates a feed keeps to resume a client exactly; an older
// since gets a snapshot.
const ringSize = 64

func feedKey(event string, session int64) string {
	return event + ":" + strconv.FormatInt(session, 10)
}

// feedFor returns the session's feed, creating it if create.
func (ch *Channels) feedFor(event string, session int64, create bool) *feed {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	k := feedKey(event, session)
	f, ok := ch.feeds[k]
	if !ok && create {
		f = &feed{event: event, session: session}
		ch.feeds[k] = f
	}
	return f
}

// onTownHall routes a town-hall record to the feeds it concerns.
func (ch *Channels) onTownHall(a projection.Applied) {
	rec := a.Record
	var sessions []int64
	for _, a := range rec.Asked {
		sessions = append(sessions, a.Question.Session)
	}
	for _, v := range rec.Votes {
		sessions = append(sessions, v.Session)
	}
	if rec.Moderation != nil {
		sessions = append(sessions, rec.Moderation.Session)
	}
	if rec.QASettings != nil {
		sessions = append(sessions, rec.QASettings.Session)
	}
	slices.Sort(sessions)
	for _, s := range slices.Compact(sessions) {
		f := ch.feedFor(a.Event, s, false)
		if f == nil {
			continue
		}
		if rec.Type == cabildo.RecordVotesCast {
			ch.flushSoon(f)
		} else {
			f.mu.Lock()
			ch.flushLocked(f)
			f.mu.Unlock()
		}
	}
}

// flushSoon flushes f once VoteInterval has passed since its last vote flush.
func (ch *Channels) flushSoon(f *feed) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch.scheduleLocked(f)
}

func (ch *Channels) scheduleLocked(f *feed) {
	if f.due {
		return
	}
	f.due = true
	time.AfterFunc(max(0, time.Until(f.flushed.Add(ch.VoteInterval))), func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.due = false
		ch.flushLocked(f)
	})
}

func (ch *Channels) topicKeys(f *feed) (audience, moderation string) {
	return Channel{Kind: KindQuestions, Event: f.event, Session: f.session}.Key(""),
		Channel{Kind: KindModeration, Event: f.event, Session: f.session}.Key("")
}

// feedLinger is how long a feed lives on with nobody subscribed, so that a client coming
// back after a drop or a token renewal resumes with the updates it missed rather than a
// snapshot.
const feedLinger = 2 * time.Minute

// flushLocked publishes what changed since the feed's last flush. Once nobody has been
// subscribed to either channel for feedLinger the feed is dropped: the next subscriber
// starts a new one.
func (ch *Channels) flushLocked(f *feed) {
	ak, mk := ch.topicKeys(f)
	idle := !ch.hub.HasTopic(ak) && !ch.hub.HasTopic(mk)
	switch {
	case !idle:
		f.idleSince = time.Time{}
	case f.idleSince.IsZero():
		f.idleSince = time.Now()
	}
	if idle && time.Since(f.idleSince) > feedLinger {
		ch.mu.Lock()
		if ch.feeds[feedKey(f.event, f.session)] == f {
			delete(ch.feeds, feedKey(f.event, f.session))
		}
		ch.mu.Unlock()
		f.audience, f.moderator, f.dropped = view{}, view{}, true
		return
	}
	ch.advanceLocked(f)
}

// advanceLocked brings both views up to the projection and publishes their updates. Only
// the questions changed since a view's version are rendered (each question knows the last
// version that changed it), so a flush costs what changed, not the size of the town hall.
// A view nobody has seen yet just starts at the projection's version. Changes of vote
// counts alone wait until VoteInterval has passed since the last vote flush: a question
// asked or approved goes out at once (with whatever counts changed meanwhile), but a
// stream of votes is a few updates a second, whatever else happens.
func (ch *Channels) advanceLocked(f *feed) {
	votesDue := time.Since(f.flushed) >= ch.VoteInterval
	var (
		version   uint64
		open      bool
		moderated = true
		aud, mod  []change
	)
	ch.store.Read(f.event, func(st *projection.EventState) {
		qa := st.QAOf(f.session)
		if qa == nil {
			version = st.Created
			return
		}
		version, open, moderated = qa.Version, qa.Open, qa.Moderated
		aud = audienceChanges(qa, f.audience.base())
		mod = moderatorChanges(qa, f.moderator.base())
		f.queue = render.Queue(qa)
	})
	ak, mk := ch.topicKeys(f)
	a := f.audience.advance(KindQuestions, f, version, open, moderated, aud, nil, votesDue)
	if a.frames != nil {
		ch.hub.Publish(ak, version, a.frames...)
	}
	m := f.moderator.advance(KindModeration, f, version, open, moderated, mod, &f.queue, votesDue)
	if m.frames != nil {
		ch.hub.Publish(mk, version, m.frames...)
	}
	// Counts that went out with a question approved or asked restart the interval: the
	// next update of counts alone waits VoteInterval from there, so an audience gets a few
	// updates a second in all, not a few of counts plus one per question.
	if a.votes || m.votes {
		f.flushed = time.Now()
	}
	if a.deferred || m.deferred {
		ch.scheduleLocked(f)
	}
}

// advanced is what a view's advance did.
type advanced struct {
	frames   []Frame // the update to publish (or the snapshot in its place); nil when subscribers would see nothing new
	votes    bool    // the update carries changed vote counts
	deferred bool    // only vote counts changed, and they wait until VoteInterval has passed
}

// change is one item of a view as it is now; it is nil when the item left the view.
type change struct {
	id int64 // a question's id, or minus an action's version
	it *item
}

// base is the version after which the view needs changes: all of them for a view that
// has not started.
func (v *view) base() uint64 {
	if v.items == nil {
		return 0
	}
	return v.version
}

func audienceChanges(qa *cabildo.QA, since uint64) []change {
	var out []change
	for _, id := range qa.Order {
		q := qa.Questions[id]
		switch {
		case q.Version <= since:
		case q.State.Public():
			it := newItem(render.Question(q))
			out = append(out, change{id, &it})
		default:
			out = append(out, change{id: id})
		}
	}
	return out
}

func moderatorChanges(qa *cabildo.QA, since uint64) []change {
	var out []change
	for _, id := range qa.Order {
		if q := qa.Questions[id]; q.Version > since {
			it := newItem(render.ModQuestion(q))
			out = append(out, change{id, &it})
		}
	}
	for _, a := range qa.Actions[max(0, len(qa.Actions)-render.MaxModerationActions):] {
		if a.Version > since || a.UndoneBy > since {
			it := newItem(render.Action(a))
			out = append(out, change{-int64(a.Version), &it})
		}
	}
	return out
}

func newItem(v any) item {
	b, err := json.Marshal(v)
	if err != nil {
		panic("realtime: encode town hall item: " + err.Error()) // our own types always encode
	}
	return item{value: v, json: b}
}

// townHallUpdate is QuestionsUpdate and ModerationUpdate with their items pre-encoded.
type townHallUpdate struct {
	Questions []json.RawMessage `json:"questions,omitempty"`
	Votes     map[int64]int     `json:"votes,omitempty"`
	Actions   []json.RawMessage `json:"actions,omitempty"`
	Removed   []int64           `json:"removed,omitempty"`
	Queue     *api.QueueStats   `json:"queue,omitempty"`
	Open      *bool             `json:"open,omitempty"`
	Moderated *bool             `json:"moderated,omitempty"`
}

// advance moves the view to version and returns the update frame for what changed, if
// anything a subscriber would see did. When only vote counts changed and votes are not
// due, it leaves the view as it is and says so (deferred): the next flush sends them.
func (v *view) advance(kind string, f *feed, version uint64, open, moderated bool, changes []change,
	queue *api.QueueStats, votesDue bool) advanced {
	if v.items == nil {
		// Nobody has seen this view yet: it starts here, without an update.
		*v = view{version: version, open: open, moderated: moderated, items: map[int64]item{}}
		v.apply(changes)
		return advanced{}
	}
	if version <= v.version {
		return advanced{}
	}
	var (
		up        townHallUpdate
		qs, acts  []change
		onlyVotes = open == v.open && moderated == v.moderated
	)
	for _, c := range changes {
		old, had := v.items[c.id]
		switch {
		case c.it == nil:
			if had {
				up.Removed = append(up.Removed, c.id)
				onlyVotes = false
			}
		case had && bytes.Equal(old.json, c.it.json):
		case c.id < 0:
			acts = append(acts, c)
			onlyVotes = false
		case had && sameButVotes(old.value, c.it.value):
			// A count alone: a few bytes in votes rather than the whole question, which
			// matters when thousands of phones decode an update four times a second.
			if up.Votes == nil {
				up.Votes = map[int64]int{}
			}
			up.Votes[c.id] = votesOf(c.it.value)
		default:
			qs = append(qs, c)
			onlyVotes = false
		}
	}
	if open != v.open {
		up.Open = &open
	}
	if moderated != v.moderated {
		up.Moderated = &moderated
	}
	if len(qs) == 0 && len(up.Votes) == 0 && len(acts) == 0 && len(up.Removed) == 0 && up.Open == nil && up.Moderated == nil {
		return advanced{}
	}
	if onlyVotes && !votesDue {
		return advanced{deferred: true}
	}
	byKey := func(a, b change) int { return cmp.Compare(a.id, b.id) }
	slices.SortFunc(qs, byKey)
	slices.SortFunc(acts, func(a, b change) int { return byKey(b, a) }) // oldest action first
	for _, c := range qs {
		up.Questions = append(up.Questions, c.it.json)
	}
	for _, c := range acts {
		up.Actions = append(up.Actions, c.it.json)
	}
	slices.Sort(up.Removed)
	up.Queue = queue
	prev := v.version
	name := Channel{Kind: kind, Event: f.event, Session: f.session}.Name()
	frames := []Frame{encode(protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: name, Version: version, Prev: &prev}, up)}
	v.version, v.open, v.moderated = version, open, moderated
	v.apply(changes)
	v.snap = nil
	out := sent{prev: prev, version: version, frame: frames[0]}
	if !fits(frames) {
		// Too big for a frame (a flood of questions or counts at once): subscribers start
		// again from the view, which can be cut in parts where an update cannot.
		frames, out.frame = v.snapshot(kind, f, name), nil
	}
	v.ring = append(v.ring, out)
	if len(v.ring) > ringSize {
		v.ring = slices.Delete(v.ring, 0, len(v.ring)-ringSize)
	}
	return advanced{frames: frames, votes: len(up.Votes) > 0}
}

// apply puts changes into the view, keeping the most recent moderation actions only.
func (v *view) apply(changes []change) {
	for _, c := range changes {
		_, had := v.items[c.id]
		if c.it == nil {
			delete(v.items, c.id)
			continue
		}
		v.items[c.id] = *c.it
		if c.id < 0 && !had {
			v.actions = append(v.actions, c.id)
		}
	}
	if over := len(v.actions) - render.MaxModerationActions; over > 0 {
		slices.SortFunc(v.actions, func(a, b int64) int { return cmp.Compare(b, a) }) // oldest first
		for _, id := range v.actions[:over] {
			delete(v.items, id)
		}
		v.actions = slices.Delete(v.actions, 0, over)
	}
}

// votesOf is a rendered question's vote count.
func votesOf(v any) int {
	switch q := v.(type) {
	case api.Question:
		return q.Votes
	case api.ModQuestion:
		return q.Votes
	}
	panic("realtime: votesOf a non-question")
}

// sameButVotes reports whether two renderings of a question differ in their vote count
// only.
func sameButVotes(a, b any) bool {
	switch x := a.(type) {
	case api.Question:
		y, ok := b.(api.Question)
		y.Votes = x.Votes
		return ok && reflect.DeepEqual(x, y)
	case api.ModQuestion:
		y, ok := b.(api.ModQuestion)
		y.Votes = x.Votes
		return ok && reflect.DeepEqual(x, y)
	}
	return false
}

// since returns the updates after version since, if the view still has all of them (an
// update that went out as a snapshot is not kept: resuming across it brings a snapshot).
func (v *view) since(since uint64) ([]Frame, bool) {
	if since == v.version {
		return nil, true
	}
	for i, s := range v.ring {
		if s.prev == since {
			out := make([]Frame, 0, len(v.ring)-i)
			for _, r := range v.ring[i:] {
				if r.frame == nil {
					return nil, false
				}
				out = append(out, r.frame)
			}
			return out, true
		}
	}
	return nil, false
}

// subscribeTownHall starts a subscription to a session's questions or moderation channel:
// the updates after since if the feed still has them, else a snapshot of its view.
func (ch *Channels) subscribeTownHall(c *Client, chn Channel, since *uint64, id uint64) error {
	var exists bool
	ch.store.Read(chn.Event, func(st *projection.EventState) {
		if guid, ok := st.ByID[chn.Session]; ok {
			_, exists = st.Programme.Sessions[guid]
		}
	})
	if !exists {
		return &FrameError{Code: protocol.ErrUnknownChannel, Message: "no such event or session"}
	}
	for {
		f := ch.feedFor(chn.Event, chn.Session, true)
		f.mu.Lock()
		if f.dropped {
			// The last subscriber left while we were getting here: take the new feed.
			f.mu.Unlock()
			continue
		}
		err := ch.subscribeLocked(f, c, chn, since, id)
		f.mu.Unlock()
		return err
	}
}

func (ch *Channels) subscribeLocked(f *feed, c *Client, chn Channel, since *uint64, id uint64) error {
	// Bring the views up to now (publishing to whoever is subscribed already), so the
	// new subscriber starts where everyone else is. Its linger starts again when it leaves.
	f.idleSince = time.Time{}
	ch.advanceLocked(f)
	v := &f.audience
	if chn.Kind == KindModeration {
		v = &f.moderator
	}
	name := chn.Name()
	return ch.hub.Subscribe(c, chn.Key(""), func() ([]Frame, uint64, error) {
		var frames []Frame
		resumed := false
		if since != nil {
			var fr []Frame
			if fr, resumed = v.since(*since); resumed && weight(fr) <= ch.hub.ResumeBytes() {
				frames = fr
			} else {
				resumed = false
			}
		}
		if !resumed {
			frames = slices.Clone(v.snapshot(chn.Kind, f, name))
		}
		frames = append(frames, encode(protocol.ServerFrame{Type: protocol.TypeSubscribed, ID: id, Channel: name, Version: v.version}, nil))
		return frames, v.version, nil
	})
}

// snapshot renders the view: the public list in the audience's order, or everything for
// moderators. The audience's frames are shared: append to a clone.
func (v *view) snapshot(kind string, f *feed, name string) []Frame {
	if kind == KindQuestions {
		if v.snap != nil {
			return v.snap
		}
		list := api.QuestionList{Event: f.event, Session: f.session, Version: v.version, Open: v.open,
			Moderated: v.moderated, Questions: make([]api.Question, 0, len(v.items))}
		for _, it := range v.items {
			list.Questions = append(list.Questions, it.value.(api.Question))
		}
		slices.SortFunc(list.Questions, audienceOrder)
		v.snap = snapshotFrames(name, v.version, list)
		return v.snap
	}
	m := api.Moderation{Event: f.event, Session: f.session, Version: v.version, Open: v.open, Moderated: v.moderated,
		ServerTime: time.Now().UTC(), Queue: f.queue, Questions: []api.ModQuestion{}, Actions: []api.ModAction{}}
	for id, it := range v.items {
		if id > 0 {
			m.Questions = append(m.Questions, it.value.(api.ModQuestion))
		} else {
			m.Actions = append(m.Actions, it.value.(api.ModAction))
		}
	}
	slices.SortFunc(m.Questions, func(a, b api.ModQuestion) int { return cmp.Compare(a.ID, b.ID) })
	slices.SortFunc(m.Actions, func(a, b api.ModAction) int { return cmp.Compare(a.Version, b.Version) })
	return snapshotFrames(name, v.version, m)
}

// audienceOrder is cabildo.CompareQuestions on the wire type.
func audienceOrder(a, b api.Question) int {
	conv := func(q api.Question) *cabildo.Question {
		c := &cabildo.Question{ID: q.ID, State: cabildo.QuestionState(q.State), Votes: q.Votes}
		if q.AnsweredAt != nil {
			c.AnsweredAt = *q.AnsweredAt
		}
		return c
	}
	return cabildo.CompareQuestions(conv(a), conv(b))
}
