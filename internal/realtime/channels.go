package realtime

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/projection"
	"github.com/cabildo/cabildo/internal/render"
	"github.com/cabildo/cabildo/pkg/api"
	"github.com/cabildo/cabildo/pkg/protocol"
)

// Channels turns what the projection applies into frames on the hub's topics, and
// starts subscriptions from the projection. A topic is a channel in one language:
// a broadcast is encoded once per language that has subscribers.
type Channels struct {
	hub   *Hub
	store *projection.Store

	// VoteInterval is the most often a town-hall channel publishes changed vote counts;
	// default 250 ms.
	VoteInterval time.Duration

	mu        sync.Mutex
	snapshots map[string]cachedSnapshot // newest snapshot per topic
	feeds     map[string]*feed          // town-hall feeds by event:session
}

// cachedSnapshot is a snapshot encoded once (whole, or in parts) and shared by every
// subscriber that joins at its version: a thousand clients joining together cost one
// rendering, not a thousand.
type cachedSnapshot struct {
	version uint64
	frames  []Frame
}

// NewChannels serves the hub's channels from store.
func NewChannels(hub *Hub, store *projection.Store) *Channels {
	return &Channels{hub: hub, store: store, VoteInterval: 250 * time.Millisecond,
		snapshots: map[string]cachedSnapshot{}, feeds: map[string]*feed{}}
}

// Channel kinds.
const (
	KindSchedule      = "schedule"      // schedule:<event>
	KindAnnouncements = "announcements" // announcements:<event>
	KindQuestions     = "questions"     // questions:<event>:<session>: the audience's
	KindModeration    = "moderation"    // moderation:<event>:<session>: moderators of the event only
)

// Channel is a parsed channel name.
type Channel struct {
	Kind    string
	Event   string
	Session int64 // town-hall channels
}

// ParseChannel validates a channel name such as "schedule:ogp-2027" or
// "questions:ogp-2027:1234".
func ParseChannel(name string) (Channel, error) {
	if len(name) > protocol.MaxChannelName {
		return Channel{}, &FrameError{Code: protocol.ErrChannelNameTooLong, Message: fmt.Sprintf("channel names are at most %d bytes", protocol.MaxChannelName)}
	}
	unknown := &FrameError{Code: protocol.ErrUnknownChannel,
		Message: "unknown channel: try schedule:<event>, announcements:<event>, questions:<event>:<session> or moderation:<event>:<session>"}
	parts := strings.Split(name, ":")
	if len(parts) < 2 || !cabildo.ValidSlug(parts[1]) {
		return Channel{}, unknown
	}
	c := Channel{Kind: parts[0], Event: parts[1]}
	switch c.Kind {
	case KindSchedule, KindAnnouncements:
		if len(parts) == 2 {
			return c, nil
		}
	case KindQuestions, KindModeration:
		if len(parts) == 3 {
			id, err := strconv.ParseInt(parts[2], 10, 64)
			if err == nil && id > 0 && strconv.FormatInt(id, 10) == parts[2] {
				c.Session = id
				return c, nil
			}
		}
	}
	return Channel{}, unknown
}

// Name is the channel's wire name.
func (c Channel) Name() string {
	if c.Session != 0 {
		return c.Kind + ":" + c.Event + ":" + strconv.FormatInt(c.Session, 10)
	}
	return c.Kind + ":" + c.Event
}

// Localized reports whether the channel's frames depend on the subscriber's language.
// Town-hall questions are in the language they were asked in, for everyone.
func (c Channel) Localized() bool { return c.Kind == KindSchedule || c.Kind == KindAnnouncements }

// Key is the hub topic of the channel in lang: one per language for localized channels.
func (c Channel) Key(lang cabildo.Lang) string {
	if !c.Localized() {
		return c.Name() + "|"
	}
	return topicKey(c.Name(), lang)
}

// Keys are every hub topic the channel may have.
func (c Channel) Keys() []string {
	if !c.Localized() {
		return []string{c.Key("")}
	}
	keys := make([]string, len(cabildo.Langs))
	for i, l := range cabildo.Langs {
		keys[i] = c.Key(l)
	}
	return keys
}

// FrameError is a protocol error answered with an error frame.
type FrameError struct {
	Code    string
	Message string
}

func (e *FrameError) Error() string { return e.Code + ": " + e.Message }

func topicKey(channel string, lang cabildo.Lang) string { return channel + "|" + string(lang) }

// OnApply publishes what one log entry changed. It runs on the projection's consuming
// goroutine, after the entry is applied, so Publish follows the projection's order.
func (ch *Channels) OnApply(a projection.Applied) {
	if a.Record.Type.TownHall() {
		ch.onTownHall(a)
		return
	}
	if a.Record.Type == cabildo.RecordAnnouncementPosted {
		ch.publishAnnouncement(a)
		return
	}
	if len(a.Changes) == 0 {
		return
	}
	name := "schedule:" + a.Event
	for _, lang := range cabildo.Langs {
		key := topicKey(name, lang)
		if !ch.hub.HasTopic(key) {
			continue
		}
		var frames []Frame
		ch.store.Read(a.Event, func(st *projection.EventState) {
			l := render.New(st, lang)
			up := api.ScheduleUpdate{Changes: make([]api.Change, 0, len(a.Changes))}
			for _, c := range a.Changes {
				up.Changes = append(up.Changes, l.Change(c))
			}
			frames = []Frame{encode(protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: name, Version: a.Seq, Prev: &a.Prev}, up)}
			if !fits(frames) {
				// The projection has applied nothing after a.Seq yet: the schedule is at a.Seq.
				frames = ch.snapshot(key, st.Version, func() []Frame { return snapshotFrames(name, st.Version, l.Schedule()) })
			}
		})
		if frames != nil {
			ch.hub.Publish(key, a.Seq, frames...)
		}
	}
}

