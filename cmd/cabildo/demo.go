package main

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/demo"
	"github.com/cabildo/cabildo/internal/projection"
	"github.com/cabildo/cabildo/internal/schedule"
	"github.com/cabildo/cabildo/internal/townhall"
)

// loadDemo writes the demo event through the same use cases an organizer uses. Every
// write carries a fixed Idempotency-Key, so two nodes starting on an empty log at once
// load it once.
func loadDemo(ctx context.Context, svc *schedule.Service, th *townhall.Service, store *projection.Store, log *slog.Logger) error {
	p, err := demo.Load()
	if err != nil {
		return err
	}
	n := 0
	req := func() schedule.Request {
		n++
		key := fmt.Sprintf("demo-%s-%d", p.Event.ID, n)
		return schedule.Request{Actor: "demo", IdempotencyKey: key, Hash: key}
	}
	steps := []func() (schedule.Result, error){func() (schedule.Result, error) { return svc.PutEvent(ctx, req(), p.Event) }}
	for _, r := range p.Rooms {
		steps = append(steps, func() (schedule.Result, error) { return svc.PutRoom(ctx, req(), p.Event.ID, r) })
	}
	for _, t := range p.Tracks {
		steps = append(steps, func() (schedule.Result, error) { return svc.PutTrack(ctx, req(), p.Event.ID, t) })
	}
	for _, sp := range p.Speakers {
		steps = append(steps, func() (schedule.Result, error) { return svc.PutSpeaker(ctx, req(), p.Event.ID, sp) })
	}
	for _, s := range p.Sessions {
		steps = append(steps, func() (schedule.Result, error) { return svc.CreateSession(ctx, req(), p.Event.ID, s, false) })
	}
	for _, step := range steps {
		// "Already exists" means another node loaded that part first.
		if _, err := step(); err != nil && cabildo.ErrorCode(err) != cabildo.CodeAlreadyExists {
			return err
		}
	}
	// The town hall takes questions from the start, screened by moderators.
	var townHalls []int64
	store.Read(p.Event.ID, func(st *projection.EventState) {
		for _, s := range st.Programme.Sessions {
			if s.Kind == cabildo.KindTownHall {
				townHalls = append(townHalls, s.ID)
			}
		}
	})
	open, moderated := true, true
	for _, id := range townHalls {
		if _, err := th.Configure(ctx, req(), p.Event.ID, strconv.FormatInt(id, 10),
			cabildo.QASettings{Open: &open, Moderated: &moderated}); err != nil {
			return err
		}
	}
	log.Info("demo event loaded", "event", p.Event.ID, "sessions", len(p.Sessions), "town_halls", townHalls)
	return nil
}
