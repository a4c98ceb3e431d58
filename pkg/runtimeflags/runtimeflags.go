// Package runtimeflags holds the process-wide settings that ztunnel and the
// waypoint share: how many threads run Go code (GOMAXPROCS, scaled with
// load by pkg/procscale).
package runtimeflags

import (
	"context"
	"flag"
	"fmt"
	"log/slog"

	"github.com/zmesh/zmesh/pkg/procscale"
)

// Flags are the settings, as command-line flags.
type Flags struct {
	// Concurrency pins GOMAXPROCS when positive; 0 scales it with load.
	Concurrency int
}

// Register adds --concurrency to fs; proxy names the program in its help.
func (f *Flags) Register(fs *flag.FlagSet, proxy string) {
	fs.IntVar(&f.Concurrency, "concurrency", 0, fmt.Sprintf("worker threads (GOMAXPROCS); 0 runs one while %s "+
		"uses under one CPU and the CPUs it may use above that, unless the GOMAXPROCS environment variable is set", proxy))
}

// Apply puts the settings in force; call it early in main. Failing to
// scale GOMAXPROCS costs only CPU, so it is logged and Apply goes on; only
// invalid settings are an error. stop ends the scaling and waits for it.
func (f Flags) Apply(logger *slog.Logger) (stop func(), err error) {
	scaler, err := procscale.New(procscale.Config{Fixed: f.Concurrency, Logger: logger})
	if err != nil {
		return nil, fmt.Errorf("--concurrency %d: %w", f.Concurrency, err)
	}
	if err := scaler.Start(context.Background()); err != nil {
		logger.Warn("GOMAXPROCS scaling off", "error", err)
	}
	return scaler.Stop, nil
}
