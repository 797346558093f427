package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"time"

	"github.com/cabildo/cabildo/pkg/api"
	"github.com/cabildo/cabildo/pkg/client"
)

// Follow the demo event's programme: a snapshot first, then every change as it happens.
// The client reconnects by itself and resumes where it left off.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{URL: "ws://127.0.0.1:8080/v1/ws"})
	if err != nil {
		log.Print(err) // is `make run` running?
		return
	}
	defer c.Close()
	_, err = c.Subscribe("schedule:ogp-sanjose-2027", "en", client.Handler{
		OnSnapshot: func(version uint64, data json.RawMessage) {
			var s api.Schedule
			_ = json.Unmarshal(data, &s)
			fmt.Printf("version %d: %d sessions\n", version, len(s.Sessions))
		},
		OnUpdate: func(version, prev uint64, data json.RawMessage) {
			var u api.ScheduleUpdate
			_ = json.Unmarshal(data, &u)
			for _, ch := range u.Changes {
				fmt.Printf("version %d: %s\n", version, ch.Type)
			}
		},
	})
	if err != nil {
		log.Print(err)
		return
	}
	<-ctx.Done()
}
