package procscale

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"
)

// step is one sample: the CPUs used over the interval before it, and the
// GOMAXPROCS expected after it.
type step struct {
	used float64
	want int
}

func TestSample(t *testing.T) {
	const interval = 250 * time.Millisecond
	tests := []struct {
		name  string
		steps []step
	}{
		{"light load comes down after DownAfter", []step{{0.1, 4}, {0.1, 4}, {0.1, 4}, {0.1, 4}, {0.1, 4}, {0.1, 4}, {0.1, 4}, {0.1, 1}, {0.1, 1}}},
		{"a busy sample restarts the spell", []step{{0.1, 4}, {0.1, 4}, {0.1, 4}, {0.1, 4}, {0.1, 4}, {0.1, 4}, {0.5, 4}, {0.1, 4}, {0.1, 4}, {0.1, 4}, {0.1, 4}, {0.1, 4}, {0.1, 4}, {0.1, 4}, {0.1, 1}}},
		{"one busy P goes up at once", []step{{0, 4}, {0, 4}, {0, 4}, {0, 4}, {0, 4}, {0, 4}, {0, 4}, {0, 1}, {0.74, 1}, {0.75, 4}}},
		{"between the thresholds nothing changes", []step{{0.6, 4}, {0.6, 4}, {0.6, 4}, {0.6, 4}, {0.6, 4}, {0.6, 4}, {0.6, 4}, {0.6, 4}, {0.6, 4}, {0.6, 4}}},
		{"heavy load stays up", []step{{1.8, 4}, {1.9, 4}, {2.0, 4}, {1.7, 4}, {1.8, 4}, {1.9, 4}, {2.0, 4}, {1.7, 4}, {1.8, 4}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var set []int
			s, err := New(Config{Max: 4, Interval: interval, setProcs: func(n int) { set = append(set, n) }})
			if err != nil {
				t.Fatal(err)
			}
			now := time.Unix(1000, 0)
			s.lastAt = now
			var cpu time.Duration
			for i, st := range tt.steps {
				now = now.Add(interval)
				cpu += time.Duration(st.used * float64(interval))
				s.sample(now, cpu)
				if s.procs != st.want {
					t.Fatalf("after sample %d (%.2f CPUs): GOMAXPROCS %d, want %d", i, st.used, s.procs, st.want)
				}
			}
			// setProcs is called on changes only.
			for i := 1; i < len(set); i++ {
				if set[i] == set[i-1] {
					t.Errorf("GOMAXPROCS set to %d twice in a row: %v", set[i], set)
				}
			}
		})
	}
}

func TestScaleUpFollowsTheRuntimeDefault(t *testing.T) {
	defaults := []int{3, 1}
	var set []int
	s, err := New(Config{
		setProcs:   func(n int) { set = append(set, n) },
		setDefault: func() int { n := defaults[0]; defaults = defaults[1:]; return n },
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	s.max, s.procs, s.lastAt = 2, 1, now
	// Busy on one P: up to what the runtime now chooses (the CPU limit
	// went from 2 to 3).
	now = now.Add(time.Second)
	if !s.sample(now, time.Second) || s.procs != 3 || s.max != 3 {
		t.Fatalf("after a busy second: GOMAXPROCS %d, max %d; want 3, 3", s.procs, s.max)
	}
	now = now.Add(3 * time.Second)
	s.sample(now, time.Second)
	if s.procs != 1 || len(set) != 1 || set[0] != 1 {
		t.Fatalf("after 3 idle seconds: GOMAXPROCS %d (set %v), want 1", s.procs, set)
	}
	// The limit went down to one CPU: nothing is left to scale.
	now = now.Add(time.Second)
	if s.sample(now, 2*time.Second) {
		t.Errorf("sampling goes on with the runtime's default at 1 (GOMAXPROCS %d)", s.procs)
	}
}

func TestNewRejects(t *testing.T) {
	for _, cfg := range []Config{{Max: -1}, {Fixed: -1}, {Interval: -time.Second}, {Up: 0.3, Down: 0.5}, {DownAfter: -1}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) = nil error", cfg)
		}
	}
}

// fakeCPU is a process CPU clock the test advances.
type fakeCPU struct {
	mu  sync.Mutex
	cpu time.Duration
}

func (f *fakeCPU) now() (time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cpu, nil
}

func (f *fakeCPU) add(d time.Duration) {
	f.mu.Lock()
	f.cpu += d
	f.mu.Unlock()
}

func TestStartScalesDownAndUp(t *testing.T) {
	unsetenv(t, "GOMAXPROCS")
	clock := &fakeCPU{}
	procs := make(chan int, 10)
	s, err := New(Config{Max: 2, Interval: 5 * time.Millisecond, DownAfter: 20 * time.Millisecond, cpuTime: clock.now, setProcs: func(n int) { procs <- n }})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	select {
	case n := <-procs:
		if n != 1 {
			t.Fatalf("idle process set GOMAXPROCS %d, want 1", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("GOMAXPROCS did not come down while idle")
	}
	// Burn "two CPUs" until the scaler notices.
	deadline := time.After(10 * time.Second)
	for {
		clock.add(20 * time.Millisecond)
		select {
		case n := <-procs:
			if n != 2 {
				t.Fatalf("busy process set GOMAXPROCS %d, want 2", n)
			}
			return
		case <-time.After(5 * time.Millisecond):
		case <-deadline:
			t.Fatal("GOMAXPROCS did not go back up under load")
		}
	}
}

func TestStartPinned(t *testing.T) {
	unsetenv(t, "GOMAXPROCS")
	var set []int
	s, err := New(Config{Fixed: 3, Max: 2, setProcs: func(n int) { set = append(set, n) }, cpuTime: func() (time.Duration, error) { panic("sampled while pinned") }})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if len(set) != 1 || set[0] != 3 {
		t.Errorf("GOMAXPROCS set to %v, want [3]", set)
	}

	t.Setenv("GOMAXPROCS", "2")
	set = nil
	s, err = New(Config{Max: 2, setProcs: func(n int) { set = append(set, n) }, cpuTime: func() (time.Duration, error) { panic("sampled while pinned") }})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if len(set) != 0 {
		t.Errorf("GOMAXPROCS changed to %v although the environment pins it", set)
	}
}

func TestPinnedByEnv(t *testing.T) {
	for v, want := range map[string]bool{"3": true, "1": true, "": false, "0": false, "-2": false, "two": false} {
		t.Setenv("GOMAXPROCS", v)
		if _, got := pinnedByEnv(); got != want {
			t.Errorf("GOMAXPROCS=%q pins: %v, want %v", v, got, want)
		}
	}
}

func TestProcessCPUTimeAdvances(t *testing.T) {
	before, err := processCPUTime()
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(50 * time.Millisecond); time.Now().Before(end); {
	}
	after, err := processCPUTime()
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Errorf("CPU time went from %v to %v while spinning", before, after)
	}
}

// unsetenv removes key for the test and restores it after.
func unsetenv(t *testing.T, key string) {
	t.Helper()
	t.Setenv(key, "") // registers the restore
	if err := os.Unsetenv(key); err != nil {
		t.Fatal(err)
	}
}
