package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds cabildo once per test run, for tests that must kill a real process.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cabildo-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "cabildo")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// startProcess runs `cabildo serve` as a child process and returns it once it listens.
func startProcess(t *testing.T, dataDir string, args ...string) (*exec.Cmd, *node) {
	t.Helper()
	cmd := exec.Command(binary(t), append([]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", dataDir, "--log-level", "warn"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := listenRE.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
	}()
	select {
	case base := <-found:
		return cmd, &node{t: t, dataDir: dataDir, base: base}
	case <-time.After(60 * time.Second):
		t.Fatal("cabildo process did not start listening within 60s")
	}
	return nil, nil
}

// TestCrashLosesNoAckedWrite kills a node with SIGKILL while organizers write to it; after
// a restart every write that was acknowledged is there.
func TestCrashLosesNoAckedWrite(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills a real process")
	}
	dir := t.TempDir()
	cmd, n := startProcess(t, dir, "--demo")
	tok := mint(t, dir, demoEvent, "organizer")
	ev := "/v1/events/" + demoEvent

	var (
		mu    sync.Mutex
		acked []int64
		wg    sync.WaitGroup
		stop  = make(chan struct{})
	)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				r, err := tryDo(n, "POST", ev+"/sessions?force=true", tok, map[string]any{
					"title": map[string]string{"es": fmt.Sprintf("Sesión %d-%d", w, i)}, "kind": "workshop", "language": "es",
					"room": "sala-2", "start": "2027-04-15T18:00:00-06:00", "end": "2027-04-15T18:30:00-06:00"})
				if err != nil {
					continue // the node is gone: that request was never acknowledged
				}
				if r.Status == 201 {
					var s struct {
						ID int64 `json:"id"`
					}
					r.json(t, &s)
					mu.Lock()
					acked = append(acked, s.ID)
					mu.Unlock()
				}
			}
		}()
	}
	checkFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acked) < 100 {
			return fmt.Errorf("%d writes acknowledged so far", len(acked))
		}
		return nil
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	close(stop)
	wg.Wait()

	_, n2 := startProcess(t, dir)
	sch := getSchedule(t, n2)
	have := map[int64]bool{}
	for _, s := range sch.Sessions {
		have[s.ID] = true
	}
	missing := 0
	for _, id := range acked {
		if !have[id] {
			missing++
		}
	}
	t.Logf("%d writes acknowledged before SIGKILL, %d missing after restart", len(acked), missing)
	if missing != 0 {
		t.Fatalf("%d acknowledged writes lost", missing)
	}
}
