package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/cabildo/cabildo/internal/cabildo"
	"github.com/cabildo/cabildo/internal/demo"
	"github.com/cabildo/cabildo/internal/schedule"
)

// loadDemo writes the demo event through the same use cases an organizer uses. Every
// write carries a fixed Idempotency-Key, so two nodes starting on an empty log at once
// load it once.
func loadDemo(ctx context.Context, svc *schedule.Service, log *slog.Logger) error {
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
	log.Info("demo event loaded", "event", p.Event.ID, "sessions", len(p.Sessions))
	return nil
}
