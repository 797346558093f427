package main

import (
	"testing"
	"time"
)

// A snapshot holds the projection's entries back while it encodes: the pause after one
// keeps that to at most 1 in snapshotDuty of the time, and is never shorter than asked.
func TestSnapshotPause(t *testing.T) {
	for _, tc := range []struct{ every, took, want time.Duration }{
		{30 * time.Second, 5 * time.Millisecond, 30 * time.Second},
		{30 * time.Second, 600 * time.Millisecond, 30 * time.Second},
		{30 * time.Second, 2 * time.Second, 100 * time.Second},
		{time.Second, 100 * time.Millisecond, 5 * time.Second},
	} {
		got := snapshotPause(tc.every, tc.took)
		if got != tc.want {
			t.Errorf("snapshotPause(%v, %v) = %v, want %v", tc.every, tc.took, got, tc.want)
		}
		if held := float64(tc.took) / float64(got+tc.took); held > 1.0/snapshotDuty {
			t.Errorf("after an encode of %v, snapshots hold the projection %.1f%% of the time", tc.took, 100*held)
		}
	}
}
