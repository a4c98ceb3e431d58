package procscale

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
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
	// does not scale. The GOMAXPROCS environment variable pins it too.
	Fixed int
	// Max is the most Ps the process runs with; 0 means the runtime's
	// default when New is called. Max 1 leaves nothing to scale.
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

	// Test hooks: cpuTime returns the process's CPU time so far, and
	// setProcs sets GOMAXPROCS.
	cpuTime  func() (time.Duration, error)
	setProcs func(int)
}

// Scaler adjusts GOMAXPROCS between 1 and Config.Max. Its methods must not
// be called concurrently; Stop waits for the goroutine Start began.
type Scaler struct {
	cfg  Config
	stop context.CancelFunc
	wg   sync.WaitGroup

	// Owned by the sampling goroutine.
	procs   int
	lastCPU time.Duration
	lastAt  time.Time
	lowFor  time.Duration
}

// New validates cfg and fills its defaults. It does not change GOMAXPROCS.
func New(cfg Config) (*Scaler, error) {
	if cfg.Fixed < 0 || cfg.Max < 0 || cfg.Interval < 0 || cfg.Up < 0 || cfg.Down < 0 || cfg.DownAfter < 0 {
		return nil, errors.New("procscale: negative setting")
	}
	if cfg.Max == 0 {
		cfg.Max = runtime.GOMAXPROCS(0)
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
	return &Scaler{cfg: cfg, procs: cfg.Max}, nil
}

// Start begins sampling. The process keeps its current GOMAXPROCS (Max)
// until the first spell of low use. When GOMAXPROCS is pinned (Fixed, or
// the environment variable), or Max is 1, Start sets what is pinned and
// returns without sampling.
func (s *Scaler) Start(ctx context.Context) error {
	switch env, set := os.LookupEnv("GOMAXPROCS"); {
	case s.cfg.Fixed > 0:
		s.cfg.setProcs(s.cfg.Fixed)
		s.cfg.Logger.Info("GOMAXPROCS pinned", "gomaxprocs", s.cfg.Fixed)
		return nil
	case set:
		s.cfg.Logger.Info("GOMAXPROCS pinned by the environment", "gomaxprocs", env)
		return nil
	case s.cfg.Max <= 1:
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
		case now := <-t.C:
			cpu, err := s.cfg.cpuTime()
			if err != nil {
				s.cfg.Logger.Warn("cannot read the process's CPU time; GOMAXPROCS stays", "gomaxprocs", s.procs, "error", err)
				return
			}
			s.sample(now, cpu)
		}
	}
}

// sample takes the CPU time used up to now and changes GOMAXPROCS when
// the use since the last sample calls for it.
func (s *Scaler) sample(now time.Time, cpu time.Duration) {
	wall := now.Sub(s.lastAt)
	if wall <= 0 {
		return
	}
	used := float64(cpu-s.lastCPU) / float64(wall)
	s.lastCPU, s.lastAt = cpu, now
	next := s.procs
	switch {
	case s.procs == 1 && used >= s.cfg.Up:
		next = s.cfg.Max
		s.lowFor = 0
	case s.procs > 1 && used < s.cfg.Down:
		if s.lowFor += wall; s.lowFor >= s.cfg.DownAfter {
			next = 1
		}
	default:
		s.lowFor = 0
	}
	if next != s.procs {
		s.cfg.Logger.Info("GOMAXPROCS changed", "from", s.procs, "to", next, "cpus_used", used)
		s.cfg.setProcs(next)
		s.procs, s.lowFor = next, 0
	}
}

// processCPUTime is the user and system CPU time of the whole process.
func processCPUTime() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, fmt.Errorf("getrusage: %w", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