// Subscribe subscribes c to a channel in lang. With since, it sends exactly the updates
// after since, or one fresh snapshot when they cannot be given (since too old, before the
// event, or ahead of it): never silence, never an error loop. Then a subscribed frame says
// from which version on the client is live.
func (ch *Channels) Subscribe(c *Client, chn Channel, lang cabildo.Lang, since *uint64, id uint64) error {
	if !chn.Localized() {
		return ch.subscribeTownHall(c, chn, since, id)
	}
	name := chn.Name()
	return ch.hub.Subscribe(c, topicKey(name, lang), func() ([]Frame, uint64, error) {
		var (
			frames  []Frame
			version uint64
		)
		found := ch.store.Read(chn.Event, func(st *projection.EventState) {
			if chn.Kind == "announcements" {
				frames, version = announcementFrames(render.New(st, lang), name, since, ch.hub.ResumeBytes())
				return
			}
			version = st.Version
			l := render.New(st, lang)
			if since != nil && *since >= st.Created && *since <= st.Version {
				if changes, err := st.ChangesSince(*since); err == nil {
					if frames = updates(l, name, st.VersionAt(*since), changes); weight(frames) <= ch.hub.ResumeBytes() && fits(frames) {
						return
					}
				}
			}
			frames = slices.Clone(ch.snapshot(topicKey(name, lang), version, func() []Frame {
				return snapshotFrames(name, version, l.Schedule())
			}))
		})
		if !found {
			return nil, 0, &FrameError{Code: protocol.ErrUnknownChannel, Message: fmt.Sprintf("event %q does not exist", chn.Event)}
		}
		frames = append(frames, encode(protocol.ServerFrame{Type: protocol.TypeSubscribed, ID: id, Channel: name, Version: version}, nil))
		return frames, version, nil
	})
}

// weight is the bytes of frames. A resume heavier than the hub's budget is answered
// with a snapshot: cheaper to send, and it cannot overflow the slow-consumer bound.
func weight(frames []Frame) int {
	n := 0
	for _, f := range frames {
		n += len(f)
	}
	return n
}

// updates groups changes by version into update frames chained by prev.
func updates(l render.Localizer, name string, prev uint64, changes []cabildo.Change) []Frame {
	var frames []Frame
	for i := 0; i < len(changes); {
		v := changes[i].Version
		up := api.ScheduleUpdate{}
		for ; i < len(changes) && changes[i].Version == v; i++ {
			up.Changes = append(up.Changes, l.Change(changes[i]))
		}
		p := prev
		frames = append(frames, encode(protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: name, Version: v, Prev: &p}, up))
		prev = v
	}
	return frames
}

func encode(f protocol.ServerFrame, data any) Frame {
	if data != nil {
		b, err := json.Marshal(data)
		if err != nil {
			panic(fmt.Sprintf("realtime: encode %s data: %v", f.Type, err)) // our own types always encode
		}
		f.Data = b
	}
	b, err := json.Marshal(f)
	if err != nil {
		panic(fmt.Sprintf("realtime: encode %s: %v", f.Type, err))
	}
	return b
}

// snapshot returns the topic's snapshot frames at version, encoding them only if no
// subscriber needed that version before. The slice is shared: append to a clone.
func (ch *Channels) snapshot(key string, version uint64, render func() []Frame) []Frame {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if sf, ok := ch.snapshots[key]; ok && sf.version == version {
		return sf.frames
	}
	f := render()
	ch.snapshots[key] = cachedSnapshot{version: version, frames: f}
	return f
}

func (ch *Channels) publishAnnouncement(a projection.Applied) {
	name := "announcements:" + a.Event
	for _, lang := range cabildo.Langs {
		key := topicKey(name, lang)
		if !ch.hub.HasTopic(key) {
			continue
		}
		var frames []Frame
		ch.store.Read(a.Event, func(st *projection.EventState) {
			l := render.New(st, lang)
			for _, an := range st.Announcements {
				if uint64(an.ID) == a.Seq {
					up := api.AnnouncementsUpdate{Announcement: l.Announcement(an)}
					frames = []Frame{encode(protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: name, Version: a.Seq, Prev: &a.Prev}, up)}
				}
			}
			if frames != nil && !fits(frames) {
				frames = snapshotFrames(name, a.Seq, api.AnnouncementsSnapshot{Announcements: l.Announcements(0)})
			}
		})
		if frames != nil {
			ch.hub.Publish(key, a.Seq, frames...)
		}
	}
}

// announcementFrames starts a subscription to announcements: the ones after since as
// updates when since is within the channel and they weigh at most budget bytes, else a
// snapshot of all of them. The channel's first version is the event's creation.
func announcementFrames(l render.Localizer, name string, since *uint64, budget int) ([]Frame, uint64) {
	st := l.St
	version := max(st.AnnouncementsVersion, st.Created)
	snapshot := func() []Frame {
		return snapshotFrames(name, version, api.AnnouncementsSnapshot{Announcements: l.Announcements(0)})
	}
	if since == nil || *since < st.Created || *since > version {
		return snapshot(), version
	}
	prev := st.Created
	for _, a := range st.Announcements {
		if uint64(a.ID) <= *since {
			prev = uint64(a.ID)
		}
	}
	var frames []Frame
	for _, a := range l.Announcements(*since) {
		p := prev
		frames = append(frames, encode(protocol.ServerFrame{Type: protocol.TypeUpdate, Channel: name, Version: a.Version, Prev: &p},
			api.AnnouncementsUpdate{Announcement: a}))
		prev = a.Version
	}
	if weight(frames) > budget || !fits(frames) {
		return snapshot(), version
	}
	return frames, version
}
