package townhall

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkVoteLoop is the floor of a node's vote path without HTTP: concurrent voters
// through the group committer into the embedded log (fsynced), back through the
// projection, each answered once its vote is applied, as Service.Vote does for a request.
// ns/op is per acknowledged vote; p99 is the time from Vote to its answer.
func BenchmarkVoteLoop(b *testing.B) {
	for _, voters := range []int{64, 256} {
		b.Run(fmt.Sprintf("voters=%d", voters), func(b *testing.B) {
			n := newNode(b)
			ref := n.session(b)
			q := n.ask(b, ref, "asker", "¿Cuándo habrá datos abiertos de contratación?")
			var (
				next atomic.Int64
				mu   sync.Mutex
				lat  []time.Duration
				wg   sync.WaitGroup
			)
			b.ResetTimer()
			for w := range voters {
				wg.Go(func() {
					var mine []time.Duration
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							break
						}
						t0 := time.Now()
						if _, err := n.svc.Vote(bg, "th", ref, q, fmt.Sprint("v", w, "-", i), true); err != nil {
							b.Error(err)
							return
						}
						mine = append(mine, time.Since(t0))
					}
					mu.Lock()
					lat = append(lat, mine...)
					mu.Unlock()
				})
			}
			wg.Wait()
			b.StopTimer()
			slices.Sort(lat)
			if len(lat) > 0 {
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "votes/s")
		})
	}
}
