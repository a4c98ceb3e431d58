// Package runtimeflags holds the process-wide settings that ztunnel and the
// waypoint share: how many threads run Go code (GOMAXPROCS, scaled with
// load by pkg/procscale) and the timer slack of every thread
// (pkg/timerslack).
package runtimeflags

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/zmesh/zmesh/pkg/procscale"
	"github.com/zmesh/zmesh/pkg/timerslack"
)

// DefaultTimerSlack lets the kernel delay a timer by up to 1 ms to share
// wake-ups. Proxy timeouts are far coarser; the runtime's own short sleeps
// stretch too (see pkg/timerslack), which matters only when several Ps
// run, that is above one CPU of load.
const DefaultTimerSlack = time.Millisecond

// Flags are the settings, as command-line flags.
type Flags struct {
	// Concurrency pins GOMAXPROCS when positive; 0 scales it with load.
	Concurrency int
	// TimerSlack is every thread's timer slack; 0 keeps the inherited one.
	TimerSlack time.Duration
}

// Register adds --concurrency and --timer-slack to fs; proxy names the
// program in their help.
func (f *Flags) Register(fs *flag.FlagSet, proxy string) {
	fs.IntVar(&f.Concurrency, "concurrency", 0, fmt.Sprintf("worker threads (GOMAXPROCS); 0 runs one while %s "+
		"uses under one CPU and the CPUs it may use above that, unless the GOMAXPROCS environment variable is set", proxy))
	fs.DurationVar(&f.TimerSlack, "timer-slack", DefaultTimerSlack, "Linux timer slack of every thread: "+
		"how late timers may fire so that wake-ups are shared (0 keeps the inherited slack)")
}

// Apply puts the settings in force. Call it first in main, right after
// flag parsing and before signal handlers are installed: a timer slack that
// is not yet in force re-executes the program (see timerslack.Ensure), which
// discards whatever was started. Failing to set the slack or to scale
// GOMAXPROCS costs only CPU, so it is logged and Apply goes on; only invalid
// settings are an error. stop ends the scaling and waits for it.
func (f Flags) Apply(logger *slog.Logger) (stop func(), err error) {
	if f.TimerSlack < 0 {
		return nil, fmt.Errorf("--timer-slack %v is negative", f.TimerSlack)
	}
	scaler, err := procscale.New(procscale.Config{Fixed: f.Concurrency, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("--concurrency %d: %w", f.Concurrency, err)
	}
	if err := timerslack.Ensure(f.TimerSlack); err != nil {
		logger.Warn("timer slack not set", "error", err)
	}
	if err := scaler.Start(context.Background()); err != nil {
		logger.Warn("GOMAXPROCS scaling off", "error", err)
	}
	return scaler.Stop, nil
}
