package projection

import (
	"sort"

	"github.com/cabildo/cabildo/internal/cabildo"
)

// ChangesSince returns the changes after version since, in order. A since before the
// retained history is too old, one after the event's version is unknown: both tell the
// client to reload rather than trust a partial list.
func (st *EventState) ChangesSince(since uint64) ([]cabildo.Change, error) {
	if since > st.Version {
		return nil, cabildo.Errorf(cabildo.CodeVersionUnknown,
			"version %d is newer than this event's version %d; reload the schedule", since, st.Version)
	}
	if since < st.Horizon {
		return nil, cabildo.Errorf(cabildo.CodeVersionTooOld,
			"changes before version %d are no longer kept; reload the schedule", st.Horizon)
	}
	i := sort.Search(len(st.Changes), func(i int) bool { return st.Changes[i].Version > since })
	return st.Changes[i:], nil
}

// Session looks a session up by guid.
func (st *EventState) Session(guid string) (cabildo.Session, Meta, bool) {
	s, ok := st.Programme.Sessions[guid]
	return s, st.Sessions[guid], ok
}

// Meta returns the version of the event's own description (its last event.put): the
// subject sequence a change of the event's description must expect.
func (st *EventState) Meta() uint64 { return st.EventVersion }

// VersionAt returns the event's version as it was at log sequence v (v at or after the
// event's retained history): the prev of the first change after v.
func (st *EventState) VersionAt(v uint64) uint64 {
	at := max(st.Created, st.Horizon)
	i := sort.Search(len(st.Changes), func(i int) bool { return st.Changes[i].Version > v })
	if i > 0 {
		at = max(at, st.Changes[i-1].Version)
	}
	return min(at, v)
}
