package runtimeflags

import (
	"flag"
	"log/slog"
	"testing"
	"time"
)

func TestRegisterDefaults(t *testing.T) {
	var f Flags
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	f.Register(fs, "proxy")
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if f != (Flags{TimerSlack: DefaultTimerSlack}) {
		t.Errorf("defaults %+v", f)
	}
	if err := fs.Parse([]string{"--concurrency", "3", "--timer-slack", "0"}); err != nil {
		t.Fatal(err)
	}
	if f != (Flags{Concurrency: 3}) {
		t.Errorf("parsed %+v", f)
	}
}

// Apply with valid settings may exec the program, so only its refusals
// are tested here; timerslack and procscale test the rest.
func TestApplyRefusesInvalidSettings(t *testing.T) {
	for _, f := range []Flags{{TimerSlack: -time.Millisecond}, {Concurrency: -1}} {
		if _, err := f.Apply(slog.New(slog.DiscardHandler)); err == nil {
			t.Errorf("Apply(%+v) = nil error", f)
		}
	}
}
