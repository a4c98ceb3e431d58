package procscale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Defaults of Config.
const (
	DefaultInterval  = 250 * time.Millisecond
	DefaultUp        = 0.75
	DefaultDown      = 0.4
	DefaultDownAfter = 2 * time.Second
)

// Config tunes a Scaler. Zero fields take the defaults above.
type Config struct {
	// Fixed, when positive, pins GOMAXPROCS to it: Start sets it once and
	// does not scale. A positive GOMAXPROCS environment variable pins it
	// too (the runtime has applied it).
	Fixed int
	// Max is the most Ps the process runs with. 0 means the runtime's
	// default, read again each time the process scales up, so that a
	// changed CPU limit or affinity is followed. At a Max of 1 there is
	// nothing to scale.
	Max int
	// Interval is how often the process's CPU time is sampled.
	Interval time.Duration
	// Up is the CPU use, in CPUs over one interval, at which a process on
	// one P goes to Max.
	Up float64
	// Down is the CPU use under which a process on Max Ps goes back to one
	// P, once it has stayed under it for DownAfter.
	Down      float64
	DownAfter time.Duration
	Logger    *slog.Logger

	// Test hooks: cpuTime returns the process's CPU time so far, setProcs
	// sets GOMAXPROCS, and setDefault gives it back to the runtime and
	// returns the value the runtime chose.
	cpuTime    func() (time.Duration, error)
	setProcs   func(int)
	setDefault func() int
}

// Scaler adjusts GOMAXPROCS between 1 and Config.Max. Its methods must not
// be called concurrently; Stop waits for the goroutine Start began.
//
// Setting GOMAXPROCS turns off the runtime's own updates of it (Go 1.25+
// follows the cgroup CPU limit). A Scaler with a default Max hands
// GOMAXPROCS back to the runtime whenever it scales up, which turns them on
// again; while the process runs on one P they are off.
type Scaler struct {
	cfg  Config
	stop context.CancelFunc
	wg   sync.WaitGroup

	// Owned by the sampling goroutine.
	max, procs int
	lastCPU    time.Duration
	lastAt     time.Time
	lowFor     time.Duration
}

// New validates cfg and fills its defaults. It does not change GOMAXPROCS.
func New(cfg Config) (*Scaler, error) {
	if cfg.Fixed < 0 || cfg.Max < 0 || cfg.Interval < 0 || cfg.Up < 0 || cfg.Down < 0 || cfg.DownAfter < 0 {
		return nil, errors.New("procscale: negative setting")
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Up == 0 {
		cfg.Up = DefaultUp
	}
	if cfg.Down == 0 {
		cfg.Down = DefaultDown
	}
	if cfg.DownAfter == 0 {
		cfg.DownAfter = DefaultDownAfter
	}
	if cfg.Down >= cfg.Up {
		return nil, fmt.Errorf("procscale: down threshold %v must be under the up threshold %v", cfg.Down, cfg.Up)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.cpuTime == nil {
		cfg.cpuTime = processCPUTime
	}
	if cfg.setProcs == nil {
		cfg.setProcs = func(n int) { runtime.GOMAXPROCS(n) }
	}
	if cfg.setDefault == nil {
		cfg.setDefault = func() int {
			runtime.SetDefaultGOMAXPROCS()
			return runtime.GOMAXPROCS(0)
		}
	}
	s := &Scaler{cfg: cfg, max: cfg.Max}
	if s.max == 0 {
		s.max = runtime.GOMAXPROCS(0)
	}
	s.procs = s.max
	return s, nil
}

// pinnedByEnv reports the GOMAXPROCS environment variable when it is a
// positive integer, the only values the runtime honours.
func pinnedByEnv() (string, bool) {
	v, ok := os.LookupEnv("GOMAXPROCS")
	if n, err := strconv.Atoi(v); !ok || err != nil || n <= 0 {
		return "", false
	}
	return v, true
}

// Start begins sampling. The process keeps its current GOMAXPROCS (Max)
// until the first spell of low use. When GOMAXPROCS is pinned (Fixed, or
// the environment variable), or Max is 1, Start sets what is pinned and
// returns without sampling.
func (s *Scaler) Start(ctx context.Context) error {
	env, pinned := pinnedByEnv()
	switch {
	case s.cfg.Fixed > 0:
		s.cfg.setProcs(s.cfg.Fixed)
		s.cfg.Logger.Info("GOMAXPROCS pinned", "gomaxprocs", s.cfg.Fixed)
		return nil
	case pinned:
		s.cfg.Logger.Info("GOMAXPROCS pinned by the environment", "gomaxprocs", env)
		return nil
	case s.max <= 1:
		return nil
	}
	cpu, err := s.cfg.cpuTime()
	if err != nil {
		return fmt.Errorf("procscale: %w", err)
	}
	s.lastCPU, s.lastAt = cpu, time.Now()
	ctx, s.stop = context.WithCancel(ctx)
	s.wg.Go(func() { s.run(ctx) })
	return nil
}

// Stop ends sampling and waits for it. GOMAXPROCS stays where it is.
func (s *Scaler) Stop() {
	if s.stop != nil {
		s.stop()
	}
	s.wg.Wait()
}

func (s *Scaler) run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			cpu, err := s.cfg.cpuTime()
			if err != nil {
				// Without a reading the load is unknown: run on all Ps.
				s.cfg.Logger.Warn("cannot read the process's CPU time; GOMAXPROCS scaling stops", "error", err)
				if s.procs == 1 {
					s.scale(s.max, 0)
				}
				return
			}
			if !s.sample(time.Now(), cpu) {
				return
			}
		}
	}
}

// sample takes the CPU time used up to now and changes GOMAXPROCS when
// the use since the last sample calls for it. It returns false when there
// is nothing left to scale (the runtime's default went down to 1).
func (s *Scaler) sample(now time.Time, cpu time.Duration) bool {
	wall := now.Sub(s.lastAt)
	if wall <= 0 {
		return true
	}
	used := float64(cpu-s.lastCPU) / float64(wall)
	s.lastCPU, s.lastAt = cpu, now
	switch {
	case s.procs == 1 && used >= s.cfg.Up:
		s.scale(s.max, used)
	case s.procs > 1 && used < s.cfg.Down:
		if s.lowFor += wall; s.lowFor >= s.cfg.DownAfter {
			s.scale(1, used)
		}
	default:
		s.lowFor = 0
	}
	return s.max > 1
}

// scale moves GOMAXPROCS to 1, or up to Max (the runtime's current
// default when Max was not configured).
func (s *Scaler) scale(to int, used float64) {
	from := s.procs
	switch {
	case to == 1:
		s.cfg.setProcs(1)
	case s.cfg.Max == 0:
		to = s.cfg.setDefault()
		s.max = to
	default:
		s.cfg.setProcs(to)
	}
	s.procs, s.lowFor = to, 0
	s.cfg.Logger.Info("GOMAXPROCS changed", "from", from, "to", to, "cpus_used", used)
}

// processCPUTime is the user and system CPU time of the whole process.
func processCPUTime() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
